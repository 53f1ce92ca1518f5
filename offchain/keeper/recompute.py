"""Independent margin recompute: the keeper rebuilds every account from chain events with the
project's indexer and recomputes its status result with the project's risk engine, then
cross-checks the published leaves (optional, ``[recompute] enabled = true`` or ``--recompute``).

Two checks, each with its own indexer (an indexer only moves forward):

* **the round**, at the block the engine computed it at (``"block"`` of the round document): every
  published leaf is compared field by field with the keeper's own result. The engine's results are
  bit-identical for the same block, price round and parameters, so any difference beyond the
  tolerance means a wrong engine, a different risk configuration, or a forged document that the
  signers nevertheless signed; it is logged (``recompute disagrees``) and counted.
* **the head**, at the latest block: accounts that the keeper's own figures put below maintenance
  margin now but that the latest root does not show as breached (prices moved since, or the root
  hides them). The keeper cannot start an auction on them (``Liquidator.start`` needs a leaf with
  its proof in the posted root); it reports them (``unproven breach`` log, ``keeper_unproven_breaches``).

The keeper never signs anything from these figures; they only inform the operator.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from offchain import rules
from offchain.chain.client import Protocol
from offchain.chain.indexer import Indexer, ProtocolState
from offchain.chain.merkle import StatusLeaf
from offchain.engine.core import EngineCore
from offchain.keeper.config import RecomputeConfig
from offchain.keeper.metrics import KeeperMetrics
from offchain.risk.config import load_config

log = logging.getLogger(__name__)
FIELDS = ("margin_equity", "mtm_equity", "initial_margin", "maintenance_margin")
EXACT = ("risk_nonce", "credit_checkpoint")


@dataclass(frozen=True)
class Disagreement:
    """One published leaf whose figures differ from the keeper's own (quote units)."""

    account: str
    field: str
    published: int
    recomputed: int


@dataclass(frozen=True)
class UnprovenBreach:
    """An account below MM by the keeper's own figures that the latest root does not show breached."""

    account: str
    block: int
    margin_equity: int
    maintenance_margin: int
    in_root: bool  # the root has a leaf for it (above MM there), or not at all

    @property
    def shortfall(self) -> int:
        return self.maintenance_margin - self.margin_equity


@dataclass
class RecomputeReport:
    """What the last checks found."""

    round: int = 0
    round_block: int | None = None
    checked: int = 0
    disagreements: list[Disagreement] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # accounts with activity the round has no leaf for
    unproven: list[UnprovenBreach] = field(default_factory=list)
    head_block: int = -1
    skipped: str = ""  # why the round check did not run (no block in the document, indexer ahead)


class Recomputer:
    """Rebuilds state from events and recomputes margins (see the module notes)."""

    def __init__(self, protocol: Protocol, cfg: RecomputeConfig, metrics: KeeperMetrics) -> None:
        self.p, self.cfg, self.metrics = protocol, cfg, metrics
        self.core = EngineCore(load_config(cfg.risk_config), protocol.deployment)
        self.round_ix = Indexer(protocol)
        self.head_ix = Indexer(protocol) if cfg.at_head else None
        self.report = RecomputeReport()
        self._warned_hash = False

    # ------------------------------------------------------------------ the round
    def check_round(self, number: int, block: int | None, leaves: Sequence[StatusLeaf]) -> RecomputeReport:
        """Compare the round's published ``leaves`` with the keeper's own results at ``block``."""
        t0 = time.perf_counter()
        rep = RecomputeReport(round=number, round_block=block, unproven=self.report.unproven,
                              head_block=self.report.head_block)  # fmt: skip
        if block is None:
            rep.skipped = "the round document names no block"
        elif self.round_ix.state.block > block:
            rep.skipped = f"indexed past the round's block ({self.round_ix.state.block} > {block})"
        else:
            reached = self.round_ix.sync(to_block=block)
            if reached != block:
                rep.skipped = f"block {block} not reached (indexed to {reached})"
        if rep.skipped:
            log.warning("recompute: round not cross-checked", extra={"fields": {"round": number,
                                                                                "why": rep.skipped}})  # fmt: skip
            self.report = rep
            return rep
        state = self.round_ix.state
        self._check_hash(state)
        own = {leaf.account.lower(): leaf for leaf in self.core.status_leaves(state)}
        published = {leaf.account.lower(): leaf for leaf in leaves}
        for key, pub in published.items():
            mine = own.get(key)
            if mine is None:
                rep.disagreements.append(Disagreement(pub.account, "account", 1, 0))
                continue
            rep.disagreements += self._compare(pub, mine)
        rep.missing = sorted(own[k].account for k in own.keys() - published.keys())
        rep.checked = len(published)
        self.report = rep
        accounts = {d.account for d in rep.disagreements}
        self.metrics.recompute_disagreeing.set(len(accounts))
        self.metrics.recompute_disagreements.inc(len(accounts))
        self.metrics.recompute_seconds.observe(time.perf_counter() - t0)
        for d in rep.disagreements:
            log.warning("recompute disagrees", extra={"fields": {
                "round": number, "block": block, "account": d.account, "field": d.field,
                "published": d.published, "recomputed": d.recomputed, "diff": d.published - d.recomputed}})
        if rep.missing:
            log.warning("recompute: accounts missing from the round", extra={"fields": {
                "round": number, "accounts": rep.missing}})
        log.info("recompute: round cross-checked", extra={"fields": {
            "round": number, "block": block, "leaves": rep.checked, "disagreeing": len(accounts),
            "missing": len(rep.missing)}})
        return rep

    def _compare(self, pub: StatusLeaf, mine: StatusLeaf) -> list[Disagreement]:
        out = [Disagreement(pub.account, f, getattr(pub, f), getattr(mine, f))
               for f in EXACT if getattr(pub, f) != getattr(mine, f)]  # fmt: skip
        abs_tol = self.cfg.tolerance_usd * 10**6
        for f in FIELDS:
            a, b = int(getattr(pub, f)), int(getattr(mine, f))
            scale = max(abs(a), abs(b), abs(pub.maintenance_margin), abs(mine.maintenance_margin))
            if abs(a - b) > max(abs_tol, self.cfg.tolerance_ratio * scale):
                out.append(Disagreement(pub.account, f, a, b))
        return out

    def _check_hash(self, state: ProtocolState) -> None:
        mine = self.core.config.canonical_hash()
        if state.engine_config_hash != mine and not self._warned_hash:
            self._warned_hash = True
            log.warning("recompute: risk configuration differs from the deployment's", extra={"fields": {
                "onchain": "0x" + state.engine_config_hash.hex(), "mine": "0x" + mine.hex()}})

    # ------------------------------------------------------------------ the head
    def check_head(self, leaves: Sequence[StatusLeaf]) -> list[UnprovenBreach]:
        """Accounts below MM at the head by the keeper's own figures that ``leaves`` (the latest root)
        do not show breached; empty when ``at_head`` is off or no new block was mined."""
        if self.head_ix is None:
            return []
        before = self.head_ix.state.block
        block = self.head_ix.sync()
        if block == before and self.report.head_block == block:
            return self.report.unproven
        state = self.head_ix.state
        if state.prices.round == 0 or not state.accounts:
            return []
        self._check_hash(state)
        published = {leaf.account.lower(): leaf for leaf in leaves}
        out: list[UnprovenBreach] = []
        for mine in self.core.status_leaves(state):
            if not rules.liquidatable(mine.margin_equity, mine.maintenance_margin, mine.credit_checkpoint,
                                      mine.credit_checkpoint) or state.accounts[mine.account].frozen:  # fmt: skip
                continue
            pub = published.get(mine.account.lower())
            if pub is not None and rules.liquidatable(pub.margin_equity, pub.maintenance_margin,
                                                      pub.credit_checkpoint, pub.credit_checkpoint):  # fmt: skip
                continue  # the root shows it: the keeper can act on it
            out.append(UnprovenBreach(mine.account, block, mine.margin_equity, mine.maintenance_margin,
                                      pub is not None))
        known = {u.account for u in self.report.unproven}
        for u in out:
            if u.account not in known:
                log.warning("unproven breach: below MM by the keeper's own figures, not in the root", extra={
                    "fields": {"account": u.account, "block": block, "margin_equity": u.margin_equity,
                               "mm": u.maintenance_margin, "shortfall": u.shortfall, "leaf_in_root": u.in_root}})
        self.report.unproven, self.report.head_block = out, block
        self.metrics.unproven_breaches.set(len(out))
        return out
