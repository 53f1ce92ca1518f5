"""Market state of one price round: spots, volatility surfaces, settlement prices, chain time."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from offchain._typing import Float64Array
from offchain.errors import InputError, PricingInputError
from offchain.models._checks import check_positive
from offchain.models.vol_surface import VolSurface

SECONDS_PER_YEAR = 365.0 * 86400.0


@dataclass(frozen=True, eq=False)
class MarketState:
    """Everything market-side that a margin figure depends on, for one price round.

    Attributes
    ----------
    spot : ndarray
        Index price per underlying (USD, > 0), in configuration order.
    now : int
        Chain time (``block.timestamp``, unix seconds). The engine never reads the wall clock.
    vol : tuple of VolSurface
        One implied-volatility surface per underlying, built at ``now``.
    round_id : int
        Price-feed round the spots come from; seeds Monte Carlo together with the config hash.
    settlements : mapping
        ``(underlying index, expiry) -> settlement price`` for expiries already settled by the
        feed (the first round at or after the expiry).
    as_of : int, optional
        Unix time of the price observation (the price round's timestamp); defaults to ``now``.
        Historical-simulation scenarios only use returns known at this time
        (:meth:`offchain.risk.history.HistoricalReturns.as_of`), so a replay of a past date
        never sees later returns.
    """

    spot: Float64Array
    now: int
    vol: tuple[VolSurface, ...]
    round_id: int
    settlements: Mapping[tuple[int, int], float] = field(default_factory=dict)
    as_of: int | None = None

    def __post_init__(self) -> None:
        spot = np.array(check_positive("market.spot", self.spot), dtype=np.float64)
        if spot.ndim != 1:
            raise InputError("market.spot", "must be one price per underlying")
        spot.setflags(write=False)
        object.__setattr__(self, "spot", spot)
        if self.as_of is None:
            object.__setattr__(self, "as_of", self.now)
        for name in ("now", "round_id", "as_of"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
                raise InputError(f"market.{name}", f"must be an integer >= 0, got {value!r}")
            object.__setattr__(self, name, int(value))
        if len(self.vol) != spot.size or not all(isinstance(v, VolSurface) for v in self.vol):
            raise InputError("market.vol", f"needs one VolSurface per underlying ({spot.size})")
        for (u, expiry), price in self.settlements.items():
            if not isinstance(price, int | float) or not math.isfinite(price) or price <= 0:
                raise PricingInputError(f"market.settlements[{u},{expiry}]", f"must be finite and > 0, got {price!r}")
        object.__setattr__(self, "settlements", MappingProxyType(dict(self.settlements)))

    def with_spot(self, underlying: int, price: float) -> MarketState:
        """The same market with one underlying's spot replaced."""
        spot = self.spot.copy()
        spot[underlying] = price
        return MarketState(spot, self.now, self.vol, self.round_id, self.settlements, self.as_of)
