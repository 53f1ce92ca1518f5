"""Start and stop a local Anvil chain (the npm-packaged native binary)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from offchain.errors import ChainError

ROOT = Path(__file__).resolve().parents[2]
_LISTEN = re.compile(r"Listening on (\S+):(\d+)")
# Anvil's default mnemonic ("test test ... junk") keys, first ten accounts.
DEFAULT_KEYS = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
    "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
    "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
    "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
)


def find_anvil() -> str:
    """``$PMSIM_ANVIL``, the project's npm-installed native binary, or ``anvil`` on PATH."""
    env = os.environ.get("PMSIM_ANVIL")
    if env:
        return env
    native = ROOT / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
    if native.exists():
        return str(native)
    found = shutil.which("anvil")
    if found:
        return found
    raise ChainError("anvil not found: run scripts/setup.sh (installs @foundry-rs/anvil from npm)")


@dataclass
class Anvil:
    """A running Anvil process; use as a context manager or call :meth:`stop`."""

    process: subprocess.Popen[str]
    url: str
    port: int
    log: list[str] = field(default_factory=list)  # its output up to the "Listening on" line
    sink: subprocess.Popen[bytes] | None = None  # the process discarding the rest (see _drain)
    cache: Path | None = None  # where it persists old block states; removed on stop (see start_anvil)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.sink is not None:
            try:
                self.sink.wait(timeout=5)  # it ends at the end of Anvil's output
            except subprocess.TimeoutExpired:
                self.sink.kill()
                self.sink.wait()
        if self.cache is not None:
            shutil.rmtree(self.cache, ignore_errors=True)

    def __enter__(self) -> Anvil:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_anvil(
    *,
    port: int = 0,
    chain_id: int = 31337,
    timestamp: int | None = None,
    dump_state: Path | None = None,
    load_state: Path | None = None,
    block_time: float | None = None,
    extra: tuple[str, ...] = (),
    timeout: float = 20.0,
) -> Anvil:
    """Start Anvil and wait until it listens. ``port=0`` picks a free port."""
    cmd = [find_anvil(), "--port", str(port), "--chain-id", str(chain_id), "--silent"]
    if timestamp is not None:
        cmd += ["--timestamp", str(timestamp)]
    if dump_state is not None:
        cmd += ["--dump-state", str(dump_state)]
    if load_state is not None:
        cmd += ["--load-state", str(load_state)]
    if block_time is not None:
        cmd += ["--block-time", str(block_time)]
    cache: Path | None = None
    if not {"--cache-path", "--max-persisted-states", "--prune-history"} & set(extra):
        # Anvil writes the block states it evicts from memory under ~/.foundry/anvil/tmp and leaves them
        # there when it is stopped (hundreds of MB a run): give it a folder of its own, removed on stop
        cache = Path(tempfile.mkdtemp(prefix="pmsim-anvil-"))
        cmd += ["--cache-path", str(cache)]
    cmd += list(extra)
    cmd.remove("--silent")  # we need the "Listening on" line
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    log: list[str] = []
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                if cache is not None:
                    shutil.rmtree(cache, ignore_errors=True)
                raise ChainError(f"anvil exited with {proc.returncode}: {''.join(log)[-2000:]}")
            continue
        log.append(line)
        m = _LISTEN.search(line)
        if m:
            host, port_s = m.group(1), int(m.group(2))
            return Anvil(process=proc, url=f"http://{host}:{port_s}", port=port_s, log=log, sink=_drain(proc),
                         cache=cache)  # fmt: skip
    proc.kill()
    if cache is not None:
        shutil.rmtree(cache, ignore_errors=True)
    raise ChainError("anvil did not start listening in time")


def _drain(proc: subprocess.Popen[str]) -> subprocess.Popen[bytes] | None:
    """Keep reading anvil's output so its pipe never fills, and discard it.

    A separate ``cat`` process reads it, so no thread of this process wakes on each line Anvil logs
    (a line per request and per transaction): such a thread took the interpreter lock from the
    thread sending the requests after nearly every request. A thread does it when there is no
    ``cat``. Returns the ``cat`` process, if any.
    """
    assert proc.stdout is not None
    cat = shutil.which("cat")
    if cat is not None:
        sink = subprocess.Popen([cat], stdin=proc.stdout, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proc.stdout.close()  # the pipe's read end now belongs to cat alone
        return sink

    import threading

    def pump() -> None:
        assert proc.stdout is not None
        for _ in proc.stdout:
            pass

    threading.Thread(target=pump, daemon=True).start()
    return None


def spawn_anvil_detached(log_path: Path, *, port: int = 8545, chain_id: int = 31337,
                         state_path: Path | None = None, timeout: float = 20.0) -> tuple[int, str]:  # fmt: skip
    """Start Anvil in its own session (it outlives this process); returns (pid, url).

    With ``state_path`` the chain is loaded from it when it exists and dumped to it on exit, so a
    devnet survives ``down``/``up``.
    """
    cmd = [find_anvil(), "--port", str(port), "--chain-id", str(chain_id)]
    if state_path is not None:
        cmd += ["--state", str(state_path)]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as log:  # appended: earlier runs' logs are kept
        start = log.tell()  # only this run's output is searched for its port
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def this_run() -> str:
        with log_path.open("rb") as f:
            f.seek(start)
            return f.read().decode(errors="replace")

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = _LISTEN.search(this_run())
        if m:
            return proc.pid, f"http://{m.group(1)}:{m.group(2)}"
        if proc.poll() is not None:
            raise ChainError(f"anvil exited with {proc.returncode}: {this_run()[-2000:]}")
        time.sleep(0.05)
    proc.kill()
    raise ChainError("anvil did not start listening in time")
