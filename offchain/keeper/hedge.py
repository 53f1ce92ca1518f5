"""Hedging what a bid acquired (optional strategy, off by default: ``[hedge] enabled = true``).

After a bid of its own is mined, the keeper measures its account's delta per underlying with the
project's pricing (the risk engine's Black-76 Greeks at the current market: perps and futures count
1 per unit, options their Black-76 delta, volatile collateral 1 per token unit) on state rebuilt
from chain events, and trades the underlying's perpetual against a counterparty until the delta is
within one lot of zero. Orders are built and signed only with :mod:`offchain.chain.eip712`
(:class:`~offchain.chain.eip712.Order`, :func:`~offchain.chain.eip712.sign_order`); both sides'
attestations come from the engine (``POST /attest/trade``); the trade is re-checked by ``eth_call``
and sent through the keeper's transaction manager (fees, replacement, persistence).

Its own margin: a hedge is sent only when the engine's attestation of the keeper after the fill
shows margin equity ≥ initial margin (``keeper_hedges_refused_total{reason="below_im"}`` otherwise).
"""

from __future__ import annotations

import json
import logging
import math
import urllib.error
import urllib.request
from dataclasses import dataclass, fields
from typing import Any, Protocol

from offchain.chain.client import Protocol as ChainProtocol
from offchain.chain.eip712 import Order, Signer, sign_order
from offchain.chain.indexer import Indexer
from offchain.chain.units import LOT, SIZE_SCALE, Kind, price_to_tick
from offchain.engine.core import EngineCore
from offchain.errors import ChainError, InputError
from offchain.keeper.attest import AttestationRefused, Attestor, BidAttestation
from offchain.keeper.config import HedgeConfig
from offchain.risk.config import load_config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SignedOrder:
    """An order with its EIP-712 signature (``Exchange.trade`` takes ``(order, signature)``)."""

    order: Order
    signature: bytes

    def as_arg(self) -> tuple[tuple[Any, ...], bytes]:
        return (self.order.as_tuple(), self.signature)


class Counterparty(Protocol):
    """Whoever takes the other side of the keeper's hedge orders."""

    def quote(self, instrument: int, keeper_buys: bool, size: int, limit_price: int,
              deadline: int) -> SignedOrder | None:  # fmt: skip
        """A signed order on the other side of a keeper order of ``size`` (1e18) on ``instrument``,
        priced no worse for the keeper than ``limit_price`` (1e18); None when it will not trade."""
        ...


class HttpCounterparty:
    """A counterparty behind ``POST {url}/quote`` with ``{"instrument", "keeper_buys", "size",
    "limit_price", "deadline"}`` (integers as decimal strings, 1e18 units) answering
    ``{"order": {<Order fields>}, "signature": "0x.."}`` or 204 (no quote)."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/") + "/quote"
        self.timeout = timeout

    def quote(self, instrument: int, keeper_buys: bool, size: int, limit_price: int,
              deadline: int) -> SignedOrder | None:  # fmt: skip
        body = json.dumps({"instrument": instrument, "keeper_buys": keeper_buys, "size": str(size),
                           "limit_price": str(limit_price), "deadline": deadline}).encode()  # fmt: skip
        req = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                if resp.status == 204:
                    return None
                payload = json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ChainError(f"counterparty at {self.url} unreachable: {exc}") from None
        return parse_signed_order(payload)


def parse_signed_order(payload: dict[str, Any]) -> SignedOrder:
    """``{"order": {<Order fields>}, "signature": "0x.."}`` as a :class:`SignedOrder` (field names,
    not positions: the parse follows the :class:`Order` struct as it is)."""
    try:
        raw = payload["order"]
        values: dict[str, Any] = {}
        for f in fields(Order):
            v = raw[f.name]
            if f.name in ("account", "signer"):
                values[f.name] = str(v)
            elif f.name in ("is_buy", "is_maker"):
                values[f.name] = bool(v)
            else:
                values[f.name] = int(v)
        return SignedOrder(Order(**values), bytes.fromhex(str(payload["signature"]).removeprefix("0x")))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError("order", f"malformed counterparty answer: {exc}") from None


@dataclass(frozen=True)
class HedgeOrder:
    """One perp order that brings the delta of ``underlying`` to within a lot of zero."""

    underlying: int
    instrument: int
    keeper_buys: bool
    size: int  # 1e18, on the lot
    mark: int  # the perp's mark, 1e18
    limit_price: int  # the worst price the keeper accepts, 1e18
    delta_before: float  # units of the underlying


@dataclass(frozen=True)
class HedgeTrade:
    """A hedge ready to send: the ``Exchange.trade`` calldata and what it does."""

    order: HedgeOrder
    price: int
    data: str
    keeper_after: BidAttestation


class Hedger:
    """Measures the keeper's delta from chain events and builds signed hedge trades.

    Parameters
    ----------
    protocol : offchain.chain.client.Protocol
    key : str
        The keeper's key: it signs the keeper's own orders (never logged).
    config : HedgeConfig
    attestor : Attestor
        The engine's ``/attest/trade`` for both sides.
    counterparty : Counterparty
    """

    def __init__(self, protocol: ChainProtocol, key: str, config: HedgeConfig, attestor: Attestor,
                 counterparty: Counterparty) -> None:  # fmt: skip
        self.p, self.cfg, self.attestor, self.counterparty = protocol, config, attestor, counterparty
        self._signer = Signer(key)
        self.address = self._signer.address
        self.indexer = Indexer(protocol)
        self.core = EngineCore(load_config(config.risk_config), protocol.deployment)
        self._order_nonce = 0

    def deltas(self) -> dict[int, float]:
        """The keeper's delta per underlying index (units) at the head, from its positions and collateral."""
        self.indexer.sync()
        state = self.indexer.state
        acct = state.accounts.get(self.address)
        out: dict[int, float] = {}
        if acct is None:
            return out
        engine = self.core.engine(state)
        ids = sorted(acct.positions)
        if ids:
            rows = engine.instruments.index_of(ids)
            for iid, row in zip(ids, rows, strict=True):
                u = state.instruments[iid].underlying
                out[u] = out.get(u, 0.0) + acct.positions[iid].size / SIZE_SCALE * float(engine.greeks.delta[row])
        decimals = {t.address.lower(): t.decimals for t in self.p.deployment.tokens.values()}
        listed = {token.lower(): c for token, c in state.collaterals.items()}
        for token, amount in acct.collateral.items():
            c = listed.get(token.lower())
            if c is not None and amount:
                out[c.underlying] = out.get(c.underlying, 0.0) + amount / 10 ** decimals[token.lower()]
        return out

    def plan(self) -> list[HedgeOrder]:
        """Perp orders that bring each underlying's delta within one lot of zero (nothing below ``min_delta``;
        within the Vault's minimum position size where a smaller position is refused, :func:`_hedge_size`)."""
        deltas = self.deltas()
        state = self.indexer.state
        engine = self.core.engine(state)
        perps = {ins.underlying: iid for iid, ins in sorted(state.instruments.items()) if ins.kind == Kind.PERP}
        minimum = state.params.min_position_size if state.params is not None else 0
        held = state.accounts[self.address].positions if self.address in state.accounts else {}
        out: list[HedgeOrder] = []
        for u, delta in sorted(deltas.items()):
            if abs(delta) < self.cfg.min_delta or u not in perps:
                continue
            iid = perps[u]
            size = _hedge_size(held[iid].size if iid in held else 0, delta, minimum)
            if size == 0:
                continue
            mark = float(engine.valuation.mark[engine.instruments.index_of([iid])[0]])
            buys = delta < 0
            slip = self.cfg.max_slippage_bps / 10_000
            limit = price_to_tick(mark * (1 + slip if buys else 1 - slip))
            out.append(HedgeOrder(u, iid, buys, size, price_to_tick(mark), limit, delta))
        return out

    def prepare(self, h: HedgeOrder, now: int) -> HedgeTrade | None:
        """Quote, sign, attest both sides; None (logged) when the counterparty will not trade within
        the limit or the keeper would end below its initial margin."""
        deadline = now + self.cfg.order_ttl_s
        quote = self.counterparty.quote(h.instrument, h.keeper_buys, h.size, h.limit_price, deadline)
        fields_ = {"instrument": h.instrument, "buy": h.keeper_buys, "size": h.size, "limit": h.limit_price}
        if quote is None:
            log.info("hedge: no quote", extra={"fields": fields_})
            return None
        q = quote.order
        price = q.limit_price
        worse = price > h.limit_price if h.keeper_buys else price < h.limit_price
        if (q.instrument != h.instrument or q.is_buy == h.keeper_buys or not q.is_maker or q.size < h.size or worse
                or q.deadline < now):  # fmt: skip
            log.warning("hedge: quote refused", extra={"fields": {**fields_, "quote_price": price,
                                                                  "quote_size": q.size}})  # fmt: skip
            return None
        self._order_nonce += 1
        mine = Order.own(self.address, h.instrument, h.keeper_buys, h.size, h.limit_price,
                         now * 1_000 + self._order_nonce, deadline, maker=False)  # the quote is the maker
        my_sig = sign_order(self.p.domain("Exchange"), mine, self._signer)
        signed_delta = h.size if h.keeper_buys else -h.size
        try:
            me = self.attestor.attest_trade(self.address, h.instrument, signed_delta, price, "taker")
            them = self.attestor.attest_trade(q.account, h.instrument, -signed_delta, price, "maker")
        except AttestationRefused as exc:
            log.warning("hedge: attestation refused: %s", exc, extra={"fields": {**fields_, "error": str(exc)}})
            return None
        a = me.attestation
        if a.margin_equity < a.initial_margin:
            log.warning("hedge: would leave the keeper below its initial margin", extra={"fields": {
                **fields_, "margin_equity": a.margin_equity, "im": a.initial_margin}})
            raise HedgeBelowIM(a.margin_equity, a.initial_margin)
        data = self.p.exchange.encode_abi("trade", args=[quote.as_arg(), (mine.as_tuple(), my_sig), h.size,
                                                         them.proof(), me.proof()])  # fmt: skip
        return HedgeTrade(h, price, data, me)


def _hedge_size(position: int, delta: float, minimum: int) -> int:
    """The perp size (1e18, on the lot, ≥ 0) to trade against ``delta`` units from ``position``.

    Notes
    -----
    The new position is ``p' = p − sign(δ) · ⌊|δ| / lot⌋ · lot`` (never over-hedged by more than the
    rounding). The Vault refuses a position ``0 < |p'| < minimum``: then ``p'`` is either closed (0) or
    the minimum with its sign, whichever leaves the smaller residual delta ``|δ − (p − p')|``.
    """
    step = math.floor(abs(delta) * SIZE_SCALE / LOT) * LOT
    sign = 1 if delta > 0 else -1
    target = position - sign * step
    if 0 < abs(target) < minimum:
        options = (0, minimum if target > 0 else -minimum)
        target = min(options, key=lambda t: abs(delta * SIZE_SCALE - (position - t)))
    return abs(position - target)


class HedgeBelowIM(InputError):
    """The hedge's fill would leave the keeper's margin equity below its initial margin."""

    def __init__(self, equity: int, im: int) -> None:
        self.equity, self.im = equity, im
        super().__init__("hedge", f"margin equity {equity} < initial margin {im} after the hedge")
