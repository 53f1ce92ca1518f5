"""The simulator's agents decide on real indexer states with the real engine's figures.

Each test builds a :class:`ProtocolState` as the indexer holds it (instruments, a price round, the
on-chain parameters and bands, accounts with cash and positions), computes every account's margin
with the engine's own :class:`EngineCore`, and checks what the agents send: integers on the grids,
prices the Exchange and the engine accept, liquidations only of accounts the figures show below
maintenance margin, and the same intents for the same seed.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pytest

from offchain import rules
from offchain.chain.client import Deployment, TokenInfo
from offchain.chain.indexer import InstrumentState, PositionState, PriceState, ProtocolState
from offchain.chain.params import ExchangeBands, LiquidationParams, OnchainParams
from offchain.engine.checks import check_model_price, check_trade
from offchain.engine.core import EngineCore
from offchain.engine.liquidation import auction_params
from offchain.protocol import LOT, PRICE_SCALE, QUOTE_SCALE, SIZE_SCALE, TICK, WAD, Kind
from offchain.sim import agents as ag
from offchain.sim.backend import AuctionRecord, Bid, Deposit, RefreshAuction, StartAuction, Trade, Withdraw
from offchain.sim.scenario import AgentPopulation, load_scenario

NOW = 1_767_225_600  # 2026-01-01
QUOTE = "0x" + "11" * 20
TOKENS = {"USDC": TokenInfo("USDC", QUOTE, 6, None), "WBTC": TokenInfo("WBTC", "0x" + "22" * 20, 8, 0),
          "WETH": TokenInfo("WETH", "0x" + "33" * 20, 18, 1)}  # fmt: skip
DEPLOYMENT = Deployment(31337, "", 0, {"InsuranceFund": "0x" + "44" * 20}, TOKENS, ["BTC", "ETH"])
SCENARIO = load_scenario("scenarios/calm.toml")
CONFIG = SCENARIO.risk_config
E18 = PRICE_SCALE


def addr(i: int) -> str:
    return "0x" + f"{i:040x}"


def market_state(prices: tuple[int, ...] = (60_000 * E18, 3_000 * E18)) -> ProtocolState:
    s = ProtocolState(quote=QUOTE, block=10, block_hash="0xabc", timestamp=NOW + 2)
    s.params, s.liquidation, s.bands = OnchainParams(), LiquidationParams(), ExchangeBands()
    s.prices = PriceState(1, NOW, prices)
    s.feed_fresh_until = NOW + 3600
    s.instruments[1] = InstrumentState(1, Kind.PERP, 0, 0, 0)
    s.instruments[2] = InstrumentState(2, Kind.PERP, 1, 0, 0)
    expiry = ag.expiry_after(NOW + 30 * 86_400)
    s.instruments[3] = InstrumentState(3, Kind.CALL, 0, expiry, 66_000 * E18)
    s.instruments[4] = InstrumentState(4, Kind.PUT, 0, expiry, 54_000 * E18)
    return s


def with_account(s: ProtocolState, a: str, cash_usd: int, positions: dict[int, tuple[int, int]] | None = None) -> None:
    acct = s.account(a)
    acct.cash = cash_usd * QUOTE_SCALE
    for iid, (size, cost) in (positions or {}).items():
        acct.positions[iid] = PositionState(size, cost)


def population(kind: str, count: int = 2, capital: float = 50_000.0, size: tuple[float, float] = (20_000.0, 20_000.0),
               **options: Any) -> ag.Population:  # fmt: skip
    from offchain.sim.scenario import AGENT_KINDS

    opts = {k: o.default for k, o in AGENT_KINDS[kind].items()} | options
    pop = AgentPopulation(kind, kind, count, capital, size, ("BTC", "ETH"), opts)
    accounts = [addr(100 * (list(ag.KINDS).index(kind) + 1) + j) for j in range(count)]
    return ag.KINDS[kind](pop, accounts, np.random.default_rng(7), ("BTC", "ETH"), OnchainParams().min_position_size)


CORE = EngineCore(CONFIG, DEPLOYMENT)


def view_of(s: ProtocolState, history: list[list[float]] | None = None, step: int = 5) -> ag.StepView:
    s.block_hash = f"0x{id(s):x}-{sum(len(a.positions) for a in s.accounts.values())}-{len(s.accounts)}"
    addresses, margins = CORE.compute_all(s)
    hist = np.array(history if history is not None else [[60_000.0, 3_000.0]] * (step + 1))
    market = ag.Market(s, CONFIG, ("BTC", "ETH"), (0.5, 0.66), s.timestamp)
    return ag.StepView(step, NOW, s.timestamp, s, addresses, margins, hist, market)


def test_grids() -> None:
    assert ag.strike_grid(66_123.0) == 66_000 * E18
    assert ag.strike_grid(3_321.0) == 3_300 * E18
    assert ag.strike_grid(2.345) % TICK == 0 and ag.strike_grid(2.345) == 2_350 * 10**15
    e = ag.expiry_after(NOW + 30 * 86_400)
    assert dt.datetime.fromtimestamp(e, dt.UTC).hour == 8 and NOW + 30 * 86_400 <= e < NOW + 31 * 86_400
    assert ag.expiry_after(e) == e
    assert ag.lots(60_000.0, 60_000.0) == SIZE_SCALE and ag.lots(59.99, 60_000.0) == 0
    assert ag.lots(12_345.0, 3_000.0) % LOT == 0


def test_liquidatable_accounts_follow_the_engines_figures() -> None:
    """An under-capitalised 5 BTC short breaches MM after a 10 % rally; a funded one and a frozen one are left."""
    s = market_state((66_000 * E18, 3_000 * E18))
    with_account(s, addr(1), 40_000, {1: (-5 * SIZE_SCALE, -300_000 * QUOTE_SCALE)})  # short 5 BTC at 60,000
    with_account(s, addr(2), 400_000, {1: (-5 * SIZE_SCALE, -300_000 * QUOTE_SCALE)})
    with_account(s, addr(3), 40_000, {1: (-5 * SIZE_SCALE, -300_000 * QUOTE_SCALE)})
    s.accounts[addr(3)].frozen = True
    v = view_of(s)
    i1 = v.row[addr(1)]
    assert v.margins.margin_equity[i1] < v.margins.mm[i1]
    assert v.margins.margin_equity[v.row[addr(2)]] > v.margins.mm[v.row[addr(2)]]
    assert ag.liquidatable_accounts(v) == [addr(1)]


def test_market_maker_quotes_are_accepted_by_the_exchange_and_the_engine() -> None:
    s = market_state()
    mm = population("market_maker", count=1, capital=2e6, size=(250_000.0, 250_000.0), spread_bps=8.0)
    with_account(s, mm.accounts[0], 2_000_000)
    v = view_of(s)
    assert isinstance(mm, ag.MarketMakers)
    bid, ask = mm.quote(v, 1, False), mm.quote(v, 1, True)
    assert (bid, ask) == (60_000 * E18 - 24 * E18, 60_000 * E18 + 24 * E18)  # 4 bp each side of the index
    engine = CORE.engine(s)
    for iid in (3, 4):
        for taker_buys in (True, False):
            price = mm.quote(v, iid, taker_buys)
            assert price % TICK == 0 and price > 0
            check_trade(s, mm.accounts[0], iid, -LOT * 100, price)  # inside the Exchange's bands
            row = engine.instruments.row_of(iid)
            check_model_price(s, iid, price, float(engine.valuation.mark[row]), float(engine.valuation.spot[row]))
        assert mm.quote(v, iid, True) > mm.quote(v, iid, False)


def test_option_quote_is_clamped_into_the_engines_band_when_the_path_iv_is_far_from_its_surface() -> None:
    s = market_state()
    mm = population("market_maker", count=1)
    v = view_of(s)
    v.market = ag.Market(s, CONFIG, ("BTC", "ETH"), (2.0, 2.0), s.timestamp)  # a stressed regime's IV
    assert v.market.model(3) - v.market.engine_mark(3) > 0.01 * 60_000  # the model alone would be refused
    price = mm.quote(v, 3, True)
    engine = CORE.engine(s)
    row = engine.instruments.row_of(3)
    check_model_price(s, 3, price, float(engine.valuation.mark[row]), float(engine.valuation.spot[row]))


def test_trend_traders_follow_the_moving_average_and_the_makers_fill_them() -> None:
    s = market_state()
    trend = population("trend_trader", count=2, capital=20_000.0, size=(30_000.0, 90_000.0), lookback_steps=4)
    mm = population("market_maker", count=1, capital=2e6, size=(250_000.0, 250_000.0))
    rising = [[p, 3_000.0 * p / 60_000.0] for p in (57_000.0, 58_000.0, 59_000.0, 59_500.0, 59_800.0, 60_000.0)]
    v = view_of(s, rising)
    orders, intents = trend.decide(v)
    assert not intents and len(orders) == 2
    for j, o in enumerate(orders):
        u = trend.underlying[j]
        notional = min(float(trend.sizes[j]), 3.0 * 20_000.0)
        assert o.instrument == v.market.perp[u] and o.size == ag.lots(notional, v.market.spot[u]) > 0
    assert isinstance(mm, ag.MarketMakers)
    fills = mm.fill(v, orders)
    assert [t.maker for t, _ in fills] == [mm.accounts[0]] * 2
    assert all(isinstance(t, Trade) and t.taker_buys and t.size == o.size for t, o in fills)
    falling = [[p, 3_000.0 * p / 60_000.0] for p in (60_000.0, 59_800.0, 59_500.0, 59_000.0, 58_000.0, 57_000.0)]
    down = market_state((57_000 * E18, 2_850 * E18))
    with_account(down, trend.accounts[0], 20_000, {v.market.perp[0]: (orders[0].size, 0)})
    v2 = view_of(down, falling)
    orders2, _ = trend.decide(v2)
    equity = float(v2.margins.margin_equity[v2.row[trend.accounts[0]]])  # at the step's root
    size = ag.lots(min(float(trend.sizes[0]), 3.0 * equity), 57_000.0)
    assert orders2[0] == ag.Order(trend.accounts[0], 1, -size - orders[0].size)  # flips to a short
    # a trader whose equity is gone only closes: it opens nothing its margin cannot carry
    broke = market_state((57_000 * E18, 2_850 * E18))
    with_account(broke, trend.accounts[0], -100_000, {v.market.perp[0]: (orders[0].size, 0)})
    v3 = view_of(broke, falling)
    assert float(v3.margins.margin_equity[v3.row[trend.accounts[0]]]) < 0
    assert trend.decide(v3)[0][0] == ag.Order(trend.accounts[0], 1, -orders[0].size)


def test_option_writers_list_then_write_and_roll() -> None:
    s = market_state()
    w = population("option_writer", count=1, capital=50_000.0, size=(33_000.0, 33_000.0), moneyness=1.1)
    v = view_of(s)
    key = next(iter(w.listings(v)))
    assert key == (int(Kind.CALL), 0, ag.expiry_after(NOW + 30 * 86_400), 66_000 * E18)
    orders, _ = w.decide(v)
    assert orders == [ag.Order(w.accounts[0], 3, -ag.lots(33_000.0, 60_000.0))]
    with_account(s, w.accounts[0], 50_000, {3: (orders[0].size, 0)})
    assert not w.listings(view_of(s))  # holds its series
    late = market_state()
    late.accounts = s.accounts
    roll = view_of(late)
    roll.step_start = late.instruments[3].expiry - 86_400  # roll_days = 1 before expiry
    orders, _ = w.decide(roll)
    assert orders == [ag.Order(w.accounts[0], 3, -s.accounts[w.accounts[0]].positions[3].size)]


def test_covered_call_writers_deposit_the_underlying() -> None:
    w = population("option_writer", count=1, capital=50_000.0, size=(30_000.0, 30_000.0))
    out = w.initial_deposits([60_000.0, 3_000.0], {"USDC": 6, "WBTC": 8, "WETH": 18}, {0: "WBTC", 1: "WETH"})
    assert out == [Deposit(w.accounts[0], "USDC", 50_000 * QUOTE_SCALE), Deposit(w.accounts[0], "WBTC", 50_000_000)]


def test_depositors_are_reproducible_and_withdraw_only_what_they_hold() -> None:
    def intents(seed: int) -> list[object]:
        s = market_state()
        d = population("depositor", count=20, capital=10_000.0, size=(10_000.0, 10_000.0),
                       deposit_probability=0.3, withdraw_probability=0.3)  # fmt: skip
        d.rng = np.random.default_rng(seed)
        for j, a in enumerate(d.accounts):
            with_account(s, a, 500 * j)
        out: list[object] = []
        for step in range(3):
            out += d.decide(view_of(s, step=step))[1]
        return out

    a, b = intents(3), intents(3)
    assert a == b and a != intents(4)
    assert any(isinstance(x, Deposit) for x in a) and any(isinstance(x, Withdraw) for x in a)
    for x in a:
        if isinstance(x, Withdraw):
            assert 0 < x.amount <= int(x.account, 16) % 100 * 500 * QUOTE_SCALE


def test_keepers_start_then_bid_within_the_rules_and_their_budget() -> None:
    s = market_state((66_000 * E18, 3_000 * E18))
    with_account(s, addr(1), 40_000, {1: (-5 * SIZE_SCALE, -300_000 * QUOTE_SCALE)})
    k = population("keeper", count=2, capital=500_000.0, latency_steps=1, gas_budget_usd=1_000.0)
    assert isinstance(k, ag.Keepers)
    for a in k.accounts:
        with_account(s, a, 500_000)
    _, first = k.decide(view_of(s, step=5))
    assert first == []  # latency: seen at step 5, started at step 6
    _, second = k.decide(view_of(s, step=6))
    assert second == [StartAuction(k.accounts[0], addr(1))]
    v = view_of(s, step=6)
    i = v.row[addr(1)]
    m = v.margins
    lp = LiquidationParams()
    started = NOW + 2
    auction = rules.open_auction(started, int(m.mtm_equity[i] * 1e6), int(m.margin_equity[i] * 1e6),
                                 int(m.mm[i] * 1e6), int(m.im[i] * 1e6), auction_params(lp))  # fmt: skip
    s.accounts[addr(1)].frozen = True
    when = started + 3600
    bids = k.bids(v, {addr(1): AuctionRecord(addr(1), 1, False, auction)}, when)
    assert len(bids) == 1 and isinstance(bids[0], Bid)
    b = bids[0]
    assert 0 < b.fraction <= rules.max_fraction(auction, when, auction_params(lp))
    assert b.worst_price == rules.bid_price(auction, b.fraction, when, auction_params(lp))[0]
    poor = population("keeper", count=1, gas_budget_usd=0.0)
    assert isinstance(poor, ag.Keepers)
    assert poor.bids(v, {addr(1): AuctionRecord(addr(1), 1, False, auction)}, when) == []
    # the account's nonce moved under the snapshot: no bid (it would be refused), a refresh instead
    nonce = s.accounts[addr(1)].risk_nonce
    stale = {addr(1): AuctionRecord(addr(1), 1, False, auction, nonce=nonce + 1)}
    assert k.bids(v, stale, when) == [] and k.next_bid_time(v, stale, when) is None
    assert k.refreshes(v, stale, set()) == [RefreshAuction(k.accounts[0], addr(1))]
    assert k.refreshes(v, stale, {addr(1)}) == []  # refreshed by another population already
    assert k.refreshes(v, {addr(1): AuctionRecord(addr(1), 1, False, auction, nonce=nonce)}, set()) == []


def test_keepers_unwind_what_they_hold_within_their_liquidity() -> None:
    s = market_state()
    k = population("keeper", count=1, unwind_liquidity_usd=120_000.0)
    assert isinstance(k, ag.Keepers)
    with_account(s, k.accounts[0], 500_000, {1: (5 * SIZE_SCALE, 300_000 * QUOTE_SCALE)})
    orders, _ = k.decide(view_of(s))
    assert orders == [ag.Order(k.accounts[0], 1, -2 * SIZE_SCALE, 0)]  # 120,000 USD of BTC at 60,000


@pytest.mark.parametrize("kind", sorted(ag.KINDS))
def test_every_kind_builds_from_the_scenario_options(kind: str) -> None:
    p = population(kind)
    assert len(p.accounts) == 2 and (p.sizes > 0).all()
    assert p.initial_deposits([60_000.0, 3_000.0], ag.TOKEN_DECIMALS, {0: "WBTC", 1: "WETH"})[0].amount > 0
    _ = WAD


def test_market_makers_requote_every_n_steps() -> None:
    mm = population("market_maker", count=1, requote_every_steps=3)
    assert isinstance(mm, ag.MarketMakers)
    first = mm.quote(view_of(market_state(), step=3), 1, True)
    moved = market_state((61_000 * E18, 3_000 * E18))
    assert mm.quote(view_of(moved, step=5), 1, True) == first  # the step-3 quote stands
    assert mm.quote(view_of(moved, step=6), 1, True) > first  # re-quoted at the new index
