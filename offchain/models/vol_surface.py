"""Implied volatility surface of one underlying: an SVI smile per expiry pillar.

Each pillar is a raw SVI slice (Gatheral 2004) in log-moneyness ``k = ln(K / F)``; between
pillars the total implied variance ``w = σ² t`` is interpolated linearly in time at fixed
log-moneyness, and outside them implied volatility is held constant in time (flat
extrapolation of the first and last smiles). Smiles move with the forward ("sticky moneyness").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from offchain._typing import ArrayLike, Float64Array
from offchain.errors import PricingInputError

_CALENDAR_GRID = np.linspace(-3.0, 3.0, 121)


@dataclass(frozen=True)
class SviSlice:
    r"""One raw SVI smile at time to expiry ``t`` (years).

    Notes
    -----
    Total implied variance at log-moneyness :math:`k`:

    .. math:: w(k) = a + b\,\bigl(\rho\,(k - m) + \sqrt{(k - m)^2 + \sigma^2}\bigr)

    Checked on construction: :math:`t > 0`, :math:`b \ge 0`, :math:`|\rho| < 1`,
    :math:`\sigma > 0`, a strictly positive minimum variance
    :math:`a + b\sigma\sqrt{1-\rho^2} > 0` (so no strike has zero volatility) and Lee's wing
    bound :math:`b(1 + |\rho|) \le 2`.
    """

    t: float
    a: float
    b: float
    rho: float
    m: float
    sigma: float

    def __post_init__(self) -> None:
        for name in ("t", "a", "b", "rho", "m", "sigma"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise PricingInputError(name, f"must be a finite number, got {value!r}")
        self._require(self.t > 0.0, "t", "must be > 0 (years to the pillar's expiry)")
        self._require(self.b >= 0.0, "b", "must be >= 0")
        self._require(abs(self.rho) < 1.0, "rho", "must lie in (-1, 1)")
        self._require(self.sigma > 0.0, "sigma", "must be > 0")
        min_var = self.a + self.b * self.sigma * math.sqrt(1.0 - self.rho * self.rho)
        self._require(min_var > 0.0, "a", "minimum total variance a + b·σ·√(1-ρ²) must be > 0")
        self._require(self.b * (1.0 + abs(self.rho)) <= 2.0, "b", "wing slope b(1+|ρ|) > 2")

    @staticmethod
    def _require(ok: bool, name: str, message: str) -> None:
        if not ok:
            raise PricingInputError(name, message)

    def total_variance(self, k: ArrayLike) -> Float64Array:
        """Total implied variance ``w(k)`` of this slice (vectorised)."""
        x = np.asarray(k, dtype=np.float64) - self.m
        out: Float64Array = self.a + self.b * (self.rho * x + np.sqrt(x * x + self.sigma**2))
        return out


def _svi(
    k: Float64Array,
    a: Float64Array,
    b: Float64Array,
    rho: Float64Array,
    m: Float64Array,
    sigma: Float64Array,
) -> Float64Array:
    x = k - m
    out: Float64Array = a + b * (rho * x + np.sqrt(x * x + sigma * sigma))
    return out


@dataclass(frozen=True, eq=False)
class VolSurface:
    r"""Volatility surface of one underlying built from SVI pillars sorted by time to expiry.

    Parameters
    ----------
    pillars : tuple of SviSlice
        At least one slice, strictly increasing ``t``, without calendar arbitrage (total
        variance non-decreasing in ``t`` at every log-moneyness of a grid over [-3, 3]).

    Notes
    -----
    For :math:`t_j \le t \le t_{j+1}`,

    .. math:: w(k, t) = w_j(k) + \frac{t - t_j}{t_{j+1} - t_j}\,(w_{j+1}(k) - w_j(k)),
              \qquad \sigma(k, t) = \sqrt{w(k, t) / t};

    before the first pillar :math:`\sigma^2 = w_1(k)/t_1`, after the last
    :math:`\sigma^2 = w_N(k)/t_N`.
    """

    pillars: tuple[SviSlice, ...]
    _params: Float64Array = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.pillars:
            raise PricingInputError("pillars", "a volatility surface needs at least one pillar")
        times = [p.t for p in self.pillars]
        for j in range(1, len(times)):
            if times[j] <= times[j - 1]:
                raise PricingInputError(f"pillars[{j}].t", "pillar times must strictly increase")
            below = self.pillars[j].total_variance(_CALENDAR_GRID) < self.pillars[j - 1].total_variance(_CALENDAR_GRID)
            if below.any():
                k = float(_CALENDAR_GRID[np.argmax(below)])
                raise PricingInputError(f"pillars[{j}]", f"total variance below the previous pillar at k={k:.2f}")
        params = np.array([[p.t, p.a, p.b, p.rho, p.m, p.sigma] for p in self.pillars])
        params.setflags(write=False)
        object.__setattr__(self, "_params", params)

    @classmethod
    def flat(cls, vol: float) -> VolSurface:
        """A surface with the same implied volatility ``vol`` at every strike and expiry."""
        if not isinstance(vol, int | float) or not math.isfinite(vol) or vol <= 0.0:
            raise PricingInputError("vol", f"must be finite and > 0, got {vol!r}")
        return cls((SviSlice(t=1.0, a=float(vol) ** 2, b=0.0, rho=0.0, m=0.0, sigma=1.0),))

    def variance_rate(self, k: ArrayLike, t: ArrayLike) -> Float64Array:
        """Implied variance per year ``σ²(k, t)``, broadcast over ``k`` and ``t`` (t >= 0)."""
        kk = np.asarray(k, dtype=np.float64)
        tt = np.asarray(t, dtype=np.float64)
        p = self._params
        if p.shape[0] == 1:
            out: Float64Array = _svi(kk, *p[0, 1:]) / p[0, 0] + 0.0 * tt
            return out
        n = p.shape[0]
        j = np.searchsorted(p[:, 0], tt, side="right") - 1
        lo = np.clip(j, 0, n - 1)
        hi = np.clip(j + 1, 0, n - 1)
        w_lo = _svi(kk, *(p[lo, c] for c in range(1, 6)))
        w_hi = _svi(kk, *(p[hi, c] for c in range(1, 6)))
        t_lo, t_hi = p[lo, 0], p[hi, 0]
        inside = lo != hi
        span = np.where(inside, t_hi - t_lo, 1.0)
        lam = np.where(inside, (tt - t_lo) / span, 0.0)
        t_div = np.where(inside, tt, t_lo)
        out = (w_lo + lam * (w_hi - w_lo)) / t_div
        return out

    def implied_vol(self, k: ArrayLike, t: ArrayLike) -> Float64Array:
        """Implied Black volatility ``σ(k, t)`` at log-moneyness ``k`` and time ``t`` (years)."""
        out: Float64Array = np.sqrt(self.variance_rate(k, t))
        return out
