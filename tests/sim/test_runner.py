"""Real twin runs of the shipped scenarios: seeded and reproducible, with consistent metrics.

Every shipped scenario runs a few dozen steps on the twin (the whole scenario in the slow tier); the
same seed writes the same run folder byte for byte (but ``run.json``'s wall time); the metrics add
up: bad debt = fund draws + socialised + unrecovered, the insurance fund's path is its fee income
less its draws, every liquidation is in the per-step count, and a crash with leveraged traders
liquidates accounts (with cascades through the impact of the keepers' unwinds).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from offchain.sim.record import read_run
from offchain.sim.runner import make_backend, run
from offchain.sim.scenario import Scenario, load_scenario, scenario_from_mapping

SCENARIOS = sorted(Path("scenarios").glob("*.toml"))


def shortened(s: Scenario, steps: int) -> Scenario:
    return dataclasses.replace(s, run=dataclasses.replace(s.run, steps=min(steps, s.run.steps)))


def run_twin(s: Scenario, folder: Path, seed: int | None = None) -> Any:
    backend = make_backend("twin", s, seed)
    try:
        return run(s, backend, seed=seed, folder=folder)
    finally:
        backend.close()


def files(folder: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in sorted(folder.iterdir()):
        text = f.read_text()
        if f.name == "run.json":
            meta = json.loads(text)
            meta.pop("wall_seconds")
            out[f.name] = meta
        else:
            out[f.name] = text
    return out


def check_metrics(folder: Path) -> dict[str, Any]:
    rec = read_run(folder)
    s = rec.summary
    d = {k: Decimal(v) for k, v in s.items() if k.endswith("_usd") and isinstance(v, str)}
    assert d["bad_debt_usd"] == d["fund_draws_usd"] + d["socialised_usd"] + d["unrecovered_usd"]
    if d["socialised_usd"] == 0:
        # the fund is fed only by its share of the trading fees and the liquidation fees, and pays the draws
        assert d["fund_end_usd"] - d["fund_start_usd"] == (
            d["fund_fee_income_usd"] + d["liquidation_fees_usd"] - d["fund_draws_usd"]
        )
    assert d["fund_max_drawdown_usd"] >= 0 and d["fund_min_usd"] <= d["fund_end_usd"]
    assert sum(rec.series["liquidations"]) == s["liquidations"] == len(rec.liquidations)
    assert len(rec.series["fund_usd"]) == rec.steps
    assert float(d["fund_end_usd"]) == pytest.approx(rec.series["fund_usd"][-1], abs=1e-6)
    assert d["keeper_profit_usd"] == d["keeper_gross_usd"] - d["keeper_gas_usd"]
    for liq in rec.liquidations:
        assert Decimal(liq.fraction) > 0 and liq.cascade_depth >= 0
    depths = s["liquidations_by_cascade_depth"]
    assert sum(depths.values()) == s["liquidations"]
    assert s["cascade_depth_max"] == max((int(k) for k in depths), default=0)
    assert s["trades"] > 0
    return s


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_each_shipped_scenario_runs_reproducibly(path: Path, tmp_path: Path) -> None:
    s = shortened(load_scenario(path), 16)
    a = run_twin(s, tmp_path / "a")
    run_twin(s, tmp_path / "b")
    assert files(tmp_path / "a") == files(tmp_path / "b")
    assert sorted(f.name for f in (tmp_path / "a").iterdir()) == [
        "liquidations.json", "run.json", "scenario.json", "series.csv"]  # fmt: skip
    assert a.scenario["run"]["steps"] == 16 and a.backend == "twin"
    check_metrics(tmp_path / "a")


def test_another_seed_is_another_run(tmp_path: Path) -> None:
    s = shortened(load_scenario("scenarios/calm.toml"), 4)
    a = run_twin(s, tmp_path / "a")
    b = run_twin(s, tmp_path / "b", seed=s.run.seed + 1)
    assert (
        b.seed == s.run.seed + 1 and json.loads((tmp_path / "b" / "scenario.json").read_text())["run"]["seed"] == b.seed
    )
    assert files(tmp_path / "a")["series.csv"] != files(tmp_path / "b")["series.csv"]
    assert a.summary != b.summary


CRASH: dict[str, Any] = {
    "run": {"name": "crash"},
    "market": {"model": "replay", "underlyings": ["BTC", "ETH"],
               "replay": {"source": "hourly-2020-03", "start": "2020-03-12T00:00:00Z", "end": "2020-03-13T00:00:00Z"}},
    "impact": {"daily_volume": [5e6, 5e6]},
    "agents": [
        {"kind": "mean_reversion_trader", "count": 12, "capital": 10_000.0, "size": [50_000.0, 60_000.0],
         "leverage": 6.0, "lookback_steps": 6, "entry_z": 1.0, "exit_z": 0.1, "underlyings": ["BTC"]},
        {"kind": "market_maker", "count": 2, "capital": 5_000_000.0, "size": 500_000.0, "inventory_limit": 1e7},
        {"kind": "keeper", "count": 2, "capital": 1_000_000.0, "unwind_liquidity_usd": 300_000.0},
    ],
}  # fmt: skip


def test_a_leveraged_crash_liquidates_and_the_metrics_add_up(tmp_path: Path) -> None:
    s = scenario_from_mapping(CRASH)
    rec = run_twin(s, tmp_path / "crash")
    summary = check_metrics(tmp_path / "crash")
    assert summary["liquidations"] > 0, summary
    assert Decimal(summary["liquidation_notional_usd"]) > 0
    assert max(rec.series["accounts_below_mm"]) > 0 and summary["account_hours_below_mm"] > 0
    # thin markets (5 M USD a day): the keepers' unwinds move the price enough to push others below MM
    assert summary["cascade_depth_max"] >= 1
    assert Decimal(summary["keeper_gross_usd"]) > 0


@pytest.mark.slow
@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_each_shipped_scenario_runs_whole(path: Path, tmp_path: Path) -> None:
    s = load_scenario(path)
    run_twin(s, tmp_path / "run")
    check_metrics(tmp_path / "run")


def test_slow_keepers_leave_bad_debt_that_the_fund_and_the_holders_of_cash_pay(tmp_path: Path) -> None:
    """Keepers four steps late, traders at 10x: insolvent auctions; the fund pays what it holds, the rest is
    socialised (the state's loss index moves), and the fund's path is its income less its draws."""
    m = copy.deepcopy(CRASH)
    m["agents"][0] |= {"leverage": 10.0, "size": [60_000.0, 100_000.0]}
    m["agents"][2]["latency_steps"] = 4
    s = scenario_from_mapping(m)
    backend = make_backend("twin", s)
    try:
        run(s, backend, folder=tmp_path / "late")
        loss_index = backend.state().loss_index
    finally:
        backend.close()
    summary = check_metrics(tmp_path / "late")
    d = {k: Decimal(v) for k, v in summary.items() if k.endswith("_usd") and isinstance(v, str)}
    assert d["bad_debt_usd"] > 0 and d["fund_draws_usd"] > 0 and d["socialised_usd"] > 0
    assert loss_index > 0
    assert (
        d["fund_end_usd"] - d["fund_start_usd"]
        == d["fund_fee_income_usd"] + d["liquidation_fees_usd"] - d["fund_draws_usd"]
    )
    liqs = read_run(tmp_path / "late").liquidations
    assert sum(Decimal(x.fund_draw_usd) for x in liqs) == d["fund_draws_usd"]
    assert sum(Decimal(x.socialised_usd) for x in liqs) == d["socialised_usd"]
    assert all(Decimal(x.notional_usd) > 0 for x in liqs)


def test_keepers_bid_at_the_first_second_an_auction_pays_them_within_the_step(tmp_path: Path) -> None:
    """An auction that does not pay a keeper at the step's own rounds is bid later in the same step, at
    the first second its bid pays (a keeper watches every block), one second after an empty block (the
    chain goes on producing blocks; the engine attests the bid on the latest one), and before the next
    price round."""
    from offchain.sim.backend import Bid

    s = scenario_from_mapping(CRASH)
    backend = make_backend("twin", s)
    applied: list[tuple[int, list[Any]]] = []
    inner = backend.apply

    def apply(when: int, intents: Any) -> Any:
        applied.append((when, list(intents)))
        return inner(when, intents)

    backend.apply = apply  # type: ignore[method-assign]
    try:
        rec = run(s, backend, folder=tmp_path / "late")
    finally:
        backend.close()
    step_s = s.run.step_seconds
    bid_times = {when for when, intents in applied if any(isinstance(i, Bid) for i in intents)}
    late = sorted(t for t in bid_times if (t - s.run.start) % step_s > 120)  # past the step's own rounds
    assert late, "no keeper bid later than the step's first rounds"
    empty = {when for when, intents in applied if not intents}
    for t in late:
        assert t - 1 in empty  # the block the bid's attestation is computed on
        assert t - 1 not in {w for w, i in applied if i and not all(isinstance(x, Bid) for x in i)}  # nothing else
    times = [r.time for r in rec.liquidations]
    assert set(times) <= bid_times and any(t in late for t in times)
    check_metrics(tmp_path / "late")
