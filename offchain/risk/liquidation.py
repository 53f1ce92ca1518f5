r"""Liquidation prices: the spot of one underlying, others fixed, at which margin equity = MM.

Full revaluation: for a trial spot :math:`S' = m S` the account's instruments are re-priced and
its whole margin (grid, ES, add-ons, equity with collateral at the new price) recomputed by the
engine. The root of :math:`f(m) = E_{margin}(m) - \mathrm{MM}(m)` is bracketed by walking away
from the current spot on a geometric grid (first step 1 %, each step 1.5 × the previous, down to
``1/20`` and up to ``20 ×`` the spot), then bisected in log-spot to a relative width of
``1e-5``. The nearest crossing on each side is reported; a crossing narrower than the walk's
step far from the spot may be missed (the grid is fine near the spot, where it matters).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from offchain.risk.accounts import AccountState
from offchain.risk.config import RiskConfig, TailMethod
from offchain.risk.engine import MarginEngine
from offchain.risk.instruments import InstrumentTable
from offchain.risk.market import MarketState

_FIRST_STEP = 0.01
_GROWTH = 1.5
_LIMIT = 20.0
_TOLERANCE = 1e-5


@dataclass(frozen=True)
class LiquidationLevels:
    """Nearest spots below and above the current one where margin equity reaches MM.

    ``None`` when there is no crossing within the search range; both equal the current spot
    when the account is already at or below MM.
    """

    down: float | None
    up: float | None


def _health(
    config: RiskConfig, instruments: InstrumentTable, market: MarketState, state: AccountState, u: int
) -> Callable[[float], float]:
    rows = state.rows
    sub = instruments.subset(rows)
    local = AccountState(
        np.arange(rows.size), state.sizes, state.cash, state.cost_basis, state.funding_owed, state.collateral
    )
    spot = float(market.spot[u])
    method: TailMethod = config.es.method

    def f(m: float) -> float:
        margin = MarginEngine(config, sub, market.with_spot(u, spot * m), method).account(local)
        return margin.margin_equity - margin.mm

    return f


def _bisect(f: Callable[[float], float], healthy: float, broken: float) -> float:
    """Log-space bisection between a healthy (f > 0) and a broken (f <= 0) multiplier."""
    while abs(math.log(broken / healthy)) > _TOLERANCE:
        mid = math.sqrt(healthy * broken)
        if f(mid) > 0.0:
            healthy = mid
        else:
            broken = mid
    return broken


def _walk(f: Callable[[float], float], direction: float) -> float | None:
    previous, step = 1.0, _FIRST_STEP
    while True:
        m = previous * math.exp(direction * step)
        if m < 1.0 / _LIMIT or m > _LIMIT:
            return None
        if f(m) <= 0.0:
            return _bisect(f, previous, m)
        previous, step = m, step * _GROWTH


def _exposed(config: RiskConfig, instruments: InstrumentTable, state: AccountState, u: int) -> bool:
    if np.any(instruments.underlying[state.rows] == u):
        return True
    symbol = config.symbols[u]
    return any(
        c.underlying == symbol and amount > 0 for c, amount in zip(config.collateral, state.collateral, strict=True)
    )


def liquidation_levels(
    config: RiskConfig, instruments: InstrumentTable, market: MarketState, state: AccountState, underlying: int
) -> LiquidationLevels:
    """Liquidation spots of ``underlying`` for one account (see module notes)."""
    spot = float(market.spot[underlying])
    if not _exposed(config, instruments, state, underlying):
        return LiquidationLevels(None, None)
    f = _health(config, instruments, market, state, underlying)
    if f(1.0) <= 0.0:
        return LiquidationLevels(spot, spot)
    down, up = _walk(f, -1.0), _walk(f, 1.0)
    return LiquidationLevels(
        None if down is None else spot * down,
        None if up is None else spot * up,
    )
