"""What a bid did on chain: :class:`BidOutcome` decodes a ``Liquidator.bid`` receipt (``Bid``,
``AuctionEnded``, ``LossUnrecovered``) for the keeper's reports, the demo and ``pmsim liquidate bid``;
:func:`send_bid` sends one bid with its attestation (the CLI's manual bid).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from web3.logs import DISCARD

from offchain.chain.client import Protocol

END_REASONS = {0: "back above the buffer margin", 1: "emptied", 2: "healthy on a newer result"}
BID_GAS = 3_000_000  # a fixed bound: an estimate would run at the latest block's time, not the bid's


@dataclass(frozen=True)
class BidOutcome:
    """One bid as the Liquidator recorded it (quote units, WAD)."""

    account: str
    bidder: str
    fraction: int
    price: int
    discount: int
    fee: int
    fund_draw: int
    socialised: int
    unrecovered: int
    ended: str | None  # why the auction ended with this bid, None if it goes on
    block: int
    gas: int

    @classmethod
    def from_receipt(cls, protocol: Protocol, receipt: Any) -> BidOutcome:
        liq = protocol.liquidator
        [bid] = [dict(e["args"]) for e in liq.events.Bid().process_receipt(receipt, errors=DISCARD)]
        ended = [dict(e["args"]) for e in liq.events.AuctionEnded().process_receipt(receipt, errors=DISCARD)]
        lost = [dict(e["args"]) for e in liq.events.LossUnrecovered().process_receipt(receipt, errors=DISCARD)]
        return cls(
            account=str(bid["account"]), bidder=str(bid["bidder"]), fraction=int(bid["fractionWad"]),
            price=int(bid["price"]), discount=int(bid["discountWad"]), fee=int(bid["fee"]),
            fund_draw=int(bid["fundDraw"]), socialised=int(bid["socialised"]),
            unrecovered=sum(int(e["amount"]) for e in lost),
            ended=END_REASONS.get(int(ended[0]["reason"]), "ended") if ended else None,
            block=int(receipt["blockNumber"]), gas=int(receipt["gasUsed"]),
        )  # fmt: skip

    @property
    def bad_debt(self) -> int:
        """What the insolvent account's portfolio cost beyond its value: fund draw + socialised + lost."""
        return self.fund_draw + self.socialised + self.unrecovered


def send_bid(protocol: Protocol, key: str, account: str, fraction: int, worst_price: int, version: int,
             proof: tuple[Any, bytes]) -> BidOutcome:  # fmt: skip
    """Send ``Liquidator.bid`` with the bidder's attestation; the decoded outcome."""
    fn = protocol.liquidator.functions.bid(account, fraction, worst_price, version, proof)
    return BidOutcome.from_receipt(protocol, protocol.send(fn, key, gas=BID_GAS))
