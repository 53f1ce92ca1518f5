"""The event indexer: every account's state rebuilt from contract events alone.

The indexer reads the logs of the Vault, Instruments, PriceFeed, RiskOracle and RiskParams in
bounded block ranges, applies them in ``(block, logIndex)`` order to plain dataclasses, and writes a
JSON checkpoint (atomically) so that a restart resumes where it stopped. It indexes only blocks
``confirmations`` deep; if the last indexed block is no longer on the chain (a reorganisation deeper
than that), it rebuilds from the deployment block. Protocol time is the block timestamp.

Examples
--------
>>> ix = Indexer(protocol, confirmations=2, checkpoint=Path("state/index.json"))  # doctest: +SKIP
>>> ix.sync()  # doctest: +SKIP
1234
>>> ix.state.accounts[alice].positions  # doctest: +SKIP
{1: PositionState(size=..., cost_basis=..., funding_snapshot=...)}
"""

from __future__ import annotations

import json
import logging
import os
import time
import types
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from eth_abi import decode
from eth_typing import ChecksumAddress
from eth_utils import keccak, to_checksum_address
from web3.exceptions import BlockNotFound, Web3RPCError
from web3.types import FilterParams, LogReceipt, RPCEndpoint

from offchain import rules
from offchain.chain.client import Protocol, _abi_type
from offchain.chain.params import ExchangeBands, LiquidationParams, OnchainParams
from offchain.chain.units import Kind
from offchain.errors import ChainError, InputError

__all__ = [
    "AccountState",
    "CollateralState",
    "Event",
    "Indexer",
    "InstrumentState",
    "PositionState",
    "PriceState",
    "ProtocolState",
    "RootState",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

CHECKPOINT_FORMAT = "pmsim-indexer-v3"  # v3: operators and bands from the Exchange; v2: liquidation, funding
INDEXED_CONTRACTS = ("Vault", "Instruments", "PriceFeed", "RiskOracle", "RiskParams", "Exchange")
TRANSIENT_ERRORS = (ConnectionError, TimeoutError, OSError)
ZERO32 = b"\x00" * 32


# ---------------------------------------------------------------------- state
@dataclass(frozen=True)
class PositionState:
    """An open position (``Vault`` ``Position``): size and cost basis (1e18), funding snapshot."""

    size: int
    cost_basis: int = 0
    funding_snapshot: int = 0


@dataclass
class AccountState:
    """One account: cash and deposit credit (quote units), risk nonce, collateral, positions."""

    cash: int = 0
    deposit_credit: int = 0
    risk_nonce: int = 0
    collateral: dict[str, int] = field(default_factory=dict)  # token -> balance (token units)
    positions: dict[int, PositionState] = field(default_factory=dict)  # instrument id -> position
    operators: set[str] = field(default_factory=set)
    frozen: bool = False  # in a liquidation auction
    loss_snapshot: int = 0  # the Vault's loss index when this cash was last touched

    def effective_cash(self, loss_index: int) -> int:
        """Cash net of socialised loss not yet charged (``Vault.cashOf``)."""
        return rules.effective_cash(self.cash, self.loss_snapshot, loss_index)

    def copy(self) -> AccountState:
        """A copy sharing nothing mutable (positions are immutable values).

        Every field copied as is, then the three containers copied (``dataclasses.replace`` did the
        same through ``__init__``, several times slower: a snapshot copies every account)."""
        new = object.__new__(AccountState)
        new.__dict__.update(self.__dict__)
        new.collateral, new.positions, new.operators = dict(self.collateral), dict(self.positions), set(self.operators)
        return new


@dataclass(frozen=True)
class InstrumentState:
    """A listed instrument with its funding state (perpetuals).

    ``funding_updated_at`` is the block timestamp of the last accrual (or of the listing);
    ``premium`` the clamped premium of the last trade over the index, traded at ``mark_time``, and
    ``carry`` the sub-TICK remainder: with them ``rules.funding_accrual`` gives the next accrual.
    """

    id: int
    kind: Kind
    underlying: int
    expiry: int
    strike: int
    cumulative_funding: int = 0
    funding_updated_at: int = 0
    premium: int = 0
    mark_time: int = 0
    carry: int = 0


@dataclass(frozen=True)
class PriceState:
    """The latest price round: id, observation time and one price per underlying (1e18)."""

    round: int = 0
    timestamp: int = 0
    prices: tuple[int, ...] = ()


@dataclass(frozen=True)
class RootState:
    """The latest posted status root; ``cleared`` once a parameter change has voided it."""

    round: int
    root: bytes
    price_round: int
    issued_at: int
    expiry: int
    cleared: bool = False


@dataclass(frozen=True)
class CollateralState:
    """A listed volatile collateral: the feed underlying that prices it and its haircut (WAD)."""

    token: str
    underlying: int
    haircut: int


@dataclass
class ProtocolState:
    """Everything the indexer rebuilds, as of block ``block`` (hash ``block_hash``, time ``timestamp``).

    Attributes
    ----------
    accounts : dict of str to AccountState
        Every account an event touched, by checksummed address.
    instruments : dict of int to InstrumentState
        Listed instruments by id.
    settlements : dict of (int, int) to int
        Fixed settlement prices by ``(underlying, expiry)``.
    collaterals : dict of str to CollateralState
        Volatile collaterals in listing order (the order ``Vault.getAccount`` reports them in).
    """

    quote: str
    block: int
    block_hash: str = ""
    timestamp: int = 0
    accounts: dict[str, AccountState] = field(default_factory=dict)
    instruments: dict[int, InstrumentState] = field(default_factory=dict)
    settlements: dict[tuple[int, int], int] = field(default_factory=dict)
    prices: PriceState = field(default_factory=PriceState)
    collaterals: dict[str, CollateralState] = field(default_factory=dict)
    params: OnchainParams | None = None
    params_hash: bytes = ZERO32
    engine_config_hash: bytes = ZERO32
    root: RootState | None = None
    paused: bool = False
    fee_collector: str = ""
    risk_quorum: int = 0
    risk_signers: tuple[str, ...] = ()  # sorted
    liquidation: LiquidationParams | None = None
    loss_index: int = 0  # the Vault's cumulative socialised loss per unit of positive cash (1e27)
    bands: ExchangeBands | None = None  # the Exchange's price bands
    feed_fresh_until: int = 0  # RiskOracle.feedFreshUntil: latest price round time + the feed's heartbeat

    def account(self, address: str) -> AccountState:
        """The account's state, created empty on first use."""
        acct = self.accounts.get(address)
        if acct is None:
            acct = self.accounts[address] = AccountState()
        return acct

    def settlement_price(self, instrument: int) -> int | None:
        """The fixed settlement price of a future or option, None while not fixed."""
        ins = self.instruments[instrument]
        return self.settlements.get((ins.underlying, ins.expiry))

    def copy(self) -> ProtocolState:
        """A copy sharing only immutable values (cheap: one dict per account)."""
        return replace(
            self, accounts={a: s.copy() for a, s in self.accounts.items()}, instruments=dict(self.instruments),
            settlements=dict(self.settlements), collaterals=dict(self.collaterals),
        )  # fmt: skip


# ---------------------------------------------------------------------- events
@dataclass(frozen=True)
class Event:
    """A decoded log. ``timestamp`` is the block's, filled for the events that need time."""

    name: str
    args: dict[str, Any]
    block: int
    log_index: int
    timestamp: int = 0


@lru_cache(maxsize=1 << 20)
def _checksum(address: str) -> ChecksumAddress:
    return to_checksum_address(address)


def _normalise(typ: str, value: Any) -> Any:
    if typ == "address":
        return _checksum(value)
    if typ == "address[]":
        return [_checksum(v) for v in value]
    return value


@dataclass(frozen=True)
class _EventSpec:
    """Decoder for one event of one contract ABI."""

    name: str
    topic: bytes
    indexed: tuple[tuple[str, str], ...]  # (name, type) from topics 1..3
    data: tuple[tuple[str, str], ...]  # (name, type) from the data

    @classmethod
    def of(cls, item: dict[str, Any]) -> _EventSpec:
        inputs = [(i["name"], _abi_type(i), bool(i["indexed"])) for i in item["inputs"]]
        signature = f"{item['name']}({','.join(t for _, t, _ in inputs)})"
        return cls(
            item["name"], keccak(text=signature),
            tuple((n, t) for n, t, ix in inputs if ix), tuple((n, t) for n, t, ix in inputs if not ix),
        )  # fmt: skip

    def decode(self, log: LogReceipt | Mapping[str, Any]) -> dict[str, Any]:
        args: dict[str, Any] = {}
        for (name, typ), topic in zip(self.indexed, log["topics"][1:], strict=True):
            args[name] = _normalise(typ, decode([typ], bytes(topic))[0])
        values = decode([t for _, t in self.data], bytes(log["data"]))
        for (name, typ), value in zip(self.data, values, strict=True):
            args[name] = _normalise(typ, value)
        return args


# ---------------------------------------------------------------------- handlers
Handler = Callable[[ProtocolState, Event], None]


def _touch(s: ProtocolState, acct: AccountState) -> None:
    """A cash balance the Vault touched: its loss snapshot is now the index (a charge, if any, came
    first as its own ``LossApplied`` event)."""
    acct.loss_snapshot = s.loss_index


def _on_deposited(s: ProtocolState, e: Event) -> None:
    acct, a = s.account(e.args["account"]), e.args
    if a["token"] == s.quote:
        _touch(s, acct)
        acct.cash += a["amount"]
    else:
        acct.collateral[a["token"]] = acct.collateral.get(a["token"], 0) + a["amount"]
    acct.deposit_credit += a["credit"]


def _on_withdrawn(s: ProtocolState, e: Event) -> None:
    acct, a = s.account(e.args["account"]), e.args
    if a["token"] == s.quote:
        _touch(s, acct)
        acct.cash -= a["amount"]
    else:
        acct.collateral[a["token"]] -= a["amount"]


def _on_position_changed(s: ProtocolState, e: Event) -> None:
    """Size and cost basis after the fill; a perp opened from zero snapshots the current index
    (``Vault._settleFunding`` sets it without an event when the old size is zero)."""
    acct, a = s.account(e.args["account"]), e.args
    iid = a["instrument"]
    if a["cashDelta"] != 0:
        _touch(s, acct)
    acct.cash += a["cashDelta"]
    old = acct.positions.pop(iid, None)
    if a["size"] == 0:
        return
    ins = s.instruments.get(iid)
    snapshot = old.funding_snapshot if old else (ins.cumulative_funding if ins else 0)
    acct.positions[iid] = PositionState(a["size"], a["costBasis"], snapshot)


def _on_funding_settled(s: ProtocolState, e: Event) -> None:
    acct, a = s.account(e.args["account"]), e.args
    _touch(s, acct)
    acct.cash -= a["payment"]
    pos = acct.positions[a["instrument"]]
    acct.positions[a["instrument"]] = replace(pos, funding_snapshot=a["cumulative"])


def _on_position_settled(s: ProtocolState, e: Event) -> None:
    acct = s.account(e.args["account"])
    _touch(s, acct)
    acct.cash += e.args["payoff"]
    acct.positions.pop(e.args["instrument"], None)


def _on_fees_collected(s: ProtocolState, e: Event) -> None:
    acct = s.account(e.args["collector"])
    _touch(s, acct)
    acct.cash += e.args["amount"]


def _on_cash_transferred(s: ProtocolState, e: Event) -> None:
    src, dst = s.account(e.args["from"]), s.account(e.args["to"])
    _touch(s, src)
    src.cash -= e.args["amount"]
    _touch(s, dst)
    dst.cash += e.args["amount"]


def _on_collateral_transferred(s: ProtocolState, e: Event) -> None:
    a = e.args
    src, dst = s.account(a["from"]), s.account(a["to"])
    src.collateral[a["token"]] -= a["amount"]
    dst.collateral[a["token"]] = dst.collateral.get(a["token"], 0) + a["amount"]


def _on_loss_applied(s: ProtocolState, e: Event) -> None:
    acct = s.account(e.args["account"])
    acct.cash -= e.args["charge"]
    _touch(s, acct)


def _on_loss_socialised(s: ProtocolState, e: Event) -> None:
    s.loss_index = e.args["lossIndex"]
    if e.args["socialised"] != 0:
        acct = s.account(e.args["to"])
        _touch(s, acct)
        acct.cash += e.args["socialised"]


def _on_frozen_set(s: ProtocolState, e: Event) -> None:
    s.account(e.args["account"]).frozen = e.args["frozen"]


def _on_params_bound(s: ProtocolState, e: Event) -> None:
    s.params_hash = e.args["paramsHash"]


def _on_liquidation_params_set(s: ProtocolState, e: Event) -> None:
    s.liquidation = LiquidationParams(*e.args["params"])


def _on_risk_nonce_bumped(s: ProtocolState, e: Event) -> None:
    s.account(e.args["account"]).risk_nonce = e.args["nonce"]


def _on_operator_set(s: ProtocolState, e: Event) -> None:
    """Operators are granted on the Exchange (versioned grants; the set holds the active ones)."""
    ops = s.account(e.args["account"]).operators
    if e.args["allowed"]:
        ops.add(e.args["operator"])
    else:
        ops.discard(e.args["operator"])


def _on_bands_set(s: ProtocolState, e: Event) -> None:
    s.bands = ExchangeBands(e.args["linear"], e.args["option"], e.args["operator"])


def _on_funding_mark_set(s: ProtocolState, e: Event) -> None:
    ins = s.instruments[e.args["id"]]
    # a stale feed leaves no premium and restamps the accrual time (Instruments.recordTrade)
    updated = ins.funding_updated_at if e.args["indexPrice"] else e.timestamp
    s.instruments[ins.id] = replace(ins, premium=e.args["premium"], mark_time=e.timestamp, funding_updated_at=updated)


def _on_instrument_listed(s: ProtocolState, e: Event) -> None:
    a = e.args
    kind = Kind(a["kind"])
    updated = e.timestamp if kind == Kind.PERP else 0
    s.instruments[a["id"]] = InstrumentState(a["id"], kind, a["underlying"], a["expiry"], a["strike"],
                                             funding_updated_at=updated)  # fmt: skip


def _on_funding_updated(s: ProtocolState, e: Event) -> None:
    ins = s.instruments[e.args["id"]]
    s.instruments[ins.id] = replace(ins, cumulative_funding=e.args["cumulativeFunding"], funding_updated_at=e.timestamp,
                                    carry=e.args["carry"])  # fmt: skip


def _on_settlement_fixed(s: ProtocolState, e: Event) -> None:
    s.settlements[(e.args["underlying"], e.args["expiry"])] = e.args["price"]


def _on_prices_posted(s: ProtocolState, e: Event) -> None:
    s.prices = PriceState(e.args["round"], e.args["timestamp"], tuple(e.args["prices"]))


def _on_root_posted(s: ProtocolState, e: Event) -> None:
    a = e.args
    s.root = RootState(a["round"], a["root"], a["priceRound"], a["issuedAt"], a["expiry"])


def _on_root_cleared(s: ProtocolState, e: Event) -> None:
    if s.root is not None:
        s.root = replace(s.root, cleared=True)


def _on_collateral_set(s: ProtocolState, e: Event) -> None:
    token = e.args["token"]
    s.collaterals[token] = CollateralState(token, e.args["underlying"], e.args["haircut"])


def _on_params_set(s: ProtocolState, e: Event) -> None:
    s.params = OnchainParams(*e.args["params"])


def _on_params_hash_changed(s: ProtocolState, e: Event) -> None:
    s.params_hash = e.args["paramsHash"]


def _on_engine_config_hash_set(s: ProtocolState, e: Event) -> None:
    s.engine_config_hash = e.args["engineConfigHash"]


def _on_feed_synced(s: ProtocolState, e: Event) -> None:
    s.feed_fresh_until = e.args["freshUntil"]


def _on_paused_set(s: ProtocolState, e: Event) -> None:
    s.paused = e.args["paused"]


def _on_fee_collector_set(s: ProtocolState, e: Event) -> None:
    s.fee_collector = e.args["collector"]


def _on_risk_quorum_set(s: ProtocolState, e: Event) -> None:
    s.risk_quorum = e.args["quorum"]


def _on_risk_signer_added(s: ProtocolState, e: Event) -> None:
    s.risk_signers = tuple(sorted({*s.risk_signers, e.args["signer"]}))


def _on_risk_signer_removed(s: ProtocolState, e: Event) -> None:
    s.risk_signers = tuple(a for a in s.risk_signers if a != e.args["signer"])


HANDLERS: dict[str, Handler] = {
    "Deposited": _on_deposited,
    "Withdrawn": _on_withdrawn,
    "PositionChanged": _on_position_changed,
    "FundingSettled": _on_funding_settled,
    "PositionSettled": _on_position_settled,
    "FeesCollected": _on_fees_collected,
    "CashTransferred": _on_cash_transferred,
    "CollateralTransferred": _on_collateral_transferred,
    "LossApplied": _on_loss_applied,
    "LossSocialised": _on_loss_socialised,
    "FrozenSet": _on_frozen_set,
    "ParamsBound": _on_params_bound,
    "LiquidationParamsSet": _on_liquidation_params_set,
    "RiskNonceBumped": _on_risk_nonce_bumped,
    "Exchange.OperatorSet": _on_operator_set,
    "Exchange.BandsSet": _on_bands_set,
    "PausedSet": _on_paused_set,
    "FeedSynced": _on_feed_synced,
    "FeeCollectorSet": _on_fee_collector_set,
    "InstrumentListed": _on_instrument_listed,
    "FundingUpdated": _on_funding_updated,
    "FundingMarkSet": _on_funding_mark_set,
    "SettlementFixed": _on_settlement_fixed,
    "PricesPosted": _on_prices_posted,
    "RootPosted": _on_root_posted,
    "RootCleared": _on_root_cleared,
    "CollateralSet": _on_collateral_set,
    "ParamsSet": _on_params_set,
    "ParamsHashChanged": _on_params_hash_changed,
    "EngineConfigHashSet": _on_engine_config_hash_set,
    # qualified by contract: the PriceFeed's signer set emits the same events
    "RiskOracle.QuorumSet": _on_risk_quorum_set,
    "RiskOracle.SignerAdded": _on_risk_signer_added,
    "RiskOracle.SignerRemoved": _on_risk_signer_removed,
}
TIMED_EVENTS = frozenset({"InstrumentListed", "FundingUpdated", "FundingMarkSet"})  # handlers that read e.timestamp


# ---------------------------------------------------------------------- JSON (checkpoints)
def to_jsonable(x: Any) -> Any:
    """Dataclasses to JSON values: bytes as 0x-hex, dicts as [key, value] pairs, sets sorted."""
    if is_dataclass(x) and not isinstance(x, type):
        return {f.name: to_jsonable(getattr(x, f.name)) for f in fields(x)}
    if isinstance(x, bytes):
        return "0x" + x.hex()
    if isinstance(x, dict):
        return [[to_jsonable(k), to_jsonable(v)] for k, v in x.items()]
    if isinstance(x, set | frozenset):
        return sorted(to_jsonable(v) for v in x)
    if isinstance(x, list | tuple):
        return [to_jsonable(v) for v in x]
    return x


def from_jsonable(tp: Any, x: Any) -> Any:
    """The inverse of :func:`to_jsonable`, driven by the type annotations of ``tp``."""
    origin, args = get_origin(tp), get_args(tp)
    if isinstance(tp, type) and is_dataclass(tp):
        hints = get_type_hints(tp)
        return tp(**{k: from_jsonable(hints[k], v) for k, v in x.items()})
    if origin in (Union, types.UnionType):
        return None if x is None else from_jsonable(next(a for a in args if a is not type(None)), x)
    if origin is dict:
        return {from_jsonable(args[0], k): from_jsonable(args[1], v) for k, v in x}
    if origin is set:
        return {from_jsonable(args[0], v) for v in x}
    if origin is tuple:
        item_types = [args[0]] * len(x) if args[-1] is Ellipsis else list(args)
        return tuple(from_jsonable(t, v) for t, v in zip(item_types, x, strict=True))
    if tp is bytes:
        return bytes.fromhex(x.removeprefix("0x"))
    if isinstance(tp, type) and issubclass(tp, int):
        return tp(x)
    return x


# ---------------------------------------------------------------------- the indexer
@dataclass(frozen=True)
class _Block:
    number: int
    hash: str
    timestamp: int


class _Reorganised(Exception):
    """The chain changed under a batch; the sync restarts."""


class Indexer:
    """Rebuilds :class:`ProtocolState` from the protocol's events; resumable and reorg-safe.

    Parameters
    ----------
    protocol : Protocol
        Handles on the deployed contracts (addresses, ABIs, deployment block).
    confirmations : int
        Index only up to ``head - confirmations``.
    checkpoint : Path or None
        JSON checkpoint: loaded when it exists, written (atomically) after every sync.
    batch_size : int
        Blocks per ``eth_getLogs`` request (a range the node refuses is split in halves).
    save_every : int
        During a long sync, also write the checkpoint after every ``save_every`` batches.
    retries, backoff : int, float
        Attempts after a transport error, with ``backoff * 2**attempt`` seconds between them.
    """

    def __init__(self, protocol: Protocol, confirmations: int = 0, checkpoint: Path | None = None, *,
                 batch_size: int = 2_000, save_every: int = 50, retries: int = 4,
                 backoff: float = 0.2) -> None:  # fmt: skip
        for name, value, least in (("confirmations", confirmations, 0), ("retries", retries, 0),
                                   ("batch_size", batch_size, 1), ("save_every", save_every, 1)):  # fmt: skip
            if value < least:
                raise InputError(name, f"{value} is below {least}")
        self.protocol = protocol
        self.confirmations, self.checkpoint = confirmations, checkpoint
        self.batch_size, self.save_every = batch_size, save_every
        self.retries, self.backoff = retries, backoff
        self.reorgs = 0
        self.applied: Counter[str] = Counter()  # events applied, by name (re-indexing counts again)
        self._specs = self._event_specs()
        self.state = self._load_checkpoint() or self._genesis()

    # ------------------------------------------------------------------ public
    def sync(self, to_block: int | None = None) -> int:
        """Index every confirmed block (up to ``to_block`` if given); returns the last one indexed."""
        for _ in range(self.retries + 1):
            try:
                block = self._sync_once(to_block)
            except _Reorganised:
                continue
            self.save()
            return block
        raise ChainError("the chain kept reorganising during the sync")

    def save(self) -> None:
        """Write the checkpoint (temporary file, fsync, rename): a crash leaves the old one whole."""
        if self.checkpoint is None:
            return
        payload = {"format": CHECKPOINT_FORMAT, "chain_id": self.protocol.chain_id,
                   "vault": self.protocol.vault.address, "state": to_jsonable(self.state)}  # fmt: skip
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint.with_name(self.checkpoint.name + ".tmp")
        with tmp.open("w") as fh:
            json.dump(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.checkpoint)

    # ------------------------------------------------------------------ sync
    def apply_block(self, header: Mapping[str, Any], logs: Sequence[Mapping[str, Any]]) -> bool:
        """Index one block from what the node already returned for it, with no request: its header
        (``eth_getBlockByNumber``, raw JSON-RPC fields) and its logs (every log of the block, e.g. the
        ``logs`` of its ``eth_getBlockReceipts``; logs of other contracts are skipped as in a sync).

        Applied only when the block extends the indexed state (its ``parentHash`` is the indexed
        block's hash), every log belongs to it, and no confirmations are required; otherwise nothing
        changes and the next :meth:`sync` indexes it. Returns whether the block was applied. Nothing
        is written to the checkpoint here (the next :meth:`sync` or :meth:`save` writes it).
        """
        s = self.state
        number, block_hash = _int(header["number"]), _hex_str(header["hash"])
        if self.confirmations or not s.block_hash or number != s.block + 1 \
                or _hex_str(header["parentHash"]) != s.block_hash:  # fmt: skip
            return False
        entries = [_raw_log(e) for e in logs]
        if any(e["removed"] or _hex_str(e["blockHash"]) != block_hash for e in entries):
            return False
        self._apply(entries, _Block(number, block_hash, _int(header["timestamp"])))
        return True

    def _sync_once(self, to_block: int | None) -> int:
        if self.confirmations == 0 and self.state.block_hash and (to_block is None or to_block > self.state.block):
            done = self._sync_tip()
            if done is not None:
                return done
        head = self._rpc(lambda: int(self.protocol.w3.eth.block_number))
        target = head - self.confirmations if to_block is None else min(to_block, head - self.confirmations)
        self._rollback_if_reorganised()
        batches = 0
        while self.state.block < target:
            self._index_range(self.state.block + 1, min(self.state.block + self.batch_size, target))
            batches += 1
            if batches % self.save_every == 0:
                self.save()  # a long first sync resumes from here after a crash
        return self.state.block

    def _rollback_if_reorganised(self) -> None:
        s = self.state
        if not s.block_hash:
            return
        block = self._block(s.block)
        if block is None or block.hash != s.block_hash:
            self.reorgs += 1
            log.warning("block %d (%s) left the chain: re-indexing from the deployment", s.block, s.block_hash)
            self.state = self._genesis()

    def _index_range(self, start: int, end: int) -> None:
        anchor = self._block(end)
        if anchor is None:
            raise _Reorganised
        logs = self._get_logs(start, end)
        self._check_unchanged(start, anchor, logs)
        self._apply(logs, anchor)

    def _apply(self, logs: Sequence[LogReceipt] | Sequence[dict[str, Any]], anchor: _Block) -> None:
        """Apply the logs of the blocks up to ``anchor`` (checked to extend the indexed state)."""
        for event in self._decode(logs, anchor):
            HANDLERS[event.name](self.state, event)
            self.applied[event.name] += 1
        self.state.block, self.state.block_hash, self.state.timestamp = anchor.number, anchor.hash, anchor.timestamp

    def _sync_tip(self) -> int | None:
        """The common case of a follower at the head, in plain JSON-RPC (no web3 formatting): one
        request when the head is the indexed block, two when it is the indexed block's child (its
        logs asked by block hash, EIP-234, so they are that block's whatever the chain does meanwhile).
        None when neither holds (behind by more, a re-organisation, a node refusing the request):
        the general path decides."""
        s = self.state
        head = self._raw("eth_getBlockByNumber", ["latest", False])
        if not isinstance(head, dict):
            return None
        number, block_hash = _int(head["number"]), _hex_str(head["hash"])
        if number == s.block:
            return s.block if block_hash == s.block_hash else None
        if number != s.block + 1 or _hex_str(head["parentHash"]) != s.block_hash:
            return None
        query = {"blockHash": block_hash, "address": self._addresses, "topics": [self._topics]}
        logs = self._raw("eth_getLogs", [query])
        if not isinstance(logs, list):
            return None
        entries = [_raw_log(e) for e in logs]
        if any(e["removed"] or _hex_str(e["blockHash"]) != block_hash for e in entries):
            return None
        self._apply(entries, _Block(number, block_hash, _int(head["timestamp"])))
        return number

    def _check_unchanged(self, start: int, anchor: _Block, logs: Sequence[LogReceipt]) -> None:
        """The logs come from the chain that ends at ``anchor`` and extends the indexed state."""
        again = self._block(anchor.number)
        if again is None or again.hash != anchor.hash:
            raise _Reorganised
        if self.state.block_hash:
            parent = self._block(start - 1)
            if parent is None or parent.hash != self.state.block_hash:
                raise _Reorganised
        for entry in logs:
            moved = entry["blockNumber"] == anchor.number and _hex(entry["blockHash"]) != anchor.hash
            if moved or entry.get("removed"):
                raise _Reorganised

    def _decode(self, logs: Sequence[LogReceipt] | Sequence[dict[str, Any]], anchor: _Block) -> list[Event]:
        ordered = sorted(logs, key=lambda e: (e["blockNumber"], e["logIndex"]))
        times: dict[int, int] = {anchor.number: anchor.timestamp}
        events = []
        for entry in ordered:
            spec = self._specs.get((entry["address"].lower(), bytes(entry["topics"][0])))
            if spec is None:
                continue
            number = entry["blockNumber"]
            ts = self._timestamp(number, times) if spec.name in TIMED_EVENTS else 0
            events.append(Event(spec.name, spec.decode(entry), number, entry["logIndex"], ts))
        return events

    def _timestamp(self, number: int, cache: dict[int, int]) -> int:
        if number not in cache:
            block = self._block(number)
            if block is None:
                raise _Reorganised
            cache[number] = block.timestamp
        return cache[number]

    # ------------------------------------------------------------------ RPC
    def _rpc(self, thunk: Callable[[], T]) -> T:
        """Run ``thunk``, retrying transport errors with exponential backoff; a JSON-RPC error
        answer is final (a :class:`ChainError` caused by the ``Web3RPCError``)."""
        for attempt in range(self.retries + 1):
            try:
                return thunk()
            except BlockNotFound:
                raise
            except Web3RPCError as exc:
                raise ChainError(f"the node refused the request: {exc}") from exc
            except TRANSIENT_ERRORS as exc:
                if attempt == self.retries:
                    raise ChainError(f"RPC failed after {self.retries + 1} attempts: {exc}") from exc
                time.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")

    def _raw(self, method: str, params: list[Any]) -> Any:
        """A plain JSON-RPC request through the provider (transport errors retried as in
        :meth:`_rpc`); its ``result``, or None when the node answered with an error."""
        response = self._rpc(lambda: self.protocol.w3.provider.make_request(RPCEndpoint(method), params))
        return None if "error" in response else response.get("result")

    def _block(self, number: int) -> _Block | None:
        """The block header, None when there is no such block (the chain is shorter)."""
        if number < 0:
            return None
        try:
            b = self._rpc(lambda: self.protocol.w3.eth.get_block(number))
        except BlockNotFound:
            return None
        return _Block(number, _hex(b["hash"]), int(b["timestamp"]))

    def _get_logs(self, start: int, end: int) -> list[LogReceipt]:
        """Logs of the indexed events in ``[start, end]``; a range the node refuses is halved."""
        query: FilterParams = {
            "fromBlock": start, "toBlock": end, "address": list(self._addresses),
            "topics": [list(self._topics)],
        }  # fmt: skip
        try:
            return list(self._rpc(lambda: self.protocol.w3.eth.get_logs(query)))
        except ChainError as exc:
            if start == end or not isinstance(exc.__cause__, Web3RPCError):
                raise
            mid = (start + end) // 2
            return self._get_logs(start, mid) + self._get_logs(mid + 1, end)

    # ------------------------------------------------------------------ set-up
    def _event_specs(self) -> dict[tuple[str, bytes], _EventSpec]:
        specs: dict[tuple[str, bytes], _EventSpec] = {}
        for name in INDEXED_CONTRACTS:
            address = self.protocol.deployment.contracts[name].lower()
            for item in self.protocol.abi_of(name):
                if item.get("type") != "event":
                    continue
                qualified = f"{name}.{item['name']}"
                if qualified in HANDLERS:
                    spec = replace(_EventSpec.of(item), name=qualified)
                elif item["name"] in HANDLERS:
                    spec = _EventSpec.of(item)
                else:
                    continue
                specs[(address, spec.topic)] = spec
        return specs

    @property
    def _addresses(self) -> list[ChecksumAddress]:
        return [_checksum(self.protocol.deployment.contracts[n]) for n in INDEXED_CONTRACTS]

    @property
    def _topics(self) -> list[str]:
        return sorted({"0x" + topic.hex() for _, topic in self._specs})

    def _genesis(self) -> ProtocolState:
        tokens = self.protocol.deployment.tokens.values()
        quote = next(t.address for t in tokens if t.underlying is None)
        return ProtocolState(quote=_checksum(quote), block=self.protocol.deployment.deploy_block - 1)

    def _load_checkpoint(self) -> ProtocolState | None:
        if self.checkpoint is None or not self.checkpoint.exists():
            return None
        try:
            raw = json.loads(self.checkpoint.read_text())
            same = (raw["format"], raw["chain_id"], raw["vault"].lower()) == (
                CHECKPOINT_FORMAT, self.protocol.chain_id, self.protocol.vault.address.lower())  # fmt: skip
            state = from_jsonable(ProtocolState, raw["state"]) if same else None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ChainError(f"checkpoint {self.checkpoint} is unreadable: {exc}") from exc
        if state is None:
            raise ChainError(f"checkpoint {self.checkpoint} belongs to another deployment or format")
        assert isinstance(state, ProtocolState)
        return state


def _hex(value: Any) -> str:
    return "0x" + bytes(value).hex()


def _hex_str(value: Any) -> str:
    """A hash as ``_hex`` writes it, from raw JSON-RPC (a hex string) or web3 (bytes)."""
    return value.lower() if isinstance(value, str) else _hex(value)


def _int(value: Any) -> int:
    """A quantity from raw JSON-RPC (a hex string) or web3 (an int)."""
    return int(value, 16) if isinstance(value, str) else int(value)


def _raw_log(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A raw JSON-RPC log in the shape :meth:`Indexer._decode` reads (web3's): bytes and ints."""
    return {
        "address": str(entry["address"]),
        "topics": [bytes.fromhex(t[2:]) if isinstance(t, str) else bytes(t) for t in entry["topics"]],
        "data": bytes.fromhex(entry["data"][2:]) if isinstance(entry["data"], str) else bytes(entry["data"]),
        "blockNumber": _int(entry["blockNumber"]),
        "blockHash": entry["blockHash"],
        "logIndex": _int(entry["logIndex"]),
        "removed": bool(entry.get("removed", False)),
    }  # fmt: skip
