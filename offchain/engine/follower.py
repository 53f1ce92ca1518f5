"""Following the chain once per new block, with read-your-writes freshness for every request.

The engine answers many attestation requests per block. Indexing on every request (one
``eth_blockNumber``, one ``eth_getBlockByNumber``, one ``eth_getLogs`` and a checkpoint write)
serialises them behind the RPC; instead a :class:`ChainFollower` thread checks the chain head and
syncs the indexer only when a new block appears, then publishes an immutable copy of the state
(a *snapshot*) that request threads read without a lock.

Freshness
---------
An attestation must bind the account's current risk nonce, or the contract refuses it
(``RiskOracle_StaleNonce``). A client that has just traded has seen the block of its trade, so a
request must see every block mined before the request arrived. :meth:`ChainFollower.fresh`
guarantees exactly that: it waits for a head check that *started after the call* (and for the
sync that check triggers). Checks are shared: one check in flight serves every request waiting
on it, so under load the RPC cost per request tends to zero while each request waits about one
to two head-check round trips (a raw JSON-RPC ``eth_blockNumber``, about 0.2 ms on localhost).
``max_staleness`` > 0 relaxes this to "a check started at most that many seconds before the call".

Notes
-----
A head check compares block numbers. A re-organisation that keeps the height is caught by the
indexer's own hash check, which runs on every sync and at least every ``resync`` seconds (that
periodic sync and the checkpoint write run in a second thread, so no request waits for them).
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable

from offchain.chain.client import Protocol
from offchain.chain.indexer import Indexer, ProtocolState
from offchain.errors import ChainError

log = logging.getLogger("pmsim.engine.follower")


class ChainUnavailableError(ChainError):
    """The chain head could not be read: no attestation can be known to be fresh."""


class HeadProbe:
    """``eth_blockNumber`` over one persistent connection (far cheaper than a web3 call).

    Over plain HTTP the request is encoded once and sent on a raw keep-alive socket, and only the
    answer's status line, ``Content-Length`` and body are read: every attestation request waits for
    a probe, so its round trip is on the attestation's latency (``http.client`` read and parsed the
    answer in a dozen steps, each taking the interpreter lock back from the request threads).
    HTTPS goes through ``http.client``; providers that are not HTTP through ``w3.eth.block_number``.
    """

    def __init__(self, protocol: Protocol, timeout: float = 5.0) -> None:
        self._w3 = protocol.w3
        uri = str(getattr(protocol.w3.provider, "endpoint_uri", "") or "")
        parts = urllib.parse.urlsplit(uri)
        self._http = parts.scheme in ("http", "https") and bool(parts.hostname)
        self._raw = parts.scheme == "http"  # until the node sends an answer without Content-Length
        self._parts, self._timeout = parts, timeout
        self._conn: http.client.HTTPConnection | None = None
        self._sock: socket.socket | None = None
        self._buf = b""
        host = parts.hostname or "127.0.0.1"
        self._address = (host, parts.port or 80)
        self._request = (f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                         f"Content-Type: application/json\r\nContent-Length: {len(_BLOCK_NUMBER)}\r\n\r\n"
                         ).encode() + _BLOCK_NUMBER  # fmt: skip

    def __call__(self) -> int:
        if not self._http:
            return int(self._w3.eth.block_number)
        for attempt in (0, 1):  # a keep-alive connection the node closed is reopened once
            try:
                return self._ask_raw() if self._raw else self._ask()
            except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError) as exc:
                self.close()
                if attempt:
                    raise ChainUnavailableError(f"cannot read the chain head: {exc}") from exc
        raise AssertionError("unreachable")

    def _ask(self) -> int:
        if self._conn is None:
            p = self._parts
            cls = http.client.HTTPSConnection if p.scheme == "https" else http.client.HTTPConnection
            self._conn = cls(p.hostname or "127.0.0.1", p.port, timeout=self._timeout)
        self._conn.request("POST", self._parts.path or "/", _BLOCK_NUMBER, {"Content-Type": "application/json"})
        reply = json.loads(self._conn.getresponse().read())
        return int(reply["result"], 16)

    def _ask_raw(self) -> int:
        if self._sock is None:
            self._sock = socket.create_connection(self._address, timeout=self._timeout)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._buf = b""
        self._sock.sendall(self._request)
        while (end := self._buf.find(b"\r\n\r\n")) < 0:
            self._more()
        head, self._buf = self._buf[:end].lower(), self._buf[end + 4 :]
        if not head.startswith(b"http/1.1 200"):
            raise ValueError(f"the node answered {head[:40]!r}")
        start = head.find(b"\r\ncontent-length:")
        if start < 0:  # a chunked answer: leave the raw path for http.client
            self._raw = False
            raise ValueError("the node's answer has no Content-Length")
        length = int(head[start + 17 :].split(b"\r\n", 1)[0])
        while len(self._buf) < length:
            self._more()
        body, self._buf = self._buf[:length], self._buf[length:]
        if b"connection: close" in head:
            self.close()
        return int(json.loads(body)["result"], 16)

    def _more(self) -> None:
        assert self._sock is not None
        data = self._sock.recv(65536)
        if not data:
            raise ConnectionError("the node closed the connection")
        self._buf += data

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None


_BLOCK_NUMBER = b'{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}'


class ChainFollower:
    """Keeps a snapshot of the indexed state in step with the chain (see the module notes).

    Parameters
    ----------
    indexer : Indexer
        Synced only by this object (under its lock), never by request threads.
    head : callable
        Returns the chain's head block number (a :class:`HeadProbe`).
    poll : float
        Seconds between head checks while no request waits.
    resync : float
        At least this often the indexer syncs even when the height did not change (reorg check), in
        a background thread that no request waits for.
    prepare : callable, optional
        Called with each new state *before* it is published (build the block's market there, so
        that no request waits for it); an error is logged and the state published anyway.
    on_sync : callable, optional
        Called with each newly published snapshot (metrics).
    save_every : float
        Seconds between writes of the indexer's checkpoint, in the background thread (a write with
        ``fsync`` on every block would stall the requests waiting for that block); :meth:`refresh`
        always writes it.
    """

    def __init__(self, indexer: Indexer, head: Callable[[], int], *, poll: float = 0.25, resync: float = 2.0,
                 prepare: Callable[[ProtocolState], object] | None = None,
                 on_sync: Callable[[ProtocolState], None] | None = None, save_every: float = 30.0) -> None:  # fmt: skip
        self.indexer, self._head = indexer, head
        self.poll, self.resync = poll, resync
        self._prepare, self._on_sync = prepare, on_sync
        self._checkpoint, self.save_every = indexer.checkpoint, save_every
        self._saved_at = time.monotonic()
        self._sync_lock = threading.Lock()
        self._cond = threading.Condition()
        self._snapshot = indexer.state.copy()
        self._seen_head = -1
        self._synced_at = 0.0
        self._started = 0  # head checks started
        self._finished = 0  # head checks finished (the snapshot reflects the head each one read)
        self._finished_start = 0.0  # monotonic start time of the last finished check
        self._wanted = 0
        self._error: ChainError | None = None
        self._thread: threading.Thread | None = None
        self._background = threading.Event()
        self._background_thread: threading.Thread | None = None
        self._background_busy = False
        self._stop = False
        self.checks = 0
        self.syncs = 0

    # ------------------------------------------------------------------ public
    @property
    def snapshot(self) -> ProtocolState:
        """The last published state (immutable by convention: never mutate it)."""
        return self._snapshot

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the background thread (idempotent)."""
        if self.running:
            return
        self._stop = False
        self._background.clear()
        self._thread = threading.Thread(target=self._run, name="chain-follower", daemon=True)
        self._thread.start()
        self._background_thread = threading.Thread(target=self._run_background, name="chain-resync", daemon=True)
        self._background_thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and write the checkpoint."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._background.set()
        for thread in (self._thread, self._background_thread):
            if thread is not None:
                thread.join(timeout)
        self._thread = self._background_thread = None
        with self._sync_lock:
            self.indexer.save()

    def refresh(self) -> ProtocolState:
        """Sync now, in the calling thread, and publish; returns the new snapshot."""
        started = time.monotonic()
        with self._sync_lock:
            self._sync(save=True)
            state = self._publish()
        with self._cond:
            self._finished_start = max(self._finished_start, started)
        return state

    def fresh(self, max_staleness: float = 0.0, timeout: float = 10.0) -> ProtocolState:
        """A snapshot that includes every block mined before this call (see the module notes).

        Raises
        ------
        ChainUnavailableError
            The head check failed, or none finished within ``timeout`` seconds.
        """
        if not self.running:
            return self.refresh()
        arrived = time.monotonic()
        with self._cond:
            if max_staleness > 0 and self._error is None and arrived - self._finished_start <= max_staleness:
                return self._snapshot
            ticket = self._started + 1  # the first check to start after this call
            if self._wanted < ticket:
                self._wanted = ticket
                self._cond.notify_all()
            deadline = arrived + timeout
            while self._finished < ticket:
                left = deadline - time.monotonic()
                if left <= 0 or self._stop:
                    raise ChainUnavailableError(f"no head check finished within {timeout:g} s")
                self._cond.wait(left)
            if self._error is not None:
                raise self._error
            return self._snapshot

    # ------------------------------------------------------------------ loop
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and self._wanted <= self._finished:
                    if not self._cond.wait(self.poll):
                        break  # periodic check: follow new blocks with nobody asking
                if self._stop:
                    return
                self._started += 1
                number = self._started
            started = time.monotonic()
            error = self._check()
            with self._cond:
                self._finished, self._error = number, error
                if error is None:
                    self._finished_start = started
                self._cond.notify_all()
            if error is not None:
                time.sleep(min(self.poll, 0.05))  # do not spin on a dead node

    def _check(self) -> ChainError | None:
        try:
            head = self._head()
            self.checks += 1
            if head != self._seen_head:
                with self._sync_lock:
                    self._sync(save=False)
                    self._publish()
                    self._seen_head = head
            now = time.monotonic()
            due = now - self._synced_at >= self.resync or now - self._saved_at >= self.save_every
            if due and not self._background_busy:
                self._background.set()  # the reorg check and the checkpoint: no request waits for them
            return None
        except ChainError as exc:
            log.warning("chain head check failed: %s", exc)
            return exc if isinstance(exc, ChainUnavailableError) else ChainUnavailableError(str(exc))
        except Exception as exc:  # a follower never dies: log it, report it to the waiting requests
            log.exception("chain follower failed")
            return ChainUnavailableError(f"the chain follower failed: {type(exc).__name__}")

    def _run_background(self) -> None:
        """The periodic sync at an unchanged height (the indexer's hash check catches a re-organisation
        that kept the height) and the checkpoint write, off the head-check path: a request waits for
        a head check and for the sync of a *new* block, never for these (they took a sync's RPC round
        trips, or a JSON dump and an ``fsync``, every ``resync`` seconds on an idle chain)."""
        while True:
            self._background.wait()
            self._background.clear()
            if self._stop:
                return
            self._background_busy = True
            try:
                with self._sync_lock:
                    before = self._snapshot
                    self._sync(save=time.monotonic() - self._saved_at >= self.save_every)
                    if self._publish() is not before:
                        # a new block or another branch (maybe a shorter one): the height last seen
                        # by a head check says nothing of it any more, so the next check syncs
                        self._seen_head = -1
            except Exception:  # the next head check reports a dead node to the requests; keep going
                log.exception("background resync failed")
                time.sleep(min(self.poll, 0.5))
            self._synced_at = time.monotonic()
            self._background_busy = False

    def _sync(self, save: bool) -> None:
        """Index up to the head (call under the sync lock); write the checkpoint only if ``save``."""
        self.indexer.checkpoint = self._checkpoint if save else None
        try:
            self.indexer.sync()
        finally:
            self.indexer.checkpoint = self._checkpoint
        if save:
            self._saved_at = time.monotonic()

    def _publish(self) -> ProtocolState:
        """Copy the indexer's state (call under the sync lock) and make it the snapshot."""
        state = self.indexer.state
        if state.block != self._snapshot.block or state.block_hash != self._snapshot.block_hash:
            fresh = state.copy()
            if self._prepare is not None:
                try:
                    self._prepare(fresh)
                except Exception:  # the requests will meet the error themselves, with a proper answer
                    log.exception("preparing block %d failed", fresh.block)
            self._snapshot = fresh
            self.syncs += 1
            if self._on_sync is not None:
                self._on_sync(self._snapshot)
        self._synced_at = time.monotonic()
        return self._snapshot
