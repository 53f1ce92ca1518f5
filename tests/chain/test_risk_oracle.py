"""RiskOracle: every binding of an attestation (account, nonce, action, params, time, price round,
credit, quorum, EIP-712 domain) and the margin condition, on-chain with real signatures."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from eth_account import Account

from offchain.chain.actions import STATUS, trade_action
from offchain.chain.build import load_artifacts
from offchain.chain.eip712 import digest
from offchain.chain.params import CollateralParams, OnchainParams
from tests.chain.conftest import ALICE, BOB, CAROL, DEPLOYER, addr
from tests.chain.harness import ANY, USDC, Harness, next_nonce, reverts, signer_from_seed

U = 10**18
BTC = 55_000 * U


def require(h: Harness, proof: Any, account: str, action: bytes = STATUS, *, nonce: int | None = None,
            credit: int | None = None, initial: bool = True) -> int:  # fmt: skip
    """RiskOracle.requireMargin as the Vault calls it, for the account's current nonce and credit."""
    nonce = h.nonce(account) if nonce is None else nonce
    credit = h.p.vault.functions.depositCredit(account).call() if credit is None else credit
    fn = h.p.oracle.functions.requireMargin(proof, account, nonce, action, credit, initial)
    return int(h.p.call(fn))


def sorted_signers(h: Harness) -> list:
    return sorted(h.risk_signers, key=lambda s: int(s.address, 16))


def test_valid_attestation_returns_credited_equity(h: Harness) -> None:
    """I-11: a well-formed attestation by any quorum passes and returns marginEquity plus credit."""
    a = addr(ALICE)
    att = h.attestation(a, equity=5_000, im=5_000, mm=2_000)
    for signers in ([0, 1], [0, 2], [1, 2], [0, 1, 2]):
        proof = h.proof(att, [h.risk_signers[i] for i in signers])
        assert require(h, proof, a) == 5_000
    h.deposit(CAROL, "USDC", 7 * USDC, account=a)
    assert require(h, h.proof(att), a) == 5_000 + 7 * USDC


def test_signer_set_errors(h: Harness) -> None:
    """I-11: unknown signer, too few signers, duplicate or disordered signatures, bad length."""
    a = addr(ALICE)
    att = h.attestation(a)
    d = digest(h.p.domain("RiskOracle"), att.struct_hash())
    s0, s1, _ = sorted_signers(h)
    stranger = signer_from_seed("not a risk signer")
    with reverts("SignerQuorum_UnknownSigner", stranger.address):
        require(h, h.proof(att, [stranger, s0]), a)
    with reverts("SignerQuorum_UnknownSigner", h.price_signers[0].address):  # the feed's, not ours
        require(h, h.proof(att, [h.price_signers[0], s0]), a)
    with reverts("SignerQuorum_TooFewSigners", 1, 2):
        require(h, (att.as_tuple(), s0.sign(d)), a)
    with reverts("SignerQuorum_TooFewSigners", 0, 2):
        require(h, (att.as_tuple(), b""), a)
    with reverts("SignerQuorum_DuplicateSigner", s0.address):
        require(h, (att.as_tuple(), s0.sign(d) + s0.sign(d)), a)
    with reverts("SignerQuorum_DuplicateSigner", s0.address):
        require(h, (att.as_tuple(), s1.sign(d) + s0.sign(d)), a)
    with reverts("SignerQuorum_BadSignatureLength", 64):
        require(h, (att.as_tuple(), s0.sign(d)[:64]), a)


@pytest.mark.parametrize("field", ["chain_id", "verifying_contract", "name", "version"])
def test_domain_binding(h: Harness, field: str) -> None:
    """I-11: an attestation signed for another chain, contract, name or version recovers to an
    unregistered address (SignerQuorum_UnknownSigner)."""
    a = addr(ALICE)
    dom = h.p.domain("RiskOracle")
    wrong = replace(dom, **{field: {"chain_id": 1, "verifying_contract": h.p.exchange.address,
                                    "name": "pmsim Exchange", "version": "2"}[field]})  # fmt: skip
    att = h.attestation(a)
    with reverts("SignerQuorum_UnknownSigner"):
        require(h, h.proof(att, domain=wrong), a)
    require(h, h.proof(att, domain=dom), a)


def test_account_nonce_action_binding(h: Harness) -> None:
    """I-11: an attestation is for one account, its current risk nonce and one action."""
    a, b = addr(ALICE), addr(BOB)
    with reverts("RiskOracle_WrongAccount", a, b):
        require(h, h.proof(h.attestation(b)), a)
    with reverts("RiskOracle_StaleNonce", 0, 1):
        require(h, h.proof(h.attestation(a, risk_nonce=1)), a)
    action = trade_action(a, 1, U, BTC, 11_000_000)
    with reverts("RiskOracle_WrongAction", action, STATUS):
        require(h, h.proof(h.attestation(a)), a, action)
    other = trade_action(a, 1, U, BTC, 11_000_001)
    with reverts("RiskOracle_WrongAction", action, other):
        require(h, h.proof(h.attestation(a, other)), a, action)
    require(h, h.proof(h.attestation(a, action)), a, action)


def test_used_attestation_cannot_be_replayed(h: Harness) -> None:
    """I-11: a trade bumps both nonces, so its attestations are dead afterwards (StaleNonce)."""
    for key in (ALICE, BOB):
        h.deposit(key, "USDC", 100_000 * USDC)
    perp = h.ids["BTC-PERP"]
    m = h.order(ALICE, perp, True, 2 * U, BTC, nonce=next_nonce())
    t = h.order(BOB, perp, False, 2 * U, BTC, nonce=next_nonce())
    proofs = h.trade_proofs(m, t, U)
    h.trade(ALICE, m, BOB, t, U, proofs=proofs)
    with reverts("RiskOracle_StaleNonce", 1, 0):  # same orders have room for another unit
        h.trade(ALICE, m, BOB, t, U, proofs=proofs)


def test_time_window(h: Harness) -> None:
    """I-11: issued in the past, unexpired, at most attestationMaxAge (300 s) long; an attestation
    that was valid expires as chain time passes."""
    a = addr(ALICE)
    now = h.now()
    with reverts("RiskOracle_Expired", now - 1, ANY):
        require(h, h.proof(h.attestation(a, issued_at=now - 100, expiry=now - 1)), a)
    with reverts("RiskOracle_IssuedInFuture", now + 50, ANY):
        require(h, h.proof(h.attestation(a, issued_at=now + 50, expiry=now + 100)), a)
    with reverts("RiskOracle_LifetimeTooLong", 301, 300):
        require(h, h.proof(h.attestation(a, issued_at=now, expiry=now + 301)), a)
    require(h, h.proof(h.attestation(a, issued_at=now, expiry=now + 300)), a)
    proof = h.proof(h.attestation(a, issued_at=now, expiry=now + 60))
    require(h, proof, a)
    h.warp(61)
    with reverts("RiskOracle_Expired", now + 60, ANY):
        require(h, proof, a)


def test_params_binding(h: Harness) -> None:
    """I-11: an attestation binds the current paramsHash; any parameter change (params, a
    collateral haircut, the engine configuration hash) invalidates earlier ones."""
    a = addr(ALICE)
    current = h.p.params.functions.paramsHash().call()
    with reverts("RiskOracle_WrongParams", current, b"\x22" * 32):
        require(h, h.proof(h.attestation(a, params_hash=b"\x22" * 32)), a)
    rp = h.p.params.functions
    weth = h.p.deployment.tokens["WETH"].address
    changes = [
        rp.setParams(OnchainParams(taker_fee=4 * 10**14).as_tuple()),
        rp.setCollateral(*CollateralParams(weth, 1, 2 * 10**17).as_tuple()),
        rp.setEngineConfigHash(b"\x33" * 32),
    ]
    for change in changes:
        old_hash = h.p.params.functions.paramsHash().call()
        proof = h.proof(h.attestation(a))
        require(h, proof, a)
        h.send(change)
        new_hash = h.p.params.functions.paramsHash().call()
        assert new_hash != old_hash and h.p.oracle.functions.paramsHash().call() == new_hash
        with reverts("RiskOracle_WrongParams", new_hash, old_hash):
            require(h, proof, a)
        require(h, h.proof(h.attestation(a)), a)


def test_params_change_invalidates_attestation_in_a_trade(h: Harness) -> None:
    """I-11: end to end, a trade with attestations signed before a parameter change reverts."""
    for key in (ALICE, BOB):
        h.deposit(key, "USDC", 100_000 * USDC)
    perp = h.ids["BTC-PERP"]
    m = h.order(ALICE, perp, True, U, BTC, nonce=next_nonce())
    t = h.order(BOB, perp, False, U, BTC, nonce=next_nonce())
    proofs = h.trade_proofs(m, t, U)
    h.send(h.p.params.functions.setEngineConfigHash(b"\x44" * 32))
    with reverts("RiskOracle_WrongParams"):
        h.trade(ALICE, m, BOB, t, U, proofs=proofs)
    h.trade(ALICE, m, BOB, t, U)


def test_price_round_tolerance(h: Harness) -> None:
    """I-11: refused once any underlying moved more than priceTolerance (1 %) since the attested
    round; a move within it is fine; unknown rounds are refused by the feed."""
    a = addr(ALICE)
    proof = h.proof(h.attestation(a))  # at round 1
    h.post_raw((55_275 * U, 2_800 * U))  # BTC +0.5 %
    require(h, proof, a)
    h.post_raw((55_000 * U, 2_856 * U))  # ETH +2 % vs round 1
    with reverts("RiskOracle_PriceMoved", 2 * 10**16, 10**16):
        require(h, proof, a)
    require(h, h.proof(h.attestation(a, price_round=3)), a)  # the latest round
    for rnd in (0, 4):
        with reverts("PriceFeed_UnknownRound", rnd):
            require(h, h.proof(h.attestation(a, price_round=rnd)), a)


def test_margin_condition(h: Harness) -> None:
    """I-11: requireMargin compares credited equity with IM (useInitial) or MM; verify checks the
    binding only."""
    a = addr(ALICE)
    proof = h.proof(h.attestation(a, equity=1_000, im=1_500, mm=1_000))
    with reverts("RiskOracle_InsufficientMargin", 1_000, 1_500):
        require(h, proof, a)
    assert require(h, proof, a, initial=False) == 1_000
    h.p.call(h.p.oracle.functions.verify(proof, a, 0, STATUS, 0))
    negative = h.proof(h.attestation(a, equity=-5, im=0, mm=0))
    with reverts("RiskOracle_InsufficientMargin", -5, 0):
        require(h, negative, a, initial=False)
    h.deposit(CAROL, "USDC", 5, account=a)  # credited: -5 + 5 covers a zero requirement
    assert require(h, negative, a, initial=False) == 0


def test_credit_checkpoint_cannot_exceed_credit(h: Harness) -> None:
    """I-11: an attestation claiming a deposit credit the account does not have is refused."""
    a = addr(ALICE)
    h.deposit(ALICE, "USDC", 10)
    with reverts("RiskOracle_BadCredit", 11, 10):
        require(h, h.proof(h.attestation(a, credit_checkpoint=11)), a)
    assert require(h, h.proof(h.attestation(a, equity=0, credit_checkpoint=4)), a) == 6


def test_oracle_callbacks_are_restricted(h: Harness) -> None:
    """Only RiskParams syncs parameters and only the feed reports rounds."""
    o = h.p.oracle.functions
    with reverts("RiskOracle_OnlyRiskParams"):
        h.send(o.syncParams(b"\x01" * 32, 10**16, 300, 3600), CAROL)
    with reverts("RiskOracle_OnlyFeed"):
        h.send(o.onPriceRound(7), CAROL)
    with reverts("OwnableUnauthorizedAccount", addr(CAROL)):
        h.send(o.addSigner(addr(CAROL)), CAROL)


def test_unsynced_oracle_refuses_everything(h: Harness) -> None:
    """A RiskOracle that never received a parameter hash refuses attestations
    (RiskOracle_ParamsNotSynced) until its RiskParams syncs it. The oracle is a module of the
    Vault: a fresh Vault is a fresh oracle."""
    art = load_artifacts()["Vault"]
    w3, deployer = h.p.w3, Account.from_key(DEPLOYER).address
    factory = w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
    # this oracle's "RiskParams" is the deployer, so that the test can sync it by hand
    usdc, instruments = h.p.tokens["USDC"].address, h.p.instruments.address
    rc = h.send(factory.constructor(deployer, usdc, instruments, deployer, h.p.feed.address, deployer))
    oracle = w3.eth.contract(address=rc["contractAddress"], abi=art.abi)
    for s in h.risk_signers:
        h.send(oracle.functions.addSigner(s.address))
    h.send(oracle.functions.setQuorum(2))
    a = addr(ALICE)
    att = h.attestation(a)
    dom = replace(h.p.domain("RiskOracle"), verifying_contract=oracle.address)
    proof = h.proof(att, domain=dom)
    check = oracle.functions.requireMargin(proof, a, 0, STATUS, 0, True)
    with reverts("RiskOracle_ParamsNotSynced"):
        h.p.call(check)
    h.send(oracle.functions.syncParams(att.params_hash, 10**16, 300, 3600))
    with reverts("RiskOracle_FeedStale"):  # F-6: nor before it has read the feed's age
        h.p.call(check)
    h.send(oracle.functions.syncFeed())
    assert h.p.call(check) == att.margin_equity
    with reverts("SignerQuorum_UnknownSigner"):  # the same attestation, signed for the real oracle
        h.p.call(oracle.functions.requireMargin(h.proof(att), a, 0, STATUS, 0, True))
