"""The engine's liquidation side: what ``Liquidator.start`` needs, and a bidder's state after a bid.

Two jobs, both exact integer work over the indexed chain state with the rules of
:mod:`offchain.rules` (nothing here re-states a contract rule):

* :func:`start_candidates` — the accounts of the latest posted round that ``Liquidator.start`` would
  accept now, each with its status leaf, Merkle proof and shortfall (credit-aware: a deposit made
  after the root lifts the leaf's equity exactly as ``RiskOracle.verifyStatus`` does).
* :func:`bidder_after` — the bidder's portfolio after taking ``fraction`` of an auctioned account's
  whole portfolio (every position with its cost basis, every collateral, the cash: the shares
  ``Vault.transferPortfolio`` moves) and paying at most the worst price plus the largest fee it
  could owe. The engine signs the bidder's margin on that state (``ActionHash.bid``).

The auction snapshot is read from the Liquidator at the indexed block (:func:`fetch_auction`): a pure
function of the block, so every signer recomputes the same figures.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from offchain import rules
from offchain.chain.client import Protocol
from offchain.chain.indexer import AccountState as ChainAccount
from offchain.chain.indexer import PositionState, ProtocolState
from offchain.chain.merkle import StatusLeaf, StatusRoot, StatusTree
from offchain.chain.params import LiquidationParams
from offchain.chain.units import Kind
from offchain.errors import ChainError, InputError
from offchain.protocol import QUOTE_DECIMALS, WAD


@dataclass(frozen=True)
class BidRequest:
    """A bid as the bidder will send it: ``fraction`` (WAD) of ``account``'s portfolio at auction
    ``version``, paying at most ``worst_price`` quote units (negative: paid at least ``-worst_price``)."""

    bidder: str
    account: str
    version: int
    fraction: int
    worst_price: int


@dataclass(frozen=True)
class AuctionView:
    """``ILiquidator.Auction`` as ``auctionOf`` returns it (quote units, WAD, seconds)."""

    active: bool
    insolvent: bool
    emergency: bool
    version: int
    started_at: int
    nonce: int
    mtm_equity: int
    equity: int
    maintenance_margin: int
    initial_margin: int
    buffer_margin: int
    credit: int

    @classmethod
    def from_tuple(cls, values: Any) -> AuctionView:
        v = list(values)
        return cls(bool(v[0]), bool(v[1]), bool(v[2]), *(int(x) for x in v[3:]))

    def rules_state(self) -> rules.AuctionState:
        """The snapshot the pricing rules read."""
        return rules.AuctionState(self.started_at, self.insolvent, self.mtm_equity, self.equity,
                                  self.maintenance_margin, self.initial_margin, self.buffer_margin)  # fmt: skip

    def credited(self, credit: int, now: int) -> rules.AuctionState:
        """The snapshot a bid at ``now`` prices on once deposits made since it are credited (``credit``
        is the account's deposit credit now): ``rules.credited_auction`` (``Liquidator._credited``)."""
        return rules.credited_auction(self.rules_state(), credit - self.credit, now)


def auction_params(lp: LiquidationParams) -> rules.AuctionParams:
    """The auction rules' parameters from the indexed ``LiquidationParams``."""
    return rules.AuctionParams(
        lp.start_discount, lp.cutoff_discount, lp.fast_length, lp.slow_length, lp.insolvent_length,
        lp.buffer_ratio, lp.liquidation_fee, lp.small_portfolio,
    )  # fmt: skip


def fetch_auction(protocol: Protocol, account: str, block: int) -> AuctionView:
    """The Liquidator's auction of ``account`` as of ``block`` (an inactive one if none)."""
    fn = protocol.liquidator.functions.auctionOf(account)
    return AuctionView.from_tuple(protocol.call_at(fn, account, block))


# ---------------------------------------------------------------------- /liquidatable
def leaf_shortfall(leaf: StatusLeaf, credit: int) -> int:
    """``MM − credited margin equity`` (quote units): positive exactly when ``rules.liquidatable``."""
    return leaf.maintenance_margin - rules.credited_equity(leaf.margin_equity, leaf.credit_checkpoint, credit)


def root_unusable(state: ProtocolState, root: StatusRoot, protocol: Protocol | None = None) -> str | None:
    """Why ``RiskOracle.verifyStatus`` would refuse every leaf of ``root`` now, or None.

    The root must be the one on chain (same round, not cleared by a parameter change or a socialised
    loss), unexpired after the indexed block (a start lands in a later one), and no underlying may have moved beyond the
    tolerance since its price round (asked of the feed, one call, only when a newer round exists).
    """
    onchain = state.root
    if onchain is None or onchain.round != root.round or onchain.root != root.root:
        return "the latest root on chain is not this engine's latest round"
    if onchain.cleared:
        return "the root was cleared (parameters changed or a loss was socialised): wait for the next round"
    if root.expiry <= state.timestamp:  # a start lands in a later block
        return f"the root expires at {root.expiry} (chain time {state.timestamp}): wait for the next round"
    if protocol is not None and state.params is not None and state.prices.round != root.price_round:
        move = int(protocol.call_at(protocol.feed.functions.moveSince(root.price_round), protocol.feed.address,
                                    state.block))  # fmt: skip
        if move > state.params.price_tolerance:
            return f"prices moved {move / WAD:.2%} since the root's price round: wait for the next round"
    return None


def start_candidates(state: ProtocolState, tree: StatusTree, round_number: int) -> list[dict[str, Any]]:
    """Every leaf of ``tree`` that ``Liquidator.start`` accepts against the indexed state, with what the
    call needs: ``leaf`` (the tuple's fields, decimal strings), ``proof``, and the figures.

    An account is listed when its leaf is at its current risk nonce, its credited margin equity is
    below MM (``rules.liquidatable``, with the deposit credit indexed now) and it is not in auction.
    """
    out = []
    for leaf in tree.leaves:
        acct = state.accounts.get(leaf.account)
        credit = acct.deposit_credit if acct is not None else leaf.credit_checkpoint
        if acct is not None and (acct.frozen or acct.risk_nonce != leaf.risk_nonce):
            continue
        if not rules.liquidatable(leaf.margin_equity, leaf.maintenance_margin, leaf.credit_checkpoint, credit):
            continue
        out.append({
            "account": leaf.account, "round": round_number, "leaf": leaf.to_json(),
            "proof": ["0x" + p.hex() for p in tree.proof(leaf.account)],
            "credit": str(credit),
            "credited_equity": str(rules.credited_equity(leaf.margin_equity, leaf.credit_checkpoint, credit)),
            "maintenance_margin": str(leaf.maintenance_margin),
            "mtm_equity": str(rules.credited_equity(leaf.mtm_equity, leaf.credit_checkpoint, credit)),
            "shortfall": str(leaf_shortfall(leaf, credit)),
        })  # fmt: skip
    return sorted(out, key=lambda e: -int(e["shortfall"]))


# ---------------------------------------------------------------------- /attest/bid
@dataclass(frozen=True)
class BidQuote:
    """What the engine computed for a bid: the pricing now and the bidder's state after it."""

    price: int  # quote units at the attestation's expiry, the lowest (negative: paid to the bidder)
    fee: int
    max_fraction: int
    discount: int
    bidder: ChainAccount  # the bidder's portfolio after the bid, its cash net of the worst case


def check_bid(state: ProtocolState, req: BidRequest, auction: AuctionView,
              until: int) -> tuple[rules.AuctionState, int, int, int]:  # fmt: skip
    """Refuse what ``Liquidator.bid`` would refuse at every time up to ``until`` (the attestation's
    expiry); returns the credited snapshot, and f_max, the price and the fee at ``until``.

    While an auction runs, f_max never falls and the price never rises with time (the discount falls;
    an insolvent payment grows), so a bid refused at ``until`` is refused throughout the attestation's
    life, and one accepted then may be sent at once or held until the price comes down to it.

    Raises
    ------
    InputError
        ``bidder`` is the account, ``account`` is not in auction, ``fraction`` is 0 or above f_max,
        ``worst_price`` is below the price (``field`` names which).
    ChainError
        The auction moved on (version) or its snapshot is stale (the account's nonce changed).
    """
    if req.bidder == req.account:
        raise InputError("bidder", "an account cannot bid on its own liquidation")
    if not auction.active:
        raise InputError("account", f"{req.account} is not in auction (start it first: pmsim liquidate start)")
    if auction.version != req.version:
        raise ChainError(f"the auction is at version {auction.version}, not {req.version}: bid again")
    acct = state.accounts.get(req.account) or ChainAccount()
    if acct.risk_nonce != auction.nonce:
        raise ChainError(f"the auction's snapshot is stale (nonce {auction.nonce}, account at {acct.risk_nonce}): "
                         "refresh it with a newer status leaf (Liquidator.refresh)")  # fmt: skip
    if state.liquidation is None:
        raise ChainError("liquidation parameters not indexed yet")
    p = auction_params(state.liquidation)
    s = auction.credited(acct.deposit_credit, state.timestamp)
    fmax = rules.max_fraction(s, until, p)
    if not 0 < req.fraction <= fmax:
        raise InputError(
            "fraction",
            f"must be in (0, {Decimal(fmax).scaleb(-18):f}] (the largest share that restores the buffer margin)"
            if fmax
            else "the account is back above its buffer margin: nothing to take",
        )
    price, fee = rules.bid_price(s, req.fraction, until, p)
    if price > req.worst_price:
        raise InputError("worst_price", f"the auction's price for this fraction is at least {_usd(price)} USD until "
                         f"{until}, above the worst price {_usd(req.worst_price)} USD")  # fmt: skip
    return s, fmax, price, fee


def bidder_after(state: ProtocolState, req: BidRequest, auction: AuctionView, fund: str, max_positions: int,
                 until: int) -> BidQuote:  # fmt: skip
    """The bidder's portfolio after the bid, in the worst case the attestation must cover; the bid is
    checked first (:func:`check_bid` up to ``until``).

    Notes
    -----
    With :math:`f` the fraction, the bidder receives, from the auctioned account after its funding is
    settled and its socialised loss realised: ``rules.moved_size`` / ``rules.moved_cost`` of every
    position, ``rules.moved_collateral`` of every collateral, ``rules.moved_cash`` of the cash. It pays

    * solvent: the worst price :math:`P_w` plus the largest fee it could owe,
      :math:`\\lceil r \\lfloor f V \\rfloor \\rceil` (the fee at a zero discount, ``rules.bid_price`` at
      the end of the slow phase); the price paid never exceeds :math:`P_w` and the fee never exceeds
      this bound, so the attested equity is a lower bound of the real one;
    * insolvent: it is paid at least :math:`-P_w`; only what the insurance fund holds now
      (``rules.fund_draw``) is counted, less two units when the rest would be socialised: the bidder's
      own positive cash bears a share of the socialised loss, never more than it receives plus the two
      round-ups (index step and charge).

    Its own perpetual funding on the instruments moved is settled as the Vault settles it.
    """
    s, fmax, price, fee = check_bid(state, req, auction, until)
    assert state.liquidation is not None  # checked by check_bid
    p = auction_params(state.liquidation)
    src = state.accounts.get(req.account) or ChainAccount()
    dst = (state.accounts.get(req.bidder) or ChainAccount()).copy()
    f = req.fraction
    src_cash = src.effective_cash(state.loss_index)
    dst.cash, dst.loss_snapshot = dst.effective_cash(state.loss_index), state.loss_index
    for iid in sorted(src.positions):
        pos = src.positions[iid]
        ins = state.instruments[iid]
        mine = dst.positions.get(iid)
        if ins.kind == Kind.PERP:
            src_cash -= rules.funding_payment(pos.size, ins.cumulative_funding, pos.funding_snapshot)
            if mine is not None:
                dst.cash -= rules.funding_payment(mine.size, ins.cumulative_funding, mine.funding_snapshot)
                mine = replace(mine, funding_snapshot=ins.cumulative_funding)
        moved = rules.moved_size(pos.size, f)
        if moved == 0:
            continue
        cost = rules.moved_cost(pos.cost_basis, pos.size, moved, f)
        size = (mine.size if mine else 0) + moved
        basis = (mine.cost_basis if mine else 0) + cost
        if size == 0:  # flat: the remaining cost basis is realised into cash
            dst.cash -= basis
            dst.positions.pop(iid, None)
        else:
            dst.positions[iid] = PositionState(size, basis, ins.cumulative_funding if ins.kind == Kind.PERP else 0)
    if len(dst.positions) > max_positions:
        raise InputError("bidder", f"would hold {len(dst.positions)} positions, above the cap of {max_positions}")
    for token, balance in src.collateral.items():
        taken = rules.moved_collateral(balance, f)
        if taken:
            dst.collateral[token] = dst.collateral.get(token, 0) + taken
    dst.cash += rules.moved_cash(src_cash, f)
    if not s.insolvent:
        _, largest_fee = rules.bid_price(s, f, s.started_at + p.fast_length + p.slow_length, p)
        dst.cash -= req.worst_price + largest_fee
    else:
        fund_cash = (state.accounts.get(fund) or ChainAccount()).effective_cash(state.loss_index)
        draw, rest = rules.fund_draw(fund_cash, max(-req.worst_price, 0))
        dst.cash += draw - (2 if rest else 0)
    discount = 0 if s.insolvent else rules.discount(s, until, p)
    return BidQuote(price, fee, fmax, discount, dst)


def _usd(units: int) -> str:
    return f"{Decimal(units).scaleb(-QUOTE_DECIMALS):,f}"
