"""The single-run HTML report (``offchain/sim/report.py``) and ``pmsim sim run``.

The report of a real run (the twin backend on a short scenario) is opened in headless Chromium (the
Debian package ``scripts/setup.sh`` installs, driven by Python playwright; never a downloaded browser)
and must load without a page error, a console error or a network request, with every section, every
plot drawn at a non-zero size, and the summary in human units. A page broken on purpose must fail
the same check, so the check can fail.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from offchain.sim.record import RunRecord, read_run
from offchain.sim.report import SECTIONS, envelope, fmt_metric, fmt_pct, fmt_usd, label_of, render, write_report
from offchain.sim.runner import make_backend
from offchain.sim.runner import run as run_scenario
from offchain.sim.scenario import scenario_from_mapping

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip

#: A short twin scenario: two days of hourly steps, a small mixed population, a crash-prone market.
SMALL = """
format_version = 1
[run]
name = "small"
seed = 5
steps = 48
step_seconds = 3600
backend = "twin"
[market]
model = "merton"
underlyings = ["BTC", "ETH"]
initial_prices = [60000.0, 3000.0]
vol = [0.6, 0.8]
correlation = 0.5
[market.jumps]
intensity = 1500.0
mean = [-0.12, -0.15]
vol = [0.05, 0.05]
[[agents]]
kind = "trend_trader"
count = 6
capital = 20000.0
size = [20000.0, 80000.0]
leverage = 8.0
lookback_steps = 4
[[agents]]
kind = "option_writer"
count = 4
capital = 50000.0
size = [10000.0, 30000.0]
[[agents]]
kind = "market_maker"
count = 1
capital = 5000000.0
size = 500000.0
[[agents]]
kind = "keeper"
count = 1
capital = 1000000.0
"""


def twin_run(folder: Path | None) -> RunRecord:
    """A real run: the runner drives the twin backend through the small scenario (seed 5)."""
    import tomllib

    scenario = scenario_from_mapping(tomllib.loads(SMALL), name="small")
    backend = make_backend("twin", scenario)
    try:
        return run_scenario(scenario, backend, seed=5, folder=folder, write=folder is not None)
    finally:
        backend.close()


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("run") / "small-seed5-twin"
    twin_run(folder)
    write_report(folder)
    return folder


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    assert CHROMIUM.exists(), "Chromium is missing: scripts/setup.sh installs the Debian package"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield b
        b.close()


_MEASURE = """() => ({
  title: document.title,
  sections: [...document.querySelectorAll('section')].map(s => ({id: s.id, h: s.getBoundingClientRect().height,
             text: s.innerText})),
  svgs: [...document.querySelectorAll('svg')].map(e => {
    const r = e.getBoundingClientRect();
    const drawn = [...e.querySelectorAll('path, use, text')].filter(p => {
      const b = p.getBBox(); return b.width > 0 || b.height > 0; }).length;
    return {label: e.getAttribute('aria-label'), w: r.width, h: r.height, drawn: drawn}; }),
  imgs: [...document.querySelectorAll('img')].map(e => ({alt: e.alt, w: e.naturalWidth, h: e.naturalHeight,
             ok: e.complete})),
})"""


def check_page(browser: Any, path: Path) -> tuple[list[str], dict[str, Any]]:
    """Open ``path`` in Chromium; the problems found (empty: a sound page) and what was measured."""
    problems: list[str] = []
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning")
            else None)  # fmt: skip

    def no_network(route: Any) -> None:
        if not route.request.url.startswith(("file:", "data:")):
            problems.append(f"network request: {route.request.url}")
            route.abort()
        else:
            route.continue_()

    page.route("**/*", no_network)
    page.goto(path.as_uri(), wait_until="load")
    seen = page.evaluate(_MEASURE)
    page.close()
    ids = [s["id"] for s in seen["sections"]]
    problems += [f"missing section {s!r}" for s in SECTIONS if s not in ids]
    problems += [f"empty section {s['id']!r}" for s in seen["sections"] if s["h"] <= 0 or not s["text"].strip()]
    problems += [f"plot {v['label']!r} renders at {v['w']}x{v['h']}" for v in seen["svgs"] if v["w"] < 1 or v["h"] < 1]
    problems += [f"plot {v['label']!r} draws nothing" for v in seen["svgs"] if v["drawn"] == 0]
    problems += [f"image {i['alt']!r} does not render" for i in seen["imgs"] if not i["ok"] or i["w"] == 0]
    return problems, seen


def test_the_report_of_a_twin_run_opens_in_chromium(run_folder: Path, browser: Any) -> None:
    problems, seen = check_page(browser, run_folder / "report.html")
    assert problems == []
    record = read_run(run_folder)
    assert seen["title"] == "pmsim run: small (twin, seed 5)"
    assert [s["id"] for s in seen["sections"]] == list(SECTIONS)
    assert {v["label"] for v in seen["svgs"]} == {"price paths", "margin ratios", "insurance fund", "bad debt",
                                                   "open interest", "capital efficiency"}  # fmt: skip
    text = {s["id"]: s["text"] for s in seen["sections"]}
    assert f"pmsim {record.version}" in text["summary"] and "seed\t5" in text["summary"]
    assert "48 × 1 h" in text["summary"]
    # human units: USD with thousands separators, no float noise, the resolved scenario in full
    assert re.search(r"\d{1,3}(,\d{3})+\.\d{2} USD", text["summary"] + text["fund"]), text["summary"]
    assert not re.search(r"\d\.\d{9,}", text["summary"])
    scenario = json.loads(text["scenario"][text["scenario"].index("{") :])
    assert scenario == record.scenario and scenario["run"]["steps"] == 48
    if record.liquidations:
        assert len(text["liquidations"].splitlines()) > len(record.liquidations)


def test_the_report_is_the_same_bytes_for_the_same_run(run_folder: Path, tmp_path: Path) -> None:
    html = (run_folder / "report.html").read_bytes()
    assert write_report(run_folder, tmp_path / "again.html").read_bytes() == html
    # the same scenario and seed run again: the same page (the run's wall time is not in it)
    assert render(twin_run(None)).encode() == html
    # self-contained: the only URLs are the SVG and XLink namespace names (never fetched)
    assert set(re.findall(rb"https?://[^\"' <>]+", html)) <= {b"http://www.w3.org/2000/svg", b"http://www.w3.org/1999/xlink"}


def test_a_broken_page_fails_the_check(run_folder: Path, browser: Any, tmp_path: Path) -> None:
    """The check is not vacuous: a script error, a missing section and a zero-size plot are each caught."""
    good = (run_folder / "report.html").read_text()
    broken = {
        "script": good.replace("</body>", "<script>undefinedFunction()</script></body>"),
        "section": re.sub(r"<section id='fund'>.*?</section>", "", good, flags=re.S),
        "plot": good.replace("<svg ", "<svg style='width:0;height:0' ", 1),
        "image": good.replace("</body>", "<img alt='x' src='data:image/png;base64,AAAA'></body>"),
        "network": good.replace("</body>", "<img alt='remote' src='http://192.0.2.1/x.png'></body>"),
    }
    for what, text in broken.items():
        path = tmp_path / f"{what}.html"
        path.write_text(text)
        problems, _ = check_page(browser, path)
        assert problems, f"a page with a broken {what} passed the check"


def _pmsim(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "160"}
    return subprocess.run([sys.executable, "-m", "offchain.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)  # fmt: skip


def test_pmsim_sim_run_writes_the_folder_and_the_report(tmp_path: Path, browser: Any) -> None:
    scenario = tmp_path / "small.toml"
    scenario.write_text(SMALL)
    out = tmp_path / "out"
    done = _pmsim("sim", "run", str(scenario), "--backend", "twin", "--seed", "9", "--out", str(out), cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"run folder: {out}" in done.stdout and f"report: {out / 'report.html'}" in done.stdout
    assert "run summary" in done.stdout and "seed" in done.stdout and "twin" in done.stdout
    assert "sim [49/49" in done.stdout and "step 48 of 48" in done.stdout  # a line per step off a terminal
    record = read_run(out)
    assert record.seed == 9 and record.backend == "twin" and record.steps == 48
    assert {p.name for p in out.iterdir()} == {"scenario.json", "run.json", "series.csv", "liquidations.json",
                                               "report.html"}  # fmt: skip
    problems, _ = check_page(browser, out / "report.html")
    assert problems == []
    bare = tmp_path / "bare"
    done = _pmsim("sim", "run", str(scenario), "--out", str(bare), "--no-report", cwd=ROOT)
    assert done.returncode == 0 and not (bare / "report.html").exists() and (bare / "run.json").exists()


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda t: t.replace("count = 6", "count = -6"), "agents[0].count"),
        (lambda t: t.replace('model = "merton"', 'model = "brownian"'), "market.model"),
        (lambda t: t.replace("steps = 48", "steps = 48\nspeed = 3"), "run.speed"),
    ],
)
def test_pmsim_sim_run_names_the_field_at_fault(tmp_path: Path, edit: Any, field: str) -> None:
    scenario = tmp_path / "bad.toml"
    scenario.write_text(edit(SMALL))
    done = _pmsim("sim", "run", str(scenario), "--out", str(tmp_path / "out"), cwd=ROOT)
    assert done.returncode == 2
    assert f"error: {field}" in done.stderr and "Traceback" not in done.stderr + done.stdout
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_pmsim_sim_run_finds_shipped_scenarios_by_name(tmp_path: Path) -> None:
    done = _pmsim("sim", "run", "no-such-scenario", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "SCENARIO" in done.stderr and "calm" in done.stderr  # lists the shipped ones
    from offchain.cli_sim import find_scenario

    assert find_scenario("calm") == ROOT / "scenarios" / "calm.toml"
    assert find_scenario("replay-2020-03-12.toml") == ROOT / "scenarios" / "replay-2020-03-12.toml"


def test_human_units() -> None:
    assert fmt_usd("1234567.891") == "1,234,567.89 USD" and fmt_usd(-0.001) == "0.00 USD"
    assert fmt_usd(2779.5769999999998) == "2,779.58 USD" and fmt_usd("0.000002", 6, unit=False) == "0.000002"
    assert fmt_usd(0.125) == "0.12 USD"  # half-even on the decimal, as written
    assert fmt_pct("0.76529") == "76.53 %" and fmt_pct(1) == "100.00 %"
    assert fmt_metric("fund_end_usd", "1997.727272") == "1,997.73 USD"
    assert fmt_metric("capital_efficiency_mean", 0.765287) == "76.53 %"
    assert fmt_metric("refusals", {"InsufficientMargin": 926, "ProtocolPaused": 78}) == (
        "InsufficientMargin: 926, ProtocolPaused: 78")  # fmt: skip
    assert fmt_metric("refusals", {}) == "none" and fmt_metric("capital_efficiency_end", None) == "–"
    assert fmt_metric("trades", 1004) == "1,004" and fmt_metric("wall_seconds", 93_600) == "1 d 2 h"
    assert label_of("account_hours_below_mm") == "account hours below MM" and label_of("bad_debt_usd") == (
        "bad debt (USD)")  # fmt: skip


def test_long_series_are_drawn_as_their_envelope() -> None:
    x = np.arange(10_000, dtype=np.float64)
    y = np.sin(x / 50.0)
    y[1234], y[5678] = 9.0, -9.0  # single-step spikes survive
    y[100:150] = np.nan
    xs, ys = envelope(x, y, 1000)
    assert len(xs) == len(ys) == 1000
    assert np.nanmax(ys) == 9.0 and np.nanmin(ys) == -9.0
    assert np.all(np.diff(xs) >= 0) and xs[0] == 0
    short = envelope(x[:500], y[:500], 1000)
    assert np.array_equal(short[0], x[:500]) and np.array_equal(short[1], y[:500], equal_nan=True)
