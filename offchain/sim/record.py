"""A run's record and its folder: what ``pmsim sim run`` writes and the HTML report reads.

A run folder holds:

=====================  ==========================================================================
``scenario.json``      the resolved scenario (:func:`offchain.sim.scenario.resolve`): every default filled in
``run.json``           name, seed, backend, software version, steps, times, the summary metrics
``series.csv``         one row per step: ``step, time`` then every series of :attr:`RunRecord.series`
``liquidations.json``  one object per bid that moved positions (:class:`LiquidationRecord`)
``report.html``        the single-run report (``offchain/sim/report.py``)
=====================  ==========================================================================

Money is in USD as exact decimal strings of the quote units (``"1234.567891"``) in ``run.json`` and
``liquidations.json``; series are floats (plots). Same scenario, seed and backend: the same files,
byte for byte, but for ``run.json``'s ``wall_seconds``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: Series every run records, one value per step (after the step's last round).
SERIES = (
    "price_{u}",  # index price per underlying, USD (one column per underlying)
    "fund_usd",  # insurance fund balance
    "bad_debt_usd",  # cumulative bad debt (fund draws + socialised + unrecovered)
    "socialised_usd",  # cumulative socialised loss
    "open_interest_usd",  # sum of |size| x index over perp/future positions, long side
    "accounts_below_mm",  # accounts with equity < maintenance margin
    "margin_ratio_min",  # min over accounts with positions of equity / MM
    "margin_ratio_p50",  # median of the same
    "im_usd",  # sum of portfolio IM
    "standard_im_usd",  # sum of the standard (strategy-based) IM of the same books
    "liquidations",  # bids that step
)


@dataclass(frozen=True)
class LiquidationRecord:
    """One bid: who, how much, at what price, and what the fund and the other holders paid."""

    step: int
    time: int
    account: str
    keeper: str
    fraction: str  # decimal, e.g. "0.25"
    price_usd: str  # what the bidder paid (negative: was paid)
    fee_usd: str
    fund_draw_usd: str
    socialised_usd: str
    notional_usd: str
    discount: str  # decimal fraction of mark-to-market value
    cascade_depth: int  # 0: started by the market; n: by the price impact of a depth n-1 liquidation


@dataclass
class RunRecord:
    """Everything a run produces; :func:`write_run` lays it out as a run folder."""

    name: str
    seed: int
    backend: str
    version: str
    start: int
    step_seconds: int
    steps: int
    underlyings: tuple[str, ...]
    scenario: dict[str, Any]
    summary: dict[str, Any] = field(default_factory=dict)
    series: dict[str, list[float]] = field(default_factory=dict)
    liquidations: list[LiquidationRecord] = field(default_factory=list)
    wall_seconds: float = 0.0


def write_run(record: RunRecord, folder: Path) -> Path:
    """Write ``record`` into ``folder`` (created); returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "scenario.json").write_text(json.dumps(record.scenario, indent=2, sort_keys=True) + "\n")
    meta = {k: v for k, v in asdict(record).items() if k not in ("scenario", "series", "liquidations")}
    (folder / "run.json").write_text(json.dumps(meta, indent=2) + "\n")
    names = list(record.series)
    with (folder / "series.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "time", *names])
        for i in range(record.steps):
            row = [repr(record.series[n][i]) for n in names]
            w.writerow([i, record.start + i * record.step_seconds, *row])
    liqs = [asdict(x) for x in record.liquidations]
    (folder / "liquidations.json").write_text(json.dumps(liqs, indent=2) + "\n")
    return folder


def read_run(folder: Path) -> RunRecord:
    """Read a run folder written by :func:`write_run`."""
    meta = json.loads((folder / "run.json").read_text())
    scenario = json.loads((folder / "scenario.json").read_text())
    series: dict[str, list[float]] = {}
    with (folder / "series.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    for j, name in enumerate(header[2:], start=2):
        series[name] = [float(r[j]) for r in body]
    liqs = [LiquidationRecord(**x) for x in json.loads((folder / "liquidations.json").read_text())]
    meta["underlyings"] = tuple(meta["underlyings"])
    return RunRecord(scenario=scenario, series=series, liquidations=liqs, **meta)
