"""Deploy the whole protocol (with mock tokens) to any RPC endpoint and write a deployment file."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_utils import keccak
from web3 import Web3
from web3.contract import Contract

from offchain.chain.build import ROOT, Artifact, load_artifacts, write_abi_files
from offchain.chain.client import ABI_OF, CORE, Deployment, Protocol, TokenInfo
from offchain.chain.params import WAD, ExchangeBands, LiquidationParams, OnchainParams
from offchain.chain.units import Kind
from offchain.errors import ChainError

DEFAULT_DEPLOYMENT = ROOT / "deployments" / "local.json"
UNDERLYINGS = ("BTC", "ETH")
DAY = 86_400
ZERO_ADDRESS = "0x" + "00" * 20
TIMELOCK = "TimelockController"  # its name in a deployment file (and its artifact)
HANDOVER_SALT = keccak(text="pmsim: hand every owner role to the timelock")
PROPOSER_ROLE = keccak(text="PROPOSER_ROLE")
EXECUTOR_ROLE = keccak(text="EXECUTOR_ROLE")
CANCELLER_ROLE = keccak(text="CANCELLER_ROLE")


@dataclass(frozen=True)
class FeedConfig:
    heartbeat: int = 3600
    max_delay: int = 600
    max_move: int = WAD // 10  # a 10 % move in one round needs every signer


@dataclass(frozen=True)
class TimelockConfig:
    """The governance timelock every owner role is handed to (see docs/governance.md).

    ``admin`` proposes, executes and cancels (default: the deployer); ``cancellers`` may only cancel
    (the deployment adds the guardian, so that it can veto a scheduled change). ``open_executor``
    lets anyone execute a ready operation. The timelock administers its own roles: granting or
    revoking one, or changing the delay, is itself a scheduled operation.
    """

    min_delay: int = 2 * DAY
    admin: str | None = None
    cancellers: tuple[str, ...] = ()
    open_executor: bool = False


DEVNET_TIMELOCK = TimelockConfig()  # 2 days, the deployer proposes and executes


@dataclass(frozen=True)
class DeployConfig:
    """Everything a deployment needs; defaults give a working devnet."""

    risk_signers: Sequence[str]  # addresses
    price_signers: Sequence[str]
    risk_quorum: int = 1
    price_quorum: int = 1
    params: OnchainParams = field(default_factory=OnchainParams)
    liquidation: LiquidationParams = field(default_factory=LiquidationParams)
    engine_config_hash: bytes = b"\x00" * 32
    haircuts: dict[str, int] = field(default_factory=lambda: {"WETH": WAD // 10, "WBTC": WAD // 10})
    feed: FeedConfig = field(default_factory=FeedConfig)
    fee_collector: str | None = None
    bands: ExchangeBands = field(default_factory=ExchangeBands)
    guardian: str | None = None  # pauses and tightens at once (default: the deployer); never zero
    vault_artifact: str = "Vault"  # the gas table deploys VaultGasProbe, the Vault plus two probes


def _deploy(w3: Web3, art: Artifact, key: str, *args: Any) -> Contract:
    acct = Account.from_key(key)
    factory = w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
    tx = factory.constructor(*args).build_transaction(
        {"from": acct.address, "nonce": w3.eth.get_transaction_count(acct.address, "pending")}
    )
    tx_hash = w3.eth.send_raw_transaction(acct.sign_transaction(tx).raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60)
    if receipt["status"] != 1 or not receipt["contractAddress"]:
        raise ChainError(f"deployment of {art.name} failed")
    return w3.eth.contract(address=receipt["contractAddress"], abi=art.abi)


def deploy_protocol(w3: Web3, deployer_key: str, cfg: DeployConfig, rpc_url: str = "") -> Protocol:
    """Deploy tokens and the six core contracts, wire them, register signers; return handles."""
    arts = load_artifacts()
    owner = Account.from_key(deployer_key).address
    start_block = w3.eth.block_number
    tokens = {
        "USDC": _deploy(w3, arts["MockERC20"], deployer_key, "USD Coin (mock)", "USDC", 6),
        "WBTC": _deploy(w3, arts["MockERC20"], deployer_key, "Wrapped BTC (mock)", "WBTC", 8),
        "WETH": _deploy(w3, arts["MockERC20"], deployer_key, "Wrapped Ether (mock)", "WETH", 18),
    }
    params = _deploy(w3, arts["RiskParams"], deployer_key, owner, cfg.params.as_tuple(), cfg.liquidation.as_tuple(),
                     cfg.engine_config_hash)  # fmt: skip
    f = cfg.feed
    feed = _deploy(w3, arts["PriceFeed"], deployer_key, owner, len(UNDERLYINGS), f.heartbeat, f.max_delay, f.max_move)
    instruments = _deploy(w3, arts["Instruments"], deployer_key, owner, feed.address, params.address)
    collector = cfg.fee_collector or owner
    vault = _deploy(
        w3, arts[cfg.vault_artifact], deployer_key, owner, tokens["USDC"].address, instruments.address,
        params.address, feed.address, collector,
    )  # fmt: skip
    exchange = _deploy(w3, arts["Exchange"], deployer_key, vault.address, params.address, owner, owner,
                       cfg.bands.as_tuple())  # fmt: skip
    lens = _deploy(w3, arts["VaultLens"], deployer_key, vault.address, params.address)
    standard = _deploy(w3, arts["StandardMargin"], deployer_key, lens.address, instruments.address, feed.address,
                       params.address)  # fmt: skip
    fund = _deploy(w3, arts["InsuranceFund"], deployer_key, owner, vault.address, 0)
    settler = _deploy(w3, arts["Settler"], deployer_key, vault.address)
    liquidator = _deploy(w3, arts["Liquidator"], deployer_key, vault.address, params.address, standard.address,
                         fund.address)  # fmt: skip
    # The RiskOracle is a module of the Vault (see RiskOracle.sol): same address.
    contracts = {"RiskParams": params, "PriceFeed": feed, "RiskOracle": vault, "Instruments": instruments,
                 "Vault": vault, "Exchange": exchange, "VaultLens": lens, "StandardMargin": standard,
                 "InsuranceFund": fund, "Liquidator": liquidator, "Settler": settler}  # fmt: skip
    token_info = {
        "USDC": TokenInfo("USDC", tokens["USDC"].address, 6, None),
        "WBTC": TokenInfo("WBTC", tokens["WBTC"].address, 8, UNDERLYINGS.index("BTC")),
        "WETH": TokenInfo("WETH", tokens["WETH"].address, 18, UNDERLYINGS.index("ETH")),
    }
    dep = Deployment(
        chain_id=w3.eth.chain_id, rpc_url=rpc_url, deploy_block=start_block,
        contracts={n: contracts[n].address for n in CORE}, tokens=token_info,
        underlyings=list(UNDERLYINGS), fee_collector=collector,
        extra={"artifact_of": {"Vault": cfg.vault_artifact}} if cfg.vault_artifact != "Vault" else {},
    )  # fmt: skip
    proto = Protocol(w3, dep, arts)
    _wire(proto, deployer_key, cfg)
    return proto


def _wire(p: Protocol, key: str, cfg: DeployConfig) -> None:
    p.send(p.params.functions.setOracle(p.oracle.address), key)
    p.send(p.feed.functions.setRoundListener(p.oracle.address), key)
    for sym in ("WBTC", "WETH"):
        t = p.deployment.tokens[sym]
        assert t.underlying is not None
        p.send(p.params.functions.setCollateral(t.address, t.underlying, cfg.haircuts[sym]), key)
    p.send(p.instruments.functions.setVault(p.vault.address), key)
    p.send(p.vault.functions.setExchange(p.exchange.address), key)
    p.send(p.vault.functions.setLiquidation(p.liquidator.address, p.fund.address, p.standard_margin.address), key)
    for contract, signers, quorum in ((p.oracle, cfg.risk_signers, cfg.risk_quorum),
                                      (p.feed, cfg.price_signers, cfg.price_quorum)):  # fmt: skip
        for s in signers:
            p.send(contract.functions.addSigner(s), key)
        p.send(contract.functions.setQuorum(quorum), key)
    if cfg.guardian is not None:
        set_guardian(p, key, cfg.guardian)


def _unique_contracts(p: Protocol) -> dict[str, Contract]:
    """The deployment's contracts by address, once each (the RiskOracle is the Vault)."""
    seen: dict[str, Contract] = {}
    for c in p.c.values():
        seen.setdefault(c.address, c)
    return seen


def _has(c: Contract, fn: str) -> bool:
    return any(item.get("type") == "function" and item.get("name") == fn for item in c.abi)


def set_guardian(p: Protocol, key: str, guardian: str) -> None:
    """Set the guardian of every contract that has one (Vault, RiskParams, PriceFeed). Owner only."""
    if int(guardian, 16) == 0:
        raise ChainError("the guardian may not be the zero address")
    for c in _unique_contracts(p).values():
        if _has(c, "setGuardian") and c.functions.guardian().call().lower() != guardian.lower():
            p.send(c.functions.setGuardian(Web3.to_checksum_address(guardian)), key)


def hand_over(p: Protocol, key: str, cfg: TimelockConfig) -> Contract:
    """Deploy a TimelockController and hand it every owner role of the deployment.

    Every deployed contract with an ``owner()`` held by ``key`` is transferred; the two-step ones
    (``acceptOwnership``) are accepted by the timelock itself in one batch that the deployer schedules
    and executes while the timelock's delay is still zero, and whose last call sets the delay to
    ``cfg.min_delay``. The batch also grants the cancellers (and the guardian, if a contract has one)
    the canceller role and, when ``cfg.admin`` is another account, revokes the deployer's roles.
    Returns the timelock; the deployment records it as ``TimelockController``.
    """
    if cfg.min_delay < 0:
        raise ChainError("the timelock delay must not be negative")
    deployer = Account.from_key(key).address
    admin = Web3.to_checksum_address(cfg.admin) if cfg.admin else deployer
    proposers = sorted({deployer, admin})
    executors = [ZERO_ADDRESS] if cfg.open_executor else proposers
    tl = _deploy(p.w3, p.artifacts[TIMELOCK], key, 0, proposers, executors, ZERO_ADDRESS)
    calls: list[tuple[str, bytes]] = []
    for c in _unique_contracts(p).values():
        if not _has(c, "owner"):
            continue
        owner = c.functions.owner().call()
        if owner.lower() != deployer.lower():
            raise ChainError(f"{c.address} is owned by {owner}, not by the deployer: cannot hand it over")
        p.send(c.functions.transferOwnership(tl.address), key)
        if _has(c, "acceptOwnership"):
            calls.append((c.address, _calldata(c, "acceptOwnership")))
    cancellers = {Web3.to_checksum_address(a) for a in cfg.cancellers}
    cancellers |= {c.functions.guardian().call() for c in _unique_contracts(p).values() if _has(c, "guardian")}
    calls += [(tl.address, _calldata(tl, "grantRole", CANCELLER_ROLE, a)) for a in sorted(cancellers - {admin})]
    if admin != deployer:
        calls += [(tl.address, _calldata(tl, "revokeRole", role, deployer))
                  for role in (PROPOSER_ROLE, EXECUTOR_ROLE, CANCELLER_ROLE)]  # fmt: skip
    calls.append((tl.address, _calldata(tl, "updateDelay", cfg.min_delay)))
    targets, payloads = [t for t, _ in calls], [d for _, d in calls]
    values = [0] * len(calls)
    p.send(tl.functions.scheduleBatch(targets, values, payloads, b"\x00" * 32, HANDOVER_SALT, 0), key)
    p.send(tl.functions.executeBatch(targets, values, payloads, b"\x00" * 32, HANDOVER_SALT), key)
    for c in _unique_contracts(p).values():
        if _has(c, "owner") and c.functions.owner().call() != tl.address:
            raise ChainError(f"hand-over failed: {c.address} is not owned by the timelock")
    p.deployment.contracts[TIMELOCK] = tl.address
    p.c[TIMELOCK] = tl
    return tl


def _calldata(c: Contract, fn: str, *args: Any) -> bytes:
    return bytes.fromhex(c.encode_abi(fn, args=list(args))[2:])


@dataclass(frozen=True)
class InstrumentSpec:
    kind: Kind
    underlying: int
    expiry: int = 0
    strike: int = 0  # 1e18


def list_instruments(p: Protocol, key: str, specs: Sequence[InstrumentSpec]) -> list[int]:
    """List instruments; returns their on-chain ids in order."""
    ids = []
    for s in specs:
        receipt = p.send(p.instruments.functions.list(int(s.kind), s.underlying, s.expiry, s.strike), key)
        ev = p.instruments.events.InstrumentListed().process_receipt(receipt)
        ids.append(int(ev[0]["args"]["id"]))
    return ids


def write_deployment(p: Protocol, path: Path = DEFAULT_DEPLOYMENT) -> Path:
    """Write the deployment file and, beside it, the plain ABI of each deployed contract."""
    p.deployment.save(path)
    write_deployment_abis(p.deployment, path)
    return path


def abi_folder(path: Path) -> Path:
    """Where the ABIs of the deployment file ``path`` go: ``deployments/local.json`` → ``deployments/local-abi/``."""
    return path.with_name(f"{path.stem}-abi")


def write_deployment_abis(dep: Deployment, path: Path) -> Path:
    """One plain ABI file per deployed contract beside the deployment file (see :func:`abi_folder`).

    Named as the deployment names them (``RiskOracle.json`` is the Vault's ABI, the oracle being a
    module of the Vault; a Vault deployed from another artifact gets that artifact's ABI), plus
    ``MockERC20.json`` for the tokens.
    """
    arts = load_artifacts()
    artifact_of = dep.extra.get("artifact_of", {})
    abis = {name: arts[artifact_of.get(ABI_OF.get(name, name), ABI_OF.get(name, name))].abi for name in dep.contracts}
    abis["MockERC20"] = arts["MockERC20"].abi
    return write_abi_files(abi_folder(path), abis)
