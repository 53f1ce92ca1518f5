r"""Instrument valuation: current marks and the instrument × scenario P&L matrix.

Conventions (documented once here):

* Perps and futures are marked at the underlying's index price (no basis: the feed publishes
  the index only and futures cash-settle against it). Their P&L per unit in a scenario is
  :math:`S (m - 1)` for spot multiplier :math:`m`.
* Options are valued with Black-76 on forward :math:`F = S` (same reason), discounted at
  ``config.rate``, with implied volatility read from the underlying's surface at log-moneyness
  :math:`k = \ln(K/F)` and the option's current time to expiry. In a scenario the smile moves
  with the spot (sticky moneyness), is scaled by the scenario's vol multiplier, and time
  advances by the block's ``dt`` (an option expiring within it is worth its intrinsic value).
* An option or future at or past expiry is worth its intrinsic value against the settlement
  price of its (underlying, expiry) and carries no further risk (zero scenario P&L). Without a
  settlement price it is *unsettled*; holding one raises ``SettlementMissingError``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from offchain._typing import BoolArray, Float64Array, Int64Array
from offchain.models._fast import price_unchecked
from offchain.models.black76 import Greeks, black76_greeks
from offchain.risk.config import RiskConfig
from offchain.risk.instruments import InstrumentTable, Kind
from offchain.risk.market import SECONDS_PER_YEAR, MarketState
from offchain.risk.scenarios import ScenarioBlock

_CHUNK_ELEMENTS = 1 << 16


@dataclass(frozen=True, eq=False)
class Valuation:
    """Per-instrument state at the current market (all arrays indexed by instrument row).

    Attributes
    ----------
    t : ndarray
        Years to expiry (0 for perps and anything expired).
    live_option, expired, unsettled : ndarray of bool
        Options not yet expired; options/futures at or past expiry; expired without a
        settlement price (their mark is 0 and must never be used).
    spot : ndarray
        Index price of each instrument's underlying.
    vol : ndarray
        Current implied volatility of live options (0 otherwise).
    mark : ndarray
        Value per unit now: index for live linear, Black-76 for live options, intrinsic
        against the settlement price when expired.
    """

    t: Float64Array
    live_option: BoolArray
    expired: BoolArray
    unsettled: BoolArray
    spot: Float64Array
    vol: Float64Array
    mark: Float64Array


def _settlement_prices(
    instruments: InstrumentTable, market: MarketState, expired: BoolArray
) -> tuple[Float64Array, BoolArray]:
    price = np.zeros(len(instruments))
    missing = np.zeros(len(instruments), dtype=bool)
    for row in np.flatnonzero(expired):
        key = (int(instruments.underlying[row]), int(instruments.expiry[row]))
        settled = market.settlements.get(key)
        if settled is None:
            missing[row] = True
        else:
            price[row] = settled
    return price, missing


def value_instruments(instruments: InstrumentTable, market: MarketState, config: RiskConfig) -> Valuation:
    """Marks and pricing state of every instrument at ``market`` (see module notes)."""
    dated = instruments.kind != Kind.PERP
    expired = dated & (instruments.expiry <= market.now)
    t = np.where(dated & ~expired, (instruments.expiry - market.now) / SECONDS_PER_YEAR, 0.0)
    spot = market.spot[instruments.underlying]
    live_option = instruments.is_option & ~expired
    vol = np.zeros(len(instruments))
    strike = instruments.strike
    for u, surface in enumerate(market.vol):
        rows = live_option & (instruments.underlying == u)
        vol[rows] = surface.implied_vol(np.log(strike[rows] / spot[rows]), t[rows])
    settle, unsettled = _settlement_prices(instruments, market, expired)
    sign = np.where(instruments.kind == Kind.CALL, 1.0, -1.0)
    intrinsic = np.where(instruments.is_option, np.maximum(sign * (settle - strike), 0.0), settle)
    mark = np.where(expired, intrinsic, spot)
    opt = np.flatnonzero(live_option)
    mark[opt] = price_unchecked(
        spot[opt],
        strike[opt],
        t[opt],
        vol[opt],
        instruments.is_call[opt],
        np.exp(-config.rate * t[opt]),
    )
    return Valuation(t, live_option, expired, unsettled, spot, vol, mark)


def scenario_pnl(
    instruments: InstrumentTable,
    valuation: Valuation,
    market: MarketState,
    config: RiskConfig,
    block: ScenarioBlock,
    only: BoolArray | None = None,
) -> Float64Array:
    """P&L per unit of each instrument in each scenario, shape (instruments, scenarios).

    Rows are C-contiguous (instrument-major), the layout the margin kernel reads. With ``only``,
    just those rows are priced (the others are left zero); every row is computed elementwise, so
    a row is the same whichever other rows are priced with it.
    """
    out = np.zeros((len(instruments), block.size))
    linear = ~instruments.is_option & ~valuation.expired
    live_option = valuation.live_option
    if only is not None:
        linear, live_option = linear & only, live_option & only
    rows = np.flatnonzero(linear)
    mult = block.spot_mult[instruments.underlying[rows]]
    out[rows] = valuation.spot[rows, None] * (mult - 1.0)
    for u in range(len(market.vol)):
        rows = np.flatnonzero(live_option & (instruments.underlying == u))
        step = max(1, _CHUNK_ELEMENTS // max(block.size, 1))
        for lo in range(0, rows.size, step):
            chunk = rows[lo : lo + step]
            out[chunk] = _option_values(instruments, valuation, market, config, block, u, chunk)
            out[chunk] -= valuation.mark[chunk, None]
    return out


def _option_values(
    instruments: InstrumentTable,
    valuation: Valuation,
    market: MarketState,
    config: RiskConfig,
    block: ScenarioBlock,
    u: int,
    rows: Int64Array,
) -> Float64Array:
    forward = market.spot[u] * block.spot_mult[u][None, :]
    strike = instruments.strike[rows, None]
    t = valuation.t[rows, None]
    vol = market.vol[u].implied_vol(np.log(strike / forward), t) * block.vol_mult[None, :]
    t_after = np.maximum(t - block.dt_years, 0.0)
    calls = instruments.is_call[rows, None]
    return price_unchecked(forward, strike, t_after, vol, calls, np.exp(-config.rate * t_after))


def instrument_greeks(instruments: InstrumentTable, valuation: Valuation, config: RiskConfig) -> Greeks:
    """Per-unit value and Greeks of every instrument (perps/futures: delta 1; expired: 0)."""
    n = len(instruments)
    linear_live = ~instruments.is_option & ~valuation.expired
    greeks = Greeks(valuation.mark.copy(), linear_live.astype(np.float64), np.zeros(n), np.zeros(n), np.zeros(n))
    opt = np.flatnonzero(valuation.live_option)
    if opt.size:
        g = black76_greeks(
            valuation.spot[opt],
            instruments.strike[opt],
            valuation.t[opt],
            valuation.vol[opt],
            instruments.is_call[opt],
            config.rate,
        )
        for out, part in zip(greeks, g, strict=True):
            out[opt] = part
    return greeks
