"""The event indexer against a real chain: state equal to the contracts' views, resume, reorgs."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from web3 import Web3

from offchain import rules
from offchain.chain.client import Protocol
from offchain.chain.indexer import HANDLERS, AccountState, Indexer, ProtocolState
from offchain.chain.merkle import StatusTree
from offchain.chain.params import ExchangeBands, OnchainParams
from offchain.chain.units import Kind
from offchain.errors import ChainError
from tests.chain.conftest import ALICE, BOB, CAROL, RELAYER
from tests.chain.harness import USDC, Harness, key_addr, post_status_root, status_leaf, status_root

pytestmark = pytest.mark.chain

KEYS = (ALICE, BOB, CAROL)
U = 10**18
DEPOSITS = {"USDC": (1_000 * USDC, 50_000 * USDC), "WBTC": (10**6, 10**8), "WETH": (10**17, 5 * U)}
# A fair-ish price per instrument symbol, whole dollars (on TICK).
PRICES = {"BTC-PERP": 55_000, "ETH-PERP": 2_800, "BTC-FUT": 55_400, "BTC-C60K": 700, "BTC-P50K": 500,
          "ETH-C3K": 60}  # fmt: skip
OPERATORS = [key_addr(k) for k in (RELAYER, CAROL)]


# ---------------------------------------------------------------------- random activity
class Activity:
    """Random but valid protocol activity from a seed: every action is one that must succeed."""

    def __init__(self, h: Harness, seed: int) -> None:
        self.h, self.rng = h, random.Random(seed)
        self.meta = {sym: tuple(h.p.instruments.functions.get(i).call()) for sym, i in h.ids.items()}

    def live(self) -> list[str]:
        now = self.h.now()
        return [sym for sym, (kind, _, expiry, _) in self.meta.items() if kind == Kind.PERP or expiry > now + 60]

    def run(self, steps: int) -> None:
        actions = [self.deposit, self.trade, self.trade, self.trade, self.close, self.withdraw, self.funding,
                   self.operator]  # fmt: skip
        for _ in range(steps):
            self.rng.choice(actions)()

    def deposit(self) -> None:
        key, sym = self.rng.choice(KEYS), self.rng.choice(list(DEPOSITS))
        beneficiary = key_addr(self.rng.choice(KEYS))  # anyone may deposit for anyone
        self.h.deposit(key, sym, self.rng.randint(*DEPOSITS[sym]), beneficiary)

    def trade(self, sym: str | None = None, size: int | None = None, maker_buys: bool | None = None,
              pair: tuple[str, str] | None = None) -> None:  # fmt: skip
        sym = sym or self.rng.choice(self.live())
        maker, taker = pair or self.rng.sample(KEYS, 2)
        price = (PRICES[sym] + self.rng.randint(-PRICES[sym] // 20, PRICES[sym] // 20)) * U
        size = size or self.rng.randint(1, 200) * 10**16
        buys = self.rng.random() < 0.5 if maker_buys is None else maker_buys
        self.h.fill(maker, taker, self.h.ids[sym], size, price, maker_buys=buys)

    def close(self) -> None:
        """Close one whole position against another account (partial closes and flips come from
        random trades)."""
        key = self.rng.choice(KEYS)
        live = {self.h.ids[s]: s for s in self.live()}
        open_ = [(iid, size) for iid, (size, _, _) in self.h.positions(key_addr(key)).items() if iid in live]
        if open_:
            iid, size = self.rng.choice(open_)
            other = self.rng.choice([k for k in KEYS if k != key])
            self.trade(live[iid], abs(size), maker_buys=size < 0, pair=(key, other))

    def withdraw(self) -> None:
        key = self.rng.choice(KEYS)
        account = key_addr(key)
        sym = self.rng.choice(list(DEPOSITS))
        token = self.h.token(sym).address
        vault = self.h.p.vault.functions
        balance = self.h.cash(account) if sym == "USDC" else int(vault.collateralOf(account, token).call())
        if balance > 1:
            amount = self.rng.randint(1, balance // 2)
            proof = self.h.withdraw_proof(account, token, amount)
            self.h.send(self.h.p.vault.functions.withdraw(token, amount, account, proof), key)

    def funding(self) -> None:
        """Warp, move prices a little, accrue both perps and settle some holders' funding."""
        self.h.warp(self.rng.randint(600, 3_000))
        moved = tuple(p + self.rng.randint(-200, 200) * p // 100_000 // 10**15 * 10**15 for p in self.h.latest_prices())
        self.h.post_raw(moved)
        for sym in ("BTC-PERP", "ETH-PERP"):
            iid = self.h.ids[sym]
            self.h.send(self.h.p.instruments.functions.updateFunding(iid), RELAYER)
            for key in KEYS:
                if iid in self.h.positions(key_addr(key)) and self.rng.random() < 0.5:
                    self.h.send(self.h.p.vault.functions.settleFunding(key_addr(key), iid), RELAYER)

    def operator(self) -> None:
        key = self.rng.choice(KEYS)
        candidates = [o for o in OPERATORS if o != key_addr(key)]
        self.h.send(self.h.p.exchange.functions.setOperator(self.rng.choice(candidates), self.rng.random() < 0.7), key)

    def expire(self, sym: str, settle_share: float) -> None:
        """Warp past ``sym``'s expiry, fix its settlement and settle a share of its holders."""
        _, underlying, expiry, _ = self.meta[sym]
        self.h.warp(max(expiry - self.h.now() + 5, 1))
        self.h.refresh_prices()
        self.h.send(self.h.p.instruments.functions.fixSettlement(underlying, expiry, self.h.latest_round()), RELAYER)
        expired = [self.h.ids[s] for s, (_, und, exp, _) in self.meta.items() if (und, exp) == (underlying, expiry)]
        for account in map(key_addr, KEYS):
            for iid in set(expired) & set(self.h.positions(account)):
                if self.rng.random() < settle_share:
                    self.h.send(self.h.p.vault.functions.settleExpired(account, iid), RELAYER)


def open_books(h: Harness, act: Activity) -> None:
    """Deposits of all three tokens, a perp trade, funding accrued before others open perps."""
    for key in KEYS:
        for sym, (_, high) in DEPOSITS.items():
            h.deposit(key, sym, 4 * high if sym == "USDC" else high)
    act.trade("BTC-PERP", U, maker_buys=True, pair=(ALICE, BOB))
    act.trade("ETH-PERP", 3 * U, maker_buys=False, pair=(BOB, CAROL))
    act.funding()


def full_history(h: Harness, seed: int) -> Activity:
    act = Activity(h, seed)
    open_books(h, act)
    act.run(18)
    act.expire("BTC-C60K", settle_share=0.6)  # the three 7-day options share one expiry
    act.run(8)
    act.expire("BTC-FUT", settle_share=0.5)
    act.run(5)
    return act


# ---------------------------------------------------------------------- what the chain says
def chain_accounts(h: Harness, accounts: set[str]) -> dict[str, Any]:
    """Every account as getAccount reports it (zero collateral balances dropped)."""
    out = {}
    for a in sorted(accounts):
        cash, nonce, credit, tokens, balances, positions = h.p.lens.functions.getAccount(a).call()
        out[a] = (cash, nonce, credit, {t: b for t, b in zip(tokens, balances, strict=True) if b},
                  {p[0]: (p[1], p[2], p[3]) for p in positions})  # fmt: skip
    return out


def indexed_accounts(state: ProtocolState, accounts: set[str]) -> dict[str, Any]:
    out = {}
    for a in sorted(accounts):
        s = state.accounts.get(a)
        out[a] = (0, 0, 0, {}, {}) if s is None else (
            s.effective_cash(state.loss_index), s.risk_nonce, s.deposit_credit,
            {t: b for t, b in s.collateral.items() if b},
            {i: (p.size, p.cost_basis, p.funding_snapshot) for i, p in s.positions.items()})  # fmt: skip
    return out


def assert_matches_chain(h: Harness, state: ProtocolState) -> None:
    """The indexed state equals the contracts' views, field by field, for every account."""
    accounts = h.known_accounts() | set(state.accounts)
    assert indexed_accounts(state, accounts) == chain_accounts(h, accounts)
    vault, ins, feed, oracle, params = (c.functions for c in (h.p.vault, h.p.instruments, h.p.feed, h.p.oracle,
                                                              h.p.params))  # fmt: skip
    for a in accounts:
        for op in OPERATORS:
            indexed = op in state.accounts.get(a, AccountState()).operators
            assert h.p.exchange.functions.isOperator(a, op).call() == indexed
    assert state.bands == ExchangeBands(*h.p.exchange.functions.bands().call())
    assert sorted(state.instruments) == list(range(1, ins.count().call() + 1))
    for iid, i in state.instruments.items():
        assert tuple(ins.get(iid).call()) == (i.kind, i.underlying, i.expiry, i.strike)
        assert ins.cumulativeFunding(iid).call() == i.cumulative_funding
        if i.kind != Kind.PERP:
            assert h.settlement_or_none(i.underlying, i.expiry) == state.settlement_price(iid)
    rnd, ts = feed.latestRound().call()
    assert (state.prices.round, state.prices.timestamp) == (rnd, ts)
    assert state.prices.prices == h.latest_prices()
    assert state.params_hash == bytes(oracle.paramsHash().call())  # RiskParams hash, bound to the loss index
    assert state.params is not None and state.params.as_tuple() == tuple(params.params().call())
    assert [(c.token, c.underlying, c.haircut) for c in state.collaterals.values()] == [
        tuple(c) for c in params.collaterals().call()]  # fmt: skip
    live_root = state.root.root if state.root and not state.root.cleared else b"\x00" * 32
    assert live_root == bytes(oracle.statusRoot().call())
    assert (state.root.round if state.root else 0) == oracle.rootRound().call()
    assert (state.paused, state.fee_collector) == (vault.paused().call(), vault.feeCollector().call())
    assert state.loss_index == vault.lossIndex().call()
    for a in accounts:
        assert state.accounts.get(a, AccountState()).frozen == h.p.liquidator.functions.auctionOf(a).call()[0]
    assert state.block == h.p.w3.eth.block_number
    assert state.timestamp == h.now()


def position_moves(h: Harness) -> tuple[int, int]:
    """How many fills flipped a position's sign, and how many reduced it without closing it."""
    sizes: dict[tuple[str, int], int] = {}
    flips = partial = 0
    for ev in h.p.vault.events.PositionChanged().get_logs(from_block=h.p.deployment.deploy_block):
        key, new = (ev["args"]["account"], ev["args"]["instrument"]), ev["args"]["size"]
        old = sizes.get(key, 0)
        flips += old * new < 0
        partial += old * new > 0 and abs(new) < abs(old)
        sizes[key] = new
    return flips, partial


def post_root_and_change_params(h: Harness) -> None:
    """A status root (RootPosted), then a parameter change that clears it (RootCleared)."""
    tree = StatusTree.build([status_leaf(h, key_addr(k)) for k in KEYS])
    post_status_root(h, status_root(h, tree.root, round_=3))
    h.send(h.p.params.functions.setParams(replace(OnchainParams(), taker_fee=6 * 10**14).as_tuple()))
    post_status_root(h, status_root(h, tree.root, round_=4))


LIQUIDATION_EVENTS = {"CashTransferred", "CollateralTransferred", "LossApplied", "LossSocialised", "FrozenSet"}


# ---------------------------------------------------------------------- tests
def test_indexed_state_equals_the_contracts_after_random_activity(h: Harness) -> None:
    full_history(h, seed=11)
    post_root_and_change_params(h)
    h.send(h.p.vault.functions.setPaused(True))
    rotated = Account.create().address  # signer rotation: one in and out, the quorum raised then restored
    for fn in (h.p.oracle.functions.addSigner(rotated), h.p.oracle.functions.setQuorum(3),
               h.p.oracle.functions.setQuorum(2), h.p.oracle.functions.removeSigner(rotated)):  # fmt: skip
        h.send(fn)
    ix = Indexer(h.p, batch_size=7)  # many small ranges: batching must not matter
    assert ix.sync() == h.p.w3.eth.block_number
    assert_matches_chain(h, ix.state)
    assert ix.state.risk_quorum == h.p.oracle.functions.quorum().call() == 2
    assert ix.state.risk_signers == tuple(sorted(s.address for s in h.risk_signers))
    assert all(h.p.oracle.functions.isSigner(a).call() for a in ix.state.risk_signers)
    # The liquidation events are exercised, with the same equality check, in test_liquidation.py.
    expected = set(HANDLERS) - LIQUIDATION_EVENTS
    assert set(ix.applied) == expected, f"events never seen: {expected - set(ix.applied)}"
    flips, partial = position_moves(h)
    assert flips and partial, "the scenario must flip and partially close positions"
    accts = ix.state.accounts
    # The silent snapshot path (a perp opened after funding accrued) must be exercised: seed-dependent.
    assert any(p.funding_snapshot for a in accts.values() for p in a.positions.values())
    assert ix.state.settlements and ix.state.root is not None


def test_resume_from_a_checkpoint_equals_a_fresh_index(h: Harness, tmp_path: Path) -> None:
    path = tmp_path / "index.json"
    act = Activity(h, seed=12)
    open_books(h, act)
    act.run(12)
    first = Indexer(h.p, checkpoint=path)
    mid = first.sync()
    saved = json.loads(path.read_text())
    assert saved["state"]["block"] == mid
    assert saved["state"]["block_hash"] == "0x" + bytes(h.p.w3.eth.get_block(mid)["hash"]).hex()
    act.run(10)
    act.expire("BTC-C60K", settle_share=0.5)
    act.run(6)
    resumed = Indexer(h.p, checkpoint=path)
    assert resumed.state.block == mid and resumed.state == first.state
    resumed.sync()
    fresh = Indexer(h.p)
    fresh.sync()
    assert resumed.state == fresh.state
    assert_matches_chain(h, resumed.state)
    assert not list(tmp_path.glob("*.tmp"))  # the atomic write left no temporary file


def test_a_reorganisation_is_detected_and_reindexed(h: Harness, tmp_path: Path) -> None:
    act = Activity(h, seed=13)
    open_books(h, act)
    ix = Indexer(h.p, checkpoint=tmp_path / "live.json")
    ix.sync()
    snap = h.snapshot()
    act.run(6)  # branch A
    h.deposit(ALICE, "USDC", 777 * USDC)
    ix.sync()
    stale = Indexer(h.p, checkpoint=tmp_path / "live.json")  # resumes on branch A
    head_a = ix.state.block
    h.revert_to(snap)
    h.deposit(BOB, "WETH", 3 * U)  # branch B, shorter than A for now
    assert ix.sync() == h.p.w3.eth.block_number < head_a
    assert ix.reorgs == 1
    assert_matches_chain(h, ix.state)
    Activity(h, seed=14).run(6)
    while h.p.w3.eth.block_number <= head_a:
        h.warp(1)
    assert stale.state.block == head_a
    stale.sync()  # its checkpoint block now has another hash
    assert stale.reorgs == 1
    ix.sync()
    assert ix.reorgs == 1  # no further reorganisation
    assert stale.state == ix.state
    assert_matches_chain(h, ix.state)


def test_confirmations_hold_back_recent_blocks(h: Harness) -> None:
    alice = key_addr(ALICE)
    ix = Indexer(h.p, confirmations=3)
    h.deposit(ALICE, "USDC", 5 * USDC)
    deposit_block = h.p.w3.eth.block_number
    assert ix.sync() == deposit_block - 3
    assert alice not in ix.state.accounts
    h.warp(1)
    h.warp(1)
    assert ix.sync() == deposit_block - 1 and alice not in ix.state.accounts
    h.warp(1)
    assert ix.sync() == deposit_block
    assert ix.state.accounts[alice].cash == 5 * USDC == h.cash(alice)


def test_rpc_failures_are_retried_then_reported(h: Harness) -> None:
    dead = Web3(Web3.HTTPProvider("http://127.0.0.1:9", request_kwargs={"timeout": 1}))
    ix = Indexer(Protocol(dead, h.p.deployment, h.p.artifacts), retries=2, backoff=0.01)
    with pytest.raises(ChainError, match="after 3 attempts"):
        ix.sync()


def test_a_checkpoint_of_another_deployment_is_refused(h: Harness, tmp_path: Path) -> None:
    path = tmp_path / "index.json"
    Indexer(h.p, checkpoint=path).sync()
    raw = json.loads(path.read_text())
    raw["vault"] = "0x" + "11" * 20
    path.write_text(json.dumps(raw))
    with pytest.raises(ChainError, match="another deployment"):
        Indexer(h.p, checkpoint=path)


def test_state_copies_share_nothing_mutable(h: Harness) -> None:
    Activity(h, seed=15).trade("BTC-PERP", U, pair=(ALICE, BOB))
    ix = Indexer(h.p)
    ix.sync()
    copy = ix.state.copy()
    assert copy == ix.state
    alice = key_addr(ALICE)
    copy.accounts[alice].cash += 1
    copy.accounts[alice].positions.clear()
    copy.accounts[alice].operators.add("x")
    assert copy != ix.state and ix.state.accounts[alice].positions
    assert "x" not in ix.state.accounts[alice].operators


def test_indexed_funding_state_predicts_the_next_accrual(h: Harness) -> None:
    """Premium and trade time (FundingMarkSet), last accrual time and carry (FundingUpdated) and the
    index (PricesPosted) are enough to compute what updateFunding adds next, exactly as Instruments
    does (rules.funding_accrual)."""
    act = Activity(h, seed=16)
    open_books(h, act)
    act.trade("BTC-PERP", U, pair=(BOB, CAROL))
    h.warp(1_500)
    h.refresh_prices()
    ix = Indexer(h.p)
    ix.sync()
    perp = ix.state.instruments[h.ids["BTC-PERP"]]
    rc = h.send(h.p.instruments.functions.updateFunding(perp.id), RELAYER)
    now = int(h.p.w3.eth.get_block(rc["blockNumber"])["timestamp"])
    index = ix.state.prices.prices[perp.underlying]
    assert ix.state.params is not None and perp.premium
    premium = rules.clamp_premium(perp.premium, index, ix.state.params.max_funding_rate)
    delta, carry = rules.funding_accrual(premium, perp.mark_time, perp.funding_updated_at, now, perp.carry)
    expected = perp.cumulative_funding + delta
    assert expected != perp.cumulative_funding
    assert h.p.instruments.functions.cumulativeFunding(perp.id).call() == expected
    ix.sync()
    assert ix.state.instruments[perp.id].cumulative_funding == expected
    assert ix.state.instruments[perp.id].funding_updated_at == now
    assert ix.state.instruments[perp.id].carry == carry
