"""Static analysis gate: run Slither on contracts/ and fail on any high or medium finding that is not
triaged in ``slither.triage.toml``.

    .venv/bin/python scripts/slither_check.py            # what scripts/test.sh runs
    .venv/bin/python scripts/slither_check.py --all      # also list the low / informational findings

Slither (PyPI ``slither-analyzer``, in its own virtualenv ``.venv-slither`` made by
``scripts/setup.sh``) runs with the project's solc (``.solcx/solc-v0.8.37``, the solc-js shim or a
native solc) and OpenZeppelin from ``node_modules``. A finding is keyed by detector, contract and
function (or state variable, or event) name, never by line number, so editing a file does not
un-triage it. Each triage entry needs a reason. Exit status: 0 when every high and medium finding is
triaged, 1 when some are not (they are printed first), 2 when Slither itself fails.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GATED = ("High", "Medium")
SLITHER_ARGS = [
    "contracts",
    "--solc-standard-json",
    "--solc", ".solcx/solc-v0.8.37",
    "--solc-remaps", "@openzeppelin/contracts/=node_modules/@openzeppelin/contracts/",
    "--exclude-dependencies",
]  # fmt: skip


@dataclass(frozen=True)
class Key:
    """What a finding is about, stable across line moves: detector, contract, function/variable."""

    detector: str
    contract: str
    function: str

    def __str__(self) -> str:
        where = f"{self.contract}.{self.function}" if self.function else self.contract
        return f"{self.detector} @ {where}"


@dataclass(frozen=True)
class Finding:
    key: Key
    impact: str
    confidence: str
    description: str
    where: str  # file:lines of the first element, for the reader only


def finding_key(result: dict[str, Any]) -> Key:
    """The key of one Slither detector result, from its first element (a function, a node inside a
    function, a state variable, an event or a contract)."""
    elements = result.get("elements") or [{}]
    el = elements[0]
    kind, name = el.get("type", ""), el.get("name", "")
    parent = el.get("type_specific_fields", {}).get("parent", {})
    if kind == "node":  # a statement: its parent is the function
        fn = parent
        contract = fn.get("type_specific_fields", {}).get("parent", {}).get("name", "")
        return Key(result["check"], contract, fn.get("name", ""))
    if kind == "contract":
        return Key(result["check"], name, "")
    if parent.get("type") == "function":  # a parameter or local variable: contract.function.variable
        contract = parent.get("type_specific_fields", {}).get("parent", {}).get("name", "")
        return Key(result["check"], contract, f"{parent.get('name', '')}.{name}")
    return Key(result["check"], parent.get("name", ""), name)  # function, state variable, event, modifier


def parse(report: dict[str, Any]) -> list[Finding]:
    out = []
    for r in report.get("results", {}).get("detectors", []):
        el = (r.get("elements") or [{}])[0]
        sm = el.get("source_mapping", {})
        lines = sm.get("lines") or [0]
        where = f"{sm.get('filename_relative', '?')}#{lines[0]}-{lines[-1]}"
        first = r.get("description", "").strip().splitlines()[0] if r.get("description") else ""
        out.append(Finding(finding_key(r), r["impact"], r["confidence"], first, where))
    return out


def load_triage(path: Path) -> dict[Key, str]:
    """``[[finding]]`` tables with ``detector``, ``contract``, ``function`` ("" for a whole
    contract) and a non-empty ``reason``."""
    raw = tomllib.loads(path.read_text())
    triage: dict[Key, str] = {}
    for i, entry in enumerate(raw.get("finding", [])):
        missing = [f for f in ("detector", "contract", "function", "reason") if f not in entry]
        if missing or not str(entry.get("reason", "")).strip():
            raise SystemExit(f"{path}: finding[{i}]: needs detector, contract, function and a reason ({missing})")
        triage[Key(entry["detector"], entry["contract"], entry["function"])] = entry["reason"]
    return triage


def run_slither(slither: Path) -> tuple[dict[str, Any], float]:
    if not slither.exists():
        raise SystemExit(f"{slither} not found: run scripts/setup.sh (installs Slither into .venv-slither)")
    start = time.monotonic()
    proc = subprocess.run([str(slither), *SLITHER_ARGS, "--json", "-"], cwd=ROOT, capture_output=True, text=True,
                          check=False)  # fmt: skip
    took = time.monotonic() - start
    try:
        report: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError:
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n", file=sys.stderr)
        raise SystemExit(2) from None
    if not report.get("success"):
        print(f"slither failed: {report.get('error')}\n{proc.stderr[-3000:]}", file=sys.stderr)
        raise SystemExit(2)
    return report, took


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--triage", type=Path, default=ROOT / "slither.triage.toml")
    ap.add_argument("--slither", type=Path, default=ROOT / ".venv-slither" / "bin" / "slither")
    ap.add_argument("--report", type=Path, help="also load this saved `slither --json` report instead of running")
    ap.add_argument("--all", action="store_true", help="list low and informational findings too")
    args = ap.parse_args(argv)

    triage = load_triage(args.triage)
    if args.report:
        report, took = json.loads(args.report.read_text()), 0.0
    else:
        report, took = run_slither(args.slither)
    findings = parse(report)
    gated = [f for f in findings if f.impact in GATED]
    untriaged = [f for f in gated if f.key not in triage]
    seen = {f.key for f in gated}
    stale = [k for k in triage if k not in seen]

    shown: Counter[Key] = Counter(f.key for f in untriaged)
    for f in untriaged:
        if shown[f.key] == 0:
            continue
        times = f" ({shown[f.key]} results)" if shown[f.key] > 1 else ""
        shown[f.key] = 0
        print(f"UNTRIAGED {f.impact.lower()}: {f.key}{times}  ({f.where}; confidence {f.confidence.lower()})")
        print(f"    {f.description}")
    if untriaged:
        print("  -> fix it, or add a [[finding]] with detector/contract/function and the reason to "
              f"{args.triage.relative_to(ROOT) if args.triage.is_relative_to(ROOT) else args.triage}")  # fmt: skip
    if args.all:
        for f in findings:
            if f.impact not in GATED:
                print(f"{f.impact.lower():>13}: {f.key}  ({f.where})")
    for k in stale:
        print(f"note: triaged but no longer reported (remove it from the triage file?): {k}")
    by_impact = Counter(f.impact for f in findings)
    summary = ", ".join(f"{by_impact.get(i, 0)} {i.lower()}" for i in ("High", "Medium", "Low", "Informational"))
    print(f"slither: {len(findings)} findings ({summary}); {len(gated) - len(untriaged)} of {len(gated)} high/medium "
          f"triaged, {len(untriaged)} not; {took:.1f} s")  # fmt: skip
    return 1 if untriaged else 0


if __name__ == "__main__":
    sys.exit(main())
