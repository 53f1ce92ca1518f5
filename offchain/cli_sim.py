"""``pmsim sim``: run a scenario on the twin or on the chain, write its run folder and its report."""

from __future__ import annotations

import dataclasses
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from offchain.cli_demo import console, progress_display
from offchain.errors import InputError, PmsimError

if TYPE_CHECKING:
    from offchain.sim.record import RunRecord
    from offchain.sim.scenario import Scenario

sim_app = typer.Typer(no_args_is_help=True, help="The simulator: run a scenario on the twin or the chain, and report.")

#: Where the shipped scenarios live (``scenarios/NAME.toml`` beside the package).
SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"


BACKEND_HELP = ("twin: the contract rules in Python, no chain; chain: Anvil with the real contracts "
                "(default: the scenario's run.backend)")  # fmt: skip


class BackendName(StrEnum):
    twin = "twin"
    chain = "chain"


def shipped_scenarios() -> list[str]:
    """Names of the scenarios that ship with the project."""
    return sorted(p.stem for p in SCENARIOS.glob("*.toml"))


def find_scenario(spec: str) -> Path:
    """``spec`` as a path if it names a file, else the shipped scenario of that name.

    Raises
    ------
    InputError
        (field ``SCENARIO``) neither a file nor a shipped scenario's name.
    """
    path = Path(spec)
    if path.is_file():
        return path
    shipped = SCENARIOS / f"{spec.removesuffix('.toml')}.toml"
    if path.name == spec and shipped.is_file():
        return shipped
    names = ", ".join(shipped_scenarios())
    raise InputError("SCENARIO", f"{spec!r} is neither a file nor a shipped scenario ({names})")


def with_seed(scenario: Scenario, seed: int | None) -> Scenario:
    """``scenario`` with its run's seed replaced (the seed every random draw of the run takes).

    Raises
    ------
    InputError
        (field ``seed``) outside [0, 2**63), the range a scenario's ``run.seed`` takes.
    """
    if seed is None:
        return scenario
    if not 0 <= seed < 2**63:
        raise InputError("seed", f"must be in [0, 2**63), got {seed}")
    return dataclasses.replace(scenario, run=dataclasses.replace(scenario.run, seed=seed))


@sim_app.command("run")
def run(
    scenario: Annotated[
        str, typer.Argument(help="a scenario file (TOML, docs/simulator.md) or a shipped scenario's name: calm, ...")
    ],
    backend: Annotated[
        BackendName | None,
        typer.Option(help=BACKEND_HELP),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="seed of every random draw (default: run.seed)")] = None,
    out: Annotated[Path | None, typer.Option(help="run folder to write (default: runs/NAME-seedSEED-BACKEND)")] = None,
    no_report: Annotated[bool, typer.Option("--no-report", help="do not write report.html")] = False,
) -> None:
    """Run SCENARIO step by step on one backend, write the run folder (scenario.json, run.json, series.csv,
    liquidations.json) and its HTML report, and print a summary."""
    from offchain.sim.report import write_report
    from offchain.sim.runner import default_folder, make_backend
    from offchain.sim.runner import run as run_scenario
    from offchain.sim.scenario import load_scenario

    try:
        sc = with_seed(load_scenario(find_scenario(scenario)), seed)
        name = backend.value if backend is not None else sc.run.backend
        folder = out or default_folder(sc, name)
        if folder.exists() and not folder.is_dir():
            raise InputError("out", f"{folder} exists and is not a folder")
        title = f"{sc.run.name}, {name} backend, seed {sc.run.seed}"
        with progress_display("sim", sc.run.steps + 1, f"{title}: setting up the {name} backend") as step:
            chosen = make_backend(name, sc)
            try:
                step(f"{title}: {name} backend ready")

                def advance(done: int, steps: int) -> None:
                    step(f"{title}: step {done:,} of {steps:,}")

                record = run_scenario(sc, chosen, progress=advance, folder=folder)
            finally:
                chosen.close()
    except PmsimError as exc:
        from offchain.cli import fail

        raise fail(str(exc)) from None
    console.print(summary_table(record))
    console.print(f"run folder: {folder}", highlight=False)
    if not no_report:
        console.print(f"report: {write_report(folder)}", highlight=False)


def summary_table(record: RunRecord) -> Table:
    """The run's facts and metrics in human units (the report's summary section, as a terminal table)."""
    from offchain.sim.report import facts, fmt_duration, summary_rows

    table = Table(title=f"run summary ({fmt_duration(record.wall_seconds)} of wall time)")
    table.add_column("")
    table.add_column("value", justify="right")
    for label, value in facts(record):
        table.add_row(label, value)
    table.add_section()
    for label, value in summary_rows(record):
        table.add_row(label, value)
    return table
