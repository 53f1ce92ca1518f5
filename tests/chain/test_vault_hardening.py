"""Issue 8, the Vault side: regression tests named after the findings (F-6 feed age, F-7 portfolio-level
reduce, F-8 signer removal, F-10 amounts and casts) and the small ones (withdraw all, guardian, ownership),
plus the Vault/VaultModule split. Real Anvil, real contracts, real signatures; each fails on 8842553."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account

from offchain import rules
from offchain.chain.actions import trade_action, withdraw_action
from offchain.chain.merkle import StatusTree
from offchain.engine.service import Engine
from tests.chain.conftest import ALICE, BOB, CAROL, DEPLOYER, addr
from tests.chain.harness import (
    USDC,
    Harness,
    empty_proof,
    post_status_root,
    reverts,
    status_leaf,
    status_root,
)
from tests.chain.test_engine import engine_trade, http, proof_of

pytestmark = pytest.mark.chain
U = 10**18
BTC = 55_000 * U
HEARTBEAT = 3600  # the devnet feed's


def fill_with(h: Harness, maker_key: str, taker_key: str, name: str, size: int, price: int, proofs: Any,
              maker_buys: bool = True) -> Any:  # fmt: skip
    ins = h.ids[name]
    m = h.order(maker_key, ins, maker_buys, size, price, nonce=_nonce())
    t = h.order(taker_key, ins, not maker_buys, size, price, nonce=_nonce())
    return h.trade(maker_key, m, taker_key, t, size, proofs=proofs)


_counter = iter(range(10_000, 10**9))


def _nonce() -> int:
    return next(_counter)


def go_stale(h: Harness) -> None:
    """Warp past the feed's heartbeat with no new price round."""
    h.warp(HEARTBEAT + 1)
    assert h.now() > h.p.oracle.functions.feedFreshUntil().call()


# ---------------------------------------------------------------------- F-6 feed age
def test_F6_stale_feed_refuses_attestations_roots_and_fills(h: Harness) -> None:
    """F-6: past the feed's heartbeat no attestation, root or attested fill verifies (8842553 compared
    round numbers only, so a two-day-old round still backed risk-adding fills and withdrawals);
    deposits and exits without positions go on; a new round restores everything."""
    h.deposit(ALICE, "USDC", 100_000 * USDC)
    h.deposit(BOB, "USDC", 100_000 * USDC)
    h.fill(ALICE, BOB, h.ids["BTC-PERP"], U, BTC)
    oracle, a, usdc = h.p.oracle.functions, addr(ALICE), h.token("USDC").address
    fresh_until = oracle.feedFreshUntil().call()
    assert fresh_until == h.p.feed.functions.latestRound().call()[1] + HEARTBEAT
    assert not oracle.emergency().call()
    assert rules.feed_fresh(fresh_until, h.now())
    go_stale(h)
    assert not rules.feed_fresh(fresh_until, h.now()) and oracle.feedFreshUntil().call() == fresh_until
    assert oracle.emergency().call(), "a stale feed is emergency mode: no new risk"
    with reverts("RiskOracle_FeedStale"):  # an attestation at the latest round
        h.p.call(oracle.requireMargin(h.withdraw_proof(a, usdc, USDC), a, h.nonce(a), withdraw_action(a, usdc, USDC),
                                      h.p.vault.functions.depositCredit(a).call(), True))  # fmt: skip
    with reverts("RiskOracle_FeedStale"):  # a position-backed withdrawal
        h.send(h.p.vault.functions.withdraw(usdc, USDC, a, h.withdraw_proof(a, usdc, USDC)), ALICE)
    with reverts("RiskOracle_FeedStale"):  # an attested closing fill (flagged: lowers IM)
        h.fill(ALICE, BOB, h.ids["BTC-PERP"], U // 2, BTC, maker_buys=False)
    with reverts("Vault_Emergency"):  # a risk-adding fill
        h.fill(ALICE, BOB, h.ids["BTC-PERP"], U, BTC)
    tree = StatusTree.build([status_leaf(h, a)])
    with reverts("RiskOracle_FeedStale"):  # a status root
        post_status_root(h, status_root(h, tree.root))
    h.deposit(CAROL, "USDC", 10 * USDC)  # deposits and exits without positions go on
    h.send(h.p.vault.functions.withdraw(usdc, 10 * USDC, addr(CAROL), empty_proof()), CAROL)
    h.refresh_prices()
    assert not oracle.emergency().call()
    h.send(h.p.vault.functions.withdraw(usdc, USDC, a, h.withdraw_proof(a, usdc, USDC)), ALICE)
    h.fill(ALICE, BOB, h.ids["BTC-PERP"], U, BTC)
    h.check_settled_conservation()


def test_F6_a_stale_feed_leaves_closing_without_attestations(h: Harness) -> None:
    """F-6: with the feed stale (and the engine unable to attest), two accounts close against each other
    with no signatures at all: each side must only reduce its position and keep the standard maintenance
    margin at the last posted price; opening, or a close at a price that leaves the seller below it, is
    refused."""
    h.deposit(ALICE, "USDC", 6_500 * USDC)
    h.deposit(BOB, "USDC", 100_000 * USDC)
    h.deposit(CAROL, "USDC", 100_000 * USDC)
    h.fill(ALICE, BOB, h.ids["BTC-PERP"], U, BTC)  # Alice long 1, Bob short 1
    go_stale(h)
    none = (empty_proof(), empty_proof())
    with reverts("Vault_NotReducing", addr(CAROL), h.ids["BTC-PERP"]):  # Carol would open
        fill_with(h, CAROL, ALICE, "BTC-PERP", U // 2, BTC, none)
    # a close is banded around the last good price: 20,000 is refused by the Exchange
    with reverts("Exchange_PriceOutsideBand"):
        fill_with(h, ALICE, BOB, "BTC-PERP", U // 2, 20_000 * U, none, maker_buys=False)
    # Alice sells half at 49,500 (the band's edge): a 2,750 USD loss leaves her below the standard MM
    with reverts("Vault_BelowStandardMaintenance"):
        fill_with(h, ALICE, BOB, "BTC-PERP", U // 2, 49_500 * U, none, maker_buys=False)
    sm = h.p.standard_margin.functions
    fill_with(h, ALICE, BOB, "BTC-PERP", U // 2, 54_000 * U, none, maker_buys=False)  # a fair close passes
    assert h.positions(addr(ALICE))[h.ids["BTC-PERP"]][0] == U // 2
    assert h.positions(addr(BOB))[h.ids["BTC-PERP"]][0] == -U // 2
    ratio = h.p.params.functions.liquidationParams().call()[7]
    for key in (ALICE, BOB):
        equity, _, requirement = sm.closingFigures(addr(key)).call()
        assert equity >= rules.mul_div_up(requirement, ratio, rules.WAD)
    with reverts("PriceFeed_Stale"):  # withdrawals still need a fresh price
        h.send(h.p.vault.functions.withdraw(h.token("USDC").address, USDC, addr(ALICE), empty_proof()), ALICE)
    fill_with(h, ALICE, BOB, "BTC-PERP", U // 2, 54_000 * U, none, maker_buys=False)  # closed out
    assert h.positions(addr(ALICE)) == {} == h.positions(addr(BOB))
    h.check_settled_conservation()


def test_F6_engine_refuses_to_attest_on_a_stale_feed(h: Harness, engine: Engine, api: str) -> None:
    """F-6: the engine answers 409 naming the stale feed (it would only sign what the Vault refuses) and
    posts no root; after a new round it attests again."""
    h.deposit(ALICE, "USDC", 100_000 * USDC)
    go_stale(h)
    body = {"account": addr(ALICE), "instrument": h.ids["BTC-PERP"], "size": "0.1", "price": "55000",
            "role": "maker"}  # fmt: skip
    status, doc = http(api + "/attest/trade", body)
    assert status == 409 and "price feed is stale" in doc["error"], doc
    status, doc = http(api + "/attest/withdraw", {"account": addr(ALICE), "token": "USDC", "amount": "1"})
    assert status == 409 and "stale" in doc["error"], doc
    assert engine.run_round() is None
    h.refresh_prices()
    status, doc = http(api + "/attest/trade", body)
    assert status == 200, doc


# ---------------------------------------------------------------------- F-7 portfolio-level reduce
def test_F7_closing_the_hedge_leg_needs_initial_margin(h: Harness, engine: Engine, api: str) -> None:
    """F-7: Alice holds a hedged book (long 1 BTC-PERP, short 1 BTC-FUT). Buying back the future reduces
    that position but raises her portfolio IM: the engine does not flag it (action hash reducesIM =
    false), so the Vault asks initial margin and refuses it while paused (8842553 judged per position:
    maintenance margin, allowed while paused). Carol's side, a plain reduction, is flagged and passes."""
    for key, amount in ((ALICE, 100_000), (BOB, 200_000), (CAROL, 100_000)):
        h.deposit(key, "USDC", amount * USDC)
    engine_trade(h, api, ALICE, BOB, "BTC-PERP", True, U, "55000")
    engine_trade(h, api, ALICE, CAROL, "BTC-FUT", False, U, "55000")
    a, c, fut = addr(ALICE), addr(CAROL), h.ids["BTC-FUT"]
    state = engine.refresh()
    core = engine.core
    im_before = core._attestation(state, a, state.accounts[a], b"", core.engine(state).account(
        core.account_state(state, state.accounts[a])), 0, 1).initial_margin  # fmt: skip

    def ask(key: str, size: str, role: str) -> tuple[int, Any]:
        return http(api + "/attest/trade", {"account": addr(key), "instrument": fut, "size": size, "price": "55000",
                                            "role": role})  # fmt: skip

    status, alice_doc = ask(ALICE, "1", "maker")
    assert status == 200, alice_doc
    alice_proof = proof_of(alice_doc)
    att = alice_doc["attestation"]
    fee_a, fee_c = h.fees(U, BTC)
    assert att["action_hash"] == "0x" + trade_action(a, fut, U, BTC, fee_a, False).hex(), "not flagged"
    assert int(att["initial_margin"]) > im_before, "closing the hedge leg raises the portfolio IM"
    status, carol_doc = ask(CAROL, "-1", "taker")
    assert status == 200 and carol_doc["attestation"]["action_hash"] == "0x" + trade_action(
        c, fut, -U, BTC, fee_c, True).hex(), carol_doc  # fmt: skip
    # On chain: unflagged, the fill needs IM (an attestation with MM <= equity < IM is refused) ...
    m = h.order(ALICE, fut, True, U, BTC, nonce=_nonce())
    t = h.order(CAROL, fut, False, U, BTC, nonce=_nonce())
    low = h.proof(h.attestation(a, trade_action(a, fut, U, BTC, fee_a, False), equity=100, im=200, mm=50))
    with reverts("RiskOracle_InsufficientMargin", 100, 200):
        h.trade(ALICE, m, CAROL, t, U, proofs=(low, proof_of(carol_doc)))
    # ... and is refused while paused, by the engine (409) and by the Vault
    h.send(h.p.vault.functions.setPaused(True))
    status, doc = ask(ALICE, "1", "maker")
    assert status == 409 and "paused" in doc["error"], doc
    with reverts("Vault_Paused"):
        h.trade(ALICE, m, CAROL, t, U, proofs=(alice_proof, proof_of(carol_doc)))
    h.send(h.p.vault.functions.setPaused(False))
    h.trade(ALICE, m, CAROL, t, U, proofs=(alice_proof, proof_of(carol_doc)))  # with IM covered, it passes
    assert fut not in h.positions(a) and fut not in h.positions(c)
    h.check_settled_conservation()


# ---------------------------------------------------------------------- F-8 signer removal
def test_F8_removing_a_signer_clears_the_root_it_signed(h: Harness) -> None:
    """F-8: a status root co-signed by a signer stops verifying when the signer is removed (8842553 kept
    it usable until it expired); lowering the quorum clears a root too."""
    h.deposit(ALICE, "USDC", 1_000 * USDC)
    a, oracle = addr(ALICE), h.p.oracle.functions
    leaf = status_leaf(h, a)
    tree = StatusTree.build([leaf, status_leaf(h, addr(BOB))])
    signers = sorted(h.risk_signers[:2], key=lambda s: int(s.address, 16))
    post_status_root(h, status_root(h, tree.root, 1), signers)
    check = oracle.verifyStatus(leaf.as_tuple(), tree.proof(a), a, h.nonce(a), leaf.credit_checkpoint)
    assert h.p.call(check)[0] == leaf.margin_equity
    rc = h.send(oracle.removeSigner(signers[0].address))
    assert h.events(h.p.oracle, "RootCleared", rc) == [{"round": 1}]
    assert oracle.statusRoot().call() == b"\x00" * 32
    with reverts("RiskOracle_NoRoot"):
        h.p.call(check)
    # a new root under the new set, then a lowered quorum clears it as well
    post_status_root(h, status_root(h, tree.root, 2), [s for s in h.risk_signers if s is not signers[0]][:2])
    assert h.p.call(check)[0] == leaf.margin_equity
    rc = h.send(oracle.setQuorum(1))
    assert h.events(h.p.oracle, "RootCleared", rc) == [{"round": 2}]
    with reverts("RiskOracle_NoRoot"):
        h.p.call(check)


# ---------------------------------------------------------------------- F-10 amounts and casts
def test_F10_huge_amounts_are_refused_with_a_named_error(h: Harness) -> None:
    """F-10: withdraw(2**255) wrapped `int256(amount)` negative on 8842553 (the cash check was skipped);
    every amount above MAX_AMOUNT = 2**128 - 1 is now refused at the entry point, and the mirror agrees."""
    h.deposit(ALICE, "USDC", 1_000 * USDC)
    v, a, usdc = h.p.vault.functions, addr(ALICE), h.token("USDC").address
    cap = v.MAX_AMOUNT().call()
    assert cap == rules.MAX_AMOUNT == 2**128 - 1 and v.WITHDRAW_ALL().call() == rules.WITHDRAW_ALL
    for amount in (2**255, 2**128, 2**256 - 2):
        assert not rules.check_amount(amount)
        with reverts("Vault_AmountTooLarge", amount, cap):
            h.send(v.withdraw(usdc, amount, a, empty_proof()), ALICE)
    with reverts("Vault_AmountTooLarge", 2**255, cap):
        h.send(v.withdrawQuoteWithStatus(2**255, a, status_leaf(h, a).as_tuple(), []), ALICE)
    with reverts("Vault_AmountTooLarge", 2**128, cap):
        h.send(v.deposit(usdc, 2**128, a), ALICE)
    assert rules.check_amount(cap) and not rules.check_amount(0)
    assert h.cash(a) == 1_000 * USDC


# ---------------------------------------------------------------------- the small ones
def test_withdraw_all_settles_funding_first_so_a_front_run_cannot_make_it_revert(
        h: Harness, engine: Engine, api: str) -> None:  # fmt: skip
    """Issue 8 (misc): a withdrawal of an exact cash amount reverts when anyone settles the account's
    funding just before; "all" (WITHDRAW_ALL, attested by the engine as such) settles every perp's funding
    first and takes what is left, whoever pokes in between."""
    perp = h.ids["BTC-PERP"]
    h.deposit(ALICE, "USDC", 20_000 * USDC)
    h.deposit(ALICE, "WETH", 20 * U)
    h.deposit(BOB, "USDC", 100_000 * USDC)
    engine_trade(h, api, ALICE, BOB, "BTC-PERP", True, U, "55500")  # above the index: longs pay funding
    h.warp(1800)
    h.refresh_prices()
    h.send(h.p.instruments.functions.updateFunding(perp), CAROL)
    a, usdc = addr(ALICE), h.token("USDC").address
    cash = h.cash(a)
    status, exact = http(api + "/attest/withdraw", {"account": a, "token": "USDC", "amount": str(cash / USDC)})
    assert status == 200, exact
    status, whole = http(api + "/attest/withdraw", {"account": a, "token": "USDC", "amount": "all"})
    assert status == 200, whole
    assert whole["attestation"]["action_hash"] == "0x" + withdraw_action(a, usdc, rules.WITHDRAW_ALL).hex()
    expected = engine.core.whole_balance(engine.refresh(), a, usdc)  # the mirror, before the front-run
    rc = h.send(h.p.vault.functions.settleFunding(a, perp), CAROL)  # the front-run
    [paid] = h.events(h.p.vault, "FundingSettled", rc)
    assert paid["payment"] > 0
    with reverts("Vault_InsufficientCash"):
        h.send(h.p.vault.functions.withdraw(usdc, cash, a, proof_of(exact)), ALICE)
    before = h.token("USDC").functions.balanceOf(a).call()
    rc = h.send(h.p.vault.functions.withdraw(usdc, rules.WITHDRAW_ALL, a, proof_of(whole)), ALICE)
    [ev] = h.events(h.p.vault, "Withdrawn", rc)
    assert ev["amount"] == expected == cash - paid["payment"] == h.token("USDC").functions.balanceOf(a).call() - before
    assert h.cash(a) == 0
    h.check_conservation()  # Bob's funding (received) is still unsettled


def test_guardian_is_never_zero_and_ownership_cannot_be_renounced(h: Harness) -> None:
    """Issue 8 (misc): setGuardian(0) is refused; renounceOwnership reverts on the Vault (and on the
    PriceFeed, which shares SignerQuorum); operators are no longer the Vault's (moved to the Exchange)."""
    v = h.p.vault.functions
    with reverts("Vault_ZeroAddress"):
        h.send(v.setGuardian("0x" + "00" * 20))
    for contract in (h.p.vault, h.p.feed):
        with reverts("Governed_RenounceDisabled"):
            h.send(contract.functions.renounceOwnership())
        with reverts("Governed_RenounceDisabled"):  # whoever asks
            h.send(contract.functions.renounceOwnership(), CAROL)
        assert contract.functions.owner().call() == addr(DEPLOYER)
    names = {i.get("name") for i in h.p.vault.abi}
    assert not names & {"setOperator", "isOperator"}


# ---------------------------------------------------------------------- the module split
def test_module_runs_on_the_vault_storage_and_refuses_direct_calls(h: Harness) -> None:
    """The liquidation module (VaultModule) is reached through the Vault's fallback on the Vault's storage:
    its functions are in the Vault's ABI and act on the Vault's state; called on the module itself they
    revert with Vault_NotDelegated; an unknown selector reverts."""
    v = h.p.vault.functions
    module = h.p.w3.eth.contract(address=v.module().call(), abi=h.p.artifacts["VaultModule"].abi)
    assert h.p.w3.eth.get_code(module.address), "deployed by the Vault's constructor"
    names = {i.get("name") for i in h.p.vault.abi if i["type"] == "function"}
    assert {"transferPortfolio", "socializeLoss", "moveCash", "setFrozen", "settleExpired",
            "withdrawQuoteWithStatus", "setLiquidation", "setExchange", "setGuardian"} <= names  # fmt: skip
    carol = addr(CAROL)
    h.send(v.setFeeCollector(carol))  # through the fallback, on the Vault's storage
    assert v.feeCollector().call() == carol
    for fn in (module.functions.setFeeCollector(carol), module.functions.setFrozen(carol, True),
               module.functions.socializeLoss(carol, 1), module.functions.settleExpired(carol, 1)):  # fmt: skip
        with reverts("Vault_NotDelegated"):
            h.send(fn)
    with reverts("Vault_OnlyLiquidator"):
        h.send(v.setFrozen(carol, True), CAROL)
    with pytest.raises(Exception):  # noqa: B017 - no such function anywhere: a bare revert
        h.p.w3.eth.call({"to": h.p.vault.address, "data": "0xdeadbeef", "from": Account.from_key(ALICE).address})
