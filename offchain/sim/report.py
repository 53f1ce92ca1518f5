"""The single-run HTML report: one self-contained page from a run folder (:mod:`offchain.sim.record`).

``report.html`` holds every plot as inline SVG (matplotlib, Agg backend, text kept as text), its
styles inline and nothing fetched from anywhere: it opens offline and can be mailed. Sections:

=================  ===========================================================================
``summary``        the run's metrics (``run.json``'s ``summary``) in human units, and its facts
``prices``         index price per underlying, every liquidation marked at its step
``margins``        minimum and median margin ratio (equity / MM) and the accounts below MM
``fund``           insurance fund balance
``losses``         cumulative bad debt and socialised loss
``open-interest``  open interest
``efficiency``     portfolio IM against the standard margin of the same books
``liquidations``   one row per bid (the first :data:`MAX_LIQUIDATION_ROWS`)
``scenario``       the resolved scenario (``scenario.json``), seed, backend and software version
=================  ===========================================================================

The same run folder gives the same bytes: figures are written with a fixed ``svg.hashsalt`` and no
date in their metadata, and the page shows nothing the run folder does not fix (the run's wall time,
the one figure of ``run.json`` that changes between identical runs, is left out).

Human units: USD with thousands separators (``12,345.67 USD``), fractions as percentages.
"""

from __future__ import annotations

import html
import io
import json
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import numpy as np

from offchain._typing import Float64Array
from offchain.sim.record import LiquidationRecord, RunRecord, read_run

#: Points per plotted line beyond which a series is drawn as its min/max envelope per bucket.
MAX_POINTS = 1500
#: Liquidation rows shown in the page (``liquidations.json`` holds them all).
MAX_LIQUIDATION_ROWS = 500
#: Section ids, in page order (the report test checks each one).
SECTIONS = ("summary", "prices", "margins", "fund", "losses", "open-interest", "efficiency", "liquidations",
            "scenario")  # fmt: skip

_COLOURS = ("#1565c0", "#ef6c00", "#2e7d32", "#6a1b9a", "#00838f", "#5d4037")


# ----------------------------------------------------------------------------- human units
def _decimal(x: object) -> Decimal | None:
    if isinstance(x, bool):
        return None
    if isinstance(x, int | Decimal):
        return Decimal(x)
    if isinstance(x, float):
        return Decimal(repr(x)) if math.isfinite(x) else None
    if isinstance(x, str):
        try:
            d = Decimal(x.strip())
        except InvalidOperation:
            return None
        return d if d.is_finite() else None
    return None


def fmt_usd(x: object, places: int = 2, unit: bool = True) -> str:
    """USD with thousands separators, rounded half-even to ``places`` decimals: ``-1,234.57 USD``
    (without the unit when ``unit`` is false: a table whose header names it).

    Accepts the run folder's exact decimal strings, ints, Decimals and floats (a float through its
    shortest repr, so no binary noise shows); anything else is shown as given.
    """
    d = _decimal(x)
    if d is None:
        return str(x)
    q = d.quantize(Decimal(1).scaleb(-places))
    if q == 0:
        q = abs(q)  # no "-0.00"
    return f"{q:,} USD" if unit else f"{q:,}"


def fmt_pct(x: object, places: int = 2) -> str:
    """A fraction as a percentage: ``0.1234`` -> ``12.34 %``."""
    d = _decimal(x)
    if d is None:
        return str(x)
    return f"{(d * 100).quantize(Decimal(1).scaleb(-places)):,} %"


def fmt_number(x: object) -> str:
    """An int with thousands separators; a float to 4 significant figures; anything else as is."""
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        return f"{x:,.4g}" if math.isfinite(x) else str(x)
    return str(x)


_PCT_HINTS = ("fraction", "share", "pct", "percent", "efficiency", "discount", "drawdown_ratio")


def fmt_metric(key: str, value: object) -> str:
    """A summary metric in human units, by its name: ``*_usd`` in USD, fractions as percentages,
    ``*_seconds`` as a duration, counts with separators, a mapping as ``key: value`` pairs (``none``
    when empty), a missing figure (``None``) as a dash."""
    if value is None:
        return "–"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {fmt_metric(key, v)}" for k, v in value.items()) or "none"
    if isinstance(value, list):
        return ", ".join(fmt_metric(key, v) for v in value) or "none"
    k = key.lower()
    if k.endswith("_usd"):
        return fmt_usd(value)
    if any(h in k for h in _PCT_HINTS) and _decimal(value) is not None:
        return fmt_pct(value)
    if k.endswith(("_seconds", "_s")) and isinstance(value, int | float) and not isinstance(value, bool):
        return fmt_duration(float(value))
    return fmt_number(value)


def fmt_duration(seconds: float) -> str:
    """``93600`` -> ``1 d 2 h``, ``336`` -> ``5 min 36 s``; under a minute in seconds."""
    s = round(seconds)
    if s < 60:
        return f"{seconds:,.3g} s"
    d, rem = divmod(s, 86_400)
    h, rem = divmod(rem, 3600)
    m = rem // 60
    sec = rem % 60 if s < 3600 else 0
    parts = [f"{d:,} d" if d else "", f"{h} h" if h else "", f"{m} min" if m and not d else "",
             f"{sec} s" if sec else ""]  # fmt: skip
    return " ".join(p for p in parts if p) or "0 min"


def label_of(key: str) -> str:
    """``bad_debt_usd`` -> ``bad debt (USD)``."""
    k = key
    unit = ""
    for suffix, name in (("_usd", "USD"), ("_seconds", ""), ("_s", "")):
        if k.endswith(suffix):
            k, unit = k[: -len(suffix)], name
            break
    text = " ".join(w.upper() if w in _ACRONYMS else w for w in k.split("_"))
    return f"{text} ({unit})" if unit else text


_ACRONYMS = frozenset({"mm", "im", "oi", "usd", "iv"})


def iso(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


# ----------------------------------------------------------------------------- figures
def _finite(values: Sequence[float]) -> Float64Array:
    a = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(a), a, np.nan)


def envelope(x: Float64Array, y: Float64Array, max_points: int = MAX_POINTS) -> tuple[Float64Array, Float64Array]:
    """``(x, y)`` unchanged when short; else the min and max of each of ``max_points // 2`` buckets,
    both at the bucket's first x (a vertical stroke per bucket: the drawn envelope is the line's).
    NaN (no value) is ignored in a bucket and kept for a bucket of NaN only."""
    n = len(y)
    if n <= max_points:
        return x, y
    starts = np.linspace(0, n, max_points // 2, endpoint=False).astype(np.int64)
    lo = np.fmin.reduceat(y, starts)
    hi = np.fmax.reduceat(y, starts)
    xs = np.repeat(x[starts], 2)
    ys = np.empty(2 * len(starts))
    ys[0::2], ys[1::2] = lo, hi
    return xs, ys


class _Figures:
    """matplotlib set up once for reproducible inline SVG."""

    def __init__(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.plt = plt
        self.rc = {"svg.fonttype": "none", "svg.hashsalt": "pmsim", "font.size": 9, "axes.grid": True,
                   "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False}  # fmt: skip

    def svg(self, fig: Any, name: str) -> str:
        """The figure as an ``<svg>`` element (no XML prologue), ids salted by ``name`` so that the
        page's figures never share an element id."""
        buf = io.StringIO()
        with self.plt.rc_context({"svg.hashsalt": f"pmsim-{name}"}):
            fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None},
                        bbox_inches="tight")  # fmt: skip
        self.plt.close(fig)
        text = buf.getvalue()
        start = text.index("<svg")
        body = text[start:]
        return body.replace("<svg ", f'<svg role="img" aria-label="{html.escape(name)}" ', 1)


def _times(record: RunRecord) -> Any:
    start = np.datetime64(record.start, "s")
    return start + np.arange(record.steps, dtype=np.int64) * np.timedelta64(record.step_seconds, "s")


def _usd_axis(ax: Any) -> None:
    from matplotlib.ticker import FuncFormatter

    def usd(v: float, _pos: object) -> str:
        low, high = ax.get_ylim()
        text = f"{v:,.2f}" if abs(high - low) < 10 else f"{v:,.0f}"  # cents on a narrow axis
        return text.removeprefix("-") if float(text.replace(",", "")) == 0 else text

    ax.yaxis.set_major_formatter(FuncFormatter(usd))
    ax.set_ylabel("USD")


def _date_axis(fig: Any, axes: Iterable[Any]) -> None:
    import matplotlib.dates as mdates

    for ax in axes:
        locator = mdates.AutoDateLocator()  # type: ignore[no-untyped-call]
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]


def _plot(ax: Any, x: Any, values: Sequence[float], **kw: Any) -> None:
    xf = x.astype("datetime64[s]").astype(np.int64).astype(np.float64) / 86_400.0  # matplotlib day numbers
    xs, ys = envelope(xf, _finite(values))
    ax.plot(xs, ys, lw=kw.pop("lw", 1.0), **kw)


def price_figure(f: _Figures, record: RunRecord) -> str:
    """One panel per underlying; liquidations marked at their step's price (cascades in another colour)."""
    x = _times(record)
    n = max(1, len(record.underlyings))
    with f.plt.rc_context(f.rc):
        fig, axes = f.plt.subplots(n, 1, figsize=(10, 2.6 * n), sharex=True, squeeze=False)
        by_step: dict[int, list[LiquidationRecord]] = {}
        for liq in record.liquidations:
            by_step.setdefault(liq.step, []).append(liq)
        for j, (ax, u) in enumerate(zip(axes[:, 0], record.underlyings, strict=False)):
            col = f"price_{u}"
            prices = record.series.get(col)
            if prices is None:
                ax.text(0.5, 0.5, f"{col}: not recorded", transform=ax.transAxes, ha="center")
                continue
            _plot(ax, x, prices, color=_COLOURS[j % len(_COLOURS)], label=f"{u} index")
            for cascade, colour, marker, name in ((False, "#c62828", "v", "liquidation (market)"),
                                                   (True, "#6a1b9a", "X", "liquidation (cascade)")):  # fmt: skip
                steps = sorted(s for s, ls in by_step.items() if 0 <= s < record.steps
                               and any((lq.cascade_depth > 0) == cascade for lq in ls))  # fmt: skip
                if steps:
                    xs = x[steps].astype(np.int64).astype(np.float64) / 86_400.0
                    ax.scatter(xs, _finite([prices[s] for s in steps]), s=22, color=colour, marker=marker,
                               zorder=3, label=f"{name}: {len(steps):,} step(s)")  # fmt: skip
            _usd_axis(ax)
            ax.set_title(f"{u} index price", loc="left")
            ax.legend(loc="best", fontsize=7)
        _date_axis(fig, axes[:, 0])
        return f.svg(fig, "price paths")


def _lines_figure(f: _Figures, record: RunRecord, name: str, title: str,
                  lines: Sequence[tuple[str, str]], *, usd: bool, hline: float | None = None) -> str:  # fmt: skip
    x = _times(record)
    with f.plt.rc_context(f.rc):
        fig, ax = f.plt.subplots(figsize=(10, 3.0))
        for i, (col, label) in enumerate(lines):
            values = record.series.get(col)
            if values is None:
                continue
            _plot(ax, x, values, color=_COLOURS[i % len(_COLOURS)], label=label, drawstyle="steps-post")
        if hline is not None:
            ax.axhline(hline, color="#c62828", lw=0.8, ls="--", label=f"{hline:g}")
        _tidy_limits(ax, [record.series[c] for c, _ in lines if c in record.series])
        if usd:
            _usd_axis(ax)
        ax.set_title(title, loc="left")
        ax.legend(loc="best", fontsize=7)
        _date_axis(fig, [ax])
        return f.svg(fig, name)


def _tidy_limits(ax: Any, series: Sequence[Sequence[float]]) -> None:
    """Non-negative series start the axis at 0; series that stay within a dollar of 0 (no bad debt) get
    the axis 0..1 instead of matplotlib's ±0.05 around a flat line (ticks that would read "-0")."""
    values = [v for s in series for v in _finite(s).tolist() if math.isfinite(v)]
    if not values:
        return
    lo, hi = min(values), max(values)
    if lo >= 0:
        ax.set_ylim(bottom=0.0, top=max(1.0, hi * 1.05))
    elif hi - lo < 1.0:
        ax.set_ylim(lo - 1.0, hi + 1.0)


def margin_figure(f: _Figures, record: RunRecord) -> str:
    """Min and median margin ratio (equity / MM; 1 = at maintenance margin) and accounts below MM."""
    from matplotlib.ticker import FuncFormatter

    x = _times(record)
    with f.plt.rc_context(f.rc):
        fig, (ax, below) = f.plt.subplots(2, 1, figsize=(10, 4.2), sharex=True, height_ratios=[3, 1])
        for i, (col, label) in enumerate((("margin_ratio_min", "minimum"), ("margin_ratio_p50", "median"))):
            if col in record.series:
                _plot(ax, x, record.series[col], color=_COLOURS[i], label=label)
        ax.axhline(1.0, color="#c62828", lw=0.8, ls="--", label="maintenance margin (1)")
        shown = [_finite(record.series[c]) for c in ("margin_ratio_min", "margin_ratio_p50") if c in record.series]
        top = max((float(np.nanmax(v)) for v in shown if np.isfinite(v).any()), default=0.0)
        if top > 20:  # a few well-funded books: keep the region around 1 readable
            ax.set_yscale("symlog", linthresh=2.0)
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:,g}"))
        ax.set_ylabel("equity / MM")
        ax.set_title("margin ratio over accounts with positions", loc="left")
        ax.legend(loc="best", fontsize=7)
        if "accounts_below_mm" in record.series:
            _plot(below, x, record.series["accounts_below_mm"], color="#c62828", drawstyle="steps-post")
        below.set_ylabel("below MM")
        _date_axis(fig, [ax, below])
        return f.svg(fig, "margin ratios")


# ----------------------------------------------------------------------------- page
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;margin:24px auto;padding:0 16px;
color:#222}
h1{font-size:22px}h2{font-size:17px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
td,th{border:1px solid #ddd;padding:3px 8px}td{white-space:nowrap}th{background:#f3f3f3;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:8px 0}svg{max-width:100%;height:auto}
pre{background:#f7f7f7;border:1px solid #ddd;padding:8px;font-size:12px;max-height:480px;overflow:auto}
.note{color:#555;font-size:13px}
"""


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[bool] | None = None) -> str:
    num = list(numeric) if numeric is not None else [False] * len(head)
    out = ["<table><thead><tr>", *(f"<th>{html.escape(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for r in rows:
        cells = (f"<td class='n'>{html.escape(c)}</td>" if n else f"<td>{html.escape(c)}</td>"
                 for c, n in zip(r, num, strict=True))  # fmt: skip
        out += ["<tr>", *cells, "</tr>"]
    out.append("</tbody></table>")
    return "".join(out)


def _section(sid: str, title: str, *body: str) -> str:
    return f"<section id='{sid}'><h2>{html.escape(title)}</h2>{''.join(body)}</section>"


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption class='note'>{html.escape(caption)}</figcaption></figure>"


def _last(record: RunRecord, col: str) -> float | None:
    values = record.series.get(col)
    return values[-1] if values else None


def facts(record: RunRecord) -> list[tuple[str, str]]:
    """The run's identity and size: what the summary table shows besides the metrics."""
    end = record.start + record.steps * record.step_seconds
    return [
        ("scenario", record.name),
        ("backend", record.backend),
        ("seed", str(record.seed)),
        ("software version", f"pmsim {record.version}"),
        ("steps", f"{record.steps:,} × {fmt_duration(record.step_seconds)}"),
        ("simulated time", f"{iso(record.start)} → {iso(end)} ({fmt_duration(end - record.start)})"),
        ("underlyings", ", ".join(record.underlyings)),
        ("liquidation bids", f"{len(record.liquidations):,}"),
    ]


def summary_rows(record: RunRecord) -> list[tuple[str, str]]:
    """The run's metrics (``summary``), each labelled and in human units, in the runner's order."""
    return [(label_of(k), fmt_metric(k, v)) for k, v in record.summary.items()]


def render(record: RunRecord) -> str:
    """The whole report of ``record`` as one self-contained HTML document."""
    f = _Figures()
    title = f"pmsim run: {record.name} ({record.backend}, seed {record.seed})"
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<meta name='generator' content='pmsim {html.escape(record.version)}'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    metrics = summary_rows(record)
    parts.append(_section(
        "summary", "Summary",
        _table(("run", ""), facts(record)),
        _table(("metric", "value"), metrics, (False, True)) if metrics
        else "<p class='note'>The run recorded no summary metrics.</p>",
    ))  # fmt: skip
    parts.append(_section(
        "prices", "Price paths and liquidations",
        _figure(price_figure(f, record), "Index price per underlying after each step's impact; a marker at each "
                "step with a liquidation bid (cascade: started by the price impact of an earlier liquidation)."),
    ))  # fmt: skip
    parts.append(_section(
        "margins", "Margin ratios",
        _figure(margin_figure(f, record), "Margin equity / maintenance margin over the accounts holding positions: "
                "the minimum and the median; below 1 an account is liquidatable. Bottom: accounts below MM."),
    ))  # fmt: skip
    fund = _last(record, "fund_usd")
    parts.append(_section(
        "fund", "Insurance fund",
        _figure(_lines_figure(f, record, "insurance fund", "insurance fund balance",
                              [("fund_usd", "balance")], usd=True),
                f"Balance after each step (final: {fmt_usd(fund) if fund is not None else 'not recorded'})."),
    ))  # fmt: skip
    bad, social = _last(record, "bad_debt_usd"), _last(record, "socialised_usd")
    parts.append(_section(
        "losses", "Bad debt and socialised loss",
        _figure(_lines_figure(f, record, "bad debt", "cumulative bad debt and socialised loss",
                              [("bad_debt_usd", "bad debt (fund draws + socialised + unrecovered)"),
                               ("socialised_usd", "socialised loss")], usd=True),
                f"Cumulative (final: bad debt {fmt_usd(bad) if bad is not None else 'not recorded'}, socialised "
                f"{fmt_usd(social) if social is not None else 'not recorded'})."),
    ))  # fmt: skip
    parts.append(_section(
        "open-interest", "Open interest",
        _figure(_lines_figure(f, record, "open interest", "open interest (long side, perps and futures)",
                              [("open_interest_usd", "open interest")], usd=True),
                "Σ |size| × index over perpetual and future positions, long side."),
    ))  # fmt: skip
    parts.append(_section(
        "efficiency", "Capital efficiency",
        _figure(_lines_figure(f, record, "capital efficiency", "initial margin: portfolio against standard",
                              [("im_usd", "portfolio IM"), ("standard_im_usd", "standard (strategy-based) IM")],
                              usd=True),
                "Σ portfolio IM against Σ standard margin of the same books: the gap is the capital portfolio "
                "margin frees."),
    ))  # fmt: skip
    parts.append(_section("liquidations", "Liquidations", _liquidation_table(record.liquidations)))
    parts.append(_section(
        "scenario", "Resolved scenario",
        f"<p class='note'>Every default filled in: loading this scenario again reproduces the run with seed "
        f"{record.seed} on the {html.escape(record.backend)} backend (pmsim {html.escape(record.version)}).</p>",
        f"<pre>{html.escape(json.dumps(record.scenario, indent=2, sort_keys=True))}</pre>",
    ))  # fmt: skip
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _liquidation_table(liqs: Sequence[LiquidationRecord]) -> str:
    if not liqs:
        return "<p class='note'>No liquidation bid in this run.</p>"
    head = ("step", "time (UTC)", "account", "keeper", "fraction", "price (USD)", "discount", "fee (USD)",
            "fund draw (USD)", "socialised (USD)", "notional (USD)", "cascade depth")  # fmt: skip
    rows = [(f"{x.step:,}", iso(x.time).removesuffix(" UTC"), _short(x.account), _short(x.keeper),
             fmt_pct(x.fraction), fmt_usd(x.price_usd, unit=False), fmt_pct(x.discount), fmt_usd(x.fee_usd, unit=False),
             fmt_usd(x.fund_draw_usd, unit=False), fmt_usd(x.socialised_usd, unit=False),
             fmt_usd(x.notional_usd, unit=False), str(x.cascade_depth))
            for x in liqs[:MAX_LIQUIDATION_ROWS]]  # fmt: skip
    numeric = (True, False, False, False, *([True] * 8))
    note = (f"<p class='note'>{len(liqs):,} bids; the first {MAX_LIQUIDATION_ROWS:,} shown "
            "(all of them in liquidations.json).</p>" if len(liqs) > MAX_LIQUIDATION_ROWS else "")  # fmt: skip
    return note + _table(head, rows, numeric)


def _short(address: str) -> str:
    return f"{address[:6]}…{address[-4:]}" if address.startswith("0x") and len(address) > 12 else address


def write_report(folder: Path, out: Path | None = None) -> Path:
    """Read the run folder ``folder`` and write its report (``folder/report.html`` by default)."""
    record = read_run(folder)
    path = out or folder / "report.html"
    path.write_text(render(record), encoding="utf-8")
    return path
