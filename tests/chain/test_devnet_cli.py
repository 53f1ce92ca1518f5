"""``pmsim devnet up`` / ``down``: separate processes for Anvil, the price service and the engine."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _pmsim(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{ROOT}/node_modules/@foundry-rs/anvil-linux-amd64/bin:{os.environ['PATH']}"}
    return subprocess.run([sys.executable, "-m", "offchain.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_devnet_up_serves_and_down_stops_everything(tmp_path: Path) -> None:
    chain, engine = _free_port(), _free_port()
    state = tmp_path / "devnet"
    up = _pmsim("devnet", "up", "--port", str(chain), "--engine-port", str(engine), "--state-dir", str(state),
                "--price-interval", "1", "--round-seconds", "1", cwd=tmp_path)  # fmt: skip
    assert up.returncode == 0, up.stderr
    procs = json.loads((state / "processes.json").read_text())
    try:
        assert f"http://127.0.0.1:{chain}" in up.stdout and f"http://127.0.0.1:{engine}" in up.stdout
        assert (tmp_path / "deployments" / "local.json").exists()
        health: dict[str, object] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{engine}/health", timeout=2) as resp:
                    health = json.loads(resp.read())
                if int(health["price_round"]) >= 2:  # type: ignore[call-overload]
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert health.get("status") == "ok" and int(health["price_round"]) >= 2, health  # type: ignore[call-overload]
        again = _pmsim("devnet", "up", "--state-dir", str(state), cwd=tmp_path)
        assert again.returncode != 0 and "already up" in (again.stdout + again.stderr)
    finally:
        down = _pmsim("devnet", "down", "--state-dir", str(state), cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    assert not any(_alive(pid) for pid in procs.values())
    assert not (state / "processes.json").exists()
    assert (state / "anvil-state.json").exists()  # the chain was dumped for the next `up`


@pytest.mark.parametrize("args", [["devnet", "down", "--state-dir", "nowhere"]])
def test_devnet_down_when_nothing_runs_is_harmless(tmp_path: Path, args: list[str]) -> None:
    result = _pmsim(*args, cwd=tmp_path)
    assert result.returncode == 0 and "not running" in result.stdout
