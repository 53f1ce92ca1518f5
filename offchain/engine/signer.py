"""Risk signers: each holds one key and signs only results it computed identically itself.

A :class:`SignerNode` keeps its own indexer and engine core. Asked to sign a status root or an
attestation computed at block ``B``, it rebuilds the chain state at ``B`` from events, recomputes
the result from (block, price round, parameter hash) and signs only if every field matches.
It runs in-process or as a separate process behind a small HTTP API (``pmsim signer``), reached
through :class:`RemoteSigner`. A :class:`LocalSigner` signs what its own process computed.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import threading
import urllib.error
import urllib.request
from collections import OrderedDict
from dataclasses import dataclass, fields
from typing import Any, Protocol

import coincurve

from offchain.chain.eip712 import Attestation, Domain, Signer, digest
from offchain.chain.indexer import Indexer, ProtocolState
from offchain.chain.merkle import StatusRoot, StatusTree
from offchain.engine.core import EngineCore, TradeRequest, WithdrawRequest
from offchain.engine.liquidation import BidRequest, fetch_auction
from offchain.errors import PmsimError

log = logging.getLogger("pmsim.signer")


class SignerRefused(PmsimError):
    """A signer declined: it computed something else, or cannot rebuild the state asked for."""


@dataclass(frozen=True)
class SignJob:
    """What to sign and what it was computed from. ``request`` is None for a status result."""

    block: int
    attestation: Attestation | None = None
    request: TradeRequest | WithdrawRequest | BidRequest | None = None
    root: StatusRoot | None = None


class RiskSigner(Protocol):
    address: str

    def sign(self, job: SignJob) -> bytes: ...


class LocalSigner:
    """A key in the engine's own process: signs the result this process computed.

    Signatures are byte for byte those of :class:`offchain.chain.eip712.Signer` (libsecp256k1
    through coincurve: RFC 6979 nonces, low-s, ``v`` in {27, 28}); the coincurve key is built once
    rather than per signature, and the domain separator is hashed once.
    """

    def __init__(self, key: str | bytes, oracle_domain: Domain) -> None:
        self._signer = Signer(key)  # validates the key, derives the address
        self.address = self._signer.address
        self._domain = _OnceDomain(**dataclasses.asdict(oracle_domain))
        self._key = coincurve.PrivateKey(self._signer._key.to_bytes())

    def sign(self, job: SignJob) -> bytes:
        sig = self._key.sign_recoverable(_job_digest(self._domain, job), hasher=None)  # r || s || recovery id
        return sig[:64] + bytes([sig[64] + 27])


@dataclasses.dataclass(frozen=True)
class _OnceDomain(Domain):
    """The same EIP-712 domain, its separator hashed once (signers sign thousands of digests)."""

    @functools.cached_property
    def _separator(self) -> bytes:
        return Domain.separator(self)

    def separator(self) -> bytes:
        return self._separator


@functools.lru_cache(maxsize=1024)
def _job_digest(domain: Domain, job: SignJob) -> bytes:
    """The EIP-712 digest of the job (memoised: every signer of a quorum signs the same job)."""
    if job.attestation is not None:
        return digest(domain, job.attestation.struct_hash())
    if job.root is not None:
        return digest(domain, job.root.struct_hash())
    raise SignerRefused("nothing to sign")


class SignerNode:
    """An independent signer: own indexer, own core, own key (see the module notes)."""

    def __init__(self, key: str | bytes, core: EngineCore, indexer: Indexer, oracle_domain: Domain,
                 keep_states: int = 16) -> None:  # fmt: skip
        self._signer = Signer(key)
        self.address = self._signer.address
        self.core, self.indexer, self._domain = core, indexer, oracle_domain
        self._states: OrderedDict[int, ProtocolState] = OrderedDict()
        self._keep = keep_states
        self._lock = threading.Lock()

    def state_at(self, block: int) -> ProtocolState:
        """The chain state after ``block``, rebuilt from events (recent states are kept)."""
        with self._lock:
            if block in self._states:
                return self._states[block]
            if self.indexer.state.block > block:
                raise SignerRefused(f"state at block {block} is gone (indexed to {self.indexer.state.block})")
            reached = self.indexer.sync(to_block=block)
            if reached != block:
                raise SignerRefused(f"block {block} is not confirmed here yet (indexed to {reached})")
            state = self.indexer.state.copy()
            self._states[block] = state
            while len(self._states) > self._keep:
                self._states.popitem(last=False)
            return state

    def recompute(self, job: SignJob) -> SignJob:
        """The same job, with the result this signer computes itself."""
        state = self.state_at(job.block)
        if job.root is not None:
            r = job.root
            tree = StatusTree.build(self.core.status_leaves(state))
            mine = StatusRoot(r.round, tree.root, state.prices.round, r.issued_at, r.expiry, state.params_hash)
            return SignJob(job.block, root=mine)
        a = job.attestation
        if a is None:
            raise SignerRefused("nothing to sign")
        if isinstance(job.request, TradeRequest):
            att = self.core.attest_trade(state, job.request, a.issued_at, a.expiry)
        elif isinstance(job.request, WithdrawRequest):
            att = self.core.attest_withdraw(state, job.request, a.issued_at, a.expiry)
        elif isinstance(job.request, BidRequest):
            auction = fetch_auction(self.indexer.protocol, job.request.account, job.block)
            att = self.core.attest_bid(state, job.request, auction, a.issued_at, a.expiry)
        else:
            att = self.core.attest_status(state, a.account, a.issued_at, a.expiry)
        return SignJob(job.block, attestation=att, request=job.request)

    def sign(self, job: SignJob) -> bytes:
        mine = self.recompute(job)
        if mine.attestation != job.attestation or mine.root != job.root:
            log.warning("refusing to sign at block %d: recomputed result differs", job.block)
            raise SignerRefused("the recomputed result differs from the one proposed")
        return self._signer.sign(_job_digest(self._domain, mine))


# ---------------------------------------------------------------------- wire format
def job_to_json(job: SignJob) -> dict[str, Any]:
    out: dict[str, Any] = {"block": job.block}
    if job.attestation is not None:
        out["attestation"] = _encode(job.attestation.as_tuple())
    if job.root is not None:
        out["root"] = _encode(job.root.as_tuple())
    if isinstance(job.request, TradeRequest):
        r = job.request
        out["trade"] = [r.account, r.instrument, str(r.size_delta), str(r.price), str(r.fee)]
    elif isinstance(job.request, WithdrawRequest):
        out["withdraw"] = [job.request.account, job.request.token, str(job.request.amount)]
    elif isinstance(job.request, BidRequest):
        b = job.request
        out["bid"] = [b.bidder, b.account, str(b.version), str(b.fraction), str(b.worst_price)]
    return out


def job_from_json(data: dict[str, Any]) -> SignJob:
    att = Attestation(*_decode(data["attestation"], Attestation)) if "attestation" in data else None
    root = StatusRoot(*_decode(data["root"], StatusRoot)) if "root" in data else None
    req: TradeRequest | WithdrawRequest | BidRequest | None = None
    if "trade" in data:
        a, i, s, p, f = data["trade"]
        req = TradeRequest(a, int(i), int(s), int(p), int(f))
    elif "withdraw" in data:
        a, t, amt = data["withdraw"]
        req = WithdrawRequest(a, t, int(amt))
    elif "bid" in data:
        b, acc, v, f, w = data["bid"]
        req = BidRequest(b, acc, int(v), int(f), int(w))
    return SignJob(int(data["block"]), attestation=att, request=req, root=root)


def _encode(values: tuple[Any, ...]) -> list[str]:
    return ["0x" + v.hex() if isinstance(v, bytes) else str(v) for v in values]


def _decode(values: list[str], cls: type[Any]) -> list[Any]:
    out: list[Any] = []
    for f, v in zip(fields(cls), values, strict=True):
        kind = f.type
        if kind == "bytes":
            out.append(bytes.fromhex(v.removeprefix("0x")))
        elif kind == "str":
            out.append(v)
        else:
            out.append(int(v))
    return out


class RemoteSigner:
    """A signer in another process, reached over HTTP (``POST /sign``)."""

    def __init__(self, url: str, address: str, timeout: float = 10.0) -> None:
        self.url, self.address, self.timeout = url.rstrip("/"), address, timeout

    def sign(self, job: SignJob) -> bytes:
        body = json.dumps(job_to_json(job)).encode()
        req = urllib.request.Request(self.url + "/sign", data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                payload = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise SignerRefused(f"{self.url}: {exc.read().decode(errors='replace')}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise SignerRefused(f"{self.url} unreachable: {exc}") from None
        return bytes.fromhex(str(payload["signature"]).removeprefix("0x"))
