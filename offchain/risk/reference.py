"""Plain scalar reference of the margin engine: one account, one position, one scenario at a time.

Written from the documented rules with :mod:`math` and the scalar pricing reference only (no
shared numerics with the vectorised engine beyond the scenario definitions), so that tests can
check :class:`~offchain.risk.engine.MarginEngine` against it on random books, and the benchmark
can time the naive per-position loop it replaces.
"""

from __future__ import annotations

import math

from offchain.errors import SettlementMissingError
from offchain.models.reference import black76_price_ref, implied_vol_ref
from offchain.risk.accounts import AccountState
from offchain.risk.config import RiskConfig, tail_count
from offchain.risk.engine import AccountMargin
from offchain.risk.instruments import InstrumentTable, Kind
from offchain.risk.market import SECONDS_PER_YEAR, MarketState
from offchain.risk.scenarios import ScenarioBlock


class _Instrument:
    """Scalar view of one instrument row at the current market."""

    def __init__(self, inst: InstrumentTable, market: MarketState, row: int) -> None:
        self.kind = Kind(int(inst.kind[row]))
        self.u = int(inst.underlying[row])
        self.strike = float(inst.strike[row])
        self.expiry = int(inst.expiry[row])
        self.spot = float(market.spot[self.u])
        self.option = self.kind in (Kind.CALL, Kind.PUT)
        self.expired = self.kind != Kind.PERP and self.expiry <= market.now
        self.t = 0.0 if self.kind == Kind.PERP or self.expired else ((self.expiry - market.now) / SECONDS_PER_YEAR)
        self.pillars = market.vol[self.u].pillars
        self.settle = market.settlements.get((self.u, self.expiry))
        if self.expired and self.settle is None:
            raise SettlementMissingError(f"market.settlements[{self.u},{self.expiry}]", "no settlement price")

    def value(self, rate: float, spot_mult: float = 1.0, vol_mult: float = 1.0, dt: float = 0.0) -> float:
        """Value per unit, optionally in a scenario (spot × mult, vol × mult, time + dt)."""
        call = self.kind == Kind.CALL
        if self.expired:
            assert self.settle is not None
            if not self.option:
                return self.settle
            return max((1.0 if call else -1.0) * (self.settle - self.strike), 0.0)
        forward = self.spot * spot_mult
        if not self.option:
            return forward
        vol = implied_vol_ref(self.pillars, math.log(self.strike / forward), self.t) * vol_mult
        t_after = max(self.t - dt, 0.0)
        return black76_price_ref(forward, self.strike, t_after, vol, call, rate)


def _block_pnl(config: RiskConfig, legs: list[tuple[_Instrument, float]], block: ScenarioBlock) -> list[list[float]]:
    """P&L per underlying (rows) and scenario (columns), positions summed in account order."""
    out = [[0.0] * block.size for _ in config.underlyings]
    for ins, q in legs:
        mark = ins.value(config.rate)
        for s in range(block.size):
            value = ins.value(
                config.rate,
                float(block.spot_mult[ins.u, s]),
                float(block.vol_mult[s]),
                block.dt_years,
            )
            out[ins.u][s] += q * (value - mark)
    return out


def _tail_measures(config: RiskConfig, totals: list[float]) -> tuple[float, float]:
    losses = sorted((-x for x in totals), reverse=True)
    beta = tail_count(len(losses), config.es.es_level)
    j = math.floor(beta)
    es = (math.fsum(losses[:j]) + (beta - j) * losses[j]) / beta
    var = losses[math.floor(tail_count(len(losses), config.es.var_level))]
    return max(es, losses[j]), var


def _position_sums(config: RiskConfig, legs: list[tuple[_Instrument, float]]) -> tuple[float, ...]:
    mark_value = standard = som = conc = 0.0
    for ins, q in legs:
        p = config.underlyings[ins.u]
        mark = ins.value(config.rate)
        mark_value += q * mark
        if ins.expired:
            continue
        s, k = ins.spot, ins.strike
        if not ins.option:
            standard += abs(q) * p.standard_linear_rate * s
        elif q > 0:
            standard += q * mark
        else:
            otm = max(k - s, 0.0) if ins.kind == Kind.CALL else max(s - k, 0.0)
            unit = max(p.standard_short_rate * s - otm, p.standard_short_floor * s) + mark
            standard += -q * unit
            som += -q * p.short_option_min_rate * s
        conc += max(abs(q) - p.concentration_threshold, 0.0) * p.concentration_rate * s
    return mark_value, standard, som, conc


def reference_account(
    config: RiskConfig,
    instruments: InstrumentTable,
    market: MarketState,
    state: AccountState,
    grid: ScenarioBlock,
    tail: ScenarioBlock | None,
) -> AccountMargin:
    """Margin figures of one account by brute-force scalar revaluation (see ``engine``)."""
    legs = [(_Instrument(instruments, market, int(r)), float(q)) for r, q in zip(state.rows, state.sizes, strict=True)]
    per_u = _block_pnl(config, legs, grid)
    joint = [math.fsum(col) for col in zip(*per_u, strict=True)]
    weighted = [float(w) * -x for w, x in zip(grid.weight, joint, strict=True)]
    worst = max(range(len(weighted)), key=lambda s: (weighted[s], -s))
    standalone = math.fsum(max(0.0, max(float(w) * -x for w, x in zip(grid.weight, row, strict=True))) for row in per_u)
    es = var = 0.0
    if tail is not None:
        tail_u = _block_pnl(config, legs, tail)
        es, var = _tail_measures(config, [math.fsum(col) for col in zip(*tail_u, strict=True)])
    mark_value, standard, som, conc = _position_sums(config, legs)
    grid_loss = max(max(weighted[worst], 0.0), (1.0 - config.grid.max_offset_credit) * standalone)
    core = max(grid_loss, es)
    som_addon = max(som - core, 0.0)
    im = core + som_addon + conc
    coll = coll_haircut = 0.0
    for c, amount in zip(config.collateral, state.collateral, strict=True):
        price = 1.0 if c.underlying == "" else float(market.spot[config.symbols.index(c.underlying)])
        coll += float(amount) * price
        coll_haircut += float(amount) * price * (1.0 - c.haircut)
    positions = mark_value - state.cost_basis - state.funding_owed
    return AccountMargin(
        im=im,
        mm=config.mm_factor * im,
        margin_equity=state.cash + coll_haircut + positions,
        mtm_equity=state.cash + coll + positions,
        grid_loss=grid_loss,
        es=es,
        var=var,
        short_option_addon=som_addon,
        concentration_addon=conc,
        worst_scenario=worst,
        standard_margin=standard,
        standalone_grid_loss=standalone,
        offset_credit=max(standalone - grid_loss, 0.0),
    )
