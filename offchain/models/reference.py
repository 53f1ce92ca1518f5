"""Plain scalar reference of the pricing models, written with :mod:`math` only.

Kept beside the vectorised :mod:`offchain.models.black76` and :mod:`offchain.models.vol_surface`
so that tests (and the benchmark's scalar baseline) can compare the two. Same formulas, same
conventions, one float at a time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from offchain.errors import PricingInputError
from offchain.models.vol_surface import SviSlice

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def norm_cdf(x: float) -> float:
    """Standard normal distribution function ``N(x) = erfc(-x/√2) / 2``."""
    return 0.5 * math.erfc(-x / _SQRT2)


def _check(name: str, value: float, *, positive: bool = False, non_negative: bool = False) -> None:
    if not math.isfinite(value):
        raise PricingInputError(name, f"must be finite, got {value!r}")
    if positive and value <= 0.0:
        raise PricingInputError(name, f"must be finite and > 0, got {value!r}")
    if non_negative and value < 0.0:
        raise PricingInputError(name, f"must be finite and >= 0, got {value!r}")


def _check_all(forward: float, strike: float, t: float, vol: float, rate: float) -> None:
    _check("forward", forward, positive=True)
    _check("strike", strike, positive=True)
    _check("t", t, non_negative=True)
    _check("vol", vol, positive=True)
    _check("rate", rate)


def black76_price_ref(forward: float, strike: float, t: float, vol: float, is_call: bool, rate: float = 0.0) -> float:
    """Black-76 value of one European option (see :func:`offchain.models.black76_price`)."""
    _check_all(forward, strike, t, vol, rate)
    if not isinstance(is_call, bool):
        raise PricingInputError("is_call", f"must be a bool, got {is_call!r}")
    sign = 1.0 if is_call else -1.0
    if t == 0.0:
        return max(sign * (forward - strike), 0.0)
    sd = vol * math.sqrt(t)
    d1 = (math.log(forward / strike) + 0.5 * sd * sd) / sd
    d2 = d1 - sd
    black = sign * (forward * norm_cdf(sign * d1) - strike * norm_cdf(sign * d2))
    return math.exp(-rate * t) * black


def black76_greeks_ref(
    forward: float, strike: float, t: float, vol: float, is_call: bool, rate: float = 0.0
) -> tuple[float, float, float, float, float]:
    """(price, delta, gamma, vega, theta) of one option, conventions of ``black76_greeks``."""
    price = black76_price_ref(forward, strike, t, vol, is_call, rate)
    sign = 1.0 if is_call else -1.0
    if t == 0.0:
        return price, (sign if sign * (forward - strike) > 0.0 else 0.0), 0.0, 0.0, 0.0
    disc = math.exp(-rate * t)
    sqrt_t = math.sqrt(t)
    sd = vol * sqrt_t
    d1 = (math.log(forward / strike) + 0.5 * sd * sd) / sd
    density = disc * _INV_SQRT_2PI * math.exp(-0.5 * d1 * d1)
    delta = disc * sign * norm_cdf(sign * d1)
    gamma = density / (forward * vol * sqrt_t)
    vega = forward * density * sqrt_t
    theta = rate * price - forward * density * vol / (2.0 * sqrt_t)
    return price, delta, gamma, vega, theta


def svi_total_variance_ref(k: float, p: SviSlice) -> float:
    """Raw SVI total variance ``a + b(ρ(k-m) + √((k-m)² + σ²))`` of one slice."""
    x = k - p.m
    return p.a + p.b * (p.rho * x + math.sqrt(x * x + p.sigma * p.sigma))


def variance_rate_ref(pillars: Sequence[SviSlice], k: float, t: float) -> float:
    """Implied variance per year ``σ²(k, t)`` of a surface (see ``VolSurface``)."""
    first, last = pillars[0], pillars[-1]
    if t <= first.t:
        return svi_total_variance_ref(k, first) / first.t
    if t >= last.t:
        return svi_total_variance_ref(k, last) / last.t
    j = max(i for i, p in enumerate(pillars) if p.t <= t)
    lo, hi = pillars[j], pillars[j + 1]
    w_lo = svi_total_variance_ref(k, lo)
    w_hi = svi_total_variance_ref(k, hi)
    lam = (t - lo.t) / (hi.t - lo.t)
    return (w_lo + lam * (w_hi - w_lo)) / t


def implied_vol_ref(pillars: Sequence[SviSlice], k: float, t: float) -> float:
    """Implied volatility ``σ(k, t)`` of a surface given by its SVI pillars."""
    return math.sqrt(variance_rate_ref(pillars, k, t))
