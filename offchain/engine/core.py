"""The engine's deterministic core: indexed chain state -> margin results -> attestations and leaves.

Everything here is a pure function of (chain state at a block, risk configuration): the same
block, price round and parameter hash give bit-identical figures in every process, which is what
lets independent signers recompute a result and sign only what they computed themselves.
Conversion to the contracts' fixed point rounds against the account (equities down, margins up).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from offchain import rules
from offchain.chain.actions import STATUS, bid_action, trade_action, withdraw_action
from offchain.chain.client import Deployment
from offchain.chain.eip712 import Attestation
from offchain.chain.indexer import AccountState as ChainAccount
from offchain.chain.indexer import ProtocolState
from offchain.chain.merkle import StatusLeaf
from offchain.chain.units import Kind
from offchain.engine.checks import check_feed, check_model_price, check_risk, check_trade, check_withdraw
from offchain.engine.liquidation import AuctionView, BidRequest, bidder_after
from offchain.errors import InputError, PmsimError
from offchain.risk.accounts import AccountBook, AccountState
from offchain.risk.config import RiskConfig
from offchain.risk.engine import AccountMargin, MarginEngine, MarginResult
from offchain.risk.fixed_point import AttestedFigures, attested_figures
from offchain.risk.instruments import InstrumentTable
from offchain.risk.market import MarketState

E18 = 1e18
E6 = 1e6


@dataclass(frozen=True)
class TradeRequest:
    """A proposed fill as one side sees it: ``size_delta`` > 0 buys (1e18 units), price 1e18."""

    account: str
    instrument: int
    size_delta: int
    price: int
    fee: int  # quote units, as the Exchange will charge it


@dataclass(frozen=True)
class WithdrawRequest:
    account: str
    token: str  # address
    amount: int  # token units


@dataclass(frozen=True)
class RoundKey:
    """What a result is a function of: signers recompute from exactly this."""

    block: int
    price_round: int
    params_hash: bytes


class EngineCore:
    """Margin of indexed accounts under one risk configuration.

    Parameters
    ----------
    config : RiskConfig
        The engine configuration; its canonical hash must be the deployment's engine config hash.
    deployment : Deployment
        Token addresses and decimals (collateral columns follow ``config.collateral``).
    """

    def __init__(self, config: RiskConfig, deployment: Deployment) -> None:
        self.config = config
        self.deployment = deployment
        by_symbol = deployment.tokens
        self._columns: list[tuple[str, int]] = []  # (token address, decimals) per collateral column
        for c in config.collateral:
            if c.symbol not in by_symbol:
                raise InputError(f"collateral.{c.symbol}", "token not in the deployment")
            t = by_symbol[c.symbol]
            self._columns.append((t.address, t.decimals))
        self._quote = by_symbol[config.quote].address
        self._engines: OrderedDict[tuple[int, str, int, bytes], MarginEngine] = OrderedDict()
        self._build_lock = threading.Lock()
        # the last market built, its listing and all its inputs: a new block's market is that one when the inputs
        # are the same, else it reuses what it can (MarginEngine's previous, and the instrument table when the
        # listing is the same); one attribute, so read and set at once
        self._last_built: _Built | None = None
        self.markets_built = 0  # markets (MarginEngine) built so far
        self._account_states: OrderedDict[tuple[int, str, int, bytes], dict[int, _Cached]] = OrderedDict()
        # a trade attestation's "IM before" is a function of the market and the account's positions alone: the IM
        # of each account's last attested fill (market, rows, sizes, attested IM), and :attr:`im_hint`, someone
        # who may hold it already (the simulator's twin: its margins of the step's root), spare recomputing it
        self._im_after: dict[str, tuple[AccountState, int]] = {}
        self._im_after_engine: MarginEngine | None = None  # the market of _im_after (one: no old market kept alive)
        self.im_hint: ImHint | None = None
        self.ims_reused = 0  # trade attestations whose IM before came from the account's last fill

    # ------------------------------------------------------------------ market
    def engine(self, state: ProtocolState) -> MarginEngine:
        """The margin engine of this block's market (cached by block hash, round and parameters)."""
        key = _market_key(state)
        engine = self._engines.get(key)
        if engine is None:
            with self._build_lock:  # concurrent requests on a new block build it once
                engine = self._engines.get(key)
                if engine is None:
                    engine = self._engines[key] = self._build_engine(state)
                    while len(self._engines) > 4:
                        self._engines.popitem(last=False)
        return engine

    def _build_engine(self, state: ProtocolState) -> MarginEngine:
        """The market of ``state``: the last one built when its inputs are the same (price round and its
        prices, parameters, listing, settlement prices), else a new one.

        The market is valued at the price round's time, not the block's: spot, clock and the historical
        scenarios' cut (``as_of``) are one snapshot, and every block until the next round shares it."""
        price_round = state.prices.round
        if price_round == 0:
            raise PmsimError("no price round posted yet: the engine cannot value anything")
        ids = sorted(state.instruments)
        ins = [state.instruments[i] for i in ids]
        listing = tuple((i, int(x.kind), x.underlying, x.strike, x.expiry) for i, x in zip(ids, ins, strict=True))
        inputs = (price_round, state.prices.timestamp, tuple(state.prices.prices), state.params_hash, listing,
                  tuple(sorted(state.settlements.items())))  # fmt: skip
        last = self._last_built
        if last is not None and last[2] == inputs:
            return last[0]
        if last is not None and last[1] == listing:
            table = last[0].instruments  # the same listing: the validated table as it is
        else:
            table = InstrumentTable(
                instrument_id=np.array(ids, dtype=np.int64),
                kind=np.array([int(i.kind) for i in ins], dtype=np.int64),
                underlying=np.array([i.underlying for i in ins], dtype=np.int64),
                strike=np.array([i.strike / E18 for i in ins]),
                expiry=np.array([i.expiry for i in ins], dtype=np.int64),
            )
        market = MarketState(
            spot=np.array([p / E18 for p in state.prices.prices]),
            now=state.prices.timestamp,  # valued at the round's time (see above)
            vol=self.config.vol_surfaces(),
            round_id=price_round,
            settlements={(u, e): p / E18 for (u, e), p in state.settlements.items()},
            as_of=state.prices.timestamp,  # historical scenarios: only returns known at the round's time
        )
        engine = MarginEngine(self.config, table, market, previous=last[0] if last is not None else None)
        self._last_built = (engine, listing, inputs)
        self.markets_built += 1
        return engine

    # ------------------------------------------------------------------ accounts
    def account_state(self, state: ProtocolState, acct: ChainAccount) -> AccountState:
        """One indexed account as the risk engine's input (USD floats, token units); remembered per
        block, since every attestation request of the block starts from it."""
        return self._cached(state, acct).account

    def status_figures(self, state: ProtocolState, acct: ChainAccount) -> AttestedFigures:
        """The account's attested figures before any action (what its status leaf would say), remembered
        per block like :meth:`account_state`: every trade attestation compares its IM after the fill
        with this one (:func:`offchain.rules.reduces_im`)."""
        hit = self._cached(state, acct)
        if hit.figures is None:
            hit.figures = attested_figures(*_figures(self.engine(state).account(hit.account)))
        return hit.figures

    def _cached(self, state: ProtocolState, acct: ChainAccount) -> _Cached:
        """The per-block memo of one account.

        Keyed by the market's key (block, block hash, price round, parameter hash: a new block or
        a re-organisation starts an empty memo) and by the identity of the account object, checked
        on every hit: each published snapshot copies every account, so an account changed by a new
        event (a trade, a deposit, a nonce) is a new object and is never served a figure computed
        on the one before. Two blocks are kept (requests still answering on the one before).
        """
        key = _market_key(state)
        block = self._account_states.get(key)
        if block is None:
            with self._build_lock:
                block = self._account_states.get(key)
                if block is None:
                    block = self._account_states[key] = {}
                    while len(self._account_states) > 2:  # this block and the one before
                        self._account_states.popitem(last=False)
        hit = block.get(id(acct))
        if hit is not None and hit.chain is acct:
            return hit
        out = _Cached(acct, self._account_state(state, acct))
        if len(block) < 10_000:  # bounded: requests for unknown accounts each bring a new empty one
            block[id(acct)] = out
        return out

    def _account_state(self, state: ProtocolState, acct: ChainAccount) -> AccountState:
        """The risk input of ``acct``: what ``AccountState.from_ids`` gives, built through
        ``AccountState.derived`` (rows sorted here, sizes checked finite and zeros dropped there): the
        rows come from the instrument table, one per listed id, and the balances are the chain's integers
        (finite, collateral >= 0), so the constructor's other checks cannot fail."""
        engine = self.engine(state)
        ids = sorted(acct.positions)
        cost = sum(acct.positions[i].cost_basis for i in ids)
        owed = sum(_funding_owed(state, i, acct) for i in ids)
        collateral = np.array([acct.collateral.get(addr, 0) / 10**dec if addr != self._quote else 0.0
                               for addr, dec in self._columns])  # fmt: skip
        collateral.setflags(write=False)
        rows = engine.instruments.index_of(ids) if ids else np.zeros(0, dtype=np.int64)
        sizes = np.array([acct.positions[i].size / E18 for i in ids])
        if rows.size > 1:
            order = np.argsort(rows, kind="stable")
            rows, sizes = rows[order], sizes[order]
        return AccountState.derived(np.array(rows, dtype=np.int64), sizes, acct.effective_cash(state.loss_index) / E6,
                                    cost / E6, owed / E6, collateral)  # fmt: skip

    def book(self, state: ProtocolState, accounts: Sequence[str] | None = None) -> tuple[list[str], AccountBook]:
        """The indexed ``accounts`` (default: every one, sorted by address) as one book."""
        engine = self.engine(state)
        addresses = sorted(state.accounts) if accounts is None else list(accounts)
        unknown = [a for a in addresses if a not in state.accounts]
        if unknown:
            raise InputError("account", f"no activity on chain for {', '.join(unknown)}")
        states = [self.account_state(state, state.accounts[a]) for a in addresses]
        if not states:
            empty = sp.csr_matrix((0, len(engine.instruments)))
            return [], AccountBook(empty, np.zeros(0), np.zeros(0), np.zeros(0), np.zeros((0, len(self._columns))))
        return addresses, AccountBook.from_states(states, len(engine.instruments))

    def compute_all(self, state: ProtocolState) -> tuple[list[str], MarginResult]:
        addresses, book = self.book(state)
        return addresses, self.engine(state).compute(book)

    # ------------------------------------------------------------------ results
    def status_leaves(self, state: ProtocolState,
                      figures: tuple[list[str], MarginResult] | None = None) -> list[StatusLeaf]:  # fmt: skip
        """Every account's status result, in fixed point rounded against the account; from ``figures``
        (what :meth:`compute_all` of ``state`` gave) when the caller has them already."""
        addresses, result = self.compute_all(state) if figures is None else figures
        return [self._leaf(state, a, result.account(i)) for i, a in enumerate(addresses)]

    def _leaf(self, state: ProtocolState, address: str, m: AccountMargin) -> StatusLeaf:
        f = attested_figures(m.margin_equity, m.mtm_equity, m.im, m.mm)
        acct = state.accounts[address]
        return StatusLeaf(address, acct.risk_nonce, f.margin_equity, f.mtm_equity, f.im, f.mm, acct.deposit_credit)

    def attest_trade(self, state: ProtocolState, req: TradeRequest, issued_at: int, expiry: int) -> Attestation:
        """The attestation of ``req.account``'s state after the proposed fill (refused, as
        :func:`~offchain.engine.checks.check_trade` says, if the Vault would refuse the fill).

        Its action hash says whether the fill lowers the account's portfolio initial margin
        (:func:`offchain.rules.reduces_im` on the attested IMs before and after): only then does the
        Vault ask maintenance margin and allow it while paused or frozen (F-7)."""
        check_feed(state)
        check_trade(state, req.account, req.instrument, req.size_delta, req.price)
        engine = self.engine(state)
        row = engine.instruments.row_of(req.instrument)
        check_model_price(state, req.instrument, req.price, float(engine.valuation.mark[row]),
                          float(engine.valuation.spot[row]))  # fmt: skip
        acct = state.accounts.get(req.account) or ChainAccount()
        current = self.account_state(state, acct)
        before = self._im_before(state, engine, req.account, acct, current)
        after = engine.what_if_trade(current, req.instrument, req.size_delta / E18, req.price / E18, req.fee / E6)
        figures = attested_figures(*_figures(after.margin))
        lowers = rules.reduces_im(before, figures.im)
        check_risk(state, req.account, lowers)
        action = trade_action(req.account, req.instrument, req.size_delta, req.price, req.fee, lowers)
        if engine is not self._im_after_engine or len(self._im_after) > 100_000:  # bounded: this market's
            self._im_after, self._im_after_engine = {}, engine
        self._im_after[req.account] = (after.state, figures.im)
        return self._attestation(state, req.account, acct, action, after.margin, issued_at, expiry, figures)

    def _im_before(self, state: ProtocolState, engine: MarginEngine, address: str, acct: ChainAccount,
                   current: AccountState) -> int:  # fmt: skip
        """The attested IM of ``current`` (:meth:`status_figures`' ``im``), which depends on ``engine``'s market and
        the positions alone: that of the account's last attested fill when it left these very positions on
        this market (a market maker's next fill in the step), else :attr:`im_hint`'s, else computed."""
        last = self._im_after.get(address) if engine is self._im_after_engine else None
        if last is not None and _same_positions(last[0], current):
            self.ims_reused += 1
            return last[1]
        if self.im_hint is not None:
            hint = self.im_hint(engine, address, current)
            if hint is not None:
                return hint
        return self.status_figures(state, acct).im

    def attest_withdraw(self, state: ProtocolState, req: WithdrawRequest, issued_at: int,
                        expiry: int) -> Attestation:  # fmt: skip
        """The attestation of ``req.account``'s state after withdrawing ``req.amount`` of ``req.token``
        (refused, as :func:`~offchain.engine.checks.check_withdraw` says, if the Vault would refuse it).
        ``rules.WITHDRAW_ALL`` withdraws the whole balance (:meth:`whole_balance`), bound as asked."""
        symbol, decimals = self._token(req.token)
        check_feed(state)
        acct = state.accounts.get(req.account) or ChainAccount()
        amount = self.whole_balance(state, req.account, req.token) if req.amount == rules.WITHDRAW_ALL else req.amount
        check_withdraw(state, req.account, req.token, amount)
        engine = self.engine(state)
        current = self.account_state(state, acct)
        after = engine.what_if_withdrawal(current, symbol, amount / 10**decimals)
        action = withdraw_action(req.account, req.token, req.amount)
        return self._attestation(state, req.account, acct, action, after.margin, issued_at, expiry)

    def whole_balance(self, state: ProtocolState, account: str, token: str) -> int:
        """What ``withdraw(token, WITHDRAW_ALL, …)`` takes now: the collateral balance, or for the quote
        token the cash after every perpetual's funding is settled (:func:`offchain.rules.whole_quote_balance`)."""
        acct = state.accounts.get(account) or ChainAccount()
        if token.lower() != state.quote.lower():
            return next((b for t, b in acct.collateral.items() if t.lower() == token.lower()), 0)
        perps = [i for i in acct.positions if state.instruments[i].kind == Kind.PERP]
        return rules.whole_quote_balance(acct.effective_cash(state.loss_index),
                                         [_funding_owed(state, i, acct) for i in perps])  # fmt: skip

    def attest_bid(self, state: ProtocolState, req: BidRequest, auction: AuctionView, issued_at: int,
                   expiry: int) -> Attestation:  # fmt: skip
        """The attestation of ``req.bidder``'s state after the bid (see
        :func:`offchain.engine.liquidation.bidder_after`), bound to the auction, version, fraction and
        worst price; refused (``InputError`` on ``fraction``) when it would not cover the bidder's IM."""
        if state.params is None:
            raise PmsimError("risk parameters not indexed yet")
        check_feed(state)
        fund = self.deployment.contracts["InsuranceFund"]
        quote = bidder_after(state, req, auction, fund, state.params.max_positions, expiry)
        acct = state.accounts.get(req.bidder) or ChainAccount()
        m = self.engine(state).account(self.account_state(state, quote.bidder))
        action = bid_action(req.bidder, req.account, req.version, req.fraction, req.worst_price)
        att = self._attestation(state, req.bidder, acct, action, m, issued_at, expiry)
        if att.margin_equity < att.initial_margin:
            raise InputError("fraction", f"after the bid the bidder's margin equity {att.margin_equity / E6:,.2f} USD "
                             f"would be below its initial margin {att.initial_margin / E6:,.2f} USD: take a smaller "
                             "fraction or deposit first")  # fmt: skip
        return att

    def attest_status(self, state: ProtocolState, account: str, issued_at: int, expiry: int) -> Attestation:
        check_feed(state)
        acct = state.accounts.get(account) or ChainAccount()
        m = self.engine(state).account(self.account_state(state, acct))
        return self._attestation(state, account, acct, STATUS, m, issued_at, expiry)

    def _attestation(self, state: ProtocolState, account: str, acct: ChainAccount, action: bytes,
                     m: AccountMargin, issued_at: int, expiry: int,
                     figures: AttestedFigures | None = None) -> Attestation:  # fmt: skip
        f = attested_figures(*_figures(m)) if figures is None else figures
        return Attestation(
            account=account, risk_nonce=acct.risk_nonce, action_hash=action,
            margin_equity=f.margin_equity, mtm_equity=f.mtm_equity, initial_margin=f.im,
            maintenance_margin=f.mm, credit_checkpoint=acct.deposit_credit, params_hash=state.params_hash,
            price_round=state.prices.round, issued_at=issued_at, expiry=expiry,
        )  # fmt: skip

    def _token(self, address: str) -> tuple[str, int]:
        for sym, t in self.deployment.tokens.items():
            if t.address.lower() == address.lower():
                return sym, t.decimals
        raise InputError("token", f"unknown token {address}")


@dataclass
class _Cached:
    """An account's per-block memo: the chain object it was computed from (identity is the check),
    the risk engine's input, and its attested figures before any action (filled on first use)."""

    chain: ChainAccount
    account: AccountState
    figures: AttestedFigures | None = None


_Listing = tuple[tuple[int, int, int, int, int], ...]  # (id, kind, underlying, strike, expiry) of each instrument
_Built = tuple[MarginEngine, _Listing, tuple[object, ...]]  # a market, its listing and all its inputs
#: ``im_hint(engine, address, account)``: the attested IM (quote units, rounded up) of ``account``'s positions on
#: ``engine``'s market, exactly as the engine computes it, or None when the one asked does not hold it
ImHint = Callable[[MarginEngine, str, AccountState], int | None]


def _same_positions(a: AccountState, b: AccountState) -> bool:
    """The same rows and the same sizes, bit for bit (what the kernel's figures are a function of)."""
    return a.rows.tobytes() == b.rows.tobytes() and a.sizes.tobytes() == b.sizes.tobytes()


def _market_key(state: ProtocolState) -> tuple[int, str, int, bytes]:
    """What a block's market and figures are a function of, beyond the accounts themselves."""
    return (state.block, state.block_hash, state.prices.round, state.params_hash)


def _figures(m: AccountMargin) -> tuple[float, float, float, float]:
    """(margin equity, mark-to-market equity, IM, MM) in USD, as ``attested_figures`` takes them."""
    return m.margin_equity, m.mtm_equity, m.im, m.mm


def _funding_owed(state: ProtocolState, instrument: int, acct: ChainAccount) -> int:
    """Funding accrued on the stored index since the position's snapshot (quote units, + = owes),
    truncated towards zero exactly as ``Vault._settleFunding`` (exact anyway: LOT and TICK grids)."""
    pos = acct.positions[instrument]
    return rules.funding_payment(pos.size, state.instruments[instrument].cumulative_funding, pos.funding_snapshot)
