"""The ledger against the contracts: every operation on Anvil and on the ledger from the same state.

Each test indexes the chain (the suite's deployment, snapshot-reverted per test), builds a
:class:`~offchain.sim.ledger.Ledger` on a copy of that state, then does the same operation on both: on
the chain with the suite's harness (signed orders, attestations from the suite's risk signers, real
transactions), on the ledger with the same attestations at the block's timestamp. After each step the
indexer's rebuilt state and the ledger's must be equal in every field (all accounts, instruments,
settlements, prices, loss index, parameter hash, root, feed freshness), the Liquidator's auctions equal
the ledger's, and a refusal must carry the same custom error on both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import fields
from typing import Any

import pytest

from offchain import rules
from offchain.chain.actions import STATUS, bid_action, trade_action, withdraw_action
from offchain.chain.eip712 import Attestation
from offchain.chain.indexer import Indexer, ProtocolState
from offchain.chain.merkle import StatusLeaf, StatusTree
from offchain.chain.units import Kind
from offchain.engine.liquidation import AuctionView
from offchain.errors import ContractRevertError
from offchain.protocol import WAD
from offchain.sim.ledger import Ledger
from tests.chain.conftest import ALICE, BOB, CAROL, _deployed, addr, anvil  # noqa: F401  (the chain suite's fixtures)
from tests.chain.harness import USDC, Harness, next_nonce, post_status_root, status_leaf, status_root

pytestmark = pytest.mark.chain
BTC = 55_000 * 10**18
SKIP = {"block", "block_hash", "timestamp"}  # chain metadata: the ledger does not mine


@pytest.fixture(name="h")
def _harness(_deployed: Harness) -> Iterator[Harness]:  # noqa: F811
    """The chain suite's deployment, reverted to its post-setup state after each test (as ``tests/chain``'s ``h``)."""
    snap = _deployed.snapshot()
    try:
        yield _deployed
    finally:
        _deployed.revert_to(snap)


class Pair:
    """The chain (through the harness and the indexer) and a ledger started from the same state."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.ix = Indexer(h.p)
        self.ix.sync()
        feed = h.p.feed.functions
        latest = int(feed.latestRound().call()[0])
        rounds = [(int(feed.roundTimestamp(r).call()), tuple(int(feed.priceAt(r, u).call()) for u in range(2)))
                  for r in range(1, latest + 1)]  # fmt: skip
        self.led = Ledger(
            self.ix.state.copy(), h.p.deployment.tokens, h.p.deployment.contracts["InsuranceFund"],
            heartbeat=int(feed.heartbeat().call()), max_delay=int(feed.maxDelay().call()),
            base_params_hash=bytes(h.p.params.functions.paramsHash().call()), root_posted_at=h.now(),
            rounds=rounds, num_underlyings=int(feed.numUnderlyings().call()),
        )  # fmt: skip

    def block_time(self, receipt: Any) -> int:
        return int(self.h.p.w3.eth.get_block(receipt["blockNumber"])["timestamp"])

    def both(self, chain: Callable[[], Any], ledger: Callable[[int], Any]) -> str:
        """Run ``chain`` then ``ledger`` at the chain block's time; both succeed or both refuse with the
        same error (returned); the states are then compared."""
        try:
            receipt = chain()
            err, now = "", self.block_time(receipt)
        except ContractRevertError as exc:
            err, now = exc.error_name, self.h.now() + 1
        try:
            ledger(now)
            got = ""
        except ContractRevertError as exc:
            got = exc.error_name
        assert got == err, f"chain: {err or 'ok'}, ledger: {got or 'ok'}"
        self.check()
        return err

    def check(self) -> None:
        self.ix.sync()
        assert_same(self.ix.state, self.led.state)
        assert int(self.h.p.vault.functions.positiveCash().call()) == sum(
            a.cash for a in self.led.state.accounts.values() if a.cash > 0)  # fmt: skip
        for account in self.led.state.accounts:
            onchain = AuctionView.from_tuple(self.h.p.liquidator.functions.auctionOf(account).call())
            mine = self.led.auctions.get(account)
            assert (mine or AuctionView(False, False, False, 0, 0, 0, 0, 0, 0, 0, 0, 0)) == onchain, account


def assert_same(chain: ProtocolState, led: ProtocolState) -> None:
    """Field by field, naming the first difference."""
    for f in fields(ProtocolState):
        if f.name in SKIP:
            continue
        a, b = getattr(chain, f.name), getattr(led, f.name)
        if f.name == "accounts":
            assert sorted(a) == sorted(b), f"accounts: chain {sorted(set(a) ^ set(b))} differ"
            for k in a:
                assert a[k] == b[k], f"account {k}: chain {a[k]} != ledger {b[k]}"
        else:
            assert a == b, f"{f.name}: chain {a} != ledger {b}"


def att(h: Harness, account: str, action: bytes = STATUS, **kw: Any) -> Attestation:
    return h.attestation(account, action, **kw)


def trade_both(p: Pair, maker_key: str, taker_key: str, iid: int, size: int, price: int, taker_buys: bool,
               *, m_kw: dict[str, Any] | None = None, t_kw: dict[str, Any] | None = None,
               reduces: tuple[bool, bool] = (False, False)) -> str:  # fmt: skip
    """One fill on both: ``maker`` and ``taker`` attested by the suite's signers (permissive unless
    ``m_kw`` / ``t_kw`` say otherwise), the reduce flags as given."""
    h = p.h
    maker, taker = addr(maker_key), addr(taker_key)
    prm = h.p.params.functions.params().call()
    m_fee, t_fee = rules.fee(size, price, prm[2]), rules.fee(size, price, prm[3])
    m_delta = -size if taker_buys else size
    m_att = att(h, maker, trade_action(maker, iid, m_delta, price, m_fee, reduces[0]), **(m_kw or {}))
    t_att = att(h, taker, trade_action(taker, iid, -m_delta, price, t_fee, reduces[1]), **(t_kw or {}))
    mo = h.order(maker_key, iid, not taker_buys, size, price, nonce=next_nonce(), maker=True)
    to = h.order(taker_key, iid, taker_buys, size, price, nonce=next_nonce())
    proofs = (h.proof(m_att), h.proof(t_att))
    return p.both(lambda: h.trade(maker_key, mo, taker_key, to, size, proofs=proofs),
                  lambda now: p.led.trade(maker, taker, iid, size, price, taker_buys, now, m_att, t_att))  # fmt: skip


def deposit_both(p: Pair, key: str, sym: str, amount: int) -> str:
    return p.both(lambda: p.h.deposit(key, sym, amount), lambda now: p.led.deposit(addr(key), sym, amount, now))


def withdraw_both(p: Pair, key: str, sym: str, amount: int, **kw: Any) -> str:
    h, a = p.h, addr(key)
    token = h.token(sym).address
    a_att = att(h, a, withdraw_action(a, token, amount), **kw)
    return p.both(lambda: h.send(h.p.vault.functions.withdraw(token, amount, a, h.proof(a_att)), key),
                  lambda now: p.led.withdraw(a, sym, amount, now, a_att))  # fmt: skip


def post_both(p: Pair, prices: tuple[int, ...]) -> None:
    h = p.h
    if h.now() <= h.p.feed.functions.latestRound().call()[1]:
        h.warp(1)
    ts = h.now()  # observed at the latest block, posted in the next
    p.both(lambda: h.post_raw(prices, timestamp=ts), lambda now: p.led.post_prices(ts, prices, now))


def root_both(p: Pair, leaves: list[StatusLeaf]) -> StatusTree:
    h = p.h
    tree = StatusTree.build(leaves)
    r = status_root(h, tree.root, round_=h.p.oracle.functions.rootRound().call() + 1)
    p.both(lambda: post_status_root(h, r),
           lambda now: p.led.post_root(leaves, tree.root, r.price_round, r.issued_at, r.expiry, now))  # fmt: skip
    return tree


def start_both(p: Pair, account: str, tree: StatusTree) -> str:
    h = p.h
    leaf = next(x for x in tree.leaves if x.account == account)
    fn = h.p.liquidator.functions.start(account, leaf.as_tuple(), tree.proof(account))
    return p.both(lambda: h.send(fn, CAROL), lambda now: p.led.start(account, now))


def refresh_both(p: Pair, account: str, tree: StatusTree, gas: list[int] | None = None) -> str:
    """``Liquidator.refresh`` with the account's leaf of ``tree`` on both (its gas appended to ``gas``)."""
    h = p.h
    leaf = next(x for x in tree.leaves if x.account == account)
    fn = h.p.liquidator.functions.refresh(account, leaf.as_tuple(), tree.proof(account))

    def chain() -> Any:
        receipt = h.send(fn, CAROL)
        if gas is not None:
            gas.append(int(receipt["gasUsed"]))
        return receipt

    return p.both(chain, lambda now: p.led.refresh(account, now))


def bid_both(p: Pair, account: str, fraction: int, worst: int, key: str = CAROL, when: int | None = None,
             **kw: Any) -> str:  # fmt: skip
    """A bid on both; ``when`` pins the block time (no gas estimate then: it would run at the latest block's)."""
    h = p.h
    bidder = addr(key)
    version = int(h.p.liquidator.functions.auctionOf(account).call()[3])
    b_att = att(h, bidder, bid_action(bidder, account, version, fraction, worst), **kw)
    fn = h.p.liquidator.functions.bid(account, fraction, worst, version, h.proof(b_att))

    def chain() -> Any:
        if when is None:
            return h.send(fn, key)
        h.p.w3.provider.make_request("evm_setNextBlockTimestamp", [when])  # type: ignore[arg-type]
        return h.p.send(fn, key, gas=3_000_000)

    return p.both(chain,
                  lambda now: p.led.bid(bidder, account, fraction, worst, version, now, b_att))  # fmt: skip


def booked(h: Harness) -> Pair:
    """Alice 20k USDC and 1 WETH, Bob 200k, Carol 100k (all on both sides)."""
    p = Pair(h)
    deposit_both(p, ALICE, "USDC", 20_000 * USDC)
    deposit_both(p, ALICE, "WETH", 10**18)
    deposit_both(p, BOB, "USDC", 200_000 * USDC)
    deposit_both(p, CAROL, "USDC", 100_000 * USDC)
    return p


# ---------------------------------------------------------------------- deposits and withdrawals
def test_deposits_credit_cash_and_haircut_collateral(h: Harness) -> None:
    p = booked(h)
    deposit_both(p, BOB, "WBTC", 3 * 10**7)
    assert p.led.state.accounts[addr(ALICE)].deposit_credit > 20_000 * USDC  # the WETH counted, haircut
    assert deposit_both(p, ALICE, "USDC", 0) == "Vault_ZeroAmount"
    h.warp(2 * 3600)  # stale feed: collateral deposits still go through, credited nothing
    deposit_both(p, CAROL, "WETH", 2 * 10**18)
    assert p.led.state.accounts[addr(CAROL)].deposit_credit == 100_000 * USDC


def test_withdrawals_with_and_without_positions_and_their_refusals(h: Harness) -> None:
    p = booked(h)
    withdraw_both(p, CAROL, "USDC", 1_000 * USDC)  # no positions: no proof needed
    assert withdraw_both(p, CAROL, "USDC", 10**12) == "Vault_InsufficientCash"
    assert withdraw_both(p, ALICE, "WETH", 2 * 10**18) == "Vault_InsufficientCollateral"
    withdraw_both(p, ALICE, "WETH", 10**17)
    trade_both(p, ALICE, BOB, 1, 10**18, BTC, True)
    withdraw_both(p, ALICE, "USDC", 500 * USDC)  # attested
    assert withdraw_both(p, ALICE, "USDC", 500 * USDC, equity=10 * USDC, im=20 * USDC) == \
        "RiskOracle_InsufficientMargin"  # fmt: skip
    assert withdraw_both(p, ALICE, "USDC", 500 * USDC, risk_nonce=0) == "RiskOracle_StaleNonce"
    withdraw_both(p, ALICE, "USDC", rules.WITHDRAW_ALL)  # the whole cash after funding


# ---------------------------------------------------------------------- trades
def test_perp_trades_fees_and_funding_over_time(h: Harness) -> None:
    """Fills off the index leave a premium; funding accrues over hours with carry and is settled on the
    next fill of each side; fees split between the fund and the collector."""
    p = booked(h)
    btc = h.ids["BTC-PERP"]
    index = p.led.rounds[-1][1][0]
    trade_both(p, ALICE, BOB, btc, 10**18, index + 40 * 10**18, True)  # Bob buys above the index
    for k, move in enumerate((100, -250, 30)):
        h.warp(1_800 + 7 * k)
        post_both(p, (index + move * 10**18, p.led.rounds[-1][1][1]))
        trade_both(p, BOB, CAROL, btc, 10**17 * (k + 1), index + (move + 11) * 10**18, k % 2 == 0)
    trade_both(p, BOB, ALICE, btc, 10**18, index, True, reduces=(False, True))  # Alice closes (flagged)
    s = p.led.state
    assert s.instruments[btc].cumulative_funding != 0 and s.instruments[btc].carry != 0
    assert s.accounts[p.led.fund].cash > 0 and s.accounts[s.fee_collector].cash > 0
    eth = h.ids["ETH-PERP"]
    assert trade_both(p, ALICE, CAROL, eth, 10**15, 2_800 * 10**18, True) == "Vault_PositionTooSmall"
    assert trade_both(p, ALICE, CAROL, eth, 10**17, 4_000 * 10**18, True) == "Exchange_PriceOutsideBand"
    assert trade_both(p, ALICE, CAROL, eth, 10**17, 2_800 * 10**18, True, t_kw={"equity": 1, "im": 2}) == \
        "RiskOracle_InsufficientMargin"  # fmt: skip


def test_option_trade_is_premium_settled(h: Harness) -> None:
    p = booked(h)
    call = next(i for i, x in p.led.state.instruments.items() if x.kind == Kind.CALL)
    strike = p.led.state.instruments[call].strike
    index = p.led.rounds[-1][1][p.led.state.instruments[call].underlying]
    price = max(index - strike, 0) + 500 * 10**18
    trade_both(p, BOB, ALICE, call, 10**17, price, True)
    assert p.led.state.accounts[addr(ALICE)].positions[call].cost_basis == 0


def test_listing_prices_settlement(h: Harness) -> None:
    """A future listed on both, traded, expired: the first round after the expiry fixes its price, the
    Settler settles the holders (an account without the position is skipped)."""
    p = booked(h)
    expiry = h.now() + 3 * 3600
    fn = h.p.instruments.functions.list(int(Kind.FUTURE), 0, expiry, 0)
    p.both(lambda: h.send(fn), lambda now: p.led.list_instrument(int(Kind.FUTURE), 0, expiry, 0, now))
    fut = max(p.led.state.instruments)
    index = p.led.rounds[-1][1][0]
    trade_both(p, ALICE, BOB, fut, 2 * 10**17, index + 10**18, False)
    bad = h.p.instruments.functions.list(int(Kind.PERP), 5, 0, 0)
    p.both(lambda: h.send(bad), lambda now: p.led.list_instrument(int(Kind.PERP), 5, 0, 0, now))
    h.warp(3 * 3600 + 5)
    post_both(p, (index - 1_234_567 * 10**12, p.led.rounds[-1][1][1]))
    rnd = len(p.led.rounds)
    accounts = [addr(k) for k in (ALICE, BOB, CAROL)]
    settle = h.p.settler.functions.settleExpired(fut, accounts)
    assert p.both(lambda: h.send(settle), lambda now: p.led.settle(fut, accounts, now)) == \
        "Instruments_SettlementNotFixed"  # fmt: skip
    fix = h.p.instruments.functions.fixSettlement(0, expiry, rnd)
    p.both(lambda: h.send(fix), lambda now: p.led.fix_settlement(0, expiry, rnd, now))
    p.both(lambda: h.send(settle), lambda now: p.led.settle(fut, accounts, now))
    assert all(fut not in p.led.state.accounts[a].positions for a in accounts)


# ---------------------------------------------------------------------- liquidations
def test_auction_start_and_solvent_bids(h: Harness) -> None:
    p = booked(h)
    a = addr(ALICE)
    trade_both(p, BOB, ALICE, h.ids["BTC-PERP"], 10**18, p.led.rounds[-1][1][0], True)
    healthy = status_leaf(h, a, equity=13_000 * USDC, mm=12_000 * USDC, im=15_000 * USDC)
    tree = root_both(p, [healthy, status_leaf(h, addr(BOB))])
    assert start_both(p, a, tree) == "Liquidator_Healthy"
    breached = status_leaf(h, a, equity=9_000 * USDC, mtm_equity=9_000 * USDC, mm=12_000 * USDC, im=15_000 * USDC)
    tree = root_both(p, [breached, status_leaf(h, addr(BOB))])
    start_both(p, a, tree)
    assert start_both(p, a, tree) == "Liquidator_AlreadyInAuction"
    assert trade_both(p, ALICE, BOB, h.ids["ETH-PERP"], 10**17, 2_800 * 10**18, True) == "Vault_Frozen"
    h.warp(120)
    assert bid_both(p, a, WAD, 10**12) == "Liquidator_BadFraction"
    assert bid_both(p, a, WAD // 10, 0) == "Liquidator_PriceAboveLimit"
    assert bid_both(p, a, WAD // 10, 10**12, equity=1, im=2) == "Liquidator_InsufficientMargin"
    bid_both(p, a, WAD // 10, 10**12)
    h.warp(600)
    when = h.now() + 5
    fmax = rules.max_fraction(p.led.auctions[a].rules_state(), when, _params(p))
    bid_both(p, a, fmax, 10**12, when=when)  # the largest fraction ends a solvent auction
    assert a not in p.led.auctions and not p.led.state.accounts[a].frozen


def test_insolvent_bid_draws_the_fund_then_socialises(h: Harness) -> None:
    """The fund (fed by fees) pays first; the rest is socialised over positive cash: the loss index
    rises, the parameter hash is rebound, the root cleared; a later cash touch is charged its share."""
    p = booked(h)
    a = addr(ALICE)
    btc = h.ids["BTC-PERP"]
    index = p.led.rounds[-1][1][0]
    trade_both(p, BOB, ALICE, btc, 10**18, index, True)
    trade_both(p, CAROL, BOB, btc, 10**17, index, True)  # more fees into the fund
    leaf = status_leaf(h, a, equity=-30_000 * USDC, mtm_equity=-30_000 * USDC, mm=12_000 * USDC, im=15_000 * USDC)
    tree = root_both(p, [leaf, status_leaf(h, addr(BOB))])
    start_both(p, a, tree)
    assert p.led.auctions[a].insolvent
    h.warp(900)
    fund_before = p.led.state.accounts[p.led.fund].cash
    bid_both(p, a, WAD // 2, 0)
    s = p.led.state
    assert s.accounts[p.led.fund].cash == 0 < fund_before
    assert s.loss_index > 0 and s.root is not None and s.root.cleared
    assert start_both(p, addr(BOB), tree) == "RiskOracle_NoRoot"
    deposit_both(p, BOB, "USDC", 10 * USDC)  # Bob's balance realises its share of the loss
    h.warp(60)
    bid_both(p, a, WAD // 2, 0, params_hash=bytes(h.p.oracle.functions.paramsHash().call()))


def test_a_frozen_fill_that_lowers_the_im_stales_the_auction_until_refreshed(h: Harness) -> None:
    """A frozen account may still make a fill that lowers its IM (F-7); that moves its risk nonce under
    the auction's snapshot: bids are refused until ``Liquidator.refresh`` takes a leaf at the new nonce
    (version + 1, the clock kept); a leaf back above maintenance margin ends the auction."""
    p = booked(h)
    a = addr(ALICE)
    btc = h.ids["BTC-PERP"]
    index = p.led.rounds[-1][1][0]
    trade_both(p, BOB, ALICE, btc, 10**18, index, True)
    leaf = status_leaf(h, a, equity=9_000 * USDC, mtm_equity=9_000 * USDC, mm=12_000 * USDC, im=15_000 * USDC)
    old = root_both(p, [leaf, status_leaf(h, addr(BOB))])
    start_both(p, a, old)
    assert refresh_both(p, addr(BOB), old) == "Liquidator_NoAuction"
    started = p.led.auctions[a].started_at
    # Alice sells half her perpetual while frozen: allowed with the reduce flag (and MM) only
    trade_both(p, BOB, ALICE, btc, 5 * 10**17, index, False, reduces=(False, True))
    h.warp(60)
    assert bid_both(p, a, WAD // 10, 10**12) == "Liquidator_StaleSnapshot"
    assert refresh_both(p, a, old) == "RiskOracle_StaleNonce"
    lower = status_leaf(h, a, equity=8_000 * USDC, mtm_equity=8_000 * USDC, mm=10_000 * USDC, im=12_500 * USDC)
    new = root_both(p, [lower, status_leaf(h, addr(BOB))])
    gas: list[int] = []
    assert refresh_both(p, a, new, gas) == ""
    got = p.led.auctions[a]
    assert (got.version, got.started_at, got.equity, got.maintenance_margin) == (1, started, 8_000 * USDC,
                                                                                10_000 * USDC)  # fmt: skip
    assert bid_both(p, a, WAD // 10, 10**12) == ""
    healthy = status_leaf(h, a, equity=13_000 * USDC, mm=10_000 * USDC, im=12_500 * USDC)
    assert refresh_both(p, a, root_both(p, [healthy, status_leaf(h, addr(BOB))])) == ""
    assert a not in p.led.auctions and not p.led.state.accounts[a].frozen
    print(f"Liquidator.refresh gas: {gas[0]:,}")


def _params(p: Pair) -> rules.AuctionParams:
    from offchain.engine.liquidation import auction_params

    assert p.led.state.liquidation is not None
    return auction_params(p.led.state.liquidation)
