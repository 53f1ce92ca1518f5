"""scripts/slither_check.py: findings keyed by detector + contract + function (never line numbers),
untriaged high/medium findings fail, low ones never do; the checked-in triage file is well formed."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("slither_check", ROOT / "scripts" / "slither_check.py")
assert _spec and _spec.loader
sc = importlib.util.module_from_spec(_spec)
sys.modules["slither_check"] = sc  # dataclasses resolve their module by name
_spec.loader.exec_module(sc)


def _fn(name: str, contract: str, lines: list[int]) -> dict[str, Any]:
    return {"type": "function", "name": name,
            "source_mapping": {"filename_relative": f"contracts/{contract}.sol", "lines": lines},
            "type_specific_fields": {"parent": {"type": "contract", "name": contract}}}  # fmt: skip


def _node(fn: dict[str, Any], line: int) -> dict[str, Any]:
    return {"type": "node", "name": "x = y / z", "source_mapping": {"lines": [line]},
            "type_specific_fields": {"parent": fn}}  # fmt: skip


def _result(check: str, impact: str, elements: list[dict[str, Any]]) -> dict[str, Any]:
    return {"check": check, "impact": impact, "confidence": "Medium", "description": f"{check} here\nmore",
            "elements": elements}  # fmt: skip


def _report(*results: dict[str, Any]) -> dict[str, Any]:
    return {"success": True, "error": None, "results": {"detectors": list(results)}}


def _triage(tmp_path: Path, *entries: tuple[str, str, str]) -> Path:
    text = "".join(f'[[finding]]\ndetector = "{d}"\ncontract = "{c}"\nfunction = "{f}"\nreason = "because"\n\n'
                   for d, c, f in entries)  # fmt: skip
    path = tmp_path / "triage.toml"
    path.write_text(text)
    return path


def _check(tmp_path: Path, report: dict[str, Any], triage: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    saved = tmp_path / "report.json"
    saved.write_text(json.dumps(report))
    code = sc.main(["--triage", str(triage), "--report", str(saved)])
    return code, capsys.readouterr().out


def test_keys_ignore_line_numbers() -> None:
    a = _result("divide-before-multiply", "Medium", [_fn("mulDiv", "Math", [10, 20])])
    b = _result("divide-before-multiply", "Medium", [_node(_fn("mulDiv", "Math", [110, 120]), 115)])
    assert sc.finding_key(a) == sc.finding_key(b) == sc.Key("divide-before-multiply", "Math", "mulDiv")
    setter = _fn("setQuorum", "ISignerQuorum", [3])
    param = {"type": "variable", "name": "quorum", "type_specific_fields": {"parent": setter}}
    assert sc.finding_key(_result("shadowing-local", "Low", [param])).function == "setQuorum.quorum"


def test_untriaged_medium_fails_and_is_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = _report(_result("unused-return", "Medium", [_fn("withdraw", "Vault", [5, 9])]),
                     _result("timestamp", "Low", [_fn("post", "PriceFeed", [1, 2])]))  # fmt: skip
    code, out = _check(tmp_path, report, _triage(tmp_path), capsys)
    assert code == 1
    assert "UNTRIAGED medium: unused-return @ Vault.withdraw" in out and "contracts/Vault.sol#5-9" in out
    assert "PriceFeed" not in out  # low findings never gate
    assert "0 of 1 high/medium triaged, 1 not" in out


def test_triaged_findings_pass_and_stale_entries_are_noted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = _report(_result("weak-prng", "High", [_fn("_accrue", "Instruments", [70, 80])]))
    triage = _triage(tmp_path, ("weak-prng", "Instruments", "_accrue"), ("incorrect-exp", "Math", "mulDiv"))
    code, out = _check(tmp_path, report, triage, capsys)
    assert code == 0, out
    assert "no longer reported" in out and "incorrect-exp @ Math.mulDiv" in out
    # the same finding in another function is not covered by the entry
    moved = _report(_result("weak-prng", "High", [_fn("_settle", "Instruments", [70, 80])]))
    assert _check(tmp_path, moved, triage, capsys)[0] == 1


def test_triage_entries_need_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text('[[finding]]\ndetector = "x"\ncontract = "C"\nfunction = "f"\nreason = " "\n')
    with pytest.raises(SystemExit, match="reason"):
        sc.load_triage(path)


def test_checked_in_triage_file_is_well_formed() -> None:
    triage = sc.load_triage(ROOT / "slither.triage.toml")
    assert triage and all(len(reason) > 40 for reason in triage.values())
