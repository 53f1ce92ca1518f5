"""Margin engine: kernel vs scalar reference, determinism, the IM rule, equities, expiry, what-if."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from offchain.errors import InputError, PricingError, SettlementMissingError, UnknownInstrumentError
from offchain.risk.accounts import AccountBook, AccountState
from offchain.risk.config import RiskConfig
from offchain.risk.engine import MarginEngine, MarginResult
from offchain.risk.instruments import InstrumentTable, Kind
from offchain.risk.market import MarketState
from offchain.risk.reference import reference_account

from .conftest import DAY, NOW, make_listing, make_market, random_book, with_es

ROOT = Path(__file__).resolve().parents[2]
SETTLEMENTS = {(0, NOW - DAY): 58_000.0, (1, NOW - 2 * DAY): 3_100.0}


def listing_with_expired() -> InstrumentTable:
    """The shared listing plus an expired BTC call and an expired ETH future (both settled)."""
    base = make_listing()
    return InstrumentTable(
        np.append(base.instrument_id, [900, 901]),
        np.append(base.kind, [Kind.CALL, Kind.FUTURE]),
        np.append(base.underlying, [0, 1]),
        np.append(base.strike, [55_000.0, 0.0]),
        np.append(base.expiry, [NOW - DAY, NOW - 2 * DAY]),
    )


def fields_of(result: MarginResult) -> list[str]:
    return [f.name for f in dataclasses.fields(result)]


def assert_matches_reference(
    config: RiskConfig, instruments: InstrumentTable, market: MarketState, book: AccountBook
) -> None:
    engine = MarginEngine(config, instruments, market)
    result = engine.compute(book)
    for a in range(book.n_accounts):
        state = book.account(a)
        ref = reference_account(config, instruments, market, state, engine.grid, engine.tail)
        got = result.account(a)
        scale = float(np.sum(np.abs(state.sizes) * market.spot[instruments.underlying[state.rows]])) + 1.0
        for name in fields_of(result):
            if name == "worst_scenario":
                continue
            assert getattr(got, name) == pytest.approx(getattr(ref, name), rel=1e-9, abs=1e-9 * scale), name
        weighted = engine.grid.weight * -(engine.pnl[state.rows, : engine.grid.size].T @ state.sizes)
        assert weighted[got.worst_scenario] == pytest.approx(weighted.max(), rel=1e-9, abs=1e-9 * scale)


# ----------------------------------------------------------------------------- kernel = reference


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kernel_matches_scalar_reference_historical(short_config: RiskConfig, seed: int) -> None:
    instruments = listing_with_expired()
    market = make_market(settlements=SETTLEMENTS)
    book = random_book(np.random.default_rng(seed), instruments, accounts=5, positions=12)
    assert_matches_reference(short_config, instruments, market, book)


def test_kernel_matches_scalar_reference_monte_carlo_and_addons(config: RiskConfig) -> None:
    cfg = dataclasses.replace(
        with_es(config, method="monte_carlo"), monte_carlo=dataclasses.replace(config.monte_carlo, paths=400)
    )
    instruments = make_listing()
    rng = np.random.default_rng(5)
    book = random_book(rng, instruments, accounts=4, positions=10)
    big = sp.csr_matrix(book.positions.toarray() * np.where(instruments.underlying == 0, 150.0, 120.0))
    book = AccountBook(big, book.cash * 100, book.cost_basis, book.funding_owed, book.collateral)
    assert_matches_reference(cfg, instruments, make_market(), book)


# ----------------------------------------------------------------------------- determinism


def _digest(result: MarginResult) -> str:
    h = hashlib.sha256()
    for name in fields_of(result):
        h.update(np.ascontiguousarray(getattr(result, name)).tobytes())
    return h.hexdigest()


DIGEST_SCRIPT = """
import json, numpy as np
from offchain.risk.config import load_config
from offchain.risk.engine import MarginEngine
from tests.unit.conftest import make_listing, make_market, random_book
from tests.unit.test_risk_engine import _digest
book = random_book(np.random.default_rng(11), make_listing(), accounts=300, positions=20)
print(_digest(MarginEngine(load_config(), make_listing(), make_market()).compute(book)))
"""


def test_bit_identical_across_processes_and_thread_counts(config: RiskConfig, listing: InstrumentTable) -> None:
    book = random_book(np.random.default_rng(11), listing, accounts=300, positions=20)
    here = _digest(MarginEngine(config, listing, make_market()).compute(book))
    assert here == _digest(MarginEngine(config, listing, make_market()).compute(book))
    for threads in ("1", "2"):
        env = dict(os.environ, NUMBA_NUM_THREADS=threads, OMP_NUM_THREADS=threads)
        out = subprocess.run(
            [sys.executable, "-c", DIGEST_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == here


def test_single_account_path_is_bit_identical_to_batch(config: RiskConfig, listing: InstrumentTable) -> None:
    book = random_book(np.random.default_rng(3), listing, accounts=40, positions=15)
    engine = MarginEngine(config, listing, make_market())
    result = engine.compute(book)
    for a in range(book.n_accounts):
        assert engine.account(book.account(a)) == result.account(a)  # exact equality, every field


def test_row_order_and_duplicates_do_not_change_results(config: RiskConfig, listing: InstrumentTable) -> None:
    engine = MarginEngine(config, listing, make_market())
    state = AccountState(np.array([30, 5, 17]), np.array([1.5, -2.0, 0.25]), 1e4, 0.0, 0.0, np.zeros(3))
    shuffled = AccountState(np.array([17, 30, 5]), np.array([0.25, 1.5, -2.0]), 1e4, 0.0, 0.0, np.zeros(3))
    assert engine.account(state) == engine.account(shuffled)
    coo = sp.coo_matrix(([1.0, 0.5, -2.0, 0.25], ([0, 0, 0, 0], [30, 30, 5, 17])), shape=(1, len(listing)))
    book = AccountBook(coo.tocsr(), np.array([1e4]), np.zeros(1), np.zeros(1), np.zeros((1, 3)))
    assert engine.compute(book).account(0) == engine.account(state)
    with pytest.raises(InputError, match="twice"):
        AccountState(np.array([5, 5]), np.array([1.0, 1.0]), 0.0, 0.0, 0.0, np.zeros(3))


# ----------------------------------------------------------------------------- the IM rule


def test_im_rule_and_equities(config: RiskConfig, listing: InstrumentTable) -> None:
    market = make_market()
    book = random_book(np.random.default_rng(4), listing, accounts=60, positions=8)
    engine = MarginEngine(config, listing, market)
    r = engine.compute(book)
    grid = np.maximum(r.grid_loss, r.es)
    np.testing.assert_array_equal(r.im, grid + r.short_option_addon + r.concentration_addon)
    np.testing.assert_array_equal(r.mm, config.mm_factor * r.im)
    assert np.all(r.grid_loss >= (1 - config.grid.max_offset_credit) * r.standalone_grid_loss)
    assert np.all(r.offset_credit >= 0) and np.all(r.offset_credit <= r.standalone_grid_loss)
    prices = np.array([1.0, market.spot[1], market.spot[0]])
    haircut = np.array([0.0, 0.1, 0.1])
    positions = book.positions @ engine.valuation.mark
    mtm = book.cash + book.collateral @ prices + positions - book.cost_basis - book.funding_owed
    margin = book.cash + book.collateral @ (prices * (1 - haircut)) + positions - book.cost_basis - book.funding_owed
    np.testing.assert_allclose(r.mtm_equity, mtm, rtol=1e-12, atol=1e-6)
    np.testing.assert_allclose(r.margin_equity, margin, rtol=1e-12, atol=1e-6)
    assert np.all(r.mtm_equity >= r.margin_equity)


def test_short_option_minimum_and_concentration(config: RiskConfig, listing: InstrumentTable) -> None:
    btc = config.underlyings[0]
    far_put = {"instrument_id": 1, "kind": Kind.PUT, "underlying": 0, "strike": 30_000.0, "expiry": NOW + 7 * DAY}
    engine = MarginEngine(config, InstrumentTable.from_records([far_put]), make_market())
    short = engine.account(AccountState(np.array([0]), np.array([-3.0]), 0.0, 0.0, 0.0, np.zeros(3)))
    minimum = 3 * btc.short_option_min_rate * 60_000.0
    assert max(short.grid_loss, short.es) < minimum  # 50 % out of the money: scenarios barely touch it
    assert short.im == pytest.approx(minimum, rel=1e-12)
    assert short.short_option_addon == pytest.approx(minimum - max(short.grid_loss, short.es), rel=1e-12)
    engine = MarginEngine(config, listing, make_market())
    perp = int(np.flatnonzero((listing.kind == Kind.PERP) & (listing.underlying == 0))[0])
    huge = engine.account(AccountState(np.array([perp]), np.array([-150.0]), 0.0, 0.0, 0.0, np.zeros(3)))
    assert huge.concentration_addon == pytest.approx(
        (150.0 - btc.concentration_threshold) * btc.concentration_rate * 60_000.0
    )
    small = engine.account(AccountState(np.array([perp]), np.array([-50.0]), 0.0, 0.0, 0.0, np.zeros(3)))
    assert small.concentration_addon == 0.0
    assert small.im == pytest.approx(50 * 60_000.0 * btc.spot_range, rel=1e-12)  # grid loss of a short perp


def test_es_none_leaves_the_grid(config: RiskConfig, listing: InstrumentTable) -> None:
    cfg = with_es(config, method="none")
    book = random_book(np.random.default_rng(8), listing, accounts=20, positions=6)
    r = MarginEngine(cfg, listing, make_market()).compute(book)
    assert np.all(r.es == 0.0) and np.all(r.var == 0.0)
    full = MarginEngine(config, listing, make_market()).compute(book)
    np.testing.assert_array_equal(r.grid_loss, full.grid_loss)
    assert np.all(full.im >= r.im)


# ----------------------------------------------------------------------------- expiry and bad input


def test_expired_positions_are_worth_intrinsic_and_carry_no_risk(config: RiskConfig) -> None:
    instruments = listing_with_expired()
    engine = MarginEngine(config, instruments, make_market(settlements=SETTLEMENTS))
    call, future = len(instruments) - 2, len(instruments) - 1
    state = AccountState(np.array([call, future]), np.array([2.0, -3.0]), 100.0, -3 * 3_000.0, 0.0, np.zeros(3))
    m = engine.account(state)
    assert m.mtm_equity == pytest.approx(100.0 + 2 * (58_000.0 - 55_000.0) - 3 * 3_100.0 + 3 * 3_000.0)
    assert (m.im, m.grid_loss, m.es, m.standard_margin) == (0.0, 0.0, 0.0, 0.0)


def test_expired_without_settlement_raises(config: RiskConfig) -> None:
    instruments = listing_with_expired()
    engine = MarginEngine(config, instruments, make_market(settlements={(1, NOW - 2 * DAY): 3_100.0}))
    unheld = AccountState(np.array([0]), np.array([1.0]), 0.0, 0.0, 0.0, np.zeros(3))
    engine.account(unheld)  # the unsettled expiry only matters to its holders
    held = AccountState(np.array([len(instruments) - 2]), np.array([1.0]), 0.0, 0.0, 0.0, np.zeros(3))
    with pytest.raises(SettlementMissingError) as info:
        engine.account(held)
    assert info.value.field == f"market.settlements[0,{NOW - DAY}]"
    with pytest.raises(SettlementMissingError):
        engine.compute(AccountBook.from_states([unheld, held], len(instruments)))


def test_bad_inputs_raise_typed_errors(config: RiskConfig, listing: InstrumentTable) -> None:
    with pytest.raises(UnknownInstrumentError, match="12345"):
        listing.index_of([100, 12345])
    with pytest.raises(InputError) as info:
        MarketState(np.array([60_000.0, -1.0]), NOW, make_market().vol, 1)
    assert info.value.field == "market.spot[1]"
    engine = MarginEngine(config, listing, make_market())
    with pytest.raises(InputError, match="collateral"):
        engine.account(AccountState(np.array([0]), np.array([1.0]), 0.0, 0.0, 0.0, np.zeros(2)))
    with pytest.raises(InputError) as info:
        AccountBook(sp.csr_matrix(np.array([[np.nan]])), np.zeros(1), np.zeros(1), np.zeros(1), np.zeros((1, 3)))
    assert info.value.field == "positions.data[0]"
    with pytest.raises(InputError) as info:
        InstrumentTable.from_records(
            [{"instrument_id": 1, "kind": Kind.CALL, "underlying": 0, "strike": 0.0, "expiry": NOW}]
        )
    assert info.value.field == "instruments.strike[0]"


def test_a_nan_never_reaches_a_margin_figure(
    config: RiskConfig, listing: InstrumentTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = MarginEngine(config, listing, make_market())
    assert not engine.pnl.flags.writeable  # validated once, then frozen
    from offchain.risk import engine as engine_module

    real = engine_module.scenario_pnl

    def corrupted(*args: object, **kwargs: object) -> np.ndarray:
        out = real(*args, **kwargs)  # type: ignore[arg-type]
        out[3, 5] = np.nan  # a valuation bug
        return out

    monkeypatch.setattr(engine_module, "scenario_pnl", corrupted)
    with pytest.raises(PricingError, match=f"instrument {listing.instrument_id[3]}"):
        MarginEngine(config, listing, make_market())


# ----------------------------------------------------------------------------- what-if


def test_what_if_trade(config: RiskConfig, listing: InstrumentTable) -> None:
    engine = MarginEngine(config, listing, make_market())
    start = AccountState(np.array([0]), np.array([1.0]), 20_000.0, 60_000.0, 0.0, np.zeros(3))
    perp_id = int(listing.instrument_id[0])
    after = engine.what_if_trade(start, perp_id, 0.5, price=60_000.0, fee=12.0)
    assert after.state.sizes.tolist() == [1.5] and after.state.cost_basis == 90_000.0 and after.state.cash == 19_988.0
    assert after.margin == engine.account(after.state)
    assert after.margin.margin_equity == pytest.approx(engine.account(start).margin_equity - 12.0)
    call_row = 10
    call = engine.what_if_trade(start, int(listing.instrument_id[call_row]), -2.0, price=1_000.0, fee=0.0)
    assert call.state.cash == 22_000.0 and call.state.cost_basis == 60_000.0
    assert call.state.rows.tolist() == [0, call_row] and call.state.sizes.tolist() == [1.0, -2.0]
    closed = engine.what_if_trade(start, perp_id, -1.0, price=61_000.0, fee=0.0)
    assert closed.state.rows.size == 0 and closed.margin.im == 0.0
    assert closed.margin.margin_equity == pytest.approx(20_000.0 + 1_000.0)
    with pytest.raises(UnknownInstrumentError):
        engine.what_if_trade(start, 999_999, 1.0, price=1.0, fee=0.0)
    with pytest.raises(InputError) as info:
        engine.what_if_trade(start, perp_id, 1.0, price=-1.0, fee=0.0)
    assert info.value.field == "price"


def test_what_if_withdrawal(config: RiskConfig, listing: InstrumentTable) -> None:
    engine = MarginEngine(config, listing, make_market())
    start = AccountState(np.array([0]), np.array([1.0]), 20_000.0, 60_000.0, 0.0, np.array([0.0, 2.0, 0.0]))
    cash = engine.what_if_withdrawal(start, "USDC", 5_000.0)
    assert cash.state.cash == 15_000.0
    assert cash.margin.margin_equity == pytest.approx(engine.account(start).margin_equity - 5_000.0)
    weth = engine.what_if_withdrawal(start, "WETH", 0.5)
    assert weth.state.collateral.tolist() == [0.0, 1.5, 0.0]
    assert weth.margin.margin_equity == pytest.approx(engine.account(start).margin_equity - 0.5 * 3_000.0 * 0.9)
    for token, amount, field in (
        ("USDC", 30_000.0, "amount"),
        ("WETH", 3.0, "amount"),
        ("DOGE", 1.0, "token"),
        ("USDC", 0.0, "amount"),
    ):
        with pytest.raises(InputError) as info:
            engine.what_if_withdrawal(start, token, amount)
        assert info.value.field == field


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_what_if_equals_recomputing_the_new_state(config: RiskConfig, listing: InstrumentTable, seed: int) -> None:
    rng = np.random.default_rng(seed)
    engine = MarginEngine(config, listing, make_market())
    state = random_book(rng, listing, accounts=1, positions=6).account(0)
    row = int(rng.integers(len(listing)))
    after = engine.what_if_trade(state, int(listing.instrument_id[row]), float(rng.normal()), 100.0, 1.0)
    rebuilt = AccountBook.from_states([after.state], len(listing))
    assert MarginEngine(config, listing, make_market()).compute(rebuilt).account(0) == after.margin


def test_margin_result_json_ready(config: RiskConfig, listing: InstrumentTable) -> None:
    book = random_book(np.random.default_rng(2), listing, accounts=3, positions=4)
    margin = MarginEngine(config, listing, make_market()).compute(book).account(1)
    json.dumps(dataclasses.asdict(margin), allow_nan=False)
    assert isinstance(margin.worst_scenario, int) and isinstance(margin.im, float)


# ----------------------------------------------------------------------------- a new block's market


@pytest.mark.parametrize("method", ["historical", "monte_carlo", "none"])
def test_an_engine_built_on_the_previous_one_is_bit_identical_to_a_fresh_one(config: RiskConfig, method: str) -> None:
    """``MarginEngine(previous=…)`` reuses the tail block and the perpetuals' P&L rows only when they
    cannot differ: the same figures, bit for bit, as an engine built from nothing, for a block one
    second later (dated instruments repriced), a later price round of the same day, new prices, a new
    listing and an as-of date with one more historical return."""
    cfg = with_es(config, method=method) if method != "historical" else config
    if method == "monte_carlo":
        cfg = dataclasses.replace(cfg, monte_carlo=dataclasses.replace(cfg.monte_carlo, paths=300))
    instruments = listing_with_expired()
    base = make_market(settlements=SETTLEMENTS)
    first = MarginEngine(cfg, instruments, base)
    book = random_book(np.random.default_rng(5), instruments, accounts=6, positions=10)
    later = dataclasses.replace(base, now=base.now + 1)
    moved = base.with_spot(0, float(base.spot[0]) * 1.01)
    next_day = dataclasses.replace(base, now=base.now + DAY, as_of=base.now + DAY, round_id=base.round_id + 1)
    relisted = InstrumentTable(instruments.instrument_id[:-3], instruments.kind[:-3], instruments.underlying[:-3],
                               instruments.strike[:-3], instruments.expiry[:-3])  # fmt: skip
    for table, market in ((instruments, later), (instruments, moved), (instruments, next_day), (relisted, later)):
        reused = MarginEngine(cfg, table, market, previous=first)
        fresh = MarginEngine(cfg, table, market)
        np.testing.assert_array_equal(reused.pnl, fresh.pnl)
        np.testing.assert_array_equal(reused._unit, fresh._unit)
        if table is instruments:
            a, b = reused.compute(book), fresh.compute(book)
            for name in fields_of(a):
                np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    # the same block one second later: the scenario blocks are the previous engine's own, perps not repriced
    again = MarginEngine(cfg, instruments, later, previous=first)
    assert again.grid is first.grid and again.tail is first.tail
    perp = instruments.kind == Kind.PERP
    assert perp.any() and np.array_equal(again.pnl[perp], first.pnl[perp])
    assert not np.array_equal(again.pnl[~perp], first.pnl[~perp])  # the options were repriced at the new time
