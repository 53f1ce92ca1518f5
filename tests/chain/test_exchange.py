"""Exchange: signed orders, partial fills, limit prices, fees, operators, cancels, bad input."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from offchain.chain.actions import trade_action
from offchain.chain.eip712 import Signer, sign_order
from offchain.chain.params import OnchainParams
from offchain.chain.units import value
from tests.chain.conftest import ALICE, BOB, CAROL, RELAYER, addr
from tests.chain.harness import USDC, ZERO_ADDRESS, Harness, empty_proof, key_addr, next_nonce, reverts

U = 10**18  # one unit of size, one USD of price
BTC = 55_000 * U


@pytest.fixture
def funded(h: Harness) -> Harness:
    for key in (ALICE, BOB, CAROL):
        h.deposit(key, "USDC", 200_000 * USDC)
    return h


def funding_paid(h: Harness, rc: dict, account: str) -> int:
    """Funding ``account`` paid inside a trade (a perp fill settles accrued funding first)."""
    return sum(e["payment"] for e in h.events(h.p.vault, "FundingSettled", rc) if e["account"] == account)


def orders(h: Harness, instrument: int, size: int, price: int, taker_price: int | None = None,
           maker_buys: bool = True) -> tuple:  # fmt: skip
    """A maker order of Alice and a crossing taker order of Bob."""
    m = h.order(ALICE, instrument, maker_buys, size, price, nonce=next_nonce(), maker=True)
    t = h.order(BOB, instrument, not maker_buys, size, taker_price or price, nonce=next_nonce())
    return m, t


# ---------------------------------------------------------------------- fills
def test_partial_fills_then_overfill(funded: Harness) -> None:
    """I-12: an order fills in parts up to its size, by several takers; one more lot overfills."""
    h, perp = funded, funded.ids["BTC-PERP"]
    maker = h.order(ALICE, perp, False, 3 * U, BTC, nonce=next_nonce(), maker=True)
    mh = h.p.exchange.functions.orderHash(maker.as_tuple()).call()
    t1 = h.order(BOB, perp, True, U, BTC, nonce=next_nonce())
    rc = h.trade(ALICE, maker, BOB, t1, U)
    [ev] = h.events(h.p.exchange, "OrderFilled", rc)
    assert (ev["makerHash"], ev["size"], ev["price"]) == (mh, U, BTC)
    assert h.p.exchange.functions.filled(mh).call() == U
    t2 = h.order(CAROL, perp, True, 5 * U, BTC + U, nonce=next_nonce())
    h.trade(ALICE, maker, CAROL, t2, 2 * U)
    assert h.p.exchange.functions.filled(mh).call() == 3 * U
    assert h.positions(addr(ALICE))[perp][0] == -3 * U
    t3 = h.order(BOB, perp, True, U, BTC, nonce=next_nonce())
    with reverts("Exchange_Overfill", mh, 3 * U, 3 * U):
        h.trade(ALICE, maker, BOB, t3, 10**15)  # one more lot
    # the taker order of Carol keeps its remaining 3 units
    th = h.p.exchange.functions.orderHash(t2.as_tuple()).call()
    assert h.p.exchange.functions.filled(th).call() == 2 * U
    h.check_settled_conservation()


def test_replayed_fill_overfills(funded: Harness) -> None:
    """I-12: resubmitting a filled pair of orders (a replay) reverts with Exchange_Overfill."""
    h, perp = funded, funded.ids["BTC-PERP"]
    m, t = orders(h, perp, U, BTC)
    h.trade(ALICE, m, BOB, t, U)
    mh = h.p.exchange.functions.orderHash(m.as_tuple()).call()
    with reverts("Exchange_Overfill", mh, U, U):
        h.trade(ALICE, m, BOB, t, U)


def test_fill_at_maker_price_within_taker_limit(funded: Harness) -> None:
    """The fill price is the maker's limit; a taker limit that does not cross is refused."""
    h, call = funded, funded.ids["BTC-C60K"]
    premium = 1_250 * U
    m, t = orders(h, call, U, premium, taker_price=premium + 50 * U, maker_buys=False)
    bob = h.cash(addr(BOB))
    h.trade(ALICE, m, BOB, t, U)  # Bob would pay 1300, pays 1250
    assert h.cash(addr(BOB)) == bob - value(U, premium) - h.fees(U, premium)[1]
    m, t = orders(h, call, U, premium, taker_price=premium - 10**15, maker_buys=False)
    with reverts("Exchange_PriceOutsideLimit", premium, premium - 10**15):  # buyer's limit too low
        h.trade(ALICE, m, BOB, t, U)
    m, t = orders(h, call, U, premium, taker_price=premium + 10**15, maker_buys=True)
    with reverts("Exchange_PriceOutsideLimit", premium, premium + 10**15):  # seller wants more
        h.trade(ALICE, m, BOB, t, U)


def test_fees_go_to_collector_rounded_up(funded: Harness) -> None:
    """I-4: maker and taker fees (on |size|*price, rounded up) move from the traders to the insurance
    fund (its `fundFeeShare`, rounded down) and the fee collector (the rest); premium plus fees sum to
    zero over buyer, seller, fund and collector."""
    h, call = funded, funded.ids["ETH-C3K"]
    collector = h.p.vault.functions.feeCollector().call()
    size, price = 17 * 10**15, 123_457 * 10**15  # 0.017 at 123.457: notional 2.098769 USD
    notional = value(size, price)
    prm = OnchainParams()
    maker_fee = -(-notional * prm.maker_fee // 10**18)
    taker_fee = -(-notional * prm.taker_fee // 10**18)
    assert notional * prm.maker_fee % 10**18 != 0, "the case must exercise rounding"
    fund = h.p.fund.address
    to_fund = (maker_fee + taker_fee) * prm.fund_fee_share // 10**18
    assert 0 < to_fund < maker_fee + taker_fee
    before = {k: h.cash(addr(k)) for k in (ALICE, BOB)} | {"fc": h.cash(collector), "fund": h.cash(fund)}
    m, t = orders(h, call, size, price, maker_buys=False)  # Alice (maker) sells, Bob buys
    rc = h.trade(ALICE, m, BOB, t, size, relayer=RELAYER)
    [ev] = h.events(h.p.exchange, "OrderFilled", rc)
    assert (ev["makerFee"], ev["takerFee"]) == (maker_fee, taker_fee)
    assert h.events(h.p.vault, "FeesCollected", rc) == [
        {"collector": fund, "amount": to_fund},
        {"collector": collector, "amount": maker_fee + taker_fee - to_fund},
    ]
    d_alice = h.cash(addr(ALICE)) - before[ALICE]
    d_bob = h.cash(addr(BOB)) - before[BOB]
    d_fc = h.cash(collector) - before["fc"]
    d_fund = h.cash(fund) - before["fund"]
    assert (d_alice, d_bob, d_fc + d_fund) == (notional - maker_fee, -notional - taker_fee, maker_fee + taker_fee)
    assert d_fund == to_fund
    assert d_alice + d_bob + d_fc + d_fund == 0
    assert h.cash(addr(RELAYER)) == 0  # the relayer earns nothing on-chain
    h.check_settled_conservation()


def test_tiny_fill_fee_rounds_up_to_one_unit(funded: Harness) -> None:
    """I-4: a 10-unit notional pays one quote unit per side, never zero."""
    h, perp = funded, funded.ids["ETH-PERP"]
    h.post_raw((h.latest_prices()[0], 10**15), h.price_signers)  # ETH at 0.001 USD (fills stay near the index)
    m, t = orders(h, perp, 10**16, 10**15)  # 0.01 ETH at 0.001 USD: notional 10 quote units
    rc = h.trade(ALICE, m, BOB, t, 10**16)
    [ev] = h.events(h.p.exchange, "OrderFilled", rc)
    assert (ev["makerFee"], ev["takerFee"]) == (1, 1)
    h.check_settled_conservation()


def test_linear_position_accounting(funded: Harness) -> None:
    """I-4: opening, adding, reducing and flipping a perp move cash and cost basis so that
    cashDelta - costBasisDelta = -sizeDelta * price - fee exactly, with realised P&L rounded
    against the account."""
    h, perp, a = funded, funded.ids["BTC-PERP"], addr(ALICE)
    steps = [(3 * U, BTC), (U, 56_000 * U), (-(10**15) * 1_333, 57_001 * U), (-5 * U, 54_321 * U)]
    for delta, price in steps:
        before_cash = h.cash(a)
        before = h.positions(a).get(perp, (0, 0, 0))
        rc = h.fill(ALICE, BOB, perp, abs(delta), price, maker_buys=delta > 0)
        after = h.positions(a).get(perp, (0, 0, 0))
        fee = h.fees(abs(delta), price)[0]
        assert after[0] == before[0] + delta
        cash_delta = h.cash(a) - before_cash + funding_paid(h, rc, a)
        assert cash_delta - (after[1] - before[1]) == -value(delta, price) - fee
    # after the flip the cost basis is the new short at the last price
    size, cost, _ = h.positions(a)[perp]
    assert cost == value(size, 54_321 * U)
    h.check_settled_conservation()


def test_reduce_rounds_realised_pnl_against_the_account(funded: Harness) -> None:
    """I-4: removing a third of a cost basis that is not divisible by three rounds the removed
    cost up (the account realises one unit less)."""
    h, perp, a = funded, funded.ids["BTC-PERP"], addr(ALICE)
    h.fill(ALICE, BOB, perp, 3 * 10**16, 55_000_001 * 10**15)  # cost 1650.00003 USD = 1650000030 units
    _, cost, _ = h.positions(a)[perp]
    assert cost == 1_650_000_030
    cash = h.cash(a)
    rc = h.fill(ALICE, BOB, perp, 10**16, 55_000_001 * 10**15, maker_buys=False)
    removed = cost // 3  # divisible: nothing to round
    assert h.positions(a)[perp][1] == cost - removed
    realised = h.cash(a) - cash + funding_paid(h, rc, a)
    assert realised == value(10**16, 55_000_001 * 10**15) - removed - h.fees(10**16, 55_000_001 * 10**15)[0]
    h.fill(ALICE, BOB, perp, 10**16, 55_000_002 * 10**15)  # cost now odd
    size, cost, _ = h.positions(a)[perp]
    assert cost % 3 != 0 and size == 3 * 10**16
    cash = h.cash(a)
    rc = h.fill(ALICE, BOB, perp, 10**16, BTC, maker_buys=False)
    removed = -(-cost // 3)
    assert h.positions(a)[perp][1] == cost - removed
    assert h.cash(a) - cash + funding_paid(h, rc, a) == value(10**16, BTC) - removed - h.fees(10**16, BTC)[0]
    h.check_settled_conservation()


# ---------------------------------------------------------------------- operators, cancels, nonces
def test_operator_trades_but_cannot_withdraw(funded: Harness) -> None:
    """I-10: an operator signs orders for an account; withdraw always acts on the caller's own
    account, so an operator cannot take the account's funds; a revoked operator cannot sign."""
    h, perp, a, c = funded, funded.ids["BTC-PERP"], addr(ALICE), addr(CAROL)
    v, ex = h.p.vault.functions, h.p.exchange.functions
    m = h.order(CAROL, perp, True, U, BTC, nonce=next_nonce(), account=a, maker=True)  # Carol signs for Alice
    t = h.order(BOB, perp, False, U, BTC, nonce=next_nonce())
    with reverts("Exchange_NotOperator", a, c, 0):
        h.trade(CAROL, m, BOB, t, U)
    rc = h.send(ex.setOperator(c, True), ALICE)
    assert h.events(h.p.exchange, "OperatorSet", rc) == [{"account": a, "operator": c, "allowed": True, "version": 1}]
    assert ex.isOperator(a, c).call() and tuple(ex.operatorGrant(a, c).call()) == (1, True)
    m = h.order(CAROL, perp, True, U, BTC, nonce=next_nonce(), account=a, maker=True)  # under grant 1
    h.trade(CAROL, m, BOB, t, U)
    assert h.positions(a)[perp][0] == U and h.positions(c) == {}
    usdc = h.token("USDC").address
    carol_cash = h.cash(c)
    with reverts("Vault_InsufficientCash", carol_cash, carol_cash + 1):  # Carol's own cash, not Alice's
        h.send(v.withdraw(usdc, carol_cash + 1, c, h.withdraw_proof(a, usdc, carol_cash + 1)), CAROL)
    alice_cash = h.cash(a)
    h.send(v.withdraw(usdc, 1, c, empty_proof()), CAROL)  # moves Carol's cash only
    assert (h.cash(a), h.cash(c)) == (alice_cash, carol_cash - 1)
    h.send(ex.setOperator(c, False), ALICE)
    m2 = h.order(CAROL, perp, True, U, BTC, nonce=next_nonce(), account=a, grant=1)
    t2 = h.order(BOB, perp, False, U, BTC, nonce=next_nonce())
    with reverts("Exchange_NotOperator", a, c, 1):
        h.trade(CAROL, m2, BOB, t2, U)
    h.check_settled_conservation()


def test_regranted_operator_does_not_revive_old_orders(funded: Harness) -> None:
    """Operator grants are versioned: an order signed under grant 1 dies when the grant is revoked and
    stays dead after a re-grant (grant 2); orders signed under grant 2 fill."""
    h, perp, a, c = funded, funded.ids["BTC-PERP"], addr(ALICE), addr(CAROL)
    ex = h.p.exchange.functions
    h.send(ex.setOperator(c, True), ALICE)
    old = h.order(CAROL, perp, True, 2 * U, BTC, nonce=next_nonce(), account=a, maker=True)
    assert old.grant == 1
    h.trade(CAROL, old, BOB, h.order(BOB, perp, False, U, BTC, nonce=next_nonce()), U)  # half fills
    h.send(ex.setOperator(c, False), ALICE)
    rc = h.send(ex.setOperator(c, True), ALICE)
    assert h.events(h.p.exchange, "OperatorSet", rc)[0]["version"] == 2
    with reverts("Exchange_NotOperator", a, c, 1):  # the other half never fills
        h.trade(CAROL, old, BOB, h.order(BOB, perp, False, U, BTC, nonce=next_nonce()), U)
    fresh = h.order(CAROL, perp, True, U, BTC, nonce=next_nonce(), account=a, maker=True)
    assert fresh.grant == 2
    h.trade(CAROL, fresh, BOB, h.order(BOB, perp, False, U, BTC, nonce=next_nonce()), U)
    assert h.positions(a)[perp][0] == 2 * U
    with reverts("Exchange_ZeroAddress"):
        h.send(ex.setOperator(ZERO_ADDRESS, True), ALICE)
    with reverts("Exchange_ZeroAddress"):
        h.send(ex.setOperator(a, True), ALICE)


def test_F4_operator_cannot_drain_the_account_through_off_market_fills(funded: Harness) -> None:
    """F-4: the exploit on 8842553 — operator Carol signs a buy of 1 BTC for Alice at 60,000 (index
    55,000) against her own account, buys it back at the index and keeps 5,000 USDC — is refused:
    operator-signed linear orders fill no worse for the account than index · (1 ± bands.operator)
    (0.5 %). What remains is bounded by that band (here 275 USD per BTC), and a guardian who sets it
    to zero leaves the operator nothing: at or better than the index only. Operator-signed option
    orders must reduce the account's position."""
    h, perp, a, c = funded, funded.ids["BTC-PERP"], addr(ALICE), addr(CAROL)
    ex = h.p.exchange.functions
    h.send(ex.setOperator(c, True), ALICE)
    before = (h.cash(a), h.cash(c), h.positions(a))
    # the exploit: Carol (maker) sells to Alice at 60,000, Alice's taker order signed by Carol
    carol_sells = h.order(CAROL, perp, False, U, 60_000 * U, nonce=next_nonce(), maker=True)
    alice_buys = h.order(CAROL, perp, True, U, 60_000 * U, nonce=next_nonce(), account=a)
    with reverts("Exchange_OperatorPriceOutsideBand", 60_000 * U, 55_275 * U):
        h.trade(CAROL, carol_sells, CAROL, alice_buys, U)
    # as maker too: Alice's operator-signed maker bid at 60,000 against Carol's taker sell
    alice_bids = h.order(CAROL, perp, True, U, 60_000 * U, nonce=next_nonce(), account=a, maker=True)
    with reverts("Exchange_OperatorPriceOutsideBand", 60_000 * U, 55_275 * U):
        h.trade(CAROL, alice_bids, CAROL, h.order(CAROL, perp, False, U, 60_000 * U, nonce=next_nonce()), U)
    assert (h.cash(a), h.cash(c), h.positions(a)) == before  # nothing drained
    # the most an operator can take within the band: 0.5 % of the notional per round trip
    h.trade(CAROL, h.order(CAROL, perp, False, U, 55_275 * U, nonce=next_nonce(), maker=True),
            CAROL, h.order(CAROL, perp, True, U, 55_275 * U, nonce=next_nonce(), account=a), U)  # fmt: skip
    h.trade(CAROL, h.order(CAROL, perp, True, U, BTC, nonce=next_nonce(), maker=True),
            CAROL, h.order(CAROL, perp, False, U, BTC, nonce=next_nonce(), account=a), U)  # fmt: skip
    fees = 2 * sum(h.fees(U, BTC))  # about the same on both legs
    assert before[0] - h.cash(a) <= 275 * USDC + fees
    assert h.positions(a) == {}
    # the band applies to the fill price (the maker's limit), not to an operator's wide taker limit
    for alice_buys, limit in ((True, 60_000 * U), (False, 50_000 * U)):
        h.trade(CAROL, h.order(CAROL, perp, not alice_buys, U, BTC, nonce=next_nonce(), maker=True),
                CAROL, h.order(CAROL, perp, alice_buys, U, limit, nonce=next_nonce(), account=a), U)  # fmt: skip
    assert h.positions(a) == {}
    # a guardian may tighten at once: at zero, an operator's fills are at the index or better for Alice
    linear, option, _ = ex.bands().call()
    h.send(ex.tightenBands((linear, option, 0)))
    with reverts("Exchange_OperatorPriceOutsideBand", 55_001 * U, BTC):
        h.trade(CAROL, h.order(CAROL, perp, False, U, 55_001 * U, nonce=next_nonce(), maker=True),
                CAROL, h.order(CAROL, perp, True, U, 55_001 * U, nonce=next_nonce(), account=a), U)  # fmt: skip
    # options: an operator may only reduce the account's position, never open or add
    call = h.ids["BTC-C60K"]
    with reverts("Exchange_OperatorMustReduce", a, call):
        h.trade(CAROL, h.order(CAROL, call, False, U, 1_000 * U, nonce=next_nonce(), maker=True),
                CAROL, h.order(CAROL, call, True, U, 1_000 * U, nonce=next_nonce(), account=a), U)  # fmt: skip
    h.fill(ALICE, BOB, call, U, 1_000 * U)  # Alice buys a call herself
    h.trade(CAROL, h.order(CAROL, call, True, U, 1_000 * U, nonce=next_nonce(), maker=True),
            CAROL, h.order(CAROL, call, False, U, 1_000 * U, nonce=next_nonce(), account=a), U)  # fmt: skip
    assert h.positions(a) == {}
    h.check_settled_conservation()


def test_F9_relayer_cannot_swap_maker_and_taker(funded: Harness) -> None:
    """F-9: each order states its role. On 8842553 a relayer passed Bob's taker bid (limit 55,100) as
    the maker: the fill moved to 55,100 and Alice paid the taker fee. Now swapping roles, or
    presenting two makers or two takers, is refused, and editing `isMaker` breaks the signature;
    the fill is at the maker's price with the taker fee on the taker whoever relays."""
    h, perp = funded, funded.ids["BTC-PERP"]
    ask = h.order(ALICE, perp, False, U, BTC, nonce=next_nonce(), maker=True)
    bid = h.order(BOB, perp, True, U, 55_100 * U, nonce=next_nonce())
    ex = h.p.exchange.functions

    def relay(first: Any, first_key: str, second: Any, second_key: str) -> Any:
        return ex.trade(h.signed(first, first_key), h.signed(second, second_key), U, *h.trade_proofs(first, second, U))

    with reverts("Exchange_WrongRole"):
        h.send(relay(bid, BOB, ask, ALICE), RELAYER)  # swapped
    with reverts("Exchange_WrongRole"):
        h.send(relay(ask, ALICE, replace(bid, is_maker=True), BOB), RELAYER)  # two makers
    with reverts("Exchange_WrongRole"):
        h.send(relay(replace(ask, is_maker=False), ALICE, bid, BOB), RELAYER)  # two takers
    bid_as_maker, ask_as_taker = replace(bid, is_maker=True), replace(ask, is_maker=False)
    proofs = h.trade_proofs(bid_as_maker, ask_as_taker, U)
    forged = ex.trade((bid_as_maker.as_tuple(), h.signed(bid, BOB)[1]),  # the original signatures
                      (ask_as_taker.as_tuple(), h.signed(ask, ALICE)[1]), U, *proofs)
    with reverts("Exchange_BadSignature", addr(BOB), addr(BOB)):
        h.send(forged, RELAYER)
    rc = h.send(relay(ask, ALICE, bid, BOB), RELAYER)
    [ev] = h.events(h.p.exchange, "OrderFilled", rc)
    maker_fee, taker_fee = h.fees(U, BTC)
    assert (ev["maker"], ev["taker"], ev["price"]) == (addr(ALICE), addr(BOB), BTC)
    assert (ev["makerFee"], ev["takerFee"]) == (maker_fee, taker_fee)


def test_cancel_by_account_or_operator(funded: Harness) -> None:
    """A cancelled order never fills; only the account or an active operator may cancel it."""
    h, perp = funded, funded.ids["BTC-PERP"]
    ex = h.p.exchange.functions
    m, t = orders(h, perp, U, BTC)
    with reverts("Exchange_NotAuthorized", addr(CAROL)):
        h.send(ex.cancel(m.as_tuple()), CAROL)
    rc = h.send(ex.cancel(m.as_tuple()), ALICE)
    mh = ex.orderHash(m.as_tuple()).call()
    assert h.events(h.p.exchange, "OrderCancelled", rc) == [{"account": addr(ALICE), "orderHash": mh}]
    assert ex.cancelled(mh).call()
    with reverts("Exchange_OrderCancelled", mh):
        h.trade(ALICE, m, BOB, t, U)
    h.send(ex.setOperator(addr(CAROL), True), BOB)
    h.send(ex.cancel(t.as_tuple()), CAROL)  # Carol operates for Bob
    assert ex.cancelled(ex.orderHash(t.as_tuple()).call()).call()
    h.send(ex.setOperator(addr(CAROL), False), BOB)
    with reverts("Exchange_NotAuthorized", addr(CAROL)):
        h.send(ex.cancel(replace(t, nonce=next_nonce()).as_tuple()), CAROL)


def test_min_nonce_cancels_older_orders(funded: Harness) -> None:
    """setMinNonce only increases and voids every order below it."""
    h, perp = funded, funded.ids["BTC-PERP"]
    ex = h.p.exchange.functions
    h.send(ex.setMinNonce(10), ALICE)
    assert ex.minNonce(addr(ALICE)).call() == 10
    with reverts("Exchange_NonceTooLow", 10, 10):
        h.send(ex.setMinNonce(10), ALICE)
    with reverts("Exchange_NonceTooLow", 9, 10):
        h.send(ex.setMinNonce(9), ALICE)
    old = h.order(ALICE, perp, True, U, BTC, nonce=9, maker=True)
    t = h.order(BOB, perp, False, U, BTC, nonce=next_nonce())
    with reverts("Exchange_NonceTooLow", 9, 10):
        h.trade(ALICE, old, BOB, t, U)
    h.trade(ALICE, replace(old, nonce=10), BOB, t, U)


# ---------------------------------------------------------------------- bad input
def test_bad_order_matches_are_refused(funded: Harness) -> None:
    """Zero or off-lot sizes, different instruments, same sides, self trades."""
    h, perp, eth = funded, funded.ids["BTC-PERP"], funded.ids["ETH-PERP"]
    m, t = orders(h, perp, U, BTC)
    with reverts("Exchange_ZeroAmount"):
        h.trade(ALICE, m, BOB, t, 0, proofs=(empty_proof(), empty_proof()))
    with reverts("Exchange_NotOnLot", 10**15 + 1):
        h.trade(ALICE, m, BOB, t, 10**15 + 1, proofs=(empty_proof(), empty_proof()))
    with reverts("Exchange_InstrumentMismatch"):
        h.trade(ALICE, m, BOB, replace(t, instrument=eth), U)
    with reverts("Exchange_SameSide"):
        h.trade(ALICE, m, BOB, replace(t, is_buy=True), U)
    with reverts("Exchange_SelfTrade"):
        h.trade(ALICE, m, ALICE, replace(t, account=addr(ALICE)), U)


def test_expired_or_badly_signed_orders_are_refused(funded: Harness) -> None:
    """Deadlines are enforced; a signature by anyone else than the account is refused."""
    h, perp = funded, funded.ids["BTC-PERP"]
    m, t = orders(h, perp, U, BTC)
    late = replace(t, deadline=h.now() - 1)
    with reverts("Exchange_OrderExpired"):
        h.trade(ALICE, m, BOB, late, U)
    forged = h.p.exchange.functions.trade(
        h.signed(m, ALICE), (t.as_tuple(), sign_order(h.p.domain("Exchange"), t, Signer(CAROL))),
        U, *h.trade_proofs(m, t, U),
    )  # fmt: skip
    with reverts("Exchange_BadSignature", addr(BOB), addr(BOB)):
        h.send(forged)
    claimed = replace(t, signer=addr(CAROL))  # Carol signs as if she were Bob's operator: she is not
    with reverts("Exchange_NotOperator", addr(BOB), addr(CAROL), 0):
        h.trade(ALICE, m, CAROL, claimed, U)
    other_chain = replace(h.p.domain("Exchange"), chain_id=1)
    foreign = h.p.exchange.functions.trade(
        h.signed(m, ALICE), (t.as_tuple(), sign_order(other_chain, t, Signer(BOB))), U, *h.trade_proofs(m, t, U)
    )
    with reverts("Exchange_BadSignature"):
        h.send(foreign)


def test_unknown_instrument_and_off_grid_values(funded: Harness) -> None:
    """An unlisted instrument, a price off TICK and a size beyond MAX_SIZE are refused."""
    h = funded
    m, t = orders(h, 77, U, BTC)
    with reverts("Instruments_UnknownInstrument", 77):
        h.trade(ALICE, m, BOB, t, U)
    m, t = orders(h, h.ids["BTC-PERP"], U, BTC + 1)
    with reverts("Vault_NotOnTick", BTC + 1):
        h.trade(ALICE, m, BOB, t, U)
    big = 10**30 + 10**15
    m, t = orders(h, h.ids["BTC-PERP"], big, BTC)
    with reverts("Vault_SizeTooLarge", big):
        h.trade(ALICE, m, BOB, t, big)


def test_trade_needs_attestations_of_both_sides(funded: Harness) -> None:
    """I-11: each side needs its own attestation of exactly this fill."""
    h, perp = funded, funded.ids["BTC-PERP"]
    m, t = orders(h, perp, U, BTC)
    mp, tp = h.trade_proofs(m, t, U)
    with reverts("RiskOracle_WrongAccount", addr(BOB), addr(ALICE)):
        h.trade(ALICE, m, BOB, t, U, proofs=(mp, mp))
    with reverts("Vault_MarginProofRequired"):  # no signatures: only an emergency close may do without
        h.trade(ALICE, m, BOB, t, U, proofs=(empty_proof(), tp))
    # an attestation of a different fee (or price, or size) is for another action
    fee = h.fees(U, BTC)[0]
    wrong = h.proof(h.attestation(addr(ALICE), trade_action(addr(ALICE), perp, U, BTC, fee + 1)))  # adds: no F-7 flag
    with reverts("RiskOracle_WrongAction"):
        h.trade(ALICE, m, BOB, t, U, proofs=(wrong, tp))
    h.trade(ALICE, m, BOB, t, U, proofs=(mp, tp))
    assert h.nonce(addr(ALICE)) == 1 == h.nonce(addr(BOB))


def test_adding_needs_im_reducing_needs_only_mm(funded: Harness) -> None:
    """I-11: an attestation with MM <= equity < IM passes a reducing fill, not an adding one."""
    h, perp = funded, funded.ids["BTC-PERP"]
    h.fill(ALICE, BOB, perp, 2 * U, BTC)
    weak = {"equity": 1_000, "im": 2_000, "mm": 1_000}
    m, t = orders(h, perp, U, BTC)  # Alice buys more: adds
    with reverts("RiskOracle_InsufficientMargin", 1_000, 2_000):
        h.trade(ALICE, m, BOB, t, U, proofs=(h.trade_proofs(m, t, U, **weak)[0], h.trade_proofs(m, t, U)[1]))
    m, t = orders(h, perp, U, BTC, maker_buys=False)  # Alice sells 1 of 2: reduces
    h.trade(ALICE, m, BOB, t, U, proofs=(h.trade_proofs(m, t, U, **weak)[0], h.trade_proofs(m, t, U, **weak)[1]))
    m, t = orders(h, perp, 2 * U, BTC, maker_buys=False)  # sells 2 of 1: flips, adds risk
    with reverts("RiskOracle_InsufficientMargin", 1_000, 2_000):
        h.trade(ALICE, m, BOB, t, 2 * U, proofs=(h.trade_proofs(m, t, 2 * U, **weak)[0],
                                                 h.trade_proofs(m, t, 2 * U)[1]))  # fmt: skip
    weaker = {"equity": 999, "im": 2_000, "mm": 1_000}
    m, t = orders(h, perp, U, BTC, maker_buys=False)
    with reverts("RiskOracle_InsufficientMargin", 999, 1_000):
        h.trade(ALICE, m, BOB, t, U, proofs=(h.trade_proofs(m, t, U, **weaker)[0], h.trade_proofs(m, t, U)[1]))


# ---------------------------------------------------------------------- position rules
def test_position_below_minimum_size(funded: Harness) -> None:
    """I-13: a position (opened or left after a reduction) below minPositionSize is refused."""
    h, perp = funded, funded.ids["BTC-PERP"]
    with reverts("Vault_PositionTooSmall", 5 * 10**15, 10**16):
        h.fill(ALICE, BOB, perp, 5 * 10**15, BTC)
    h.fill(ALICE, BOB, perp, 2 * 10**16, BTC)
    with reverts("Vault_PositionTooSmall", -5 * 10**15, 10**16):  # Bob, the buyer, checked first
        h.fill(ALICE, BOB, perp, 15 * 10**15, BTC, maker_buys=False)
    h.fill(ALICE, BOB, perp, 2 * 10**16, BTC, maker_buys=False)  # closing to zero is fine
    assert h.positions(addr(ALICE)) == {}


def test_position_cap(funded: Harness) -> None:
    """I-13: a new position beyond maxPositions is refused; adding to an open one is not."""
    h = funded
    prm = OnchainParams(max_positions=2)
    h.send(h.p.params.functions.setParams(prm.as_tuple()))
    h.fill(ALICE, BOB, h.ids["BTC-PERP"], U, BTC)
    h.fill(ALICE, BOB, h.ids["ETH-PERP"], U, 2_800 * U)
    with reverts("Vault_TooManyPositions", 2):
        h.fill(ALICE, CAROL, h.ids["BTC-FUT"], U, BTC)
    h.fill(ALICE, CAROL, h.ids["BTC-PERP"], U, BTC)  # same instrument: no new slot
    h.fill(ALICE, BOB, h.ids["ETH-PERP"], U, 2_800 * U, maker_buys=False)  # frees a slot
    h.fill(ALICE, CAROL, h.ids["BTC-FUT"], U, BTC)
    assert len(h.p.vault.functions.positionIds(addr(ALICE)).call()) == 2
    h.check_settled_conservation()


def test_expired_instrument_cannot_trade(funded: Harness) -> None:
    """At or after expiry a future or option no longer trades."""
    h, call = funded, funded.ids["BTC-C60K"]
    expiry = h.p.instruments.functions.get(call).call()[2]
    h.warp(expiry - h.now())
    h.refresh_prices()
    with reverts("Vault_InstrumentExpired", call, expiry):
        h.fill(ALICE, BOB, call, U, 100 * U)
    h.fill(ALICE, BOB, h.ids["BTC-FUT"], U, BTC)  # the 30-day future still trades


def test_relayer_is_anyone(funded: Harness) -> None:
    """Any address may submit a matched pair; the orders' accounts trade."""
    h, perp = funded, funded.ids["BTC-PERP"]
    h.fill(ALICE, BOB, perp, U, BTC, relayer=RELAYER)
    assert h.positions(addr(ALICE))[perp][0] == U and h.positions(key_addr(RELAYER)) == {}
