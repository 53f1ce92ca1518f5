"""``pmsim backtest``: rolling out-of-sample backtest of VaR, ES and IM, with an HTML report.

Runs the risk engine on every day of the vendored 2017–2025 history with only the returns known
the evening before (see :mod:`offchain.validation.backtest`), for the representative portfolios
or the accounts of a positions file, under the configured calibration and, with ``--compare``,
under every calibration of :data:`offchain.validation.study.CALIBRATIONS`. Prints the table and
writes a self-contained HTML report with plots.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress, TaskID

from offchain.cli_margin import _pairs
from offchain.errors import InputError, PmsimError
from offchain.risk.config import RiskConfig, load_config
from offchain.risk.positions_file import MarketFlags, load_positions
from offchain.validation.backtest import DEFAULT_BURN_IN, BacktestSeries, backtest_days, load_closes, run
from offchain.validation.portfolios import REPRESENTATIVE, Portfolio, from_positions
from offchain.validation.report import (
    apc_tools,
    backtest_markdown,
    html_report,
    procyclicality,
    procyclicality_markdown,
    to_json,
)
from offchain.validation.study import CALIBRATIONS, Row, stressed_im, summarise

CONFIGURED = "configured"


def _describe(cfg: RiskConfig) -> str:
    es = cfg.es
    window = "all history" if es.window_days == 0 else f"{es.window_days} d"
    text = f"{window}, {'FHS λ ' + repr(es.ewma_lambda) if es.volatility_filter == 'ewma' else 'unfiltered'}"
    return text + (f", stress {es.stress_period[0]}..{es.stress_period[1]}" if es.stress_period else "")


def _portfolios(positions_file: Path | None, cfg: RiskConfig, flags: MarketFlags) -> tuple[Portfolio, ...]:
    if positions_file is None:
        return REPRESENTATIVE
    found = from_positions(load_positions(positions_file, cfg, flags))
    if not found:
        raise InputError("POSITIONS_FILE", "no account holds a live position")
    return found


def backtest(
    positions_file: Annotated[
        Path | None, typer.Argument(help="positions file (.json, or .csv with --now/--spot); default: representative")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="risk configuration (TOML)")] = None,
    compare: Annotated[bool, typer.Option("--compare", help="also run every calibration of the study")] = False,
    first: Annotated[str | None, typer.Option(help="first test day (ISO date)")] = None,
    last: Annotated[str | None, typer.Option(help="last test day (ISO date)")] = None,
    burn_in: Annotated[int, typer.Option(help="joint days of history before the first test day")] = DEFAULT_BURN_IN,
    out: Annotated[Path, typer.Option(help="HTML report to write")] = Path("backtest.html"),
    markdown: Annotated[bool, typer.Option("--markdown", help="print markdown tables")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the figures as JSON")] = False,
    seed: Annotated[int, typer.Option(help="seed of the ES test's simulation")] = 1,
    now: Annotated[int | None, typer.Option(help="CSV only: chain time of the file's market")] = None,
    spot: Annotated[list[str] | None, typer.Option(help="CSV only: SYMBOL=PRICE, once per underlying")] = None,
) -> None:
    """Backtest VaR 99 %, ES 97.5 % and IM out of sample and write an HTML report."""
    try:
        cfg = load_config(config)
        if burn_in < 100:
            raise InputError("--burn-in", f"must be >= 100 joint days (VaR 99 % needs 100 returns), got {burn_in}")
        for name, value in (("--first", first), ("--last", last)):
            if value is not None and not _iso(value):
                raise InputError(name, f"not an ISO date: {value!r}")
        portfolios = _portfolios(positions_file, cfg, MarketFlags(now, 0, _pairs(spot, "--spot"), {}))
        days = backtest_days(cfg, burn_in, first, last)
        if not days:
            raise InputError("--first/--last", "no test day in that range")
        calibrations: dict[str, Callable[[RiskConfig], RiskConfig]] = {CONFIGURED: _unchanged}
        calibrations |= CALIBRATIONS if compare else {}
        closes = load_closes(config)
        series: dict[str, BacktestSeries] = {}
        with Progress(transient=True, disable=as_json) as bar:
            for name, change in calibrations.items():
                variant = change(cfg)
                same = next((n for n in series if name != CONFIGURED and variant.es == cfg.es), None)
                if same is not None:  # the configured calibration is on the menu: run it once
                    series[name] = series[same]
                    continue
                task = bar.add_task(f"{name:24s}", total=len(days))
                series[name] = run(variant, portfolios, closes, days, _advance(bar, task))
    except PmsimError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    names = [p.name for p in portfolios]
    rows = {n: summarise(s, names, cfg.es.var_level, cfg.es.es_level, seed) for n, s in series.items()}
    pro = procyclicality(series, names)
    tools = []
    if "expanding" in series:  # --compare: the anti-procyclicality tools on the configured calibration
        with Progress(transient=True, disable=as_json) as bar:
            bar.add_task("stressed window", total=None)
            im_stress = stressed_im(cfg, portfolios, load_closes(config), days)
        tools = apc_tools(series[CONFIGURED], series["expanding"], names, im_stress)
    notes = (f"Configured calibration: {_describe(cfg)}. Test days {series[CONFIGURED].dates[0]} to "
             f"{series[CONFIGURED].dates[-1]} ({len(days):,}); each valued at the close before with the history "
             f"known then. ES test: Acerbi–Székely Z2, p-value from 2,000 simulations (seed {seed}).")  # fmt: skip
    out.write_text(html_report("pmsim backtest", series, names, rows, pro, tools, notes))
    if as_json:
        typer.echo(json.dumps(to_json(rows, pro, tools), indent=2))
        return
    typer.echo(notes)
    typer.echo(backtest_markdown(rows) if markdown else _plain(rows))
    if markdown:
        typer.echo("\n" + procyclicality_markdown(pro, tools))
    typer.echo(f"report: {out}")


def _unchanged(config: RiskConfig) -> RiskConfig:
    return config


def _advance(bar: Progress, task: TaskID) -> Callable[[int], None]:
    def update(done: int) -> None:
        bar.update(task, completed=done)

    return update


def _iso(text: str) -> bool:
    import datetime as dt

    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _plain(rows: dict[str, list[Row]]) -> str:
    lines = [f"{'calibration':24s} {'portfolio':16s} {'exc':>4s} {'exp':>5s} {'Kupiec':>7s} {'Chr.':>7s} "
             f"{'zone':>6s} {'Z2':>6s} {'ES p':>6s}"]  # fmt: skip
    for cal, rs in rows.items():
        for r in rs:
            lines.append(f"{cal:24s} {r.portfolio:16s} {r.exceptions:4d} {r.expected:5.1f} {r.kupiec_p:7.3f} "
                         f"{r.christoffersen_p:7.3f} {r.zone:>6s} {r.es_z2:+6.2f} {r.es_p:6.3f}")  # fmt: skip
    return "\n".join(lines)
