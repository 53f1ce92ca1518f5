"""Load test of the engine service over HTTP on localhost: 16 concurrent clients, bounded.

    .venv/bin/python scripts/bench_load.py [--clients 16] [--seconds 20] [--count 60000]
    .venv/bin/python scripts/bench_load.py --soak 600      # 10 minutes, RSS sampled every 5 s

Starts its own Anvil (a random localhost port), deploys the devnet, builds 9 accounts holding
4 to 16 positions each (perps, futures, calls and puts on BTC and ETH), starts the engine (3
in-process signers, quorum 2) behind its HTTP server in this process, then drives it from
separate client processes (keep-alive HTTP/1.1 connections, one per client thread) with a seeded
mix: trade attestations 70 %, withdrawal attestations 15 %, ``GET /health`` 10 % and bad
requests 5 % (each must get a 4xx naming a field). While the load runs, a chain thread mines a
block every ``--block-every`` seconds, so the engine follows a moving chain (and, since every
request must see every block mined before it arrived, requests arriving during the sync wait
for it). The engine serves from ``--workers`` processes on one port.

Reference, measured in the same run: one client, in-process, no HTTP: compute + sign of the same
attestation mix on the indexed state (``EngineCore`` + the signers), requests per second.

Prints a table and, last, one JSON line: ``clients``, ``rps`` (attestations per second),
``p50_ms`` / ``p99_ms`` (attestation latency seen by the clients), ``errors`` (5xx answers),
``unexpected`` (other wrong answers: a valid request refused, a bad one accepted, a transport
error), ``all_rps`` (every request), ``reference_rps`` and ``ratio`` (rps / reference_rps); with
``--soak``, ``rss_start_mb``, ``rss_end_mb``, ``rss_max_mb`` and ``rss_flat``.

By default the clients are a closed loop (each sends its next request when it has the answer):
that measures the saturation throughput, and at saturation latency is clients / throughput
(Little's law), so on 2 cores shared by 16 clients and the engine the closed loop's p99 is that of a
saturated machine. ``--rate R`` paces the clients to R requests per second in all (an open loop: each
client starts a request every 16 / R seconds on a fixed schedule, latency counted from each
request's *scheduled* start, so a slow answer also counts the requests it held up: no coordinated
omission): the latency at a given load. With ``--rate`` the closed loop runs first for
``--closed-seconds`` on the same engine and chain, its table and ``closed_rps`` / ``closed_p50_ms``
/ ``closed_p99_ms`` / ``closed_errors`` are reported too, and ``rps`` / ``p50_ms`` / ``p99_ms`` are
the paced run's.

    .venv/bin/python scripts/bench_load.py --rate 1200     # 1,020 attestations/s offered (85 %)

The clients are cheap on purpose (raw keep-alive sockets, each request encoded before the load,
only the status line, ``Content-Length`` and body read back; ``http.client`` cost them several times
the server's HTTP work per request): they share the 2 cores with the engine, so what they spend is
taken from the measurement.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GENESIS = 1_767_225_600
U = 10**18
USDC = 10**6
DAY = 86_400
KINDS = ("trade", "withdraw", "health", "bad")


# ---------------------------------------------------------------------- the chain and the book
def _setup(h: Any) -> dict[str, list[tuple[int, int, int]]]:
    """List a book of options and futures, give 8 accounts 4-16 positions each (a ninth takes the
    other side of everything); returns each trader's positions as (instrument, size, price)."""
    from eth_account import Account

    from offchain.chain.anvil import DEFAULT_KEYS
    from offchain.chain.deploy import InstrumentSpec, list_instruments
    from offchain.chain.units import Kind

    now = h.now()
    strikes = [(50_000 + 2_000 * i if i % 2 == 0 else 2_400 + 100 * i) * U for i in range(12)]
    specs = [InstrumentSpec(Kind.CALL if i % 2 else Kind.PUT, i % 2, now + (7 + 7 * (i % 3)) * DAY, strikes[i])
             for i in range(12)]  # fmt: skip
    specs.append(InstrumentSpec(Kind.FUTURE, 1, now + 30 * DAY))
    ids = list(h.ids.values()) + list_instruments(h.p, h.deployer, specs)
    maker = DEFAULT_KEYS[9]
    h.fund(maker, "USDC", 10**9 * USDC)
    h.deposit(maker, "USDC", 10**9 * USDC)
    book: dict[str, list[tuple[int, int, int]]] = {}
    nonce = 0
    for t, key in enumerate(DEFAULT_KEYS[1:9]):
        h.fund(key, "USDC", 10**8 * USDC)
        h.deposit(key, "USDC", 10**7 * USDC)
        address = str(Account.from_key(key).address)
        held = []
        for n in range(4 + (t * 5) % 13):  # 4 .. 16 positions
            ins = ids[(t + 3 * n) % len(ids)]
            if any(i == ins for i, _, _ in held):
                continue
            size, price, buy = U // 2 + (n % 4) * U // 4, h.in_band(ins, (1_000 + 37 * n) * U), (t + n) % 3 != 0
            nonce += 1
            h.trade(key, h.order(key, ins, buy, size, price, nonce=nonce), maker,
                    h.order(maker, ins, not buy, size, price, nonce=nonce), size)  # fmt: skip
            held.append((ins, size if buy else -size, price))
        book[address] = held
    return book


def _at_model_prices(engine: Any, book: dict[str, list[tuple[int, int, int]]]) -> dict[str, list[tuple[int, int, int]]]:
    """Request prices at the engine's model price (on the TICK grid): the engine attests an option fill
    only within ``bands.option`` of it (issue 8), and a request it refuses would not be load."""
    state = engine.refresh()
    model = engine.core.engine(state)
    tick = 10**15

    def price(ins: int) -> int:
        return max(round(float(model.valuation.mark[model.instruments.row_of(ins)]) * 1_000), 1) * tick

    return {a: [(ins, size, price(ins)) for ins, size, _ in held] for a, held in book.items()}


def _requests(book: dict[str, list[tuple[int, int, int]]], instruments: list[int], n: int,
              seed: int) -> list[tuple[str, str, str, bytes]]:  # fmt: skip
    """A seeded mix of ``(kind, method, path, body)``; valid requests stay valid whatever the order."""
    import numpy as np

    rng = np.random.default_rng(seed)
    accounts = list(book)
    bad = [
        {"account": accounts[0], "instrument": instruments[0], "size": "1e400", "price": "55000", "role": "taker"},
        {"account": accounts[0], "instrument": instruments[0], "size": "1", "price": "1e999999", "role": "taker"},
        {"account": accounts[0], "instrument": 999_999, "size": "1", "price": "55000", "role": "taker"},
        {"account": accounts[0], "instrument": instruments[0], "size": "1000000", "price": "55000", "role": "taker"},
        {"account": accounts[0], "instrument": instruments[0], "size": "0.0001", "price": "55000", "role": "maker"},
        {"account": "0x12", "token": "USDC", "amount": "1"},
        {"account": accounts[1], "token": "USDC", "amount": "-1"},
        {"account": accounts[1], "token": "DOGE", "amount": "1"},
        {"account": accounts[1], "token": "USDC", "amount": "1e999999"},
    ]
    out: list[tuple[str, str, str, bytes]] = []
    for i in range(n):
        r = rng.random()
        account = accounts[int(rng.integers(len(accounts)))]
        if r < 0.70:
            ins, _, price = book[account][int(rng.integers(len(book[account])))]
            lots = int(rng.integers(1, 50)) * (1 if rng.random() < 0.5 else -1)  # 0.001-0.05 units
            role = "maker" if rng.random() < 0.5 else "taker"
            body = {"account": account, "instrument": ins, "size": f"{lots / 1000:.3f}",
                    "price": f"{price // 10**15 / 1000:.3f}", "role": role}  # fmt: skip
            out.append(("trade", "POST", "/attest/trade", json.dumps(body).encode()))
        elif r < 0.85:
            body = {"account": account, "token": "USDC", "amount": str(int(rng.integers(1, 100)))}
            out.append(("withdraw", "POST", "/attest/withdraw", json.dumps(body).encode()))
        elif r < 0.95:
            out.append(("health", "GET", "/health", b""))
        else:
            k = i % (len(bad) + 1)
            if k == len(bad):
                out.append(("bad", "POST", "/attest/trade", b'{"account": '))  # not JSON
            else:
                path = "/attest/trade" if "instrument" in bad[k] else "/attest/withdraw"
                out.append(("bad", "POST", path, json.dumps(bad[k]).encode()))
    return out


# ---------------------------------------------------------------------- clients (own processes)
def _wire(method: str, path: str, body: bytes) -> bytes:
    """One request as it goes on the wire (HTTP/1.1, keep-alive), encoded once before the load."""
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


class _Conn:
    """A keep-alive client connection on a raw socket: sends pre-encoded requests and reads the
    status line, ``Content-Length`` and body of each answer, nothing more. ``http.client`` cost the
    client processes several times the engine's HTTP work per request, and they share the cores
    with the engine: a heavy load generator measures itself."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.buf = b""

    def ask(self, wire: bytes) -> tuple[int, bytes]:
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.buf = b""
        self.sock.sendall(wire)
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            self._more()
        head, self.buf = self.buf[:end], self.buf[end + 4 :]
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        while len(self.buf) < length:
            self._more()
        body, self.buf = self.buf[:length], self.buf[length:]
        if b"\r\nconnection: close" in head.lower():
            self.close()
        return status, body

    def _more(self) -> None:
        assert self.sock is not None
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.buf += data

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _client_process(port: int, threads: int, requests: list[tuple[str, str, str, bytes]], offset: int,
                    seconds: float, count: int, interval: float, conn: Connection) -> None:  # fmt: skip
    """``threads`` keep-alive clients; sends back [(kind, status, ms, field_ok, lag_ms)] when done
    (``lag_ms``: how long after its scheduled time a paced request was sent; 0 in a closed loop).

    ``interval`` 0: each client sends its next request as soon as it has the answer (closed loop,
    the saturation throughput). ``interval`` > 0: each client starts a request every ``interval``
    seconds on a fixed schedule, and latency counts from the scheduled start, so that a slow answer
    also counts the requests it delayed (no coordinated omission).
    """
    results: list[tuple[str, int, float, bool, float]] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds
    counter = {"n": 0}
    wires = [(kind, _wire(method, path, body)) for kind, method, path, body in requests]

    def run(k: int) -> None:
        c = _Conn(port)
        mine: list[tuple[str, int, float, bool, float]] = []
        i = offset + k
        scheduled = time.perf_counter() + interval * k / max(threads, 1)
        while time.monotonic() < stop_at:
            with lock:
                if counter["n"] >= count:
                    break
                counter["n"] += 1
            kind, wire = wires[i % len(wires)]
            i += threads * 7 + 1
            if interval > 0:
                time.sleep(max(0.0, scheduled - time.perf_counter()))
                t0, scheduled = scheduled, scheduled + interval
                lag = (time.perf_counter() - t0) * 1e3  # how late this client sent it (the machine's share)
            else:
                t0, lag = time.perf_counter(), 0.0
            try:
                status, raw = c.ask(wire)
            except (OSError, ValueError):
                c.close()
                status, raw = 0, b""
            ms = (time.perf_counter() - t0) * 1e3
            field_ok = True
            if 400 <= status < 500:
                try:
                    field_ok = bool(json.loads(raw).get("field"))
                except ValueError:
                    field_ok = False
            mine.append((kind, status, ms, field_ok, lag))
        c.close()
        with lock:
            results.extend(mine)

    workers = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    conn.send(results)
    conn.close()


def _drive(port: int, clients: int, procs: int, requests: list[tuple[str, str, str, bytes]], seconds: float,
           count: int, rate: float = 0.0) -> tuple[list[tuple[str, int, float, bool, float]], float]:  # fmt: skip
    ctx = mp.get_context("spawn")
    per = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    pipes, children = [], []
    interval = clients / rate if rate else 0.0
    for i, threads in enumerate(per):
        parent, child = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_client_process, args=(port, threads, requests, sum(per[:i]) * 131, seconds,
                                                      count // procs, interval, child))  # fmt: skip
        p.start()
        pipes.append(parent)
        children.append(p)
    t0 = time.monotonic()
    results: list[tuple[str, int, float, bool, float]] = []
    for parent in pipes:
        results.extend(parent.recv())
    elapsed = time.monotonic() - t0
    for p in children:
        p.join(30)
    return results, elapsed


# ---------------------------------------------------------------------- measurements
def _reference(engine: Any, requests: list[tuple[str, str, str, bytes]], n: int) -> tuple[float, float]:
    """Single client, in-process, no HTTP: compute + sign of the same attestation mix: (per second,
    p99 ms of one call; on a machine shared with other work the latter shows its scheduling noise)."""
    from offchain.chain.units import to_price, to_size
    from offchain.engine.core import TradeRequest, WithdrawRequest
    from offchain.engine.signer import SignJob

    state = engine.refresh()
    usdc = engine.protocol.deployment.tokens["USDC"].address
    issued, expiry = engine._window(state)
    jobs: list[TradeRequest | WithdrawRequest] = []
    for kind, _, _, body in requests:
        if kind == "trade":
            b = json.loads(body)
            size, price = to_size(b["size"]), to_price(b["price"])
            jobs.append(TradeRequest(b["account"], b["instrument"], size, price,
                                     engine._fee(state, size, price, b["role"])))  # fmt: skip
        elif kind == "withdraw":
            b = json.loads(body)
            jobs.append(WithdrawRequest(b["account"], usdc, int(b["amount"]) * USDC))
        if len(jobs) == n:
            break
    t0 = time.perf_counter()
    each = []
    for req in jobs:
        t1 = time.perf_counter()
        if isinstance(req, TradeRequest):
            att = engine.core.attest_trade(state, req, issued, expiry)
        else:
            att = engine.core.attest_withdraw(state, req, issued, expiry)
        engine._collect(SignJob(state.block, att, req), state)
        each.append((time.perf_counter() - t1) * 1e3)
    return len(jobs) / (time.perf_counter() - t0), _pct(each, 0.99)


def _rss_mb(pids: list[int]) -> float:
    """Resident memory of the engine's processes (this one and the workers), MB."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as fh:
                total += next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024
        except (OSError, StopIteration):
            continue
    return total


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


def _mine_blocks(url: str, every: float, stop: threading.Event, mined: list[int]) -> None:
    """A block every ``every`` seconds (``evm_mine`` over a raw connection, so that the load
    generator costs this process next to nothing): the engine has to follow a moving chain."""
    parts = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(parts[0], int(parts[1]), timeout=10)
    while not stop.wait(every):
        conn.request("POST", "/", b'{"jsonrpc":"2.0","id":1,"method":"evm_mine","params":[]}',
                     {"Content-Type": "application/json"})  # fmt: skip
        conn.getresponse().read()
        mined[0] += 1
    conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--client-procs", type=int, default=2, help="client processes the clients are spread over")
    ap.add_argument("--seconds", type=float, default=20.0, help="load duration (bound)")
    ap.add_argument("--count", type=int, default=2_000_000, help="most requests to send (bound)")
    ap.add_argument("--block-every", type=float, default=2.0, help="seconds between blocks mined during the load")
    ap.add_argument("--soak", type=float, default=0.0, help="soak SECONDS: one long run, RSS sampled every 5 s")
    ap.add_argument(
        "--max-staleness",
        type=float,
        default=0.0,
        help="engine freshness: 0 = every request sees every block mined before it (default)",
    )
    ap.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="requests per second, all clients together, on a fixed schedule (0: as fast as answered)",
    )
    ap.add_argument("--closed-seconds", type=float, default=10.0,
                    help="with --rate: length of the closed-loop run measured first (the saturation maximum)")
    ap.add_argument("--workers", type=int, default=2, help="engine processes serving the port (SO_REUSEPORT)")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    if not 1 <= args.clients <= 256 or not 1 <= args.client_procs <= args.clients:
        ap.error("--clients must be 1-256 and --client-procs 1..clients")
    seconds = args.soak if args.soak > 0 else args.seconds
    if not 0 < seconds <= 3_600 or not 0 < args.closed_seconds <= 600:
        ap.error("the run is bounded: --seconds / --soak must be in (0, 3600], --closed-seconds in (0, 600]")

    from offchain.chain.anvil import DEFAULT_KEYS, start_anvil
    from offchain.chain.client import connect
    from offchain.chain.devnet import bootstrap
    from offchain.engine.http import EngineSpec, serve_engine, start_workers
    from offchain.engine.service import build_engine
    from offchain.engine.signer import LocalSigner
    from tests.chain.harness import Harness

    with start_anvil(timestamp=GENESIS) as node, tempfile.TemporaryDirectory() as tmp:
        dev = bootstrap(connect(node.url), DEFAULT_KEYS[0], rpc_url=node.url, timelock=None)  # lists instruments
        h = Harness(dev.protocol, DEFAULT_KEYS[0], dev.risk_signers, dev.price_signers, dev.instruments)
        book = _setup(h)
        signers = [LocalSigner(s._key.to_bytes(), dev.protocol.domain("RiskOracle")) for s in dev.risk_signers]
        engine = build_engine(
            dev.protocol, signers, DEFAULT_KEYS[0], Path(tmp), lifetime=300, max_staleness=args.max_staleness
        )
        book = _at_model_prices(engine, book)
        requests = _requests(book, list(dev.instruments.values()), 20_000, args.seed)
        positions = [len(v) for v in book.values()]
        _reference(engine, requests[:50], 50)  # warm-up: numba, caches
        reference_rps, reference_p99 = _reference(engine, requests, 2_000)
        server = serve_engine(engine, reuse_port=args.workers > 1)
        port = int(server.server_address[1])
        workers = []
        if args.workers > 1:
            dep = Path(tmp) / "deployment.json"
            dev.protocol.deployment.save(dep)
            keys = tuple("0x" + s._key.to_bytes().hex() for s in dev.risk_signers)
            spec = EngineSpec(node.url, dep, keys, DEFAULT_KEYS[0], lifetime=300, max_staleness=args.max_staleness)
            workers = start_workers(spec, args.workers - 1, "127.0.0.1", port, Path(tmp))
        pids = [os.getpid(), *(int(w.pid) for w in workers if w.pid is not None)]
        rss: list[tuple[float, float]] = [(0.0, _rss_mb(pids))]
        stop, mined = threading.Event(), [0]
        miner = threading.Thread(target=_mine_blocks, args=(node.url, args.block_every, stop, mined), daemon=True)
        sampler_stop = threading.Event()
        t_start = time.monotonic()

        def sample() -> None:
            while not sampler_stop.wait(5.0):
                rss.append((time.monotonic() - t_start, _rss_mb(pids)))

        sampler = threading.Thread(target=sample, daemon=True)
        closed: tuple[list[tuple[str, int, float, bool, float]], float] | None = None
        try:
            _drive(port, args.clients, args.client_procs, requests, 2.0, 2_000)  # warm-up: threads, connections
            miner.start()
            if args.rate:  # the closed-loop maximum first, on the same engine and chain, for comparison
                closed = _drive(port, args.clients, args.client_procs, requests, args.closed_seconds, args.count)
            rss.append((0.0, _rss_mb(pids)))
            t_start = time.monotonic()
            sampler.start()
            results, elapsed = _drive(port, args.clients, args.client_procs, requests, seconds, args.count, args.rate)
            rss.append((time.monotonic() - t_start, _rss_mb(pids)))
        finally:
            stop.set()
            sampler_stop.set()
            server.shutdown()
            for w in workers:
                w.terminate()
                w.join(10)
        follower = engine.follower
    print(f"accounts {len(positions)} holding {min(positions)}-{max(positions)} positions; {args.clients} clients in "
          f"{args.client_procs} processes; engine in {args.workers} processes; {mined[0]} blocks mined during the "
          f"load, {follower.syncs} engine syncs and {follower.checks} head checks in the main engine "
          "process")  # fmt: skip
    out: dict[str, Any] = {"clients": args.clients}
    if closed is not None:
        print(f"\nclosed loop (each client as fast as answered), {closed[1]:.1f} s: the saturation throughput")
        c = _table(*closed)
        out |= {"closed_rps": c["rps"], "closed_p50_ms": c["p50_ms"], "closed_p99_ms": c["p99_ms"],
                "closed_errors": c["errors"]}  # fmt: skip
    if args.rate:
        print(f"\npaced (open loop) at {args.rate:g} requests/s in all, {elapsed:.1f} s: latency from each request's "
              "scheduled send time (no coordinated omission)")  # fmt: skip
    else:
        print(f"\nclosed loop (each client as fast as answered), {elapsed:.1f} s")
    main_run = _table(results, elapsed)
    _report(args, main_run, out, (reference_rps, reference_p99), rss)


def _table(results: list[tuple[str, int, float, bool, float]], elapsed: float) -> dict[str, Any]:
    """Print one run's table by request kind; its attestation figures."""
    expected = {"trade": 200, "withdraw": 200, "health": 200}
    print(f"{'kind':<10}{'count':>8}{'per s':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}  statuses")
    att_ms: list[float] = []
    unexpected = errors = 0
    for kind in KINDS:
        rows = [r for r in results if r[0] == kind]
        ms = [r[2] for r in rows]
        statuses: dict[int, int] = {}
        for r in rows:
            statuses[r[1]] = statuses.get(r[1], 0) + 1
            errors += r[1] >= 500
            if kind == "bad":
                unexpected += not (400 <= r[1] < 500 and r[3])
            else:
                unexpected += r[1] != expected[kind] and r[1] < 500
        if kind in ("trade", "withdraw"):
            att_ms += ms
        print(f"{kind:<10}{len(rows):>8}{len(rows) / elapsed:>9.0f}{_pct(ms, 0.5):>9.2f}{_pct(ms, 0.99):>9.2f}"
              f"{max(ms, default=float('nan')):>9.2f}  {dict(sorted(statuses.items()))}")  # fmt: skip
    all_ms = [r[2] for r in results]
    print(f"{'all':<10}{len(results):>8}{len(results) / elapsed:>9.0f}{_pct(all_ms, 0.5):>9.2f}"
          f"{_pct(all_ms, 0.99):>9.2f}{max(all_ms, default=float('nan')):>9.2f}")  # fmt: skip
    lags = [r[4] for r in results]
    sent = [r[2] - r[4] for r in results if r[0] in ("trade", "withdraw")]
    if any(lags):
        print(f"{'send lag':<10}{'':>17}{_pct(lags, 0.5):>9.2f}{_pct(lags, 0.99):>9.2f}{max(lags):>9.2f}  how late the "
              "clients sent (scheduled -> sent; part of the latencies above: the previous answer on the same "
              "connection, or the client's own wait for a core)")  # fmt: skip
        print(f"{'from send':<10}{'':>17}{_pct(sent, 0.5):>9.2f}{_pct(sent, 0.99):>9.2f}{max(sent):>9.2f}  "
              "attestations, from the actual send (what the server and the network took)")  # fmt: skip
    return {"rps": round(len(att_ms) / elapsed, 1), "p50_ms": round(_pct(att_ms, 0.5), 3),
            "p99_ms": round(_pct(att_ms, 0.99), 3), "errors": errors, "unexpected": unexpected,
            "all_rps": round(len(results) / elapsed, 1), "seconds": round(elapsed, 1),
            **({"send_lag_p99_ms": round(_pct(lags, 0.99), 3),
                "p99_from_send_ms": round(_pct(sent, 0.99), 3)}
               if any(lags) else {})}  # fmt: skip


def _report(args: Any, run: dict[str, Any], out: dict[str, Any], reference: tuple[float, float],
            rss: list[tuple[float, float]]) -> None:  # fmt: skip
    reference_rps, reference_p99 = reference
    rps = run["rps"]
    print(
        f"reference: one client, in-process compute + sign, no HTTP: {reference_rps:,.0f} attestations/s, "
        f"p99 of one call {reference_p99:.2f} ms; load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print(f"attestations over HTTP: {rps:,.0f}/s = {rps / reference_rps:.2f}x the reference, "
          f"p99 {run['p99_ms']:.1f} ms (targets: >= 1,000/s, p99 <= 20 ms)")  # fmt: skip
    out |= {**run, "reference_rps": round(reference_rps, 1), "reference_p99_ms": round(reference_p99, 3),
            "loadavg": round(os.getloadavg()[0], 2), "ratio": round(rps / reference_rps, 3),
            "rate": args.rate}  # fmt: skip
    out = {k: out[k] for k in ("clients", "rps", "p50_ms", "p99_ms", "errors")} | out  # the keys first
    if args.soak > 0:
        start = statistics.median(v for t, v in rss if t <= 60.0) if len(rss) > 2 else rss[0][1]
        end = statistics.median(v for t, v in rss[-5:])
        peak = max(v for _, v in rss)
        flat = end - start <= max(16.0, 0.05 * start)
        print("rss MB by time: " + ", ".join(f"{t:.0f}s {v:.0f}" for t, v in rss[:: max(1, len(rss) // 12)]))
        print(f"engine processes' rss start {start:.1f} MB (median of the first minute), end {end:.1f} MB, "
              f"max {peak:.1f} MB: {'flat' if flat else 'GROWING'}")  # fmt: skip
        out |= {"rss_start_mb": round(start, 1), "rss_end_mb": round(end, 1), "rss_max_mb": round(peak, 1),
                "rss_flat": flat}  # fmt: skip
    print(json.dumps(out))


if __name__ == "__main__":
    main()
