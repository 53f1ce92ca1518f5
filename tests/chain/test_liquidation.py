"""Liquidations on Anvil: start, solvent partial bids, insolvent bids with a fund draw, the fund
exhausted with socialised loss, emergency mode; each figure compared with ``offchain.rules``.

Figures in the status leaves are chosen by the tests (signed by the suite's risk signers): these
tests check what the contracts do with a status result, not the engine's margin numbers.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offchain import rules
from offchain.chain.actions import STATUS, bid_action
from offchain.chain.indexer import Indexer
from offchain.chain.merkle import StatusLeaf, StatusTree
from offchain.chain.params import LiquidationParams
from offchain.protocol import WAD
from tests.chain.conftest import ALICE, BOB, CAROL, DAY, RELAYER, SUITE_LIQUIDATION, addr
from tests.chain.harness import USDC, Harness, empty_proof, post_status_root, reverts, status_leaf, status_root
from tests.chain.test_indexer import LIQUIDATION_EVENTS, assert_matches_chain

pytestmark = pytest.mark.chain
BTC = 55_000 * 10**18


# ---------------------------------------------------------------------- helpers
def book(h: Harness) -> None:
    """Alice 1 BTC long against Bob (perp), Alice also holds 1 WETH; Carol is a funded bidder."""
    h.deposit(ALICE, "USDC", 20_000 * USDC)
    h.deposit(ALICE, "WETH", 10**18)
    h.deposit(BOB, "USDC", 200_000 * USDC)
    h.deposit(CAROL, "USDC", 100_000 * USDC)
    h.fill(ALICE, BOB, h.ids["BTC-PERP"], 10**18, BTC)


def post_leaves(h: Harness, leaves: list[StatusLeaf]) -> StatusTree:
    tree = StatusTree.build(leaves)
    post_status_root(h, status_root(h, tree.root, round_=h.p.oracle.functions.rootRound().call() + 1))
    return tree


def start(h: Harness, account: str, *, mtm: int, equity: int, mm: int, im: int) -> Any:
    leaf = status_leaf(h, account, equity=equity, mm=mm, im=im, mtm_equity=mtm)
    other = addr(RELAYER)  # a second leaf, so that the proof is not empty
    tree = post_leaves(h, [leaf, status_leaf(h, other)])
    return h.send(h.p.liquidator.functions.start(account, leaf.as_tuple(), tree.proof(account)), CAROL)


def auction_params(h: Harness) -> rules.AuctionParams:
    lp = LiquidationParams(*h.p.params.functions.liquidationParams().call())
    return rules.AuctionParams(
        lp.start_discount, lp.cutoff_discount, lp.fast_length, lp.slow_length, lp.insolvent_length,
        lp.buffer_ratio, lp.liquidation_fee, lp.small_portfolio,
    )  # fmt: skip


def auction_state(h: Harness, account: str) -> rules.AuctionState:
    a = h.p.liquidator.functions.auctionOf(account).call()
    # (active, insolvent, emergency, version, startedAt, nonce, V, E, M, IM, B, credit)
    return rules.AuctionState(a[4], a[1], a[6], a[7], a[8], a[9], a[10])


def bid_proof(h: Harness, bidder: str, account: str, fraction: int, worst: int, **kw: Any) -> Any:
    version = h.p.liquidator.functions.auctionOf(account).call()[3]
    return h.proof(h.attestation(bidder, bid_action(bidder, account, version, fraction, worst), **kw))


def at(h: Harness, timestamp: int) -> None:
    """Pin the next block's timestamp, so that a bid's price can be computed before it is mined."""
    h.p.w3.provider.make_request("evm_setNextBlockTimestamp", [timestamp])  # type: ignore[arg-type]


def bid(h: Harness, account: str, fraction: int, worst: int, *, key: str = CAROL, when: int | None = None,
        version: int | None = None, **kw: Any) -> Any:  # fmt: skip
    bidder = addr(key)
    if when is not None:  # an attestation live at the pinned time
        kw = {"issued_at": when - 10, "expiry": when + 100, **kw}
    proof = bid_proof(h, bidder, account, fraction, worst, **kw)
    v = h.p.liquidator.functions.auctionOf(account).call()[3] if version is None else version
    fn = h.p.liquidator.functions.bid(account, fraction, worst, v, proof)
    if when is None:
        return h.send(fn, key)
    at(h, when)  # no gas estimate: it would run at the latest block's time, not the pinned one
    return h.p.send(fn, key, gas=3_000_000)


def portfolio(h: Harness, account: str) -> tuple[int, dict[str, int], dict[int, tuple[int, int]]]:
    cash, _, _, tokens, balances, positions = h.p.lens.functions.getAccount(account).call()
    return cash, {str(t): int(b) for t, b in zip(tokens, balances, strict=True)}, {
        int(p[0]): (int(p[1]), int(p[2])) for p in positions}  # fmt: skip


# ---------------------------------------------------------------------- start
def test_start_needs_a_proof_of_breach_and_freezes_the_account(h: Harness) -> None:
    """I-19, I-23: only a credited equity below MM starts an auction; the account is frozen, its nonce
    bumped (the same proof cannot start or bid twice); refusals are named."""
    book(h)
    a, liq = addr(ALICE), h.p.liquidator.functions
    healthy = status_leaf(h, a, equity=12_000 * USDC, mm=12_000 * USDC, im=15_000 * USDC)
    tree = post_leaves(h, [healthy, status_leaf(h, addr(BOB))])
    with reverts("Liquidator_Healthy", 12_000 * USDC, 12_000 * USDC):
        h.send(liq.start(a, healthy.as_tuple(), tree.proof(a)), CAROL)
    # a deposit credited since the leaf lifts a breached account back: still healthy (I-19)
    breached = status_leaf(h, a, equity=11_000 * USDC, mm=12_000 * USDC, im=15_000 * USDC)
    tree = post_leaves(h, [breached, status_leaf(h, addr(BOB))])
    h.deposit(BOB, "USDC", 1_000 * USDC, account=a)
    with reverts("Liquidator_Healthy", 12_000 * USDC, 12_000 * USDC):
        h.send(liq.start(a, breached.as_tuple(), tree.proof(a)), CAROL)
    nonce = h.nonce(a)
    start(h, a, mtm=9_000 * USDC, equity=9_000 * USDC, mm=12_000 * USDC, im=15_000 * USDC)
    assert h.p.liquidator.functions.auctionOf(a).call()[0] and h.nonce(a) == nonce + 1
    leaf = status_leaf(h, a, equity=1, mm=2, im=3)
    with reverts("Liquidator_AlreadyInAuction", a):
        h.send(liq.start(a, leaf.as_tuple(), []), CAROL)
    stale = replace(leaf, risk_nonce=nonce)  # the nonce before the start: a replayed proof
    with reverts("RiskOracle_StaleNonce"):
        h.p.call(h.p.oracle.functions.verifyStatus(stale.as_tuple(), [], a, h.nonce(a), 0))
    token = h.token("USDC").address
    with reverts("Vault_Frozen", a):
        h.send(h.p.vault.functions.withdraw(token, 1, a, h.withdraw_proof(a, token, 1)), ALICE)
    with reverts("Vault_Frozen", a):  # adding risk while frozen
        h.fill(ALICE, BOB, h.ids["ETH-PERP"], 10**18, 2_800 * 10**18)
    h.check_conservation()


def test_start_with_a_status_attestation(h: Harness) -> None:
    """A status attestation (no action bound) proves a breach as a leaf does; a trade attestation does not."""
    book(h)
    a = addr(ALICE)
    att = h.attestation(a, equity=5_000 * USDC, mm=6_000 * USDC, im=7_500 * USDC)
    h.send(h.p.liquidator.functions.startWithAttestation(a, h.proof(att)), CAROL)
    assert h.p.liquidator.functions.auctionOf(a).call()[0]
    other = h.attestation(addr(BOB), b"\x01" * 32, equity=0, mm=1)
    with reverts("RiskOracle_WrongAction"):
        h.send(h.p.liquidator.functions.startWithAttestation(addr(BOB), h.proof(other)), CAROL)


# ---------------------------------------------------------------------- solvent auctions
def test_solvent_partial_bids_follow_the_rules(h: Harness) -> None:
    """I-20, I-21, I-24: partial bids take at most f_max, pay ceil(f·V·d), pay the fee to the fund, move the
    exact fraction of every position, collateral and the cash; the snapshot scales per fill; the
    account's ratio never worsens; the auction ends once E ≥ B. Conservation holds throughout."""
    book(h)
    a, c, liq = addr(ALICE), addr(CAROL), h.p.liquidator.functions
    p = auction_params(h)
    start(h, a, mtm=10_000 * USDC, equity=9_000 * USDC, mm=12_000 * USDC, im=15_000 * USDC)
    s0 = auction_state(h, a)
    assert s0.buffer_margin == rules.buffer_margin(9_000 * USDC, 12_000 * USDC, p.buffer_ratio)
    t = s0.started_at + 5 * 60
    fmax = rules.max_fraction(s0, t, p)
    with reverts("Liquidator_BadFraction", fmax + 1, fmax):
        bid(h, a, fmax + 1, 10**12, when=t)
    f = fmax // 2
    price, fee = rules.bid_price(s0, f, t, p)
    with reverts("Liquidator_PriceAboveLimit", price, price - 1):
        bid(h, a, f, price - 1, when=t)
    with reverts("Liquidator_VersionChanged", 1, 0):
        bid(h, a, f, price, when=t, version=1)
    with reverts("Liquidator_InsufficientMargin"):
        bid(h, a, f, price, when=t, equity=1_000 * USDC, im=2_000 * USDC)
    before_a, before_c = portfolio(h, a), portfolio(h, c)
    fund_before = h.cash(h.p.fund.address)
    rc = bid(h, a, f, price, when=t)
    [ev] = h.events(h.p.liquidator, "Bid", rc)
    assert (ev["fractionWad"], ev["price"], ev["fee"], ev["discountWad"]) == (f, price, fee, rules.discount(s0, t, p))
    assert h.cash(h.p.fund.address) - fund_before == fee
    after_a, after_c = portfolio(h, a), portfolio(h, c)
    perp = h.ids["BTC-PERP"]
    size, cost = before_a[2][perp]
    moved = rules.moved_size(size, f)
    moved_cost = rules.moved_cost(cost, size, moved, f)
    assert after_a[2][perp] == (size - moved, cost - moved_cost)
    assert after_c[2][perp] == (moved, moved_cost)
    weth = h.token("WETH").address
    taken = rules.moved_collateral(before_a[1][weth], f)
    assert (after_a[1][weth], after_c[1][weth]) == (before_a[1][weth] - taken, taken)
    cash_moved = rules.moved_cash(before_a[0], f)
    assert after_a[0] == before_a[0] - cash_moved + price
    assert after_c[0] == before_c[0] + cash_moved - price - fee
    s1 = auction_state(h, a)
    expected = rules.after_bid(s0, f, price)
    assert expected is not None and s1 == expected
    assert s1.equity * s0.maintenance_margin >= s0.equity * s1.maintenance_margin  # I-20: ratio not worse
    h.check_conservation()
    # the rest: the largest fraction now restores the buffer and ends the auction (I-20)
    t2 = t + 60
    f2 = rules.max_fraction(s1, t2, p)
    price2, _ = rules.bid_price(s1, f2, t2, p)
    rc = bid(h, a, f2, price2, when=t2)
    assert h.events(h.p.liquidator, "AuctionEnded", rc) == [{"account": a, "reason": 0}]
    assert not h.p.liquidator.functions.auctionOf(a).call()[0] and not liq.auctionOf(a).call()[0]
    h.check_conservation()


def test_refresh_ends_an_auction_on_a_healthy_leaf(h: Harness) -> None:
    """A newer leaf at the account's current nonce updates the snapshot, or ends the auction when the
    account is back at or above MM; a leaf of the old nonce is refused."""
    book(h)
    a, liq = addr(ALICE), h.p.liquidator.functions
    start(h, a, mtm=10_000 * USDC, equity=9_000 * USDC, mm=12_000 * USDC, im=15_000 * USDC)
    worse = status_leaf(h, a, equity=8_000 * USDC, mm=12_000 * USDC, im=15_000 * USDC, mtm_equity=-100 * USDC)
    tree = post_leaves(h, [worse, status_leaf(h, addr(BOB))])
    h.send(liq.refresh(a, worse.as_tuple(), tree.proof(a)), BOB)
    s = liq.auctionOf(a).call()
    assert s[1] and s[3] == 1 and s[6] == -100 * USDC  # insolvent now, version 1
    healthy = status_leaf(h, a, equity=13_000 * USDC, mm=12_000 * USDC, im=15_000 * USDC)
    tree = post_leaves(h, [healthy, status_leaf(h, addr(BOB))])
    rc = h.send(liq.refresh(a, healthy.as_tuple(), tree.proof(a)), BOB)
    assert h.events(h.p.liquidator, "AuctionEnded", rc) == [{"account": a, "reason": 2}]
    assert not h.p.liquidator.functions.auctionOf(a).call()[0]


# ---------------------------------------------------------------------- insolvent auctions
def test_insolvent_auction_draws_on_the_fund_then_socialises(h: Harness) -> None:
    """I-22, I-25, I-1b: the fund pays the bidder f·(|V| + M·t/T); what it cannot pay is socialised through the
    loss index (never silent); bad debt = fund draws + socialised loss exactly; positive balances are
    charged pro rata; earlier attestations stop verifying; the indexer follows every event."""
    book(h)
    a, c, fund = addr(ALICE), addr(CAROL), h.p.fund.address
    p = auction_params(h)
    h.deposit(BOB, "USDC", 500 * USDC, account=fund)
    start(h, a, mtm=-2_000 * USDC, equity=-2_500 * USDC, mm=3_000 * USDC, im=3_750 * USDC)
    s0 = auction_state(h, a)
    assert s0.insolvent
    t = s0.started_at + 30 * 60
    price, _ = rules.bid_price(s0, WAD, t, p)
    assert price == -(2_000 + 1_500) * USDC
    fund_cash = h.cash(fund)
    draw, rest = rules.fund_draw(fund_cash, -price)
    old_att = h.attestation(addr(BOB), STATUS, equity=10**12)
    bob_before = h.cash(addr(BOB))
    rc = bid(h, a, WAD, price, when=t)
    [ev] = h.events(h.p.liquidator, "Bid", rc)
    assert (ev["price"], ev["fundDraw"], ev["socialised"]) == (price, draw, rest)
    assert ev["fundDraw"] + ev["socialised"] == -price  # I-22: bad debt = fund draw + socialised loss
    [soc] = h.events(h.p.vault, "LossSocialised", rc)
    assert soc["socialised"] == rest and soc["lossIndex"] == h.p.vault.functions.lossIndex().call() > 0
    assert h.cash(fund) == 0
    assert h.events(h.p.liquidator, "AuctionEnded", rc) == [{"account": a, "reason": 1}]
    assert portfolio(h, a) == (0, {k: 0 for k in portfolio(h, a)[1]}, {})  # emptied
    # Bob's positive cash bears its share, charged lazily and rounded up
    assert h.cash(addr(BOB)) < bob_before
    assert bob_before - h.cash(addr(BOB)) >= rest * bob_before // (h.p.vault.functions.positiveCash().call() + rest)
    # results computed before the loss are void (paramsHash re-bound to the loss index)
    assert h.p.oracle.functions.paramsHash().call() != h.p.params.functions.paramsHash().call()
    with reverts("RiskOracle_WrongParams"):
        h.p.call(h.p.oracle.functions.verify(h.proof(old_att), addr(BOB), h.nonce(addr(BOB)), STATUS,
                                             h.p.vault.functions.depositCredit(addr(BOB)).call()))  # fmt: skip
    assert bytes(h.p.oracle.functions.statusRoot().call()) == b"\x00" * 32
    h.check_conservation()  # I-1b: only rounding dust in the vault's favour
    # a later touch charges Bob for real (LossApplied), and the indexer mirrors all of it
    h.deposit(BOB, "USDC", 1 * USDC)
    ix = Indexer(h.p)
    ix.sync()
    assert_matches_chain(h, ix.state)
    assert LIQUIDATION_EVENTS - {"CollateralTransferred"} <= set(ix.applied)
    assert ix.state.params_hash == bytes(h.p.oracle.functions.paramsHash().call())
    assert c in ix.state.accounts


def test_solvent_bid_moves_collateral_and_is_indexed(h: Harness) -> None:
    """The indexer's state equals the contracts' after a partial bid that moves collateral."""
    book(h)
    a = addr(ALICE)
    start(h, a, mtm=10_000 * USDC, equity=9_000 * USDC, mm=12_000 * USDC, im=15_000 * USDC)
    s0 = auction_state(h, a)
    f = rules.max_fraction(s0, s0.started_at + 1, auction_params(h)) // 3
    price, _ = rules.bid_price(s0, f, s0.started_at + 1, auction_params(h))
    bid(h, a, f, price, when=s0.started_at + 1)
    ix = Indexer(h.p)
    ix.sync()
    assert_matches_chain(h, ix.state)
    assert {"CollateralTransferred", "CashTransferred", "FrozenSet"} <= set(ix.applied)


# ---------------------------------------------------------------------- emergency mode
def test_emergency_mode_lets_healthy_accounts_out_and_liquidates_on_standard_margin(h: Harness) -> None:
    """I-26: with no status root for `emergencyDelay`, no new risk; withdrawals need only the on-chain
    standard margin (no signatures); liquidations start and bid on it; a new root ends the mode."""
    book(h)
    a, v = addr(ALICE), h.p.vault.functions
    h.send(h.p.params.functions.setLiquidationParams(replace(SUITE_LIQUIDATION, emergency_delay=3600).as_tuple()))
    assert not h.p.oracle.functions.emergency().call()
    h.warp(3601)
    h.refresh_prices()
    assert h.p.oracle.functions.emergency().call()
    with reverts("Vault_Emergency"):  # an attested risk-adding trade is refused
        h.fill(ALICE, BOB, h.ids["ETH-PERP"], 10**18, 2_800 * 10**18)
    equity, mtm, req = h.p.standard_margin.functions.figures(a).call()
    assert req == rules.mul_div_up(55_000 * USDC, 20, 100) and equity < mtm  # 20 % of notional; WETH haircut
    usdc = h.token("USDC").address
    ok = equity - req - 1
    h.send(v.withdraw(usdc, ok, a, empty_proof()), ALICE)  # no signatures needed
    with reverts("StandardMargin_Insufficient"):
        h.send(v.withdraw(usdc, 2, a, empty_proof()), ALICE)
    with reverts("Liquidator_Healthy"):
        h.send(h.p.liquidator.functions.startEmergency(a), CAROL)
    # BTC falls 20 %: Alice breaches the emergency MM (80 % of the standard requirement)
    prices = h.latest_prices()
    h.post_raw((prices[0] * 8 // 10 // 10**15 * 10**15, prices[1]), signers=h.price_signers)
    h.send(h.p.liquidator.functions.startEmergency(a), CAROL)
    s = h.p.liquidator.functions.auctionOf(a).call()
    assert s[0] and s[2]  # active, emergency
    f = h.p.liquidator.functions.maxFraction(a).call()
    price, _ = h.p.liquidator.functions.quote(a, f).call()
    h.send(h.p.liquidator.functions.bid(a, f, price, s[3], empty_proof()), CAROL)  # bidder on standard margin
    assert portfolio(h, addr(CAROL))[2]
    # a root ends emergency mode
    post_leaves(h, [status_leaf(h, addr(BOB))])
    assert not h.p.oracle.functions.emergency().call()
    h.check_conservation()


# ---------------------------------------------------------------------- parameters
@pytest.mark.parametrize(("field", "bad"), [
    ("startDiscount", {"start_discount": WAD + 1}),
    ("cutoffDiscount", {"cutoff_discount": 96 * WAD // 100}),
    ("liquidationFee", {"liquidation_fee": WAD // 10 + 1}),
    ("bufferRatio", {"buffer_ratio": 4 * WAD + 1}),
    ("emergencyDelay", {"emergency_delay": 60}),
    ("fastLength", {"fast_length": 0}),
])  # fmt: skip
def test_liquidation_parameters_are_bounded(h: Harness, field: str, bad: dict[str, int]) -> None:
    """I-18: hard bounds on the liquidation parameters; a refused change changes nothing."""
    before = h.p.params.functions.paramsHash().call()
    with reverts("RiskParams_OutOfBounds", field):
        h.send(h.p.params.functions.setLiquidationParams(replace(LiquidationParams(), **bad).as_tuple()))
    assert h.p.params.functions.paramsHash().call() == before


# ---------------------------------------------------------------------- differential: contract vs rules
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    mtm=st.integers(-50_000, 200_000), gap=st.integers(1, 50_000), mm=st.integers(1, 100_000),
    waits=st.lists(st.integers(0, 14 * 3600), min_size=1, max_size=4),
)  # fmt: skip
def test_auction_views_equal_the_python_rules(h: Harness, mtm: int, gap: int, mm: int, waits: list[int]) -> None:
    """I-27, differential: discount, max fraction and quotes of the Liquidator equal ``offchain.rules`` to the
    unit, at random snapshots and times."""
    with h.isolated():
        book(h)
        a, liq, p = addr(ALICE), h.p.liquidator.functions, auction_params(h)
        equity = (mm - gap) * USDC
        start(h, a, mtm=mtm * USDC, equity=equity, mm=mm * USDC, im=mm * USDC * 5 // 4)
        s = auction_state(h, a)
        for w in waits:
            h.warp(w)
            now = h.now()
            if not s.insolvent:
                assert liq.discount(a).call() == rules.discount(s, now, p)
            fmax = rules.max_fraction(s, now, p)
            assert liq.maxFraction(a).call() == fmax
            for f in {1, fmax // 3 or 1, fmax or 1}:
                assert tuple(liq.quote(a, f).call()) == rules.bid_price(s, f, now, p)


def test_gas_of_a_start_is_independent_of_the_signed_figures(h: Harness) -> None:
    """A start with a root proof costs the same whatever the figures (sanity for the gas table)."""
    book(h)
    rc = start(h, addr(ALICE), mtm=10_000 * USDC, equity=9_000 * USDC, mm=12_000 * USDC, im=15_000 * USDC)
    assert rc["gasUsed"] < 250_000
    assert DAY  # the suite's emergency delay (SUITE_LIQUIDATION) is long: see conftest


def test_a_bidder_in_its_own_auction_cannot_bid(h: Harness) -> None:
    """A frozen account takes on no risk: it cannot bid on another auction while its own runs."""
    book(h)
    a, b = addr(ALICE), addr(BOB)
    start(h, a, mtm=10_000 * USDC, equity=9_000 * USDC, mm=12_000 * USDC, im=15_000 * USDC)
    start(h, b, mtm=10_000 * USDC, equity=9_000 * USDC, mm=12_000 * USDC, im=15_000 * USDC)
    with reverts("Liquidator_AlreadyInAuction", b):
        bid(h, a, 10**15, 10**12, key=BOB)
