"""A thin driver over a deployed protocol for chain tests: prices, deposits, orders, attestations."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from eth_account import Account
from eth_utils import keccak
from web3.types import TxReceipt

from offchain.chain.actions import STATUS, trade_action, withdraw_action
from offchain.chain.client import Protocol
from offchain.chain.eip712 import (
    Attestation,
    Order,
    PriceRound,
    Signer,
    sign_attestation,
    sign_order,
    sign_price_round,
)
from offchain.chain.units import PRICE_SCALE, value

USDC = 10**6


def signer_from_seed(seed: str) -> Signer:
    return Signer(keccak(text=seed))


@dataclass
class Harness:
    p: Protocol
    deployer: str  # private keys
    risk_signers: list[Signer]
    price_signers: list[Signer]
    ids: dict[str, int]

    # ------------------------------------------------------------------ time and prices
    def now(self) -> int:
        return self.p.now()

    def warp(self, seconds: int) -> None:
        self.p.w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
        self.p.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]

    def latest_round(self) -> int:
        return int(self.p.feed.functions.latestRound().call()[0])

    def post_prices(self, usd: tuple[float, ...], signers: list[Signer] | None = None,
                    timestamp: int | None = None) -> TxReceipt:  # fmt: skip
        prices = tuple(int(round(x * 1000)) * 10**15 for x in usd)
        ts = timestamp if timestamp is not None else self.now()
        pr = PriceRound(self.latest_round() + 1, ts, prices)
        sigs = sign_price_round(self.p.domain("PriceFeed"), pr, signers or self.price_signers[:2])
        return self.p.send(self.p.feed.functions.post(ts, list(prices), sigs), self.deployer)

    # ------------------------------------------------------------------ tokens
    def token(self, sym: str) -> Any:
        return self.p.tokens[sym]

    def fund(self, key: str, sym: str, amount: int) -> None:
        addr = Account.from_key(key).address
        self.p.send(self.token(sym).functions.mint(addr, amount), self.deployer)
        self.p.send(self.token(sym).functions.approve(self.p.vault.address, 2**256 - 1), key)

    def deposit(self, key: str, sym: str, amount: int, account: str | None = None) -> TxReceipt:
        addr = Account.from_key(key).address
        return self.p.send(self.p.vault.functions.deposit(self.token(sym).address, amount, account or addr), key)

    # ------------------------------------------------------------------ attestations
    def attestation(self, account: str, action: bytes = STATUS, *, equity: int = 10**12, im: int = 0,
                    mm: int = 0, **over: Any) -> Attestation:  # fmt: skip
        now = self.now()
        att = Attestation(
            account=account,
            risk_nonce=self.p.vault.functions.riskNonce(account).call(),
            action_hash=action,
            margin_equity=equity,
            mtm_equity=equity,
            initial_margin=im,
            maintenance_margin=mm,
            credit_checkpoint=self.p.vault.functions.depositCredit(account).call(),
            params_hash=self.p.params.functions.paramsHash().call(),
            price_round=self.latest_round(),
            issued_at=now,
            expiry=now + 120,
        )
        return replace(att, **over) if over else att

    def proof(self, att: Attestation, signers: list[Signer] | None = None, domain: Any = None) -> tuple[Any, bytes]:
        sigs = sign_attestation(domain or self.p.domain("RiskOracle"), att, signers or self.risk_signers[:2])
        return (att.as_tuple(), sigs)

    def withdraw_proof(self, account: str, token: str, amount: int, **kw: Any) -> tuple[Any, bytes]:
        return self.proof(self.attestation(account, withdraw_action(account, token, amount), **kw))

    # ------------------------------------------------------------------ orders and trades
    def order(self, key: str, instrument: int, is_buy: bool, size: int, price: int, *, nonce: int = 1,
              deadline: int | None = None, account: str | None = None) -> Order:  # fmt: skip
        acct = account or Account.from_key(key).address
        return Order(acct, instrument, is_buy, size, price, nonce, deadline or self.now() + 3600)

    def signed(self, order: Order, key: str) -> tuple[Any, bytes]:
        return (order.as_tuple(), sign_order(self.p.domain("Exchange"), order, Signer(key)))

    def fees(self, size: int, price: int) -> tuple[int, int]:
        prm = self.p.params.functions.params().call()
        notional = value(size, price)
        return (-(-notional * prm[2] // 10**18), -(-notional * prm[3] // 10**18))

    def trade_proofs(self, maker: Order, taker: Order, size: int, **kw: Any) -> tuple[Any, Any]:
        maker_fee, taker_fee = self.fees(size, maker.limit_price)
        m_delta = size if maker.is_buy else -size
        m_att = self.attestation(maker.account,
                                 trade_action(maker.account, maker.instrument, m_delta, maker.limit_price, maker_fee), **kw)  # fmt: skip
        t_att = self.attestation(taker.account,
                                 trade_action(taker.account, taker.instrument, -m_delta, maker.limit_price, taker_fee), **kw)  # fmt: skip
        return self.proof(m_att), self.proof(t_att)

    def trade(self, maker_key: str, maker: Order, taker_key: str, taker: Order, size: int,
              relayer: str | None = None, proofs: tuple[Any, Any] | None = None) -> TxReceipt:  # fmt: skip
        mp, tp = proofs or self.trade_proofs(maker, taker, size)
        fn = self.p.exchange.functions.trade(self.signed(maker, maker_key), self.signed(taker, taker_key), size, mp, tp)
        return self.p.send(fn, relayer or self.deployer)


def usd(x: float) -> int:
    """USD to a 1e18 price on the tick grid."""
    return int(round(x * 1000)) * 10**15 if x * PRICE_SCALE % 10**15 else int(x * 1000) * 10**15
