"""``pmsim demo``: the shipped scenario ``demo`` run on the chain backend, as tables, a run folder and
its report."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from offchain.errors import InputError, PmsimError

if TYPE_CHECKING:
    from offchain.sim.demo import DemoResult

console = Console(width=None if sys.stdout.isatty() else 140)


def demo(
    seed: Annotated[int | None, typer.Option(help="seed of the agents' accounts and draws (default: the "
                                                  "scenario's, 7)")] = None,
    out: Annotated[Path | None, typer.Option(help="run folder to write (default: runs/demo-seedSEED-chain)")] = None,
) -> None:
    """Run the shipped scenario ``demo`` (scenarios/demo.toml) on the chain backend: deploy to a fresh
    Anvil, fund, trade under the engine's attestations, replay the 2020-03-12 crash with a status root
    every hour, liquidate with the keepers what falls below maintenance margin, and report
    (liquidations, insurance fund, bad debt, socialised loss, gas per transaction, conservation).
    Exits 1 if conservation or the loss waterfall is broken, or the chain disagrees with the record."""
    from offchain.cli_sim import find_scenario, summary_table, with_seed
    from offchain.sim.demo import CHECK_STEPS, SETUP_STEPS, run_demo
    from offchain.sim.report import write_report
    from offchain.sim.runner import default_folder
    from offchain.sim.scenario import load_scenario

    try:
        sc = with_seed(load_scenario(find_scenario("demo")), seed)
        folder = out or default_folder(sc, "chain")
        if folder.exists() and not folder.is_dir():
            raise InputError("out", f"{folder} exists and is not a folder")
        title = f"demo, chain backend, seed {sc.run.seed}"
        total = SETUP_STEPS + sc.run.steps + CHECK_STEPS
        with progress_display("demo", total, f"{title}: compiling the contracts (cached after the first run)") as step:
            result = run_demo(sc, folder, progress=lambda label: step(f"{title}: {label}"))
    except PmsimError as exc:
        from offchain.cli import fail

        raise fail(str(exc)) from None
    console.print(summary_table(result.record))
    show(result)
    console.print(f"run folder: {folder}", highlight=False)
    console.print(f"report: {write_report(folder)}", highlight=False)
    if not result.ok:
        raise typer.Exit(1)


def show(result: DemoResult) -> None:
    """Print what the chain says beyond the summary: the auctions and bids, the loss waterfall, gas per
    transaction of each kind and conservation; every figure labelled, money in USD."""
    _liquidations(result)
    _gas(result)
    _checks(result)


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


def _time(timestamp: int, short: bool = False) -> str:
    """Chain time to the second, UTC (a step's blocks are seconds apart); ``short``: without the year."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%b %d %H:%M:%S" if short else "%Y-%m-%d %H:%M:%S")


def _name(result: DemoResult, address: str) -> str:
    """The agent's population and number (its address is in the run folder's liquidations.json)."""
    return result.names.get(address) or address


#: The Liquidator's reasons for ending an auction, short.
SHORT_END = {"back above the buffer margin": "above buffer", "emptied": "emptied",
             "healthy on a newer result": "healthy"}  # fmt: skip


def _liquidations(result: DemoResult) -> None:
    """The Liquidator's auctions and bids (its events), accounts named by their population."""
    from offchain.sim.metrics import fraction, money
    from offchain.sim.report import fmt_pct, fmt_usd

    chain = result.chain
    assert chain is not None
    starts = Table(title="auctions started by the keepers (Liquidator AuctionStarted events; money in USD)")
    for col in ("chain time (UTC)", "account", "kind", "mark-to-market", "margin equity", "MM"):
        starts.add_column(col, justify="right" if col in ("mark-to-market", "margin equity", "MM") else "left")
    for a in chain.auctions:
        starts.add_row(_time(a.time), _name(result, a.account), "insolvent" if a.insolvent else "solvent",
                       fmt_usd(money(a.mtm_equity), unit=False), fmt_usd(money(a.equity), unit=False),
                       fmt_usd(money(a.maintenance_margin), unit=False))  # fmt: skip
    console.print(starts)
    table = Table(title="liquidation bids (Liquidator Bid events; money in USD; price: what the keeper paid, "
                        "negative when the fund paid it; d(t): the share of the value paid)")  # fmt: skip
    text = ("chain time (UTC)", "account", "keeper", "auction ended")
    for col in ("chain time (UTC)", "account", "keeper", "fraction", "price", "d(t)", "fee", "fund draw",
                "socialised", "auction ended"):  # fmt: skip
        table.add_column(col, justify="left" if col in text else "right")
    for b, t in zip(chain.bids, chain.bid_times, strict=True):
        table.add_row(_time(t, short=True), _name(result, b.account), _name(result, b.bidder),
                      fmt_pct(fraction(b.fraction)),
                      fmt_usd(money(b.price), unit=False), fmt_pct(fraction(b.discount)) if b.price >= 0 else "-",
                      fmt_usd(money(b.fee), unit=False), fmt_usd(money(b.fund_draw), unit=False),
                      fmt_usd(money(b.socialised), unit=False),
                      SHORT_END.get(b.ended, b.ended) if b.ended else "no: goes on")  # fmt: skip
    console.print(table)


def _gas(result: DemoResult) -> None:
    """Gas per transaction of each kind mined by the simulator (read from the blocks' receipts)."""
    table = Table(title="gas per transaction of each kind (this run's receipts; mean over the successful ones)")
    for col in ("transaction", "call", "count", "gas per transaction", "range", "total gas", "reverted"):
        table.add_column(col, justify="left" if col in ("transaction", "call") else "right")
    for g in result.gas:
        spread = f"{g.min:,} – {g.max:,}" if g.min != g.max else "-"
        table.add_row(g.operation, g.call, f"{g.transactions:,}", f"{g.gas_per_transaction:,}", spread,
                      f"{g.total:,}", f"{g.reverted:,}")  # fmt: skip
    console.print(table)


def _checks(result: DemoResult) -> None:
    """The loss waterfall, the record against the chain, conservation: each with its verdict."""
    from offchain.sim.metrics import money
    from offchain.sim.report import fmt_usd

    chain, c = result.chain, result.conservation
    assert chain is not None and c is not None
    summary = result.record.summary
    verdict = "holds" if chain.waterfall_holds else "BROKEN"
    console.print(f"insurance fund: {fmt_usd(summary.get('fund_start_usd', 0))} at the start, "
                  f"{fmt_usd(summary.get('fund_end_usd', 0))} at the end (liquidation fees "
                  f"{fmt_usd(money(chain.fees))} in)", highlight=False)  # fmt: skip
    console.print(f"bad debt {fmt_usd(money(chain.bad_debt))} = insurance fund draws {fmt_usd(money(chain.fund_draws))}"
                  f" + socialised loss {fmt_usd(money(chain.socialised))} + unrecovered "
                  f"{fmt_usd(money(chain.unrecovered))}: {verdict}", highlight=False)  # fmt: skip
    if chain.mismatches:
        console.print(f"the runner's record and the Liquidator's events DIFFER: {'; '.join(chain.mismatches[:5])}",
                      highlight=False)  # fmt: skip
    else:
        console.print(f"the runner's record and the Liquidator's events agree on all {len(chain.bids):,} bids "
                      "(account, keeper, time, fraction, price, fee, fund draw, socialised loss)",
                      highlight=False)  # fmt: skip
    books = "Σ cash − Σ cost basis − Σ unsettled funding"
    held = fmt_usd(money(c.vault_usdc))
    if c.dust == 0:
        console.print(f"conservation (I-1): USDC held by the vault {held} = {books}, to the quote unit: "
                      f"{'holds' if c.holds else 'BROKEN'}", highlight=False)  # fmt: skip
    else:
        rule = (f"at most one quote unit per account ({c.accounts:,}) once a loss is socialised, I-1b" if
                c.loss_socialised else "none allowed while no loss is socialised")  # fmt: skip
        console.print(f"conservation (I-1): USDC held by the vault {held}; {books} is {c.dust:,} quote unit(s) "
                      f"({fmt_usd(money(c.dust), 6)}) less, loss-charge rounding dust the vault keeps ({rule}): "
                      f"{'holds' if c.holds else 'BROKEN'}", highlight=False)  # fmt: skip
    for sym, (vault, accounts) in c.collateral.items():
        ok = "holds" if vault == accounts else "BROKEN"
        console.print(f"conservation ({sym}): held by the vault = Σ accounts' {sym} balances, to the token unit: "
                      f"{ok}", highlight=False)  # fmt: skip
