"""A plain built-in liquidation bidder (until the keeper bot exists), and what a bid did on chain.

:class:`PlainBidder` uses the engine exactly as any client would: it starts an auction for every
account the engine lists (``Engine.liquidatable``, what ``GET /liquidatable`` serves), then takes the
largest fraction the auction allows at once (``rules.max_fraction``), paying at most the price quoted
for the block the bid lands in (``rules.bid_price``), with the bidder's own attestation from
``Engine.attest_bid`` (``POST /attest/bid``); if that attestation would not cover its initial margin
it halves the fraction. It does not hedge what it takes.

:class:`BidOutcome` decodes a bid's receipt (``Bid``, ``AuctionEnded``, ``LossUnrecovered``): the
CLI prints it and the demo reports it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eth_account import Account
from web3.logs import DISCARD

from offchain import rules
from offchain.chain.client import Protocol
from offchain.engine.liquidation import auction_params, fetch_auction
from offchain.engine.service import Engine
from offchain.errors import ContractRevertError, InputError
from offchain.protocol import WAD

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


@dataclass
class PlainBidder:
    """Starts and bids on every auction the engine points at (see the module notes)."""

    engine: Engine
    key: str
    max_bids: int = 4  # per auction per call of :meth:`bid_all`
    lead: int = 1  # seconds from the indexed block to the bid's block (a devnet mining a block a second)
    on_start: Callable[[str, Any], None] | None = None
    started: list[dict[str, Any]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return str(Account.from_key(self.key).address)

    @property
    def protocol(self) -> Protocol:
        return self.engine.protocol

    def start_all(self) -> list[tuple[str, Any]]:
        """``Liquidator.start`` for every account ``/liquidatable`` lists; (account, receipt) each."""
        out = []
        for c in self.engine.liquidatable():
            leaf = tuple(c["leaf"][:1]) + tuple(int(x) for x in c["leaf"][1:])
            proof = [bytes.fromhex(p[2:]) for p in c["proof"]]
            fn = self.protocol.liquidator.functions.start(c["account"], leaf, proof)
            receipt = self.protocol.send(fn, self.key)
            out.append((c["account"], receipt))
            self.started.append(c)
        return out

    def bid_all(self, accounts: list[str]) -> list[BidOutcome]:
        """Bid on each account's auction until it ends or ``max_bids`` bids were made."""
        outcomes = []
        for account in accounts:
            for _ in range(self.max_bids):
                outcome = self.bid_once(account)
                if outcome is None:
                    break
                outcomes.append(outcome)
                if outcome.ended:
                    break
        return outcomes

    def bid_once(self, account: str) -> BidOutcome | None:
        """One bid of the largest fraction the auction and the bidder's margin allow; None if none."""
        state = self.engine.refresh()
        auction = fetch_auction(self.protocol, account, state.block)
        if not auction.active or state.liquidation is None:
            return None
        p = auction_params(state.liquidation)
        acct = state.accounts.get(account)
        at = state.timestamp + self.lead  # priced when it lands: f_max rises and the price falls with time
        s = auction.credited(acct.deposit_credit if acct else auction.credit, at)
        fraction = rules.max_fraction(s, at, p)
        while fraction > 0:
            price, _ = rules.bid_price(s, fraction, at, p)
            try:
                signed = self.engine.attest_bid(self.address, account, fraction, price)
            except InputError as exc:
                if exc.field != "fraction" or fraction < WAD // 10**6:
                    raise
                fraction //= 2  # the bidder's own margin does not cover this much: take less
                continue
            try:
                return send_bid(self.protocol, self.key, account, fraction, price, auction.version, signed.proof())
            except ContractRevertError as exc:
                if exc.error_name in ("Liquidator_NoAuction", "Liquidator_VersionChanged"):
                    return None  # another bidder was faster
                raise
        return None
