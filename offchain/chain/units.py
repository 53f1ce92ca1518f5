"""Mirrors of ``contracts/libraries/Constants.sol`` and exact fixed-point helpers."""

from __future__ import annotations

from decimal import Decimal
from enum import IntEnum

from offchain.errors import InputError

PRICE_SCALE = 10**18
SIZE_SCALE = 10**18
WAD = 10**18
LOT = 10**15
TICK = 10**15
VALUE_DIVISOR = 10**30
QUOTE_SCALE = 10**6
FUNDING_PERIOD = 8 * 3600


class Kind(IntEnum):
    PERP = 0
    FUTURE = 1
    CALL = 2
    PUT = 3


def value(size: int, price: int) -> int:
    """``size * price / 1e30`` truncated towards zero, as Solidity's signed division does."""
    q = abs(size * price) // VALUE_DIVISOR
    return q if size * price >= 0 else -q


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
