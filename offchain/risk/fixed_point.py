r"""Conversion between the engine's floats and the contracts' fixed-point integers.

Contract units: quote amounts are integers with 6 decimals (``QUOTE_SCALE``, USDC-like); prices
and position sizes are integers scaled by ``1e18`` (``PRICE_SCALE``, ``SIZE_SCALE``; 1e18 = one
unit of underlying).

Conversions to quote units are **exact** on the binary value of the float and round **against
the account**: equities down (towards −∞), margin requirements up (towards +∞). The reverse
conversions return the float nearest to the exact decimal value.

Notes
-----
The vectorised :func:`quote_units_down` / :func:`quote_units_up` compute :math:`x \cdot 10^6`
as an unevaluated sum :math:`p + e` (Dekker's exact product: :math:`10^6 = 2^6 \cdot 15625`
and 15625 needs no splitting), then :math:`\lfloor p + e \rfloor = \lfloor p \rfloor` if
:math:`p` is not an integer (then :math:`|e| \le \mathrm{ulp}(p)/2` cannot cross one), and
:math:`p + \lfloor e \rfloor` if it is. The scalar functions use :class:`fractions.Fraction`;
tests check that both agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from offchain._typing import ArrayLike, Float64Array, Int64Array
from offchain.errors import InputError
from offchain.protocol import PRICE_SCALE as PRICE_SCALE
from offchain.protocol import QUOTE_DECIMALS as QUOTE_DECIMALS
from offchain.protocol import QUOTE_SCALE as QUOTE_SCALE
from offchain.protocol import SIZE_SCALE as SIZE_SCALE

_INT64_LIMIT = float(2**63 - QUOTE_SCALE) / QUOTE_SCALE
_SPLITTER = 134217729.0  # 2**27 + 1 (Veltkamp split of a double into two 26-bit halves)


def _exact(value: float, field: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(field, f"must be a finite number, got {value!r}")
    return Fraction(value)


def _ratio(value: float, field: str) -> tuple[int, int]:
    """``value`` as the exact ratio ``n / d`` of integers (``d`` a power of two for a float)."""
    if isinstance(value, float) and math.isfinite(value):  # the hot path (numpy's float64 too)
        return value.as_integer_ratio()
    ratio = _exact(value, field)  # ints, and the errors
    return ratio.numerator, ratio.denominator


def to_quote_units_down(usd: float) -> int:
    """``floor(usd × 1e6)`` exactly: equities, balances (rounded against the account).

    Exact on the float's binary value: ``usd = n / d`` exactly (``float.as_integer_ratio``), and
    ``(n · 10^6) // d`` is the floor in integer arithmetic.
    """
    n, d = _ratio(usd, "usd")
    return (n * QUOTE_SCALE) // d


def to_quote_units_up(usd: float) -> int:
    """``ceil(usd × 1e6)`` exactly: margin requirements (rounded against the account)."""
    n, d = _ratio(usd, "usd")
    return -((-n * QUOTE_SCALE) // d)


def from_quote_units(units: int) -> float:
    """USD float nearest to ``units / 1e6``."""
    return _int(units, "units") / QUOTE_SCALE


def _int(value: int, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InputError(field, f"must be an integer, got {value!r}")
    return int(value)


def to_price_e18(price: float) -> int:
    """Price as a 1e18-scaled integer, rounded to nearest (ties to even)."""
    return round(_exact(price, "price") * PRICE_SCALE)


def from_price_e18(value: int) -> float:
    """Float nearest to a 1e18-scaled price."""
    return _int(value, "price") / PRICE_SCALE


def to_size_e18(size: float) -> int:
    """Position size as a 1e18-scaled integer, rounded to nearest (ties to even)."""
    return round(_exact(size, "size") * SIZE_SCALE)


def from_size_e18(value: int) -> float:
    """Float nearest to a 1e18-scaled size (units of underlying)."""
    return _int(value, "size") / SIZE_SCALE


def _scaled_exact(values: ArrayLike, field: str) -> tuple[Float64Array, Float64Array]:
    """``(p, e)`` with ``p + e == x × 1e6`` exactly (see module notes)."""
    x = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(x) | (np.abs(x) > _INT64_LIMIT)
    if bad.any():
        at = int(np.argmax(bad.ravel()))
        raise InputError(f"{field}[{at}]", f"cannot convert {x.ravel()[at]!r} to quote units")
    c = _SPLITTER * x
    hi = c - (c - x)
    lo = x - hi
    p = x * 15625.0
    e = (hi * 15625.0 - p) + lo * 15625.0
    return p * 64.0, e * 64.0


def quote_units_down(values: ArrayLike, field: str = "usd") -> Int64Array:
    """Vectorised :func:`to_quote_units_down` (int64; |value| below about 9.2e12 USD)."""
    p, e = _scaled_exact(values, field)
    whole = np.floor(p)
    out: Int64Array = np.where(
        p == whole, whole.astype(np.int64) + np.floor(e).astype(np.int64), whole.astype(np.int64)
    )
    return out


def quote_units_up(values: ArrayLike, field: str = "usd") -> Int64Array:
    """Vectorised :func:`to_quote_units_up` (int64; |value| below about 9.2e12 USD)."""
    p, e = _scaled_exact(values, field)
    whole = np.ceil(p)
    out: Int64Array = np.where(p == whole, whole.astype(np.int64) + np.ceil(e).astype(np.int64), whole.astype(np.int64))
    return out


@dataclass(frozen=True)
class AttestedFigures:
    """One account's figures in contract quote units, rounded against the account."""

    margin_equity: int
    mtm_equity: int
    im: int
    mm: int


def attested_figures(margin_equity: float, mtm_equity: float, im: float, mm: float) -> AttestedFigures:
    """Equities rounded down, margins rounded up, to 6-decimal quote units."""
    return AttestedFigures(
        margin_equity=to_quote_units_down(margin_equity),
        mtm_equity=to_quote_units_down(mtm_equity),
        im=to_quote_units_up(im),
        mm=to_quote_units_up(mm),
    )
