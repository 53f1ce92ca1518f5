"""Mirrors of ``contracts/libraries/Constants.sol`` and exact fixed-point helpers."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from offchain.errors import InputError
from offchain.protocol import FUNDING_PERIOD as FUNDING_PERIOD
from offchain.protocol import LOT as LOT
from offchain.protocol import PRICE_SCALE as PRICE_SCALE
from offchain.protocol import QUOTE_SCALE as QUOTE_SCALE
from offchain.protocol import SIZE_SCALE as SIZE_SCALE
from offchain.protocol import TICK as TICK
from offchain.protocol import VALUE_DIVISOR as VALUE_DIVISOR
from offchain.protocol import WAD as WAD
from offchain.protocol import Kind as Kind
from offchain.rules import value as value


def to_size(units: float | str | Decimal, field: str = "size") -> int:
    """Units of the underlying to an integer size on the LOT grid (exact, or an error)."""
    scaled = Decimal(str(units)) * SIZE_SCALE
    if scaled != scaled.to_integral_value() or int(scaled) % LOT:
        raise InputError(field, f"{units} is not a multiple of the lot size {LOT / SIZE_SCALE}")
    return int(scaled)


def to_price(usd: float | str | Decimal, field: str = "price") -> int:
    """USD to an integer price on the TICK grid (exact, or an error)."""
    scaled = Decimal(str(usd)) * PRICE_SCALE
    if scaled != scaled.to_integral_value() or int(scaled) % TICK:
        raise InputError(field, f"{usd} is not a multiple of the tick {TICK / PRICE_SCALE}")
    if scaled <= 0:
        raise InputError(field, f"{usd} must be positive")
    return int(scaled)


def price_to_tick(usd: float) -> int:
    """The nearest price on the TICK grid (for feeds and quotes computed in floating point)."""
    ticks = round(Decimal(repr(usd)) * PRICE_SCALE / TICK)
    return int(ticks) * TICK


def quote_units(usd: float | str | Decimal) -> int:
    """USD to 6-decimal quote units, exact or an error."""
    scaled = Decimal(str(usd)) * QUOTE_SCALE
    if scaled != scaled.to_integral_value():
        raise InputError("amount", f"{usd} has more than 6 decimals")
    return int(scaled)


def token_units(amount: str | int | Decimal, decimals: int, field: str = "amount") -> int:
    """A token amount in human units (``"2.5"`` WETH) to its integer base units, exact, or an error.

    Refuses non-numbers, NaN/infinity, zero or negative amounts, more decimals than the token has,
    and amounts above 10**30 units (beyond any real supply; it also keeps ``int256`` arithmetic far
    from overflow).
    """
    try:
        d = Decimal(str(amount).strip())
    except InvalidOperation:
        raise InputError(field, f"not a number: {amount!r}") from None
    if not d.is_finite() or d <= 0:
        raise InputError(field, f"must be a positive finite number, got {amount!r}")
    if d.adjusted() >= 30:
        raise InputError(field, f"{amount} is too large (at most 1e30 units)")
    scaled = d.scaleb(decimals)
    if scaled != scaled.to_integral_value():
        raise InputError(field, f"{amount} has more than {decimals} decimals")
    return int(scaled)
