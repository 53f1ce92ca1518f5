"""The twin backend: the protocol in Python, no chain, agreeing with the contracts to the unit.

:class:`TwinBackend` implements :class:`~offchain.sim.backend.Backend` over an in-memory
:class:`~offchain.chain.indexer.ProtocolState`: every intent goes through :class:`~offchain.sim.ledger.Ledger`
(the contracts' effects, emitted through the indexer's own event handlers) after the same decisions the
chain backend's engine makes, taken by the real :class:`~offchain.engine.core.EngineCore` on the twin's
state (trade, withdrawal and bid attestations, the F-7 reduce flag, the option model-price band, feed
freshness, ``Engine._attest``'s margin rule).

Genesis is what :func:`offchain.chain.deploy.deploy_protocol` (``DeployConfig`` defaults but for the
scenario's parameters, the default risk configuration's hash replaced by the scenario's) plus the indexer
give right after deployment: the same addresses even, when the chain deploys from Anvil's first key on a
fresh node (contract addresses are the deployer's CREATE addresses, nonces 0 to 12).

Time model (one block per timestamp; the engine sees the state of the last block before it):

* ``begin_step``: block at :func:`~offchain.sim.backend.price_time`: the price round, then every due
  settlement price (``Engine.fix_settlements``' rule); block at :func:`~offchain.sim.backend.root_time`:
  the status root the engine computed on the price block's state (issued then, valid
  ``min(lifetime, attestationMaxAge)``), skipped as ``Engine.run_round`` skips it (stale feed, no account).
* ``apply``: every attestation of the round is computed first, on the state before the round (one block:
  the chain backend signs the round before it is mined), then the transactions run in order.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import rlp  # type: ignore[import-untyped]
from eth_account import Account
from eth_utils import keccak, to_checksum_address

from offchain import rules
from offchain.chain.anvil import DEFAULT_KEYS
from offchain.chain.client import Deployment, TokenInfo
from offchain.chain.deploy import UNDERLYINGS, DeployConfig, FeedConfig
from offchain.chain.devnet import dev_signers
from offchain.chain.eip712 import Attestation
from offchain.chain.indexer import CollateralState, ProtocolState
from offchain.chain.merkle import StatusLeaf, leaf_hashes, merkle_root
from offchain.chain.params import CollateralParams, ExchangeBands, params_hash
from offchain.chain.units import TICK, Kind
from offchain.engine.core import EngineCore, TradeRequest, WithdrawRequest
from offchain.engine.liquidation import BidRequest
from offchain.engine.service import checked_attestation
from offchain.errors import ContractRevertError, InputError, PmsimError
from offchain.risk.engine import MarginResult
from offchain.risk.fixed_point import quote_units_down, quote_units_up, to_quote_units_down, to_quote_units_up
from offchain.sim.backend import (
    AuctionRecord,
    Bid,
    Deposit,
    Intent,
    ListInstrument,
    Outcome,
    RefreshAuction,
    Settle,
    StartAuction,
    Trade,
    Withdraw,
    accounts_of,
    price_time,
    refusal,
    root_time,
    round_time,
    schedule,
    sim_account,
)
from offchain.sim.ledger import Ledger, with_timestamp
from offchain.sim.margins import IncrementalMargins
from offchain.sim.scenario import Scenario

__all__ = ["TwinBackend", "bench_twin", "create_address", "grid_only", "twin_genesis"]

#: Deployment order of ``deploy_protocol``: the deployer's nonce of each contract.
DEPLOY_ORDER = ("USDC", "WBTC", "WETH", "RiskParams", "PriceFeed", "Instruments", "Vault", "Exchange", "VaultLens",
                "StandardMargin", "InsuranceFund", "Settler", "Liquidator")  # fmt: skip
DECIMALS = {"USDC": 6, "WBTC": 8, "WETH": 18}
#: The chain backend's deployment: Anvil starts this long before the scenario and mines one block a
#: second; ``deploy_protocol`` sends 13 contracts and 15 wiring transactions (3 risk and 3 price signers),
#: the Vault 7th; the initial listings follow, one block each.
SETUP_SECONDS = 600
DEPLOY_TXS = 28
VAULT_TX = 7


def create_address(sender: str, nonce: int) -> str:
    """The address of the contract ``sender`` creates with ``nonce`` (``keccak(rlp([sender, nonce]))[12:]``)."""
    return str(to_checksum_address(keccak(rlp.encode([bytes.fromhex(sender[2:]), nonce]))[12:]))


@dataclass(frozen=True)
class Genesis:
    """The twin's deployment: the protocol state right after it, and what the ledger and engine need."""

    state: ProtocolState
    deployment: Deployment
    fund: str
    feed: FeedConfig


def twin_genesis(scenario: Scenario, *, deployer_key: str = DEFAULT_KEYS[0], risk_signers: int = 3,
                 risk_quorum: int = 2, setup_time: int = 0) -> Genesis:  # fmt: skip
    """The state the indexer rebuilds right after ``deploy_protocol`` with the scenario's parameters.

    ``DeployConfig`` defaults (haircuts, feed, bands; the fee collector and guardian are the deployer),
    the scenario's ``[protocol]`` parameters and risk configuration hash, ``risk_signers`` devnet
    signers (``dev_signers("risk", n)``) with ``risk_quorum``.
    """
    deployer = str(Account.from_key(deployer_key).address)
    addr = {name: create_address(deployer, nonce) for nonce, name in enumerate(DEPLOY_ORDER)}
    cfg = DeployConfig(risk_signers=[], price_signers=[])
    params, liquidation = scenario.protocol_params()
    tokens = {
        sym: TokenInfo(sym, addr[sym], DECIMALS[sym], None if sym == "USDC" else UNDERLYINGS.index(sym[1:]))
        for sym in ("USDC", "WBTC", "WETH")
    }
    collaterals = [
        CollateralParams(tokens[s].address, UNDERLYINGS.index(s[1:]), cfg.haircuts[s]) for s in ("WBTC", "WETH")
    ]
    engine_hash = scenario.risk_config.canonical_hash()
    state = ProtocolState(quote=tokens["USDC"].address, block=0)
    state.params, state.liquidation = params, liquidation
    state.collaterals = {c.token: CollateralState(c.token, c.underlying, c.haircut) for c in collaterals}
    state.engine_config_hash = engine_hash
    state.params_hash = params_hash(params, liquidation, collaterals, engine_hash)
    state.fee_collector = deployer
    state.risk_quorum = risk_quorum
    state.risk_signers = tuple(sorted(s.address for s in dev_signers("risk", risk_signers)))
    state.bands = ExchangeBands()
    with_timestamp(state, 0, setup_time)
    contracts = {n: addr[n] for n in DEPLOY_ORDER[3:]}
    contracts["RiskOracle"] = addr["Vault"]
    dep = Deployment(chain_id=0, rpc_url="", deploy_block=0, contracts=contracts, tokens=tokens,
                     underlyings=list(UNDERLYINGS), fee_collector=deployer)  # fmt: skip
    return Genesis(state, dep, addr["InsuranceFund"], cfg.feed)


class LazyLeaves(Mapping[str, StatusLeaf]):
    """A round's leaves by account, each built when first read: a root's leaves are read one by one
    (``Liquidator.start``, the keepers), all of them only to hash the tree.

    The figures are ``EngineCore._leaf``'s (``attested_figures``: equities rounded down, margins up),
    converted for every account at once with the vectorised :func:`~offchain.risk.fixed_point.quote_units_down`
    and :func:`~offchain.risk.fixed_point.quote_units_up` (tested equal to the scalar conversions).
    """

    def __init__(self, figures: dict[str, tuple[int, int, int]], result: MarginResult) -> None:
        self._figures = figures
        try:
            self._units = (quote_units_down(result.margin_equity).tolist(),
                           quote_units_down(result.mtm_equity).tolist(),
                           quote_units_up(result.im).tolist(), quote_units_up(result.mm).tolist())  # fmt: skip
        except InputError:  # a figure beyond int64 quote units: the exact scalar conversions
            self._units = ([to_quote_units_down(x) for x in result.margin_equity.tolist()],
                           [to_quote_units_down(x) for x in result.mtm_equity.tolist()],
                           [to_quote_units_up(x) for x in result.im.tolist()],
                           [to_quote_units_up(x) for x in result.mm.tolist()])  # fmt: skip
        self._built: dict[str, StatusLeaf] = {}

    def __getitem__(self, account: str) -> StatusLeaf:
        leaf = self._built.get(account)
        if leaf is None:
            i, nonce, credit = self._figures[account]
            me, mtm, im, mm = (column[i] for column in self._units)
            leaf = self._built[account] = StatusLeaf(account, nonce, me, mtm, im, mm, credit)
        return leaf

    def merkle_root(self) -> bytes:
        """``StatusTree.build(list(self.values())).root``, hashed from the columns (no leaf objects)."""
        accounts = list(self._figures)
        rows = [self._figures[a] for a in accounts]
        me, mtm, im, mm = ([column[i] for i, _, _ in rows] for column in self._units)
        hashes = leaf_hashes(accounts, [n for _, n, _ in rows], me, mtm, im, mm, [c for _, _, c in rows])
        return merkle_root(hashes)

    def __iter__(self) -> Iterator[str]:
        return iter(self._figures)

    def __len__(self) -> int:
        return len(self._figures)


class TwinBackend:
    """The twin (see the module docstring).

    Parameters
    ----------
    scenario : Scenario
        Parameters, risk configuration and start time.
    listings : sequence of ListInstrument
        The instruments listed at deployment (the step-0 listings), in order, at ``setup_time``.
    setup_time : int or None
        Block time of the first listing, the k-th at ``setup_time + k`` (default: as the chain backend
        deploys, ``start - SETUP_SECONDS + DEPLOY_TXS + 1``); the Vault's deployment time
        (``rootPostedAt`` before any root) is taken ``DEPLOY_TXS - VAULT_TX + 1`` seconds earlier.
    lifetime : int
        The engine's attestation and root lifetime (``build_engine``'s default 120 s), capped by
        ``attestationMaxAge``.
    merkle_roots : bool
        Hash each status root's Merkle root (the indexer's ``RootState.root``, from the leaves' columns:
        about 3 ms a step for 1,000 accounts). Off by default: the twin checks no proof
        (``Liquidator.start`` reads the account's leaf, which is kept either way, as signatures are not
        checked), so nothing in it reads the hash, and the root posted is the zero hash.
    """

    name = "twin"

    def __init__(self, scenario: Scenario, listings: Sequence[ListInstrument] = (), *, setup_time: int | None = None,
                 lifetime: int = 120, merkle_roots: bool = False, risk_signers: int = 3,
                 risk_quorum: int = 2) -> None:  # fmt: skip
        t0 = scenario.run.start - SETUP_SECONDS + DEPLOY_TXS + 1 if setup_time is None else setup_time
        g = twin_genesis(scenario, risk_signers=risk_signers, risk_quorum=risk_quorum, setup_time=t0)
        self.scenario = scenario
        self.deployment = g.deployment
        self.ledger = Ledger(g.state, g.deployment.tokens, g.fund, heartbeat=g.feed.heartbeat,
                             max_delay=g.feed.max_delay, root_posted_at=t0 - (DEPLOY_TXS - VAULT_TX + 1),
                             num_underlyings=len(UNDERLYINGS))  # fmt: skip
        self.core = EngineCore(scenario.risk_config, g.deployment)
        self.lifetime = lifetime
        self.merkle_roots = merkle_roots
        self._margins = IncrementalMargins(self.core)
        self.core.im_hint = self._margins.im_hint  # a trade's "IM before" from the root's figures when they hold
        self._root_margins: tuple[list[str], MarginResult] | None = None
        self.last_bids: dict[str, object] = {}
        for k, spec in enumerate(listings):
            with_timestamp(self.ledger.state, k + 1, t0 + k)
            self.ledger.list_instrument(spec.kind, spec.underlying, spec.expiry, spec.strike, t0 + k)
        self._closed = False
        #: what the twin did: blocks (price, root and round blocks), rounds and attestations computed
        #: (accepted or refused); ``core.markets_built`` and ``_margins.stats`` have the engine's side
        self.stats = {"blocks": 0, "rounds": 0, "attestations": 0}

    # ------------------------------------------------------------------ roles
    @property
    def fund(self) -> str:
        """The insurance fund's account."""
        return self.ledger.fund

    @property
    def fee_collector(self) -> str:
        return self.ledger.state.fee_collector

    def token_address(self, symbol: str) -> str:
        return self.ledger.token(symbol).address

    # ------------------------------------------------------------------ time
    def _mine(self, when: int) -> None:
        """Start a new block at ``when`` (what the engine indexes afterwards)."""
        if when < self.ledger.state.timestamp:
            raise PmsimError(f"time runs forward: block at {when} after one at {self.ledger.state.timestamp}")
        with_timestamp(self.ledger.state, self.ledger.state.block + 1, when)
        self.stats["blocks"] += 1

    def _window(self) -> tuple[int, int]:
        """``Engine._window``: issued at the indexed block's time, valid min(lifetime, attestationMaxAge).

        Every attestation asks for its window first: the block's market is handed to the engine core
        then (:meth:`_share_market`), so a round that attests nothing (deposits, listings, auction
        starts, settlements) builds no market."""
        self._share_market()
        max_age = self.ledger.state.params.attestation_max_age if self.ledger.state.params else self.lifetime
        return self.ledger.state.timestamp, self.ledger.state.timestamp + min(self.lifetime, max_age)

    # ------------------------------------------------------------------ Backend
    def begin_step(self, step: int, step_start: int, prices: Sequence[int]) -> None:
        n = len(UNDERLYINGS)
        if len(prices) != n or any(int(x) <= 0 or int(x) % TICK for x in prices):
            raise InputError("prices", f"expected {n} positive prices on the tick grid (1e18), got {list(prices)}")
        t = price_time(step_start)
        self._mine(t)
        self.ledger.post_prices(t, [int(p) for p in prices], t)
        self.ledger.fix_due_settlements(t)
        self._post_root(root_time(step_start))

    def _post_root(self, when: int) -> None:
        """``Engine.run_round``: the root of the engine's figures on the state now, posted at ``when``."""
        s = self.ledger.state
        self._root_margins = None
        if s.prices.round == 0 or not rules.feed_fresh(s.feed_fresh_until, s.timestamp) or not s.accounts:
            self._mine(when)
            return
        self._root_margins = self.margins()
        leaves = self._leaves(*self._root_margins)
        issued, expiry = self._window()
        root = leaves.merkle_root() if self.merkle_roots else b"\x00" * 32
        self._mine(when)
        self.ledger.post_root(leaves, root, s.prices.round, issued, expiry, when)

    def status_leaves(self) -> LazyLeaves:
        """Every account's status leaf now (``EngineCore.status_leaves``), built when first read."""
        return self._leaves(*self.margins())

    def _leaves(self, addresses: list[str], result: MarginResult) -> LazyLeaves:
        s = self.ledger.state
        figures = {a: (i, s.accounts[a].risk_nonce, s.accounts[a].deposit_credit) for i, a in enumerate(addresses)}
        return LazyLeaves(figures, result)

    def apply(self, when: int, intents: Sequence[Intent]) -> list[Outcome]:
        seen: set[str] = set()
        for intent in intents:
            twice = seen.intersection(accounts_of(intent))
            if twice:
                raise InputError("intents", f"account {sorted(twice)[0]} appears twice in one round (use schedule())")
            seen.update(accounts_of(intent))
        self.stats["rounds"] += 1
        proofs: list[object] = [self._attest(i) for i in intents]
        self._mine(when)
        out = []
        for intent, proof in zip(intents, proofs, strict=True):
            if isinstance(proof, Outcome):
                out.append(proof)
                continue
            try:
                detail = self._execute(intent, proof, when)
            except ContractRevertError as exc:
                out.append(Outcome(intent, False, exc.error_name, str(exc)))
                continue
            out.append(Outcome(intent, True, "", detail))
        return out

    def _share_market(self) -> None:
        """Hand the engine core the margins' market of this block (the same inputs, so the same market),
        so that its attestations do not build it a second time (the margins keep it for the root)."""
        s = self.ledger.state
        if s.prices.round == 0:
            return
        key = (s.block, s.block_hash, s.prices.round, s.params_hash)
        if key not in self.core._engines:
            self.core._engines[key] = self._margins.engine(s)
            while len(self.core._engines) > 4:
                self.core._engines.popitem(last=False)

    def _attest(self, intent: Intent) -> object:
        """The engine's attestations for ``intent`` on the state before the round, or its refusal."""
        s = self.ledger.state
        try:
            if isinstance(intent, StartAuction | RefreshAuction):
                root = self.ledger.root
                if root is None or intent.account not in root.leaves:
                    return Outcome(intent, False, "NoStatusLeaf", f"{intent.account} has no leaf in the latest root")
                return None
            if isinstance(intent, Trade):
                if intent.size <= 0:
                    return Outcome(intent, False, "Input", "size: must be positive")
                p = s.params
                assert p is not None
                maker_delta = -intent.size if intent.taker_buys else intent.size
                sides = ((intent.maker, maker_delta, p.maker_fee), (intent.taker, -maker_delta, p.taker_fee))
                atts = []
                issued, expiry = self._window()
                for account, delta, rate in sides:
                    req = TradeRequest(
                        account, intent.instrument, delta, intent.price, rules.fee(delta, intent.price, rate)
                    )
                    self.stats["attestations"] += 1
                    atts.append(checked_attestation(self.core, s, req, issued, expiry))
                return tuple(atts)
            if isinstance(intent, Withdraw):
                acct = s.accounts.get(intent.account)
                if acct is None or not (acct.positions or acct.cash < 0):
                    return None
                issued, expiry = self._window()
                req_w = WithdrawRequest(intent.account, self.token_address(intent.token), intent.amount)
                self.stats["attestations"] += 1
                return checked_attestation(self.core, s, req_w, issued, expiry)
            if isinstance(intent, Bid):
                auction = self.ledger.auction(intent.account)
                req_b = BidRequest(intent.keeper, intent.account, auction.version, intent.fraction, intent.worst_price)
                issued, expiry = self._window()
                self.stats["attestations"] += 1
                return checked_attestation(self.core, s, req_b, issued, expiry, auction)
        except ContractRevertError as exc:
            return Outcome(intent, False, exc.error_name, str(exc))
        except PmsimError as exc:
            return Outcome(intent, False, refusal(exc), str(exc))
        return None

    def _execute(self, intent: Intent, proof: object, when: int) -> str:
        led = self.ledger
        if isinstance(intent, Deposit):
            credit = led.deposit(intent.account, intent.token, intent.amount, when)
            return f"credit={credit}"
        if isinstance(intent, Withdraw):
            assert proof is None or isinstance(proof, Attestation)
            taken = led.withdraw(intent.account, intent.token, intent.amount, when, proof)
            return f"amount={taken}"
        if isinstance(intent, Trade):
            assert isinstance(proof, tuple)
            maker_fee, taker_fee = led.trade(intent.maker, intent.taker, intent.instrument, intent.size, intent.price,
                                             intent.taker_buys, when, proof[0], proof[1])  # fmt: skip
            return f"maker_fee={maker_fee} taker_fee={taker_fee}"
        if isinstance(intent, ListInstrument):
            iid = led.list_instrument(intent.kind, intent.underlying, intent.expiry, intent.strike, when)
            return f"id={iid}"
        if isinstance(intent, StartAuction):
            a = led.start(intent.account, when)
            return f"insolvent={a.insolvent} mtm_equity={a.mtm_equity} equity={a.equity} mm={a.maintenance_margin}"
        if isinstance(intent, RefreshAuction):
            fresh = led.refresh(intent.account, when)
            if fresh is None:
                return "ended=True"
            f = fresh
            return f"version={f.version} insolvent={f.insolvent} equity={f.equity} mm={f.maintenance_margin}"
        if isinstance(intent, Bid):
            assert isinstance(proof, Attestation)
            version = led.auction(intent.account).version
            r = led.bid(intent.keeper, intent.account, intent.fraction, intent.worst_price, version, when, proof)
            return (f"price={r.price} fee={r.fee} discount={r.discount} fund_draw={r.fund_draw} "
                    f"socialised={r.socialised} unrecovered={r.unrecovered} ended={r.ended}")  # fmt: skip
        if isinstance(intent, Settle):
            n = led.settle(intent.instrument, intent.accounts, when)
            return f"settled={n}"
        raise PmsimError(f"unknown intent {intent!r}")

    def state(self) -> ProtocolState:
        """The twin's live state (not a copy: read it, copy it to keep it past the next step)."""
        return self.ledger.state

    def margins(self) -> tuple[list[str], MarginResult]:
        dirty, funding = self.ledger.take_dirty()
        return self._margins.compute(self.ledger.state, dirty, funding)

    def root_margins(self) -> tuple[list[str], MarginResult]:
        return self._root_margins if self._root_margins is not None else self.margins()

    def auctions(self) -> dict[str, AuctionRecord]:
        return {a: AuctionRecord(a, v.version, v.emergency, v.rules_state(), v.credit, v.nonce)
                for a, v in self.ledger.auctions.items()}  # fmt: skip

    def close(self) -> None:
        self._closed = True


# ---------------------------------------------------------------------- measuring the twin
def grid_only(scenario: Scenario) -> Scenario:
    """``scenario`` with the grid-only risk rule (no tail scenarios: ``es.method = "none"``)."""
    cfg = scenario.risk_config
    return replace(scenario, risk_config=replace(cfg, es=replace(cfg.es, method="none")))


def bench_twin(scenario: Scenario, accounts: int = 1_000, steps: int = 100, *, trades_per_step: int = 50,
               seed: int = 0, reference_every: int = 10) -> dict[str, float]:  # fmt: skip
    """Time the twin on a synthetic book: ``accounts`` funded accounts, one perpetual position each
    (pairs), ``trades_per_step`` fills a step between random pairs at the index, hourly seeded price
    moves, and every account's margins each step (``margins()``).

    Returns the seconds per step of the twin (``twin_step``: begin_step with its status root, the
    rounds, margins), of its margins alone after the rounds (``margins``), and of the plain reference,
    ``EngineCore.compute_all`` from scratch on the same state (``reference``, a fresh core, measured on
    every ``reference_every``-th step), with ``steps`` and ``accounts``.
    """
    rng = np.random.default_rng(seed)
    listings = [ListInstrument(int(Kind.PERP), u, 0, 0) for u in range(len(UNDERLYINGS))]
    tw = TwinBackend(scenario, listings, merkle_roots=False)
    ref = EngineCore(scenario.risk_config, tw.deployment)
    names = [sim_account(seed, i)[0] for i in range(accounts)]
    spot = np.array([60_000.0, 3_000.0])
    step_s = scenario.run.step_seconds
    t = scenario.run.start

    def ticks() -> list[int]:
        return [int(x * 1000) * 10**15 for x in spot]

    tw.begin_step(0, t, ticks())
    for k, rnd in enumerate(schedule([Deposit(a, "USDC", 1_000_000 * 10**6) for a in names])):
        tw.apply(round_time(t, k), rnd)
    opening = [Trade(names[i], names[i + 1], 1 + (i // 2) % 2, 10**17 * (1 + i % 7), ticks()[(i // 2) % 2], i % 4 == 0)
               for i in range(0, accounts - 1, 2)]  # fmt: skip
    tw.apply(round_time(t, 1), opening)
    tw.margins()
    twin = margins_s = reference = 0.0
    measured = 0
    for step in range(1, steps + 1):
        t += step_s
        spot *= np.exp(rng.normal(0.0, 0.004, spot.size))
        px = ticks()
        intents: list[Intent] = []
        for _ in range(trades_per_step):
            i = int(rng.integers(0, accounts - 1))
            u = int(rng.integers(0, 2))
            intents.append(Trade(names[i], names[i + 1], 1 + u, 10**16 * int(rng.integers(1, 20)), px[u],
                                 bool(rng.integers(0, 2))))  # fmt: skip
        t0 = time.perf_counter()
        tw.begin_step(step, t, px)
        for k, rnd in enumerate(schedule(intents)):
            tw.apply(round_time(t, k), rnd)
        t1 = time.perf_counter()
        tw.margins()
        t2 = time.perf_counter()
        twin += t2 - t0
        margins_s += t2 - t1
        if step % reference_every == 0:
            ref.compute_all(tw.state())
            reference += time.perf_counter() - t2
            measured += 1
    return {"accounts": float(accounts), "steps": float(steps), "twin_step": twin / steps,
            "margins": margins_s / steps, "reference": reference / max(measured, 1)}  # fmt: skip
