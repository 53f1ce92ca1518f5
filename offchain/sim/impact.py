r"""Price impact of large trades and liquidation unwinds on the simulated market (square-root law).

A trade of signed notional :math:`Q` (USD; > 0 buys, < 0 sells) in an underlying with daily
volatility :math:`\sigma_d` and daily traded volume :math:`V` (USD) moves its price by

.. math:: I = Y\,\sigma_d\,\sqrt{|Q| / V}, \qquad \frac{\Delta p}{p} = e^{\operatorname{sign}(Q)\,I} - 1
          \approx \operatorname{sign}(Q)\,I,

the square-root impact law (Almgren et al. 2005; Tóth et al. 2011; Bouchaud, *Trades, Quotes and
Prices*, 2018), :math:`Y` of order one. The move is applied in log space so that prices stay
positive however large the trade. A fraction :math:`\phi` of it is *permanent* (it shifts every
later price of the path) and the rest is *temporary*, decaying exponentially with half-life
:math:`\tau_{1/2}`:

.. math:: \ln p_t = \ln S_t + P_t + T_t, \qquad T_{t'} = T_t\, 2^{-(t' - t)/\tau_{1/2}},

where :math:`S_t` is the market model's price, :math:`P_t` the sum of permanent parts so far and
:math:`T_t` the decayed temporary parts. :math:`\sigma_d` is the path's volatility state at the
current step, :math:`\sigma\sqrt{86400 / (365 \cdot 86400)}`. Impacts compound: a liquidation that
sells into the market lowers the price the next margin check sees, which may liquidate another
account (a cascade).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from offchain._typing import Float64Array
from offchain.errors import InputError
from offchain.risk.market import SECONDS_PER_YEAR
from offchain.sim.markets import MarketPath

DAY_FRACTION = 86_400 / SECONDS_PER_YEAR


@dataclass(frozen=True)
class ImpactModel:
    r"""Parameters of the square-root impact (the scenario's ``[impact]`` table).

    Attributes
    ----------
    daily_volume : tuple of float
        Daily traded volume :math:`V` per underlying in USD (> 0), in the market's underlying
        order (``impact.daily_volume``).
    y : float
        The dimensionless prefactor :math:`Y` (``impact.y``, default 0.7, in [0, 10]).
    permanent_fraction : float
        :math:`\phi \in [0, 1]`: the share of each impact that persists (``impact.permanent_fraction``,
        default 0.5).
    half_life_seconds : float
        :math:`\tau_{1/2} > 0`: half-life of the temporary part (``impact.half_life_seconds``,
        default 3,600).
    enabled : bool
        False turns every impact into zero (``impact.enabled``, default true).
    """

    daily_volume: tuple[float, ...]
    y: float = 0.7
    permanent_fraction: float = 0.5
    half_life_seconds: float = 3600.0
    enabled: bool = True

    def __post_init__(self) -> None:
        for i, v in enumerate(self.daily_volume):
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0.0:
                raise InputError(f"impact.daily_volume[{i}]", f"must be a finite number > 0 (USD per day), got {v!r}")
        checks = (
            ("y", self.y, 0.0, 10.0),
            ("permanent_fraction", self.permanent_fraction, 0.0, 1.0),
            ("half_life_seconds", self.half_life_seconds, 1e-9, 1e9),
        )
        for name, value, low, high in checks:
            if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
                raise InputError(f"impact.{name}", f"must be a number in [{low:g}, {high:g}], got {value!r}")
        if not isinstance(self.enabled, bool):
            raise InputError("impact.enabled", f"must be true or false, got {self.enabled!r}")

    def impact(self, sigma_daily: float, notional: float, underlying: int) -> float:
        r"""The signed log move :math:`\operatorname{sign}(Q)\,Y\sigma_d\sqrt{|Q|/V}` of one trade."""
        if not self.enabled or notional == 0.0:
            return 0.0
        size = math.sqrt(abs(notional) / self.daily_volume[underlying])
        return math.copysign(self.y * sigma_daily * size, notional)


class ImpactState:
    """The impacted market along one path: the model's prices plus permanent and decaying offsets.

    The simulator moves it forward with :meth:`advance` and applies trades with
    :func:`apply_impact`; :meth:`price` is what margin checks, agents and the price feed read.
    """

    def __init__(self, model: ImpactModel, path: MarketPath) -> None:
        if len(model.daily_volume) != len(path.underlyings):
            raise InputError("impact.daily_volume", f"needs {len(path.underlyings)} values (one per underlying)")
        self.model = model
        self.path = path
        self.step = 0
        self.permanent: Float64Array = np.zeros(len(path.underlyings))
        self.temporary: Float64Array = np.zeros(len(path.underlyings))
        self.total_notional: Float64Array = np.zeros(len(path.underlyings))

    def advance(self, step: int) -> None:
        """Move to path step ``step`` (>= the current one); the temporary part decays meanwhile."""
        if not self.step <= step <= self.path.steps:
            raise InputError("step", f"must be in [{self.step}, {self.path.steps}], got {step}")
        elapsed = float(self.path.times[step] - self.path.times[self.step])
        self.temporary *= 0.5 ** (elapsed / self.model.half_life_seconds)
        self.step = step

    def sigma_daily(self, underlying: int) -> float:
        """Daily volatility of ``underlying`` at the current step (from the path's volatility state)."""
        return float(self.path.vol[self.step, underlying]) * math.sqrt(DAY_FRACTION)

    def price(self, underlying: int) -> float:
        """The impacted price of ``underlying`` at the current step."""
        offset = self.permanent[underlying] + self.temporary[underlying]
        return float(self.path.prices[self.step, underlying]) * math.exp(offset)

    def prices(self) -> Float64Array:
        """Impacted prices of every underlying at the current step."""
        out: Float64Array = self.path.prices[self.step] * np.exp(self.permanent + self.temporary)
        return out


def apply_impact(state: ImpactState, underlying: int, signed_notional: float) -> float:
    """Apply one trade's impact to ``state`` and return the new impacted price of ``underlying``.

    Parameters
    ----------
    state : ImpactState
        The impacted market (changed in place).
    underlying : int
        Column of the underlying in the path.
    signed_notional : float
        Traded notional in USD; positive buys (price up), negative sells (price down), e.g. a
        liquidation unwinding a long position sells.

    Raises
    ------
    InputError
        Unknown underlying or a non-finite notional.
    """
    n = len(state.path.underlyings)
    if isinstance(underlying, bool) or not isinstance(underlying, int) or not 0 <= underlying < n:
        raise InputError("underlying", f"must be an index in [0, {n - 1}], got {underlying!r}")
    notional = signed_notional
    if isinstance(notional, bool) or not isinstance(notional, int | float) or not math.isfinite(notional):
        raise InputError("signed_notional", f"must be a finite number (USD), got {signed_notional!r}")
    move = state.model.impact(state.sigma_daily(underlying), float(signed_notional), underlying)
    phi = state.model.permanent_fraction
    state.permanent[underlying] += phi * move
    state.temporary[underlying] += (1.0 - phi) * move
    state.total_notional[underlying] += abs(float(signed_notional))
    return state.price(underlying)
