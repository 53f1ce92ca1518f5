"""``pmsim demo``: the devnet run end to end, as tables and a JSON report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

console = Console(width=None if sys.stdout.isatty() else 140)


def demo(
    seed: Annotated[int, typer.Option(help="seed of the synthetic market before the crash")] = 7,
    report: Annotated[Path | None, typer.Option(help="where to write the JSON report")] = None,
) -> None:
    """Deploy to a fresh Anvil, trade under engine attestations, replay a crash, attest and report."""
    from offchain.sim.demo import ROLES, run_demo, write_report

    with console.status("running the devnet scenario (deploy, fund, trade, crash, attest)..."):
        run = run_demo(seed)
    for phase in run.phases:
        spot = ", ".join(f"{x:,.0f}" for x in phase["spot"])
        table = Table(title=f"{phase['label']} (BTC, ETH = {spot})")
        for col in ("account", "role", "cash", "positions", "margin equity", "IM", "MM", "standard", "status"):
            table.add_column(col, justify="left" if col in ("account", "role", "status") else "right")
        for name, row in phase["accounts"].items():
            table.add_row(name, ROLES[name], f"{row['cash_usd']:,.2f}", str(row["positions"]),
                          f"{row['margin_equity']:,.2f}", f"{row['im']:,.2f}", f"{row['mm']:,.2f}",
                          f"{row['standard_margin']:,.2f}", row["status"])  # fmt: skip
        console.print(table)
    rounds = Table(title="engine rounds (status roots posted on chain)")
    for col in ("round", "when", "price round", "BTC", "ETH", "accounts", "below MM"):
        rounds.add_column(col)
    for r in run.rounds:
        rounds.add_row(str(r["round"]), r["label"], str(r["price_round"]), f"{r['spot'][0]:,.0f}",
                       f"{r['spot'][1]:,.0f}", str(r["accounts"]), ", ".join(r["below_mm"]) or "-")  # fmt: skip
    console.print(rounds)
    c = run.conservation
    console.print(f"conservation (I-1): vault USDC {c['vault_usdc']:,} = Σ cash − Σ cost basis "
                  f"{c['sum_cash_minus_cost_basis']:,}: {'holds' if c['holds'] else 'BROKEN'}")  # fmt: skip
    console.print("gas: " + ", ".join(f"{k} {v:,}" for k, v in sorted(run.gas.items())))
    below = sorted({n for r in run.rounds for n in r["below_mm"]})
    console.print(f"accounts that fell below maintenance margin: {', '.join(below) or 'none'} "
                  "(the Liquidator's Dutch auctions act on these; see the issues)")  # fmt: skip
    path = write_report(run, report or Path(f"reports/demo-seed{seed}.json"))
    console.print(f"report: {path}")
    if not c["holds"]:
        raise typer.Exit(1)
