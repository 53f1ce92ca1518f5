"""A ready-to-use devnet: deployment with dev signer keys, default instruments and first prices.

The dev keys are derived from public seeds: they are for local chains only, never for value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eth_utils import keccak

from offchain.chain.client import Protocol
from offchain.chain.deploy import (
    DEVNET_TIMELOCK,
    DeployConfig,
    InstrumentSpec,
    TimelockConfig,
    deploy_protocol,
    hand_over,
    list_instruments,
)
from offchain.chain.eip712 import Signer
from offchain.chain.units import Kind
from offchain.feeds.service import PriceService

DAY = 86_400


def dev_signers(kind: str, n: int) -> list[Signer]:
    """Deterministic devnet signer keys, e.g. ``dev_signers("risk", 3)``."""
    return [Signer(keccak(text=f"pmsim-test-{kind}-{i}")) for i in range(n)]


def default_instruments(now: int) -> dict[str, InstrumentSpec]:
    """BTC and ETH perps, a 30-day future each and 7-day calls and puts around the money."""
    return {
        "BTC-PERP": InstrumentSpec(Kind.PERP, 0),
        "ETH-PERP": InstrumentSpec(Kind.PERP, 1),
        "BTC-FUT": InstrumentSpec(Kind.FUTURE, 0, now + 30 * DAY),
        "BTC-C60K": InstrumentSpec(Kind.CALL, 0, now + 7 * DAY, 60_000 * 10**18),
        "BTC-P50K": InstrumentSpec(Kind.PUT, 0, now + 7 * DAY, 50_000 * 10**18),
        "ETH-C3K": InstrumentSpec(Kind.CALL, 1, now + 7 * DAY, 3_000 * 10**18),
    }


@dataclass
class Devnet:
    """A deployed protocol with its dev signers and instrument ids by symbol."""

    protocol: Protocol
    deployer: str
    risk_signers: list[Signer]
    price_signers: list[Signer]
    instruments: dict[str, int] = field(default_factory=dict)


def bootstrap(
    w3: object,
    deployer: str,
    *,
    rpc_url: str = "",
    risk_signers: int = 3,
    risk_quorum: int = 2,
    price_signers: int = 3,
    price_quorum: int = 2,
    engine_config_hash: bytes | None = None,
    spot: tuple[float, ...] = (55_000.0, 2_800.0),
    vault_artifact: str = "Vault",
    guardian: str | None = None,
    timelock: TimelockConfig | None = DEVNET_TIMELOCK,
) -> Devnet:
    """Deploy, list the default instruments, post a first price round and hand every owner role to
    a TimelockController (:func:`offchain.chain.deploy.hand_over`).

    ``engine_config_hash`` defaults to the canonical hash of the default risk configuration.
    ``timelock=None`` leaves the deployer as the owner of everything, with instant admin powers: for
    test fixtures and benchmarks that reconfigure the protocol, never for a shared chain.
    ``guardian`` (default: the deployer) may pause and tighten at once, and cancel scheduled changes.
    """
    from web3 import Web3

    from offchain.risk.config import load_config

    if engine_config_hash is None:
        engine_config_hash = load_config().canonical_hash()
    assert isinstance(w3, Web3)
    risk = dev_signers("risk", risk_signers)
    price = dev_signers("price", price_signers)
    cfg = DeployConfig(
        risk_signers=[s.address for s in risk], price_signers=[s.address for s in price],
        risk_quorum=risk_quorum, price_quorum=price_quorum, engine_config_hash=engine_config_hash,
        vault_artifact=vault_artifact, guardian=guardian,
    )  # fmt: skip
    proto = deploy_protocol(w3, deployer, cfg, rpc_url)
    specs = default_instruments(proto.now())
    ids = list_instruments(proto, deployer, list(specs.values()))
    dev = Devnet(proto, deployer, risk, price, dict(zip(specs, ids, strict=True)))
    proto.deployment.extra["instruments"] = dev.instruments
    PriceService(proto, price, deployer).post(spot)
    if timelock is not None:
        hand_over(proto, deployer, timelock)
    return dev
