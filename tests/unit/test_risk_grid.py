"""Joint scenario grid and cross-margin: layout, offset credit, hedges, monotonicity."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offchain.risk.accounts import AccountState
from offchain.risk.config import RiskConfig
from offchain.risk.engine import AccountMargin, MarginEngine
from offchain.risk.instruments import InstrumentTable, Kind
from offchain.risk.scenarios import ScenarioKind, build_grid, describe

from .conftest import make_market, with_es

N_LISTING = 66


def _state(rows: list[int], sizes: list[float]) -> AccountState:
    return AccountState(np.array(rows), np.array(sizes), 0.0, 0.0, 0.0, np.zeros(3))


def _perp(listing: InstrumentTable, u: int) -> int:
    return int(np.flatnonzero((listing.kind == Kind.PERP) & (listing.underlying == u))[0])


def test_grid_layout(config: RiskConfig) -> None:
    grid = build_grid(config)
    kinds = grid.kind.tolist()
    assert grid.size == 111 >= 100
    assert (
        kinds.count(ScenarioKind.CORE),
        kinds.count(ScenarioKind.DECORRELATION),
        kinds.count(ScenarioKind.EXTREME),
    ) == (93, 12, 6)
    np.testing.assert_array_equal(grid.weight[grid.kind == ScenarioKind.CORE], 1.0)
    np.testing.assert_array_equal(grid.weight[grid.kind != ScenarioKind.CORE], 0.35)
    assert grid.size < 7 * 7 * 3  # joint scenarios, not the cartesian product
    moves = np.round(grid.spot_mult - 1.0, 6)
    vols = np.round(grid.vol_mult - 1.0, 6)
    ranges, rho = (0.15, 0.20), 0.7
    for u in (0, 1):
        # along its own axis C e_u each underlying sees all 7 levels x 3 vol shocks, the other
        # underlying moving rho x its range in the same direction
        own = {
            (m, v)
            for m, o, v in zip(moves[u], moves[1 - u], vols, strict=True)
            if np.isclose(o, rho * m / ranges[u] * ranges[1 - u])
        }
        levels = {round(f * ranges[u], 6) for f in config.grid.spot_shocks}
        assert {(m, v) for m in levels for v in (-0.2, 0.0, 0.3)} <= own
    # co-move at full range both ways, and extremes at 2 ranges
    assert {(0.15, 0.2), (-0.15, -0.2), (0.3, 0.4), (-0.3, -0.4)} <= set(zip(moves[0], moves[1], strict=True))
    alone = grid.kind == ScenarioKind.DECORRELATION
    assert np.all((moves[0][alone] == 0) ^ (moves[1][alone] == 0))


def test_describe_worst_scenario(config: RiskConfig) -> None:
    grid = build_grid(config)
    texts = [describe(grid, s, config.symbols) for s in range(grid.size)]
    assert "BTC -15.0 %, ETH -20.0 %, vol +30.0 %" in texts
    assert "BTC -15.0 %, ETH -14.0 %, vol +30.0 %" in texts  # ETH moves rho = 0.7 x its 20 % range
    assert "BTC +30.0 %, ETH +40.0 %, vol 0 % (extreme, weight 35 %)" in texts
    assert "BTC 0 %, ETH -20.0 %, vol -20.0 % (one underlying alone, weight 35 %)" in texts


def test_cross_hedge_gets_bounded_credit_same_direction_none(config: RiskConfig, listing: InstrumentTable) -> None:
    engine = MarginEngine(config, listing, make_market())
    btc, eth = _perp(listing, 0), _perp(listing, 1)
    leg_btc = engine.account(_state([btc], [1.0]))
    leg_eth = engine.account(_state([eth], [-20.0]))
    hedge = engine.account(_state([btc, eth], [1.0, -20.0]))
    same = engine.account(_state([btc, eth], [1.0, 20.0]))
    assert leg_btc.grid_loss == pytest.approx(9_000.0) and leg_eth.grid_loss == pytest.approx(12_000.0)
    # hedge: a real credit, visible, but bounded by the spread/decorrelation scenarios and the cap
    assert hedge.offset_credit > 0.3 * (leg_btc.grid_loss + leg_eth.grid_loss)
    assert hedge.offset_credit <= config.grid.max_offset_credit * hedge.standalone_grid_loss + 1e-9
    assert hedge.grid_loss >= config.grid.decorrelation_weight * leg_eth.grid_loss
    assert hedge.standalone_grid_loss == pytest.approx(leg_btc.grid_loss + leg_eth.grid_loss)
    assert hedge.im < leg_btc.im + leg_eth.im
    # same direction: the co-move scenario takes both full ranges, no credit at all
    assert same.offset_credit == 0.0
    assert same.grid_loss == pytest.approx(leg_btc.grid_loss + leg_eth.grid_loss)
    assert same.im == pytest.approx(leg_btc.im + leg_eth.im)


def test_offset_cap_binds_when_correlation_is_near_one(config: RiskConfig, listing: InstrumentTable) -> None:
    tight = dataclasses.replace(
        config,
        correlation=((1.0, 0.999), (0.999, 1.0)),
        grid=dataclasses.replace(config.grid, decorrelation_weight=0.0),
    )
    engine = MarginEngine(with_es(tight, method="none"), listing, make_market())
    hedge = engine.account(_state([_perp(listing, 0), _perp(listing, 1)], [1.0, -15.0]))
    assert hedge.grid_loss == pytest.approx((1 - tight.grid.max_offset_credit) * hedge.standalone_grid_loss)
    assert hedge.offset_credit == pytest.approx(tight.grid.max_offset_credit * hedge.standalone_grid_loss)


positions = st.lists(
    st.tuples(st.integers(0, N_LISTING - 1), st.floats(-30.0, 30.0).filter(lambda x: abs(x) > 1e-3)),
    min_size=1,
    max_size=6,
    unique_by=lambda p: p[0],
)


def _margin(engine: MarginEngine, legs: list[tuple[int, float]]) -> AccountMargin:
    rows = sorted({r for r, _ in legs})
    sizes = [sum(q for r2, q in legs if r2 == r) for r in rows]
    return engine.account(_state(rows, sizes))


@settings(max_examples=60, deadline=None)
@given(positions, positions)
def test_a_hedge_never_needs_more_than_its_legs(config: RiskConfig, listing: InstrumentTable, a: list, b: list) -> None:
    engine = MarginEngine(config, listing, make_market())
    both = _margin(engine, a + b)
    legs = _margin(engine, a), _margin(engine, b)
    # concentration is the one deliberately super-additive charge (big positions cost more),
    # so compare the subadditive part: max(grid, ES) with the short-option floor
    core = both.im - both.concentration_addon
    assert core <= sum(m.im - m.concentration_addon for m in legs) * (1 + 1e-12) + 1e-6
    assert both.standard_margin <= sum(m.standard_margin for m in legs) * (1 + 1e-12) + 1e-6


def _scaled(config: RiskConfig, factor: float) -> RiskConfig:
    underlyings = tuple(dataclasses.replace(u, spot_range=u.spot_range * factor) for u in config.underlyings)
    return dataclasses.replace(config, underlyings=underlyings)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, N_LISTING - 1),
    st.floats(-20.0, 20.0).filter(lambda x: abs(x) > 1e-3),
    st.floats(0.5, 1.0),
    st.floats(1.0, 1.5),
)
def test_margin_is_monotone_in_shock_size(
    config: RiskConfig, listing: InstrumentTable, row: int, size: float, small: float, big: float
) -> None:
    state = _state([row], [size])
    lower = MarginEngine(_scaled(config, small), listing, make_market()).account(state)
    upper = MarginEngine(_scaled(config, big), listing, make_market()).account(state)
    assert upper.grid_loss >= lower.grid_loss * (1 - 1e-12)
    assert upper.im >= lower.im * (1 - 1e-12)
