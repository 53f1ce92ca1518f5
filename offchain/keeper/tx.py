"""Transactions that land: EIP-1559 fees under a cap, replacement at the same nonce, a persisted
pending set (a restarted keeper neither double-sends nor leaves a nonce gap), decoded reverts.

Life of a transaction
---------------------
1. :meth:`TxManager.send` takes the next nonce (``max(chain nonce, highest pending + 1)``), prices it
   (``maxFeePerGas = min(cap, m · baseFee + tip)``), signs it, writes it to the state file (atomic
   rename) and only then broadcasts it.
2. :meth:`TxManager.poll` looks for a receipt of every hash sent at each pending nonce. A
   transaction unmined for ``replace_after_s`` is re-checked with ``eth_call``: still valid, it is
   re-signed at the same nonce with both fees raised by ``bump`` (≥ 12.5 %), up to the cap; no longer
   valid (a competitor moved the auction), the nonce is spent on a 0-value self-transfer instead, so
   no gas is burnt on a sure revert and no gap is left. At the cap, the last transaction is
   re-broadcast unchanged (it may have been dropped).
3. A mined transaction leaves the pending set as an :class:`Outcome`; a reverted one carries its
   decoded custom error (replayed with ``eth_call`` at its block).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_utils import to_checksum_address
from hexbytes import HexBytes
from web3.exceptions import TransactionNotFound, Web3RPCError

from offchain.chain.client import Protocol
from offchain.errors import ChainError, ContractRevertError
from offchain.keeper.config import FeeConfig
from offchain.keeper.metrics import KeeperMetrics

log = logging.getLogger(__name__)
STATE_FORMAT = 1
_NONCE_USED = re.compile(r"nonce too low|nonce has already been used", re.IGNORECASE)
_KNOWN = re.compile(r"already known|already imported|known transaction", re.IGNORECASE)
_UNDERPRICED = re.compile(r"underpriced|fee.*(too low|less than)|less than.*base fee|max fee", re.IGNORECASE)


@dataclass
class Pending:
    """A nonce in flight and every transaction sent at it (the newest last)."""

    nonce: int
    kind: str  # "start", "refresh", "bid", "hedge" or "cancel"
    account: str
    to: str
    data: str
    gas: int
    max_fee: int
    tip: int
    raw: str
    hashes: list[str]
    sent_at: float  # wall clock of the latest broadcast (survives restarts)
    first_sent_at: float
    meta: dict[str, Any] = field(default_factory=dict)
    replacements: int = 0

    @property
    def tx_hash(self) -> str:
        return self.hashes[-1]


@dataclass(frozen=True)
class Outcome:
    """What became of a pending nonce.

    ``status``: ``"mined"`` (success), ``"reverted"`` (``error`` decoded), ``"cancelled"`` (the nonce
    was spent on a self-transfer after the intent became invalid; ``error`` says why) or
    ``"superseded"`` (the nonce was used by a transaction this keeper did not send).
    """

    pending: Pending
    status: str
    tx_hash: str = ""
    receipt: dict[str, Any] | None = None
    error: ContractRevertError | None = None


class TxManager:
    """Sends and shepherds the keeper's transactions (one sender key, one state file).

    Parameters
    ----------
    protocol : Protocol
        RPC access and the error decoder.
    key : str
        The sender's private key (kept in memory only).
    fees : FeeConfig
    state_file : Path
        The pending set, rewritten atomically on every change.
    metrics : KeeperMetrics
    clock : callable
        Wall clock (seconds) for replacement timing; tests may pass their own.
    """

    def __init__(self, protocol: Protocol, key: str, fees: FeeConfig, state_file: Path, metrics: KeeperMetrics,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.p, self.w3 = protocol, protocol.w3
        self._account = Account.from_key(key)
        self.sender: str = str(self._account.address)
        self.fees, self.state_file, self.metrics, self.clock = fees, state_file, metrics, clock
        self.pending: dict[int, Pending] = {}
        self.cancel_reasons: dict[int, ContractRevertError] = {}
        self._load()

    # ------------------------------------------------------------------ persistence
    def _load(self) -> None:
        if not self.state_file.exists():
            return
        try:
            doc = json.loads(self.state_file.read_text())
            if doc.get("format") != STATE_FORMAT:
                raise ValueError(f"format {doc.get('format')!r}")
            if doc["sender"].lower() != self.sender.lower() or int(doc["chain_id"]) != self.p.chain_id:
                raise ChainError(f"{self.state_file} belongs to {doc['sender']} on chain {doc['chain_id']}, "
                                 f"not {self.sender} on chain {self.p.chain_id}: use another state_file")  # fmt: skip
            for item in doc["pending"]:
                p = Pending(**item)
                self.pending[p.nonce] = p
        except (ValueError, KeyError, TypeError) as exc:
            raise ChainError(f"{self.state_file} is not a keeper state file ({exc}); move it away to start afresh") \
                from None
        if self.pending:
            log.info("recovered pending transactions", extra={"fields": {
                "nonces": sorted(self.pending), "kinds": [p.kind for p in self.pending.values()]}})
        self.metrics.pending.set(len(self.pending))

    def _save(self) -> None:
        doc = {"format": STATE_FORMAT, "sender": self.sender, "chain_id": self.p.chain_id,
               "pending": [asdict(p) for _, p in sorted(self.pending.items())]}  # fmt: skip
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        with tmp.open("w") as f:
            json.dump(doc, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.state_file)
        self.metrics.pending.set(len(self.pending))

    # ------------------------------------------------------------------ queries
    def busy(self, account: str) -> Pending | None:
        """The pending transaction about ``account``, if any (no second action is planned meanwhile)."""
        key = account.lower()
        return next((p for p in self.pending.values() if p.account.lower() == key), None)

    def chain_nonce(self) -> int:
        """The sender's mined transaction count (``latest``: a dropped transaction holds no nonce)."""
        return int(self.w3.eth.get_transaction_count(to_checksum_address(self.sender), "latest"))

    def next_nonce(self) -> int:
        mined = self.chain_nonce()
        return max([mined, *(n + 1 for n in self.pending)])

    def base_fee(self) -> int:
        return int(self.w3.eth.get_block("latest").get("baseFeePerGas", 0))

    def first_fees(self, base_fee: int) -> tuple[int, int]:
        """``(maxFeePerGas, maxPriorityFeePerGas)`` of a first send: ``min(cap, m·base + tip)``."""
        cap = self.fees.max_fee
        tip = min(self.fees.priority_fee, cap)
        return min(cap, math.ceil(self.fees.base_fee_multiple * base_fee) + tip), tip

    def gas_price_for_valuation(self) -> int:
        """The fee per gas a send would offer now (what a bid's gas is valued at)."""
        return self.first_fees(self.base_fee())[0]

    # ------------------------------------------------------------------ send
    def send(self, kind: str, account: str, to: str, data: str, gas: int, meta: dict[str, Any] | None = None,
             ) -> Pending:  # fmt: skip
        """Sign, persist, then broadcast a transaction at the next nonce.

        Raises
        ------
        ChainError
            The node refused it for a reason other than its fee (nothing stays pending).
        """
        nonce = self.next_nonce()
        max_fee, tip = self.first_fees(self.base_fee())
        raw, tx_hash = self._sign(nonce, to, data, gas, max_fee, tip)
        now = self.clock()
        p = Pending(nonce, kind, account, to, data, gas, max_fee, tip, raw, [tx_hash], now, now, dict(meta or {}))
        self.pending[nonce] = p
        self._save()  # persisted before it exists anywhere else: a crash now leaves no unknown nonce
        self.metrics.tx_sent.labels(kind).inc()
        try:
            self._broadcast(p.raw)
        except ChainError:
            del self.pending[nonce]
            self._save()
            raise
        log.info("sent", extra={"fields": {"kind": kind, "account": account, "nonce": nonce, "tx": tx_hash,
                                           "max_fee": max_fee, "tip": tip, "gas": gas, **p.meta}})  # fmt: skip
        return p

    def _sign(self, nonce: int, to: str, data: str, gas: int, max_fee: int, tip: int) -> tuple[str, str]:
        tx = {"type": 2, "chainId": self.p.chain_id, "nonce": nonce, "to": to_checksum_address(to), "value": 0,
              "data": data, "gas": gas, "maxFeePerGas": max_fee, "maxPriorityFeePerGas": tip}  # fmt: skip
        signed = self._account.sign_transaction(tx)
        return "0x" + bytes(signed.raw_transaction).hex(), "0x" + bytes(signed.hash).hex()

    def _broadcast(self, raw: str) -> None:
        """Broadcast; a transaction the node already has, or one priced under the base fee (kept
        pending and replaced later), is not an error."""
        try:
            self.w3.eth.send_raw_transaction(HexBytes(raw))
        except Web3RPCError as exc:
            text = str(exc)
            if _KNOWN.search(text):
                return
            if _NONCE_USED.search(text):
                return  # mined already (or by another sender on this key): poll() settles it
            if _UNDERPRICED.search(text):
                log.warning("node refused the fee; will replace", extra={"fields": {"error": text[:200]}})
                return
            raise ChainError(f"transaction refused by the node: {text[:300]}") from None

    # ------------------------------------------------------------------ follow-up
    def poll(self) -> list[Outcome]:
        """Settle mined nonces and replace stuck ones; returns what was settled."""
        if not self.pending:
            return []
        done: list[Outcome] = []
        mined_count = self.chain_nonce()
        for nonce in sorted(self.pending):
            p = self.pending[nonce]
            outcome = self._settle(p, mined_count)
            if outcome is not None:
                done.append(outcome)
                del self.pending[nonce]
            elif self.clock() - p.sent_at >= self.fees.replace_after_s:
                self._replace(p)
        self._save()
        return done

    def _settle(self, p: Pending, mined_count: int) -> Outcome | None:
        for h in reversed(p.hashes):
            try:
                rc = self.w3.eth.get_transaction_receipt(HexBytes(h))
            except TransactionNotFound:
                continue
            receipt: dict[str, Any] = dict(rc)
            self.metrics.gas_spent.inc(int(receipt["gasUsed"]) * int(receipt.get("effectiveGasPrice", 0)))
            if p.kind == "cancel":
                why = self.cancel_reasons.pop(p.nonce, None) or ContractRevertError(str(p.meta.get("cancelled", "")))
                return Outcome(p, "cancelled", h, receipt, why)
            if int(receipt["status"]) == 1:
                return Outcome(p, "mined", h, receipt)
            return Outcome(p, "reverted", h, receipt, self._why(p, int(receipt["blockNumber"])))
        if mined_count > p.nonce:
            log.warning("nonce used by a transaction this keeper did not send", extra={"fields": {"nonce": p.nonce}})
            return Outcome(p, "superseded")
        return None

    def _why(self, p: Pending, block: int) -> ContractRevertError:
        """Replay the reverted call at its block (then the one before) to recover its custom error."""
        for at in (block, block - 1):
            try:
                self.call(p.to, p.data, block=at)
            except ContractRevertError as exc:
                return exc
        return ContractRevertError("Unknown")

    def call(self, to: str, data: str, block: Any = "latest") -> bytes:
        """``eth_call`` of exactly this transaction from the keeper; reverts raise decoded errors."""
        params: Any = {"from": self.sender, "to": to_checksum_address(to), "data": data}
        return bytes(self.p._decoded(lambda: self.w3.eth.call(params, block_identifier=block)))

    def _replace(self, p: Pending) -> None:
        """Re-sign at the same nonce with both fees raised by ``bump`` (a cancel instead when the
        intent became invalid); at the fee cap, re-broadcast the last transaction unchanged."""
        bump = 1 + self.fees.bump
        floor_fee, floor_tip = math.ceil(p.max_fee * bump), math.ceil(p.tip * bump)
        max_fee = min(max(floor_fee, self.first_fees(self.base_fee())[0]), self.fees.max_fee)
        tip = min(max(floor_tip, min(self.fees.priority_fee, self.fees.max_fee)), max_fee)
        if max_fee < floor_fee or tip < floor_tip:  # the cap forbids a valid replacement
            self.metrics.tx_at_cap.inc()
            log.warning("fee cap reached: re-broadcasting unchanged", extra={"fields": {
                "nonce": p.nonce, "max_fee": p.max_fee, "cap": self.fees.max_fee}})
            self._broadcast(p.raw)  # it may have been dropped from the pool
            p.sent_at = self.clock()
            return
        if p.kind != "cancel":
            try:
                self.call(p.to, p.data, "pending")
            except ContractRevertError as exc:
                log.info("intent no longer valid: cancelling its nonce", extra={"fields": {
                    "nonce": p.nonce, "kind": p.kind, "account": p.account, "error": exc.error_name}})
                self.cancel_reasons[p.nonce] = exc
                p.meta["cancelled"], p.meta["was"] = exc.error_name, p.kind
                p.kind, p.to, p.data, p.gas = "cancel", self.sender, "0x", 21_000
        raw, tx_hash = self._sign(p.nonce, p.to, p.data, p.gas, max_fee, tip)
        p.raw, p.max_fee, p.tip, p.sent_at = raw, max_fee, tip, self.clock()
        p.hashes.append(tx_hash)
        p.replacements += 1
        self._save()
        self.metrics.tx_replaced.labels(p.kind).inc()
        self._broadcast(raw)
        log.info("replaced", extra={"fields": {"kind": p.kind, "nonce": p.nonce, "tx": tx_hash, "max_fee": max_fee,
                                               "tip": tip, "replacements": p.replacements}})  # fmt: skip
