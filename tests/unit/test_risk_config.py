"""Configuration: loading, validation errors naming dotted fields, canonical hash."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from eth_utils import keccak

from offchain.errors import ConfigError
from offchain.risk.config import DEFAULT_CONFIG_PATH, RiskConfig, config_from_mapping, load_config

BASE = tomllib.loads(DEFAULT_CONFIG_PATH.read_text())


def _load(edit: Callable[[dict[str, Any]], None]) -> RiskConfig:
    data = copy.deepcopy(BASE)
    edit(data)
    return config_from_mapping(data, DEFAULT_CONFIG_PATH.parent)


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        if last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return edit


def test_default_configuration(config: RiskConfig) -> None:
    assert config.symbols == ("BTC", "ETH")
    assert [c.symbol for c in config.collateral] == ["USDC", "WETH", "WBTC"]
    assert [c.haircut for c in config.collateral] == [0.0, 0.10, 0.10]
    assert config.es.method == "historical"
    assert (config.es.window_days, config.es.volatility_filter, config.es.ewma_lambda) == (0, "ewma", 0.97)
    assert config.es.stress_period == ()
    assert (config.es.es_level, config.es.var_level, config.es.horizon_days) == (0.975, 0.99, 1.0)
    # joint BTC/ETH daily closes: 2016-05-27 .. 2025-09-23 (3,407 days), 3,406 one-day returns
    assert len(config.history.dates) == 3406
    assert (config.history.dates[0], config.history.dates[-1]) == ("2016-05-28", "2025-09-23")
    # SOURCES.md: BTC close 2020-03-12 4857.10 (Coinbase); the day's return is about -39 %
    day = config.history.dates.index("2020-03-12")
    assert config.history.returns[day, 0] == pytest.approx(-0.388, abs=0.001)


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("grid.spot_shocks.3", "zero", "grid.spot_shocks[3]"),
        ("grid.spot_shocks.3", 0.5, "grid.spot_shocks[4]"),
        ("grid.spot_shocks.6", 1.5, "grid.spot_shocks[6]"),
        ("grid.vol_shocks.0", -1.0, "grid.vol_shocks[0]"),
        ("grid.extreme_weight", 1.5, "grid.extreme_weight"),
        ("grid.extreme_multiple", 8.0, "grid.extreme_multiple"),
        ("underlying.1.spot_range", -0.2, "underlying[1].spot_range"),
        ("underlying.0.symbol", "ETH", "underlying[1].symbol"),
        ("underlying.0.standard_short_floor", 0.5, "underlying[0].standard_short_floor"),
        ("collateral.1.haircut", 1.0, "collateral[1].haircut"),
        ("collateral.2.underlying", "SOL", "collateral[2].underlying"),
        ("mm_factor", 0.0, "mm_factor"),
        ("mm_factor", True, "mm_factor"),
        ("es.method", "parametric", "es.method"),
        ("es.es_level", 1.0, "es.es_level"),
        ("es.window_days", 20, "es.es_level"),
        ("es.volatility_filter", "garch", "es.volatility_filter"),
        ("es.ewma_lambda", 1.0, "es.ewma_lambda"),
        ("es.ewma_lambda", 0.0, "es.ewma_lambda"),
        ("es.stress_period", ["2020-03-01"], "es.stress_period"),
        ("es.stress_period", ["2020-03-01", "2020-13-01"], "es.stress_period[1]"),
        ("es.stress_period", ["2020-04-01", "2020-03-01"], "es.stress_period"),
        ("es.stress_period", "2020-03", "es.stress_period"),
        ("monte_carlo.paths", 10, "monte_carlo.paths"),
        ("monte_carlo.student_t_dof", 1.5, "monte_carlo.student_t_dof"),
        ("correlation.matrix", [[1.0, 0.7], [0.6, 1.0]], "correlation.matrix[0][1]"),
        ("correlation.matrix", [[1.0, 0.7], [0.7, 0.9]], "correlation.matrix[1][1]"),
        ("correlation.matrix", [[1.0, 0.7]], "correlation.matrix"),
        ("correlation.matrix", [[1.0, 1.2], [1.2, 1.0]], "correlation.matrix[0][1]"),
    ],
)
def test_malformed_values_name_the_dotted_field(path: str, value: object, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(_set(path, value))
    assert info.value.field == field
    assert str(info.value).startswith(field + ": ")


def test_non_psd_correlation_is_rejected() -> None:
    three = [[1.0, 0.9, -0.9], [0.9, 1.0, 0.9], [-0.9, 0.9, 1.0]]  # symmetric, unit diagonal, not PSD

    def edit(data: dict[str, Any]) -> None:
        extra = copy.deepcopy(data["underlying"][1]) | {"symbol": "SOL"}
        data["underlying"].append(extra)
        data["correlation"]["matrix"] = three

    with pytest.raises(ConfigError, match="positive semi-definite") as info:
        _load(edit)
    assert info.value.field == "correlation.matrix"


def test_unknown_and_missing_keys() -> None:
    with pytest.raises(ConfigError) as info:
        _load(_set("grid.spot_shock", [0.0]))
    assert info.value.field == "grid.spot_shock"
    with pytest.raises(ConfigError) as info:
        _load(lambda d: d["grid"].pop("vol_shocks"))
    assert (info.value.field, str(info.value)) == ("grid.vol_shocks", "grid.vol_shocks: missing")
    with pytest.raises(ConfigError) as info:
        _load(_set("underlying.1.history_csv", "../data/market/nope.csv"))
    assert info.value.field == "underlying[1].history_csv"


def test_toml_syntax_error_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "risk.toml"
    bad.write_text("mm_factor = = 0.8\n")
    with pytest.raises(ConfigError, match="TOML syntax error") as info:
        load_config(bad)
    assert info.value.field == str(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


def test_replace_is_validated_too(config: RiskConfig) -> None:
    with pytest.raises(ConfigError) as info:
        dataclasses.replace(config, grid=dataclasses.replace(config.grid, decorrelation_weight=-0.1))
    assert info.value.field == "grid.decorrelation_weight"


def test_canonical_json_form(config: RiskConfig) -> None:
    text = config.canonical_json()
    assert " " not in text.replace("pmsim.risk/1", "")
    doc = json.loads(text)
    assert list(doc) == sorted(doc)
    assert doc["schema"] == "pmsim.risk/1"
    assert doc["grid"]["spot_shocks"] == list(config.grid.spot_shocks)
    assert doc["history"]["digest"] == config.history.digest()
    assert "history_csv" not in text and "data/market" not in text  # paths never enter the hash
    assert '"haircut":0.1,' in text  # floats as repr, ints from TOML become floats
    assert config.canonical_hash() == bytes(keccak(text.encode()))
    assert len(config.canonical_hash()) == 32


def test_canonical_hash_binds_every_parameter_and_the_data(config: RiskConfig) -> None:
    same = _load(lambda d: None)
    assert same.canonical_hash() == config.canonical_hash()
    reordered = _load(lambda d: d.update(dict(reversed(list(d.items())))))
    assert reordered.canonical_hash() == config.canonical_hash()
    changed = {
        _load(_set("mm_factor", 0.7)).canonical_hash(),
        _load(_set("collateral.1.haircut", 0.11)).canonical_hash(),
        _load(_set("grid.vol_shocks.2", 0.31)).canonical_hash(),
        _load(_set("es.window_days", 1000)).canonical_hash(),
        _load(_set("es.ewma_lambda", 0.96)).canonical_hash(),
        _load(_set("es.stress_period", ["2020-03-01", "2020-03-31"])).canonical_hash(),
        _load(_set("underlying.0.history_csv", "../data/market/eth_usd_1d.csv")).canonical_hash(),
    }
    assert len(changed) == 7
    assert config.canonical_hash() not in changed


def test_volatility_surface_in_the_configuration(config: RiskConfig) -> None:
    surfaces = config.vol_surfaces()
    assert len(surfaces) == 2 and surfaces is config.vol_surfaces()
    btc = config.underlyings[0].vol
    assert float(surfaces[0].implied_vol(0.0, btc[0].t)) == pytest.approx(
        math.sqrt(float(btc[0].total_variance(0.0)) / btc[0].t)
    )
    assert json.loads(config.canonical_json())["underlyings"][0]["vol"][0]["rho"] == btc[0].rho


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ([[0.25, 0.05, 0.1, -0.3, 0.0]], "underlying[0].vol[0]"),
        ([[0.25, 0.05, 0.1, -1.3, 0.0, 0.2]], "underlying[0].vol[0][3]"),
        ([[1.0, 0.3, 0.2, -0.3, 0.0, 0.3], [0.25, 0.05, 0.1, -0.3, 0.0, 0.2]], "underlying[0].vol[1]"),
        ([[0.25, 0.05, 0.1, -0.3, 0.0, 0.2], [1.0, 0.01, 0.01, -0.3, 0.0, 0.2]], "underlying[0].vol[1]"),
        ("flat", "underlying[0].vol"),
    ],
)
def test_bad_volatility_pillars_name_the_field(value: object, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(_set("underlying.0.vol", value))
    assert info.value.field == field
