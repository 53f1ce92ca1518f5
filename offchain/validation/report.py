"""The backtest report: tables (markdown, JSON) and a self-contained HTML page with plots.

The HTML file embeds every figure as a base64 PNG (matplotlib, Agg backend): it opens offline,
can be mailed to a risk committee, and references nothing outside itself.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

from offchain._typing import BoolArray, Float64Array
from offchain.validation.backtest import BacktestSeries
from offchain.validation.stats import zones
from offchain.validation.study import EPISODES, Row, buffer_release, lookback_floor, peak_to_trough, stressed_weight

_ZONE_COLOURS = {"green": "#2e7d32", "yellow": "#f9a825", "red": "#c62828"}


@dataclass(frozen=True)
class Procyclicality:
    """Peak-to-trough ratios of one portfolio under one calibration, per episode."""

    calibration: str
    portfolio: str
    im: dict[str, float]
    es: dict[str, float]


@dataclass(frozen=True)
class ApcTool:
    """An anti-procyclicality tool on one portfolio: peak-to-trough IM with it and its cost.

    ``normal_cost`` is the mean margin charged outside the two episodes over the mean IM there,
    minus one (0.25 = a quarter more margin in normal times).
    """

    tool: str
    portfolio: str
    im: dict[str, float]
    normal_cost: float


def procyclicality(series: dict[str, BacktestSeries], names: Sequence[str]) -> list[Procyclicality]:
    """IM and ES peak-to-trough ratios through each episode, per calibration and portfolio."""
    out = []
    for cal, s in series.items():
        for j, name in enumerate(names):
            im = {e: peak_to_trough(s.dates, s.im[:, j], *span) for e, span in EPISODES.items()}
            es = {e: peak_to_trough(s.dates, s.es[:, j], *span) for e, span in EPISODES.items()}
            out.append(Procyclicality(cal, name, im, es))
    return out


def _normal(dates: tuple[str, ...]) -> BoolArray:
    return np.array([not any(a <= d <= b for a, b in EPISODES.values()) for d in dates])


def apc_tools(
    chosen: BacktestSeries, long_lookback: BacktestSeries, names: Sequence[str], im_stress: Float64Array | None = None
) -> list[ApcTool]:
    """EMIR-style tools on the chosen calibration's IM: a 25 % buffer released in stress, a floor at
    the IM of the longest look-back (``long_lookback``, all history known: up to 9.3 years here, the
    whole of the 10-year look-back the rule asks for) and, given ``im_stress``
    (:func:`~offchain.validation.study.stressed_im`), a 25 % weight on stressed observations."""
    normal = _normal(chosen.dates)
    out = []
    for j, name in enumerate(names):
        im = chosen.im[:, j]
        tools: dict[str, Float64Array] = {
            "none": im,
            "25 % buffer, released in stress": buffer_release(im),
            "floor: 10-year look-back IM": lookback_floor(im, long_lookback.im[:, j]),
        }
        if im_stress is not None:
            tools["25 % weight on the stressed window"] = stressed_weight(im, im_stress[:, j])
        base = float(im[normal].mean())
        for tool, charged in tools.items():
            ratios = {e: peak_to_trough(chosen.dates, charged, *span) for e, span in EPISODES.items()}
            out.append(ApcTool(tool, name, ratios, float(charged[normal].mean()) / base - 1.0))
    return out


# ----------------------------------------------------------------------------- tables


def _p(x: float) -> str:
    return "<0.001" if x < 0.001 else f"{x:.3f}"


def backtest_markdown(rows: dict[str, list[Row]]) -> str:
    """One markdown table: every calibration × portfolio."""
    lines = [
        "| Calibration | Portfolio | Days | VaR 99 % exceptions (expected) | Kupiec p | Christoffersen p "
        "| Zone (250-day blocks g/y/r) | ES 97.5 % Z2 (p) | IM exceptions | Mean IM |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for cal, cal_rows in rows.items():
        for r in cal_rows:
            z = r.zone_blocks
            lines.append(
                f"| {cal} | {r.portfolio} | {r.days:,} | {r.exceptions} ({r.expected:.0f}) | {_p(r.kupiec_p)} "
                f"| {_p(r.christoffersen_p)} | {r.zone} ({z['green']}/{z['yellow']}/{z['red']}) "
                f"| {r.es_z2:+.2f} ({_p(r.es_p)}) | {r.im_exceptions} | {r.mean_im:,.0f} |"
            )
    return "\n".join(lines)


def procyclicality_markdown(pro: list[Procyclicality], tools: list[ApcTool]) -> str:
    """Peak-to-trough tables (IM and ES per calibration; IM per anti-procyclicality tool)."""
    eps = list(EPISODES)
    lines = [
        "| Calibration | Portfolio | " + " | ".join(f"IM {e}" for e in eps) + " | "
        + " | ".join(f"ES {e}" for e in eps) + " |",
        "|---|---|" + "---:|" * (2 * len(eps)),
    ]  # fmt: skip
    for p in pro:
        cells = [f"{p.im[e]:.2f}" for e in eps] + [f"{p.es[e]:.2f}" for e in eps]
        lines.append(f"| {p.calibration} | {p.portfolio} | " + " | ".join(cells) + " |")
    lines += ["", "| Tool | Portfolio | " + " | ".join(f"IM {e}" for e in eps) + " | Cost in normal times |",
              "|---|---|" + "---:|" * (len(eps) + 1)]  # fmt: skip
    for t in tools:
        cells = [f"{t.im[e]:.2f}" for e in eps]
        lines.append(f"| {t.tool} | {t.portfolio} | " + " | ".join(cells) + f" | {t.normal_cost:+.1%} |")
    return "\n".join(lines)


def to_json(rows: dict[str, list[Row]], pro: list[Procyclicality], tools: list[ApcTool]) -> dict[str, object]:
    """Plain data of the report (``pmsim backtest --json``)."""

    def clean(x: object) -> object:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        return x

    return {
        "backtest": {cal: [clean(asdict(r)) for r in rs] for cal, rs in rows.items()},
        "procyclicality": [clean(asdict(p)) for p in pro],
        "anti_procyclicality": [clean(asdict(t)) for t in tools],
    }


# ----------------------------------------------------------------------------- HTML


def _png(fig: object) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")  # type: ignore[attr-defined]
    return base64.b64encode(buffer.getvalue()).decode()


def _dates(dates: tuple[str, ...]) -> npt.NDArray[np.datetime64]:
    return np.array(dates, dtype="datetime64[D]")


def _portfolio_figure(series: BacktestSeries, j: int, name: str, calibration: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = _dates(series.dates)
    fig, (ax, zone_ax) = plt.subplots(2, 1, figsize=(11, 4.2), sharex=True, height_ratios=[6, 1])
    ax.plot(x, -series.loss[:, j], lw=0.5, color="#555", label="P&L")
    ax.plot(x, -series.var[:, j], lw=1.0, color="#1565c0", label="−VaR 99 %")
    ax.plot(x, -series.es[:, j], lw=0.8, color="#6a1b9a", ls="--", label="−ES 97.5 %")
    ax.plot(x, -series.im[:, j], lw=0.8, color="#ef6c00", label="−IM")
    hits = series.loss[:, j] > series.var[:, j]
    ax.scatter(x[hits], -series.loss[hits, j], s=14, color="#c62828", zorder=3, label=f"exceptions ({hits.sum()})")
    ax.set_ylabel("USD")
    ax.set_title(f"{name} — {calibration}")
    ax.legend(loc="lower left", fontsize=7, ncol=5)
    rolling = zones(hits)
    if rolling:
        colours = [_ZONE_COLOURS[z] for z in rolling]
        zone_ax.bar(x[249:], 1.0, width=1.0, color=colours, linewidth=0)
    zone_ax.set_yticks([])
    zone_ax.set_ylabel("zone", fontsize=7)
    png = _png(fig)
    plt.close(fig)
    return png


def _im_figure(series: dict[str, BacktestSeries], j: int, name: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(EPISODES), figsize=(11, 3.0))
    for ax, (episode, (first, last)) in zip(np.atleast_1d(axes), EPISODES.items(), strict=True):
        for cal, s in series.items():
            sel = np.array([first <= d <= last for d in s.dates])
            if sel.any():
                ax.plot(_dates(s.dates)[sel], s.im[sel, j], lw=1.0, label=cal)
        ax.set_title(f"{name}: IM through {episode}", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    fig.autofmt_xdate()
    png = _png(fig)
    plt.close(fig)
    return png


def _markdown_html(text: str) -> str:
    rows = [line.strip("|").split("|") for line in text.splitlines() if line.startswith("|")]
    if not rows:
        return ""
    head, body = rows[0], rows[2:]
    out = ["<table><tr>" + "".join(f"<th>{html.escape(c.strip())}</th>" for c in head) + "</tr>"]
    for r in body:
        out.append("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in r) + "</tr>")
    return "".join(out) + "</table>"


def html_report(
    title: str,
    series: dict[str, BacktestSeries],
    names: Sequence[str],
    rows: dict[str, list[Row]],
    pro: list[Procyclicality],
    tools: list[ApcTool],
    notes: str,
) -> str:
    """The whole report as one self-contained HTML document."""
    first = next(iter(series))
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif;max-width:1200px;margin:auto}}"
        "table{border-collapse:collapse;font-size:12px;margin:8px 0}td,th{border:1px solid #ccc;padding:2px 6px;"
        "text-align:right}th{background:#eee}img{max-width:100%}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p>{html.escape(notes)}</p>",
        "<h2>Backtest</h2>",
        _markdown_html(backtest_markdown(rows)),
        "<h2>Procyclicality (peak-to-trough ratios) and anti-procyclicality tools</h2>",
    ]
    pro_md = procyclicality_markdown(pro, tools).split("\n\n")
    parts += [_markdown_html(block) for block in pro_md]
    parts.append(f"<h2>P&amp;L against VaR, ES and IM ({html.escape(first)})</h2>")
    for j, name in enumerate(names):
        png = _portfolio_figure(series[first], j, name, first)
        parts.append(f"<img alt='{html.escape(name)}' src='data:image/png;base64,{png}'>")
    if len(series) > 1:
        parts.append("<h2>IM through the stress episodes, per calibration</h2>")
        for j, name in enumerate(names):
            parts.append(
                f"<img alt='{html.escape(name)} IM' src='data:image/png;base64,{_im_figure(series, j, name)}'>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)
