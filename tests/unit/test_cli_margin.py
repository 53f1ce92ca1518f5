"""``pmsim margin`` through typer's CliRunner: tables, JSON, CSV flags, strategies, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from offchain.cli_margin import margin
from offchain.risk.config import RiskConfig
from offchain.risk.strategies import strategy_markdown, strategy_rows

from .test_risk_positions_file import CSV, NOW, SAMPLE, _broken

app = typer.Typer()
app.command()(margin)
runner = CliRunner()


def _json_file(tmp_path: Path, doc: dict) -> str:
    path = tmp_path / "positions.json"
    path.write_text(json.dumps(doc))
    return str(path)


def test_table_output(tmp_path: Path) -> None:
    result = runner.invoke(app, [_json_file(tmp_path, SAMPLE), "--no-liquidation"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for text in (
        "Portfolio margin, round 7",
        "alice",
        "bob",
        "carol",
        "book",
        "Net Greeks",
        "Worst scenarios",
        "config hash 0x",
    ):
        assert text in result.output


def test_json_output(tmp_path: Path, config: RiskConfig) -> None:
    result = runner.invoke(app, [_json_file(tmp_path, SAMPLE), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["round_id"] == 7 and doc["config_hash"] == "0x" + config.canonical_hash().hex()
    accounts = {a["account"]: a for a in doc["accounts"]}
    bob = accounts["bob"]
    assert bob["margin"]["offset_credit"] > 0  # BTC long against ETH short
    assert bob["underlyings"]["ETH"]["delta"] == -20.0
    assert bob["underlyings"]["ETH"]["liquidation"]["up"] > 3_000.0
    assert accounts["carol"]["margin_ratio"] < 1.0 and doc["liquidatable"] == 1
    assert doc["totals"]["im"] == pytest.approx(sum(a["margin"]["im"] for a in doc["accounts"]))


def test_csv_with_market_flags(tmp_path: Path) -> None:
    path = tmp_path / "positions.csv"
    path.write_text(CSV)
    args = [str(path), "--json", "--no-liquidation", "--now", str(NOW), "--round", "7"]
    args += ["--spot", "BTC=60000", "--spot", "ETH=3000", "--vol", "BTC=0.55", "--vol", "ETH=0.7"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert [a["account"] for a in json.loads(result.output)["accounts"]] == ["alice", "bob", "carol"]


def test_strategies_table(config: RiskConfig) -> None:
    result = runner.invoke(app, ["--strategies"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == strategy_markdown(strategy_rows(config))


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (_broken("accounts.1.positions.1.size", "lots"), "error: accounts[1].positions[1].size: expected a number"),
        (
            _broken("accounts.0.positions.1.instrument", 99),
            "error: accounts[0].positions[1].instrument: unknown instrument id 99",
        ),
        (_broken("spot.ETH", -3), "error: market.spot[1]: must be finite and > 0"),
    ],
)
def test_bad_files_give_one_line_and_exit_2(tmp_path: Path, doc: dict, message: str) -> None:
    result = runner.invoke(app, [_json_file(tmp_path, doc)])
    assert result.exit_code == 2
    assert result.output.startswith(message)
    assert result.output.count("\n") == 1 and "Traceback" not in result.output


def test_missing_and_unreadable_inputs(tmp_path: Path) -> None:
    for args, message in (
        ([], "error: POSITIONS_FILE: missing"),
        ([str(tmp_path / "absent.json")], "error: "),
        ([str(tmp_path / "p.csv"), "--now", "1", "--spot", "BTC60000"], "error: --spot: expected SYMBOL=NUMBER"),
        (["x.json", "--config", str(tmp_path / "none.toml")], "error: "),
    ):
        (tmp_path / "p.csv").write_text(CSV)
        result = runner.invoke(app, args)
        assert result.exit_code == 2, args
        assert result.output.startswith(message) and result.output.count("\n") == 1
