"""Scenario files: the shipped ones load, errors name the field, resolve round-trips, fuzzing."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offchain.chain.params import LiquidationParams, OnchainParams
from offchain.errors import InputError
from offchain.sim.markets import GarchModel, MertonModel, RegimeModel, ReplayModel
from offchain.sim.scenario import (
    AGENT_KINDS,
    PROTOCOL_PARAMS,
    Scenario,
    load_scenario,
    parse_duration,
    resolve,
    scenario_from_mapping,
)

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
SHIPPED = ("calm", "replay-2020-03-12", "replay-2021-05-19", "crash-broken-correlation", "vol-regime-shift", "demo")

MINIMAL: dict[str, Any] = {
    "run": {"seed": 3, "steps": 24},
    "market": {"model": "gbm", "initial_prices": [60000.0, 3000.0], "vol": 0.5, "correlation": 0.7},
}


def minimal(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(MINIMAL)
    data.update(changes)
    return data


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_scenarios_load_validate_and_round_trip(name: str) -> None:
    scenario = load_scenario(SCENARIOS / f"{name}.toml")
    assert scenario.run.name == name
    path = scenario.market_path()
    assert path.steps == scenario.run.steps and path.underlyings == ("BTC", "ETH")
    assert np.array_equal(path.prices, scenario.market_path().prices)  # the run's seed: same path
    assert scenario.agents and all(a.kind in AGENT_KINDS for a in scenario.agents)
    resolved = resolve(scenario)
    again = scenario_from_mapping(json.loads(json.dumps(resolved)))  # a run folder stores it as JSON
    assert resolve(again) == resolved
    assert np.array_equal(again.market_path().prices, path.prices)


def test_every_shipped_scenario_file_is_tested() -> None:
    assert sorted(p.stem for p in SCENARIOS.glob("*.toml")) == sorted(SHIPPED)


def test_the_shipped_scenarios_use_the_models_they_describe() -> None:
    models = {name: load_scenario(SCENARIOS / f"{name}.toml").market for name in SHIPPED}
    crash = models["crash-broken-correlation"]
    assert isinstance(crash, MertonModel) and crash.timing == "independent"
    assert crash.gbm.base.correlation[0][1] == 0.1
    assert isinstance(models["vol-regime-shift"], RegimeModel)
    replay = models["replay-2020-03-12"]
    assert isinstance(replay, ReplayModel) and replay.source == "hourly-2020-03"
    scenario = load_scenario(SCENARIOS / "replay-2020-03-12.toml")
    prices = scenario.market_path().prices
    assert prices[:, 0].min() < 0.6 * prices[0, 0]  # the crash is in the window


def test_defaults_are_filled_in() -> None:
    scenario = scenario_from_mapping(minimal(), name="mini")
    assert scenario.run.name == "mini" and scenario.run.step_seconds == 3600 and scenario.run.backend == "twin"
    assert scenario.underlyings == ("BTC", "ETH")
    assert scenario.impact.daily_volume == (20e9, 10e9) and scenario.impact.y == 0.7
    assert scenario.protocol_params() == (OnchainParams(), LiquidationParams())
    resolved = resolve(scenario)
    assert resolved["run"] == {"name": "mini", "seed": 3, "steps": 24, "step_seconds": 3600, "backend": "twin",
                               "start": "2026-01-01T00:00:00Z"}  # fmt: skip


def test_duration_sets_the_steps() -> None:
    run = minimal()["run"]
    del run["steps"]
    scenario = scenario_from_mapping(minimal(run={**run, "duration": "2d", "step_seconds": 900}))
    assert scenario.run.steps == 192
    assert parse_duration("1.5h", "d") == 5400 and parse_duration(60, "d") == 60
    assert parse_duration("2w", "d") == 1_209_600


def test_agent_options_get_their_defaults_and_kind_checks() -> None:
    agents = [{"kind": "keeper", "capital": 1e5, "latency_steps": 2}, {"kind": "option_writer", "capital": 1e4,
              "size": [1e3, 5e3], "underlyings": ["ETH"], "strategy": "short_put"}]  # fmt: skip
    scenario = scenario_from_mapping(minimal(agents=agents))
    keeper, writer = scenario.agents
    assert keeper.options == {"latency_steps": 2, "gas_budget_usd": 1000.0, "unwind_liquidity_usd": 1e6,
                              "min_profit_usd": 0.0}  # fmt: skip
    assert keeper.size == (1e5, 1e5) and keeper.underlyings == ("BTC", "ETH") and keeper.count == 1
    assert writer.options["strategy"] == "short_put" and writer.underlyings == ("ETH",) and writer.size == (1e3, 5e3)


def test_protocol_overrides_reach_the_parameter_structs() -> None:
    structs = (OnchainParams, LiquidationParams)
    names = {f.name for struct in structs for f in dataclasses.fields(struct)}
    assert set(PROTOCOL_PARAMS) == names
    scenario = scenario_from_mapping(minimal(protocol={"maker_fee": 10**14, "buffer_ratio": 2 * 10**17}))
    onchain, liquidation = scenario.protocol_params()
    assert onchain.maker_fee == 10**14 and liquidation.buffer_ratio == 2 * 10**17
    assert liquidation.start_discount == LiquidationParams().start_discount


def test_risk_overrides_build_the_risk_config() -> None:
    scenario = scenario_from_mapping(minimal(risk={"mm_factor": 0.7, "grid": {"extreme_weight": 0.5}}))
    assert scenario.risk_config.mm_factor == 0.7 and scenario.risk_config.grid.extreme_weight == 0.5
    assert scenario.risk_config.grid.spot_shocks == load_scenario(SCENARIOS / "calm.toml").risk_config.grid.spot_shocks


def _set(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(data)
    *parents, last = dotted.split(".")
    node = out
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return out


_DELETE = object()


@pytest.mark.parametrize(
    ("dotted", "value", "field"),
    [
        ("market.model", "heston", "market.model"),
        ("market.vol", -0.5, "market.vol[0]"),
        ("market.vol", [0.5], "market.vol"),
        ("market.vol", "high", "market.vol"),
        ("market.correlation", 1.5, "market.correlation[0][1]"),
        ("market.correlation", [[1.0, 0.5], [0.4, 1.0]], "market.correlation[0][1]"),
        ("market.correlation", _DELETE, "market.correlation"),
        ("market.initial_prices", [1.0, 0.0], "market.initial_prices[1]"),
        ("market.jumps", {"intensity": 1.0}, "market.jumps"),
        ("market.colour", "blue", "market.colour"),
        ("market.underlyings", ["BTC", "BTC"], "market.underlyings"),
        ("run.seed", -1, "run.seed"),
        ("run.seed", 1.5, "run.seed"),
        ("run.steps", 0, "run.steps"),
        ("run.duration", "3d", "run.duration"),
        ("run.backend", "mainnet", "run.backend"),
        ("run.start", "yesterday", "run.start"),
        ("run.stesp", 3, "run.stesp"),
        ("impact.y", 11.0, "impact.y"),
        ("impact.daily_volume", [1.0, -1.0], "impact.daily_volume[1]"),
        ("impact.enabled", "yes", "impact.enabled"),
        ("protocol.maker_fe", 1, "protocol.maker_fe"),
        ("protocol.max_positions", 2**64, "protocol.max_positions"),
        ("protocol.fast_length", -1, "protocol.fast_length"),
        ("protocol.maker_fee", 0.0002, "protocol.maker_fee"),
        ("risk.mm_factor", 1.5, "risk.mm_factor"),
        ("risk.grid", {"colour": 1}, "risk.grid.colour"),
        ("risk.underlying", [], "risk.underlying"),
        ("format_version", 2, "format_version"),
        ("extra", {}, "extra"),
    ],
)
def test_errors_name_the_field(dotted: str, value: Any, field: str) -> None:
    with pytest.raises(InputError) as err:
        scenario_from_mapping(_set(MINIMAL, dotted, value))
    assert err.value.field == field, str(err.value)


@pytest.mark.parametrize(
    ("market", "field"),
    [
        ({"model": "merton", "jumps": {"intensity": -1.0, "mean": -0.1, "vol": 0.1}}, "market.jumps.intensity"),
        ({"model": "merton", "jumps": {"intensity": 1.0, "mean": -0.1}}, "market.jumps.vol"),
        (
            {"model": "merton", "jumps": {"intensity": 1.0, "mean": 0.0, "vol": 0.1, "timing": "x"}},
            "market.jumps.timing",
        ),
        ({"model": "garch", "garch": {"alpha": 0.2, "beta": 0.9}}, "market.garch.beta[0]"),
        ({"model": "garch", "garch": {"alpha": 0.1, "beta": 0.8, "gamma": 0.1}}, "market.garch.gamma"),
        (
            {
                "model": "regime",
                "regimes": {"transition": [[1.0]], "state": [{"name": "a", "vol": 0.2}, {"name": "b", "vol": 0.4}]},
            },
            "market.regimes.transition",
        ),
        (
            {"model": "regime", "regimes": {"transition": [[1.0]], "state": [{"name": "a", "vol": 0.2, "mu": 1}]}},
            "market.regimes.state[0].mu",
        ),
    ],
)
def test_model_table_errors_name_the_field(market: dict[str, Any], field: str) -> None:
    data = minimal()
    data["market"].update(market)
    if market["model"] == "regime":
        del data["market"]["vol"]
    with pytest.raises(InputError) as err:
        scenario_from_mapping(data)
    assert err.value.field == field, str(err.value)


@pytest.mark.parametrize(
    ("agent", "field"),
    [
        ({"kind": "whale", "capital": 1.0}, "agents[0].kind"),
        ({"kind": "keeper"}, "agents[0].capital"),
        ({"kind": "keeper", "capital": 1.0, "count": 0}, "agents[0].count"),
        ({"kind": "keeper", "capital": 1.0, "size": [5.0, 1.0]}, "agents[0].size"),
        ({"kind": "keeper", "capital": 1.0, "leverage": 3.0}, "agents[0].leverage"),
        ({"kind": "option_writer", "capital": 1.0, "strategy": "straddle"}, "agents[0].strategy"),
        ({"kind": "trend_trader", "capital": 1.0, "lookback_steps": 0}, "agents[0].lookback_steps"),
        ({"kind": "depositor", "capital": 1.0, "underlyings": ["SOL"]}, "agents[0].underlyings[0]"),
        ({"kind": "mean_reversion_trader", "capital": 1.0, "entry_z": 1.0, "exit_z": 2.0}, "agents[0].exit_z"),
    ],
)
def test_agent_errors_name_the_field(agent: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError) as err:
        scenario_from_mapping(minimal(agents=[agent]))
    assert err.value.field == field, str(err.value)


def test_duplicate_population_names_are_refused() -> None:
    agents = [{"kind": "keeper", "capital": 1.0}, {"kind": "keeper", "capital": 2.0}]
    with pytest.raises(InputError) as err:
        scenario_from_mapping(minimal(agents=agents))
    assert err.value.field == "agents[1].name"


def test_replay_run_checks() -> None:
    market = {"model": "replay", "replay": {"source": "daily", "start": "2020-01-01", "end": "2020-02-01"}}
    scenario = scenario_from_mapping({"market": market})
    assert scenario.run.steps == 31 and scenario.run.step_seconds == 86_400 and scenario.run.start == 1_577_836_800
    for run, field in (({"step_seconds": 3600}, "run.step_seconds"), ({"steps": 32}, "run.steps"),
                       ({"start": "2020-01-01"}, "run.start"), ({"duration": "40d"}, "run.duration")):  # fmt: skip
        with pytest.raises(InputError) as err:
            scenario_from_mapping({"market": market, "run": run})
        assert err.value.field == field


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        load_scenario(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[run\nseed = 1\n")
    with pytest.raises(InputError, match="TOML syntax error"):
        load_scenario(bad)


# ----------------------------------------------------------------------------- property-based: only InputError

_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        [
            "gbm",
            "merton",
            "regime",
            "garch",
            "replay",
            "daily",
            "hourly-2020-03",
            "2020-03-10",
            "30d",
            "BTC",
            "ETH",
            "keeper",
            "option_writer",
            "common",
            "ewma",
            "twin",
        ]
    ),
)
_value = st.recursive(
    _leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_KEYS = ["run", "market", "impact", "agents", "protocol", "risk", "model", "vol", "steps", "seed", "correlation",
         "initial_prices", "jumps", "garch", "regimes", "replay", "state", "transition", "kind", "capital", "count",
         "size", "duration", "source", "start", "end", "mm_factor", "grid", "maker_fee", "0", "1"]  # fmt: skip


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(data, dict):
        for k, v in data.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def _mutated(draw: st.DrawFn) -> Any:
    """A valid scenario (resolved calm, or a minimal one) with a few leaves replaced, added or deleted."""
    base = draw(st.sampled_from([_CALM, MINIMAL, _REPLAY]))
    data = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(data)
        path = draw(st.sampled_from(paths))
        if not path:
            data = draw(_value) if draw(st.booleans()) and draw(st.booleans()) else data
            continue
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(_value)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent[path[-1]], dict):
            parent[path[-1]][draw(st.sampled_from(_KEYS))] = draw(_value)
    return data


_CALM = resolve(load_scenario(SCENARIOS / "calm.toml"))
_REPLAY = resolve(load_scenario(SCENARIOS / "replay-2020-03-12.toml"))


def _check_only_input_error(data: Any) -> None:
    try:
        result = scenario_from_mapping(data)
    except InputError as exc:
        assert exc.field and str(exc)
        return
    assert isinstance(result, Scenario)
    assert resolve(scenario_from_mapping(resolve(result))) == resolve(result)
    market, run = result.market, result.run
    steps = min(run.steps, 5)  # a scenario that loads also generates its market
    if isinstance(market, ReplayModel):
        path = market.simulate(steps)
    else:
        path = market.simulate(steps, run.step_seconds, run.seed, run.start)
    assert path.steps == steps and np.all(np.isfinite(path.prices)) and np.all(path.iv > 0)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated())
def test_mutated_scenarios_give_a_scenario_or_an_input_error(data: Any) -> None:
    _check_only_input_error(data)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(_KEYS), _value, max_size=5))
def test_random_mappings_give_only_input_errors(data: Any) -> None:
    _check_only_input_error(data)


def test_garch_scenario() -> None:
    data = minimal()
    data["market"].update({"model": "garch", "garch": {"alpha": 0.05, "beta": 0.9, "initial_vol": [0.8, 1.0]}})
    scenario = scenario_from_mapping(data)
    assert isinstance(scenario.market, GarchModel)
    assert np.allclose(scenario.market_path().iv[0], [0.88, 1.1])
