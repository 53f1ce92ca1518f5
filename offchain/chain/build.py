"""Compile the contracts with a pinned solc, cached by source hash.

The compiler is, in order: ``$PMSIM_SOLC``; a native ``solc`` on PATH of the pinned version; the
solc-js shim installed by ``scripts/setup.sh`` at ``.solcx/solc-v<version>``. Settings (version,
optimizer, EVM version) are pinned so bytecode and gas figures are deterministic.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from offchain.errors import ChainError

ROOT = Path(__file__).resolve().parents[2]
SOLC_VERSION = "0.8.37"
EVM_VERSION = "cancun"
OPTIMIZER_RUNS = 200
CONTRACTS_DIR = ROOT / "contracts"
BUILD_FILE = ROOT / "build" / "contracts.json"
OZ_DIR = ROOT / "node_modules" / "@openzeppelin" / "contracts"


class CompileError(ChainError):
    """The contracts do not compile, or compile with warnings in strict mode."""


@dataclass(frozen=True)
class Artifact:
    """ABI and bytecode of one compiled contract."""

    name: str
    source: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str


def find_solc() -> Path:
    """Locate the pinned compiler (see module docstring)."""
    env = os.environ.get("PMSIM_SOLC")
    if env:
        return Path(env)
    native = shutil.which("solc")
    if native:
        out = subprocess.run([native, "--version"], capture_output=True, text=True, check=False).stdout
        if f"Version: {SOLC_VERSION}+" in out and "Emscripten" not in out:
            return Path(native)
    shim = ROOT / ".solcx" / f"solc-v{SOLC_VERSION}"
    if shim.exists():
        return shim
    raise CompileError(f"no solc {SOLC_VERSION} found: run scripts/setup.sh (installs the solc-js shim)")


def _sources() -> dict[str, str]:
    files = sorted(p for p in CONTRACTS_DIR.rglob("*.sol") if ".cache" not in p.parts)
    return {str(p.relative_to(ROOT)): p.read_text() for p in files}


def _standard_input(sources: dict[str, str]) -> dict[str, Any]:
    return {
        "language": "Solidity",
        "sources": {name: {"content": text} for name, text in sources.items()},
        "settings": {
            "optimizer": {"enabled": True, "runs": OPTIMIZER_RUNS},
            "viaIR": True,
            "evmVersion": EVM_VERSION,
            "remappings": ["@openzeppelin/contracts/=node_modules/@openzeppelin/contracts/"],
            "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}},
        },
    }


def _fingerprint(std_input: dict[str, Any]) -> str:
    blob = json.dumps(std_input, sort_keys=True).encode() + SOLC_VERSION.encode()
    if OZ_DIR.exists():
        blob += (OZ_DIR / "package.json").read_bytes()
    return hashlib.sha256(blob).hexdigest()


def _run_solc(std_input: dict[str, Any]) -> dict[str, Any]:
    solc = find_solc()
    proc = subprocess.run(
        [str(solc), "--standard-json", "--base-path", str(ROOT), "--include-path", str(ROOT / "node_modules")],
        input=json.dumps(std_input),
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    start = proc.stdout.find("{")
    if start < 0:
        raise CompileError(f"solc produced no JSON: {proc.stderr.strip() or proc.stdout.strip()}")
    result: dict[str, Any] = json.loads(proc.stdout[start:])
    return result


def _check_diagnostics(output: dict[str, Any], strict: bool) -> None:
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    warnings = [e for e in output.get("errors", []) if e.get("severity") == "warning"]
    if errors or (strict and warnings):
        text = "\n".join(e.get("formattedMessage", e.get("message", "")) for e in errors + warnings)
        raise CompileError(f"compilation failed ({len(errors)} errors, {len(warnings)} warnings):\n{text}")


def compile_contracts(*, strict: bool = True, force: bool = False) -> dict[str, Artifact]:
    """Compile every contract under ``contracts/`` (cached in ``build/contracts.json``).

    Parameters
    ----------
    strict
        Treat compiler warnings as errors.
    force
        Recompile even if the cache matches the sources.
    """
    std_input = _standard_input(_sources())
    fingerprint = _fingerprint(std_input)
    if not force and BUILD_FILE.exists():
        cached = json.loads(BUILD_FILE.read_text())
        if cached.get("fingerprint") == fingerprint:
            return _artifacts(cached["contracts"])
    output = _run_solc(std_input)
    _check_diagnostics(output, strict)
    contracts: dict[str, dict[str, Any]] = {}
    for source, entries in output.get("contracts", {}).items():
        for name, data in entries.items():
            if not data["evm"]["bytecode"]["object"] and "interfaces" not in source:
                continue  # abstract contracts and libraries without code
            contracts[name] = {
                "source": source,
                "abi": data["abi"],
                "bytecode": "0x" + data["evm"]["bytecode"]["object"],
                "deployed_bytecode": "0x" + data["evm"]["deployedBytecode"]["object"],
            }
    BUILD_FILE.parent.mkdir(parents=True, exist_ok=True)
    tmp = BUILD_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps({"fingerprint": fingerprint, "solc": SOLC_VERSION, "contracts": contracts}))
    tmp.replace(BUILD_FILE)
    return _artifacts(contracts)


def _artifacts(raw: dict[str, dict[str, Any]]) -> dict[str, Artifact]:
    return {name: Artifact(name=name, **data) for name, data in raw.items()}


def load_artifacts() -> dict[str, Artifact]:
    """Artifacts from the last build, compiling first if the sources changed."""
    return compile_contracts(strict=False)
