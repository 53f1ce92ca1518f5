"""The margin optimiser: exact against the engine, optimal against a grid search, limits, bad input, CLI."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from offchain.cli import app
from offchain.errors import InputError
from offchain.risk.accounts import AccountState
from offchain.risk.config import RiskConfig
from offchain.risk.engine import MarginEngine
from offchain.risk.optimize import Candidate, optimise_margin
from offchain.risk.strategies import reference_market


@pytest.fixture(scope="module")
def setting(config: RiskConfig) -> tuple[MarginEngine, dict[str, int]]:
    instruments, market, rows = reference_market(config)
    return MarginEngine(config, instruments, market), rows


def _state(rows: dict[str, int], legs: dict[str, float]) -> AccountState:
    return AccountState(np.array([rows[n] for n in legs]), np.array(list(legs.values())), 0.0, 0.0, 0.0, np.zeros(3))


def test_halving_a_short_straddle_is_exact_through_the_engine(setting: tuple[MarginEngine, dict[str, int]]) -> None:
    engine, rows = setting
    state = _state(rows, {"BTC-30d-60000-C": -10.0, "BTC-30d-60000-P": -10.0})
    before = engine.account(state).im
    candidates = [Candidate(r, 30.0, -50.0, 50.0) for r in range(len(engine.instruments))]
    result = optimise_margin(engine, state, candidates, 0.5 * before)
    assert result.feasible and result.after is not None
    assert result.im_before == before
    assert result.im_lp == pytest.approx(0.5 * before, rel=1e-9)  # the cheapest way stops at the target
    assert result.after.im == pytest.approx(result.im_lp, rel=1e-9)  # the programme is the engine's rule
    assert result.cost == pytest.approx(30.0 * np.abs(result.trades).sum(), rel=1e-12)
    # trades at mark: equity only pays the trading cost
    assert result.after.margin_equity == pytest.approx(engine.account(state).margin_equity - result.cost, rel=1e-9)


def test_a_linear_book_sells_exactly_what_the_target_needs(setting: tuple[MarginEngine, dict[str, int]]) -> None:
    engine, rows = setting
    state = _state(rows, {"BTC-PERP": 2.0})
    result = optimise_margin(
        engine, state, [Candidate(rows["BTC-PERP"], 30.0, -10.0, 10.0)], 0.5 * engine.account(state).im
    )
    assert result.trades[0] == pytest.approx(-1.0, abs=1e-7)  # IM is homogeneous in the size below the threshold
    assert result.cost == pytest.approx(30.0, rel=1e-6)


def test_no_cheaper_trades_exist_on_a_grid(setting: tuple[MarginEngine, dict[str, int]]) -> None:
    """Two candidates, 41 × 41 trades: no feasible grid point is cheaper than the programme's answer."""
    engine, rows = setting
    state = _state(rows, {"BTC-30d-60000-C": -5.0, "BTC-PERP": 1.0})
    names = ("BTC-PERP", "BTC-60d-60000-C")
    costs = (30.0, 45.0)
    cands = [Candidate(rows[n], c, -10.0, 10.0) for n, c in zip(names, costs, strict=True)]
    target = 0.7 * engine.account(state).im
    result = optimise_margin(engine, state, cands, target)
    assert result.feasible and result.after is not None and result.after.im <= target * (1 + 1e-9)
    best = np.inf
    for a, b in itertools.product(np.linspace(-10, 10, 41), repeat=2):
        legs = {"BTC-30d-60000-C": -5.0, "BTC-PERP": 1.0 + a, "BTC-60d-60000-C": b}
        if engine.account(_state(rows, {k: v for k, v in legs.items() if v})).im <= target:
            best = min(best, costs[0] * abs(a) + costs[1] * abs(b))
    assert np.isfinite(best) and result.cost <= best + 1e-6


def test_position_limits_bind_and_an_unreachable_target_is_reported(
    setting: tuple[MarginEngine, dict[str, int]],
) -> None:
    engine, rows = setting
    state = _state(rows, {"BTC-PERP": 2.0})
    tight = [Candidate(rows["BTC-PERP"], 30.0, 1.5, 10.0)]  # may not go below 1.5 BTC
    result = optimise_margin(engine, state, tight, 0.5 * engine.account(state).im)
    assert not result.feasible and result.after is None and not result.trades.any()
    reachable = optimise_margin(engine, state, tight, 0.75 * engine.account(state).im)
    assert reachable.feasible and reachable.trades[0] == pytest.approx(-0.5, abs=1e-7)


@pytest.mark.parametrize(
    ("target", "cands", "field"),
    [(-1.0, None, "target_im"), (float("nan"), None, "target_im"), (1.0, [], "candidates"),
     (1.0, [Candidate(0, 1.0, -1, 1), Candidate(0, 1.0, -1, 1)], "candidates"),
     (1.0, [Candidate(0, -1.0, -1, 1)], "candidates[0]")],
)  # fmt: skip
def test_bad_input_names_the_field(
    setting: tuple[MarginEngine, dict[str, int]], target: float, cands: list[Candidate] | None, field: str
) -> None:
    engine, rows = setting
    with pytest.raises(InputError) as info:
        optimise_margin(
            engine, _state(rows, {"BTC-PERP": 1.0}), cands if cands is not None else [Candidate(0, 1, -1, 1)], target
        )
    assert info.value.field == field


def _book(tmp_path: Path, accounts: int = 1) -> str:
    doc = {
        "now": 1_735_689_600, "spot": {"BTC": 60_000, "ETH": 3_000},
        "instruments": [{"id": 1, "kind": "PERP", "underlying": "BTC"}, {"id": 2, "kind": "PERP", "underlying": "ETH"},
                        {"id": 3, "kind": "CALL", "underlying": "BTC", "strike": 60_000, "expiry": 1_738_281_600}],
        "accounts": [{"id": f"acct{i}", "cash": 50_000, "positions": [
            {"instrument": 3, "size": -4.0}, {"instrument": 2, "size": -20.0, "entry_price": 3_000}]}
            for i in range(accounts)],
    }  # fmt: skip
    path = tmp_path / "book.json"
    path.write_text(json.dumps(doc))
    return str(path)


def test_optimize_command_shows_trades_and_the_engine_check(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["optimize", _book(tmp_path), "--target-im", "60%", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["feasible"] and doc["trades"]
    assert doc["im_after_engine"] == pytest.approx(0.6 * doc["im_before"], rel=1e-9)
    assert doc["im_after_lp"] == pytest.approx(doc["im_after_engine"], rel=1e-9)
    table = CliRunner().invoke(app, ["optimize", _book(tmp_path), "--target-im", "60%"], terminal_width=200)
    assert table.exit_code == 0 and "engine re-check" in table.output and "BTC" in table.output


@pytest.mark.parametrize(
    ("args", "field"),
    [(["--target-im", "lots"], "--target-im"), (["--target-im", "-5"], "--target-im"),
     (["--target-im", "50%", "--limit", "0"], "--limit"), (["--target-im", "50%", "--instrument", "99"], "99")],
)  # fmt: skip
def test_optimize_bad_input(tmp_path: Path, args: list[str], field: str) -> None:
    result = CliRunner().invoke(app, ["optimize", _book(tmp_path), *args])
    assert result.exit_code == 2 and field in result.output


def test_optimize_needs_an_account_when_the_file_holds_several(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["optimize", _book(tmp_path, 2), "--target-im", "50%"])
    assert result.exit_code == 2 and "--account" in result.output
    only_btc = ["--account", "acct1", "--instrument", "1", "--target-im", "1"]
    ok = CliRunner().invoke(app, ["optimize", _book(tmp_path, 2), *only_btc], terminal_width=200)
    assert ok.exit_code == 1 and "no trades within the limits" in ok.output  # the ETH short stays
