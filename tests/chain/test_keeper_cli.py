"""``pmsim keeper`` as an operator runs it: its own process, a key from the environment (never
logged), JSON logs, ``--dry-run``, a health and metrics endpoint, a graceful stop on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from offchain.chain.deploy import write_deployment
from tests.chain.conftest import CAROL
from tests.chain.harness import Harness
from tests.chain.test_keeper import book, breach

pytestmark = pytest.mark.chain
ROOT = Path(__file__).resolve().parents[2]


def _cmd(h: Harness, tmp: Path, *extra: str) -> tuple[list[str], dict[str, str]]:
    dep = write_deployment(h.p, tmp / "deployment.json")
    env = {**os.environ, "KEEPER_TEST_KEY": CAROL}
    args = [sys.executable, "-m", "offchain.cli", "keeper", "--rpc", h.p.deployment.rpc_url, "--deployment", str(dep),
            "--rounds-dir", str(tmp / "rounds"), "--key-env", "KEEPER_TEST_KEY", "--state-file",
            str(tmp / "pending.json"), "--config", str(ROOT / "config" / "keeper.toml"), *extra]  # fmt: skip
    return args, env




def test_dry_run_once_logs_json_and_never_the_key(h: Harness, tmp_path: Path) -> None:
    book(h)
    a = breach(h, tmp_path / "rounds")
    args, env = _cmd(h, tmp_path, "--dry-run", "--once", "--engine", "")
    nonce = h.p.w3.eth.get_transaction_count(h.p.w3.eth.account.from_key(CAROL).address)
    out = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    would = [e for e in lines if e["msg"] == "dry run: would send"]
    assert would and would[0]["kind"] == "start" and would[0]["account"] == a
    assert CAROL.removeprefix("0x") not in out.stderr + out.stdout
    assert h.p.w3.eth.get_transaction_count(h.p.w3.eth.account.from_key(CAROL).address) == nonce


def test_health_metrics_and_graceful_sigterm(h: Harness, tmp_path: Path) -> None:
    args, env = _cmd(h, tmp_path, "--health-port", "0", "--poll", "0.2", "--engine", "")
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        url = ""
        for line in proc.stderr:  # waits on the process's own report, no sleep
            if line.startswith("{") and (entry := json.loads(line))["msg"] == "health endpoint":
                url = entry["url"]
                break
        assert url, "no health endpoint logged"
        health = json.loads(urllib.request.urlopen(url + "/health", timeout=30).read())
        assert health["address"] == h.p.w3.eth.account.from_key(CAROL).address
        metrics = urllib.request.urlopen(url + "/metrics", timeout=30).read().decode()
        assert "keeper_last_block" in metrics and "keeper_bids_sent_total" in metrics
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        rest = proc.stderr.read()
        assert "keeper stopped" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
