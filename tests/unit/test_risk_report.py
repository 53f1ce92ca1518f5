"""Reports: liquidation prices, Greeks, ratios, totals, JSON form, the classic-strategy table."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from offchain.models import black76_greeks
from offchain.risk.accounts import AccountBook, AccountState
from offchain.risk.config import RiskConfig
from offchain.risk.engine import MarginEngine
from offchain.risk.instruments import InstrumentTable, Kind
from offchain.risk.liquidation import liquidation_levels
from offchain.risk.report import account_report, build_report, report_to_dict
from offchain.risk.strategies import strategy_markdown, strategy_rows

from .conftest import make_market, random_book


def _perp(listing: InstrumentTable, u: int) -> int:
    return int(np.flatnonzero((listing.kind == Kind.PERP) & (listing.underlying == u))[0])


@pytest.mark.parametrize(("size", "cash"), [(2.0, 30_000.0), (-2.0, 30_000.0), (0.5, 4_000.0)])
def test_liquidation_price_of_a_perp_matches_the_closed_form(
    config: RiskConfig, listing: InstrumentTable, size: float, cash: float
) -> None:
    # equity(S) = cash + q (S − S0); MM(S) = 0.8 × 15 % × |q| S (the grid binds: ES of one BTC
    # day is below 15 %), so equity = MM at S = (q S0 − cash) / (q − 0.12 |q|)
    market = make_market()
    s0 = float(market.spot[0])
    state = AccountState(np.array([_perp(listing, 0)]), np.array([size]), cash, size * s0, 0.0, np.zeros(3))
    levels = liquidation_levels(config, listing, market, state, 0)
    expected = (size * s0 - cash) / (size - 0.8 * 0.15 * abs(size))
    got, other = (levels.down, levels.up) if size > 0 else (levels.up, levels.down)
    assert got == pytest.approx(expected, rel=2e-5)
    assert other is None
    engine = MarginEngine(config, listing, market.with_spot(0, got))
    at = engine.account(state)
    assert at.es < at.grid_loss  # the closed form's premise
    assert at.margin_equity - at.mm == pytest.approx(0.0, abs=1e-3 * at.mm)
    assert liquidation_levels(config, listing, market, state, 1).down is None  # no ETH exposure


def test_already_liquidatable_account_reports_the_current_spot(config: RiskConfig, listing: InstrumentTable) -> None:
    market = make_market()
    state = AccountState(np.array([_perp(listing, 1)]), np.array([-100.0]), 100.0, -300_000.0, 0.0, np.zeros(3))
    levels = liquidation_levels(config, listing, market, state, 1)
    assert levels.down == levels.up == 3_000.0


def test_account_report_contents(config: RiskConfig, listing: InstrumentTable) -> None:
    market = make_market()
    engine = MarginEngine(config, listing, market)
    call = int(
        np.flatnonzero((listing.kind == Kind.CALL) & (listing.underlying == 0) & (listing.strike == 66_000.0))[0]
    )
    state = AccountState(
        np.array([_perp(listing, 0), call, _perp(listing, 1)]),
        np.array([1.0, -1.0, 10.0]),
        25_000.0,
        60_000.0 + 30_000.0,
        5.0,
        np.array([0.0, 1.0, 0.0]),
    )
    report = account_report(engine, state, "alice", liquidation=False)
    m = report.margin
    assert m == engine.account(state)
    assert report.margin_ratio == pytest.approx(m.margin_equity / m.mm)
    assert report.saving_vs_standard == pytest.approx(m.standard_margin - m.im)
    assert report.worst_scenario == engine.describe_scenario(m.worst_scenario)
    assert report.attested.im >= m.im * 1e6 and report.attested.margin_equity <= m.margin_equity * 1e6
    t = (float(listing.expiry[call]) - market.now) / (365 * 86_400)
    vol = float(engine.valuation.vol[call])
    g = black76_greeks(60_000.0, 66_000.0, t, vol, True)
    btc, eth = report.underlyings
    assert (btc.symbol, eth.symbol) == ("BTC", "ETH")
    assert btc.delta == pytest.approx(1.0 - float(g.delta), rel=1e-12)
    assert btc.gamma == pytest.approx(-float(g.gamma), rel=1e-12)
    assert btc.vega == pytest.approx(-0.01 * float(g.vega), rel=1e-12)
    assert btc.theta == pytest.approx(-float(g.theta) / 365.0, rel=1e-12)
    assert (eth.delta, eth.gamma, eth.vega, eth.theta) == (10.0, 0.0, 0.0, 0.0)
    assert btc.liquidation is None


def test_book_report_totals_and_json(config: RiskConfig, listing: InstrumentTable) -> None:
    book = random_book(np.random.default_rng(21), listing, accounts=6, positions=5)
    engine = MarginEngine(config, listing, make_market())
    report = build_report(engine, book, [f"acct{a}" for a in range(6)], liquidation=False)
    result = engine.compute(book)
    assert report.totals["im"] == math.fsum(result.im)
    assert report.totals["offset_credit"] == math.fsum(result.offset_credit)
    assert report.liquidatable == int(np.sum(result.margin_equity < result.mm))
    assert report.config_hash == "0x" + config.canonical_hash().hex()
    doc = json.loads(json.dumps(report_to_dict(report), allow_nan=False))
    assert [a["account"] for a in doc["accounts"]] == [f"acct{a}" for a in range(6)]
    first = doc["accounts"][0]
    assert first["margin"]["im"] == result.im[0]
    assert set(first["underlyings"]) == {"BTC", "ETH"}
    assert first["worst_scenario"]["description"] == engine.describe_scenario(int(result.worst_scenario[0]))
    assert isinstance(first["attested"]["im"], int)


def test_empty_account_has_no_ratio(config: RiskConfig, listing: InstrumentTable) -> None:
    engine = MarginEngine(config, listing, make_market())
    empty = AccountBook.from_states(
        [AccountState(np.zeros(0, np.int64), np.zeros(0), 10.0, 0.0, 0.0, np.zeros(3))], len(listing)
    )
    report = build_report(engine, empty, ["nobody"])
    assert report.accounts[0].margin_ratio is None
    assert report.accounts[0].margin.im == 0.0 and report.accounts[0].margin.margin_equity == 10.0
    assert all(u.liquidation is not None and u.liquidation.down is None for u in report.accounts[0].underlyings)


def test_strategy_table(config: RiskConfig) -> None:
    rows = {r.name: r for r in strategy_rows(config)}
    assert len(rows) == 8
    for name, row in rows.items():
        assert row.portfolio_im <= row.standard_margin * (1 + 1e-12), name
    assert rows["BTC/ETH cross hedge"].offset_credit > 0.3 * rows["BTC/ETH cross hedge"].standard_margin
    assert rows["BTC + ETH same direction"].offset_credit == 0.0
    assert rows["BTC + ETH same direction"].saving == pytest.approx(0.0, abs=1e-6)
    for hedged in ("Covered call", "Long call butterfly", "Calendar spread", "Delta-hedged short call"):
        assert rows[hedged].saving > 0.3 * rows[hedged].standard_margin
    table = strategy_markdown(list(rows.values()))
    assert table.count("\n") == 9 and table.startswith("| Strategy | Legs |")
