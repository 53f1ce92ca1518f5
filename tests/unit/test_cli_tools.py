"""Integrator tools without a chain: plain ABI files and the error table from the real build,
`pmsim decode-error` (custom, OpenZeppelin, Error(string), Panic, a whole cast message, unknown
selectors, bad input), docs/errors.md kept in step with the build, `pmsim -h` and `--version`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from eth_abi import encode
from eth_utils import function_signature_to_4byte_selector
from typer.testing import CliRunner

from offchain import __version__
from offchain.chain.build import ABI_DIR, ERRORS_FILE, abi_signature, errors_markdown, load_artifacts, load_error_table
from offchain.cli import app
from offchain.cli_tools import decode_revert, revert_bytes
from offchain.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
ADDR = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
runner = CliRunner()


def _pmsim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "offchain.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def _data(signature: str, types: list[str], values: list[object]) -> bytes:
    return function_signature_to_4byte_selector(signature) + encode(types, values)


def test_plain_abi_files_match_the_bundle() -> None:
    arts = load_artifacts()
    files = {p.stem: p for p in ABI_DIR.glob("*.json")}
    assert set(files) == set(arts)
    for name, art in arts.items():
        abi = json.loads(files[name].read_text())
        assert isinstance(abi, list) and abi == art.abi, name


def test_error_table_covers_every_abi_error_with_its_selector() -> None:
    table = load_error_table()
    assert json.loads(ERRORS_FILE.read_text()) == table
    for art in load_artifacts().values():
        for item in (i for i in art.abi if i["type"] == "error"):
            sig = abi_signature(item)
            selector = "0x" + function_signature_to_4byte_selector(sig).hex()
            assert table[selector]["signature"] == sig
    assert not [e for e in table.values() if "collisions" in e]
    oz_errors = ("OwnableUnauthorizedAccount(address)", "ECDSAInvalidSignatureS(bytes32)",
                 "SafeERC20FailedOperation(address)")  # fmt: skip
    for oz in oz_errors:
        assert any(e["signature"] == oz for e in table.values()), oz


def test_docs_errors_md_is_up_to_date() -> None:
    assert (ROOT / "docs" / "errors.md").read_text() == errors_markdown(load_error_table()), (
        "docs/errors.md is stale: scripts/pmsim decode-error --markdown > docs/errors.md"
    )


def test_decodes_project_and_openzeppelin_errors_with_arguments() -> None:
    table = load_error_table()
    d = decode_revert(_data("SignerQuorum_TooFewSigners(uint256,uint256)", ["uint256", "uint256"], [1, 2]), table)
    assert d["name"] == "SignerQuorum_TooFewSigners"
    assert [(a["name"], a["value"]) for a in d["args"]] == [("given", 1), ("required", 2)]
    assert "Vault" in d["contracts"]
    d = decode_revert(_data("OwnableUnauthorizedAccount(address)", ["address"], [ADDR]), table)
    assert d["args"] == [{"name": "account", "type": "address", "value": ADDR}]
    d = decode_revert(_data("Error(string)", ["string"], ["nope"]), table)
    assert (d["name"], d["args"][0]["value"]) == ("Error", "nope")
    d = decode_revert(_data("Panic(uint256)", ["uint256"], [0x11]), table)
    assert d["meaning"] == "arithmetic overflow or underflow"
    d = decode_revert(function_signature_to_4byte_selector("OwnableUnauthorizedAccount(address)"), table)
    assert d["name"] == "OwnableUnauthorizedAccount" and d["args"] == [] and "do not decode" in d["note"]


def test_reads_a_whole_cast_message() -> None:
    data = _data("OwnableUnauthorizedAccount(address)", ["address"], [ADDR])
    message = (f"Error: server returned an error response: error code 3: execution reverted: custom error "
               f"0x{data[:4].hex()}: {data[4:].hex()}, data: \"0x{data.hex()}\"")  # fmt: skip
    assert revert_bytes(message) == data
    assert revert_bytes(f"execution reverted: custom error 0x{data[:4].hex()}: {data[4:].hex()}") == data
    assert revert_bytes(data.hex()) == data


@pytest.mark.parametrize("bad", ["zz", "0x123", "0x1234", ""])
def test_bad_revert_data_names_the_field(bad: str) -> None:
    with pytest.raises(InputError) as info:
        revert_bytes(bad)
    assert info.value.field == "data"


def test_cli_decodes_and_refuses_unknown_selectors_clearly() -> None:
    data = _data("SignerQuorum_UnknownSigner(address)", ["address"], [ADDR])
    ok = runner.invoke(app, ["decode-error", "0x" + data.hex()])
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.splitlines()[0] == f"SignerQuorum_UnknownSigner(recovered={ADDR})"
    piped = runner.invoke(app, ["decode-error", "--json", "-"], input=f'... data: "0x{data.hex()}"\n')
    as_json = json.loads(piped.stdout)
    assert as_json["selector"] == "0x" + data[:4].hex() and as_json["args"][0]["value"] == ADDR
    unknown = _pmsim("decode-error", "0xdeadbeef")  # the console script's own error path: one line, code 2
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert "error: data: unknown selector 0xdeadbeef" in " ".join(unknown.stderr.split())


def test_help_and_version() -> None:
    short, long = runner.invoke(app, ["-h"]), runner.invoke(app, ["--help"])
    assert short.exit_code == 0 and short.stdout == long.stdout
    assert all(cmd in short.stdout for cmd in ("decode-error", "faucet", "signers", "devnet"))
    assert runner.invoke(app, ["faucet", "-h"]).exit_code == 0
    assert runner.invoke(app, ["devnet", "up", "-h"]).exit_code == 0
    version = _pmsim("--version")
    assert version.returncode == 0 and version.stdout.startswith(f"pmsim {__version__} ")
