"""Vault: deposits and withdrawals of every token, attestation rules, deposit credit, pause, admin."""

from __future__ import annotations

import pytest

from offchain.chain.actions import withdraw_action
from tests.chain.conftest import ALICE, BOB, CAROL, DAY, DEPLOYER, addr
from tests.chain.harness import USDC, Harness, empty_proof, reverts

WAD = 10**18
BTC, ETH = 55_000 * 10**18, 2_800 * 10**18  # the session's first price round
TOKENS = [  # symbol, decimals, an amount with dust in the last digit
    ("USDC", 6, 1_234_567_891),
    ("WBTC", 8, 123_456_789),
    ("WETH", 18, 3 * 10**18 + 7),
]


def collateral_credit(amount: int, decimals: int, price: int, haircut: int = WAD // 10) -> int:
    """Haircut value in quote units, rounded down (Vault._collateralCredit)."""
    usd = amount * price // 10**decimals
    return usd * (WAD - haircut) // WAD // 10**12


def open_perp(h: Harness, size: int = 10**18, price: int = BTC) -> None:
    """Alice long, Bob short ``size`` BTC-PERP, both funded with 100k USDC."""
    h.deposit(ALICE, "USDC", 100_000 * USDC)
    h.deposit(BOB, "USDC", 100_000 * USDC)
    h.fill(ALICE, BOB, h.ids["BTC-PERP"], size, price)


def withdraw(h: Harness, key: str, sym: str, amount: int, proof: object = None, to: str | None = None):
    tok = h.token(sym).address
    fn = h.p.vault.functions.withdraw(tok, amount, to or addr(key), proof or empty_proof())
    return h.send(fn, key)


# ---------------------------------------------------------------------- round trips
@pytest.mark.parametrize(("sym", "decimals", "amount"), TOKENS)
def test_deposit_withdraw_round_trip(h: Harness, sym: str, decimals: int, amount: int) -> None:
    """I-1, I-2, I-7, I-9: a deposit credits exactly what arrived (quote to cash, volatile tokens to
    collateral, credit at the haircut value), never bumps the nonce; two withdrawals without
    positions need no attestation and return every unit."""
    tok, v, a = h.token(sym).functions, h.p.vault.functions, addr(ALICE)
    assert tok.decimals().call() == decimals
    wallet, vault_bal = tok.balanceOf(a).call(), tok.balanceOf(h.p.vault.address).call()
    carol_wallet = tok.balanceOf(addr(CAROL)).call()
    rc = h.deposit(ALICE, sym, amount)
    [ev] = h.events(h.p.vault, "Deposited", rc)
    price = {"USDC": None, "WBTC": BTC, "WETH": ETH}[sym]
    credit = amount if price is None else collateral_credit(amount, decimals, price)
    assert (ev["amount"], ev["credit"]) == (amount, credit)
    assert v.depositCredit(a).call() == credit
    held = v.cashOf(a).call() if sym == "USDC" else v.collateralOf(a, h.token(sym).address).call()
    assert held == amount
    assert tok.balanceOf(h.p.vault.address).call() == vault_bal + amount
    assert h.nonce(a) == 0
    h.check_settled_conservation()

    part = amount // 3
    withdraw(h, ALICE, sym, part, to=addr(CAROL))
    withdraw(h, ALICE, sym, amount - part)
    assert tok.balanceOf(a).call() == wallet - part
    assert tok.balanceOf(addr(CAROL)).call() == carol_wallet + part
    assert tok.balanceOf(h.p.vault.address).call() == vault_bal
    assert v.cashOf(a).call() == 0 and v.collateralOf(a, h.token(sym).address).call() == 0
    assert h.nonce(a) == 2, "each withdrawal bumps the risk nonce"
    assert v.depositCredit(a).call() == credit, "credit is cumulative, withdrawals leave it"
    h.check_settled_conservation()


def test_deposit_for_another_account(h: Harness) -> None:
    """I-1, I-9: anyone may deposit for anyone; the tokens come from the payer."""
    carol_before = h.token("USDC").functions.balanceOf(addr(CAROL)).call()
    rc = h.deposit(CAROL, "USDC", 5 * USDC, account=addr(ALICE))
    [ev] = h.events(h.p.vault, "Deposited", rc)
    assert ev["from"] == addr(CAROL) and ev["account"] == addr(ALICE)
    assert h.cash(addr(ALICE)) == 5 * USDC and h.cash(addr(CAROL)) == 0
    assert h.token("USDC").functions.balanceOf(addr(CAROL)).call() == carol_before - 5 * USDC
    h.check_settled_conservation()


def test_withdraw_more_than_held(h: Harness) -> None:
    """I-8: a withdrawal beyond the balance reverts with the balance in the error."""
    h.deposit(ALICE, "USDC", 10 * USDC)
    h.deposit(ALICE, "WETH", 10**18)
    with reverts("Vault_InsufficientCash", 10 * USDC, 10 * USDC + 1):
        withdraw(h, ALICE, "USDC", 10 * USDC + 1)
    with reverts("Vault_InsufficientCollateral", 10**18, 10**18 + 1):
        withdraw(h, ALICE, "WETH", 10**18 + 1)
    with reverts("Vault_InsufficientCollateral", 0, 1):
        withdraw(h, ALICE, "WBTC", 1)
    h.check_settled_conservation()


def test_bad_deposit_and_withdraw_inputs(h: Harness) -> None:
    """Zero amounts, the zero address and unlisted tokens are refused with named errors."""
    v, usdc = h.p.vault.functions, h.token("USDC").address
    with reverts("Vault_ZeroAmount"):
        h.send(v.deposit(usdc, 0, addr(ALICE)), ALICE)
    with reverts("Vault_ZeroAddress"):
        h.send(v.deposit(usdc, 1, "0x" + "00" * 20), ALICE)
    stranger = h.p.exchange.address  # not a listed token
    with reverts("Vault_UnknownToken", stranger):
        h.send(v.deposit(stranger, 1, addr(ALICE)), ALICE)
    h.deposit(ALICE, "USDC", USDC)
    with reverts("Vault_ZeroAmount"):
        withdraw(h, ALICE, "USDC", 0)
    with reverts("Vault_ZeroAddress"):
        withdraw(h, ALICE, "USDC", 1, to="0x" + "00" * 20)


# ---------------------------------------------------------------------- attestations
def test_withdraw_with_positions_needs_attestation(h: Harness) -> None:
    """I-10, I-11: with open positions a withdrawal needs an attestation of exactly this withdrawal
    at the current nonce; without one Vault_MarginProofRequired, with a bad one the oracle's error."""
    open_perp(h)
    a, usdc = addr(ALICE), h.token("USDC").address
    with reverts("Vault_MarginProofRequired"):
        withdraw(h, ALICE, "USDC", 10 * USDC)
    with reverts("RiskOracle_WrongAction"):  # attests 11, withdraws 10
        withdraw(h, ALICE, "USDC", 10 * USDC, h.withdraw_proof(a, usdc, 11 * USDC))
    with reverts("RiskOracle_WrongAccount", a, addr(BOB)):
        withdraw(h, ALICE, "USDC", 10 * USDC, h.withdraw_proof(addr(BOB), usdc, 10 * USDC))
    one = h.attestation(a, withdraw_action(a, usdc, 10 * USDC))
    with reverts("SignerQuorum_TooFewSigners", 1, 2):
        withdraw(h, ALICE, "USDC", 10 * USDC, h.proof(one, h.risk_signers[:1]))
    with reverts("RiskOracle_InsufficientMargin", 999, 1000):
        withdraw(h, ALICE, "USDC", 10 * USDC,
                 h.withdraw_proof(a, usdc, 10 * USDC, equity=999, im=1000, mm=500))  # fmt: skip
    nonce = h.nonce(a)
    proof = h.withdraw_proof(a, usdc, 10 * USDC)
    withdraw(h, ALICE, "USDC", 10 * USDC, proof)
    assert h.nonce(a) == nonce + 1
    with reverts("RiskOracle_StaleNonce", nonce + 1, nonce):  # the same attestation again
        withdraw(h, ALICE, "USDC", 10 * USDC, proof)
    h.deposit(ALICE, "WBTC", 10**8)
    wbtc = h.token("WBTC").address
    with reverts("Vault_MarginProofRequired"):
        withdraw(h, ALICE, "WBTC", 10**8)
    withdraw(h, ALICE, "WBTC", 10**8, h.withdraw_proof(a, wbtc, 10**8))
    h.check_settled_conservation()


def test_withdrawal_checks_initial_not_maintenance_margin(h: Harness) -> None:
    """I-10: equity between MM and IM is not enough to take value out."""
    open_perp(h)
    a, usdc = addr(ALICE), h.token("USDC").address
    with reverts("RiskOracle_InsufficientMargin", 1_500, 2_000):
        withdraw(h, ALICE, "USDC", USDC, h.withdraw_proof(a, usdc, USDC, equity=1_500, im=2_000, mm=1_000))
    withdraw(h, ALICE, "USDC", USDC, h.withdraw_proof(a, usdc, USDC, equity=2_000, im=2_000, mm=1_000))


def test_negative_cash_without_positions_needs_attestation(h: Harness) -> None:
    """I-8, I-10: an account that closed at a loss (cash < 0, no positions) may not take its
    collateral out without an attestation, and can never withdraw quote."""
    h.deposit(CAROL, "WETH", 10 * 10**18)
    h.deposit(BOB, "USDC", 100_000 * USDC)
    perp, c = h.ids["BTC-PERP"], addr(CAROL)
    h.fill(CAROL, BOB, perp, 10**18, 56_000 * 10**18)  # Carol buys at 56k ...
    h.fill(CAROL, BOB, perp, 10**18, 55_000 * 10**18, maker_buys=False)  # ... sells at 55k
    assert h.positions(c) == {} and h.cash(c) < 0
    with reverts("Vault_MarginProofRequired"):
        withdraw(h, CAROL, "WETH", 10**18)
    weth = h.token("WETH").address
    withdraw(h, CAROL, "WETH", 10**18, h.withdraw_proof(c, weth, 10**18))
    with reverts("Vault_InsufficientCash"):
        withdraw(h, CAROL, "USDC", 1, h.withdraw_proof(c, h.token("USDC").address, 1))
    h.check_settled_conservation()


def test_quote_withdrawal_never_takes_cash_below_zero(h: Harness) -> None:
    """I-8: even a valid attestation cannot withdraw more quote than the cash balance."""
    open_perp(h)
    a, usdc = addr(ALICE), h.token("USDC").address
    cash = h.cash(a)
    with reverts("Vault_InsufficientCash", cash, cash + 1):
        withdraw(h, ALICE, "USDC", cash + 1, h.withdraw_proof(a, usdc, cash + 1))
    withdraw(h, ALICE, "USDC", cash, h.withdraw_proof(a, usdc, cash))
    assert h.cash(a) == 0
    h.check_settled_conservation()


def test_third_party_dust_deposit_keeps_attestation(h: Harness) -> None:
    """I-7, I-9: deposits by anyone (a third party, dust of every token) neither bump the nonce
    nor invalidate an attestation issued before them."""
    open_perp(h)
    a, usdc = addr(ALICE), h.token("USDC").address
    proof = h.withdraw_proof(a, usdc, 100 * USDC)
    nonce, credit = h.nonce(a), h.p.vault.functions.depositCredit(a).call()
    h.deposit(CAROL, "USDC", 1, account=a)
    h.deposit(CAROL, "WETH", 1, account=a)  # 1 wei: credited at 0
    h.deposit(CAROL, "WBTC", 1, account=a)
    assert h.nonce(a) == nonce
    assert h.p.vault.functions.depositCredit(a).call() == credit + 1 + 0 + collateral_credit(1, 8, BTC)
    withdraw(h, ALICE, "USDC", 100 * USDC, proof)
    h.check_settled_conservation()


@pytest.mark.parametrize(("sym", "amount"), [("USDC", 1), ("WBTC", 10**8)])
def test_deposit_is_credited_to_earlier_attestation(h: Harness, sym: str, amount: int) -> None:
    """I-9: an attestation just short of IM fails, and passes once a deposit (by a third party,
    quote at face value or collateral at its haircut value) covers the shortfall."""
    open_perp(h)
    a, weth = addr(ALICE), h.token("WETH").address
    h.deposit(ALICE, "WETH", 10**18)
    credit = amount if sym == "USDC" else collateral_credit(amount, 8, BTC)
    im = 50_000 * USDC
    proof = h.withdraw_proof(a, weth, 10**18, equity=im - credit, im=im, mm=im // 2)
    with reverts("RiskOracle_InsufficientMargin", im - credit, im):
        withdraw(h, ALICE, "WETH", 10**18, proof)
    nonce = h.nonce(a)
    h.deposit(CAROL, sym, amount, account=a)
    assert h.nonce(a) == nonce
    withdraw(h, ALICE, "WETH", 10**18, proof)
    h.check_settled_conservation()


def test_attestation_credit_checkpoint_cannot_exceed_credit(h: Harness) -> None:
    """I-11: an attestation claiming more deposit credit than the account has is refused."""
    open_perp(h)
    a, usdc = addr(ALICE), h.token("USDC").address
    credit = h.p.vault.functions.depositCredit(a).call()
    proof = h.withdraw_proof(a, usdc, USDC, credit_checkpoint=credit + 1)
    with reverts("RiskOracle_BadCredit", credit + 1, credit):
        withdraw(h, ALICE, "USDC", USDC, proof)


# ---------------------------------------------------------------------- pause
def test_pause_blocks_new_risk_never_exits(h: Harness) -> None:
    """I-14: paused, the Vault refuses risk-adding trades and position-backed withdrawals, but
    deposits, closing trades, withdrawals without positions, funding and settlement go on."""
    v, perp, call = h.p.vault.functions, h.ids["BTC-PERP"], h.ids["BTC-C60K"]
    open_perp(h, 2 * 10**18)
    h.fill(BOB, ALICE, call, 10**18, 1_000 * 10**18)  # Bob long a call from Alice
    h.deposit(CAROL, "USDC", 1_000 * USDC)
    with reverts("Vault_OnlyGuardian"):
        h.send(v.setPaused(True), ALICE)
    rc = h.send(v.setPaused(True))
    assert h.events(h.p.vault, "PausedSet", rc) == [{"paused": True}] and v.paused().call()

    h.deposit(ALICE, "USDC", USDC)  # deposits: always
    h.deposit(CAROL, "WETH", 10**18, account=addr(ALICE))
    with reverts("Vault_Paused"):  # adds risk
        h.fill(ALICE, BOB, perp, 10**18, BTC)
    with reverts("Vault_Paused"):  # Bob (buying) reduces, but Carol (selling) opens
        h.fill(CAROL, BOB, perp, 10**18, BTC, maker_buys=False)
    a, usdc = addr(ALICE), h.token("USDC").address
    proof = h.withdraw_proof(a, usdc, USDC)
    with reverts("Vault_Paused"):  # backed by positions
        withdraw(h, ALICE, "USDC", USDC, proof)
    withdraw(h, CAROL, "USDC", 500 * USDC)  # no positions: an exit
    h.fill(ALICE, BOB, perp, 10**18, BTC, maker_buys=False)  # both sides reduce
    h.fill(ALICE, BOB, call, 10**18, 900 * 10**18)  # Alice buys back, Bob sells: both reduce
    assert set(h.positions(a)) == {perp} and h.positions(a)[perp][0] == 10**18

    h.warp(8 * 3600)
    h.refresh_prices()
    h.send(h.p.instruments.functions.updateFunding(perp), CAROL)
    h.send(v.settleFunding(addr(ALICE), perp), CAROL)
    h.send(v.settleFunding(addr(BOB), perp), CAROL)
    h.send(v.setPaused(False))
    h.fill(ALICE, BOB, perp, 10**18, BTC)  # risk again
    h.check_settled_conservation()


def test_pause_does_not_block_settlement(h: Harness) -> None:
    """I-14: an expired position settles while paused."""
    call = h.ids["BTC-C60K"]
    h.deposit(ALICE, "USDC", 10_000 * USDC)
    h.deposit(BOB, "USDC", 10_000 * USDC)
    h.fill(ALICE, BOB, call, 10**18, 1_000 * 10**18)
    expiry = h.p.instruments.functions.get(call).call()[2]
    h.send(h.p.vault.functions.setPaused(True))
    h.warp(expiry - h.now())
    h.refresh_prices()
    h.send(h.p.instruments.functions.fixSettlement(0, expiry, h.latest_round()), CAROL)
    for key in (ALICE, BOB):
        h.send(h.p.vault.functions.settleExpired(addr(key), call), CAROL)
    assert h.positions(addr(ALICE)) == {} == h.positions(addr(BOB))
    h.check_settled_conservation()


# ---------------------------------------------------------------------- admin
def test_vault_admin_is_owner_only_and_bounded(h: Harness) -> None:
    """Owner-only wiring, the exchange set once, zero addresses refused, applyTrade Exchange-only."""
    v = h.p.vault.functions
    carol = addr(CAROL)
    for fn in (v.setGuardian(carol), v.setFeeCollector(carol), v.setExchange(carol)):
        with reverts("OwnableUnauthorizedAccount", carol):
            h.send(fn, CAROL)
    with reverts("Vault_AlreadySet"):
        h.send(v.setExchange(carol))
    with reverts("Vault_ZeroAddress"):
        h.send(v.setFeeCollector("0x" + "00" * 20))
    fill = (h.ids["BTC-PERP"], addr(ALICE), addr(BOB), 10**18, BTC, 0, 0)
    with reverts("Vault_OnlyExchange"):
        h.send(v.applyTrade(fill, empty_proof(), empty_proof()), CAROL)
    h.send(v.setGuardian(carol))
    assert v.guardian().call() == carol
    h.send(v.setPaused(True), CAROL)  # the guardian pauses at once ...
    with reverts("OwnableUnauthorizedAccount", carol):  # ... but never resumes: that loosens
        h.send(v.setPaused(False), CAROL)
    with reverts("Vault_OnlyGuardian"):
        h.send(v.setPaused(True), BOB)
    h.send(v.setPaused(False), DEPLOYER)  # the owner (the timelock in a deployment) resumes
    assert not v.paused().call()


def test_fee_collector_change_redirects_fees(h: Harness) -> None:
    """I-1: fees accrue to the current collector's cash (less the insurance fund's share)."""
    h.send(h.p.vault.functions.setFeeCollector(addr(CAROL)))
    open_perp(h)
    maker_fee, taker_fee = h.fees(10**18, BTC)
    share = h.p.params.functions.params().call()[7]
    to_fund = (maker_fee + taker_fee) * share // 10**18
    assert h.cash(addr(CAROL)) == maker_fee + taker_fee - to_fund
    assert h.cash(h.p.fund.address) == to_fund
    h.check_settled_conservation()


def test_settle_calls_need_the_right_instrument(h: Harness) -> None:
    """settleFunding is for perps with a position, settleExpired for expired non-perps."""
    v, perp, fut = h.p.vault.functions, h.ids["BTC-PERP"], h.ids["BTC-FUT"]
    with reverts("Vault_NotPerp", fut):
        h.send(v.settleFunding(addr(ALICE), fut), CAROL)
    with reverts("Vault_NoPosition", addr(ALICE), perp):
        h.send(v.settleFunding(addr(ALICE), perp), CAROL)
    with reverts("Vault_NotExpired"):
        h.send(v.settleExpired(addr(ALICE), perp), CAROL)
    with reverts("Vault_NotExpired"):
        h.send(v.settleExpired(addr(ALICE), fut), CAROL)
    with reverts("Instruments_UnknownInstrument", 99):
        h.send(v.settleFunding(addr(ALICE), 99), CAROL)
    h.warp(31 * DAY)
    with reverts("Vault_NoPosition", addr(ALICE), fut):
        h.send(v.settleExpired(addr(ALICE), fut), CAROL)
