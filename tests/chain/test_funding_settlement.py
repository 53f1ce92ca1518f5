"""Perpetual funding (accrual formula, lazy settlement, zero sum) and expiry settlement (first round
at or after expiry, payoffs of futures, calls and puts, zero sum), neither bumping risk nonces."""

from __future__ import annotations

from dataclasses import replace

import pytest

from offchain import rules
from offchain.chain.params import OnchainParams
from offchain.chain.units import FUNDING_PERIOD, TICK, Kind, value
from offchain.protocol import FUNDING_DECAY
from tests.chain.conftest import ALICE, BOB, CAROL, DAY, RELAYER, addr
from tests.chain.harness import ANY, USDC, Harness, reverts

U = 10**18
INDEX = 55_000 * U
CAP = INDEX * 75 // 100_000  # maxFundingRate 0.075 % of the index per 8 h: 41.25 USD


RATE = 75 * 10**13  # the default maxFundingRate


def one_trade_delta(mark: int, index: int = INDEX, rate: int = RATE) -> int:
    """What one trade at ``mark`` accrues once its premium has decayed (rules.funding_accrual over a
    full FUNDING_DECAY): clamp(mark − index) · FUNDING_DECAY / 2 / FUNDING_PERIOD, in whole TICKs."""
    premium = rules.clamp_premium(mark - index, index, rate)
    return rules.funding_accrual(premium, 0, 0, FUNDING_DECAY, 0)[0]


def block_ts(h: Harness, rc: dict) -> int:
    return int(h.p.w3.eth.get_block(rc["blockNumber"])["timestamp"])


def fund_all(h: Harness) -> None:
    for key in (ALICE, BOB, CAROL):
        h.deposit(key, "USDC", 500_000 * USDC)


def update_funding(h: Harness, perp: int) -> dict:
    return h.send(h.p.instruments.functions.updateFunding(perp), CAROL)


def funding_paid(h: Harness, rc: dict, account: str) -> int:
    """What ``account`` paid in funding within a transaction (FundingSettled.payment)."""
    return sum(e["payment"] for e in h.events(h.p.vault, "FundingSettled", rc) if e["account"] == account)


def check_accruals(h: Harness, perp: int) -> list[dict]:
    """I-5: replays every FundingMarkSet and FundingUpdated of ``perp`` since listing: each accrual
    added exactly ``rules.funding_accrual`` of the last traded premium (decaying over FUNDING_DECAY)
    since the previous accrual, with the sub-TICK remainder carried; returns the accruals."""
    ins = h.p.instruments
    start = h.p.deployment.deploy_block
    [listed] = [e for e in ins.events.InstrumentListed().get_logs(from_block=start) if e["args"]["id"] == perp]
    logs = [*ins.events.FundingUpdated().get_logs(from_block=start, argument_filters={"id": perp}),
            *ins.events.FundingMarkSet().get_logs(from_block=start, argument_filters={"id": perp})]  # fmt: skip
    logs.sort(key=lambda e: (e["blockNumber"], e["logIndex"]))
    last, cum, carry, premium, mark_time, out = block_ts(h, listed), 0, 0, 0, 0, []
    for e in logs:
        t, ev = block_ts(h, e), e["args"]
        if e["event"] == "FundingMarkSet":
            premium, mark_time = ev["premium"], t
            if ev["indexPrice"] == 0:
                last = t
            continue
        assert abs(ev["premium"]) <= abs(premium) and ev["premium"] * premium >= 0, "clamped, same sign"
        delta, carry = rules.funding_accrual(ev["premium"], mark_time, last, t, carry)
        assert (ev["cumulativeFunding"] - cum, ev["carry"]) == (delta, carry), (ev, t - last)
        out.append({**ev, "t": t, "elapsed": t - last, "delta": delta})
        last, cum = t, ev["cumulativeFunding"]
    assert ins.functions.cumulativeFunding(perp).call() == cum
    return out


# ---------------------------------------------------------------------- funding
@pytest.mark.parametrize("offset_usd", [1_000, -1_000, 10, -7.5], ids=["cap+", "cap-", "free+", "free-"])
def test_funding_accrues_by_formula_and_sums_to_zero(h: Harness, offset_usd: float) -> None:
    """I-5, I-7: after a warp, updateFunding adds the traded premium clamp(mark − index,
    ±maxFundingRate·index) decayed over FUNDING_DECAY, per 8 h, on TICK towards zero; settleFunding
    by anyone pays it from longs to shorts (or back), exactly zero-sum, without touching risk nonces;
    I-1 holds before and after."""
    fund_all(h)
    perp, a, b = h.ids["BTC-PERP"], addr(ALICE), addr(BOB)
    mark = INDEX + int(offset_usd * 1000) * 10**15
    h.fill(ALICE, BOB, perp, 3 * U, mark)  # Alice long 3, Bob short 3 at the mark
    snap = h.positions(a)[perp][2]
    h.warp(FUNDING_PERIOD)
    h.refresh_prices()
    rc = update_funding(h, perp)
    last = check_accruals(h, perp)[-1]
    assert (last["indexPrice"], last["elapsed"] >= FUNDING_PERIOD) == (INDEX, True)
    clamped = abs(offset_usd) * U > CAP
    per_period = (CAP if clamped else abs(mark - INDEX)) * (1 if offset_usd > 0 else -1)
    assert last["premium"] == per_period
    assert last["delta"] == one_trade_delta(mark) != 0
    [ev] = h.events(h.p.instruments, "FundingUpdated", rc)
    cum = ev["cumulativeFunding"]
    h.check_conservation()  # with the funding still owed
    nonces = (h.nonce(a), h.nonce(b))
    cash = (h.cash(a), h.cash(b))
    pa = h.events(h.p.vault, "FundingSettled", h.send(h.p.vault.functions.settleFunding(a, perp), RELAYER))
    pb = h.events(h.p.vault, "FundingSettled", h.send(h.p.vault.functions.settleFunding(b, perp), RELAYER))
    assert [e["payment"] for e in pa] == [value(3 * U, cum - snap)]
    assert [e["payment"] for e in pb] == [value(-3 * U, cum - snap)]
    assert pa[0]["payment"] + pb[0]["payment"] == 0
    assert (h.cash(a) - cash[0], h.cash(b) - cash[1]) == (-pa[0]["payment"], pa[0]["payment"])
    assert (h.nonce(a), h.nonce(b)) == nonces
    assert (offset_usd > 0) == (h.cash(a) < cash[0]), "longs pay when the mark is above the index"
    assert h.positions(a)[perp][2] == cum  # snapshot moved to the index
    # settling again pays nothing
    assert h.events(h.p.vault, "FundingSettled", h.send(h.p.vault.functions.settleFunding(a, perp))) == []
    h.check_settled_conservation()


def test_funding_settles_on_the_next_trade(h: Harness) -> None:
    """I-5: a trade settles each side's funding up to the index before moving the position."""
    fund_all(h)
    perp, a, b = h.ids["BTC-PERP"], addr(ALICE), addr(BOB)
    h.fill(ALICE, BOB, perp, U, INDEX + 500 * U)
    snap = h.positions(a)[perp][2]
    h.warp(FUNDING_PERIOD // 2)
    h.refresh_prices()
    update_funding(h, perp)
    assert h.p.instruments.functions.cumulativeFunding(perp).call() != snap
    cash_a = h.cash(a)
    rc = h.fill(ALICE, BOB, perp, U, INDEX)  # Alice adds another unit
    cum = h.p.instruments.functions.cumulativeFunding(perp).call()
    settled = {e["account"]: e["payment"] for e in h.events(h.p.vault, "FundingSettled", rc)}
    assert settled == {a: value(U, cum - snap), b: value(-U, cum - snap)}
    assert h.cash(a) - cash_a == -value(U, cum - snap) - h.fees(U, INDEX)[0]
    assert h.positions(a)[perp][2] == cum == h.positions(b)[perp][2]
    check_accruals(h, perp)
    h.check_settled_conservation()


def test_funding_over_many_holders_and_trades_sums_to_zero(h: Harness) -> None:
    """I-5, I-1: three holders, size changes between several funding updates: once everyone has
    settled, every FundingSettled payment ever made sums to exactly zero."""
    fund_all(h)
    perp = h.ids["ETH-PERP"]
    eth = 2_800 * U
    h.fill(ALICE, BOB, perp, 2 * U, eth + 3 * U)
    h.fill(ALICE, CAROL, perp, 500 * 10**15, eth + 1 * U)
    for step, (maker, taker, size, px, buys) in enumerate([
        (CAROL, BOB, 700 * 10**15, eth - 2 * U, True),
        (BOB, ALICE, 1_300 * 10**15, eth + 4 * U, False),
        (CAROL, ALICE, 100 * 10**15, eth - 1 * U, False),
    ]):  # fmt: skip
        h.warp(3_000 + 977 * step)
        h.refresh_prices()
        update_funding(h, perp)
        h.fill(maker, taker, perp, size, px, maker_buys=buys)
        h.check_conservation()
    check_accruals(h, perp)
    h.warp(3_333)
    h.refresh_prices()
    update_funding(h, perp)
    for key in (ALICE, BOB, CAROL):
        if perp in h.positions(addr(key)):
            h.send(h.p.vault.functions.settleFunding(addr(key), perp), RELAYER)
    logs = h.p.vault.events.FundingSettled().get_logs(from_block=h.p.deployment.deploy_block)
    payments = [int(e["args"]["payment"]) for e in logs]
    assert len(payments) >= 6 and any(payments)
    assert sum(payments) == 0
    h.check_settled_conservation()


def test_funding_rate_cap_follows_params(h: Harness) -> None:
    """With maxFundingRate = 0 no funding accrues, whatever the premium."""
    fund_all(h)
    perp = h.ids["BTC-PERP"]
    h.send(h.p.params.functions.setParams(replace(OnchainParams(), max_funding_rate=0).as_tuple()))
    h.fill(ALICE, BOB, perp, U, INDEX + 5_000 * U)
    h.warp(FUNDING_PERIOD)
    h.refresh_prices()
    update_funding(h, perp)
    assert h.p.instruments.functions.cumulativeFunding(perp).call() == 0


def test_funding_inputs(h: Harness) -> None:
    """updateFunding needs a perp and a fresh index; only the Vault records trades."""
    ins = h.p.instruments.functions
    with reverts("Instruments_NotPerp", h.ids["BTC-FUT"]):
        h.send(ins.updateFunding(h.ids["BTC-FUT"]), CAROL)
    with reverts("Instruments_UnknownInstrument", 0):
        h.send(ins.updateFunding(0), CAROL)
    with reverts("Instruments_OnlyVault"):
        h.send(ins.recordTrade(h.ids["BTC-PERP"], INDEX), CAROL)
    h.warp(3_601)
    with reverts("PriceFeed_Stale"):
        h.send(ins.updateFunding(h.ids["BTC-PERP"]), CAROL)


def test_funding_and_settlement_keep_attestations_valid(h: Harness) -> None:
    """I-7: an attestation issued before funding is accrued and settled still authorises the
    withdrawal it was signed for."""
    fund_all(h)
    perp, a = h.ids["BTC-PERP"], addr(ALICE)
    h.fill(ALICE, BOB, perp, U, INDEX + 100 * U)
    h.warp(FUNDING_PERIOD)
    h.refresh_prices()
    usdc = h.token("USDC").address
    proof = h.withdraw_proof(a, usdc, 1_000 * USDC)
    update_funding(h, perp)
    h.send(h.p.vault.functions.settleFunding(a, perp), RELAYER)
    h.send(h.p.vault.functions.withdraw(usdc, 1_000 * USDC, a, proof), ALICE)
    h.check_conservation()


# ---------------------------------------------------------------------- settlement
def expiry_of(h: Harness, name: str) -> int:
    return int(h.p.instruments.functions.get(h.ids[name]).call()[2])


def test_fix_settlement_needs_first_round_at_or_after_expiry(h: Harness) -> None:
    """The settlement price comes from the first round at or after expiry, rounded down to TICK;
    earlier or later rounds are refused; fixing is idempotent."""
    ins = h.p.instruments.functions
    expiry = expiry_of(h, "BTC-C60K")
    h.warp(expiry - h.now() - 100)
    h.post_raw((56_000 * U, 2_800 * U))
    before = h.latest_round()
    with reverts("Instruments_NotExpired", expiry):
        h.send(ins.fixSettlement(0, expiry, before), CAROL)
    h.warp(200)
    h.post_raw((61_234_567_891_234 * 10**9, 2_800 * U), h.price_signers)  # off the tick grid
    first = h.latest_round()
    h.post_raw((61_000 * U, 2_800 * U))
    later = h.latest_round()
    for wrong in (before, later):
        with reverts("Instruments_NotFirstRoundAfterExpiry", wrong):
            h.send(ins.fixSettlement(0, expiry, wrong), CAROL)
    with reverts("PriceFeed_UnknownRound", later + 1):
        h.send(ins.fixSettlement(0, expiry, later + 1), CAROL)
    with reverts("Instruments_SettlementNotFixed", 0, expiry):
        h.p.call(ins.settlementPrice(0, expiry))
    rc = h.send(ins.fixSettlement(0, expiry, first), CAROL)
    price = 61_234_567 * 10**15
    assert h.events(h.p.instruments, "SettlementFixed", rc) == [
        {"underlying": 0, "expiry": expiry, "round": first, "price": price}]  # fmt: skip
    assert ins.settlementPrice(0, expiry).call() == price
    h.send(ins.fixSettlement(0, expiry, later), CAROL)  # idempotent: already fixed
    assert ins.settlementPrice(0, expiry).call() == price
    with reverts("Instruments_SettlementNotFixed", 1, expiry):  # per underlying
        h.p.call(ins.settlementPrice(1, expiry))


def test_round_exactly_at_expiry_is_first(h: Harness) -> None:
    """A round stamped exactly at the expiry is at or after it."""
    expiry = expiry_of(h, "BTC-C60K")
    h.warp(expiry - h.now() + 5)
    h.post_raw((57_000 * U, 2_800 * U), timestamp=expiry)
    h.send(h.p.instruments.functions.fixSettlement(0, expiry, h.latest_round()), CAROL)
    assert h.p.instruments.functions.settlementPrice(0, expiry).call() == 57_000 * U


@pytest.mark.parametrize(("btc", "eth"), [(62_000, 3_100), (45_000, 2_500), (55_000, 2_800)],
                         ids=["calls-itm", "puts-itm", "all-otm"])  # fmt: skip
def test_settle_expired_options_and_future(h: Harness, btc: int, eth: int) -> None:
    """I-6, I-7, I-1: anyone settles expired positions at the fixed price: calls pay (S−K)+, puts
    (K−S)+, futures S·size − cost basis; payoffs over all holders sum to exactly zero; positions
    are removed; risk nonces are untouched; I-1 holds mid-way and in its plain form at the end."""
    fund_all(h)
    ids = h.ids
    h.fill(ALICE, BOB, ids["BTC-C60K"], 2 * U, 1_250 * U)  # Alice long 2 calls
    h.fill(CAROL, BOB, ids["BTC-P50K"], 1_500 * 10**15, 800 * U)  # Carol long 1.5 puts
    h.fill(BOB, CAROL, ids["ETH-C3K"], U, 100 * U)  # Bob long an ETH call
    h.fill(ALICE, CAROL, ids["BTC-FUT"], U, 56_000 * U)  # Alice long a future
    nonces = {k: h.nonce(addr(k)) for k in (ALICE, BOB, CAROL)}
    expiry = expiry_of(h, "BTC-C60K")
    h.warp(expiry - h.now())
    h.post_raw((btc * U, eth * U), h.price_signers)  # a big move needs every signer
    rnd = h.latest_round()
    for und in (0, 1):
        h.send(h.p.instruments.functions.fixSettlement(und, expiry, rnd), RELAYER)
    want = {
        (ALICE, "BTC-C60K"): value(2 * U, max(btc - 60_000, 0) * U),
        (BOB, "BTC-C60K"): value(-2 * U, max(btc - 60_000, 0) * U),
        (CAROL, "BTC-P50K"): value(1_500 * 10**15, max(50_000 - btc, 0) * U),
        (BOB, "BTC-P50K"): value(-1_500 * 10**15, max(50_000 - btc, 0) * U),
        (BOB, "ETH-C3K"): value(U, max(eth - 3_000, 0) * U),
        (CAROL, "ETH-C3K"): value(-U, max(eth - 3_000, 0) * U),
    }
    paid = 0
    for (key, name), payoff in want.items():
        cash = h.cash(addr(key))
        rc = h.send(h.p.vault.functions.settleExpired(addr(key), ids[name]), RELAYER)
        [ev] = h.events(h.p.vault, "PositionSettled", rc)
        assert (ev["payoff"], ev["price"]) == (payoff, (btc if name.startswith("BTC") else eth) * U)
        assert h.cash(addr(key)) - cash == payoff
        assert ids[name] not in h.positions(addr(key))
        paid += payoff
        h.check_conservation()  # some holders settled, others not yet
        with reverts("Vault_NoPosition", addr(key), ids[name]):
            h.send(h.p.vault.functions.settleExpired(addr(key), ids[name]), RELAYER)
    assert paid == 0
    assert {k: h.nonce(addr(k)) for k in (ALICE, BOB, CAROL)} == nonces
    # the future, 30 days out
    fut_expiry = expiry_of(h, "BTC-FUT")
    h.warp(fut_expiry - h.now() + 30)
    h.post_raw((48_000 * U, eth * U), h.price_signers)
    with reverts("Instruments_SettlementNotFixed", 0, fut_expiry):
        h.send(h.p.vault.functions.settleExpired(addr(ALICE), ids["BTC-FUT"]), RELAYER)
    h.send(h.p.instruments.functions.fixSettlement(0, fut_expiry, h.latest_round()), RELAYER)
    payoffs = []
    for key in (ALICE, CAROL):
        rc = h.send(h.p.vault.functions.settleExpired(addr(key), ids["BTC-FUT"]), RELAYER)
        payoffs.append(h.events(h.p.vault, "PositionSettled", rc)[0]["payoff"])
    assert payoffs == [-8_000 * USDC, 8_000 * USDC]
    for key in (ALICE, BOB, CAROL):
        assert h.positions(addr(key)) == {}
    h.check_settled_conservation()


def test_settlement_keeps_attestations_valid(h: Harness) -> None:
    """I-7: settling an expired position does not bump the nonce, so an attestation issued before
    it still authorises a withdrawal."""
    fund_all(h)
    call, perp, a = h.ids["BTC-C60K"], h.ids["BTC-PERP"], addr(ALICE)
    h.fill(ALICE, BOB, call, U, 1_000 * U)
    h.fill(ALICE, BOB, perp, U, INDEX)  # keeps a position after the settlement
    expiry = expiry_of(h, "BTC-C60K")
    h.warp(expiry - h.now())
    h.refresh_prices()
    usdc = h.token("USDC").address
    proof = h.withdraw_proof(a, usdc, 10 * USDC)
    h.send(h.p.instruments.functions.fixSettlement(0, expiry, h.latest_round()), RELAYER)
    h.send(h.p.vault.functions.settleExpired(a, call), RELAYER)
    h.send(h.p.vault.functions.withdraw(usdc, 10 * USDC, a, proof), ALICE)
    with reverts("RiskOracle_StaleNonce", ANY, ANY):
        h.send(h.p.vault.functions.withdraw(usdc, 10 * USDC, a, proof), ALICE)


# ---------------------------------------------------------------------- listing
def test_listing_rules(h: Harness) -> None:
    """Owner-only listing with valid underlyings, expiries and strikes; the Vault is wired once."""
    ins = h.p.instruments.functions
    now = h.now()
    with reverts("OwnableUnauthorizedAccount", addr(CAROL)):
        h.send(ins.list(int(Kind.PERP), 0, 0, 0), CAROL)
    bad = [
        ("Instruments_BadUnderlying", (Kind.PERP, 2, 0, 0), 2),
        ("Instruments_BadExpiry", (Kind.PERP, 0, now + DAY, 0), now + DAY),
        ("Instruments_BadExpiry", (Kind.FUTURE, 0, now - 1, 0), now - 1),
        ("Instruments_BadExpiry", (Kind.CALL, 0, 0, 60_000 * U), 0),
        ("Instruments_BadStrike", (Kind.CALL, 0, now + DAY, 0), 0),
        ("Instruments_BadStrike", (Kind.PUT, 1, now + DAY, 3_000 * U + 1), 3_000 * U + 1),
        ("Instruments_BadStrike", (Kind.PUT, 1, now + DAY, 10**30 + TICK), 10**30 + TICK),
        ("Instruments_BadStrike", (Kind.FUTURE, 1, now + DAY, TICK), TICK),
    ]
    for name, (kind, und, expiry, strike), arg in bad:
        with reverts(name, arg):
            h.send(ins.list(int(kind), und, expiry, strike))
    with reverts("Instruments_VaultAlreadySet"):
        h.send(ins.setVault(addr(CAROL)))
    count = ins.count().call()
    rc = h.send(ins.list(int(Kind.PUT), 1, now + DAY, 2_700 * U))
    [ev] = h.events(h.p.instruments, "InstrumentListed", rc)
    assert ev["id"] == count + 1 and ins.get(count + 1).call() == (int(Kind.PUT), 1, now + DAY, 2_700 * U)


def test_newly_listed_option_trades_and_settles_on_its_underlying(h: Harness) -> None:
    """I-6: an ETH put listed for one day settles at the ETH price of the first round after it."""
    fund_all(h)
    now = h.now()
    rc = h.send(h.p.instruments.functions.list(int(Kind.PUT), 1, now + DAY, 2_700 * U))
    put = h.events(h.p.instruments, "InstrumentListed", rc)[0]["id"]
    h.fill(ALICE, BOB, put, 4 * U, 35 * U)  # Alice long 4 puts
    h.warp(DAY + 10)
    h.post_raw((55_000 * U, 2_650 * U))
    h.send(h.p.instruments.functions.fixSettlement(1, now + DAY, h.latest_round()), RELAYER)
    got = []
    for key in (ALICE, BOB):
        rc = h.send(h.p.vault.functions.settleExpired(addr(key), put), RELAYER)
        got.append(h.events(h.p.vault, "PositionSettled", rc)[0]["payoff"])
    assert got == [200 * USDC, -200 * USDC]
    h.check_settled_conservation()


def test_batch_settlement_settles_every_holder_in_bounded_batches(h: Harness) -> None:
    """I-6: the Settler settles every holder of an expired option in batches (accounts without the
    position skipped, batches capped); payoffs sum to zero and each equals ``rules.settlement_payoff``."""
    fund_all(h)
    ids, call = h.ids, h.ids["BTC-C60K"]
    h.fill(ALICE, BOB, call, 2 * U, 1_250 * U)
    h.fill(CAROL, BOB, call, U, 1_250 * U)
    h.fill(ALICE, CAROL, ids["ETH-C3K"], U, 100 * U)
    holders = [addr(k) for k in (ALICE, BOB, CAROL)]
    sizes = {a: h.positions(a)[call][0] for a in holders}
    expiry = expiry_of(h, "BTC-C60K")
    h.warp(expiry - h.now())
    h.post_raw((70_000 * U, 3_000 * U), h.price_signers)
    for und in (0, 1):
        h.send(h.p.instruments.functions.fixSettlement(und, expiry, h.latest_round()), RELAYER)
    settler = h.p.settler.functions
    cap = settler.MAX_BATCH().call()
    with reverts("Settler_BatchTooLarge", cap + 1, cap):
        h.send(settler.settleExpired(call, [addr(RELAYER)] * (cap + 1)), RELAYER)
    before = {a: h.cash(a) for a in holders}
    rc = h.send(settler.settleExpired(call, [holders[0], addr(RELAYER)]), RELAYER)  # one holder, one stranger
    assert h.events(h.p.settler, "BatchSettled", rc) == [{"instrument": call, "settled": 1, "skipped": 1}]
    h.check_conservation()
    h.send(settler.settleExpired(call, holders), RELAYER)  # the rest; the settled one is skipped
    paid = 0
    for a in holders:
        want = rules.settlement_payoff(Kind.CALL, sizes[a], 60_000 * U, 70_000 * U, 0)
        assert h.cash(a) - before[a] == want
        assert call not in h.positions(a)
        paid += want
    assert paid == 0
    assert ids["ETH-C3K"] in h.positions(addr(ALICE))  # other instruments untouched
    h.check_conservation()


# ---------------------------------------------------------------------- hardening (issue 8)
def test_F2_funding_poked_every_block_loses_nothing(h: Harness) -> None:
    """F-2: poking updateFunding every 12 s used to round each accrual's delta down to zero; the
    remainder is now carried, so the total equals one accrual over the same time, to the TICK."""
    fund_all(h)
    perp = h.ids["ETH-PERP"]
    eth = 2_800 * U
    h.fill(ALICE, BOB, perp, U, eth + 100 * U)  # far above the index: the capped premium
    with h.isolated():
        h.warp(FUNDING_DECAY)
        h.refresh_prices()
        update_funding(h, perp)
        once = h.p.instruments.functions.cumulativeFunding(perp).call()
    h.refresh_prices()
    for i in range(FUNDING_DECAY // 12):
        h.warp(12)
        if i % 100 == 99:
            h.refresh_prices()  # the feed's heartbeat is an hour
        update_funding(h, perp)
    h.warp(FUNDING_DECAY)  # past the decay: nothing more accrues
    h.refresh_prices()
    update_funding(h, perp)
    poked = h.p.instruments.functions.cumulativeFunding(perp).call()
    assert once == one_trade_delta(eth + 100 * U, eth) != 0
    assert abs(poked - once) <= TICK  # the remainder carried, not lost (one TICK for the carry left)
    check_accruals(h, perp)


def test_F3_a_wash_trade_moves_funding_by_at_most_the_documented_bound(h: Harness) -> None:
    """F-3: a 0.01 BTC wash trade at +10 % between two accounts of one attacker used to make every
    long pay the capped rate until the next trade; now its premium decays to the index within
    FUNDING_DECAY, so over a whole period it moves funding by at most cap · FUNDING_DECAY / 2 /
    FUNDING_PERIOD (1/16 of the capped rate), and a stale mark after an index move pays nothing."""
    fund_all(h)
    perp = h.ids["BTC-PERP"]
    h.fill(ALICE, BOB, perp, 10**16, INDEX * 11 // 10)  # the wash trade
    h.warp(FUNDING_PERIOD)
    h.refresh_prices()
    update_funding(h, perp)
    moved = h.p.instruments.functions.cumulativeFunding(perp).call()
    bound = CAP * FUNDING_DECAY // 2 // FUNDING_PERIOD
    assert 0 < moved <= bound < CAP // 15  # was CAP (a full period at the cap)
    # no trade since: a later period pays nothing, whatever the index did
    h.post_raw((INDEX * 9 // 10, 2_800 * U), h.price_signers)
    h.warp(FUNDING_PERIOD)
    h.refresh_prices()
    update_funding(h, perp)
    assert h.p.instruments.functions.cumulativeFunding(perp).call() == moved
    check_accruals(h, perp)
