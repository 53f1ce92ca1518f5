"""``pmsim margin``: portfolio margin of the accounts in a positions file (or the strategy table).

The command reads a positions file (JSON, or CSV with ``--now/--spot/--vol``; formats in
:mod:`offchain.risk.positions_file`), computes every account with the risk engine and prints a
report: rich tables by default, JSON with ``--json``. Bad input prints one line naming the field
at fault and exits with code 2.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from offchain.errors import InputError, PmsimError
from offchain.risk.config import RiskConfig, load_config
from offchain.risk.engine import MarginEngine
from offchain.risk.liquidation import LiquidationLevels
from offchain.risk.positions_file import MarketFlags, load_positions
from offchain.risk.report import AccountReport, BookReport, build_report, report_to_dict
from offchain.risk.strategies import strategy_markdown, strategy_rows

margin_app = typer.Typer(add_completion=False, help=__doc__)


def _pairs(values: list[str] | None, option: str) -> dict[str, float]:
    """``["BTC=60000", ...]`` as ``{"BTC": 60000.0}``; anything else is an error naming ``option``."""
    out: dict[str, float] = {}
    for item in values or []:
        symbol, _, number = item.partition("=")
        try:
            value = float(number)
        except ValueError:
            raise InputError(option, f"expected SYMBOL=NUMBER, got {item!r}") from None
        if not symbol.strip():
            raise InputError(option, f"expected SYMBOL=NUMBER, got {item!r}")
        out[symbol.strip()] = value
    return out


def _money(x: float) -> str:
    return f"{x:,.0f}"


def _liquidation(account: AccountReport, levels: LiquidationLevels | None) -> tuple[str, str]:
    if levels is None:
        return "n/a", "n/a"
    if account.margin_ratio is not None and account.margin_ratio < 1.0:
        return "now", "now"
    return _level(levels.down), _level(levels.up)


def _level(value: float | None) -> str:
    return "-" if value is None else _money(value)


def _margin_table(report: BookReport) -> Table:
    table = Table(title=f"Portfolio margin, round {report.round_id} (USD)")
    for name in ("Account", "Margin equity", "MTM equity", "IM", "MM", "Equity/MM", "Standard", "Saving", "Offset"):
        table.add_column(name, justify="left" if name == "Account" else "right")
    for acc in report.accounts:
        m = acc.margin
        ratio = "-" if acc.margin_ratio is None else f"{acc.margin_ratio:.2f}"
        figures = (m.margin_equity, m.mtm_equity, m.im, m.mm)
        table.add_row(
            acc.account,
            *(_money(x) for x in figures),
            ratio,
            *(_money(x) for x in (m.standard_margin, acc.saving_vs_standard, m.offset_credit)),
        )
    t = report.totals
    table.add_section()
    table.add_row(
        "book",
        *(_money(t[k]) for k in ("margin_equity", "mtm_equity", "im", "mm")),
        "",
        *(_money(t[k]) for k in ("standard_margin", "saving_vs_standard", "offset_credit")),
    )
    return table


def _risk_table(report: BookReport) -> Table:
    table = Table(title="Net Greeks and liquidation prices (other spots fixed)")
    for name in ("Account", "Underlying", "Delta", "Gamma", "Vega/vol pt", "Theta/day", "Liq. below", "Liq. above"):
        table.add_column(name, justify="left" if name in ("Account", "Underlying") else "right")
    for acc in report.accounts:
        for u in acc.underlyings:
            greeks = (f"{u.delta:,.4f}", f"{u.gamma:.3g}", f"{u.vega:,.2f}", f"{u.theta:,.2f}")
            table.add_row(acc.account, u.symbol, *greeks, *_liquidation(acc, u.liquidation))
    return table


def _print(report: BookReport) -> None:
    console = Console()
    console.print(_margin_table(report))
    console.print(_risk_table(report))
    console.print(f"{report.liquidatable} account(s) below MM, {report.below_im} below IM. Worst scenarios:")
    for acc in report.accounts:
        console.print(f"  {acc.account}: {acc.worst_scenario}")
    console.print(f"config hash {report.config_hash}, price round {report.round_id}, chain time {report.now}")


def _chain_report(cfg: RiskConfig, accounts: list[str], deployment: Path, rpc: str | None,
                  liquidation: bool) -> BookReport:  # fmt: skip
    """The report of devnet accounts: the chain's state rebuilt from events, the engine's book."""
    from eth_utils import is_address, to_checksum_address

    from offchain.chain.client import Deployment, Protocol, connect
    from offchain.chain.indexer import Indexer
    from offchain.engine.core import EngineCore

    dep = Deployment.load(deployment)
    indexer = Indexer(Protocol(connect(rpc or dep.rpc_url), dep))
    indexer.sync()
    state = indexer.state
    if state.engine_config_hash != cfg.canonical_hash():
        typer.echo("note: the chain binds another configuration; these figures differ from attested ones", err=True)
    if accounts == ["all"]:
        ids = None
    else:
        bad = [a for a in accounts if not is_address(a)]
        if bad:
            raise InputError("account", f"not an address: {bad[0]!r}")
        ids = [str(to_checksum_address(a)) for a in accounts]
    core = EngineCore(cfg, dep)
    addresses, book = core.book(state, ids)
    return build_report(core.engine(state), book, addresses, liquidation=liquidation)


@margin_app.command()
def margin(
    positions_file: Annotated[
        Path | None, typer.Argument(help="positions file: .json, or .csv with --now/--spot/--vol")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    config: Annotated[Path | None, typer.Option("--config", help="risk configuration (TOML)")] = None,
    strategies: Annotated[
        bool, typer.Option("--strategies", help="print the classic-strategy savings table (markdown)")
    ] = False,
    liquidation: Annotated[
        bool, typer.Option("--liquidation/--no-liquidation", help="search liquidation prices")
    ] = True,
    now: Annotated[int | None, typer.Option(help="CSV only: chain time, unix seconds")] = None,
    round_id: Annotated[int, typer.Option("--round", help="CSV only: price round id")] = 0,
    spot: Annotated[list[str] | None, typer.Option(help="CSV only: SYMBOL=PRICE, once per underlying")] = None,
    vol: Annotated[list[str] | None, typer.Option(help="CSV only: SYMBOL=VOL flat implied vol")] = None,
    account: Annotated[
        list[str] | None, typer.Option(help="devnet mode: an account address (repeat), or 'all' indexed accounts")
    ] = None,
    deployment: Annotated[Path, typer.Option(help="devnet mode: deployment file")] = Path("deployments/local.json"),
    rpc: Annotated[str | None, typer.Option(help="devnet mode: RPC URL (default: the deployment's)")] = None,
) -> None:
    """Compute IM, MM and equities of every account in POSITIONS_FILE (or of devnet accounts,
    rebuilt from the chain's events at the latest block) and print a report."""
    try:
        cfg = load_config(config)
        if strategies:
            rows = strategy_rows(cfg)
            table = [dataclasses.asdict(r) | {"saving": r.saving} for r in rows]
            typer.echo(json.dumps(table, indent=2) if as_json else strategy_markdown(rows))
            return
        if account:
            report = _chain_report(cfg, account, deployment, rpc, liquidation)
        else:
            if positions_file is None:
                raise InputError("POSITIONS_FILE", "missing (or pass --account, or --strategies)")
            flags = MarketFlags(now, round_id, _pairs(spot, "--spot"), _pairs(vol, "--vol"))
            data = load_positions(positions_file, cfg, flags)
            engine = MarginEngine(cfg, data.instruments, data.market)
            report = build_report(engine, data.book, data.account_ids, liquidation=liquidation)
    except PmsimError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(report_to_dict(report), indent=2))
        return
    _print(report)
