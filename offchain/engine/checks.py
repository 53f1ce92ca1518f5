"""What the contracts would refuse, checked before the engine computes or signs anything.

An attestation binds one action; if the Vault would refuse the action itself, signing it only
hands the client something that fails on chain (and feeds absurd numbers to the margin model).
These checks mirror ``Vault.applyTrade`` / ``_updateList`` / ``withdraw`` on the indexed state:

==========================================  ==============================  =========
rule (contract)                             error                           field
==========================================  ==============================  =========
fill size 0 (``Vault_ZeroAmount``)          size must not be zero           size
size not a multiple of ``LOT``              not on the lot grid             size
size > ``MAX_SIZE`` (``Vault_SizeTooLarge``) beyond the largest fill        size
price not on ``TICK`` or > ``MAX_PRICE``    not on the tick grid / too big  price
unlisted instrument                         unknown instrument              instrument
dated instrument at or after expiry         expired                         instrument
price outside the Exchange's band           outside the band                price
option further than bands.option·S from     off the model price             price
the engine's model price (engine's own)
resulting position below ``minPositionSize`` position too small             size
a new position beyond ``maxPositions``      too many positions              instrument
paused or frozen, IM not lowered            paused (HTTP 409)               —
feed past its heartbeat (``FeedStale``)     feed stale (HTTP 409)           —
withdrawal of 0 (``Vault_ZeroAmount``)      must be positive                amount
above ``MAX_AMOUNT`` (``AmountTooLarge``)   beyond the largest amount       amount
more than the balance                       insufficient balance            amount
==========================================  ==============================  =========

Margin itself (``RiskOracle_InsufficientMargin``) is checked on the computed attestation by
:meth:`offchain.engine.service.Engine._attest`: a side whose fill lowers the account's portfolio
initial margin (:func:`offchain.rules.reduces_im`, flagged in the action hash) needs maintenance
margin after the action, anything else initial margin (issue 8, F-7).
"""

from __future__ import annotations

from offchain import rules
from offchain.chain.indexer import AccountState, ProtocolState
from offchain.chain.params import OnchainParams
from offchain.chain.units import LOT, TICK, Kind
from offchain.errors import ChainError, InputError
from offchain.protocol import MAX_PRICE, MAX_SIZE, PRICE_SCALE, SIZE_SCALE, WAD


class ProtocolPausedError(ChainError):
    """The guardian paused new risk (or the account is frozen): only trades that lower the account's
    portfolio initial margin are accepted."""


class FeedStaleError(ChainError):
    """The price feed's latest round is older than its heartbeat allows: the Vault would refuse any
    attestation (``RiskOracle_FeedStale``), so the engine signs none (issue 8, F-6)."""


def check_feed(state: ProtocolState) -> None:
    """Refuse to attest on a stale feed, as ``RiskOracle._checkPriceRound`` would.

    Raises
    ------
    FeedStaleError
        Chain time is past ``feedFreshUntil`` (latest round time + the feed's heartbeat).
    """
    if not rules.feed_fresh(state.feed_fresh_until, state.timestamp):
        raise FeedStaleError(f"the price feed is stale: the latest round ({state.prices.round}, observed at "
                             f"{state.prices.timestamp}) was usable until {state.feed_fresh_until}, chain time is "
                             f"{state.timestamp}; no attestation until a new price round (emergency mode: close "
                             "positions without an attestation)")  # fmt: skip


def check_risk(state: ProtocolState, account: str, lowers_im: bool) -> None:
    """Refuse a fill side that does not lower the portfolio IM while paused or frozen
    (``Vault._requireTradeMargin``).

    Raises
    ------
    ProtocolPausedError
        Paused or frozen, and the fill does not lower the account's portfolio initial margin.
    """
    if lowers_im:
        return
    if state.paused:
        raise ProtocolPausedError("the protocol is paused: only trades that lower the account's portfolio initial "
                                  "margin are accepted")  # fmt: skip
    acct = state.accounts.get(account)
    if acct is not None and acct.frozen:
        raise ProtocolPausedError("the account is in a liquidation auction: only trades that lower its portfolio "
                                  "initial margin")  # fmt: skip


reduces = rules.reduces  # the contract rule's one home


def check_trade(state: ProtocolState, account: str, instrument: int, size_delta: int, price: int) -> None:
    """Refuse a fill side the Vault would refuse (see the module table).

    Raises
    ------
    InputError
        ``field`` names the request field at fault.
    """
    if size_delta == 0:
        raise InputError("size", "must not be zero")
    if size_delta % LOT:
        raise InputError("size", f"must be a multiple of the lot size {LOT / SIZE_SCALE}")
    if abs(size_delta) > MAX_SIZE:
        raise InputError("size", f"beyond the largest fill of {MAX_SIZE // SIZE_SCALE} units")
    if price <= 0:
        raise InputError("price", "must be positive")
    if price % TICK:
        raise InputError("price", f"must be a multiple of the tick {TICK / PRICE_SCALE}")
    if price > MAX_PRICE:
        raise InputError("price", f"beyond the largest price of {MAX_PRICE // PRICE_SCALE} USD")
    ins = state.instruments.get(instrument)
    if ins is None:
        raise InputError("instrument", f"unknown instrument {instrument}")
    if ins.kind != Kind.PERP and state.timestamp >= ins.expiry:
        raise InputError("instrument", f"{instrument} expired at {ins.expiry} (chain time {state.timestamp})")
    if state.bands is not None and state.prices.round:
        index = state.prices.prices[ins.underlying]
        low, high = rules.price_band(ins.kind, index, ins.strike, state.bands.linear)
        if not low <= price <= high:
            raise InputError("price", f"{price / PRICE_SCALE} USD is outside the Exchange's band "
                                      f"[{low / PRICE_SCALE}, {high / PRICE_SCALE}] USD around the index "
                                      f"{index / PRICE_SCALE} USD")  # fmt: skip
    acct = state.accounts.get(account) or AccountState()
    pos = acct.positions.get(instrument)
    old = pos.size if pos is not None else 0
    new = old + size_delta
    params = _params(state)
    if new != 0 and abs(new) < params.min_position_size:
        raise InputError("size", f"would leave a position of {new / SIZE_SCALE} units, below the minimum "
                                 f"{params.min_position_size / SIZE_SCALE} (close it whole or trade more)")  # fmt: skip
    if old == 0 and len(acct.positions) >= params.max_positions:
        raise InputError("instrument", f"the account already holds {len(acct.positions)} positions, the most "
                                       f"allowed (maxPositions {params.max_positions})")  # fmt: skip


def check_model_price(state: ProtocolState, instrument: int, price: int, model: float, spot: float) -> None:
    r"""Refuse an option fill further than ``bands.option`` · S from the engine's model price.

    The trade attestation binds the fill price (``ActionHash.trade``), so the quorum of engine signers
    enforces this band for the contracts, which cannot price an option themselves.

    Notes
    -----
    Accepted: :math:`|p - V| \le b_{opt} \cdot S`, with V the engine's Black-76 value on its volatility
    surface (``Valuation.mark``), S the index and :math:`b_{opt}` the Exchange's ``bands.option``.
    Linear instruments are left to :func:`check_trade` (their band is the Exchange's own).

    Raises
    ------
    InputError
        ``field`` is ``price``.
    """
    ins = state.instruments.get(instrument)
    if state.bands is None or ins is None or ins.kind not in (Kind.CALL, Kind.PUT):
        return
    width = state.bands.option / WAD * spot
    if abs(price / PRICE_SCALE - model) > width:
        raise InputError("price", f"{price / PRICE_SCALE} USD is more than {width:,.2f} USD (bands.option of the "
                                  f"index) from the engine's model price {model:,.2f} USD")  # fmt: skip


def check_withdraw(state: ProtocolState, account: str, token: str, amount: int) -> None:
    """Refuse a withdrawal the Vault would refuse (see the module table).

    Raises
    ------
    InputError
        ``field`` is ``amount``.
    ProtocolPausedError
        The protocol is paused and the account needs a margin proof to withdraw.
    """
    if amount <= 0:
        raise InputError("amount", "must be positive")
    if amount > rules.MAX_AMOUNT:
        raise InputError("amount", f"beyond the largest amount {rules.MAX_AMOUNT} token units (type(uint128).max)")
    acct = state.accounts.get(account) or AccountState()
    held = {t.lower(): b for t, b in acct.collateral.items()}
    is_quote = token.lower() == state.quote.lower()
    balance = acct.effective_cash(state.loss_index) if is_quote else held.get(token.lower(), 0)
    if amount > balance:
        raise InputError("amount", f"{amount} token units is more than the account holds ({max(balance, 0)})")
    if acct.frozen:
        raise ProtocolPausedError("the account is in a liquidation auction: no withdrawals until it ends")
    if state.paused and (acct.positions or acct.cash < 0):
        raise ProtocolPausedError("the protocol is paused: withdrawals need no risk, close positions first")


def _params(state: ProtocolState) -> OnchainParams:
    if state.params is None:
        raise ChainError("risk parameters not indexed yet")
    return state.params
