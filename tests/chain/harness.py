"""A thin driver over a deployed protocol for chain tests: prices, deposits, orders, attestations."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import pytest
from eth_account import Account
from eth_utils import event_abi_to_log_topic, keccak, to_checksum_address
from web3.logs import DISCARD
from web3.types import TxReceipt

from offchain import rules
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
from offchain.chain.units import Kind, value
from offchain.errors import ContractRevertError

USDC = 10**6
ZERO32 = b"\x00" * 32
ZERO_ADDRESS = "0x" + "00" * 20
_ORDER_NONCES = itertools.count(1_000)
_ACCOUNT_EVENTS = ("Deposited", "Withdrawn", "PositionChanged", "FeesCollected", "CashTransferred", "LossSocialised")
ANY: Any = type("_Any", (), {"__repr__": lambda self: "ANY"})()  # matches any error argument


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
        prices = tuple(round(x * 1000) * 10**15 for x in usd)
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
            params_hash=self.p.oracle.functions.paramsHash().call(),  # bound to the loss index
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
              deadline: int | None = None, account: str | None = None, maker: bool = False,
              grant: int | None = None) -> Order:  # fmt: skip
        """An order signed by ``key``: for its own account, or as an operator of ``account`` under the
        grant version ``grant`` (the current one by default)."""
        signer = Account.from_key(key).address
        acct = account or signer
        if grant is None:
            grant = 0 if acct == signer else int(self.p.exchange.functions.operatorGrant(acct, signer).call()[0])
        return Order(acct, signer, instrument, is_buy, maker, size, price, nonce, deadline or self.now() + 3600,
                     grant)  # fmt: skip

    def signed(self, order: Order, key: str) -> tuple[Any, bytes]:
        return (order.as_tuple(), sign_order(self.p.domain("Exchange"), order, Signer(key)))

    def in_band(self, instrument: int, price: int) -> int:
        """``price`` moved into the Exchange's band around the current index (on TICK): benchmarks that
        build books at arbitrary prices keep them fillable."""
        kind, underlying, _, strike = self.p.instruments.functions.get(instrument).call()
        index = int(self.p.feed.functions.latestPrice(underlying).call()[0])
        low, high = rules.price_band(Kind(kind), index, strike, int(self.p.exchange.functions.bands().call()[0]))
        tick = 10**15
        return min(max(price, -(-low // tick) * tick), high // tick * tick)

    def fees(self, size: int, price: int) -> tuple[int, int]:
        prm = self.p.params.functions.params().call()
        return (rules.fee(size, price, prm[2]), rules.fee(size, price, prm[3]))

    def trade_proofs(self, maker: Order, taker: Order, size: int, *, reduces_im: tuple[bool, bool] | None = None,
                     **kw: Any) -> tuple[Any, Any]:  # fmt: skip
        """Permissive test attestations of both sides. ``reduces_im`` (maker, taker) is the engine's F-7
        flag; by default a side is flagged when it reduces its position (what the engine finds for a
        one-instrument book; the engine tests check the real portfolio rule)."""
        maker_fee, taker_fee = self.fees(size, maker.limit_price)
        m_delta = size if maker.is_buy else -size
        if reduces_im is None:
            held = [int(self.p.vault.functions.positionOf(o.account, o.instrument).call()[0]) for o in (maker, taker)]
            reduces_im = (rules.reduces(held[0], m_delta), rules.reduces(held[1], -m_delta))
        m_action = trade_action(maker.account, maker.instrument, m_delta, maker.limit_price, maker_fee, reduces_im[0])
        t_action = trade_action(taker.account, taker.instrument, -m_delta, maker.limit_price, taker_fee, reduces_im[1])
        m_att = self.attestation(maker.account, m_action, **kw)
        t_att = self.attestation(taker.account, t_action, **kw)
        return self.proof(m_att), self.proof(t_att)

    def trade(self, maker_key: str, maker: Order, taker_key: str, taker: Order, size: int,
              relayer: str | None = None, proofs: tuple[Any, Any] | None = None) -> TxReceipt:  # fmt: skip
        maker, taker = replace(maker, is_maker=True), replace(taker, is_maker=False)  # the roles the test passes
        mp, tp = proofs or self.trade_proofs(maker, taker, size)
        fn = self.p.exchange.functions.trade(self.signed(maker, maker_key), self.signed(taker, taker_key), size, mp, tp)
        return self.p.send(fn, relayer or self.deployer)

    # ------------------------------------------------------------------ suite helpers (chain tests)
    def probe(self) -> tuple[Any, Any]:
        """A VaultGasProbe (the Vault plus test views such as its EIP-712 digests) deployed beside the
        protocol with the same wiring arguments, and its RiskOracle domain."""
        from offchain.chain.deploy import _deploy
        from offchain.chain.eip712 import RISK_ORACLE_DOMAIN, Domain

        p = self.p
        owner = key_addr(self.deployer)
        c = _deploy(p.w3, p.artifacts["VaultGasProbe"], self.deployer, owner, p.tokens["USDC"].address,
                    p.instruments.address, p.params.address, p.feed.address, owner)  # fmt: skip
        return c, Domain(*RISK_ORACLE_DOMAIN, p.chain_id, c.address)

    def snapshot(self) -> str:
        return str(self.p.w3.provider.make_request("evm_snapshot", [])["result"])  # type: ignore[arg-type]

    def revert_to(self, snap: str) -> None:
        ok = self.p.w3.provider.make_request("evm_revert", [snap])["result"]  # type: ignore[arg-type]
        assert ok, f"evm_revert({snap}) failed"
        self.p.reset_nonces()

    @contextmanager
    def isolated(self) -> Iterator[Harness]:
        """Run a block against a snapshot that is reverted afterwards (one hypothesis example)."""
        snap = self.snapshot()
        try:
            yield self
        finally:
            self.revert_to(snap)

    def send(self, fn: Any, key: str | None = None) -> TxReceipt:
        return self.p.send(fn, key or self.deployer)

    def post_raw(self, prices: tuple[int, ...], signers: list[Signer] | None = None, timestamp: int | None = None,
                 round_: int | None = None) -> TxReceipt:  # fmt: skip
        """Post integer prices (1e18); ``round_`` overrides the round number that is signed.

        Without ``timestamp`` the round is stamped now, after a warp of a few seconds if the
        latest round already carries this time (tests start at the snapshot's timestamp)."""
        if timestamp is None and self.now() <= (last := self.p.feed.functions.latestRound().call()[1]):
            self.warp(last - self.now() + 1)
        ts = timestamp if timestamp is not None else self.now()
        pr = PriceRound(round_ if round_ is not None else self.latest_round() + 1, ts, prices)
        sigs = sign_price_round(self.p.domain("PriceFeed"), pr, signers or self.price_signers[:2])
        return self.p.send(self.p.feed.functions.post(ts, list(prices), sigs), self.deployer)

    def latest_prices(self) -> tuple[int, ...]:
        rnd = self.latest_round()
        n = int(self.p.feed.functions.numUnderlyings().call())
        return tuple(int(self.p.feed.functions.priceAt(rnd, i).call()) for i in range(n))

    def refresh_prices(self) -> TxReceipt:
        """Re-post the latest prices at the current time (after a warp the feed is stale)."""
        return self.post_raw(self.latest_prices())

    def cash(self, account: str) -> int:
        return int(self.p.vault.functions.cashOf(account).call())

    def nonce(self, account: str) -> int:
        return int(self.p.vault.functions.riskNonce(account).call())

    def positions(self, account: str) -> dict[int, tuple[int, int, int]]:
        """instrument id -> (size, costBasis, fundingSnapshot)."""
        view = self.p.lens.functions.getAccount(account).call()
        return {int(p[0]): (int(p[1]), int(p[2]), int(p[3])) for p in view[5]}

    def fill(self, maker_key: str, taker_key: str, instrument: int, size: int, price: int, *,
             maker_buys: bool = True, relayer: str | None = None) -> TxReceipt:  # fmt: skip
        """A matched trade from fresh orders at one price, with permissive attestations: the maker
        buys (``maker_buys``) or sells ``size`` at ``price``."""
        maker = self.order(maker_key, instrument, maker_buys, size, price, nonce=next_nonce(), maker=True)
        taker = self.order(taker_key, instrument, not maker_buys, size, price, nonce=next_nonce())
        return self.trade(maker_key, maker, taker_key, taker, size, relayer=relayer)

    def events(self, contract: Any, event: str, receipt: TxReceipt) -> list[dict[str, Any]]:
        logs = getattr(contract.events, event)().process_receipt(receipt, errors=DISCARD)
        return [dict(e["args"]) for e in logs]

    def known_accounts(self) -> set[str]:
        """Every account the Vault ever credited or moved, from its events (Deposited, Withdrawn,
        PositionChanged, FeesCollected, LossSocialised: each indexes the account first), plus the fee collector."""
        v = self.p.vault
        topics = {event_abi_to_log_topic(e) for e in v.abi
                  if e.get("type") == "event" and e["name"] in _ACCOUNT_EVENTS}  # fmt: skip
        with self.p.w3.batch_requests() as batch:
            batch.add(v.functions.feeCollector())
            batch.add(self.p.w3.eth.get_logs({"address": v.address, "fromBlock": self.p.deployment.deploy_block}))
            collector, logs = batch.execute()
        found = {str(collector)}
        found.update(to_checksum_address(log["topics"][1][-20:]) for log in logs if log["topics"][0] in topics)
        pairs = {event_abi_to_log_topic(e) for e in v.abi  # transfers between two accounts index both
                 if e.get("type") == "event" and e["name"] in ("CashTransferred", "CollateralTransferred")}  # fmt: skip
        found.update(to_checksum_address(log["topics"][2][-20:]) for log in logs if log["topics"][0] in pairs)
        return found

    def settlement_or_none(self, underlying: int, expiry: int) -> int | None:
        try:
            return int(self.p.call(self.p.instruments.functions.settlementPrice(underlying, expiry)))
        except ContractRevertError as exc:
            assert exc.error_name == "Instruments_SettlementNotFixed", exc
            return None

    def check_conservation(self) -> dict[str, int]:
        """Check invariants I-1, I-2, I-3 and I-17 exactly over every known account.

        I-1: ``USDC.balanceOf(vault) == Σ cash − Σ costBasis − Σ unsettled funding + Σ unsettled
        payoffs of expired positions at fixed settlement prices``; the last two terms are zero once
        every holder has settled, leaving ``balance == Σ cash − Σ costBasis``.
        """
        w3, v, ins = self.p.w3, self.p.vault.functions, self.p.instruments.functions
        accounts = sorted(self.known_accounts())
        syms = ("USDC", "WBTC", "WETH")
        with w3.batch_requests() as batch:
            for a in accounts:
                batch.add(self.p.lens.functions.getAccount(a))
                batch.add(v.positionIds(a))
            for sym in syms:
                batch.add(self.token(sym).functions.balanceOf(self.p.vault.address))
            batch.add(w3.eth.get_block("latest"))
            out = batch.execute()
        views, counts = out[0 : 2 * len(accounts) : 2], out[1 : 2 * len(accounts) : 2]
        balances = dict(zip(syms, out[2 * len(accounts) : -1], strict=True))
        now = int(out[-1]["timestamp"])
        ids = sorted({int(p[0]) for view in views for p in view[5]})
        with w3.batch_requests() as batch:
            for iid in ids:
                batch.add(ins.get(iid))
                batch.add(ins.cumulativeFunding(iid))
            out = batch.execute() if ids else []
        meta = {iid: tuple(int(x) for x in out[2 * k]) for k, iid in enumerate(ids)}
        cum = {iid: int(out[2 * k + 1]) for k, iid in enumerate(ids)}
        net: dict[int, int] = {}
        settling: set[int] = set()  # expired, price fixed: holders leave one by one
        held: dict[str, int] = {}
        t = {"cash": 0, "cost": 0, "pending_funding": 0, "pending_payoff": 0}
        for a, view, count in zip(accounts, views, counts, strict=True):
            t["cash"] += int(view[0])
            for tok, bal in zip(view[3], view[4], strict=True):
                held[str(tok)] = held.get(str(tok), 0) + int(bal)
            assert sorted(int(i) for i in count) == sorted(int(p[0]) for p in view[5]), f"I-17: position list of {a}"
            for iid, size, cost, snap in view[5]:
                assert size != 0, f"I-17: listed position {iid} of {a} has size 0"
                kind, und, expiry, strike = meta[iid]
                t["cost"] += cost
                net[iid] = net.get(iid, 0) + size
                if kind == Kind.PERP:
                    assert (size * (cum[iid] - snap)) % 10**30 == 0, "I-5: funding payment not exact"
                    t["pending_funding"] += value(size, cum[iid] - snap)
                elif expiry <= now and (price := self.settlement_or_none(und, expiry)) is not None:
                    settling.add(iid)
                    t["pending_payoff"] += value(size, price) if kind == Kind.FUTURE else value(
                        size, max(price - strike, 0) if kind == Kind.CALL else max(strike - price, 0))  # fmt: skip
        for iid, n in net.items():
            assert n == 0 or iid in settling, f"I-3: net open size of instrument {iid} is {n}"
        t["balance"] = int(balances["USDC"])
        books = t["cash"] - t["cost"] - t["pending_funding"] + t["pending_payoff"]
        if self.p.vault.functions.lossIndex().call() == 0:
            assert t["balance"] == books, f"I-1: vault holds {t['balance']} quote units, books say {books}: {t}"
        else:  # I-1b: loss charges round up, one unit at most per account, in the vault's favour
            surplus = t["balance"] - books
            assert 0 <= surplus <= len(accounts), f"I-1b: vault holds {t['balance']}, books say {books}: {t}"
        for sym in syms[1:]:
            bal = int(balances[sym])
            held_sym = held.get(str(self.token(sym).address), 0)
            assert bal == held_sym, f"I-2: vault holds {bal} {sym}, Σ collateralOf is {held_sym}"
        return t

    def check_settled_conservation(self) -> None:
        """I-1 in its plain form (nothing pending): balance == Σ cash − Σ costBasis, exactly."""
        t = self.check_conservation()
        assert t["pending_funding"] == 0 and t["pending_payoff"] == 0, t
        if self.p.vault.functions.lossIndex().call() == 0:
            assert t["balance"] == t["cash"] - t["cost"], t


# ---------------------------------------------------------------------- suite helpers (chain tests)
def key_addr(key: str) -> str:
    return str(Account.from_key(key).address)


def next_nonce() -> int:
    """A fresh order nonce: orders with equal fields hash equal, so scenarios use distinct nonces."""
    return next(_ORDER_NONCES)


@contextmanager
def reverts(name: str, *args: Any) -> Iterator[Any]:
    """Expect the decoded custom error ``name`` (with exactly ``args`` when given)."""
    with pytest.raises(ContractRevertError) as info:
        yield info
    err = info.value
    assert err.error_name == name, f"expected {name}{args or ''}, got {err.error_name}{err.error_args}"
    if args:
        got, want = tuple(map(_norm, err.error_args)), tuple(map(_norm, args))
        assert len(got) == len(want) and all(w is ANY or g == w for g, w in zip(got, want, strict=True)), (
            f"{name}: args {err.error_args} != {args}"
        )


def _norm(x: Any) -> Any:
    """Addresses compare case-insensitively (eth-abi decodes them in lower case)."""
    return x.lower() if isinstance(x, str) and x.startswith("0x") and len(x) == 42 else x


def empty_proof() -> tuple[Any, bytes]:
    """A MarginProof without signatures: what a caller passes when it has no attestation."""
    att = Attestation(ZERO_ADDRESS, 0, ZERO32, 0, 0, 0, 0, 0, ZERO32, 0, 0, 0)
    return (att.as_tuple(), b"")


# ======================================================================
# Status roots and the event indexer (tests/chain/test_merkle.py, tests/chain/test_indexer.py).
# Additive block: only module-level helpers over ``Harness``.
# ======================================================================
from offchain.chain.merkle import StatusLeaf, StatusRoot, sign_status_root  # noqa: E402


def status_leaf(h: Harness, account: str, *, equity: int = 10**12, im: int = 0, mm: int = 0,
                **over: Any) -> StatusLeaf:  # fmt: skip
    """A status leaf for ``account`` at its current risk nonce and deposit credit."""
    v = h.p.vault.functions
    leaf = StatusLeaf(account, int(v.riskNonce(account).call()), equity, equity, im, mm,
                      int(v.depositCredit(account).call()))  # fmt: skip
    return replace(leaf, **over) if over else leaf


def status_root(h: Harness, root: bytes, round_: int = 1, **over: Any) -> StatusRoot:
    """A status root at the latest price round and parameter hash, valid for two minutes."""
    now = h.now()
    r = StatusRoot(round_, root, h.latest_round(), now, now + 120, bytes(h.p.oracle.functions.paramsHash().call()))
    return replace(r, **over) if over else r


def post_status_root(h: Harness, root: StatusRoot, signers: list[Signer] | None = None) -> TxReceipt:
    """Sign ``root`` with ``signers`` (default: a quorum of two risk signers) and post it."""
    sigs = sign_status_root(h.p.domain("RiskOracle"), root, signers or h.risk_signers[:2])
    return h.p.send(h.p.oracle.functions.postRoot(root.as_tuple(), sigs), h.deployer)
