"""HTTP API of the engine (and of a standalone signer): JSON in, JSON out, Prometheus metrics.

Engine routes
-------------
``GET /health``                      status, indexed block, chain time, price round, hashes, signers
``POST /attest/trade``               ``{"account", "instrument", "size", "price", "role"}`` -> signed attestation
``POST /attest/withdraw``            ``{"account", "token", "amount"}`` -> signed attestation
``POST /attest/bid``                 ``{"bidder", "account", "fraction", "worst_price"}`` -> signed attestation
                                     of the bidder after the bid, with the auction ``version`` it binds
``GET /liquidatable``                accounts below maintenance margin in the latest round, with proofs
``GET /proof/<account>``             the account's status leaf and Merkle proof in the latest round
``GET /round/latest``                the latest round's root and whole tree (StandardMerkleTree dump)
``GET /metrics``                     Prometheus text format

``size`` is in units of the underlying (signed, + buys, a multiple of 0.001), ``price`` in USD
(a multiple of 0.001), ``amount`` in token units (decimal string; ``"all"``: the whole balance, bound as
``WITHDRAW_ALL`` so that a ``settleFunding`` just before cannot make it revert), ``token`` a symbol or address;
``fraction`` a share of the portfolio in (0, 1] (at most 18 decimals), ``worst_price`` the most the
bidder pays in USD (at most 6 decimals; negative: the least it is paid, insolvent auctions).
Every refusal is JSON ``{"error": ..., "field": ...}`` naming the field at fault:

* 400: malformed or out-of-range input, or an action the contracts would refuse (size beyond
  ``MAX_SIZE``, off the lot or tick grid, a position below ``minPositionSize`` or beyond
  ``maxPositions``, an expired or unknown instrument, more than the balance; see
  :mod:`offchain.engine.checks`; for bids, a fraction beyond the auction's largest or a bidder
  left below IM);
* 422: the account would be under-margined after the action (``RiskOracle_InsufficientMargin``),
  with ``margin_equity``, ``required`` and ``shortfall`` in quote units; nothing is signed;
* 404 unknown route (field ``path``), 413 body over 64 KiB, 409 the protocol is paused or the
  auction changed, 503 signers below quorum or the chain unreachable.

The server speaks HTTP/1.1 with keep-alive (one thread per connection, idle ones closed after
30 s); requests are answered concurrently on snapshots of the chain state (see
:class:`offchain.engine.service.Engine`).

Signer routes: ``POST /sign`` (a :func:`offchain.engine.signer.job_to_json` body) -> ``{"signature"}``,
``GET /health``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import multiprocessing
import os
import socket
import threading
import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, ClassVar

from eth_utils import is_address, to_checksum_address
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from offchain import rules
from offchain.chain.units import QUOTE_SCALE, WAD, to_price, to_size
from offchain.engine.follower import ChainUnavailableError
from offchain.engine.liquidation import fetch_auction
from offchain.engine.service import Engine, InsufficientMarginError, QuorumError
from offchain.engine.signer import SignerNode, SignerRefused, job_from_json
from offchain.errors import ChainError, InputError, PmsimError

log = logging.getLogger("pmsim.http")
MAX_BODY = 64 * 1024


class _Handler(BaseHTTPRequestHandler):
    server_version = "pmsim"
    protocol_version = "HTTP/1.1"  # keep-alive: no connection (and thread) per request
    timeout = 30  # seconds a connection may sit idle
    disable_nagle_algorithm = True  # headers and body go out at once, not 40 ms apart (delayed ACK)

    # set by the server factory
    routes_get: ClassVar[dict[str, Any]] = {}
    routes_post: ClassVar[dict[str, Any]] = {}
    prefixes_get: ClassVar[dict[str, Any]] = {}
    metrics: Any = None
    raw_requestline: bytes  # set by handle_one_request

    def log_message(self, format: str, *args: Any) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s " + format, self.address_string(), *args)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if log.isEnabledFor(logging.DEBUG):  # the client's address is looked up only when it is logged
            super().log_request(code, size)

    def parse_request(self) -> bool:
        """The request line and headers, read with a few ``readline`` calls into a plain dictionary
        (:class:`_Headers`) rather than through the e-mail parser, which cost as much as the rest of
        the HTTP work. Anything but a plain ``METHOD target HTTP/1.x`` line goes to the standard
        parser (and its error answers)."""
        words = self.raw_requestline.split()
        if len(words) != 3 or words[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
            return bool(super().parse_request())
        self.command, self.path, self.request_version = (w.decode("iso-8859-1") for w in words)
        self.requestline = " ".join((self.command, self.path, self.request_version))
        headers = _Headers()
        for _ in range(_MAX_HEADERS + 1):
            line = self.rfile.readline(_MAX_LINE + 1)
            if line in (b"\r\n", b"\n", b""):
                break
            if len(line) > _MAX_LINE:
                self.close_connection = True
                self.send_error(431, "header line too long")
                return False
            name, colon, value = line.decode("iso-8859-1").partition(":")
            if not colon or not name or name != name.strip():
                self.close_connection = True
                self.send_error(400, "bad header line (expected Name: value)")
                return False
            headers.setdefault(name.lower(), value.strip())  # the first of repeated headers, as before
        else:
            self.close_connection = True
            self.send_error(431, "too many headers")
            return False
        self.headers = headers  # type: ignore[assignment]
        connection = headers.get("connection", "").lower()
        self.close_connection = connection == "close" or (self.request_version == "HTTP/1.0"
                                                           and connection != "keep-alive")  # fmt: skip
        if headers.get("expect", "").lower() == "100-continue":
            return bool(self.handle_expect_100())
        return True

    def _send(self, status: int, payload: Any, content_type: str = "application/json") -> None:
        """Status line, headers and body in one write (one segment on the wire for small answers)."""
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        if self.close_connection:
            extra = b"Connection: close\r\n"
        elif self.request_version == "HTTP/1.0":
            extra = b"Connection: keep-alive\r\n"
        else:
            extra = b""
        self.log_request(status, len(body))
        head = _status_line(status) + _date_header() + (
            b"Content-Type: " + content_type.encode("latin-1") + b"\r\nContent-Length: " + str(len(body)).encode()
            + b"\r\n" + extra + b"\r\n"
        )  # fmt: skip
        self.wfile.write(head + body)

    def _error(self, status: int, message: str, field: str | None = None, **extra: Any) -> None:
        self._send(status, {"error": message, **({"field": field} if field else {}), **extra})

    def _dispatch(self, handler: Any, *args: Any) -> None:
        try:
            payload = handler(*args)
        except InsufficientMarginError as exc:
            self._error(422, str(exc), exc.field, margin_equity=str(exc.equity), required=str(exc.required),
                        shortfall=str(exc.shortfall))  # fmt: skip
        except InputError as exc:
            self._error(400, str(exc), exc.field)
        except (SignerRefused, QuorumError) as exc:
            self._error(503, str(exc), "signers")
        except ChainUnavailableError as exc:
            self._error(503, str(exc), "chain")
        except ChainError as exc:
            self._error(409, str(exc), "chain")
        except PmsimError as exc:
            self._error(400, str(exc), "body")
        except Exception:  # never leak a traceback to a client; log it
            log.exception("internal error on %s", self.path)
            self._error(500, "internal error")
        else:
            self._send(200, payload)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        if path == "/metrics" and self.metrics is not None:
            self._send(200, generate_latest(self.metrics), CONTENT_TYPE_LATEST)
            return
        if path in self.routes_get:
            self._dispatch(self.routes_get[path])
            return
        for prefix, handler in self.prefixes_get.items():
            if path.startswith(prefix + "/"):
                self._dispatch(handler, path[len(prefix) + 1 :])
                return
        self._error(404, f"no route {path}", "path")

    def do_POST(self) -> None:
        text = self.headers.get("Content-Length") or "0"
        length = int(text) if text.isascii() and text.isdigit() else -1
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True  # the body was not read: the connection cannot carry on
            if length < 0:
                self._error(400, f"Content-Length must be a byte count, got {text[:40]!r}", "Content-Length")
            else:
                self._error(413, f"request body over {MAX_BODY} bytes", "body")
            return
        raw = self.rfile.read(length)
        path = self.path.rstrip("/")
        if path not in self.routes_post:
            self._error(404, f"no route {path}", "path")
            return
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError as exc:
            self._error(400, f"body is not JSON: {exc.msg}", "body")
            return
        except (ValueError, RecursionError) as exc:  # e.g. an integer over 4300 digits, deep nesting
            self._error(400, f"body is not acceptable JSON: {type(exc).__name__}", "body")
            return
        if not isinstance(body, dict):
            self._error(400, "body must be a JSON object", "body")
            return
        self._dispatch(self.routes_post[path], body)


_MAX_LINE = 65536
_MAX_HEADERS = 100


class _Headers(dict[str, str]):
    """Request headers by lower-case name (what the handlers ask for: ``get(name)``)."""

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)


@functools.lru_cache(maxsize=64)
def _status_line(status: int) -> bytes:
    phrase = _Handler.responses.get(status, ("",))[0]
    return f"HTTP/1.1 {status} {phrase}\r\nServer: {_Handler.server_version}\r\n".encode("latin-1")


_date: tuple[int, bytes] = (0, b"")


def _date_header() -> bytes:
    """The ``Date`` header, formatted once a second."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, b"Date: " + formatdate(now, usegmt=True).encode() + b"\r\n")
    return _date[1]


# ---------------------------------------------------------------------- request parsing
def _no_unknown(body: dict[str, Any], known: frozenset[str]) -> None:
    extra = sorted(str(k) for k in body if k not in known)
    if extra:
        name = extra[0] if extra[0].isprintable() and 0 < len(extra[0]) <= 60 else json.dumps(extra[0][:60])
        raise InputError(name, f"unknown field (expected {', '.join(sorted(known))})")


def _field(body: dict[str, Any], name: str) -> Any:
    if name not in body:
        raise InputError(name, "is required")
    return body[name]


def _address(body: dict[str, Any], name: str) -> str:
    v = _field(body, name)
    if not isinstance(v, str) or len(v) > 42:
        raise InputError(name, f"not an address: {_short(v)}")
    return _checksum(v, name)


@functools.lru_cache(maxsize=4096)
def _checksum(v: str, name: str) -> str:
    if not is_address(v):
        raise InputError(name, f"not an address: {_short(v)}")
    return str(to_checksum_address(v))


MAX_DIGITS = 60  # significant digits and magnitude: far beyond any valid amount, far below trouble


def _decimal(body: dict[str, Any], name: str) -> Decimal:
    """A finite decimal of modest size (``1e999999`` or a 5,000-digit string is refused before any
    arithmetic could overflow or take long)."""
    v = _field(body, name)
    if isinstance(v, bool) or not isinstance(v, str | int | float):
        raise InputError(name, f"must be a number or a decimal string, got {_short(v)}")
    text = str(v).strip() if not isinstance(v, int) else None
    if text is not None and len(text) > 4 * MAX_DIGITS:
        raise InputError(name, f"too long to be an amount ({len(text)} characters)")
    try:
        d = Decimal(v) if isinstance(v, int) else Decimal(text or "")
    except (InvalidOperation, ValueError):
        raise InputError(name, f"not a number: {_short(v)}") from None
    if not d.is_finite():
        raise InputError(name, "must be finite")
    if (d and not -MAX_DIGITS <= d.adjusted() <= MAX_DIGITS) or len(d.as_tuple().digits) > MAX_DIGITS:
        raise InputError(name, f"out of range: {_short(v)}")
    return d


def _short(v: object) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _instrument(body: dict[str, Any]) -> int:
    v = _field(body, "instrument")
    if isinstance(v, bool) or not isinstance(v, int) or not 0 < v < 2**32:
        raise InputError("instrument", f"must be a positive integer id (uint32), got {_short(v)}")
    return v


class EngineApi:
    """Binds :class:`Engine` methods to HTTP routes."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    FIELDS_TRADE: ClassVar[frozenset[str]] = frozenset({"account", "instrument", "size", "price", "role"})
    FIELDS_WITHDRAW: ClassVar[frozenset[str]] = frozenset({"account", "token", "amount"})

    def attest_trade(self, body: dict[str, Any]) -> dict[str, Any]:
        _no_unknown(body, self.FIELDS_TRADE)
        account = _address(body, "account")
        instrument = _instrument(body)
        size = to_size(_decimal(body, "size"), "size")
        price = to_price(_decimal(body, "price"), "price")
        role = _field(body, "role")
        if role not in ("maker", "taker"):
            raise InputError("role", f"must be 'maker' or 'taker', got {_short(role)}")
        return self.engine.attest_trade(account, instrument, size, price, role).to_json()

    def attest_withdraw(self, body: dict[str, Any]) -> dict[str, Any]:
        _no_unknown(body, self.FIELDS_WITHDRAW)
        account = _address(body, "account")
        token = self._token(_field(body, "token"))
        decimals = next(t.decimals for t in self.engine.protocol.deployment.tokens.values() if t.address == token)
        if body.get("amount") == "all":  # the whole balance, after funding (Vault WITHDRAW_ALL)
            return self.engine.attest_withdraw(account, token, rules.WITHDRAW_ALL).to_json()
        amount = _decimal(body, "amount").scaleb(decimals)
        if amount <= 0 or amount != amount.to_integral_value():
            raise InputError("amount", f"must be positive with at most {decimals} decimals")
        return self.engine.attest_withdraw(account, token, int(amount)).to_json()

    def attest_bid(self, body: dict[str, Any]) -> dict[str, Any]:
        bidder, account = _address(body, "bidder"), _address(body, "account")
        fraction = _decimal(body, "fraction") * WAD
        if not 0 < fraction <= WAD or fraction != fraction.to_integral_value():
            raise InputError("fraction", "must be in (0, 1] with at most 18 decimals")
        worst = _decimal(body, "worst_price") * QUOTE_SCALE
        if worst != worst.to_integral_value():
            raise InputError("worst_price", "at most 6 decimals (USD)")
        signed = self.engine.attest_bid(bidder, account, int(fraction), int(worst))
        auction = fetch_auction(self.engine.protocol, account, signed.block)  # what the bid was computed on
        return {**signed.to_json(), "version": auction.version}

    def _token(self, value: object) -> str:
        tokens = self.engine.protocol.deployment.tokens
        if isinstance(value, str) and value in tokens:
            return tokens[value].address
        if isinstance(value, str) and is_address(value):
            for t in tokens.values():
                if t.address.lower() == value.lower():
                    return t.address
        raise InputError("token", f"unknown token {_short(value)}; known: {', '.join(tokens)}")

    def proof(self, account: str) -> dict[str, Any]:
        if not is_address(account):
            raise InputError("account", f"not an address: {_short(account)}")
        return self.engine.proof(str(to_checksum_address(account)))

    def liquidatable(self) -> dict[str, Any]:
        return {"accounts": self.engine.liquidatable()}


def serve_engine(engine: Engine, host: str = "127.0.0.1", port: int = 0, *,
                 reuse_port: bool = False) -> ThreadingHTTPServer:  # fmt: skip
    """Start the engine's HTTP server in a daemon thread, and the engine's chain follower;
    ``server.server_address`` has the port. ``server.shutdown()`` stops both."""
    engine.start_following()
    api = EngineApi(engine)
    handler = type("EngineHandler", (_Handler,), {
        "routes_get": {"/health": engine.health, "/liquidatable": api.liquidatable,
                       "/round/latest": engine.round_document},
        "routes_post": {"/attest/trade": api.attest_trade, "/attest/withdraw": api.attest_withdraw,
                        "/attest/bid": api.attest_bid},
        "prefixes_get": {"/proof": api.proof},
        "metrics": engine.metrics.registry,
    })  # fmt: skip
    return _start(handler, host, port, on_shutdown=engine.stop_following, reuse_port=reuse_port)


def serve_signer(node: SignerNode, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """Start a standalone signer's HTTP server in a daemon thread."""

    def sign(body: dict[str, Any]) -> dict[str, Any]:
        try:
            job = job_from_json(body)
        except (KeyError, ValueError, TypeError) as exc:
            raise InputError("body", f"malformed sign request: {exc}") from None
        return {"signature": "0x" + node.sign(job).hex(), "signer": node.address}

    def health() -> dict[str, Any]:
        return {"status": "ok", "signer": node.address, "block": node.indexer.state.block}

    handler = type("SignerHandler", (_Handler,), {"routes_get": {"/health": health}, "routes_post": {"/sign": sign},
                                                  "prefixes_get": {}})  # fmt: skip
    return _start(handler, host, port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    on_shutdown: Any = None
    reuse_port = False

    def server_bind(self) -> None:
        if self.reuse_port:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def shutdown(self) -> None:
        super().shutdown()
        self.server_close()
        if self.on_shutdown is not None:
            self.on_shutdown()


def _start(handler: type[BaseHTTPRequestHandler], host: str, port: int, on_shutdown: Any = None,
           reuse_port: bool = False) -> ThreadingHTTPServer:  # fmt: skip
    server = _Server((host, port), handler, bind_and_activate=False)
    server.reuse_port, server.on_shutdown = reuse_port, on_shutdown
    try:
        server.server_bind()
        server.server_activate()
    except BaseException:
        server.server_close()
        raise
    threading.Thread(target=server.serve_forever, name=f"http-{port}", daemon=True).start()
    return server


# ---------------------------------------------------------------------- more processes
@dataclass(frozen=True)
class EngineSpec:
    """How to build the same engine in another process (every field pickles).

    Attributes
    ----------
    rpc_url : str
    deployment : Path
        The deployment file (``Deployment.save``).
    keys : tuple of str
        Local risk signer keys.
    remote : tuple of (str, str)
        Remote signers as (URL, address).
    relayer_key : str
    config : Path or None
        Risk configuration (default ``config/risk.toml``).
    lifetime, max_staleness, confirmations
        As :func:`offchain.engine.service.build_engine`.
    """

    rpc_url: str
    deployment: Path
    keys: tuple[str, ...]
    relayer_key: str
    remote: tuple[tuple[str, str], ...] = ()
    config: Path | None = None
    lifetime: int = 120
    max_staleness: float = 0.0
    confirmations: int = 0


def start_workers(spec: EngineSpec, n: int, host: str, port: int, state_dir: Path,
                  timeout: float = 180.0) -> list[BaseProcess]:  # fmt: skip
    """Start ``n`` more processes serving attestations on the same ``host:port`` (``SO_REUSEPORT``:
    the kernel spreads connections over them and the server started with ``reuse_port=True``).

    Each worker builds its own engine from ``spec`` (own indexer, chain follower, signers; its
    checkpoint under ``state_dir/worker-<i>``), warms it up, then listens; this returns once
    every worker listens. Workers serve attestations, health and proofs of their own state; only
    the main process posts rounds (so ``/round/latest`` and ``/proof`` may lag in a worker until
    its next sync). A worker exits when its parent does. Stop them with ``terminate()``.

    Notes
    -----
    Python runs one thread at a time per process; compute and signing hold the interpreter
    lock most of the time, so threads alone cannot use a second core. Processes can.

    Raises
    ------
    PmsimError
        A worker failed to start (its error is in the message) or did not listen in time.
    """
    ctx = multiprocessing.get_context("spawn")
    procs: list[BaseProcess] = []
    pipes = []
    for i in range(n):
        parent, child = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_worker_main, args=(spec, host, port, state_dir / f"worker-{i}", os.getpid(), child),
                        name=f"pmsim-engine-worker-{i}", daemon=True)  # fmt: skip
        p.start()
        procs.append(p)
        pipes.append(parent)
    try:
        for w, pipe in zip(procs, pipes, strict=True):
            if not pipe.poll(timeout):
                raise PmsimError(f"engine worker {w.name} did not start within {timeout:g} s")
            try:
                status = pipe.recv()
            except EOFError:
                status = f"exited with code {w.exitcode}"
            if status != "ready":
                raise PmsimError(f"engine worker {w.name} failed: {status}")
    except BaseException:
        for w in procs:
            w.terminate()
        raise
    return procs


def _worker_main(spec: EngineSpec, host: str, port: int, state_dir: Path, parent: int, ready: Connection) -> None:
    from offchain.chain.client import Deployment, Protocol, connect
    from offchain.engine.service import build_engine
    from offchain.engine.signer import LocalSigner, RemoteSigner, RiskSigner

    try:
        proto = Protocol(connect(spec.rpc_url), Deployment.load(spec.deployment))
        signers: list[RiskSigner] = [LocalSigner(k, proto.domain("RiskOracle")) for k in spec.keys]
        signers += [RemoteSigner(url, address) for url, address in spec.remote]
        engine = build_engine(proto, signers, spec.relayer_key, state_dir, config_path=spec.config,
                              confirmations=spec.confirmations, lifetime=spec.lifetime,
                              max_staleness=spec.max_staleness)  # fmt: skip
        _warm_up(engine)
        server = serve_engine(engine, host, port, reuse_port=True)
    except Exception as exc:  # reported to the parent, which raises it
        with contextlib.suppress(OSError):
            ready.send(f"{type(exc).__name__}: {exc}")
        return
    try:
        ready.send("ready")
    except OSError:  # the parent is gone already
        server.shutdown()
        return
    while os.getppid() == parent:
        time.sleep(0.5)
    server.shutdown()


def _warm_up(engine: Engine) -> None:
    """Build the market and compile the kernels before taking requests (first call is slow)."""
    state = engine.refresh()
    if state.prices.round and state.accounts:
        account = next(iter(state.accounts))
        engine.core.attest_status(state, account, state.timestamp, state.timestamp + 1)
