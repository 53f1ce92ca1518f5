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
(a multiple of 0.001), ``amount`` in token units (decimal string), ``token`` a symbol or address;
``fraction`` a share of the portfolio in (0, 1] (at most 18 decimals), ``worst_price`` the most the
bidder pays in USD (at most 6 decimals; negative: the least it is paid, insolvent auctions).
Bad requests get ``400 {"error": ..., "field": ...}``; unknown routes 404; refusals by the chain
or the signers 409 or 503.

Signer routes: ``POST /sign`` (a :func:`offchain.engine.signer.job_to_json` body) -> ``{"signature"}``,
``GET /health``.
"""

from __future__ import annotations

import json
import logging
import threading
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

from eth_utils import is_address, to_checksum_address
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from offchain.chain.units import QUOTE_SCALE, WAD, to_price, to_size
from offchain.engine.liquidation import fetch_auction
from offchain.engine.service import Engine, QuorumError
from offchain.engine.signer import SignerNode, SignerRefused, job_from_json
from offchain.errors import ChainError, InputError, PmsimError

log = logging.getLogger("pmsim.http")
MAX_BODY = 64 * 1024


class _Handler(BaseHTTPRequestHandler):
    server_version = "pmsim"

    # set by the server factory
    routes_get: ClassVar[dict[str, Any]] = {}
    routes_post: ClassVar[dict[str, Any]] = {}
    prefixes_get: ClassVar[dict[str, Any]] = {}
    metrics: Any = None

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: int, payload: Any, content_type: str = "application/json") -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, field: str | None = None) -> None:
        self._send(status, {"error": message, **({"field": field} if field else {})})

    def _dispatch(self, handler: Any, *args: Any) -> None:
        try:
            self._send(200, handler(*args))
        except InputError as exc:
            self._error(400, str(exc), exc.field)
        except (SignerRefused, QuorumError) as exc:
            self._error(503, str(exc))
        except ChainError as exc:
            self._error(409, str(exc))
        except PmsimError as exc:
            self._error(400, str(exc))
        except Exception:  # never leak a traceback to a client; log it
            log.exception("internal error on %s", self.path)
            self._error(500, "internal error")

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
        self._error(404, f"no route {path}")

    def do_POST(self) -> None:
        path = self.path.rstrip("/")
        if path not in self.routes_post:
            self._error(404, f"no route {path}")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._error(413, "request body too large")
            return
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError as exc:
            self._error(400, f"body is not JSON: {exc.msg}", "body")
            return
        if not isinstance(body, dict):
            self._error(400, "body must be a JSON object", "body")
            return
        self._dispatch(self.routes_post[path], body)


# ---------------------------------------------------------------------- request parsing
def _field(body: dict[str, Any], name: str) -> Any:
    if name not in body:
        raise InputError(name, "is required")
    return body[name]


def _address(body: dict[str, Any], name: str) -> str:
    v = _field(body, name)
    if not isinstance(v, str) or not is_address(v):
        raise InputError(name, f"not an address: {v!r}")
    return str(to_checksum_address(v))


def _decimal(body: dict[str, Any], name: str) -> Decimal:
    v = _field(body, name)
    if isinstance(v, bool) or not isinstance(v, str | int | float):
        raise InputError(name, f"must be a number or a decimal string, got {v!r}")
    try:
        d = Decimal(str(v))
    except InvalidOperation:
        raise InputError(name, f"not a number: {v!r}") from None
    if not d.is_finite():
        raise InputError(name, "must be finite")
    return d


def _instrument(body: dict[str, Any]) -> int:
    v = _field(body, "instrument")
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise InputError("instrument", f"must be a positive integer id, got {v!r}")
    return v


class EngineApi:
    """Binds :class:`Engine` methods to HTTP routes."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def attest_trade(self, body: dict[str, Any]) -> dict[str, Any]:
        account = _address(body, "account")
        instrument = _instrument(body)
        if instrument not in self.engine.indexer.state.instruments:
            self.engine.refresh()
            if instrument not in self.engine.indexer.state.instruments:
                raise InputError("instrument", f"unknown instrument {instrument}")
        size = to_size(_decimal(body, "size"), "size")
        if size == 0:
            raise InputError("size", "must not be zero")
        price = to_price(_decimal(body, "price"), "price")
        role = _field(body, "role")
        return self.engine.attest_trade(account, instrument, size, price, str(role)).to_json()

    def attest_withdraw(self, body: dict[str, Any]) -> dict[str, Any]:
        account = _address(body, "account")
        token = self._token(_field(body, "token"))
        decimals = next(t.decimals for t in self.engine.protocol.deployment.tokens.values() if t.address == token)
        amount = _decimal(body, "amount") * 10**decimals
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
        raise InputError("token", f"unknown token {value!r}; known: {', '.join(tokens)}")

    def proof(self, account: str) -> dict[str, Any]:
        if not is_address(account):
            raise InputError("account", f"not an address: {account!r}")
        return self.engine.proof(str(to_checksum_address(account)))

    def liquidatable(self) -> dict[str, Any]:
        return {"accounts": self.engine.liquidatable()}


def serve_engine(engine: Engine, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """Start the engine's HTTP server in a daemon thread; ``server.server_address`` has the port."""
    api = EngineApi(engine)
    handler = type("EngineHandler", (_Handler,), {
        "routes_get": {"/health": engine.health, "/liquidatable": api.liquidatable,
                       "/round/latest": engine.round_document},
        "routes_post": {"/attest/trade": api.attest_trade, "/attest/withdraw": api.attest_withdraw,
                        "/attest/bid": api.attest_bid},
        "prefixes_get": {"/proof": api.proof},
        "metrics": engine.metrics.registry,
    })  # fmt: skip
    return _start(handler, host, port)


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


def _start(handler: type[BaseHTTPRequestHandler], host: str, port: int) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=f"http-{port}", daemon=True).start()
    return server
