"""The keeper's Prometheus metrics (one registry per keeper) and its structured JSON logs."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class KeeperMetrics:
    """Names and meanings are listed in the README's keeper section."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.candidates = Gauge("keeper_candidates", "accounts of the latest root below MM, verified", registry=r)
        self.queue_depth = Gauge("keeper_queue_depth", "candidates and auctions waiting for an action", registry=r)
        self.auctions_started = Counter("keeper_auctions_started", "auctions this keeper started (mined)", registry=r)
        self.auctions_refreshed = Counter("keeper_auctions_refreshed", "stale auctions this keeper refreshed (mined)",
                                          registry=r)
        self.bids_sent = Counter("keeper_bids_sent", "bid transactions sent (first sends)", registry=r)
        self.bids_mined = Counter("keeper_bids_mined", "bids mined and successful", registry=r)
        self.bids_reverted = Counter("keeper_bids_reverted", "bids mined but reverted", ["reason"], registry=r)
        self.bids_lost = Counter("keeper_bids_lost", "races lost to a competitor (version changed, auction gone)",
                                 registry=r)  # fmt: skip
        self.tx_replaced = Counter("keeper_tx_replaced", "transactions replaced at the same nonce", ["kind"],
                                   registry=r)  # fmt: skip
        self.tx_sent = Counter("keeper_tx_sent", "transactions sent (first sends)", ["kind"], registry=r)
        self.tx_at_cap = Counter("keeper_tx_at_fee_cap", "replacements held back by the fee cap", registry=r)
        self.profit = Counter("keeper_profit_quote", "expected profit of mined bids, quote units", registry=r)
        self.gas_spent = Counter("keeper_gas_spent_wei", "gas × effective price of mined transactions", registry=r)
        self.breach_to_bid = Histogram("keeper_breach_to_first_bid_seconds",
                                       "chain seconds from the breach (root issue time) to the first mined bid",
                                       buckets=(1, 2, 5, 10, 30, 60, 120, 300, 900, 3600, 14400),
                                       registry=r)  # fmt: skip
        self.last_block = Gauge("keeper_last_block", "last block seen", registry=r)
        self.rpc_errors = Counter("keeper_rpc_errors", "RPC and engine failures (retried next step)", registry=r)
        self.pending = Gauge("keeper_pending_tx", "transactions sent and not mined", registry=r)
        self.recompute_disagreeing = Gauge("keeper_recompute_disagreeing",
                                           "leaves of the latest round that differ from the keeper's own recompute",
                                           registry=r)  # fmt: skip
        self.recompute_disagreements = Counter("keeper_recompute_disagreements",
                                               "disagreeing leaves over all rounds cross-checked",
                                               registry=r)  # fmt: skip
        self.unproven_breaches = Gauge("keeper_unproven_breaches",
                                       "accounts below MM by the keeper's own recompute at the head, not breached "
                                       "in the latest root (no proof to start on)", registry=r)  # fmt: skip
        self.recompute_seconds = Histogram("keeper_recompute_seconds", "a round's cross-check (index + compute)",
                                           buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 30), registry=r)  # fmt: skip
        self.hedges_sent = Counter("keeper_hedges_sent", "hedge trades sent (first sends)", registry=r)
        self.hedges_mined = Counter("keeper_hedges_mined", "hedge trades mined successfully", registry=r)
        self.hedges_refused = Counter("keeper_hedges_refused", "hedges not sent", ["reason"], registry=r)
        self.delta = Gauge("keeper_delta", "the keeper's delta per underlying after hedging, units", ["underlying"],
                           registry=r)  # fmt: skip
        self.detect_seconds = Histogram("keeper_detect_seconds", "root seen -> verified, prioritised candidates",
                                        buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2), registry=r)  # fmt: skip


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra={"fields": {...}}``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_json_logging(level: int = logging.INFO) -> None:
    """Send the ``offchain`` logger hierarchy to stderr as JSON lines."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("offchain")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
