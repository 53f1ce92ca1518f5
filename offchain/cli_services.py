"""Long-running services: ``pmsim engine``, ``pmsim signer``, ``pmsim prices``, ``pmsim devnet``."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from offchain.errors import InputError, PmsimError

console = Console()
DEPLOYMENT = Path("deployments/local.json")
DEVNET_DIR = Path(".pmsim/devnet")

DeploymentOpt = Annotated[Path, typer.Option(help="deployment file written by `pmsim deploy`")]
RpcOpt = Annotated[str | None, typer.Option(help="RPC URL (default: the deployment's)")]


def _logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")  # fmt: skip


def _protocol(deployment: Path, rpc: str | None) -> object:
    from offchain.chain.client import Deployment, Protocol, connect

    dep = Deployment.load(deployment)
    return Protocol(connect(rpc or dep.rpc_url), dep)


def _keys(option: list[str] | None, env: str, dev_kind: str, dev: bool) -> list[str]:
    """Keys from the option, else the environment (comma-separated), else devnet keys with --dev."""
    from offchain.chain.devnet import dev_signers

    keys = list(option or []) or [k for k in os.environ.get(env, "").split(",") if k]
    if not keys and dev:
        keys = ["0x" + s._key.to_bytes().hex() for s in dev_signers(dev_kind, 3)]
    if not keys:
        raise InputError(env.lower(), f"no signer keys: pass --key, set {env}, or --dev on a devnet")
    return keys


def engine(
    deployment: DeploymentOpt = DEPLOYMENT,
    rpc: RpcOpt = None,
    config: Annotated[Path | None, typer.Option(help="risk configuration (default config/risk.toml)")] = None,
    key: Annotated[list[str] | None, typer.Option(help="a local signer key (repeat); else $PMSIM_RISK_KEYS")] = None,
    signer_url: Annotated[list[str] | None, typer.Option(help="a remote signer as URL=ADDRESS (repeat)")] = None,
    dev: Annotated[bool, typer.Option(help="use the devnet's public signer keys")] = False,
    relayer_key: Annotated[str | None, typer.Option(envvar="PMSIM_RELAYER_KEY", help="pays for posts")] = None,
    host: str = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port")] = 8600,
    round_seconds: Annotated[float, typer.Option(help="seconds between rounds")] = 10.0,
    state_dir: Annotated[Path, typer.Option(help="checkpoint and published rounds")] = Path(".pmsim/engine"),
    lifetime: Annotated[int, typer.Option(help="attestation and root lifetime, seconds")] = 120,
    confirmations: int = 0,
    once: Annotated[bool, typer.Option(help="run one round and exit")] = False,
    workers: Annotated[int, typer.Option(help="processes serving attestations on the port (1 per core)")] = 1,
    verbose: bool = False,
) -> None:
    """Run the risk engine: index, compute, sign, post a root each round; serve attestations."""
    from offchain.chain.anvil import DEFAULT_KEYS
    from offchain.chain.client import Protocol
    from offchain.engine.http import serve_engine
    from offchain.engine.service import build_engine
    from offchain.engine.signer import LocalSigner, RemoteSigner, RiskSigner

    _logging(verbose)
    proto = _protocol(deployment, rpc)
    assert isinstance(proto, Protocol)
    signers: list[RiskSigner] = []
    remote = list(signer_url or [])
    if not remote or key or dev:
        signers += [LocalSigner(k, proto.domain("RiskOracle")) for k in _keys(key, "PMSIM_RISK_KEYS", "risk", dev)]
    for spec in remote:
        url, _, address = spec.partition("=")
        if not address:
            raise InputError("signer_url", f"expected URL=ADDRESS, got {spec!r}")
        signers.append(RemoteSigner(url, address))
    eng = build_engine(proto, signers, relayer_key or DEFAULT_KEYS[0], state_dir, config_path=config,
                       confirmations=confirmations, lifetime=lifetime)  # fmt: skip
    if once:
        result = eng.run_round()
        console.print(f"round {result.round} posted" if result else "nothing posted (see the log)")
        return
    if not 1 <= workers <= 64:
        raise InputError("workers", f"must be 1-64, got {workers}")
    server = serve_engine(eng, host, port, reuse_port=workers > 1)
    if workers > 1:
        from offchain.engine.http import EngineSpec, start_workers

        local = tuple(_keys(key, "PMSIM_RISK_KEYS", "risk", dev)) if not remote or key or dev else ()
        pairs = tuple((u, a) for u, _, a in (x.partition("=") for x in remote))
        worker_spec = EngineSpec(rpc or proto.deployment.rpc_url, deployment, local, relayer_key or DEFAULT_KEYS[0],
                                 pairs, config, lifetime, confirmations=confirmations)  # fmt: skip
        start_workers(worker_spec, workers - 1, host, int(server.server_address[1]), state_dir)
    console.print(f"engine on http://{host}:{server.server_address[1]} (rounds every {round_seconds:g}s, "
                  f"{workers} serving process{'es' if workers > 1 else ''})")  # fmt: skip
    _loop(lambda: eng.run_round(), round_seconds)


def _loop(step: object, every: float) -> None:
    """Call ``step`` every ``every`` seconds until SIGTERM/SIGINT; errors are logged and retried."""
    log = logging.getLogger("pmsim")
    stop = {"now": False}

    def halt(*_: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, halt)
    signal.signal(signal.SIGINT, halt)
    failures = 0
    while not stop["now"]:
        try:
            step()  # type: ignore[operator]
            failures = 0
        except PmsimError as exc:
            failures += 1
            log.error("step failed (%d in a row): %s", failures, exc)
        except (OSError, ConnectionError) as exc:
            failures += 1
            log.error("RPC unavailable (%d in a row): %s", failures, exc)
        except Exception:  # a service never dies on one bad step: log it whole, back off, go on
            failures += 1
            log.exception("unexpected failure (%d in a row)", failures)
        wait = every if failures == 0 else min(60.0, every * 2 ** min(failures, 6))
        deadline = time.monotonic() + wait
        while not stop["now"] and time.monotonic() < deadline:
            time.sleep(0.1)


def signer(
    key: Annotated[str, typer.Option(envvar="PMSIM_SIGNER_KEY", help="this signer's key")],
    deployment: DeploymentOpt = DEPLOYMENT,
    rpc: RpcOpt = None,
    config: Annotated[Path | None, typer.Option(help="risk configuration")] = None,
    host: str = "127.0.0.1",
    port: int = 8610,
    verbose: bool = False,
) -> None:
    """Run one independent risk signer: it recomputes every result itself before signing."""
    from offchain.chain.client import Protocol
    from offchain.chain.indexer import Indexer
    from offchain.engine.core import EngineCore
    from offchain.engine.http import serve_signer
    from offchain.engine.signer import SignerNode
    from offchain.risk.config import load_config

    _logging(verbose)
    proto = _protocol(deployment, rpc)
    assert isinstance(proto, Protocol)
    core = EngineCore(load_config(config), proto.deployment)
    node = SignerNode(key, core, Indexer(proto), proto.domain("RiskOracle"))
    server = serve_signer(node, host, port)
    console.print(f"signer {node.address} on http://{host}:{server.server_address[1]}")
    _loop(lambda: None, 1.0)


def prices(
    deployment: DeploymentOpt = DEPLOYMENT,
    rpc: RpcOpt = None,
    source: Annotated[str, typer.Option(help="gbm, or replay:2020-03 / replay:2021-05 (moves scaled to spot)")] = "gbm",
    seed: Annotated[int, typer.Option(help="GBM seed")] = 1,
    interval: Annotated[float, typer.Option(help="seconds between rounds")] = 5.0,
    steps: Annotated[int, typer.Option(help="rounds to post (0 = until stopped)")] = 0,
    warp: Annotated[bool, typer.Option(help="devnet: move chain time to each step's offset")] = False,
    key: Annotated[list[str] | None, typer.Option(help="price signer key (repeat); else $PMSIM_PRICE_KEYS")] = None,
    dev: Annotated[bool, typer.Option(help="use the devnet's public price signer keys")] = False,
    relayer_key: Annotated[str | None, typer.Option(envvar="PMSIM_RELAYER_KEY")] = None,
    verbose: bool = False,
) -> None:
    """Post signed price rounds from a simulated market or a historical replay."""
    from offchain.chain.anvil import DEFAULT_KEYS
    from offchain.chain.client import Protocol
    from offchain.chain.eip712 import Signer
    from offchain.feeds.service import PriceService
    from offchain.feeds.sources import scaled_steps

    _logging(verbose)
    proto = _protocol(deployment, rpc)
    assert isinstance(proto, Protocol)
    svc = PriceService(proto, [Signer(k) for k in _keys(key, "PMSIM_PRICE_KEYS", "price", dev)],
                       relayer_key or DEFAULT_KEYS[0])  # fmt: skip
    latest = int(proto.call(proto.feed.functions.latestRound())[0])
    spot = tuple(int(proto.call(proto.feed.functions.priceAt(latest, i))) / 1e18
                 for i in range(len(proto.deployment.underlyings))) if latest else (55_000.0, 2_800.0)  # fmt: skip
    stream = scaled_steps(source, spot, seed, steps or 1_000_000)
    step_iter = iter(stream)
    next(step_iter)  # the first step is the current spot itself
    _loop(lambda: svc.run([next(step_iter)], warp=warp), interval)


devnet_app = typer.Typer(help="A local devnet: Anvil, the protocol, the price service, the engine and a keeper.")
KEEPER_DEV_KEY_INDEX = 8  # Anvil's key 8: the devnet keeper's (public: for local chains only)
KEEPER_DEV_FUNDING = 1_000_000 * 10**6  # USDC (quote units) deposited for it to bid with


def _keeper_config(state_dir: Path, dep_path: Path, rpc: str, engine_port: int, keeper_port: int) -> Path:
    """Write the devnet keeper's key file and configuration into the state directory."""
    from offchain.chain.anvil import DEFAULT_KEYS

    state_dir, dep_path = state_dir.resolve(), dep_path.resolve()
    key_file = state_dir / "keeper.key"
    key_file.write_text(DEFAULT_KEYS[KEEPER_DEV_KEY_INDEX] + "\n")
    key_file.chmod(0o600)
    cfg = state_dir / "keeper.toml"
    cfg.write_text(
        "# written by `pmsim devnet up`: the devnet keeper (see config/keeper.toml for every setting)\n"
        "[keeper]\n"
        f'rpc_url = "{rpc}"\n'
        f'deployment = "{dep_path}"\n'
        f'engine_url = "http://127.0.0.1:{engine_port}"\n'
        f'key_file = "{key_file}"\n'
        f'state_file = "{state_dir / "keeper" / "pending.json"}"\n'
        "poll_interval_s = 1.0\n"
        f"health_port = {keeper_port}\n"
        "[fees]\n"
        "replace_after_s = 2.0       # Anvil mines at once: a transaction unmined for 2 s was dropped\n"
        "[profit]\n"
        "landing_s = 1               # Anvil: the next block is a second later\n"
        "[recompute]\n"
        "enabled = true              # cross-check every round against the keeper's own recompute (cheap here)\n"
    )
    return cfg


def _fund_keeper(protocol: object, deployer: str) -> None:
    """Deposit USDC for the devnet keeper (it bids from its vault account)."""
    from eth_account import Account

    from offchain.chain.anvil import DEFAULT_KEYS
    from offchain.chain.client import Protocol

    assert isinstance(protocol, Protocol)
    key = DEFAULT_KEYS[KEEPER_DEV_KEY_INDEX]
    me = Account.from_key(key).address
    usdc = protocol.tokens["USDC"]
    protocol.send(usdc.functions.mint(me, KEEPER_DEV_FUNDING), deployer)
    protocol.send(usdc.functions.approve(protocol.vault.address, KEEPER_DEV_FUNDING), key)
    protocol.send(protocol.vault.functions.deposit(usdc.address, KEEPER_DEV_FUNDING, me), key)


@devnet_app.command("up")
def devnet_up(
    port: Annotated[int, typer.Option(help="Anvil port")] = 8545,
    engine_port: int = 8600,
    state_dir: Path = DEVNET_DIR,
    price_interval: float = 5.0,
    round_seconds: float = 10.0,
    keeper_port: Annotated[int, typer.Option(help="the keeper's /health and /metrics port")] = 9600,
    keeper: Annotated[bool, typer.Option(help="start a keeper (dev key, config in the state dir)")] = True,
) -> None:
    """Start Anvil, deploy, start the price service, the engine and a keeper; print how to reach each."""
    from offchain.chain.anvil import DEFAULT_KEYS, spawn_anvil_detached
    from offchain.chain.client import Deployment, connect
    from offchain.chain.deploy import abi_folder, write_deployment, write_deployment_abis
    from offchain.chain.devnet import bootstrap

    procs_file = state_dir / "processes.json"
    if procs_file.exists():
        raise InputError("devnet", f"already up ({procs_file}); run `pmsim devnet down` first")
    state_dir.mkdir(parents=True, exist_ok=True)
    _log_banner(state_dir / "anvil.log")
    pid, url = spawn_anvil_detached(state_dir / "anvil.log", port=port, state_path=state_dir / "anvil-state.json")
    procs = {"anvil": pid}
    try:
        w3 = connect(url)
        dep_path = state_dir / "deployment.json"
        if not dep_path.exists() or w3.eth.get_code(json.loads(dep_path.read_text())["contracts"]["Vault"]) == b"":
            dev = bootstrap(w3, DEFAULT_KEYS[0], rpc_url=url)
            _fund_keeper(dev.protocol, DEFAULT_KEYS[0])
            write_deployment(dev.protocol, dep_path)
        DEPLOYMENT.parent.mkdir(parents=True, exist_ok=True)
        DEPLOYMENT.write_text(dep_path.read_text())
        write_deployment_abis(Deployment.load(DEPLOYMENT), DEPLOYMENT)  # integrators' plain ABI files
        me = [sys.executable, "-m", "offchain.cli"]
        common = ["--deployment", str(dep_path), "--dev"]
        procs["prices"] = _spawn([*me, "prices", *common, "--interval", str(price_interval), "--relayer-key",
                                  DEFAULT_KEYS[9]], state_dir / "prices.log")  # fmt: skip
        procs["engine"] = _spawn([*me, "engine", *common, "--port", str(engine_port), "--round-seconds",
                                  str(round_seconds), "--state-dir", str(state_dir / "engine")],
                                 state_dir / "engine.log")  # fmt: skip
        if keeper:
            cfg = _keeper_config(state_dir, dep_path, url, engine_port, keeper_port)
            procs["keeper"] = _spawn([*me, "keeper", "--config", str(cfg)], state_dir / "keeper.log")
    except BaseException:
        _stop(procs)
        raise
    procs_file.write_text(json.dumps(procs))
    console.print(f"[bold]devnet up[/] (logs and state in {state_dir})")
    console.print(f"  chain     {url}  (chain id 31337; Anvil's default keys are funded)")
    console.print(f"  contracts {DEPLOYMENT}  (also {dep_path}; plain ABIs in {abi_folder(DEPLOYMENT)})")
    console.print(f"  engine    http://127.0.0.1:{engine_port}  (/health, /attest/trade, /liquidatable, /metrics)")
    console.print(f"  prices    posting every {price_interval:g}s (log {state_dir / 'prices.log'})")
    if keeper:
        console.print(f"  keeper    http://127.0.0.1:{keeper_port}  (/health, /metrics; config "
                      f"{state_dir / 'keeper.toml'}, log {state_dir / 'keeper.log'})")  # fmt: skip
    console.print("  tools     `pmsim faucet 0xADDRESS` (test tokens), `pmsim signers`, `pmsim decode-error 0x…`")
    console.print("  stop with `pmsim devnet down`")


@devnet_app.command("down")
def devnet_down(state_dir: Path = DEVNET_DIR) -> None:
    """Stop what `devnet up` started (Anvil dumps its state for the next `up`)."""
    procs_file = state_dir / "processes.json"
    if not procs_file.exists():
        console.print("devnet is not running")
        return
    procs = json.loads(procs_file.read_text())
    _stop(procs)
    procs_file.unlink()
    console.print("devnet down: " + ", ".join(procs))


def _spawn(cmd: list[str], log_path: Path) -> int:
    _log_banner(log_path)
    with log_path.open("a") as log:  # appended, so that a restart keeps the earlier runs' logs
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True).pid


def _log_banner(log_path: Path) -> None:
    """Mark the start of a run in a log that `devnet up` appends to."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with log_path.open("a") as log:
        log.write(f"==== pmsim devnet up {stamp} ====\n")


def _stop(procs: dict[str, int]) -> None:
    for name in ("keeper", "engine", "prices", "anvil"):
        pid = procs.get(name)
        if pid is None:
            continue
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
