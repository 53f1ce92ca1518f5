"""The backtest harness: a short out-of-sample run through the engine, checked by hand; the full one is slow."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from offchain.cli import app
from offchain.risk.config import RiskConfig
from offchain.risk.history import close_time
from offchain.validation.backtest import DEFAULT_BURN_IN, backtest_days, load_closes, run
from offchain.validation.portfolios import NOTIONAL, REPRESENTATIVE, from_positions
from offchain.validation.study import calibration, summarise


@pytest.fixture(scope="module")
def short_run(config: RiskConfig):  # type: ignore[no-untyped-def]
    cfg = calibration(0)(config)  # the unfiltered expanding window: checkable by hand
    days = backtest_days(cfg, DEFAULT_BURN_IN, "2020-03-01", "2020-03-31")
    return cfg, days, run(cfg, REPRESENTATIVE, load_closes(), days)


def test_short_backtest_matches_a_hand_computation(short_run) -> None:  # type: ignore[no-untyped-def]
    cfg, days, s = short_run
    h = cfg.history
    assert len(s.dates) == 31 and s.dates[0] == "2020-03-01" and s.dates[-1] == "2020-03-31"
    for k, i in enumerate(days):
        known = h.as_of(close_time(h.dates[i]) - 86_400)  # the history up to the day before
        assert known.dates[-1] < s.dates[k]
        btc = NOTIONAL * -known.returns[:, 0]  # long BTC: constant USD 100,000 notional
        ordered = np.sort(btc)[::-1]
        assert s.var[k, 0] == pytest.approx(ordered[math.floor(len(btc) * (1 - Fraction("0.99")))], rel=1e-9)
        assert s.loss[k, 0] == pytest.approx(-NOTIONAL * h.returns[i, 0], rel=1e-9)
        assert s.loss[k, 1] == pytest.approx(NOTIONAL * h.returns[i, 1], rel=1e-9)  # short ETH
        assert s.tail_var[k, 0] <= s.es[k, 0] and np.all(s.tail[k][0] > s.tail_var[k, 0])
    # 2020-03-12: BTC -39 %: every linear long blows through VaR, and through the 15 % grid IM too
    crash = s.dates.index("2020-03-12")
    assert s.loss[crash, 0] > s.im[crash, 0] > s.var[crash, 0]
    names = [p.name for p in REPRESENTATIVE]
    rows = summarise(s, names, cfg.es.var_level, cfg.es.es_level)
    assert [r.exceptions for r in rows] == [int(np.sum(s.loss[:, j] > s.var[:, j])) for j in range(len(names))]
    assert rows[0].exceptions >= 1 and rows[0].zone == "n/a"  # under 250 days: no complete block


def test_backtest_command_writes_a_self_contained_report(tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    result = CliRunner().invoke(
        app, ["backtest", "--first", "2021-05-10", "--last", "2021-05-25", "--json", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    rows = doc["backtest"]["configured"]
    assert [r["portfolio"] for r in rows] == [p.name for p in REPRESENTATIVE]
    assert all(r["days"] == 16 for r in rows)
    page = out.read_text()
    assert page.count("data:image/png;base64,") == len(REPRESENTATIVE)
    assert "src='http" not in page and "<script" not in page and "<link" not in page


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--first", "2021-13-01"], "--first"),
        (["--burn-in", "20"], "--burn-in"),
        (["--first", "2030-01-01"], "--first/--last"),
    ],
)
def test_backtest_bad_input_names_the_option(tmp_path: Path, args: list[str], field: str) -> None:
    result = CliRunner().invoke(app, ["backtest", *args, "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 2 and field in result.output
    assert not (tmp_path / "r.html").exists()


def test_positions_file_accounts_become_rolled_portfolios(config: RiskConfig, tmp_path: Path) -> None:
    from offchain.risk.positions_file import load_positions

    expiry = 1_735_689_600 + 30 * 86_400
    put = {"id": 2, "kind": "PUT", "underlying": "BTC", "strike": 54_000, "expiry": expiry}
    positions = [{"instrument": 2, "size": -2.0}, {"instrument": 1, "size": 10.0, "entry_price": 3_000}]
    doc = {
        "now": 1_735_689_600,
        "spot": {"BTC": 60_000, "ETH": 3_000},
        "instruments": [{"id": 1, "kind": "PERP", "underlying": "ETH"}, put],
        "accounts": [{"id": "writer", "cash": 0, "positions": positions}],
    }
    path = tmp_path / "book.json"
    path.write_text(json.dumps(doc))
    (p,) = from_positions(load_positions(path, config))
    assert p.name == "writer"
    legs = {leg.kind.name: leg for leg in p.legs}
    assert legs["PUT"].units == pytest.approx(-1.2) and legs["PUT"].moneyness == pytest.approx(0.9)
    assert legs["PUT"].tenor_days == 30 and legs["PERP"].units == pytest.approx(0.3)
    out = tmp_path / "r.html"
    result = CliRunner().invoke(app, ["backtest", str(path), "--first", "2022-06-10", "--last", "2022-06-20",
                                      "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "writer" in result.output and out.exists()


@pytest.mark.slow
def test_full_backtest_reproduces_the_issue_counts(config: RiskConfig) -> None:
    """2,906 days of the expanding window: 17, 8, 2 and 15 exceptions (the issue's figures)."""
    cfg = calibration(0)(config)
    days = backtest_days(cfg, DEFAULT_BURN_IN)
    s = run(cfg, REPRESENTATIVE[:4], load_closes(), days)
    assert len(days) == 2_906
    assert list(np.sum(s.loss > s.var, axis=0)) == [17, 8, 2, 15]


def test_stressed_window_is_known_before_each_day_and_feeds_the_engine(config: RiskConfig) -> None:
    from offchain.validation.study import stressed_im, stressed_weight, stressed_windows

    h = config.history
    days = backtest_days(config, DEFAULT_BURN_IN, "2020-03-10", "2020-03-14")
    windows = stressed_windows(h, days, 120)
    x2 = (np.log1p(h.returns) ** 2).sum(axis=1)
    for i, (a, b) in zip(days, windows, strict=True):
        assert b - a == 120 and b <= i  # every return of the window is known the evening before
        best = max(range(i - 119), key=lambda s: (x2[s : s + 120].sum(), s))
        assert x2[a:b].sum() == pytest.approx(x2[best : best + 120].sum(), rel=1e-12)
    im = stressed_im(config, REPRESENTATIVE[:1], load_closes(), days, 120)
    a, b = windows[0]
    btc = NOTIONAL * -h.returns[a:b, 0]
    es = np.sort(btc)[::-1][:3].sum() / 3  # 120 returns: ES 97.5 % averages the 3 worst exactly
    assert im[0, 0] == pytest.approx(max(0.15 * NOTIONAL, es), rel=1e-9)  # grid 15 % or the stressed ES
    mixed = stressed_weight(np.array([[100.0]]), np.array([[200.0]]))
    assert mixed[0, 0] == pytest.approx(125.0)
