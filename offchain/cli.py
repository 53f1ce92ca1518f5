"""``pmsim``: one command for deployment, the devnet, the risk engine and the simulator."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from offchain.errors import PmsimError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__,
                  context_settings={"help_option_names": ["-h", "--help"]})  # fmt: skip
console = Console()
err_console = Console(stderr=True)

DEFAULT_DEPLOYMENT = Path("deployments/local.json")


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a one-line error and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def _version(show: bool) -> None:
    if show:
        from offchain import __version__
        from offchain.chain.build import SOLC_VERSION

        console.print(f"pmsim {__version__} (contracts compiled with solc {SOLC_VERSION})", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", "-V", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """pmsim: one command for deployment, the devnet, the risk engine and the simulator."""


@app.command()
def deploy(
    rpc: Annotated[str, typer.Option(help="RPC URL of a running chain")] = "http://127.0.0.1:8545",
    key: Annotated[
        str | None, typer.Option(help="deployer private key (default: Anvil account 0)", envvar="PMSIM_DEPLOYER_KEY")
    ] = None,
    out: Annotated[Path, typer.Option(help="deployment file to write")] = DEFAULT_DEPLOYMENT,
    timelock_delay: Annotated[
        int, typer.Option(help="seconds every admin change waits in the timelock (docs/governance.md)")
    ] = 2 * 86_400,
    admin: Annotated[
        str | None, typer.Option(help="timelock proposer, executor and canceller (default: the deployer)")
    ] = None,
    guardian: Annotated[
        str | None, typer.Option(help="pauses and tightens at once, may cancel (default: the deployer)")
    ] = None,
) -> None:
    """Deploy the protocol with mock tokens, default instruments and a first price round, every admin
    power behind a TimelockController."""
    from eth_utils import is_address

    from offchain.chain.anvil import DEFAULT_KEYS
    from offchain.chain.client import connect
    from offchain.chain.deploy import TimelockConfig, abi_folder, write_deployment
    from offchain.chain.devnet import bootstrap

    if timelock_delay < 0:
        raise fail("timelock_delay: must not be negative")
    for field, value in (("admin", admin), ("guardian", guardian)):
        if value is not None and (not is_address(value) or int(value, 16) == 0):
            raise fail(f"{field}: not a non-zero address: {value!r}")
    try:
        dev = bootstrap(connect(rpc), key or DEFAULT_KEYS[0], rpc_url=rpc, guardian=guardian,
                        timelock=TimelockConfig(min_delay=timelock_delay, admin=admin))  # fmt: skip
    except PmsimError as exc:
        raise fail(str(exc)) from None
    write_deployment(dev.protocol, out)
    console.print(f"deployed to {rpc} (chain {dev.protocol.chain_id}); wrote {out} and ABIs in {abi_folder(out)}")
    for name, address in dev.protocol.deployment.contracts.items():
        console.print(f"  {name:12s} {address}")
    console.print(f"every owner role is the TimelockController's (delay {timelock_delay}s): `pmsim admin --help`")


def _mount_tools() -> None:
    """Integrator tools (offchain/cli_tools.py)."""
    from offchain import cli_tools

    app.command("decode-error")(cli_tools.decode_error)
    app.command("faucet")(cli_tools.faucet)
    app.command("signers")(cli_tools.signers)


_mount_tools()


def _mount_subcommands() -> None:
    """Mount the command groups that live beside their subsystems."""
    from offchain import cli_demo

    app.command("demo")(cli_demo.demo)
    from offchain import cli_services

    app.command("engine")(cli_services.engine)
    app.command("signer")(cli_services.signer)
    app.command("prices")(cli_services.prices)
    app.add_typer(cli_services.devnet_app, name="devnet")
    from offchain import cli_margin  # the risk engine's report command

    app.command("margin")(cli_margin.margin)
    from offchain import cli_backtest, cli_optimize  # model validation, the margin optimiser

    app.command("backtest")(cli_backtest.backtest)
    app.command("optimize")(cli_optimize.optimize)
    from offchain.cli_liquidate import liquidate_app  # liquidation auctions by hand

    app.add_typer(liquidate_app, name="liquidate")
    from offchain import cli_keeper

    app.add_typer(cli_keeper.keeper_app, name="keeper")
    from offchain.cli_admin import admin_app  # governance: changes through the timelock

    app.add_typer(admin_app, name="admin")
    from offchain.cli_sim import sim_app  # the simulator: runs, run folders, reports

    app.add_typer(sim_app, name="sim")


_mount_subcommands()


def main() -> None:
    """Console-script entry point: typed errors become one-line messages, never tracebacks."""
    try:
        app()
    except PmsimError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()
