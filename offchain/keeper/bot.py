"""The keeper: follows the chain block by block, starts auctions of the accounts the latest root
shows below maintenance margin, and bids when the auction's discount makes a bid worth it.

One :meth:`Keeper.step` per poll: settle and replace transactions in flight, load a new root if one
was posted, pick up auctions started by anyone, then act — every action re-checked with an
``eth_call`` of the exact transaction just before it is sent. Tests drive :meth:`step` directly;
:meth:`run` loops it until stopped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import requests
from eth_utils import to_checksum_address
from web3 import HTTPProvider
from web3.logs import DISCARD
from web3.providers.rpc.utils import ExceptionRetryConfiguration

from offchain import rules
from offchain.chain.actions import bid_action
from offchain.chain.client import Protocol
from offchain.chain.merkle import verify
from offchain.chain.params import LiquidationParams
from offchain.errors import ChainError, ConfigError, ContractRevertError, InputError, PmsimError
from offchain.keeper import strategy
from offchain.keeper.attest import AttestationRefused, Attestor
from offchain.keeper.candidates import Candidate, Round, RoundSource, breached, load_round, prioritise
from offchain.keeper.config import KeeperConfig
from offchain.keeper.metrics import KeeperMetrics
from offchain.keeper.tx import Outcome, Pending, TxManager

if TYPE_CHECKING:  # the optional strategies pull in the risk engine: imported only when enabled
    from offchain.keeper.hedge import Counterparty, Hedger
    from offchain.keeper.recompute import Recomputer

log = logging.getLogger(__name__)
T = TypeVar("T")
TRANSPORT = (OSError, TimeoutError, requests.RequestException)  # RequestException is an OSError; explicit
LOST_RACE = frozenset({"Liquidator_VersionChanged", "Liquidator_NoAuction", "Liquidator_StaleSnapshot"})
ZERO_ROOT = b"\x00" * 32
# the keeper's own state moved under its attestation (a transaction of its own landed meanwhile): ask again
TRANSIENT = frozenset({"RiskOracle_StaleNonce"})


@dataclass(frozen=True)
class AuctionView:
    """``auctionOf`` as the keeper reads it, with the fields the rules need."""

    account: str
    active: bool
    version: int
    state: rules.AuctionState
    stale: bool = False  # the account's risk nonce moved under the snapshot: refresh before any bid

    @classmethod
    def of(cls, account: str, a: Any, risk_nonce: int | None = None) -> AuctionView:
        """From ``auctionOf``'s tuple (active, insolvent, emergency, version, startedAt, nonce, V, E, M, IM, B,
        credit) and, when given, the account's risk nonce now (``Vault.riskNonce``)."""
        stale = bool(a[0]) and risk_nonce is not None and int(a[5]) != risk_nonce
        snap = rules.AuctionState(int(a[4]), bool(a[1]), int(a[6]), int(a[7]), int(a[8]), int(a[9]), int(a[10]))
        return cls(account, bool(a[0]), int(a[3]), snap, stale)


@dataclass
class Record:
    """What the keeper did or saw, kept for the health endpoint, logs and tests."""

    lost: list[tuple[str, str]] = field(default_factory=list)  # (account, error) races lost
    outcomes: list[Outcome] = field(default_factory=list)
    refused: dict[tuple[str, int], str] = field(default_factory=dict)  # (account, version) -> why not bid
    dry_run: list[dict[str, Any]] = field(default_factory=list)
    plans: dict[str, strategy.BidPlan | None] = field(default_factory=dict)
    bids: list[dict[str, Any]] = field(default_factory=list)  # every mined bid: price, profit, breach -> bid
    hedges: list[dict[str, Any]] = field(default_factory=list)  # every hedge trade mined


class Keeper:
    """A liquidation keeper for one sender key.

    Parameters
    ----------
    protocol : Protocol
    key : str
        The keeper's private key (kept in memory only; its address is logged, never the key).
    config : KeeperConfig
    attestor : Attestor
        Signs the keeper's margin after a bid (the engine's ``/attest/bid`` in production).
    clock : callable
        Wall clock for transaction replacement (tests pass a controllable one).
    counterparty : Counterparty or None
        The other side of hedge trades (``[hedge] enabled``); default: ``hedge.counterparty_url``.
    source : RoundSource or None
        Where published rounds come from (default: ``engine_url`` / ``rounds_dir``).
    """

    def __init__(self, protocol: Protocol, key: str, config: KeeperConfig, attestor: Attestor,
                 metrics: KeeperMetrics | None = None, clock: Callable[[], float] = time.time,
                 counterparty: Counterparty | None = None, source: RoundSource | None = None) -> None:  # fmt: skip
        self.p, self.w3, self.cfg, self.attestor = protocol, protocol.w3, config, attestor
        self.metrics = metrics or KeeperMetrics()
        _retry_transport(self.w3.provider)
        self.tx = TxManager(protocol, key, config.fees, config.state_file, self.metrics, clock)
        self.address = self.tx.sender
        self.source = source or RoundSource(config.engine_url, config.rounds_dir)
        self.recomputer: Recomputer | None = None
        if config.recompute.enabled:
            from offchain.keeper.recompute import Recomputer

            self.recomputer = Recomputer(protocol, config.recompute, self.metrics)
        self.hedger: Hedger | None = None
        if config.hedge.enabled:
            from offchain.keeper.hedge import Hedger, HttpCounterparty

            if counterparty is None:
                if not config.hedge.counterparty_url:
                    raise ConfigError("hedge.counterparty_url", "hedging is enabled: name a counterparty")
                counterparty = HttpCounterparty(config.hedge.counterparty_url)
            self.hedger = Hedger(protocol, key, config.hedge, attestor, counterparty)
        self._hedge_due = False
        self.breach_blocks: dict[str, int] = {}
        self.liq = protocol.liquidator
        self.round: Round | None = None
        self.candidates: list[Candidate] = []
        self.watch: set[str] = set()
        self.breach_times: dict[str, int] = {}
        self.bid_once: set[str] = set()
        self.record = Record()
        self.last_block = -1
        self.now = 0
        self.last_error = ""
        self.last_step = 0.0
        self._log_from = int(protocol.deployment.deploy_block)
        self._params: rules.AuctionParams | None = None
        log.info("keeper ready", extra={"fields": {"address": self.address, "dry_run": config.dry_run,
                                                   "pending": len(self.tx.pending)}})  # fmt: skip

    # ------------------------------------------------------------------ loop
    def run(self, stop: threading.Event) -> None:
        """Step every ``poll_interval_s`` until ``stop`` is set; failures are counted, logged and
        retried at the next step (the keeper stays up)."""
        while not stop.is_set():
            self.safe_step()
            stop.wait(self.cfg.poll_interval_s)
        log.info("keeper stopped", extra={"fields": {"pending": len(self.tx.pending)}})

    def safe_step(self) -> bool:
        try:
            self.step()
        except (ChainError, OSError, TimeoutError) as exc:
            self.metrics.rpc_errors.inc()
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("step failed; retrying next poll", extra={"fields": {"error": self.last_error}})
            return False
        except Exception as exc:  # web3's own transport errors (requests) and anything unexpected
            self.metrics.rpc_errors.inc()
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            log.exception("step failed; retrying next poll")
            return False
        self.last_error = ""
        return True

    def step(self) -> None:
        """One pass: transactions in flight, a new root, new auctions, then actions."""
        head = self.w3.eth.get_block("latest")
        self.last_block, self.now = int(head["number"]), int(head["timestamp"])
        self.metrics.last_block.set(self.last_block)
        for outcome in self.tx.poll():
            self._settled(outcome)
        self._params = _auction_params(self.p)
        self.refresh_round()
        self._recompute_head()
        self._scan_auctions()
        if self.cfg.start_auctions:
            self._start_auctions()
        self._bid_auctions()
        if self.hedger is not None and self._hedge_due:
            self._hedge()
        self.metrics.queue_depth.set(len(self.candidates) + len(self.watch))
        self.last_step = time.time()

    # ------------------------------------------------------------------ candidates
    def refresh_round(self) -> bool:
        """Load and verify the latest posted root's leaves if the on-chain round moved; True if loaded."""
        got: list[Any] = batched(lambda: self._batch([self.p.oracle.functions.rootRound(),
                                                      self.p.oracle.functions.statusRoot()]))
        number, root = int(got[0]), bytes(got[1])
        if root == ZERO_ROOT:  # no root, or cleared by a socialised loss: nothing can start on a leaf
            self.round, self.candidates = None, []
            return False
        if self.round is not None and self.round.number == number and self.round.root == root:
            return False
        t0 = time.perf_counter()
        doc = self.source.fetch(number)
        if doc is None:
            log.debug("round not published yet", extra={"fields": {"round": number}})
            return False
        self.round = load_round(doc, root, number)
        self.candidates = self.prioritise(self.round)
        self.metrics.candidates.set(len(self.candidates))
        self.metrics.detect_seconds.observe(time.perf_counter() - t0)
        for c in self.candidates:
            self.breach_blocks.setdefault(c.account.lower(), self.round.block or self.last_block)
        log.info("root loaded", extra={"fields": {
            "round": number, "leaves": len(self.round.tree.leaves), "candidates": len(self.candidates),
            "ms": round((time.perf_counter() - t0) * 1000, 1)}})
        if self.recomputer is not None:
            try:
                self.recomputer.check_round(number, self.round.block, self.round.tree.leaves)
            except (PmsimError, OSError) as exc:  # the cross-check informs; it never stops the keeper acting
                log.warning("recompute failed", extra={"fields": {"round": number, "error": str(exc)[:300]}})
        return True

    def _recompute_head(self) -> None:
        if self.recomputer is None:
            return
        try:
            self.recomputer.check_head(self.round.tree.leaves if self.round else [])
        except (PmsimError, OSError) as exc:
            log.warning("recompute at the head failed", extra={"fields": {"error": str(exc)[:300]}})

    def prioritise(self, rnd: Round) -> list[Candidate]:
        """The round's breached leaves, re-checked with each account's on-chain credit and nonce."""
        low = breached(rnd.tree)
        if not low:
            return []
        v = self.p.vault.functions
        calls: list[Any] = []
        for leaf in low:
            account = to_checksum_address(leaf.account)
            calls += [v.depositCredit(account), v.riskNonce(account)]
        out: list[Any] = batched(lambda: self._batch(calls))
        credits = {leaf.account.lower(): int(out[2 * i]) for i, leaf in enumerate(low)}
        nonces = {leaf.account.lower(): int(out[2 * i + 1]) for i, leaf in enumerate(low)}
        return prioritise(low, credits, nonces, self.breach_times, rnd.issued_at)

    def _scan_auctions(self) -> None:
        """Watch every auction started since the last scan (by anyone)."""
        if self.last_block < self._log_from:
            return
        logs = self.liq.events.AuctionStarted().get_logs(from_block=self._log_from, to_block=self.last_block)
        for ev in logs:
            account = str(ev["args"]["account"])
            self.watch.add(account)
            self.breach_times.setdefault(account.lower(), int(self.w3.eth.get_block(ev["blockNumber"])["timestamp"]))
            self.breach_blocks.setdefault(account.lower(), int(ev["blockNumber"]))
        self._log_from = self.last_block + 1

    # ------------------------------------------------------------------ starting auctions
    def _start_auctions(self) -> None:
        if self.round is None:
            return
        keep: list[Candidate] = []
        for cand in self.candidates:
            if self.tx.busy(cand.account) or cand.account in self.watch:
                keep.append(cand)
                continue
            proof = self.round.tree.proof(cand.account)
            if not verify(self.round.root, cand.leaf, proof):  # the exact proof we send, against the chain's root
                raise InputError("proof", f"proof of {cand.account} does not verify against the on-chain root")
            data = self.liq.encode_abi("start", args=[cand.account, cand.leaf.as_tuple(), proof])
            try:
                self.tx.call(self.liq.address, data)
            except ContractRevertError as exc:
                if exc.error_name == "Liquidator_AlreadyInAuction":
                    self.watch.add(cand.account)
                else:
                    log.info("cannot start", extra={"fields": {"account": cand.account, "error": exc.error_name}})
                continue
            if self._dry("start", cand.account, {"shortfall": cand.shortfall}):
                keep.append(cand)
                continue
            gas = self._gas(data)
            self.tx.send("start", cand.account, self.liq.address, data, gas, {"shortfall": cand.shortfall})
            self.watch.add(cand.account)
        self.candidates = keep
        self.metrics.candidates.set(len(keep))

    # ------------------------------------------------------------------ bidding
    def auctions(self) -> list[AuctionView]:
        accounts = sorted(self.watch)
        if not accounts:
            return []
        calls: list[Any] = []
        for a in accounts:
            calls += [self.liq.functions.auctionOf(to_checksum_address(a)),
                      self.p.vault.functions.riskNonce(to_checksum_address(a))]  # fmt: skip
        out: list[Any] = batched(lambda: self._batch(calls))
        return [AuctionView.of(a, out[2 * i], int(out[2 * i + 1])) for i, a in enumerate(accounts)]

    def gas_quote(self) -> int:
        """What a bid's gas costs now, in quote units."""
        return strategy.gas_cost_quote(self.cfg.profit.bid_gas, self.tx.gas_price_for_valuation(), self._eth_usd())

    def _eth_usd(self) -> int:
        if self.cfg.profit.eth_usd is not None:
            return int(self.cfg.profit.eth_usd * 10**18)
        try:
            index = self.p.deployment.underlyings.index("ETH")
        except ValueError:
            raise ChainError("no ETH price on the feed: set profit.eth_usd") from None
        rnd = int(self.p.feed.functions.latestRound().call()[0])
        return int(self.p.feed.functions.priceAt(rnd, index).call())

    def plan(self, view: AuctionView) -> strategy.BidPlan | None:
        """The earliest profitable bid on this auction from now (None: never, at these settings)."""
        assert self._params is not None
        at = self.now + self.cfg.profit.landing_s
        return strategy.earliest_profitable(view.state, at, self._params, self.gas_quote(), self.cfg.profit,
                                            self.cfg.unwind)  # fmt: skip

    def _bid_auctions(self) -> None:
        # A bid moves positions into the keeper's account and so bumps its risk nonce: an attestation for a
        # second bid, taken while the first is in flight, would be stale when it lands. One at a time.
        own_in_flight = any(p.kind in ("bid", "hedge") for p in self.tx.pending.values())
        for view in self.auctions():
            if not view.active:
                if not self.tx.busy(view.account):
                    self.watch.discard(view.account)
                    key = view.account.lower()  # a later breach of this account is timed afresh
                    self.breach_times.pop(key, None)
                    self.breach_blocks.pop(key, None)
                    self.bid_once.discard(key)
                continue
            if self.tx.busy(view.account) or (view.account.lower(), view.version) in self.record.refused:
                continue
            if view.stale:  # every bid would revert (Liquidator_StaleSnapshot): refresh it first
                self._refresh(view)
                continue
            plan = self.plan(view)
            self.record.plans[view.account] = plan
            if plan is None or plan.at > self.now + self.cfg.profit.landing_s or own_in_flight:
                continue
            own_in_flight = self._bid(view, plan) is not None

    def _bid(self, view: AuctionView, plan: strategy.BidPlan) -> Pending | None:
        key = (view.account.lower(), view.version)
        fields = {"account": view.account, "version": view.version, "fraction": plan.fraction, "price": plan.price,
                  "fee": plan.fee, "profit": plan.profit, "unwind": plan.unwind, "gas_quote": plan.gas}  # fmt: skip
        try:
            att = self.attestor.attest_bid(self.address, view.account, plan.fraction, plan.price)
        except AttestationRefused as exc:
            self.record.refused[key] = str(exc)
            log.warning("no attestation for the bid", extra={"fields": {**fields, "error": str(exc)}})
            return None
        expected = bid_action(self.address, view.account, view.version, plan.fraction, plan.price)
        if att.attestation.action_hash != expected:  # the engine saw another auction version: re-plan
            log.info("attestation for another auction version; re-planning", extra={"fields": fields})
            return None
        data = self.liq.encode_abi("bid", args=[view.account, plan.fraction, plan.price, view.version, att.proof()])
        try:  # priced for the landing block: checked against the pending block when that is later
            self.tx.call(self.liq.address, data, "pending" if self.cfg.profit.landing_s else "latest")
        except ContractRevertError as exc:
            if exc.error_name in LOST_RACE:
                self._lost(view.account, exc.error_name)
            elif exc.error_name in TRANSIENT:
                log.info("bid not valid yet; re-planning next step", extra={"fields": {**fields,
                                                                                       "error": exc.error_name}})
            else:
                self.record.refused[key] = exc.error_name
                log.warning("bid would revert", extra={"fields": {**fields, "error": exc.error_name}})
            return None
        if self._dry("bid", view.account, fields):
            return None
        gas = self._gas(data, block="pending" if self.cfg.profit.landing_s else "latest")
        meta = {"version": view.version, "at": plan.at, "fraction": plan.fraction, "worst_price": plan.price,
                "worth": plan.worth, "unwind": plan.unwind, "expected_profit": plan.profit}  # fmt: skip
        pending = self.tx.send("bid", view.account, self.liq.address, data, gas, meta)
        self.metrics.bids_sent.inc()
        return pending

    # ------------------------------------------------------------------ hedging
    def _hedge(self) -> None:
        """Bring the keeper's delta per underlying within a lot of zero with perp trades (see
        :mod:`offchain.keeper.hedge`); one trade at a time, re-measured after each mined bid or hedge."""
        from offchain.keeper.hedge import HedgeBelowIM

        assert self.hedger is not None
        if any(p.kind in ("bid", "hedge") for p in self.tx.pending.values()):
            return  # measure once what is in flight has landed
        self._hedge_due = False
        for order in self.hedger.plan():
            try:
                trade = self.hedger.prepare(order, self.now)
            except HedgeBelowIM:
                self.metrics.hedges_refused.labels("below_im").inc()
                continue
            if trade is None:
                self.metrics.hedges_refused.labels("no_quote").inc()
                continue
            fields = {"instrument": order.instrument, "buy": order.keeper_buys, "size": order.size,
                      "price": trade.price, "delta_before": order.delta_before}  # fmt: skip
            exchange = self.p.exchange.address
            try:
                self.tx.call(exchange, trade.data)
            except ContractRevertError as exc:
                self.metrics.hedges_refused.labels(exc.error_name).inc()
                log.warning("hedge would revert", extra={"fields": {**fields, "error": exc.error_name}})
                continue
            if self._dry("hedge", self.address, fields):
                continue
            self.tx.send("hedge", f"hedge:{order.instrument}", exchange, trade.data, self._gas(trade.data, exchange),
                         fields)  # fmt: skip
            self.metrics.hedges_sent.inc()
            break  # a trade bumps the keeper's risk nonce: the next hedge is attested once this one landed
        for u, d in self.hedger.deltas().items():
            self.metrics.delta.labels(self.p.deployment.underlyings[u]).set(d)

    # ------------------------------------------------------------------ outcomes
    def _refresh(self, view: AuctionView) -> None:
        """``Liquidator.refresh`` of an auction whose snapshot went stale (a fill that lowered the frozen
        account's IM moved its nonce), with the account's leaf of the latest root once a root carries its
        new nonce; until then it waits (the next rounds will)."""
        if self.round is None:
            return
        try:
            leaf, proof = self.round.tree.leaf(view.account), self.round.tree.proof(view.account)
        except InputError:
            return  # not in this round's tree
        if not verify(self.round.root, leaf, proof):
            raise InputError("proof", f"proof of {view.account} does not verify against the on-chain root")
        data = self.liq.encode_abi("refresh", args=[view.account, leaf.as_tuple(), proof])
        try:
            self.tx.call(self.liq.address, data)
        except ContractRevertError as exc:  # most often RiskOracle_StaleNonce: the root predates the fill
            log.debug("cannot refresh yet", extra={"fields": {"account": view.account, "error": exc.error_name}})
            return
        if self._dry("refresh", view.account, {"version": view.version}):
            return
        self.tx.send("refresh", view.account, self.liq.address, data, self._gas(data), {"version": view.version})

    def _settled(self, o: Outcome) -> None:
        self.record.outcomes.append(o)
        p, fields = o.pending, {"kind": o.pending.kind, "account": o.pending.account, "nonce": o.pending.nonce,
                                "status": o.status, "tx": o.tx_hash}  # fmt: skip
        was = p.meta.get("was", p.kind)
        if o.status == "mined" and p.kind == "start":
            self.metrics.auctions_started.inc()
        elif o.status == "mined" and p.kind == "refresh":
            self.metrics.auctions_refreshed.inc()
        elif o.status == "mined" and p.kind == "bid":
            self._bid_mined(o)
        elif o.status == "mined" and p.kind == "hedge":
            self.metrics.hedges_mined.inc()
            self.record.hedges.append({**p.meta, "block": int(o.receipt["blockNumber"]) if o.receipt else None,
                                       "tx": o.tx_hash})  # fmt: skip
            self._hedge_due = True  # re-measure: done once the delta is within a lot
        elif o.status in ("reverted", "cancelled") and o.error is not None and o.error.error_name in LOST_RACE:
            self._lost(p.account, o.error.error_name)
        elif o.status == "reverted" and was == "bid":
            self.metrics.bids_reverted.labels(o.error.error_name if o.error else "Unknown").inc()
        if o.error is not None:
            fields["error"] = o.error.error_name
        log.info("settled", extra={"fields": fields})

    def _bid_mined(self, o: Outcome) -> None:
        assert o.receipt is not None
        self.metrics.bids_mined.inc()
        events = self.liq.events.Bid().process_receipt(o.receipt, errors=DISCARD)
        gas_quote = strategy.gas_cost_quote(int(o.receipt["gasUsed"]), int(o.receipt.get("effectiveGasPrice", 0)),
                                            self._eth_usd())  # fmt: skip
        for ev in events:
            args = ev["args"]
            profit = int(o.pending.meta["worth"]) - int(args["price"]) - int(args["fee"]) \
                - int(o.pending.meta["unwind"]) - gas_quote
            if profit > 0:
                self.metrics.profit.inc(profit)
            account = str(args["account"]).lower()
            block = int(o.receipt["blockNumber"])
            mined_at = int(self.w3.eth.get_block(block)["timestamp"])
            first = account not in self.bid_once
            if first and account in self.breach_times:
                self.metrics.breach_to_bid.observe(max(0, mined_at - self.breach_times[account]))
                self.bid_once.add(account)
            breach_t, breach_b = self.breach_times.get(account), self.breach_blocks.get(account)
            self.record.bids.append({
                "account": str(args["account"]), "block": block, "chain_time": mined_at, "tx": o.tx_hash,
                "fraction": int(args["fractionWad"]), "price": int(args["price"]), "fee": int(args["fee"]),
                "worth": int(o.pending.meta["worth"]), "unwind": int(o.pending.meta["unwind"]), "gas": gas_quote,
                "profit": profit, "first": first, "breach_time": breach_t, "breach_block": breach_b,
                "breach_to_bid_s": None if breach_t is None else mined_at - breach_t,
                "breach_to_bid_blocks": None if breach_b is None else block - breach_b,
            })  # fmt: skip
            self._hedge_due = True
            log.info("bid mined", extra={"fields": {"account": args["account"], "price": int(args["price"]),
                                                    "fee": int(args["fee"]), "profit": profit}})  # fmt: skip

    def _lost(self, account: str, why: str) -> None:
        self.metrics.bids_lost.inc()
        self.record.lost.append((account, why))
        log.info("race lost", extra={"fields": {"account": account, "error": why}})

    # ------------------------------------------------------------------ helpers
    def _batch(self, calls: list[Any]) -> list[Any]:
        with self.w3.batch_requests() as batch:
            for c in calls:
                batch.add(c)
            return list(batch.execute())

    def _gas(self, data: str, to: str | None = None, block: str = "latest") -> int:
        tx: Any = {"from": self.address, "to": to or self.liq.address, "data": data}
        estimate = int(self.p._decoded(lambda: self.w3.eth.estimate_gas(tx, block)))  # type: ignore[arg-type]
        return int(estimate * self.cfg.fees.gas_margin) + 10_000

    def _dry(self, kind: str, account: str, fields: dict[str, Any]) -> bool:
        if not self.cfg.dry_run:
            return False
        entry = {"kind": kind, "account": account, "block": self.last_block, **fields}
        self.record.dry_run.append(entry)
        log.info("dry run: would send", extra={"fields": entry})
        return True

    def health(self) -> dict[str, Any]:
        """``GET /health``: ``ok`` while steps succeed, ``degraded`` with the last error otherwise."""
        return {"status": "degraded" if self.last_error else "ok", "address": self.address,
                "last_block": self.last_block, "chain_time": self.now, "dry_run": self.cfg.dry_run,
                "round": self.round.number if self.round else 0, "candidates": len(self.candidates),
                "auctions": len(self.watch), "pending": sorted(self.tx.pending), "races_lost": len(self.record.lost),
                "last_error": self.last_error, "seconds_since_step": round(time.time() - self.last_step, 3)
                if self.last_step else None, "recompute": self._recompute_health()}  # fmt: skip

    def _recompute_health(self) -> dict[str, Any] | None:
        if self.recomputer is None:
            return None
        r = self.recomputer.report
        return {"round": r.round, "round_block": r.round_block, "checked": r.checked, "skipped": r.skipped,
                "disagreeing": sorted({d.account for d in r.disagreements}), "missing": r.missing,
                "unproven_breaches": [u.account for u in r.unproven], "head_block": r.head_block}  # fmt: skip


def _retry_transport(provider: Any) -> None:
    """Retry dropped connections and timeouts of single requests (web3 retries only the builtin
    ``ConnectionError`` by default, not ``requests``' own); re-sending a signed transaction is safe."""
    if isinstance(provider, HTTPProvider):
        provider.exception_retry_configuration = ExceptionRetryConfiguration(
            errors=(ConnectionError, requests.ConnectionError, requests.Timeout, requests.HTTPError),
            retries=4, backoff_factor=0.1)  # fmt: skip


def batched(thunk: Callable[[], T], retries: int = 4) -> T:
    """``thunk()`` (a JSON-RPC batch, which web3 never retries), retried on transport failures with
    exponential backoff."""
    for attempt in range(retries + 1):
        try:
            return thunk()
        except TRANSPORT:
            if attempt == retries:
                raise
            time.sleep(0.1 * 2**attempt)
    raise AssertionError("unreachable")


def _auction_params(p: Protocol) -> rules.AuctionParams:
    lp = LiquidationParams(*p.params.functions.liquidationParams().call())
    return rules.AuctionParams(lp.start_discount, lp.cutoff_discount, lp.fast_length, lp.slow_length,
                               lp.insolvent_length, lp.buffer_ratio, lp.liquidation_fee, lp.small_portfolio)


__all__ = ["AuctionView", "Keeper", "PmsimError"]
