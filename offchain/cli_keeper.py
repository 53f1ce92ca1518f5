"""``pmsim keeper``: the liquidation keeper as its own process, and ``pmsim keeper replay``: the
2020-03-12 crash replayed on Anvil against leveraged accounts (see the README's keeper section)."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from offchain.errors import PmsimError

keeper_app = typer.Typer(help="The liquidation keeper (run it with options; `replay` for the crash replay).",
                         context_settings={"help_option_names": ["-h", "--help"]})  # fmt: skip


@keeper_app.callback(invoke_without_command=True)
def keeper(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(help="TOML configuration (e.g. config/keeper.toml)")] = None,
    rpc: Annotated[str | None, typer.Option(help="RPC URL (overrides rpc_url)")] = None,
    deployment: Annotated[Path | None, typer.Option(help="deployment file (overrides deployment)")] = None,
    engine: Annotated[str | None, typer.Option(help="engine URL for rounds and bid attestations")] = None,
    rounds_dir: Annotated[Path | None, typer.Option(help="read published rounds from this directory")] = None,
    key_file: Annotated[Path | None, typer.Option(help="file holding the keeper's private key")] = None,
    key_env: Annotated[str | None, typer.Option(help="environment variable holding the key")] = None,
    state_file: Annotated[Path | None, typer.Option(help="pending-transaction state (JSON)")] = None,
    max_fee_gwei: Annotated[float | None, typer.Option(help="cap on maxFeePerGas")] = None,
    replace_after: Annotated[float | None, typer.Option(help="seconds before a stuck tx is replaced")] = None,
    health_port: Annotated[int | None, typer.Option(help="port of /health and /metrics (0: any free port)")] = None,
    poll: Annotated[float | None, typer.Option(help="seconds between steps")] = None,
    recompute: Annotated[bool, typer.Option("--recompute", help="cross-check each root by recomputing margins "
                                            "from chain events (recompute.enabled)")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="decide and log, send nothing")] = False,
    once: Annotated[bool, typer.Option("--once", help="one step, then exit (0 if it succeeded)")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logs")] = False,
) -> None:
    """Run the liquidation keeper: verified candidates from the latest root, auctions, timed bids."""
    if ctx.invoked_subcommand is not None:
        return
    from offchain.cli import fail
    from offchain.keeper.metrics import configure_json_logging

    configure_json_logging(logging.DEBUG if verbose else logging.INFO)
    overrides: dict[str, Any] = {
        "rpc_url": rpc, "deployment": deployment, "engine_url": engine, "rounds_dir": rounds_dir,
        "key_file": key_file, "key_env": key_env, "state_file": state_file, "fees.max_fee_gwei": max_fee_gwei,
        "fees.replace_after_s": replace_after, "health_port": health_port, "poll_interval_s": poll,
        "dry_run": True if dry_run else None, "recompute.enabled": True if recompute else None,
    }  # fmt: skip
    try:
        code = _run(config, overrides, once)
    except PmsimError as exc:
        raise fail(str(exc)) from None
    raise typer.Exit(code)


def _run(config: Path | None, overrides: dict[str, Any], once: bool) -> int:
    from offchain.chain.client import Deployment, Protocol, connect
    from offchain.keeper.attest import Attestor, HttpAttestor, NoAttestor
    from offchain.keeper.bot import Keeper
    from offchain.keeper.config import load_config
    from offchain.keeper.server import serve_health

    log = logging.getLogger("offchain.keeper")
    cfg = load_config(config, overrides)
    key = cfg.load_key()
    protocol = Protocol(connect(cfg.rpc_url), Deployment.load(cfg.deployment))
    attestor: Attestor = HttpAttestor(cfg.engine_url) if cfg.engine_url else NoAttestor()
    bot = Keeper(protocol, key, cfg, attestor)
    if once:
        return 0 if bot.safe_step() else 1
    server = serve_health(bot.health, bot.metrics.registry, cfg.health_host, cfg.health_port) \
        if cfg.health_port is not None else None  # fmt: skip
    if server is not None:
        log.info("health endpoint", extra={"fields": {"url": f"http://{cfg.health_host}:{server.server_address[1]}"}})
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())  # finish the current step, then exit
    try:
        bot.run(stop)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    return 0


@keeper_app.command("replay")
def replay(
    full: Annotated[bool, typer.Option("--full", help="36 hours, 10 accounts (default: 12 hours, 5)")] = False,
    report: Annotated[Path | None, typer.Option(help="where to write the JSON report")] = None,
) -> None:
    """Replay the 2020-03-12 crash hour by hour on a fresh Anvil against leveraged perp longs; the keeper
    liquidates what each root shows below MM; report which accounts were saved, and why not the others."""
    from rich.console import Console
    from rich.table import Table

    from offchain.sim.replay import run_replay, write_report

    console = Console()
    with console.status("replaying 2020-03-12 on Anvil") as status:
        run = run_replay(full=full, progress=lambda label: status.update(label))
    doc = run.report()
    table = Table(title=f"2020-03-12 replay from {doc['window']['from']}, {doc['window']['hours']} hourly steps "
                        "(moves rescaled to the devnet's spot)")  # fmt: skip
    for col in ("account", "long", "leverage", "first breach", "auctions", "bids", "bad debt USD", "status", "why"):
        table.add_column(col, justify="right" if col in ("leverage", "auctions", "bids", "bad debt USD") else "left",
                         overflow="fold")  # fmt: skip
    for r in doc["accounts"]:
        table.add_row(r["account"], r["underlying"], f"{r['leverage']:g}x", r["first_breach"] or "-",
                      str(r["auctions"]), str(r["bids"]), f"{r['bad_debt_usd']:,.2f}", r["status"],
                      r["reason"])  # fmt: skip
    console.print(table)
    s = doc["summary"]
    console.print(f"{s['accounts']} accounts: {s['breached']} breached MM, {s['saved']} saved, {s['not saved (gap)']} "
                  f"not saved (price gapped from above MM to insolvent within one hourly step), {s['missed']} missed; "
                  f"bad debt {s['bad_debt_usd']:,.2f} USD; keeper: {s['keeper_bids']} bids, profit "
                  f"{s['keeper_profit_usd']:,.2f} USD, first bid at most {s['first_bid_after_breach_s_max']} s "
                  f"({s['first_bid_after_breach_blocks_max']} blocks) after the root that showed it")  # fmt: skip
    path = write_report(run, report or Path(f"reports/keeper-replay-{'full' if full else 'short'}.json"))
    console.print(f"report: {path}")
    if s["missed"]:
        raise typer.Exit(1)
