"""The price service: posts signed rounds from a source to the PriceFeed with its own quorum.

Protocol time is the chain's: each round's timestamp is the latest block's timestamp (on a devnet
the service can advance the chain's clock to the source's schedule with ``warp=True``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from offchain.chain.client import Protocol
from offchain.chain.eip712 import PriceRound, Signer, sign_price_round
from offchain.chain.units import price_to_tick
from offchain.errors import ChainError, InputError
from offchain.feeds.sources import PriceStep

log = logging.getLogger("pmsim.prices")
POST_GAS = 200_000


@dataclass
class PriceService:
    """Signs and posts price rounds. ``signers`` hold this service's own keys."""

    protocol: Protocol
    signers: Sequence[Signer]
    relayer_key: str

    def post(self, prices: Sequence[float], timestamp: int | None = None) -> int:
        """Post one round at ``timestamp`` (default: the latest block's); returns its round id.

        A round moving any price beyond the feed's bound (from the previous round, or from the price
        a window earlier) is signed by every signer this service holds; otherwise by the quorum.
        """
        p = self.protocol
        n = len(p.deployment.underlyings)
        if len(prices) != n:
            raise InputError("prices", f"expected {n} prices, got {len(prices)}")
        if any(not x > 0 for x in prices):
            raise InputError("prices", "every price must be positive")
        ticks = tuple(price_to_tick(x) for x in prices)
        latest_round, latest_ts = p.call(p.feed.functions.latestRound())
        # Chain time of the block this post will land in (the node's pending block; an idle or
        # reloaded devnet's latest block can be far behind it), never before the last round.
        ts = timestamp if timestamp is not None else max(self._pending_time(), int(latest_ts) + 1)
        rnd = int(latest_round) + 1
        signers = self._signers_for(ticks, ts)
        sigs = sign_price_round(p.domain("PriceFeed"), PriceRound(rnd, ts, ticks), signers)
        # A fixed gas bound instead of an estimate: a node may estimate against the latest block's
        # time, at which a round stamped for the next block is not yet valid.
        p.send(p.feed.functions.post(ts, list(ticks), sigs), self.relayer_key, gas=POST_GAS + 12_000 * len(signers))
        log.info("posted price round %d at %d: %s", rnd, ts, ", ".join(f"{x:,.2f}" for x in prices))
        return rnd

    def _pending_time(self) -> int:
        w3 = self.protocol.w3
        try:
            return int(w3.eth.get_block("pending")["timestamp"])
        except (ValueError, KeyError):  # a node without a pending block
            return self.protocol.now()

    def _signers_for(self, ticks: tuple[int, ...], timestamp: int) -> list[Signer]:
        """The quorum, or every key this service holds when the feed says the round needs every signer.

        The rule is the contract's own (``PriceFeed.signersRequired``: a move beyond ``maxMove`` from
        the previous round or from the price a window earlier), asked rather than mirrored.
        """
        p = self.protocol
        quorum = int(p.call(p.feed.functions.quorum()))
        if len(self.signers) < quorum:
            raise ChainError(f"price service holds {len(self.signers)} keys, below the feed quorum {quorum}")
        required = int(p.call(p.feed.functions.signersRequired(timestamp, list(ticks))))
        return list(self.signers) if required > quorum else list(self.signers[:quorum])

    def run(self, steps: Iterable[PriceStep], *, interval: float = 0.0, warp: bool = False,
            limit: int | None = None) -> int:  # fmt: skip
        """Post a round per step. ``warp`` moves the devnet clock to the step's offset (Anvil only);
        otherwise ``interval`` seconds of real time pass between posts. Returns the rounds posted."""
        start = self.protocol.now() + (1 if warp else 0)
        posted = 0
        for step in steps:
            if limit is not None and posted >= limit:
                break
            if warp:
                target = start + step.offset
                if target > self.protocol.now():
                    self.protocol.w3.provider.make_request("evm_setNextBlockTimestamp", [target])  # type: ignore[arg-type]
                    self.protocol.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
            self.post(step.prices)
            posted += 1
            if interval and not warp:
                time.sleep(interval)
        return posted
