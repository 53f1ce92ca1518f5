"""The contracts' effects on an indexer :class:`~offchain.chain.indexer.ProtocolState`, in Python.

The twin backend (:mod:`offchain.sim.twin`) applies every simulator intent here instead of sending a
transaction. Each method reproduces one contract function (``Vault.deposit``, ``Vault.withdraw``,
``Exchange.trade`` → ``Vault.applyTrade`` → ``Instruments.recordTrade``, ``Instruments.list``,
``PriceFeed.post`` → ``RiskOracle.onPriceRound``, ``Instruments.fixSettlement``,
``Settler.settleExpired``, ``RiskOracle.postRoot``, ``Liquidator.start`` / ``bid``) with the formulas
of :mod:`offchain.rules`, and records its effect the way the indexer would see it: by emitting the
contract's events, in the contract's order, through the indexer's own handlers
(:data:`offchain.chain.indexer.HANDLERS`). The state after an operation is therefore, field for
field, the state the indexer rebuilds from the chain after the same transaction.

A refusal raises :class:`~offchain.errors.ContractRevertError` named as the contract's custom error
(``Vault_InsufficientCash``, ``Liquidator_BadFraction``, ...) and, as a revert does, leaves the state
untouched (the accounts and globals an operation may touch are saved first and restored).

What the ledger keeps beside the state (contract storage the indexer does not rebuild): the price
rounds (timestamps and prices, for ``moveSince`` and settlement fixing), the Liquidator's auctions,
the Vault's ``pendingLoss``, the RiskParams hash the loss index is mixed into, the posted status
root's leaves, expiry, price round and posting time (``emergency()``), and the feed's heartbeat.

Not mirrored: signatures (the twin's attestations are correct by construction; the checks that do
not depend on the signatures themselves are made: nonce, parameter hash, window, price round, margin),
order nonces and deadlines, operators, the emergency (no-attestation) paths, pausing, governance.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from offchain import rules
from offchain.chain.actions import bid_action, trade_action, withdraw_action
from offchain.chain.client import TokenInfo
from offchain.chain.eip712 import Attestation
from offchain.chain.indexer import HANDLERS, AccountState, Event, ProtocolState
from offchain.chain.merkle import StatusLeaf
from offchain.chain.params import bound_params_hash
from offchain.chain.units import Kind
from offchain.engine.liquidation import AuctionView, auction_params
from offchain.errors import ContractRevertError
from offchain.protocol import LOT, MAX_PRICE, MAX_SIZE, TICK

__all__ = ["BidResult", "Ledger", "revert", "with_timestamp"]

MAX_BATCH = 200  # Settler.MAX_BATCH
NO_AUCTION = AuctionView(False, False, False, 0, 0, 0, 0, 0, 0, 0, 0, 0)


def revert(name: str, *args: object) -> ContractRevertError:
    """The typed refusal of a contract custom error (what the chain backend decodes from a revert)."""
    return ContractRevertError(name, tuple(args))


@dataclass(frozen=True)
class BidResult:
    """What ``Liquidator.bid`` did (its ``Bid`` and ``LossUnrecovered`` events), quote units."""

    price: int
    fee: int
    discount: int
    fund_draw: int
    socialised: int
    unrecovered: int
    ended: bool


@dataclass
class _Root:
    """The posted status root as the RiskOracle stores it, with the leaves it commits to."""

    leaves: Mapping[str, StatusLeaf]
    price_round: int
    expiry: int
    cleared: bool = False


class Ledger:
    """The protocol's contracts over one :class:`ProtocolState` (mutated in place).

    Parameters
    ----------
    state : ProtocolState
        The indexer's state to continue from (params, liquidation params, bands, collaterals and
        fee collector indexed).
    tokens : mapping of str to TokenInfo
        The deployment's tokens by symbol (the quote token has ``underlying`` None).
    fund : str
        The insurance fund's address (its cash in the Vault is the fund).
    heartbeat, max_delay : int
        The PriceFeed's configuration (``FeedConfig``): freshness of a round, latest acceptable post.
    base_params_hash : bytes or None
        The RiskParams hash (before the loss index is mixed in); default ``state.params_hash``.
    root_posted_at : int
        ``RiskOracle.rootPostedAt`` (the Vault's deployment time before any root).
    pending_loss : int
        ``Vault.pendingLoss`` (socialised, not yet charged to the balances).
    rounds : sequence of (int, tuple of int)
        The price rounds posted so far, ``(timestamp, prices)`` from round 1.
    num_underlyings : int
        ``PriceFeed.numUnderlyings`` (the deployment's underlyings).
    """

    def __init__(self, state: ProtocolState, tokens: Mapping[str, TokenInfo], fund: str, *, heartbeat: int = 3600,
                 max_delay: int = 600, base_params_hash: bytes | None = None, root_posted_at: int = 0,
                 pending_loss: int = 0, rounds: Sequence[tuple[int, tuple[int, ...]]] = (),
                 num_underlyings: int = 2) -> None:  # fmt: skip
        self.state = state
        self.num_underlyings = num_underlyings
        self.tokens = dict(tokens)
        self.fund = fund
        self.heartbeat, self.max_delay = heartbeat, max_delay
        self.base_params_hash = state.params_hash if base_params_hash is None else base_params_hash
        self.root_posted_at = root_posted_at
        self.pending_loss = pending_loss
        self.rounds: list[tuple[int, tuple[int, ...]]] = list(rounds)
        self.auctions: dict[str, AuctionView] = {}
        self.root: _Root | None = None
        self.root_round = 0
        self.dirty: set[str] = set()
        self.dirty_funding: set[int] = set()
        self._by_address = {t.address: t for t in self.tokens.values()}
        self._quote = next(t for t in self.tokens.values() if t.underlying is None)

    # ------------------------------------------------------------------ helpers
    def _emit(self, name: str, **args: Any) -> None:
        HANDLERS[name](self.state, Event(name, args, self.state.block, 0))
        self._touched(name, args)

    def _emit_at(self, name: str, now: int, **args: Any) -> None:
        """An event whose indexer handler reads the block time."""
        HANDLERS[name](self.state, Event(name, args, self.state.block, 0, now))
        self._touched(name, args)

    def _touched(self, name: str, args: dict[str, Any]) -> None:
        """Remember the accounts an event touched (for incremental margins; ``_accrue`` adds the perpetuals
        whose cumulative funding moved)."""
        for role in ("account", "collector", "from", "to"):
            who = args.get(role)
            if who is not None:
                self.dirty.add(who)

    def take_dirty(self) -> tuple[set[str], set[int]]:
        """The accounts and perpetuals touched since the last call (a superset after a refusal)."""
        out = (self.dirty, self.dirty_funding)
        self.dirty, self.dirty_funding = set(), set()
        return out

    def token(self, symbol: str) -> TokenInfo:
        t = self.tokens.get(symbol)
        if t is None:
            raise revert("Vault_UnknownToken", symbol)
        return t

    @contextmanager
    def _txn(self, *accounts: str) -> Iterator[None]:
        """A transaction: on a refusal, the accounts named and every global the ledger moves are restored."""
        s = self.state
        saved = {a: (s.accounts[a].copy() if a in s.accounts else None) for a in dict.fromkeys(accounts)}
        globals_ = (dict(s.instruments), dict(s.settlements), s.prices, s.loss_index, s.params_hash, s.root,
                    s.feed_fresh_until)  # fmt: skip
        mine = (self.pending_loss, dict(self.auctions), self.root, self.root_round, self.root_posted_at,
                len(self.rounds))  # fmt: skip
        try:
            yield
        except ContractRevertError:
            for a, acct in saved.items():
                if acct is None:
                    s.accounts.pop(a, None)
                else:
                    s.accounts[a] = acct
            s.instruments, s.settlements, s.prices, s.loss_index, s.params_hash, s.root, s.feed_fresh_until = globals_
            self.pending_loss, self.auctions, self.root, self.root_round, self.root_posted_at, n = mine
            del self.rounds[n:]
            raise

    def _params(self) -> Any:
        if self.state.params is None or self.state.liquidation is None:
            raise revert("RiskParams_NotSet")
        return self.state.params

    def latest_price(self, underlying: int, now: int) -> int | None:
        """``PriceFeed.latestPrice``: the latest round's price, None when it would revert (no round, stale)."""
        if not self.rounds:
            return None
        ts, prices = self.rounds[-1]
        if now - ts > self.heartbeat:
            return None
        return prices[underlying]

    def emergency(self, now: int) -> bool:
        """``RiskOracle.emergency``: no root for ``emergencyDelay``, or the feed stale."""
        lp = self.state.liquidation
        delay = lp.emergency_delay if lp is not None else 0
        return now > self.root_posted_at + delay or now > self.state.feed_fresh_until

    def move_since(self, price_round: int) -> int:
        """``PriceFeed.moveSince``: the largest relative move of any underlying since ``price_round``."""
        latest = len(self.rounds)
        if price_round == 0 or price_round > latest:
            raise revert("PriceFeed_UnknownRound", price_round)
        if price_round == latest:
            return 0
        a, b = self.rounds[price_round - 1][1], self.rounds[-1][1]
        return max(rules.rel_move(x, y) for x, y in zip(a, b, strict=True))

    def _check_price_round(self, price_round: int, now: int) -> None:
        """``RiskOracle._checkPriceRound``."""
        if not rules.feed_fresh(self.state.feed_fresh_until, now):
            raise revert("RiskOracle_FeedStale", self.state.feed_fresh_until, now)
        if price_round != 0 and price_round == len(self.rounds):
            return
        move = self.move_since(price_round)
        tolerance = self._params().price_tolerance
        if move > tolerance:
            raise revert("RiskOracle_PriceMoved", move, tolerance)

    def _verify(self, att: Attestation, account: str, action: bytes, now: int) -> None:
        """``RiskOracle._verify`` without the signatures: account, nonce, action, credit, parameters,
        window and price round."""
        acct = self.state.accounts.get(account) or AccountState()
        if att.account != account:
            raise revert("RiskOracle_WrongAccount", account, att.account)
        if att.risk_nonce != acct.risk_nonce:
            raise revert("RiskOracle_StaleNonce", acct.risk_nonce, att.risk_nonce)
        if att.action_hash != action:
            raise revert("RiskOracle_WrongAction", action, att.action_hash)
        if att.credit_checkpoint > acct.deposit_credit:
            raise revert("RiskOracle_BadCredit", att.credit_checkpoint, acct.deposit_credit)
        if self.state.params_hash == b"\x00" * 32:
            raise revert("RiskOracle_ParamsNotSynced")
        if att.params_hash != self.state.params_hash:
            raise revert("RiskOracle_WrongParams", self.state.params_hash, att.params_hash)
        max_age = self._params().attestation_max_age
        if att.issued_at > now:
            raise revert("RiskOracle_IssuedInFuture", att.issued_at, now)
        if att.expiry < now:
            raise revert("RiskOracle_Expired", att.expiry, now)
        if att.expiry - att.issued_at > max_age:
            raise revert("RiskOracle_LifetimeTooLong", att.expiry - att.issued_at, max_age)
        self._check_price_round(att.price_round, now)

    def require_margin(self, att: Attestation, account: str, action: bytes, now: int, use_initial: bool) -> int:
        """``RiskOracle._requireMargin``: the verified, credited equity covers IM (or MM)."""
        self._verify(att, account, action, now)
        credit = (self.state.accounts.get(account) or AccountState()).deposit_credit
        equity = rules.credited_equity(att.margin_equity, att.credit_checkpoint, credit)
        required = att.initial_margin if use_initial else att.maintenance_margin
        if equity < required:
            raise revert("RiskOracle_InsufficientMargin", equity, required)
        return equity

    # ------------------------------------------------------------------ cash (VaultBase)
    def _realise(self, account: str) -> None:
        """``VaultBase._realise``: charge the account's share of losses socialised since it was touched."""
        s = self.state
        acct = s.accounts.get(account)
        if acct is None or acct.cash <= 0 or acct.loss_snapshot == s.loss_index:
            return
        charge = rules.pending_charge(acct.cash, acct.loss_snapshot, s.loss_index)
        self.pending_loss = self.pending_loss - charge if charge < self.pending_loss else 0
        self._emit("LossApplied", account=account, charge=charge)

    def _bump(self, account: str) -> None:
        self._emit("RiskNonceBumped", account=account, nonce=self.state.account(account).risk_nonce + 1)

    def _settle_funding(self, account: str, iid: int) -> None:
        """``VaultBase._settleFunding`` on an open position (a flat one only re-snapshots, silently)."""
        acct = self.state.accounts.get(account)
        pos = acct.positions.get(iid) if acct is not None else None
        if pos is None:
            return
        cumulative = self.state.instruments[iid].cumulative_funding
        if cumulative == pos.funding_snapshot:
            return
        payment = rules.funding_payment(pos.size, cumulative, pos.funding_snapshot)
        self._realise(account)
        self._emit("FundingSettled", account=account, instrument=iid, payment=payment, cumulative=cumulative)

    def _position_changed(self, account: str, iid: int, size: int, cost: int, cash_delta: int) -> None:
        self._realise(account)
        self._emit("PositionChanged", account=account, instrument=iid, size=size, costBasis=cost, cashDelta=cash_delta)

    def _move_cash(self, src: str, dst: str, amount: int) -> None:
        """``VaultModule._moveCash`` (``amount`` may be negative)."""
        self._realise(src)
        self._realise(dst)
        self._emit("CashTransferred", **{"from": src, "to": dst, "amount": amount})

    def _credit_fees(self, collector: str, amount: int) -> None:
        self._realise(collector)
        self._emit("FeesCollected", collector=collector, amount=amount)

    # ------------------------------------------------------------------ Vault: deposits and withdrawals
    def deposit(self, account: str, symbol: str, amount: int, now: int) -> int:
        """``Vault.deposit`` of ``amount`` token units by ``account`` for itself; returns the credit."""
        if amount == 0:
            raise revert("Vault_ZeroAmount")
        if amount > rules.MAX_AMOUNT:
            raise revert("Vault_AmountTooLarge", amount, rules.MAX_AMOUNT)
        t = self.token(symbol)
        with self._txn(account):
            if t.underlying is None:
                self._realise(account)
                credit = amount
            else:
                c = next((c for c in self.state.collaterals.values() if c.token == t.address), None)
                if c is None:
                    raise revert("Vault_UnknownToken", t.address)
                price = self.latest_price(c.underlying, now)
                credit = 0 if price is None else rules.collateral_credit(amount, price, t.decimals, c.haircut)
            self._emit("Deposited", account=account, token=t.address, **{"from": account}, amount=amount,
                       credit=credit)  # fmt: skip
        return credit

    def whole_balance(self, account: str, symbol: str) -> int:
        """``Vault._wholeBalance`` for WITHDRAW_ALL, without settling (the engine's view)."""
        t = self.token(symbol)
        acct = self.state.accounts.get(account) or AccountState()
        if t.underlying is not None:
            return acct.collateral.get(t.address, 0)
        owed = [rules.funding_payment(p.size, self.state.instruments[i].cumulative_funding, p.funding_snapshot)
                for i, p in acct.positions.items() if self.state.instruments[i].kind == Kind.PERP]  # fmt: skip
        return rules.whole_quote_balance(acct.effective_cash(self.state.loss_index), owed)

    def withdraw(self, account: str, symbol: str, amount: int, now: int, proof: Attestation | None = None) -> int:
        """``Vault.withdraw`` to the account itself; ``proof`` is the engine's attestation (needed when the
        account has positions or negative cash). Returns the amount taken."""
        t = self.token(symbol)
        s = self.state
        with self._txn(account):
            acct = s.accounts.get(account) or AccountState()
            if acct.frozen:
                raise revert("Vault_Frozen", account)
            is_quote = t.underlying is None
            if amount == rules.WITHDRAW_ALL:
                if is_quote:
                    for iid in list(acct.positions):
                        if s.instruments[iid].kind == Kind.PERP:
                            self._settle_funding(account, iid)
                    self._realise(account)
                    cash = s.account(account).cash
                    taken = max(cash, 0)
                else:
                    taken = acct.collateral.get(t.address, 0)
            else:
                taken = amount
            if taken == 0:
                raise revert("Vault_ZeroAmount")
            if taken > rules.MAX_AMOUNT:
                raise revert("Vault_AmountTooLarge", taken, rules.MAX_AMOUNT)
            acct = s.accounts.get(account) or AccountState()
            if acct.positions or acct.cash < 0:
                if s.paused:
                    raise revert("Vault_Paused")
                if proof is None:
                    if not self.emergency(now):
                        raise revert("Vault_MarginProofRequired")
                    raise revert("Sim_EmergencyPathNotMirrored")
                self.require_margin(proof, account, withdraw_action(account, t.address, amount), now, True)
            if is_quote:
                self._realise(account)
                cash = s.account(account).cash
                if cash < taken:
                    raise revert("Vault_InsufficientCash", cash, taken)
            else:
                bal = acct.collateral.get(t.address, 0)
                if bal < taken:
                    raise revert("Vault_InsufficientCollateral", bal, taken)
            self._bump(account)
            self._emit("Withdrawn", account=account, token=t.address, to=account, amount=taken)
        return taken

    # ------------------------------------------------------------------ Instruments and PriceFeed
    def list_instrument(self, kind: int, underlying: int, expiry: int, strike: int, now: int) -> int:
        """``Instruments.list``; returns the new id."""
        if underlying >= self.num_underlyings:
            raise revert("Instruments_BadUnderlying", underlying)
        k = Kind(kind)
        if k == Kind.PERP:
            if expiry != 0:
                raise revert("Instruments_BadExpiry", expiry)
        elif expiry <= now:
            raise revert("Instruments_BadExpiry", expiry)
        is_option = k in (Kind.CALL, Kind.PUT)
        bad = (strike == 0 or strike % TICK != 0 or strike > MAX_PRICE) if is_option else strike != 0
        if bad:
            raise revert("Instruments_BadStrike", strike)
        iid = len(self.state.instruments) + 1
        self._emit_at("InstrumentListed", now, id=iid, kind=int(k), underlying=underlying, expiry=expiry, strike=strike)
        return iid

    def post_prices(self, timestamp: int, prices: Sequence[int], now: int) -> int:
        """``PriceFeed.post`` (signed by every signer) and ``RiskOracle.onPriceRound``; returns the round."""
        n = self.num_underlyings
        if len(prices) != n:
            raise revert("PriceFeed_WrongLength", len(prices), n)
        if self.rounds and timestamp <= self.rounds[-1][0]:
            raise revert("PriceFeed_NotNewer", timestamp, self.rounds[-1][0])
        if timestamp > now:
            raise revert("PriceFeed_FutureTimestamp", timestamp, now)
        if now - timestamp > self.max_delay:
            raise revert("PriceFeed_StaleUpdate", timestamp, now)
        for i, p in enumerate(prices):
            if p == 0:
                raise revert("PriceFeed_ZeroPrice", i)
            if p > MAX_PRICE:
                raise revert("PriceFeed_PriceTooLarge", i)
        prices = tuple(int(p) for p in prices)
        self.rounds.append((timestamp, prices))
        rnd = len(self.rounds)
        self._emit("PricesPosted", round=rnd, timestamp=timestamp, prices=prices)
        self._emit("FeedSynced", freshUntil=timestamp + self.heartbeat)
        return rnd

    def first_round_at_or_after(self, t: int) -> int | None:
        """The first price round stamped at or after ``t`` (what settlement fixing uses), None if none yet."""
        lo, hi = 0, len(self.rounds)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.rounds[mid][0] >= t:
                hi = mid
            else:
                lo = mid + 1
        return lo + 1 if lo < len(self.rounds) else None

    def fix_settlement(self, underlying: int, expiry: int, rnd: int, now: int) -> int:
        """``Instruments.fixSettlement``; returns the price (the fixed one if already fixed)."""
        fixed = self.state.settlements.get((underlying, expiry))
        if fixed:
            return fixed
        if expiry > now:
            raise revert("Instruments_NotExpired", expiry)
        if rnd == 0 or rnd > len(self.rounds):
            raise revert("PriceFeed_UnknownRound", rnd)
        if self.rounds[rnd - 1][0] < expiry or (rnd > 1 and self.rounds[rnd - 2][0] >= expiry):
            raise revert("Instruments_NotFirstRoundAfterExpiry", rnd)
        price = rules.settlement_price(self.rounds[rnd - 1][1][underlying])
        self._emit("SettlementFixed", underlying=underlying, expiry=expiry, round=rnd, price=price)
        return price

    def fix_due_settlements(self, now: int) -> int:
        """What the engine's ``fix_settlements`` does: every expired, held, unfixed expiry with a round."""
        s = self.state
        held = {iid for acct in s.accounts.values() for iid in acct.positions}
        todo = sorted({(ins.underlying, ins.expiry) for iid, ins in s.instruments.items()
                       if iid in held and ins.kind != Kind.PERP and 0 < ins.expiry <= s.timestamp
                       and (ins.underlying, ins.expiry) not in s.settlements})  # fmt: skip
        fixed = 0
        for underlying, expiry in todo:
            rnd = self.first_round_at_or_after(expiry)
            if rnd is None:
                continue
            self.fix_settlement(underlying, expiry, rnd, now)
            fixed += 1
        return fixed

    def _accrue(self, iid: int, index: int, now: int) -> None:
        """``Instruments._accrue`` at the current ``index``."""
        ins = self.state.instruments[iid]
        if now == ins.funding_updated_at:
            return
        p = rules.clamp_premium(ins.premium, index, self._params().max_funding_rate)
        delta, carry = rules.funding_accrual(p, ins.mark_time, ins.funding_updated_at, now, ins.carry)
        if delta:
            self.dirty_funding.add(iid)
        self._emit_at("FundingUpdated", now, id=iid, cumulativeFunding=ins.cumulative_funding + delta, indexPrice=index,
                   premium=p, carry=carry)  # fmt: skip

    def record_trade(self, iid: int, price: int, now: int) -> None:
        """``Instruments.recordTrade``: accrue at the old premium, then mark the new one."""
        ins = self.state.instruments[iid]
        index = self.latest_price(ins.underlying, now)
        premium = 0
        if index is not None:
            self._accrue(iid, index, now)
            premium = rules.clamp_premium(price - index, index, self._params().max_funding_rate)
        self._emit_at("FundingMarkSet", now, id=iid, price=price, indexPrice=index or 0, premium=premium)

    def update_funding(self, iid: int, now: int) -> int:
        """``Instruments.updateFunding`` (anyone may poke it); returns the cumulative funding."""
        ins = self.state.instruments.get(iid)
        if ins is None:
            raise revert("Instruments_UnknownInstrument", iid)
        if ins.kind != Kind.PERP:
            raise revert("Instruments_NotPerp", iid)
        index = self.latest_price(ins.underlying, now)
        if index is None:
            raise revert("PriceFeed_Stale" if self.rounds else "PriceFeed_UnknownRound")
        self._accrue(iid, index, now)
        return self.state.instruments[iid].cumulative_funding

    # ------------------------------------------------------------------ Exchange and Vault: trades
    def trade(self, maker: str, taker: str, iid: int, size: int, price: int, taker_buys: bool, now: int,
              maker_proof: Attestation, taker_proof: Attestation) -> tuple[int, int]:  # fmt: skip
        """``Exchange.trade`` of two orders at the maker's price, then ``Vault.applyTrade``; the proofs are
        the engine's attestations of each side. Returns the (maker, taker) fees."""
        s = self.state
        p = self._params()
        if size == 0:
            raise revert("Exchange_ZeroAmount")
        if size % LOT != 0:
            raise revert("Exchange_NotOnLot", size)
        if maker == taker:
            raise revert("Exchange_SelfTrade")
        ins = s.instruments.get(iid)
        if ins is None:
            raise revert("Instruments_UnknownInstrument", iid)
        if not self.rounds:
            raise revert("PriceFeed_UnknownRound", 0)
        index = self.rounds[-1][1][ins.underlying]
        assert s.bands is not None, "the Exchange's bands are indexed at deployment"
        low, high = rules.price_band(ins.kind, index, ins.strike, s.bands.linear)
        if price < low or price > high:
            raise revert("Exchange_PriceOutsideBand", price, low, high)
        maker_fee, taker_fee = rules.fee(size, price, p.maker_fee), rules.fee(size, price, p.taker_fee)
        buyer, seller = (taker, maker) if taker_buys else (maker, taker)
        buyer_fee, seller_fee = (taker_fee, maker_fee) if taker_buys else (maker_fee, taker_fee)
        buyer_proof, seller_proof = (taker_proof, maker_proof) if taker_buys else (maker_proof, taker_proof)
        if size > MAX_SIZE:
            raise revert("Vault_SizeTooLarge", size)
        if price % TICK != 0 or price > MAX_PRICE:
            raise revert("Vault_NotOnTick", price)
        if ins.kind != Kind.PERP and now >= ins.expiry:
            raise revert("Vault_InstrumentExpired", iid, ins.expiry)
        with self._txn(buyer, seller, self.fund, s.fee_collector):
            if ins.kind == Kind.PERP:
                self.record_trade(iid, price, now)
            for account, delta, fee, proof in ((buyer, size, buyer_fee, buyer_proof),
                                               (seller, -size, seller_fee, seller_proof)):  # fmt: skip
                acct = s.accounts.get(account) or AccountState()
                reducing_action = trade_action(account, iid, delta, price, fee, True)
                reduces_im = proof.action_hash == reducing_action
                action = reducing_action
                if not reduces_im:
                    if s.paused:
                        raise revert("Vault_Paused")
                    if acct.frozen:
                        raise revert("Vault_Frozen", account)
                    if self.emergency(now):
                        raise revert("Vault_Emergency")
                    action = trade_action(account, iid, delta, price, fee, False)
                self.require_margin(proof, account, action, now, not reduces_im)
                self._move_side(account, iid, ins.kind, delta, price, fee, p)
            self._collect_fees(buyer_fee + seller_fee, p.fund_fee_share)
        return maker_fee, taker_fee

    def _move_side(self, account: str, iid: int, kind: Kind, delta: int, price: int, fee: int, p: Any) -> None:
        """``Vault._moveSide``: settle funding, move the position, charge the fee, bump the nonce."""
        s = self.state
        if kind == Kind.PERP:
            self._settle_funding(account, iid)
        acct = s.account(account)
        pos = acct.positions.get(iid)
        old, cost = (pos.size, pos.cost_basis) if pos is not None else (0, 0)
        size, new_cost, cash = rules.trade(kind, old, cost, delta, price)
        if size == 0:
            new_cost = 0  # _removeFromList clears the cost basis
        cash -= fee
        if size != 0 and abs(size) < p.min_position_size:
            raise revert("Vault_PositionTooSmall", size, p.min_position_size)
        if old == 0 and size != 0 and len(acct.positions) >= p.max_positions:
            raise revert("Vault_TooManyPositions", p.max_positions)
        self._position_changed(account, iid, size, new_cost, cash)
        self._bump(account)

    def _collect_fees(self, fees: int, fund_fee_share: int) -> None:
        if fees == 0:
            return
        to_fund, to_collector = rules.fee_split(fees, fund_fee_share)
        if to_fund:
            self._credit_fees(self.fund, to_fund)
        if to_collector:
            self._credit_fees(self.state.fee_collector, to_collector)

    # ------------------------------------------------------------------ settlement (Settler, VaultModule)
    def settle(self, iid: int, accounts: Sequence[str], now: int) -> int:
        """``Settler.settleExpired``: settle ``iid`` for every account of ``accounts`` holding it."""
        if len(accounts) > MAX_BATCH:
            raise revert("Settler_BatchTooLarge", len(accounts), MAX_BATCH)
        s = self.state
        settled = 0
        with self._txn(*accounts):
            for account in accounts:
                acct = s.accounts.get(account)
                pos = acct.positions.get(iid) if acct is not None else None
                if pos is None:
                    continue
                ins = s.instruments[iid]
                if ins.kind == Kind.PERP or now < ins.expiry:
                    raise revert("Vault_NotExpired", iid, ins.expiry)
                price = s.settlements.get((ins.underlying, ins.expiry))
                if price is None:
                    raise revert("Instruments_SettlementNotFixed", ins.underlying, ins.expiry)
                payoff = rules.settlement_payoff(ins.kind, pos.size, ins.strike, price, pos.cost_basis)
                self._realise(account)
                self._emit(
                    "PositionSettled", account=account, instrument=iid, size=pos.size, price=price, payoff=payoff
                )
                settled += 1
        return settled

    # ------------------------------------------------------------------ status roots (RiskOracle)
    def post_root(self, leaves: Sequence[StatusLeaf] | Mapping[str, StatusLeaf], root: bytes, price_round: int,
                  issued_at: int, expiry: int, now: int) -> int:  # fmt: skip
        """``RiskOracle.postRoot`` of the engine's round (its leaves kept for ``Liquidator.start``)."""
        max_age = self._params().attestation_max_age
        if issued_at > now:
            raise revert("RiskOracle_IssuedInFuture", issued_at, now)
        if expiry < now:
            raise revert("RiskOracle_Expired", expiry, now)
        if expiry - issued_at > max_age:
            raise revert("RiskOracle_LifetimeTooLong", expiry - issued_at, max_age)
        self._check_price_round(price_round, now)
        self.root_round += 1
        by_account = leaves if isinstance(leaves, Mapping) else {leaf.account: leaf for leaf in leaves}
        self.root = _Root(by_account, price_round, expiry)
        self.root_posted_at = now
        self._emit("RootPosted", round=self.root_round, root=root, priceRound=price_round, issuedAt=issued_at,
                   expiry=expiry)  # fmt: skip
        return self.root_round

    def _clear_root(self) -> None:
        if self.root is not None and not self.root.cleared:
            self.root = replace(self.root, cleared=True)
            self._emit("RootCleared", round=self.root_round)

    # ------------------------------------------------------------------ Liquidator
    def auction(self, account: str) -> AuctionView:
        """``Liquidator.auctionOf`` (an inactive one when none)."""
        return self.auctions.get(account, NO_AUCTION)

    def start(self, account: str, now: int) -> AuctionView:
        """``Liquidator.start`` with the account's leaf of the latest status root."""
        s = self.state
        lp = s.liquidation
        if lp is None:
            raise revert("RiskParams_NotSet")
        if account in self.auctions:
            raise revert("Liquidator_AlreadyInAuction", account)
        leaf, credit, equity, mtm = self._status(account, now)
        if equity >= leaf.maintenance_margin:
            raise revert("Liquidator_Healthy", equity, leaf.maintenance_margin)
        with self._txn(account):
            self._bump(account)
            self._emit("FrozenSet", account=account, frozen=True)
            snap = rules.open_auction(now, mtm, equity, leaf.maintenance_margin, leaf.initial_margin,
                                      auction_params(lp))  # fmt: skip
            self.auctions[account] = AuctionView(
                True, snap.insolvent, False, 0, snap.started_at, s.accounts[account].risk_nonce, snap.mtm_equity,
                snap.equity, snap.maintenance_margin, snap.initial_margin, snap.buffer_margin, credit,
            )  # fmt: skip
        return self.auctions[account]

    def _status(self, account: str, now: int) -> tuple[StatusLeaf, int, int, int]:
        """``RiskOracle.verifyStatus`` of the account's leaf in the latest root at its nonce and credit now:
        (leaf, credit, credited margin equity, credited mark-to-market equity)."""
        acct = self.state.accounts.get(account) or AccountState()
        root = self.root
        if root is None or root.cleared:
            raise revert("RiskOracle_NoRoot")
        if root.expiry < now:
            raise revert("RiskOracle_Expired", root.expiry, now)
        self._check_price_round(root.price_round, now)
        leaf = root.leaves.get(account)
        if leaf is None:
            raise revert("RiskOracle_BadProof")
        if leaf.risk_nonce != acct.risk_nonce:
            raise revert("RiskOracle_StaleNonce", acct.risk_nonce, leaf.risk_nonce)
        credit = acct.deposit_credit
        equity = rules.credited_equity(leaf.margin_equity, leaf.credit_checkpoint, credit)
        mtm = rules.credited_equity(leaf.mtm_equity, leaf.credit_checkpoint, credit)
        return leaf, credit, equity, mtm

    def refresh(self, account: str, now: int) -> AuctionView | None:
        """``Liquidator.refresh`` with the account's leaf of the latest status root: the auction's snapshot
        at the account's nonce now (the next version), or None when the leaf shows the account back at or
        above maintenance margin and the auction ends."""
        lp = self.state.liquidation
        if lp is None:
            raise revert("RiskParams_NotSet")
        a = self.auctions.get(account)
        if a is None:
            raise revert("Liquidator_NoAuction", account)
        leaf, credit, equity, mtm = self._status(account, now)
        nxt = rules.refresh_auction(a.rules_state(), now, mtm, equity, leaf.maintenance_margin, leaf.initial_margin,
                                    auction_params(lp))  # fmt: skip
        with self._txn(account):
            if nxt is None:
                del self.auctions[account]
                self._emit("FrozenSet", account=account, frozen=False)
                return None
            self.auctions[account] = AuctionView(
                True, nxt.insolvent, a.emergency, a.version + 1, nxt.started_at,
                self.state.accounts[account].risk_nonce, nxt.mtm_equity, nxt.equity, nxt.maintenance_margin,
                nxt.initial_margin, nxt.buffer_margin, credit,
            )  # fmt: skip
        return self.auctions[account]

    def bid(self, bidder: str, account: str, fraction: int, worst_price: int, version: int, now: int,
            proof: Attestation) -> BidResult:  # fmt: skip
        """``Liquidator.bid`` with the bidder's attestation (``ActionHash.bid``)."""
        s = self.state
        lp = s.liquidation
        if lp is None:
            raise revert("RiskParams_NotSet")
        if bidder == account:
            raise revert("Liquidator_SelfBid")
        if bidder in self.auctions:
            raise revert("Liquidator_AlreadyInAuction", bidder)
        a = self.auctions.get(account)
        if a is None:
            raise revert("Liquidator_NoAuction", account)
        if a.version != version:
            raise revert("Liquidator_VersionChanged", version, a.version)
        acct = s.accounts.get(account) or AccountState()
        if acct.risk_nonce != a.nonce:
            raise revert("Liquidator_StaleSnapshot", a.nonce, acct.risk_nonce)
        params = auction_params(lp)
        m = a.credited(acct.deposit_credit, now)
        fmax = rules.max_fraction(m, now, params)
        if fraction == 0 or fraction > fmax:
            raise revert("Liquidator_BadFraction", fraction, fmax)
        price, fee = rules.bid_price(m, fraction, now, params)
        if price > worst_price:
            raise revert("Liquidator_PriceAboveLimit", price, worst_price)
        disc = 0 if m.insolvent else rules.discount(m, now, params)
        took_max = fraction == fmax
        self._verify(proof, bidder, bid_action(bidder, account, version, fraction, worst_price), now)
        bidder_credit = (s.accounts.get(bidder) or AccountState()).deposit_credit
        bidder_equity = rules.credited_equity(proof.margin_equity, proof.credit_checkpoint, bidder_credit)
        if bidder_equity < proof.initial_margin:
            raise revert("Liquidator_InsufficientMargin", bidder_equity, proof.initial_margin)
        with self._txn(account, bidder, self.fund):
            self._transfer_portfolio(account, bidder, fraction)
            draw, socialised, unrecovered = self._settle_bid(account, bidder, price, fee)
            nxt = rules.after_bid(m, fraction, price, took_max)
            if nxt is None:
                del self.auctions[account]
                self._emit("FrozenSet", account=account, frozen=False)
            else:
                self.auctions[account] = AuctionView(
                    True, nxt.insolvent, a.emergency, a.version + 1, nxt.started_at, s.accounts[account].risk_nonce,
                    nxt.mtm_equity, nxt.equity, nxt.maintenance_margin, nxt.initial_margin, nxt.buffer_margin,
                    acct.deposit_credit,
                )  # fmt: skip
        return BidResult(price, fee, disc, draw, socialised, unrecovered, nxt is None)

    def _transfer_portfolio(self, src: str, dst: str, fraction: int) -> None:
        """``VaultModule.transferPortfolio``: every position, collateral and the cash, ``fraction`` of each."""
        s = self.state
        max_positions = self._params().max_positions
        for iid in list(s.account(src).positions):
            self._move_position(src, dst, iid, fraction, max_positions)
        for c in s.collaterals.values():
            bal = s.account(src).collateral.get(c.token, 0)
            amount = rules.moved_collateral(bal, fraction)
            if amount:
                self._emit("CollateralTransferred", **{"from": src, "to": dst}, token=c.token, amount=amount)
        self._realise(src)
        moved = rules.moved_cash(s.account(src).cash, fraction)
        if moved:
            self._move_cash(src, dst, moved)
        self._bump(src)
        self._bump(dst)

    def _move_position(self, src: str, dst: str, iid: int, fraction: int, max_positions: int) -> None:
        s = self.state
        if s.instruments[iid].kind == Kind.PERP:
            self._settle_funding(src, iid)
            self._settle_funding(dst, iid)
        pos = s.account(src).positions[iid]
        moved = rules.moved_size(pos.size, fraction)
        if moved == 0:
            return
        cost = rules.moved_cost(pos.cost_basis, pos.size, moved, fraction)
        self._shift(src, iid, -moved, -cost, max_positions)
        self._shift(dst, iid, moved, cost, max_positions)

    def _shift(self, account: str, iid: int, size_delta: int, cost_delta: int, max_positions: int) -> None:
        """``VaultModule._shiftPosition``: a side left flat realises its remaining cost basis."""
        acct = self.state.account(account)
        pos = acct.positions.get(iid)
        old, cost = (pos.size, pos.cost_basis) if pos is not None else (0, 0)
        size, cost = old + size_delta, cost + cost_delta
        cash = 0
        if size == 0 and cost != 0:
            cash, cost = -cost, 0
        if old == 0 and size != 0 and len(acct.positions) >= max_positions:
            raise revert("Vault_TooManyPositions", max_positions)
        if cash:
            self._realise(account)
        self._emit("PositionChanged", account=account, instrument=iid, size=size, costBasis=cost, cashDelta=cash)

    def _settle_bid(self, account: str, bidder: str, price: int, fee: int) -> tuple[int, int, int]:
        """``Liquidator._settle``: ``(fund draw, socialised, unrecovered)``."""
        s = self.state
        if price > 0:
            self._move_cash(bidder, account, price)
        if fee:
            self._move_cash(bidder, self.fund, fee)
        if price >= 0:
            return 0, 0, 0
        owed = -price
        fund_cash = (s.accounts.get(self.fund) or AccountState()).effective_cash(s.loss_index)
        draw, rest = rules.fund_draw(fund_cash, owed)
        if draw:
            self._move_cash(self.fund, bidder, draw)
        socialised = 0
        if rest:
            socialised = self._socialise(bidder, rest)
        return draw, socialised, rest - socialised

    def _socialise(self, to: str, amount: int) -> int:
        """``VaultModule.socializeLoss``: raise the loss index, pay ``to``, rebind the parameters."""
        s = self.state
        positive = sum(a.cash for a in s.accounts.values() if a.cash > 0)
        socialised, index = rules.socialise(amount, positive, self.pending_loss, s.loss_index)
        if socialised:
            s.loss_index = index  # storage first: the recipient's realise below charges at the new index
            self.pending_loss += socialised
            self._realise(to)
            bound = bound_params_hash(self.base_params_hash, index)
            self._emit("ParamsBound", paramsHash=bound, lossIndex=index)
            self._clear_root()
        self._emit("LossSocialised", to=to, amount=amount, socialised=socialised, lossIndex=index)
        return socialised


def with_timestamp(state: ProtocolState, block: int, timestamp: int) -> None:
    """Stamp ``state`` as of a new block (the engine caches its market by block number and hash)."""
    state.block, state.block_hash, state.timestamp = block, f"0x{block:064x}", timestamp
