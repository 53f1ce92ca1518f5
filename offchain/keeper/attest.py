"""The bidder's attestation: the engine signs the keeper's account after the bid (the contract's
``ActionHash.bid`` binds bidder, account, auction version, fraction and worst price)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from offchain.chain.eip712 import Attestation
from offchain.errors import ChainError, InputError, PmsimError


class AttestationRefused(PmsimError):
    """The engine would not attest the bid (``status`` 422: the keeper would be under its initial
    margin after it; 400: the engine refused the request as malformed or impossible)."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        self.status, self.field = status, field
        super().__init__(f"attestation refused ({status}{', ' + field if field else ''}): {message}")


@dataclass(frozen=True)
class BidAttestation:
    """A signed attestation (of a bidder, or of a side of a hedge trade), as the contracts take it (``MarginProof``)."""

    attestation: Attestation
    signatures: bytes

    def proof(self) -> tuple[tuple[Any, ...], bytes]:
        return (self.attestation.as_tuple(), self.signatures)


class Attestor(Protocol):
    """Whoever signs the keeper's margin after a bid."""

    def attest_bid(self, bidder: str, account: str, fraction: int, worst_price: int) -> BidAttestation:
        """An attestation of ``bidder`` after taking ``fraction`` (WAD) of ``account``'s auction at a
        price of at most ``worst_price`` (quote units; negative: paid at least)."""
        ...

    def attest_trade(self, account: str, instrument: int, size_delta: int, price: int, role: str) -> BidAttestation:
        """An attestation of ``account`` after a fill of ``size_delta`` (1e18, + buys) at ``price``
        (1e18) as ``role`` (``"maker"`` or ``"taker"``): what ``Exchange.trade`` needs for a hedge."""
        ...


class HttpAttestor:
    """``POST {engine}/attest/bid`` with ``{"bidder", "account", "fraction", "worst_price"}`` in the
    engine's units, exact decimal strings: ``fraction`` a share in (0, 1] (the WAD integer / 1e18) and
    ``worst_price`` USD (quote units / 1e6); the answer has the ``/attest/trade`` shape
    ``{"attestation": {...}, "signatures": "0x..", "block": n}``."""

    def __init__(self, engine_url: str, timeout: float = 10.0) -> None:
        self.base = engine_url.rstrip("/")
        self.url = self.base + "/attest/bid"
        self.timeout = timeout

    def attest_bid(self, bidder: str, account: str, fraction: int, worst_price: int) -> BidAttestation:
        return self._post("/attest/bid", {"bidder": bidder, "account": account, "fraction": _decimal(fraction, 18),
                                          "worst_price": _decimal(worst_price, 6)})  # fmt: skip

    def attest_trade(self, account: str, instrument: int, size_delta: int, price: int, role: str) -> BidAttestation:
        return self._post("/attest/trade", {"account": account, "instrument": instrument,
                                            "size": _decimal(size_delta, 18), "price": _decimal(price, 18),
                                            "role": role})  # fmt: skip

    def _post(self, route: str, payload: dict[str, Any]) -> BidAttestation:
        body = json.dumps(payload).encode()
        req = urllib.request.Request(self.base + route, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                payload = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            try:
                err = json.loads(exc.read())
            except ValueError:
                err = {}
            raise AttestationRefused(exc.code, str(err.get("error", exc.reason)), err.get("field")) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ChainError(f"engine at {self.base} unreachable: {exc}") from None
        return parse_signed(payload)


def _decimal(units: int, decimals: int) -> str:
    """An integer of ``decimals``-decimal units as an exact decimal string (``1500000, 6`` -> ``1.5``)."""
    return format(Decimal(units).scaleb(-decimals).normalize(), "f")


class EngineAttestor:
    """An engine in the same process (the demo and the crash replay run one): the same requests as
    :class:`HttpAttestor`, refusals mapped the same way (422 under-margined, 400 otherwise)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine  # offchain.engine.service.Engine (not imported: the keeper needs no engine)

    def attest_bid(self, bidder: str, account: str, fraction: int, worst_price: int) -> BidAttestation:
        return self._call(lambda: self.engine.attest_bid(bidder, account, fraction, worst_price))

    def attest_trade(self, account: str, instrument: int, size_delta: int, price: int, role: str) -> BidAttestation:
        return self._call(lambda: self.engine.attest_trade(account, instrument, size_delta, price, role))

    @staticmethod
    def _call(thunk: Any) -> BidAttestation:
        try:
            signed = thunk()
        except InputError as exc:
            status = 422 if hasattr(exc, "required") else 400
            raise AttestationRefused(status, str(exc), exc.field) from None
        return BidAttestation(signed.attestation, signed.signatures)


class NoAttestor:
    """No engine configured (a keeper reading rounds from a directory): it starts auctions but every
    bid is refused here, and logged, rather than sent without the attestation the contract needs."""

    def attest_bid(self, bidder: str, account: str, fraction: int, worst_price: int) -> BidAttestation:
        raise AttestationRefused(0, "no engine_url configured: cannot obtain a bid attestation", "engine_url")

    def attest_trade(self, account: str, instrument: int, size_delta: int, price: int, role: str) -> BidAttestation:
        raise AttestationRefused(0, "no engine_url configured: cannot obtain a trade attestation", "engine_url")


_BYTES = {"action_hash", "params_hash"}


def parse_signed(payload: dict[str, Any]) -> BidAttestation:
    """Parse an engine attestation answer (``SignedAttestation.to_json``)."""
    try:
        raw = payload["attestation"]
        values: dict[str, Any] = {
            k: (bytes.fromhex(v.removeprefix("0x")) if k in _BYTES else v if k == "account" else int(v))
            for k, v in raw.items()
        }
        att = Attestation(**values)
        sigs = bytes.fromhex(str(payload["signatures"]).removeprefix("0x"))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError("attestation", f"malformed engine answer: {exc}") from None
    return BidAttestation(att, sigs)
