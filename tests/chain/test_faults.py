"""Faults (issue 4, point 7): RPC failures retried with backoff; Anvil restarted from a dump.

(A restarted engine neither skipping nor repeating a round is in test_engine.py.)
"""

from __future__ import annotations

import random
import socket
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from offchain.chain.anvil import DEFAULT_KEYS, start_anvil
from offchain.chain.client import Protocol, connect
from offchain.chain.devnet import bootstrap
from offchain.engine.service import build_engine
from offchain.engine.signer import LocalSigner
from offchain.feeds.service import PriceService
from tests.chain.conftest import ALICE, DEPLOYER, GENESIS, addr
from tests.chain.harness import USDC, Harness


class FlakyProxy:
    """An HTTP proxy to an RPC node that drops a share of the requests (connection closed with no
    answer) and stalls a few beyond the client's timeout; the pattern is seeded."""

    def __init__(self, target: str, drop: float = 0.15, stall_share: float = 0.04, stall: float = 2.5) -> None:
        proxy = self
        rng = random.Random(5)
        self.count = self.dropped = self.stalled = 0
        self.enabled = False
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy._lock:
                    proxy.count += 1
                    draw = rng.random()
                if proxy.enabled and draw < drop:
                    proxy.dropped += 1
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if proxy.enabled and draw > 1 - stall_share:
                    proxy.stalled += 1
                    time.sleep(stall)
                req = urllib.request.Request(target, data=body, headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req) as resp:
                    answer = resp.read()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_rpc_errors_and_timeouts_are_retried_with_backoff(h: Harness, tmp_path: Path) -> None:
    h.deposit(ALICE, "USDC", 5_000 * USDC)
    proxy = FlakyProxy(h.p.deployment.rpc_url)
    try:
        w3 = connect(f"http://127.0.0.1:{proxy.port}", timeout=1.0)
        flaky = Protocol(w3, h.p.deployment, h.p.artifacts)
        signers = [LocalSigner(s._key.to_bytes(), flaky.domain("RiskOracle")) for s in h.risk_signers]
        engine = build_engine(flaky, signers, DEPLOYER, tmp_path)
        proxy.enabled = True
        first = engine.run_round()
        h.deposit(ALICE, "USDC", USDC)
        second = engine.run_round()
        assert first is not None and second is not None and (first.round, second.round) == (1, 2)
        assert proxy.dropped >= 1 and proxy.stalled >= 1  # the faults really happened ...
        assert h.p.oracle.functions.rootRound().call() == 2  # ... and each round was posted once
    finally:
        proxy.close()


def test_anvil_restarted_from_a_dumped_state_is_picked_up(tmp_path: Path) -> None:
    dump = tmp_path / "anvil-state.json"
    state_dir = tmp_path / "engine"
    with start_anvil(timestamp=GENESIS, dump_state=dump) as node:
        dev = bootstrap(connect(node.url), DEFAULT_KEYS[0], rpc_url=node.url)
        p = dev.protocol
        usdc = p.tokens["USDC"]
        alice = addr(ALICE)
        p.send(usdc.functions.mint(alice, 1_000 * USDC), DEFAULT_KEYS[0])
        p.send(usdc.functions.approve(p.vault.address, 2**256 - 1), ALICE)
        p.send(p.vault.functions.deposit(usdc.address, 1_000 * USDC, alice), ALICE)
        signers = [LocalSigner(s._key.to_bytes(), p.domain("RiskOracle")) for s in dev.risk_signers]
        assert build_engine(p, signers, DEPLOYER, state_dir).run_round().round == 1  # type: ignore[union-attr]
    assert dump.exists()
    with start_anvil(load_state=dump) as node:  # a new process, another port
        w3 = connect(node.url)
        again = Protocol(w3, p.deployment, p.artifacts)
        assert again.vault.functions.cashOf(alice).call() == 1_000 * USDC
        engine = build_engine(again, signers, DEPLOYER, state_dir)  # resumes from its checkpoint
        assert engine.latest is not None and engine.latest.round == 1
        # the reloaded chain's clock has moved on: the price service posts, the engine follows
        PriceService(again, dev.price_signers, DEFAULT_KEYS[9]).post((55_000.0, 2_800.0))
        assert engine.run_round().round == 2  # type: ignore[union-attr]
        assert engine.indexer.state.accounts[alice].cash == 1_000 * USDC


@pytest.mark.parametrize("bad", ["http://127.0.0.1:9"])
def test_an_unreachable_node_is_a_clear_error(bad: str) -> None:
    from offchain.errors import ChainError

    with pytest.raises(ChainError, match="cannot reach"):
        connect(bad, timeout=0.5)
