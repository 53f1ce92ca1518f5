"""Chain fixtures: one Anvil per test worker, the protocol deployed once, snapshot/revert per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from eth_account import Account

from offchain.chain.anvil import DEFAULT_KEYS, Anvil, start_anvil
from offchain.chain.client import connect
from offchain.chain.deploy import DeployConfig, InstrumentSpec, deploy_protocol, list_instruments
from offchain.chain.units import Kind
from tests.chain.harness import Harness, signer_from_seed

GENESIS = 1_767_225_600  # 2026-01-01T00:00:00Z
DAY = 86_400
DEPLOYER, ALICE, BOB, CAROL, RELAYER = DEFAULT_KEYS[:5]


@pytest.fixture(scope="session")
def anvil() -> Iterator[Anvil]:
    with start_anvil(timestamp=GENESIS) as node:
        yield node


@pytest.fixture(scope="session")
def _deployed(anvil: Anvil) -> Harness:
    w3 = connect(anvil.url)
    risk = [signer_from_seed(f"pmsim-test-risk-{i}") for i in range(3)]
    price = [signer_from_seed(f"pmsim-test-price-{i}") for i in range(3)]
    cfg = DeployConfig(
        risk_signers=[s.address for s in risk], price_signers=[s.address for s in price],
        risk_quorum=2, price_quorum=2, engine_config_hash=b"\x11" * 32,
    )  # fmt: skip
    proto = deploy_protocol(w3, DEPLOYER, cfg, anvil.url)
    h = Harness(proto, DEPLOYER, risk, price, {})
    now = h.now()
    specs = {
        "BTC-PERP": InstrumentSpec(Kind.PERP, 0),
        "ETH-PERP": InstrumentSpec(Kind.PERP, 1),
        "BTC-FUT": InstrumentSpec(Kind.FUTURE, 0, now + 30 * DAY),
        "BTC-C60K": InstrumentSpec(Kind.CALL, 0, now + 7 * DAY, 60_000 * 10**18),
        "BTC-P50K": InstrumentSpec(Kind.PUT, 0, now + 7 * DAY, 50_000 * 10**18),
        "ETH-C3K": InstrumentSpec(Kind.CALL, 1, now + 7 * DAY, 3_000 * 10**18),
    }
    ids = list_instruments(proto, DEPLOYER, list(specs.values()))
    h.ids = dict(zip(specs, ids, strict=True))
    h.post_prices((55_000.0, 2_800.0))
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
