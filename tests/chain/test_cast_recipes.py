"""The README's "Driving the devnet with cast" recipes, run verbatim against a real devnet
(`pmsim devnet up`: Anvil, the price service and the engine as separate processes) with the `cast`
binary the set-up installs from npm: if a recipe rots, this fails."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account

from offchain.chain.anvil import DEFAULT_KEYS
from offchain.chain.client import Deployment, Protocol, connect
from offchain.chain.devnet import dev_signers
from offchain.chain.units import to_size
from tests.chain.harness import Harness

ROOT = Path(__file__).resolve().parents[2]
ANVIL_BIN = ROOT / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin"
ME_KEY = DEFAULT_KEYS[1]  # the README's KEY (Anvil's public account 1)
ME = Account.from_key(ME_KEY).address
COUNTERPARTY, RELAYER = DEFAULT_KEYS[3], DEFAULT_KEYS[4]  # keys the devnet's own services never use
U = 10**6


def recipes() -> dict[str, str]:
    """The README's recipe blocks by name (```bash blocks whose first line is ``# recipe: NAME``)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("<!-- integrators:start -->", 1)[1].split("<!-- integrators:end -->", 1)[0]
    return dict(re.findall(r"```bash\n# recipe: (\w+)\n(.*?)```", section, flags=re.DOTALL))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pmsim(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{ANVIL_BIN}:{os.environ['PATH']}"}
    return subprocess.run([sys.executable, "-m", "offchain.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=180)  # fmt: skip


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """`pmsim devnet up` in a scratch folder (its deployments/ stay there), stopped afterwards."""
    cwd = tmp_path_factory.mktemp("castdevnet")
    chain, engine = _free_port(), _free_port()
    state = cwd / "devnet"
    args = ["devnet", "up", "--port", str(chain), "--engine-port", str(engine), "--state-dir", str(state),
            "--price-interval", "2", "--round-seconds", "2", "--no-keeper"]  # fmt: skip  # no keeper: less load
    # Up, down and up again: the second run appends to the first run's logs (and reuses its chain).
    for attempt in (1, 2):
        up = _pmsim(*args, cwd=cwd)
        assert up.returncode == 0, up.stdout + up.stderr
        if attempt == 1:
            first = {name: (state / f"{name}.log").read_text() for name in ("anvil", "prices", "engine")}
            assert all(first.values()), first
            assert _pmsim("devnet", "down", "--state-dir", str(state), cwd=cwd).returncode == 0
    for name, text in first.items():
        log = (state / f"{name}.log").read_text()
        assert log.startswith(text) and log.count("==== pmsim devnet up") == 2, f"{name}.log:\n{log}"
    try:
        env = {"RPC": f"http://127.0.0.1:{chain}", "ENGINE": f"http://127.0.0.1:{engine}",
               "DEP": str(cwd / "deployments" / "local.json")}  # fmt: skip
        deadline = time.monotonic() + 90
        health: dict[str, object] = {}
        while time.monotonic() < deadline and health.get("status") != "ok":
            try:
                with urllib.request.urlopen(f"{env['ENGINE']}/health", timeout=5) as resp:
                    health = json.loads(resp.read())
            except OSError:
                time.sleep(0.5)
        assert health.get("status") == "ok", health
        yield env
    finally:
        down = _pmsim("devnet", "down", "--state-dir", str(state), cwd=cwd)
        assert down.returncode == 0, down.stderr


def run(names: list[str], env: dict[str, str]) -> str:
    """Run the named recipes as one bash script from the repository root, as a reader would."""
    blocks = recipes()
    script = "set -euo pipefail\n" + "\n".join(blocks[n] for n in names)
    proc = subprocess.run(["bash", "-c", script], cwd=ROOT, env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, f"recipes {names} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_readme_has_the_recipes() -> None:
    assert set(recipes()) == {"setup", "faucet", "read", "deposit", "withdraw", "decode"}
    assert (ROOT / "node_modules" / ".bin" / "cast").exists(), "scripts/setup.sh installs cast from npm"


def test_cast_recipes_work_on_a_real_devnet(devnet: dict[str, str]) -> None:
    p = Protocol(connect(devnet["RPC"]), Deployment.load(Path(devnet["DEP"])))
    usdc = p.tokens["USDC"]
    wallet_before = usdc.functions.balanceOf(ME).call()

    out = run(["setup", "faucet", "read", "deposit"], devnet)
    assert "minted 5000 USDC" in out
    assert usdc.functions.balanceOf(ME).call() == wallet_before + 5_000 * U - 1_000 * U
    assert p.vault.functions.cashOf(ME).call() == 1_000 * U
    listed = {s.address for s in dev_signers("risk", 3)}
    assert all(a in out for a in listed), out  # `signers()` printed the registered risk signers

    # An open position, so that the Vault really checks the withdrawal's attestation.
    h = Harness(p, DEFAULT_KEYS[0], dev_signers("risk", 3), dev_signers("price", 3), p.deployment.extra["instruments"])
    p.send(usdc.functions.mint(Account.from_key(COUNTERPARTY).address, 10_000 * U), RELAYER)
    p.send(usdc.functions.approve(p.vault.address, 2**256 - 1), COUNTERPARTY)
    h.deposit(COUNTERPARTY, "USDC", 10_000 * U)
    btc = h.latest_prices()[0]
    h.fill(ME_KEY, COUNTERPARTY, h.ids["BTC-PERP"], to_size("0.01"), btc, relayer=RELAYER)
    assert len(p.vault.functions.positionIds(ME).call()) == 1
    cash, nonce = p.vault.functions.cashOf(ME).call(), p.vault.functions.riskNonce(ME).call()

    out = run(["setup", "withdraw", "decode"], devnet)
    assert p.vault.functions.cashOf(ME).call() == cash - 250 * U
    assert p.vault.functions.riskNonce(ME).call() == nonce + 1
    # The replayed proof is refused; pmsim and cast both name the error that cast alone showed raw.
    raw = re.search(r"custom error (0x[0-9a-f]{8})", out)
    assert raw, out
    table = json.loads((ROOT / "build" / "errors.json").read_text())
    name = table[raw.group(1)]["name"]
    assert name.startswith("RiskOracle_"), name
    assert out.count(name) >= 2, out  # pmsim decode-error's line and cast decode-error's
