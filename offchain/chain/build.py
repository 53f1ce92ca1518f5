"""Compile the contracts with a pinned solc, cached by source hash.

The compiler is, in order: ``$PMSIM_SOLC``; a native ``solc`` on PATH of the pinned version; the
solc-js shim installed by ``scripts/setup.sh`` at ``.solcx/solc-v<version>``. Settings (version,
optimizer, EVM version) are pinned so bytecode and gas figures are deterministic.

Outputs, all under ``build/``:

- ``contracts.json``: the bundle every ``pmsim`` command reads (ABI and bytecode of each contract);
- ``abi/<Contract>.json``: one plain ABI array per contract, for ``cast``, ethers, viem and friends (the
  Vault's lists its module's functions too: ``MODULES``);
- ``errors.json``: every custom error any compiled source declares (OpenZeppelin's included), by
  4-byte selector, as ``pmsim decode-error`` and ``docs/errors.md`` use it.
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
ABI_DIR = ROOT / "build" / "abi"
ERRORS_FILE = ROOT / "build" / "errors.json"
OZ_DIR = ROOT / "node_modules" / "@openzeppelin" / "contracts"


# A contract whose fallback delegates to a module (see contracts/Vault.sol): its ABI (in the bundle and in
# build/abi/) also lists the module's functions, events and errors, as callers see them at its address.
MODULES = {"Vault": "VaultModule", "VaultGasProbe": "VaultModule"}


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
    # ape unpacks dependencies into contracts/.cache: skip it, judged on the path *inside* contracts/
    # (a clone under some other .cache folder, as CI systems use, must still compile).
    files = sorted(p for p in CONTRACTS_DIR.rglob("*.sol") if ".cache" not in p.relative_to(CONTRACTS_DIR).parts)
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
    blob = json.dumps(std_input, sort_keys=True).encode() + SOLC_VERSION.encode() + json.dumps(MODULES).encode()
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
    sources = _sources()
    if not sources:
        raise CompileError(f"no .sol file under {CONTRACTS_DIR}")
    std_input = _standard_input(sources)
    fingerprint = _fingerprint(std_input)
    if not force and BUILD_FILE.exists():
        cached = json.loads(BUILD_FILE.read_text())
        if cached.get("fingerprint") == fingerprint and ERRORS_FILE.exists() and ABI_DIR.is_dir():
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
    for host, module in MODULES.items():
        if host in contracts and module in contracts:
            contracts[host]["abi"] = merge_abi(contracts[host]["abi"], contracts[module]["abi"])
    write_abi_files(ABI_DIR, {name: data["abi"] for name, data in contracts.items()})
    _write_atomic(ERRORS_FILE, json.dumps(error_table(output), indent=1, sort_keys=True) + "\n")
    _write_atomic(BUILD_FILE, json.dumps({"fingerprint": fingerprint, "solc": SOLC_VERSION, "contracts": contracts}))
    return _artifacts(contracts)


def merge_abi(host: list[dict[str, Any]], module: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``host``'s ABI plus every function, event and error of ``module`` it lacks (by signature);
    the module's constructor is left out."""
    seen = {(i["type"], abi_signature(i)) for i in host if "name" in i}
    kinds = ("function", "event", "error")
    extra = [i for i in module if i["type"] in kinds and (i["type"], abi_signature(i)) not in seen]
    return host + extra


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_abi_files(folder: Path, abis: dict[str, list[dict[str, Any]]]) -> Path:
    """Write one plain ABI file per contract, ``<folder>/<Contract>.json`` (a JSON array).

    Files of contracts no longer in ``abis`` are removed, so the folder always matches one build.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for name, abi in abis.items():
        _write_atomic(folder / f"{name}.json", json.dumps(abi, indent=1) + "\n")
    for stale in folder.glob("*.json"):
        if stale.stem not in abis:
            stale.unlink()
    return folder


def abi_signature(item: dict[str, Any]) -> str:
    """The canonical signature of an ABI error, event or function, e.g. ``Foo(address,(uint8,bytes32)[])``."""
    return f"{item['name']}({','.join(abi_type(i) for i in item.get('inputs', []))})"


def abi_type(item: dict[str, Any]) -> str:
    """The canonical ABI type of one input, tuples spelled out: ``(address,uint256)[]``."""
    if item["type"].startswith("tuple"):
        inner = ",".join(abi_type(c) for c in item["components"])
        return f"({inner}){item['type'][5:]}"
    return str(item["type"])


def error_table(output: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every custom error declared in any compiled source, keyed by its 4-byte selector (``0x…``).

    Each entry: ``name``, ``signature``, ``inputs`` (ABI items, with names) and ``abis``
    (``source:Contract`` of every compiled contract or interface whose ABI carries it, sorted). Two
    different errors with one selector (a 4-byte collision) keep both signatures under ``collisions``.
    """
    from eth_utils import function_signature_to_4byte_selector

    table: dict[str, dict[str, Any]] = {}
    for source, entries in sorted(output.get("contracts", {}).items()):
        for contract, data in sorted(entries.items()):
            for item in data.get("abi", []):
                if item.get("type") != "error":
                    continue
                sig = abi_signature(item)
                selector = "0x" + function_signature_to_4byte_selector(sig).hex()
                entry = table.setdefault(selector, {"name": item["name"], "signature": sig,
                                                    "inputs": item["inputs"], "abis": []})  # fmt: skip
                if entry["signature"] != sig:
                    entry.setdefault("collisions", []).append(sig)
                where = f"{source}:{contract}"
                if where not in entry["abis"]:
                    entry["abis"].append(where)
    for entry in table.values():
        entry["abis"].sort()
    return table


def load_error_table() -> dict[str, dict[str, Any]]:
    """The error table of the current build (compiling first if the sources changed)."""
    compile_contracts(strict=False)
    table: dict[str, dict[str, Any]] = json.loads(ERRORS_FILE.read_text())
    return table


def errors_markdown(table: dict[str, dict[str, Any]]) -> str:
    """``docs/errors.md``: the error-selector table as markdown, sorted by error name."""
    lines = [
        "# Custom errors by selector",
        "",
        "Generated from the compiled contracts (OpenZeppelin's errors included); do not edit by hand.",
        "Regenerate with `scripts/pmsim decode-error --markdown > docs/errors.md` (a test fails when it",
        "is out of date). Decode a revert with `scripts/pmsim decode-error 0x…` or, with `cast`,",
        "`cast decode-error --sig '<signature>' 0x…`. The same table as JSON: `build/errors.json`.",
        "",
        "| selector | error | in the ABI of |",
        "| --- | --- | --- |",
    ]
    for selector, e in sorted(table.items(), key=lambda kv: (kv[1]["signature"], kv[0])):
        where = ", ".join(sorted({w.rsplit(":", 1)[1] for w in e["abis"]}))
        lines.append(f"| `{selector}` | `{e['signature']}` | {where} |")
    return "\n".join(lines) + "\n"


def _artifacts(raw: dict[str, dict[str, Any]]) -> dict[str, Artifact]:
    return {name: Artifact(name=name, **data) for name, data in raw.items()}


def load_artifacts() -> dict[str, Artifact]:
    """Artifacts from the last build, compiling first if the sources changed."""
    return compile_contracts(strict=False)
