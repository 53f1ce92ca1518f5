"""The risk engine service: index -> compute -> sign -> post, and on-demand attestations.

Each round (every N blocks or seconds) the engine indexes the chain, computes every account's
status result, builds the round's Merkle tree (OpenZeppelin StandardMerkleTree layout), collects a
quorum of signatures on the root and posts it. The round number comes from the chain
(``RiskOracle.rootRound() + 1``), so a restarted engine neither skips nor double-posts a round.
Below quorum nothing is posted and the log says so. The round's tree is published
(``<state_dir>/rounds/<n>.json`` and ``GET /round/latest``) so that keepers can build their own
proofs. On demand it attests proposed trades and withdrawals, signed by every configured signer.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from threading import RLock
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from offchain import rules
from offchain.chain.actions import trade_action
from offchain.chain.client import Protocol
from offchain.chain.eip712 import Attestation
from offchain.chain.indexer import Indexer, ProtocolState
from offchain.chain.merkle import StatusRoot, StatusTree
from offchain.chain.units import Kind
from offchain.engine.core import EngineCore, TradeRequest, WithdrawRequest
from offchain.engine.follower import ChainFollower, HeadProbe
from offchain.engine.liquidation import AuctionView, BidRequest, fetch_auction, root_unusable, start_candidates
from offchain.engine.signer import RiskSigner, SignerRefused, SignJob
from offchain.errors import ChainError, ConfigError, ContractRevertError, InputError, PmsimError

log = logging.getLogger("pmsim.engine")
Request = TradeRequest | WithdrawRequest | BidRequest


class QuorumError(PmsimError):
    """Fewer signers than the on-chain quorum agreed to sign: nothing is posted or served."""


class InsufficientMarginError(InputError):
    """After the action the account's margin equity is below what the contract requires
    (``RiskOracle_InsufficientMargin``): initial margin, or maintenance margin for a side that
    only reduces a position. Nothing is signed; ``shortfall`` (quote units) is what a deposit
    made first would have to cover (deposits do not change the risk nonce)."""

    def __init__(self, field: str, equity: int, required: int, which: str) -> None:
        self.equity, self.required, self.which = equity, required, which
        self.shortfall = required - equity
        super().__init__(field, f"insufficient margin after this action: margin equity {equity / 1e6:,.6f} USD "
                                f"< {which} {required / 1e6:,.6f} USD (deposit at least "
                                f"{self.shortfall / 1e6:,.6f} USD first, or ask for less)")  # fmt: skip


@dataclass(frozen=True)
class SignedAttestation:
    """An attestation with its quorum signatures, ready for a contract call."""

    attestation: Attestation
    signatures: bytes
    block: int

    def proof(self) -> tuple[tuple[Any, ...], bytes]:
        return (self.attestation.as_tuple(), self.signatures)

    def to_json(self) -> dict[str, Any]:
        a = self.attestation
        fields = {k: ("0x" + v.hex() if isinstance(v, bytes) else v if isinstance(v, str) else str(v))
                  for k, v in a.__dict__.items()}  # fmt: skip
        return {"attestation": fields, "signatures": "0x" + self.signatures.hex(), "block": self.block}


@dataclass
class RoundResult:
    round: int
    root: StatusRoot
    tree: StatusTree
    block: int
    tx: str


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.attestations = Counter("pmsim_attestations", "attestations served", ["kind"], registry=r)
        self.attestation_errors = Counter("pmsim_attestation_errors", "attestation requests refused", registry=r)
        self.attestation_seconds = Histogram("pmsim_attestation_seconds", "compute + sign time", registry=r,
                                             buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5))  # fmt: skip
        self.rounds = Counter("pmsim_rounds_posted", "status roots posted", registry=r)
        self.rounds_skipped = Counter("pmsim_rounds_skipped", "rounds not posted", ["reason"], registry=r)
        self.round_seconds = Histogram("pmsim_round_seconds", "index + compute + sign + post", registry=r)
        self.last_round = Gauge("pmsim_last_round", "last root round posted", registry=r)
        self.last_block = Gauge("pmsim_indexed_block", "last block indexed", registry=r)
        self.accounts = Gauge("pmsim_accounts", "accounts in the last round", registry=r)
        self.liquidatable = Gauge("pmsim_liquidatable_accounts", "accounts below maintenance margin", registry=r)


class Engine:
    """The engine service's logic (the HTTP layer is :mod:`offchain.engine.http`).

    Parameters
    ----------
    protocol : Protocol
    core : EngineCore
    indexer : Indexer
    signers : sequence of RiskSigner
        Every configured signer; each result needs the oracle's on-chain quorum of them.
    relayer_key : str
        Key paying for root posts and settlement fixes.
    state_dir : Path
        Published rounds and the indexer checkpoint.
    lifetime : int
        Seconds an attestation or root lives (capped by the on-chain ``attestationMaxAge``).
    max_staleness : float
        0 (the default): every attestation sees every block mined before its request arrived
        (read-your-writes, see :mod:`offchain.engine.follower`); > 0 accepts a head check that
        started at most that many seconds before the request.

    Notes
    -----
    Attestations are served concurrently: request threads read an immutable snapshot of the
    indexed state that a :class:`~offchain.engine.follower.ChainFollower` thread publishes once per
    new block (:meth:`start_following`; without it every request syncs first, as a library call
    would). Only the indexer sync and a round's post are serialised.
    """

    def __init__(self, protocol: Protocol, core: EngineCore, indexer: Indexer, signers: Sequence[RiskSigner],
                 relayer_key: str, state_dir: Path, lifetime: int = 120,
                 max_staleness: float = 0.0) -> None:  # fmt: skip
        self.protocol, self.core, self.indexer = protocol, core, indexer
        self.signers = list(signers)
        self.relayer_key = relayer_key
        self.state_dir = state_dir
        self.lifetime = lifetime
        self.max_staleness = max_staleness
        self.metrics = Metrics()
        self.follower = ChainFollower(indexer, HeadProbe(protocol), prepare=self._prepare, on_sync=self._synced)
        self._round_lock = RLock()
        self.latest: RoundResult | None = None
        (state_dir / "rounds").mkdir(parents=True, exist_ok=True)
        self._load_latest_tree()

    # ------------------------------------------------------------------ state
    def refresh(self) -> ProtocolState:
        """Index up to the head now and return the published snapshot (never mutate it)."""
        return self.follower.refresh()

    def state(self) -> ProtocolState:
        """The snapshot to answer a request with: fresh as ``max_staleness`` says."""
        return self.follower.fresh(self.max_staleness)

    def start_following(self) -> None:
        """Follow the chain in a background thread (the HTTP server starts it)."""
        self.follower.start()

    def stop_following(self) -> None:
        self.follower.stop()

    def _prepare(self, state: ProtocolState) -> None:
        """Build the new block's market before requests see the block."""
        if state.prices.round:
            self.core.engine(state)

    def _synced(self, state: ProtocolState) -> None:
        self.metrics.last_block.set(state.block)

    def _window(self, state: ProtocolState) -> tuple[int, int]:
        """(issued_at, expiry) from chain time: the indexed block's timestamp."""
        max_age = state.params.attestation_max_age if state.params else self.lifetime
        return state.timestamp, state.timestamp + min(self.lifetime, max_age)

    def quorum(self, state: ProtocolState | None = None) -> int:
        """The oracle's quorum, as indexed (``QuorumSet`` events): no RPC on the attestation path."""
        return (state or self.follower.snapshot).risk_quorum

    def _collect(self, job: SignJob, state: ProtocolState | None = None) -> bytes:
        """Signatures of the job by signers in increasing address order, up to the quorum."""
        need = self.quorum(state)
        sigs: list[tuple[int, bytes]] = []
        for s in sorted(self.signers, key=lambda s: int(s.address, 16)):
            if len(sigs) == need:
                break
            try:
                sigs.append((int(s.address, 16), s.sign(job)))
            except SignerRefused as exc:
                log.warning("signer %s refused: %s", s.address, exc)
        if len(sigs) < need:
            raise QuorumError(f"only {len(sigs)} of the {need} signatures needed")
        return b"".join(sig for _, sig in sigs)

    # ------------------------------------------------------------------ attestations
    def attest_trade(self, account: str, instrument: int, size_delta: int, price: int, role: str) -> SignedAttestation:
        """Attest ``account``'s state after the proposed fill (``role`` maker or taker sets the fee)."""

        def request(state: ProtocolState) -> TradeRequest:
            return TradeRequest(account, instrument, size_delta, price, self._fee(state, size_delta, price, role))

        return self._attest("trade", request)

    def attest_withdraw(self, account: str, token: str, amount: int) -> SignedAttestation:
        """Attest ``account``'s state after withdrawing ``amount`` (token units) of ``token``."""
        return self._attest("withdraw", lambda _state: WithdrawRequest(account, token, amount))

    def attest_bid(self, bidder: str, account: str, fraction: int, worst_price: int) -> SignedAttestation:
        """Attest ``bidder``'s state after taking ``fraction`` (WAD) of ``account``'s portfolio at no more
        than ``worst_price`` (quote units), at the auction's current version."""

        def request(state: ProtocolState) -> BidRequest:
            version = fetch_auction(self.protocol, account, state.block).version
            return BidRequest(bidder, account, version, fraction, worst_price)

        return self._attest("bid", request)

    def _attest(self, kind: str, make: Callable[[ProtocolState], Request]) -> SignedAttestation:
        """Compute the post-action attestation on a fresh snapshot, check it would pass the
        contract's margin test, collect the quorum; count and time it. No engine-wide lock."""
        t0 = time.perf_counter()
        try:
            state = self.state()
            req = make(state)
            issued, expiry = self._window(state)
            auction = fetch_auction(self.protocol, req.account, state.block) if isinstance(req, BidRequest) else None
            att = checked_attestation(self.core, state, req, issued, expiry, auction)
        except PmsimError:
            self.metrics.attestation_errors.inc()
            raise
        signed = SignedAttestation(att, self._collect(SignJob(state.block, att, req), state), state.block)
        self.metrics.attestations.labels(kind).inc()
        self.metrics.attestation_seconds.observe(time.perf_counter() - t0)
        return signed

    @staticmethod
    def _fee(state: ProtocolState, size_delta: int, price: int, role: str) -> int:
        if role not in ("maker", "taker"):
            raise InputError("role", "must be 'maker' or 'taker'")
        if state.params is None:
            raise ChainError("risk parameters not indexed yet")
        rate = state.params.maker_fee if role == "maker" else state.params.taker_fee
        return rules.fee(size_delta, price, rate)  # rounded up, as the Exchange charges it

    # ------------------------------------------------------------------ rounds
    def run_round(self) -> RoundResult | None:
        """Index, compute, sign and post one status root; None if nothing could be posted."""
        t0 = time.perf_counter()
        with self._round_lock:
            state = self.refresh()
            if state.prices.round == 0:
                self.metrics.rounds_skipped.labels("no_prices").inc()
                log.info("no price round yet: nothing to post")
                return None
            if not rules.feed_fresh(state.feed_fresh_until, state.timestamp):
                self.metrics.rounds_skipped.labels("feed_stale").inc()
                log.warning("price feed stale (fresh until %d, chain time %d): no root", state.feed_fresh_until,
                            state.timestamp)  # fmt: skip
                return None
            self.fix_settlements(state)
            state = self.refresh()
            leaves = self.core.status_leaves(state)
            if not leaves:
                self.metrics.rounds_skipped.labels("no_accounts").inc()
                return None
            tree = StatusTree.build(leaves)
            number = int(self.protocol.call(self.protocol.oracle.functions.rootRound())) + 1
            issued, expiry = self._window(state)
            root = StatusRoot(number, tree.root, state.prices.round, issued, expiry, state.params_hash)
            try:
                sigs = self._collect(SignJob(state.block, root=root))
            except QuorumError as exc:
                self.metrics.rounds_skipped.labels("below_quorum").inc()
                log.error("round %d not posted: below quorum (%s)", number, exc)
                return None
            self._publish(number, tree, root, state.block)
            post = self.protocol.oracle.functions.postRoot(root.as_tuple(), sigs)
            receipt = self.protocol.send(post, self.relayer_key)
            result = RoundResult(number, root, tree, state.block, receipt["transactionHash"].hex())
            self.latest = result
        self.metrics.rounds.inc()
        self.metrics.last_round.set(number)
        self.metrics.accounts.set(len(leaves))
        self.metrics.liquidatable.set(len(start_candidates(state, tree, number)))  # what /liquidatable lists
        self.metrics.round_seconds.observe(time.perf_counter() - t0)
        log.info("posted round %d: %d accounts, root 0x%s, block %d", number, len(leaves), tree.root.hex(), state.block)
        return result

    def _publish(self, number: int, tree: StatusTree, root: StatusRoot, block: int) -> None:
        """Write the round's tree (leaves, layout) before posting, atomically."""
        doc = {"round": number, "block": block, "root": _root_json(root), "tree": tree.dump()}
        path = self.state_dir / "rounds" / f"{number}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(path)

    def _load_latest_tree(self) -> None:
        """On restart, serve proofs for the root that is on chain now (if this engine published it)."""
        try:
            onchain = int(self.protocol.call(self.protocol.oracle.functions.rootRound()))
        except (ChainError, OSError):
            return
        path = self.state_dir / "rounds" / f"{onchain}.json"
        if onchain and path.exists():
            doc = json.loads(path.read_text())
            r = doc["root"]
            root = StatusRoot(r["round"], bytes.fromhex(r["root"][2:]), r["priceRound"], r["issuedAt"], r["expiry"],
                              bytes.fromhex(r["paramsHash"][2:]))  # fmt: skip
            self.latest = RoundResult(onchain, root, StatusTree.load(doc["tree"]), doc["block"], "")

    def fix_settlements(self, state: ProtocolState) -> int:
        """Fix the settlement price of every expired expiry still held, once its round exists."""
        held = {iid for acct in state.accounts.values() for iid in acct.positions}
        todo = sorted({(ins.underlying, ins.expiry) for iid, ins in state.instruments.items()
                       if iid in held and ins.kind != Kind.PERP and 0 < ins.expiry <= state.timestamp
                       and (ins.underlying, ins.expiry) not in state.settlements})  # fmt: skip
        fixed = 0
        for underlying, expiry in todo:
            rnd = self._first_round_at_or_after(expiry, state.prices.round)
            if rnd is None:
                continue
            try:
                self.protocol.send(self.protocol.instruments.functions.fixSettlement(underlying, expiry, rnd),
                                   self.relayer_key)  # fmt: skip
                fixed += 1
            except ContractRevertError as exc:
                log.warning("could not fix settlement of %d/%d: %s", underlying, expiry, exc)
        return fixed

    def _first_round_at_or_after(self, expiry: int, latest: int) -> int | None:
        feed = self.protocol.feed.functions
        if latest == 0 or int(self.protocol.call(feed.roundTimestamp(latest))) < expiry:
            return None
        lo, hi = 1, latest
        while lo < hi:
            mid = (lo + hi) // 2
            if int(self.protocol.call(feed.roundTimestamp(mid))) >= expiry:
                hi = mid
            else:
                lo = mid + 1
        return lo

    # ------------------------------------------------------------------ queries
    def proof(self, account: str) -> dict[str, Any]:
        latest = self.latest
        if latest is None:
            raise InputError("round", "no round posted by this engine yet")
        try:
            leaf = latest.tree.leaf(account)
        except InputError:
            raise InputError("account", f"{account} is not in round {latest.round}") from None
        return {"round": latest.round, "root": _root_json(latest.root), "leaf": leaf.to_json(),
                "proof": ["0x" + p.hex() for p in latest.tree.proof(account)]}  # fmt: skip

    def liquidatable(self) -> list[dict[str, Any]]:
        """What ``Liquidator.start`` accepts now: every account of the latest round below MM once the
        deposits made since are credited, not in auction, at its leaf's risk nonce, with its leaf, proof
        and shortfall (see :func:`offchain.engine.liquidation.start_candidates`); none while the root
        itself would be refused (replaced, cleared, expired, prices moved)."""
        latest = self.latest
        if latest is None:
            return []
        state = self.state()
        if root_unusable(state, latest.root, self.protocol) is not None:
            return []
        return start_candidates(state, latest.tree, latest.round)

    def health(self) -> dict[str, Any]:
        state = self.follower.snapshot
        return {
            "status": "ok",
            "block": state.block,
            "chain_time": state.timestamp,
            "price_round": state.prices.round,
            "params_hash": "0x" + state.params_hash.hex(),
            "engine_config_hash": "0x" + self.core.config.canonical_hash().hex(),
            "signers": [s.address for s in self.signers],
            "quorum": self.quorum(state),
            "last_round": self.latest.round if self.latest else 0,
            "accounts": len(state.accounts),
        }

    def round_document(self) -> dict[str, Any]:
        latest = self.latest
        if latest is None:
            raise InputError("round", "no round posted by this engine yet")
        return {"round": latest.round, "block": latest.block, "root": _root_json(latest.root),
                "tree": latest.tree.dump()}  # fmt: skip


def checked_attestation(core: EngineCore, state: ProtocolState, req: Request, issued: int, expiry: int,
                        auction: AuctionView | None = None) -> Attestation:  # fmt: skip
    """The engine's attestation of ``req`` on ``state``, refused as the contract would refuse it.

    The one home of "attest, then check the contract's margin test" that the engine service, the
    simulator's twin and its chain backend all serve: a trade needs maintenance margin when it lowers
    the portfolio IM (the attestation's reduce flag, F-7) and initial margin otherwise; a bid (on
    ``auction``, required for a :class:`BidRequest`) and a withdrawal need initial margin.

    Raises
    ------
    InsufficientMarginError
        The account would fail the contract's margin test (field ``size``, ``fraction`` or ``amount``).
    """
    if isinstance(req, TradeRequest):
        att = core.attest_trade(state, req, issued, expiry)
        reducing = att.action_hash == trade_action(req.account, req.instrument, req.size_delta, req.price,
                                                   req.fee, True)  # the fill lowers the portfolio IM
        _require_margin(att, reducing, "size")
    elif isinstance(req, BidRequest):
        if auction is None:
            raise ValueError("a bid attestation needs the auction")
        att = core.attest_bid(state, req, auction, issued, expiry)
        _require_margin(att, False, "fraction")
    else:
        att = core.attest_withdraw(state, req, issued, expiry)
        _require_margin(att, False, "amount")
    return att


def _require_margin(att: Attestation, reducing: bool, field: str) -> None:
    """``RiskOracle._requireMargin`` at signing time (no deposit since: credit = checkpoint)."""
    required = att.maintenance_margin if reducing else att.initial_margin
    if not rules.covers(att.margin_equity, required, att.credit_checkpoint, att.credit_checkpoint):
        raise InsufficientMarginError(field, att.margin_equity, required,
                                      "maintenance margin" if reducing else "initial margin")  # fmt: skip


def _root_json(r: StatusRoot) -> dict[str, Any]:
    return {"round": r.round, "root": "0x" + r.root.hex(), "priceRound": r.price_round, "issuedAt": r.issued_at,
            "expiry": r.expiry, "paramsHash": "0x" + r.params_hash.hex()}  # fmt: skip


def build_engine(protocol: Protocol, signers: Sequence[RiskSigner], relayer_key: str, state_dir: Path, *,
                 config_path: Path | None = None, confirmations: int = 0, lifetime: int = 120,
                 max_staleness: float = 0.0) -> Engine:  # fmt: skip
    """An engine over ``protocol`` with the risk configuration at ``config_path`` (default config).

    Raises
    ------
    ConfigError
        The configuration's canonical hash is not the engine config hash registered on chain:
        attestations would bind parameters the engine does not compute with.
    """
    from offchain.risk.config import load_config

    config = load_config(config_path)
    indexer = Indexer(protocol, confirmations=confirmations, checkpoint=state_dir / "indexer.json")
    indexer.sync()
    onchain = indexer.state.engine_config_hash
    if onchain != config.canonical_hash():
        raise ConfigError("engine_config_hash", f"chain has 0x{onchain.hex()}, the configuration hashes to "
                          f"0x{config.canonical_hash().hex()}: deploy or govern with this configuration")  # fmt: skip
    return Engine(protocol, EngineCore(config, protocol.deployment), indexer, signers, relayer_key, state_dir,
                  lifetime=lifetime, max_staleness=max_staleness)  # fmt: skip
