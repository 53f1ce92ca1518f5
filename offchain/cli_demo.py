"""``pmsim demo``: the devnet run end to end, as tables and a JSON report."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console(width=None if sys.stdout.isatty() else 140)
SHORT_END = {"back above the buffer margin": "ended: above buffer", "emptied": "ended: emptied",
             "healthy on a newer result": "ended: healthy"}  # fmt: skip


def demo(
    seed: Annotated[int, typer.Option(help="seed of the synthetic market before the crash")] = 7,
    report: Annotated[Path | None, typer.Option(help="where to write the JSON report")] = None,
) -> None:
    """Deploy to a fresh Anvil, trade under engine attestations, replay the 2020-03-12 crash with a root
    every hour, liquidate with the keeper what falls below maintenance margin, and report (liquidations, insurance fund,
    bad debt, socialised loss)."""
    from offchain.sim.demo import STEPS, run_demo, write_report

    with progress_display("demo", STEPS, "starting Anvil, compiling and deploying") as step:
        run = run_demo(seed, progress=step)
    report_doc = run.report()
    show(report_doc)
    path = write_report(run, report or Path(f"reports/demo-seed{seed}.json"))
    console.print(f"report: {path}")
    c, losses = report_doc["conservation"], report_doc["losses"]
    if not c["holds"] or not losses["bad_debt_equals_draws_plus_socialised"]:
        raise typer.Exit(1)


def show(report_doc: dict[str, Any]) -> None:
    """Print the demo's report (``DemoRun.report()``, or its JSON file read back): every figure labelled,
    money in USD."""
    from offchain.sim.report import fmt_usd

    _phases(report_doc)
    _rounds(report_doc)
    _liquidations(report_doc)
    _fund(report_doc)
    _gas(report_doc)
    c, losses = report_doc["conservation"], report_doc["losses"]
    dust = c["rounding_dust_units"]
    books = "Σ cash − Σ cost basis − Σ unsettled funding"
    verdict = "holds" if c["holds"] else "BROKEN"
    if dust == 0:
        console.print(f"conservation (I-1): USDC held by the vault {fmt_usd(c['vault_usdc_usd'])} = {books}, to the "
                      f"quote unit: {verdict}", highlight=False)  # fmt: skip
    else:
        console.print(f"conservation (I-1b): USDC held by the vault {fmt_usd(c['vault_usdc_usd'])}; {books} is "
                      f"{dust:,} quote unit(s) ({fmt_usd(c['rounding_dust_usd'], 6)}) less, loss-charge rounding dust "
                      f"the vault keeps: {verdict}", highlight=False)  # fmt: skip
    waterfall = "holds" if losses["bad_debt_equals_draws_plus_socialised"] else "BROKEN"
    console.print(f"bad debt {fmt_usd(losses['bad_debt_usd'])} = insurance fund draws "
                  f"{fmt_usd(losses['fund_draws_usd'])} + socialised loss {fmt_usd(losses['socialised_usd'])} + "
                  f"unrecovered {fmt_usd(losses['unrecovered_usd'])}: {waterfall}", highlight=False)  # fmt: skip
    console.print(f"why: {losses['explanation']}")


@contextmanager
def progress_display(name: str, total: int, first: str) -> Iterator[Callable[[str], None]]:
    """A progress display for ``total`` labelled steps; yields the function to call after each one.

    On a terminal, a bar with the step count, the last step's label and the elapsed time; otherwise
    (a pipe, a log, CI) one line per step with the same figures, so a long run is never silent.
    """
    if console.is_terminal:
        with Progress(TextColumn(f"[bold]{name}[/]"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as bar:  # fmt: skip
            task = bar.add_task(first, total=total)
            yield lambda label: bar.update(task, advance=1, description=label)
        return
    start, done = time.monotonic(), 0
    console.print(f"{name}: {first} ...", highlight=False)

    def step(label: str) -> None:
        nonlocal done
        done += 1
        console.print(f"{name} [{done}/{total}, {time.monotonic() - start:5.1f} s] {label}", highlight=False)

    yield step


def _gas(doc: dict[str, Any]) -> None:
    """Gas per transaction of each kind mined in this run (the README's gas table measures the same)."""
    table = Table(title="gas per transaction (this run; mean over the transactions of each kind)")
    for col in ("transaction", "count", "gas per transaction", "range", "total gas"):
        table.add_column(col, justify="left" if col == "transaction" else "right")
    from offchain.sim.demo import GAS_OPERATIONS

    order = list(GAS_OPERATIONS)
    for _op, row in sorted(doc["gas"].items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order),
                                                                kv[0])):  # fmt: skip
        spread = f"{row['min']:,} – {row['max']:,}" if row["min"] != row["max"] else "-"
        table.add_row(row["operation"], f"{row['transactions']:,}", f"{row['gas_per_transaction']:,}", spread,
                      f"{row['total']:,}")  # fmt: skip
    console.print(table)


def _phases(doc: dict[str, Any]) -> None:
    roles = doc["roles"]
    for phase in doc["phases"]:
        spot = ", ".join(f"{x:,.0f}" for x in phase["spot"])
        table = Table(title=f"{phase['label']} (BTC, ETH = {spot} USD)")
        for col in ("account", "role", "cash USD", "positions", "margin equity", "IM", "MM", "standard", "status"):
            table.add_column(col, justify="left" if col in ("account", "role", "status") else "right")
        for name, row in phase["accounts"].items():
            table.add_row(name, roles[name], f"{row['cash_usd']:,.2f}", str(row["positions"]),
                          f"{row['margin_equity']:,.2f}", f"{row['im']:,.2f}", f"{row['mm']:,.2f}",
                          f"{row['standard_margin']:,.2f}", row["status"])  # fmt: skip
        console.print(table)


def _rounds(doc: dict[str, Any]) -> None:
    """Rounds worth a line: the first, the last, and every one with an account below MM."""
    rounds = doc["rounds"]
    shown = [r for i, r in enumerate(rounds) if i in (0, len(rounds) - 1) or r["below_mm"]]
    table = Table(title=f"engine rounds (status roots posted on chain: {len(rounds)}, one per hourly step; "
                        "those with an account below MM shown)")  # fmt: skip
    for col in ("round", "when", "price round", "BTC USD", "ETH USD", "accounts", "below MM"):
        table.add_column(col)
    for r in shown:
        table.add_row(str(r["round"]), r["label"], str(r["price_round"]), f"{r['spot'][0]:,.0f}",
                      f"{r['spot'][1]:,.0f}", str(r["accounts"]), ", ".join(r["below_mm"]) or "-")  # fmt: skip
    console.print(table)


def _liquidations(doc: dict[str, Any]) -> None:
    starts = Table(title="auctions started by the keeper (erin, `pmsim keeper` in-process; verified root leaves)")
    for col in ("when", "chain time", "account", "kind", "mark-to-market USD", "margin equity USD", "MM USD"):
        starts.add_column(col, justify="right" if "USD" in col else "left")
    for a in doc["auctions"]:
        kind = "insolvent" if a["insolvent"] else "solvent"
        starts.add_row(a["label"], a["chain_time"], a["account"], kind, f"{a['mtm_equity_usd']:,.2f}",
                       f"{a['margin_equity_usd']:,.2f}", f"{a['mm_usd']:,.2f}")  # fmt: skip
    console.print(starts)
    table = Table(title="liquidations (Liquidator Bid events; the keeper's profit after fee, modelled unwind and gas; "
                        "breach = the root that showed it; chain time: day of 2026-01, UTC)")  # fmt: skip
    for col in ("chain time", "account", "fraction", "price USD", "discount", "fee USD", "fund draw USD",
                "socialised USD", "keeper profit USD", "breach→bid", "auction"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("chain time", "account", "auction") else "right")
    for r in doc["liquidations"]:
        discount = f"{r['discount']:.4%}" if r["price_usd"] >= 0 else "-"  # an insolvent auction: the fund pays
        when = r["chain_time"][8:16].replace("T", " ")
        table.add_row(when, r["account"], f"{r['fraction']:.4%}", f"{r['price_usd']:,.2f}", discount,
                      f"{r['fee_usd']:,.2f}", f"{r['fund_draw_usd']:,.2f}", f"{r['socialised_usd']:,.2f}",
                      f"{r['keeper_profit_usd']:,.2f}", f"{r['breach_to_bid_s']} s, {r['breach_to_bid_blocks']} blk",
                      SHORT_END.get(r["ended"], r["ended"]) or "goes on")  # fmt: skip
    console.print(table)


def _fund(doc: dict[str, Any]) -> None:
    """The insurance fund's balance whenever it changed (and at the start and the end)."""
    points = doc["insurance_fund"]
    shown = [p for i, p in enumerate(points)
             if i in (0, len(points) - 1) or p["balance_usd"] != points[i - 1]["balance_usd"]]  # fmt: skip
    table = Table(title="insurance fund balance over time (changes only)")
    for col in ("chain time", "after", "balance USD"):
        table.add_column(col, justify="right" if "USD" in col else "left")
    for p in shown:
        table.add_row(p["chain_time"], p["label"], f"{p['balance_usd']:,.2f}")
    console.print(table)
