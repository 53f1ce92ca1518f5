"""The twin backend: its genesis against a real deployment, the engine's decisions, liquidations and
settlement through the Backend protocol, and its incremental margins against ``EngineCore.compute_all``."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import numpy as np
import pytest

from offchain import rules
from offchain.chain.actions import trade_action
from offchain.chain.anvil import DEFAULT_KEYS, start_anvil
from offchain.chain.client import connect
from offchain.chain.deploy import DeployConfig, InstrumentSpec, deploy_protocol, list_instruments
from offchain.chain.devnet import dev_signers
from offchain.chain.indexer import Indexer, ProtocolState
from offchain.chain.merkle import StatusTree
from offchain.chain.units import Kind
from offchain.engine.core import _figures as _margin_figures
from offchain.protocol import WAD
from offchain.risk.accounts import AccountState
from offchain.risk.fixed_point import attested_figures
from offchain.sim.backend import (
    Bid,
    Deposit,
    ListInstrument,
    Settle,
    StartAuction,
    Trade,
    Withdraw,
    refusal,
    root_time,
    round_time,
    schedule,
    sim_account,
)
from offchain.sim.scenario import Scenario, scenario_from_mapping
from offchain.sim.twin import SETUP_SECONDS, TwinBackend

E18 = 10**18
USD = 10**6
BTC, ETH = 60_000 * E18, 3_000 * E18
STEP = 3600
PERPS = [ListInstrument(int(Kind.PERP), 0, 0, 0), ListInstrument(int(Kind.PERP), 1, 0, 0)]


def scenario(**protocol: int) -> Scenario:
    return scenario_from_mapping({
        "format_version": 1,
        "run": {"seed": 3, "steps": 10, "start": "2026-01-01T00:00:00Z"},
        "market": {"model": "gbm", "underlyings": ["BTC", "ETH"], "initial_prices": [60_000.0, 3_000.0],
                   "vol": [0.45, 0.6], "correlation": 0.8},
        "protocol": protocol,
    })  # fmt: skip


ACCTS = [sim_account(7, i)[0] for i in range(6)]


class Run:
    """A twin stepping hour by hour from the scenario's start."""

    def __init__(self, tw: TwinBackend) -> None:
        self.tw, self.step, self.start = tw, -1, tw.scenario.run.start - STEP

    def next(self, btc: int = BTC, eth: int = ETH) -> int:
        self.step += 1
        self.start += STEP
        self.tw.begin_step(self.step, self.start, [btc, eth])
        return self.start

    def do(self, *intents: Any, r: int = 0) -> list[Any]:
        out = []
        for k, rnd in enumerate(schedule(intents)):
            out += self.tw.apply(round_time(self.start, r + k), rnd)
        return out


def funded(**kw: Any) -> Run:
    run = Run(TwinBackend(scenario(**kw), PERPS))
    run.next()
    assert all(o.ok for o in run.do(*(Deposit(a, "USDC", 100_000 * USD) for a in ACCTS)))
    return run


# ---------------------------------------------------------------------- genesis
def comparable(s: ProtocolState) -> dict[str, Any]:
    return {f.name: getattr(s, f.name) for f in fields(s) if f.name not in ("block", "block_hash", "timestamp")}


@pytest.mark.chain
def test_genesis_equals_the_indexed_deployment() -> None:
    """deploy_protocol with the scenario's parameters, then the indexer: the twin's state right after
    its own deployment is the same, field for field (addresses included: Anvil's first key deploys)."""
    sc = scenario(taker_fee=7 * WAD // 10_000, buffer_ratio=WAD // 5)
    params, liquidation = sc.protocol_params()
    with start_anvil(timestamp=sc.run.start - SETUP_SECONDS) as node:
        w3 = connect(node.url)
        w3.provider.make_request("anvil_setBlockTimestampInterval", [1])  # type: ignore[arg-type]
        cfg = DeployConfig(risk_signers=[s.address for s in dev_signers("risk", 3)],
                           price_signers=[s.address for s in dev_signers("price", 3)], risk_quorum=2,
                           price_quorum=2, params=params, liquidation=liquidation,
                           engine_config_hash=sc.risk_config.canonical_hash())  # fmt: skip
        p = deploy_protocol(w3, DEFAULT_KEYS[0], cfg, node.url)
        list_instruments(p, DEFAULT_KEYS[0], [InstrumentSpec(Kind(i.kind), i.underlying) for i in PERPS])
        ix = Indexer(p)
        ix.sync()
        tw = TwinBackend(sc, PERPS)  # the listing times as the chain backend deploys: one block a second
        assert comparable(ix.state) == comparable(tw.state())
        assert ix.state.timestamp == tw.state().timestamp
        assert p.deployment.contracts["InsuranceFund"] == tw.fund
        assert p.deployment.fee_collector == tw.fee_collector


# ---------------------------------------------------------------------- engine decisions and contract refusals
def test_trades_fees_funding_and_refusals() -> None:
    run = funded()
    tw = run.tw
    a, b, c = ACCTS[:3]
    out = run.do(Trade(a, b, 1, E18, BTC + 30 * E18, True), Trade(c, a, 2, 10 * E18, ETH, False))
    assert [o.ok for o in out] == [True, True]
    s = tw.state()
    maker_fee = rules.fee(E18, BTC + 30 * E18, s.params.maker_fee if s.params else 0)
    assert out[0].detail.startswith(f"maker_fee={maker_fee} ")
    assert s.accounts[tw.fund].cash > 0 and s.accounts[tw.fee_collector].cash > 0
    assert s.instruments[1].premium == 30 * E18
    run.next(BTC + 100 * E18)
    run.do(Trade(b, c, 1, E18 // 10, BTC + 100 * E18, True))
    assert tw.state().instruments[1].cumulative_funding != 0  # the premium accrued over the hour
    big = run.do(Trade(a, b, 1, 100 * E18, BTC, True))[0]
    assert (big.ok, big.error) == (False, "InsufficientMargin")
    band = run.do(Trade(a, b, 1, E18, 2 * BTC, True))[0]
    assert (band.ok, band.error) == (False, "Input")  # the engine refuses what the Exchange would
    cash = run.do(Withdraw(ACCTS[5], "USDC", 200_000 * USD))[0]
    assert (cash.ok, cash.error) == (False, "Vault_InsufficientCash")
    small = run.do(Withdraw(ACCTS[5], "USDC", 1_000 * USD))[0]
    assert small.ok and tw.state().accounts[ACCTS[5]].cash == 99_000 * USD


def test_a_stale_feed_stops_attested_actions() -> None:
    run = funded()
    run.do(Trade(ACCTS[0], ACCTS[1], 1, E18, BTC, True))
    when = run.start + 2 * STEP  # no price round for two hours: past the heartbeat
    out = run.tw.apply(when, [Trade(ACCTS[0], ACCTS[1], 1, E18 // 10, BTC, True), Deposit(ACCTS[2], "WBTC", 10**8)])
    # the engine attested on the last block (fresh then); the Vault, now past the heartbeat, is in emergency
    assert out[0].error == "Vault_Emergency" and out[1].ok and out[1].detail == "credit=0"
    late = run.tw.apply(when + 1, [Trade(ACCTS[0], ACCTS[1], 1, E18 // 10, BTC, True)])[0]
    assert late.error == "FeedStale"  # the engine now indexes a stale feed: no attestation


def test_an_account_acts_once_per_round() -> None:
    """Two intents of one account go into two rounds (``schedule``): the withdrawal is attested after the
    trade, on the state the trade left, and refused for margin."""
    run = funded()
    a, b = ACCTS[:2]
    run.do(Trade(a, b, 1, E18, BTC, True))
    out = run.do(Trade(a, b, 1, E18, BTC, True), Withdraw(a, "USDC", 99_000 * USD))
    assert out[0].ok and not out[1].ok and out[1].error == "InsufficientMargin"


# ---------------------------------------------------------------------- liquidations
def crashed() -> tuple[Run, str]:
    """Account 0 is 10 BTC long on 100k USD; BTC falls 12 %: below maintenance margin."""
    run = funded()
    a, b = ACCTS[:2]
    assert run.do(Trade(b, a, 1, 10 * E18, BTC, True))[0].ok
    run.next(BTC * 88 // 100)
    return run, a


def test_auction_start_and_bids() -> None:
    run, a = crashed()
    tw = run.tw
    keeper = ACCTS[2]
    out = run.do(StartAuction(keeper, ACCTS[3]))[0]
    assert (out.ok, out.error) == (False, "Liquidator_Healthy")
    assert run.do(StartAuction(keeper, sim_account(7, 99)[0]))[0].error == "NoStatusLeaf"
    assert run.do(StartAuction(keeper, a), r=1)[0].ok
    rec = tw.auctions()[a]
    assert rec.version == 0 and not rec.state.insolvent and tw.state().accounts[a].frozen
    frozen = run.do(Trade(a, ACCTS[1], 2, E18, ETH, True), r=2)[0]
    assert not frozen.ok
    when = round_time(run.start, 3)
    fmax = rules.max_fraction(rec.state, when, _auction_params(tw))
    price, _fee = rules.bid_price(rec.state, fmax, when, _auction_params(tw))
    low = run.do(Bid(keeper, a, fmax, price - 1), r=3)[0]
    # the engine checks the worst price at its attestation's expiry (the price only falls): the Vault refuses
    assert (low.ok, low.error) == (False, "Liquidator_PriceAboveLimit")
    bid = run.do(Bid(keeper, a, fmax, price), r=3)[0]
    assert bid.ok, bid
    assert a not in tw.auctions() and not tw.state().accounts[a].frozen
    assert 1 in tw.state().accounts[keeper].positions


def test_insolvent_bid_draws_the_fund_and_socialises() -> None:
    run = funded(insolvent_length=3600)
    a, b, keeper = ACCTS[0], ACCTS[1], ACCTS[2]
    assert run.do(Trade(b, a, 1, 10 * E18, BTC, True), Trade(ACCTS[3], ACCTS[4], 2, E18, ETH, True))[0].ok
    run.next(BTC * 78 // 100)  # a loses 132k on 100k: insolvent
    assert run.do(StartAuction(keeper, a), Deposit(keeper, "USDC", 400_000 * USD))[0].ok
    assert run.tw.auctions()[a].state.insolvent
    fund = run.tw.state().accounts[run.tw.fund].cash
    out = run.do(Bid(keeper, a, WAD, 0), r=1)[0]
    assert out.ok, out
    detail = dict(kv.split("=") for kv in out.detail.split())
    assert int(detail["fund_draw"]) == fund and int(detail["socialised"]) > 0
    s = run.tw.state()
    assert s.loss_index > 0 and s.accounts[run.tw.fund].cash == 0 and s.root is not None and s.root.cleared
    again = run.do(StartAuction(keeper, ACCTS[5]), r=2)[0]
    assert again.error == "RiskOracle_NoRoot"


def _auction_params(tw: TwinBackend) -> rules.AuctionParams:
    from offchain.engine.liquidation import auction_params

    lp = tw.state().liquidation
    assert lp is not None
    return auction_params(lp)


# ---------------------------------------------------------------------- settlement
def test_expired_future_is_fixed_then_settled() -> None:
    run = funded()
    expiry = run.start + 2 * STEP
    out = run.do(ListInstrument(int(Kind.FUTURE), 0, expiry, 0))[0]
    assert out.ok and out.detail == "id=3"
    assert run.do(Trade(ACCTS[0], ACCTS[1], 3, E18, BTC, True), r=1)[0].ok
    run.next()
    early = run.do(Settle(3, (ACCTS[0], ACCTS[1])))[0]
    assert early.error == "Vault_NotExpired"
    run.next(BTC + 500 * E18)
    run.next(BTC + 700 * E18)  # the round at the expiry fixed the price
    assert run.tw.state().settlements[(0, expiry)] == BTC + 500 * E18
    out = run.do(Settle(3, (ACCTS[0], ACCTS[1], ACCTS[2])))[0]
    assert out.ok and out.detail == "settled=2"
    assert all(3 not in run.tw.state().accounts[x].positions for x in ACCTS[:2])


# ---------------------------------------------------------------------- margins
def test_incremental_margins_equal_compute_all() -> None:
    """Over random trades, deposits and price moves, ``margins()`` equals ``EngineCore.compute_all``
    bit for bit, at the root and after the rounds."""
    run = funded()
    tw = run.tw
    assert not tw.merkle_roots  # by default the twin posts the zero hash (nothing in it reads the root)
    tw.merkle_roots = True
    rng = np.random.default_rng(11)
    prices = np.array([60_000.0, 3_000.0])
    for _ in range(12):
        prices *= np.exp(rng.normal(0, 0.01, 2))
        px = [int(x * 1000) * 10**15 for x in prices]
        run.next(*px)
        _check_margins(tw)
        _check_root(tw)
        intents: list[Any] = []
        for _ in range(6):
            i = int(rng.integers(0, len(ACCTS) - 1))
            ins = int(rng.integers(1, 3))
            size = 10**16 * int(rng.integers(1, 40))
            intents.append(Trade(ACCTS[i], ACCTS[i + 1], ins, size, px[ins - 1], bool(rng.integers(0, 2))))
        intents.append(Deposit(ACCTS[int(rng.integers(0, len(ACCTS)))], "WETH", 10**17))
        run.do(*intents)
        _check_margins(tw)
    assert tw._margins.stats["kernel_rows"] > 0  # the traders only, between full passes


def test_a_trade_attestation_judges_its_im_before_as_computed_afresh() -> None:
    """A fill lowers the IM (the attestation's reduce flag) against the account's IM before it, which the
    engine core takes from the account's last fill on the same market or from the root's margins when
    the positions are those: every trade attestation's action hash is the one the IM computed afresh
    (the engine on the account's risk input, no memo) gives, whether the IM before was reused or not."""
    run = funded()
    tw = run.tw
    core = tw.core
    checked = {"n": 0}
    attest = core.attest_trade

    def cross_checked(state: ProtocolState, req: Any, issued: int, expiry: int) -> Any:
        acct = state.accounts[req.account]
        engine = core.engine(state)
        im_before = attested_figures(*_margin_figures(engine.account(core._account_state(state, acct)))).im
        att = attest(state, req, issued, expiry)
        lowers = rules.reduces_im(im_before, att.initial_margin)
        assert att.action_hash == trade_action(req.account, req.instrument, req.size_delta, req.price, req.fee, lowers)
        checked["n"] += 1
        return att

    core.attest_trade = cross_checked  # type: ignore[method-assign]
    rng = np.random.default_rng(5)
    prices = np.array([60_000.0, 3_000.0])
    for _ in range(8):
        prices *= np.exp(rng.normal(0, 0.01, 2))
        px = [int(x * 1000) * 10**15 for x in prices]
        run.next(*px)
        for _ in range(3):  # rounds in the step: the same accounts trade again on the same market
            first, second = (int(k) for k in rng.permutation(len(ACCTS) - 1)[:2])
            intents = [Trade(ACCTS[first], ACCTS[first + 1], 1, 10**16 * int(rng.integers(1, 40)), px[0],
                             bool(rng.integers(0, 2)))]  # fmt: skip
            if abs(second - first) > 1:  # disjoint pairs: one round
                intents.append(Trade(ACCTS[second], ACCTS[second + 1], 2, 10**16 * int(rng.integers(1, 40)), px[1],
                                     bool(rng.integers(0, 2))))  # fmt: skip
            run.do(*intents)
    assert checked["n"] > 30
    assert tw._margins.stats["im_hints"] > 0 and core.ims_reused > 0  # both shortcuts were taken, and held


def _check_margins(tw: TwinBackend) -> None:
    a1, r1 = tw.margins()
    a2, r2 = tw.core.compute_all(tw.state())
    assert a1 == a2
    for f in fields(r1):
        assert np.array_equal(getattr(r1, f.name), getattr(r2, f.name)), f.name
    s = tw.state()
    engine = tw.core.engine(s)
    for a in a1:  # the engine's fast risk input is what the validating constructor builds
        acct, got = s.accounts[a], tw.core._account_state(s, s.accounts[a])
        ids = sorted(acct.positions)
        want = AccountState.from_ids(engine.instruments.index_of(ids) if ids else np.zeros(0, dtype=np.int64),
                                     [acct.positions[i].size / 1e18 for i in ids], cash=got.cash,
                                     cost_basis=got.cost_basis, funding_owed=got.funding_owed,
                                     collateral=got.collateral)  # fmt: skip
        assert got.rows.tolist() == want.rows.tolist() and got.sizes.tolist() == want.sizes.tolist()
        assert got.cash == acct.effective_cash(s.loss_index) / 1e6


def _check_root(tw: TwinBackend) -> None:
    """The posted root (hashed from the leaves' columns) is the status tree's root of the engine's
    leaves (``EngineCore.status_leaves``), and the root's figures are ``compute_all``'s on that state."""
    s = tw.state()
    leaves = tw.core.status_leaves(s)
    assert s.root is not None and s.root.root == StatusTree.build(leaves).root
    assert list(tw.status_leaves().values()) == leaves
    addresses, result = tw.root_margins()
    assert addresses == sorted(s.accounts) and np.array_equal(result.im, tw.core.compute_all(s)[1].im)


def test_refusal_names() -> None:
    from offchain.engine.service import InsufficientMarginError
    from offchain.errors import ContractRevertError

    assert refusal(ContractRevertError("Vault_Frozen", ("0x0",))) == "Vault_Frozen"
    assert refusal(InsufficientMarginError("size", 1, 2, "initial margin")) == "InsufficientMargin"
    assert root_time(100) == 101
