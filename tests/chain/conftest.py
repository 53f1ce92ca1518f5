"""Chain fixtures: one Anvil per test worker, the protocol deployed once, snapshot/revert per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account

from offchain.chain.anvil import DEFAULT_KEYS, Anvil, start_anvil
from offchain.chain.client import connect
from offchain.chain.devnet import bootstrap
from offchain.chain.params import LiquidationParams
from offchain.engine.http import serve_engine
from offchain.engine.service import Engine, build_engine
from offchain.engine.signer import LocalSigner
from tests.chain.harness import Harness

GENESIS = 1_767_225_600  # 2026-01-01T00:00:00Z
DAY = 86_400
DEPLOYER, ALICE, BOB, CAROL, RELAYER = DEFAULT_KEYS[:5]
SUITE_LIQUIDATION = LiquidationParams(emergency_delay=365 * DAY)


@pytest.fixture(scope="session")
def anvil() -> Iterator[Anvil]:
    with start_anvil(timestamp=GENESIS) as node:
        yield node


@pytest.fixture(scope="session")
def _deployed(anvil: Anvil) -> Harness:
    dev = bootstrap(connect(anvil.url), DEPLOYER, rpc_url=anvil.url, timelock=None)  # instant admin for tests
    h = Harness(dev.protocol, DEPLOYER, dev.risk_signers, dev.price_signers, dev.instruments)
    # The general suite warps days without status roots: emergency mode (tested at its default delay in
    # test_liquidation.py) is pushed out to the 365-day bound here.
    h.send(h.p.params.functions.setLiquidationParams(SUITE_LIQUIDATION.as_tuple()))
    for key in (ALICE, BOB, CAROL):
        for sym, amount in (("USDC", 10**6 * 10**6), ("WBTC", 10 * 10**8), ("WETH", 100 * 10**18)):
            h.fund(key, sym, amount)
    return h


@pytest.fixture
def h(_deployed: Harness) -> Iterator[Harness]:
    """The deployed protocol, reverted to its post-setup state after each test."""
    w3 = _deployed.p.w3
    snap = w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    try:
        yield _deployed
    finally:
        w3.provider.make_request("evm_revert", [snap])  # type: ignore[arg-type]
        _deployed.p.reset_nonces()


def addr(key: str) -> str:
    return str(Account.from_key(key).address)


# ---------------------------------------------------------------------- a real engine (tests/chain/test_engine*.py)
def local_signers(h: Harness, n: int = 3) -> list[LocalSigner]:
    """In-process signers holding the suite's registered risk keys."""
    return [LocalSigner(s._key.to_bytes(), h.p.domain("RiskOracle")) for s in h.risk_signers[:n]]


@pytest.fixture
def engine(h: Harness, tmp_path: Path) -> Engine:
    """The risk engine service on the suite's chain, its files under ``tmp_path / "engine"``."""
    return build_engine(h.p, local_signers(h), DEPLOYER, tmp_path / "engine")


@pytest.fixture
def api(engine: Engine) -> Iterator[str]:
    """The engine served over HTTP on a free localhost port."""
    server = serve_engine(engine)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
