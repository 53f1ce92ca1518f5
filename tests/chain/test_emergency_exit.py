"""Emergency mode with a real engine: while it posts roots, nothing changes; once it is stopped and no
root arrives for `emergencyDelay`, a healthy account still gets out with no signatures at all (I-26)."""

from __future__ import annotations

import urllib.error
from dataclasses import replace
from pathlib import Path

import pytest

from offchain.engine.http import serve_engine
from offchain.engine.service import build_engine
from tests.chain.conftest import ALICE, BOB, DEPLOYER, SUITE_LIQUIDATION, addr, local_signers
from tests.chain.harness import USDC, Harness, empty_proof, reverts
from tests.chain.test_engine import engine_trade, http

pytestmark = pytest.mark.chain
U = 10**18


def test_users_get_out_when_every_signer_is_gone(h: Harness, tmp_path: Path) -> None:
    """I-26: the engine runs rounds, then stops; after the delay the protocol is in emergency mode on
    its own, a healthy account withdraws against the on-chain standard margin (no signatures), an
    over-withdrawal is refused, new risk is refused, and the next root ends the mode."""
    h.send(h.p.params.functions.setLiquidationParams(replace(SUITE_LIQUIDATION, emergency_delay=600).as_tuple()))
    h.deposit(ALICE, "USDC", 30_000 * USDC)
    h.deposit(BOB, "USDC", 100_000 * USDC)
    engine = build_engine(h.p, local_signers(h), DEPLOYER, tmp_path)
    server = serve_engine(engine)
    api = f"http://127.0.0.1:{server.server_address[1]}"
    engine_trade(h, api, ALICE, BOB, "BTC-PERP", True, U, "55000")  # Alice long 1 BTC, engine-attested
    assert engine.run_round() is not None
    oracle = h.p.oracle.functions
    assert not oracle.emergency().call()
    server.shutdown()  # every signer gone: no attestations, no roots
    server.server_close()
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        http(api + "/health")
    h.warp(601)
    h.refresh_prices()  # the price feed has its own signers
    assert oracle.emergency().call()
    a, usdc = addr(ALICE), h.token("USDC").address
    equity, _, requirement = h.p.standard_margin.functions.figures(a).call()
    headroom = equity - requirement
    assert headroom > 0
    before = h.token("USDC").functions.balanceOf(a).call()
    h.send(h.p.vault.functions.withdraw(usdc, headroom, a, empty_proof()), ALICE)
    assert h.token("USDC").functions.balanceOf(a).call() == before + headroom
    with reverts("StandardMargin_Insufficient"):
        h.send(h.p.vault.functions.withdraw(usdc, 1, a, empty_proof()), ALICE)
    with reverts("Vault_Emergency"):  # no new risk, even with (test-signed) attestations
        h.fill(BOB, ALICE, h.ids["ETH-PERP"], U, 2_800 * U)
    # the engine comes back: its next root ends emergency mode
    again = build_engine(h.p, local_signers(h), DEPLOYER, tmp_path / "again")
    assert again.run_round() is not None
    assert not oracle.emergency().call()
    h.check_conservation()
