"""Property: whatever a positions file holds, ``pmsim margin`` answers with a report or one error line
naming the field at fault (exit code 2) — never a traceback, never a silent absurdity.

The files are the documented sample with one entry replaced (or removed, or an entry added) by
hostile values: huge and tiny numbers, NaN, infinities, wrong types, deep nesting, long strings.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from offchain.cli_margin import margin
from offchain.errors import InputError
from offchain.protocol import MAX_POSITIONS, MAX_SIZE, SIZE_SCALE
from offchain.risk.config import RiskConfig
from offchain.risk.positions_file import MarketFlags, load_positions

from .test_risk_positions_file import CSV, NOW, SAMPLE

app = typer.Typer()
app.command()(margin)
runner = CliRunner()
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

HOSTILE = st.one_of(
    st.sampled_from([10**30, -(10**30), 1e30, -1e30, 1e300, -1e300, 2**64, -(2**63) - 1, 10**400, 0, -1, 0.0,
                     1e-300, 5e-324, True, None, "", "1e400", "NaN", [], {}, [[[[[]]]]], {"a": {"b": {}}}]),
    st.integers(), st.floats(), st.text(max_size=30), st.booleans(),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)  # fmt: skip


def _paths(node: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every key path in the document (tables and leaves)."""
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


PATHS = _paths(SAMPLE)


@st.composite
def hostile_documents(draw: st.DrawFn) -> Any:
    doc = copy.deepcopy(SAMPLE)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        node: Any = doc
        try:
            for key in path[:-1]:
                node = node[key]
            action = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add"]))
            if action == "delete" and isinstance(node, dict):
                del node[path[-1]]
            elif action == "add" and isinstance(node, dict):
                node[draw(st.text(max_size=8))] = draw(HOSTILE)
            else:
                node[path[-1]] = draw(HOSTILE)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change removed or retyped a parent
    return doc


def _dump(doc: Any) -> str:
    return json.dumps(doc, allow_nan=True, default=str)


def _assert_error_names_a_field(output: str) -> None:
    line = output.strip().splitlines()[-1]
    assert line.startswith("error: ") and ": " in line.removeprefix("error: "), output


@FUZZ
@given(doc=hostile_documents())
def test_reader_answers_a_report_or_an_error_naming_the_field(config: RiskConfig, tmp_path: Path, doc: Any) -> None:
    path = tmp_path / "positions.json"
    path.write_text(_dump(doc))
    try:
        data = load_positions(path, config)
    except InputError as exc:
        assert exc.field and str(exc).startswith(exc.field)
        return
    # accepted: then every figure is within what the contracts could hold
    sizes = data.book.positions.data
    assert all(math.isfinite(x) and abs(x) <= MAX_SIZE / SIZE_SCALE for x in sizes)
    assert max(data.book.positions.getnnz(axis=1), default=0) <= MAX_POSITIONS


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=hostile_documents())
def test_cli_never_shows_a_traceback(tmp_path: Path, doc: Any) -> None:
    path = tmp_path / "positions.json"
    path.write_text(_dump(doc))
    result = runner.invoke(app, [str(path), "--json", "--no-liquidation"])
    assert result.exit_code in (0, 2), (result.output, result.exception)
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        _assert_error_names_a_field(result.output)
    else:
        report = json.loads(result.stdout)
        assert all(math.isfinite(a["margin"]["im"]) for a in report["accounts"])


CELLS = st.one_of(st.sampled_from(["1e30", "-1e30", "1e400", "nan", "inf", "", "x", "99", "-5", "0", "1e-320",
                                   "CASH", "COLLATERAL", "WETH", "PERP", "CALL", "18446744073709551616"]),
                  st.text(alphabet="0123456789.-e", max_size=12))  # fmt: skip


@FUZZ
@given(data=st.data())
def test_csv_reader_answers_a_report_or_an_error_naming_the_field(config: RiskConfig, tmp_path: Path,
                                                                  data: st.DataObject) -> None:  # fmt: skip
    lines = CSV.strip().splitlines()
    row = data.draw(st.integers(1, len(lines) - 1))
    cells = lines[row].split(",")
    col = data.draw(st.integers(0, len(cells) - 1))
    cells[col] = data.draw(CELLS)
    lines[row] = ",".join(cells)
    path = tmp_path / "positions.csv"
    path.write_text("\n".join(lines) + "\n")
    spot = {"BTC": data.draw(st.sampled_from([60_000.0, 1e30, -1.0, math.inf, 1e-300])), "ETH": 3_000.0}
    flags = MarketFlags(now=NOW, round_id=7, spot=spot, vol={"BTC": 0.55, "ETH": 0.7})
    try:
        load_positions(path, config, flags)
    except InputError as exc:
        assert exc.field and str(exc).startswith(exc.field)


@pytest.mark.parametrize(
    ("value", "field"),
    [(1e30, "accounts[0].positions[0].size"), (-1e13, "accounts[0].positions[0].size"),
     (1e400, "accounts[0].positions[0].size")],
)  # fmt: skip
def test_sizes_beyond_the_contracts_are_refused(tmp_path: Path, value: float, field: str) -> None:
    doc = copy.deepcopy(SAMPLE)
    doc["accounts"][0]["positions"][0]["size"] = value
    path = tmp_path / "positions.json"
    path.write_text(_dump(doc))
    result = runner.invoke(app, [str(path), "--json", "--no-liquidation"])
    assert result.exit_code == 2, result.output
    assert f"error: {field}:" in result.output


def test_more_positions_than_the_contracts_allow_are_refused(tmp_path: Path) -> None:
    doc = copy.deepcopy(SAMPLE)
    doc["instruments"] = [{"id": i, "kind": "PERP", "underlying": "BTC"} for i in range(1, MAX_POSITIONS + 2)]
    doc["accounts"] = [{"id": "whale", "cash": 1e6,
                        "positions": [{"instrument": i, "size": 1.0, "entry_price": 60_000}
                                      for i in range(1, MAX_POSITIONS + 2)]}]  # fmt: skip
    path = tmp_path / "positions.json"
    path.write_text(_dump(doc))
    result = runner.invoke(app, [str(path), "--json", "--no-liquidation"])
    assert result.exit_code == 2 and "error: accounts[0].positions:" in result.output, result.output


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--spot", "BTC=1e400"), ("--spot", "BTC=nan"), ("--spot", "BTC=1e30"), ("--vol", "BTC=1e300"),
     ("--now", str(10**30)), ("--round", "-1")],
)  # fmt: skip
def test_csv_market_flags_out_of_range_are_refused(tmp_path: Path, flag: str, value: str) -> None:
    path = tmp_path / "positions.csv"
    path.write_text(CSV)
    args = {"--now": str(NOW), "--round": "7", "--spot": "BTC=60000", "--vol": "BTC=0.55"} | {flag: value}
    argv = [str(path), "--json", "--no-liquidation", "--spot", "ETH=3000"]
    for k, v in args.items():
        argv += [k, v]
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: {flag}"), result.output
