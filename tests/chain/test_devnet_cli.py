"""``pmsim devnet up`` / ``down``: separate processes for Anvil, the price service, the engine and a keeper."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from offchain.chain.client import Deployment, Protocol, connect

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


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


def _wait(probe: Callable[[], T], done: Callable[[T], bool], bound: float, why: Callable[[T], str]) -> T:
    """Poll ``probe`` until ``done`` says so; fail after ``bound`` seconds with ``why(last value)``."""
    deadline = time.monotonic() + bound
    value = probe()
    while not done(value):
        if time.monotonic() > deadline:
            pytest.fail(why(value))
        time.sleep(0.25)
        value = probe()
    return value


def _health(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
            return dict(json.loads(resp.read()))
    except OSError:
        return {}


def _tail(path: Path) -> str:
    return "\n".join(path.read_text().splitlines()[-20:]) if path.exists() else "(no log)"


def _pmsim(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{ROOT}/node_modules/@foundry-rs/anvil-linux-amd64/bin:{os.environ['PATH']}"}
    return subprocess.run([sys.executable, "-m", "offchain.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_devnet_up_serves_and_down_stops_everything(tmp_path: Path) -> None:
    chain, engine, keeper = _free_port(), _free_port(), _free_port()
    state = tmp_path / "devnet"
    up = _pmsim("devnet", "up", "--port", str(chain), "--engine-port", str(engine), "--state-dir", str(state),
                "--price-interval", "1", "--round-seconds", "1", "--keeper-port", str(keeper),
                cwd=tmp_path)  # fmt: skip
    assert up.returncode == 0, up.stderr
    procs = json.loads((state / "processes.json").read_text())
    try:
        assert f"http://127.0.0.1:{chain}" in up.stdout and f"http://127.0.0.1:{engine}" in up.stdout
        assert (tmp_path / "deployments" / "local.json").exists()
        # wait on the chain itself (a second price round posted), then on the engine having indexed
        # it; generous bounds, since the services start as separate processes on a loaded machine
        proto = Protocol(connect(f"http://127.0.0.1:{chain}"), Deployment.load(state / "deployment.json"))
        latest = _wait(lambda: int(proto.feed.functions.latestRound().call()[0]), lambda r: r >= 2, 300,
                       lambda r: f"price round {r} on chain; prices.log:\n{_tail(state / 'prices.log')}")  # fmt: skip
        health = _wait(lambda: _health(engine), lambda d: int(d.get("price_round", 0)) >= latest, 120,
                       lambda d: f"engine health {d}; engine.log:\n{_tail(state / 'engine.log')}")  # fmt: skip
        assert health["status"] == "ok"
        # the keeper: its own process, its config and key file in the state dir, following the chain and
        # loading the engine's verified rounds; its vault account funded to bid with
        assert set(procs) == {"anvil", "prices", "engine", "keeper"}
        assert (state / "keeper.toml").exists() and (state / "keeper.key").stat().st_mode & 0o077 == 0
        kh = _wait(lambda: _health(keeper), lambda d: d.get("status") == "ok" and int(d.get("round", 0)) >= 1, 300,
                   lambda d: f"keeper health {d}; keeper.log:\n{_tail(state / 'keeper.log')}")  # fmt: skip
        assert int(proto.vault.functions.cashOf(kh["address"]).call()) > 0
        # its independent recompute (on in the devnet config) agrees with the engine's rounds to the unit
        kh = _wait(lambda: _health(keeper), lambda d: int((d.get("recompute") or {}).get("checked", 0)) > 0, 300,
                   lambda d: f"keeper health {d}; keeper.log:\n{_tail(state / 'keeper.log')}")  # fmt: skip
        assert kh["recompute"]["disagreeing"] == [] and kh["recompute"]["skipped"] == ""
        key = (state / "keeper.key").read_text().strip().removeprefix("0x")
        assert key not in (state / "keeper.log").read_text()  # the key is never logged
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
