"""`pmsim faucet` and `pmsim signers` against the suite's Anvil, and the plain ABI files written beside
a deployment file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import Result
from eth_account import Account
from typer.testing import CliRunner

from offchain.chain.anvil import DEFAULT_KEYS
from offchain.chain.deploy import abi_folder, write_deployment
from offchain.cli import app
from offchain.cli_tools import faucet
from offchain.errors import InputError
from tests.chain.harness import Harness

WHO = Account.create("pmsim faucet test").address


def _pmsim(*args: str) -> Result:
    """The CLI in-process (the console script's error path is tested in tests/unit/test_cli_tools.py)."""
    return CliRunner().invoke(app, list(args))


def _deployment(h: Harness, tmp_path: Path) -> Path:
    path = write_deployment(h.p, tmp_path / "deployments" / "suite.json")
    assert json.loads(path.read_text())["contracts"]["Vault"] == h.p.vault.address
    return path


def test_abi_files_beside_the_deployment(h: Harness, tmp_path: Path) -> None:
    path = _deployment(h, tmp_path)
    folder = abi_folder(path)
    assert folder == tmp_path / "deployments" / "suite-abi"
    names = {p.stem for p in folder.glob("*.json")}
    assert names == set(h.p.deployment.contracts) | {"MockERC20"}
    for name in h.p.deployment.contracts:
        assert json.loads((folder / f"{name}.json").read_text()) == h.p.abi_of(name), name
    # the oracle is a module of the Vault: same address, same ABI, with the signer list getter
    oracle = json.loads((folder / "RiskOracle.json").read_text())
    assert any(i.get("name") == "signers" for i in oracle)


def test_faucet_mints_in_human_units(h: Harness, tmp_path: Path) -> None:
    dep = str(_deployment(h, tmp_path))
    out = _pmsim("faucet", WHO, "--token", "weth", "--amount", "2.5", "--deployment", dep,
                 "--key", DEFAULT_KEYS[8])  # fmt: skip
    assert out.exit_code == 0, out.output
    assert h.p.tokens["WETH"].functions.balanceOf(WHO).call() == 25 * 10**17
    assert f"minted 2.5 WETH to {WHO}; balance 2.5 WETH" in out.stdout
    out = _pmsim("faucet", WHO, "--deployment", dep, "--key", DEFAULT_KEYS[8])  # default: 100,000 USDC
    assert out.exit_code == 0, out.output
    assert h.p.tokens["USDC"].functions.balanceOf(WHO).call() == 100_000 * 10**6


def test_faucet_errors_name_the_field(h: Harness, tmp_path: Path) -> None:
    dep = _deployment(h, tmp_path)
    cases = [
        (("0x1234", "USDC", "1"), "address", "not an address"),
        ((WHO, "DAI", None), "token", "unknown token 'DAI'"),
        ((WHO, "WBTC", "0.000000001"), "amount", "0.000000001 has more than 8 decimals"),
        ((WHO, "USDC", "-5"), "amount", "must be a positive"),
        ((WHO, "USDC", "1e999999"), "amount", "1e999999 is too large"),
        ((WHO, "USDC", "lots"), "amount", "not a number"),
    ]
    for (who, token, amount), field, message in cases:
        with pytest.raises(InputError) as info:
            faucet(who, token=token, amount=amount, deployment=dep, rpc=None, key=DEFAULT_KEYS[8])
        assert info.value.field == field and message in str(info.value), (who, token, amount, info.value)
    out = _pmsim("faucet", WHO, "--amount", "1.0000001", "--deployment", str(dep))
    assert isinstance(out.exception, InputError) and out.exception.field == "amount"
    assert h.p.tokens["USDC"].functions.balanceOf(WHO).call() == 0  # nothing minted on a refusal


def test_signers_command_lists_both_quorums(h: Harness, tmp_path: Path) -> None:
    out = _pmsim("signers", "--json", "--deployment", str(_deployment(h, tmp_path)))
    assert out.exit_code == 0, out.output
    got = json.loads(out.stdout)
    assert set(got["RiskOracle"]["signers"]) == {s.address for s in h.risk_signers}
    assert set(got["PriceFeed"]["signers"]) == {s.address for s in h.price_signers}
    assert got["RiskOracle"]["quorum"] == h.p.oracle.functions.quorum().call() == 2
    assert got["RiskOracle"]["address"] == h.p.vault.address
