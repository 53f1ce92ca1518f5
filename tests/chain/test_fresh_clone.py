"""A fresh clone under a ``.cache`` folder (as CI runners and tools place them): set-up leaves the
tree clean (npm used to rewrite package-lock.json) and every contract compiles there (the build used
to filter ``.cache`` on the absolute path and hand solc no source at all)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def test_clone_under_a_cache_folder_sets_up_clean_and_compiles(tmp_path: Path) -> None:
    clone = tmp_path / ".cache" / "runner" / "pmsim"
    head = _git("rev-parse", "HEAD", cwd=ROOT).strip()
    _git("clone", "--quiet", "--no-checkout", str(ROOT), str(clone), cwd=tmp_path)
    _git("checkout", "--quiet", "--detach", head, cwd=clone)
    # No ~/.solcx link to a clone about to be deleted; this checkout's interpreter (a venv is a minute).
    env = {**os.environ, "PMSIM_SETUP_SKIP": "home-link python slither"}
    setup = subprocess.run(["bash", "scripts/setup.sh"], cwd=clone, env=env, capture_output=True, text=True,
                           timeout=900)  # fmt: skip  (a hang guard, not a speed test)
    assert setup.returncode == 0, setup.stderr
    assert (clone / "node_modules" / ".bin" / "cast").exists() and (clone / ".solcx" / "solc-v0.8.37").exists()
    assert _git("status", "--porcelain", cwd=clone) == "", "set-up changed tracked files or left untracked ones"

    code = (
        "from offchain.chain.build import ROOT, ABI_DIR, compile_contracts\n"
        "arts = compile_contracts(strict=True, force=True)\n"
        "print(ROOT); print(' '.join(sorted(arts))); print(len(list(ABI_DIR.glob('*.json'))))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(clone), "PMSIM_SOLC": ""}
    built = subprocess.run([sys.executable, "-c", code], cwd=clone, env=env, capture_output=True, text=True,
                           timeout=900)  # fmt: skip  (a hang guard, not a speed test)
    assert built.returncode == 0, built.stderr
    root, names, abi_files = built.stdout.strip().splitlines()
    assert Path(root) == clone  # the clone's own package and sources, not this checkout's
    assert {"Vault", "Exchange", "PriceFeed", "RiskParams", "Instruments", "MockERC20"} <= set(names.split())
    assert len(names.split()) == int(abi_files) > 20
    assert _git("status", "--porcelain", cwd=clone) == "", "the build wrote outside build/"
