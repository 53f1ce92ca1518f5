"""RiskParams: hard bounds on every field, collaterals, owner-only changes pushed to the oracle,
and the parameters taking effect."""

from __future__ import annotations

from dataclasses import replace

import pytest

from offchain.chain.params import OnchainParams
from tests.chain.conftest import ALICE, BOB, CAROL, DEPLOYER, addr
from tests.chain.harness import USDC, Harness, reverts, signer_from_seed

WAD = 10**18
LOT = 10**15
BASE = OnchainParams()

OUT_OF_BOUNDS = [
    ("attestationMaxAge", replace(BASE, attestation_max_age=9)),
    ("attestationMaxAge", replace(BASE, attestation_max_age=86_401)),
    ("priceTolerance", replace(BASE, price_tolerance=WAD // 2_000 - 1)),
    ("priceTolerance", replace(BASE, price_tolerance=WAD // 4 + 1)),
    ("makerFee", replace(BASE, maker_fee=WAD // 100 + 1)),
    ("takerFee", replace(BASE, taker_fee=WAD // 100 + 1)),
    ("maxFundingRate", replace(BASE, max_funding_rate=WAD // 20 + 1)),
    ("maxPositions", replace(BASE, max_positions=0)),
    ("maxPositions", replace(BASE, max_positions=65)),
    ("minPositionSize", replace(BASE, min_position_size=LOT - 1)),
    ("minPositionSize", replace(BASE, min_position_size=10**24 + LOT)),
    ("minPositionSize", replace(BASE, min_position_size=LOT + 1)),
]


def test_session_uses_the_default_params(h: Harness) -> None:
    """The chain tests assume the deployment's default parameters (1 % price tolerance, 300 s
    attestations, 2/5 bp fees, 0.075 % funding cap, 64 positions of at least 0.01)."""
    assert tuple(h.p.params.functions.params().call()) == BASE.as_tuple()


@pytest.mark.parametrize(("field", "params"), OUT_OF_BOUNDS, ids=[f"{f}-{i}" for i, (f, _) in enumerate(OUT_OF_BOUNDS)])
def test_params_out_of_bounds(h: Harness, field: str, params: OnchainParams) -> None:
    """I-18: each field outside its hard bounds reverts RiskParams_OutOfBounds(field), and nothing
    changes."""
    rp = h.p.params.functions
    before = (rp.params().call(), rp.paramsHash().call())
    with reverts("RiskParams_OutOfBounds", field):
        h.send(rp.setParams(params.as_tuple()))
    assert (rp.params().call(), rp.paramsHash().call()) == before


@pytest.mark.parametrize(
    "params",
    [OnchainParams(10, WAD // 2_000, 0, 0, 0, 1, LOT),
     OnchainParams(86_400, WAD // 4, WAD // 100, WAD // 100, WAD // 20, 64, 10**24)],
    ids=["lower", "upper"],
)  # fmt: skip
def test_params_bounds_are_inclusive(h: Harness, params: OnchainParams) -> None:
    """I-18: the bounds themselves are accepted, announced, and pushed to the oracle in the same
    transaction."""
    rc = h.send(h.p.params.functions.setParams(params.as_tuple()))
    assert tuple(h.p.params.functions.params().call()) == params.as_tuple()
    [ev] = h.events(h.p.params, "ParamsSet", rc)
    assert tuple(ev["params"].values()) == params.as_tuple()
    [changed] = h.events(h.p.params, "ParamsHashChanged", rc)
    [synced] = h.events(h.p.oracle, "ParamsSynced", rc)
    assert changed["paramsHash"] == synced["paramsHash"] == h.p.oracle.functions.paramsHash().call()
    assert (synced["priceTolerance"], synced["attestationMaxAge"]) == (params.price_tolerance,
                                                                        params.attestation_max_age)  # fmt: skip


def test_collateral_bounds_and_listing(h: Harness) -> None:
    """I-18: haircut <= 90 %, underlying < 4, no zero token, at most 8 collaterals; updating a
    listed token keeps its slot."""
    rp = h.p.params.functions
    weth = h.p.deployment.tokens["WETH"].address
    with reverts("RiskParams_OutOfBounds", "haircut"):
        h.send(rp.setCollateral(weth, 1, 9 * WAD // 10 + 1))
    with reverts("RiskParams_OutOfBounds", "underlying"):
        h.send(rp.setCollateral(weth, 4, WAD // 10))
    with reverts("RiskParams_ZeroAddress"):
        h.send(rp.setCollateral("0x" + "00" * 20, 0, WAD // 10))
    rc = h.send(rp.setCollateral(weth, 1, 9 * WAD // 10))
    assert h.events(h.p.params, "CollateralSet", rc) == [{"token": weth, "underlying": 1, "haircut": 9 * WAD // 10}]
    assert rp.collateral(weth).call() == [1, 9 * WAD // 10]
    assert len(rp.collaterals().call()) == 2
    stranger = signer_from_seed("unlisted token").address
    assert not rp.isCollateral(stranger).call()
    with reverts("RiskParams_UnknownCollateral", stranger):
        h.p.call(rp.collateral(stranger))
    for i in range(6):
        h.send(rp.setCollateral(signer_from_seed(f"token {i}").address, i % 2, WAD // 5))
    assert len(rp.collaterals().call()) == 8
    with reverts("RiskParams_TooManyCollaterals"):
        h.send(rp.setCollateral(stranger, 0, WAD // 5))


def test_haircut_change_changes_deposit_credit(h: Harness) -> None:
    """A collateral's haircut sets the credit of later deposits."""
    weth = h.p.deployment.tokens["WETH"].address
    h.send(h.p.params.functions.setCollateral(weth, 1, WAD // 2))
    rc = h.deposit(ALICE, "WETH", 10**18)
    [ev] = h.events(h.p.vault, "Deposited", rc)
    assert ev["credit"] == 1_400 * USDC  # 2800 USD at a 50 % haircut


def test_owner_only(h: Harness) -> None:
    """Every setter is owner-only; the oracle is wired once; ownership moves in two steps."""
    rp = h.p.params.functions
    carol = addr(CAROL)
    for fn in (rp.setParams(BASE.as_tuple()), rp.setCollateral(carol, 0, 0), rp.setEngineConfigHash(b"\x01" * 32),
               rp.setOracle(carol)):  # fmt: skip
        with reverts("OwnableUnauthorizedAccount", carol):
            h.send(fn, CAROL)
    with reverts("RiskParams_OracleAlreadySet"):
        h.send(rp.setOracle(carol))
    h.send(rp.transferOwnership(carol))
    h.send(rp.setEngineConfigHash(b"\x02" * 32))  # still the owner until Carol accepts
    with reverts("OwnableUnauthorizedAccount", addr(BOB)):
        h.send(rp.acceptOwnership(), BOB)
    h.send(rp.acceptOwnership(), CAROL)
    with reverts("OwnableUnauthorizedAccount", addr(DEPLOYER)):
        h.send(rp.setEngineConfigHash(b"\x03" * 32))
    h.send(rp.setEngineConfigHash(b"\x03" * 32), CAROL)


def test_engine_config_hash_change(h: Harness) -> None:
    """I-18: the engine configuration hash is part of paramsHash, announced and synced."""
    rp = h.p.params.functions
    before, session = rp.paramsHash().call(), rp.engineConfigHash().call()
    rc = h.send(rp.setEngineConfigHash(b"\x55" * 32))
    assert h.events(h.p.params, "EngineConfigHashSet", rc) == [{"engineConfigHash": b"\x55" * 32}]
    assert rp.engineConfigHash().call() == b"\x55" * 32
    assert rp.paramsHash().call() != before
    assert h.p.oracle.functions.paramsHash().call() == rp.paramsHash().call()
    h.send(rp.setEngineConfigHash(session))  # back to the session's value
    assert rp.paramsHash().call() == before


def test_new_limits_take_effect(h: Harness) -> None:
    """Fees, attestation lifetime and price tolerance in force are the ones last set."""
    for key in (ALICE, BOB):
        h.deposit(key, "USDC", 100_000 * USDC)
    rp, perp = h.p.params.functions, h.ids["BTC-PERP"]
    h.send(rp.setParams(replace(BASE, maker_fee=0, taker_fee=WAD // 100, fund_fee_share=0).as_tuple()))
    collector = h.p.vault.functions.feeCollector().call()
    fc = h.cash(collector)
    h.fill(ALICE, BOB, perp, 10**18, 55_000 * WAD)
    assert h.cash(collector) - fc == 550 * USDC  # 1 % taker fee only
    h.send(rp.setParams(replace(BASE, attestation_max_age=60).as_tuple()))
    a = addr(ALICE)
    now = h.now()
    oracle = h.p.oracle.functions
    with reverts("RiskOracle_LifetimeTooLong", 61, 60):
        h.p.call(oracle.verify(h.proof(h.attestation(a, expiry=now + 61)), a, h.nonce(a), b"\x00" * 32,
                               h.p.vault.functions.depositCredit(a).call()))  # fmt: skip
    proof = h.proof(h.attestation(a, expiry=now + 60))
    h.post_raw((56_100 * WAD, 2_800 * WAD))  # +2 %
    credit = h.p.vault.functions.depositCredit(a).call()
    with reverts("RiskOracle_PriceMoved"):
        h.p.call(oracle.verify(proof, a, h.nonce(a), b"\x00" * 32, credit))
    h.send(rp.setParams(replace(BASE, attestation_max_age=60, price_tolerance=WAD // 20).as_tuple()))
    proof = h.proof(h.attestation(a, price_round=1, expiry=h.now() + 60))
    h.p.call(oracle.verify(proof, a, h.nonce(a), b"\x00" * 32, credit))
