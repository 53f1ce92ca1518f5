"""The simulator's step loop: a scenario's market and agents driven through one backend.

:func:`run` creates the agents' accounts (``sim_account(seed, i)``, agent ``i`` in population
order), deposits their capital at step 0 beside the listing of the perpetuals and the first option
series, and then, at every step ``k`` of the market path:

1. moves the impacted market to step ``k`` (:class:`~offchain.sim.impact.ImpactState`: the path's
   price plus the permanent and decaying temporary impact of earlier fills) and posts its prices
   (``backend.begin_step``: price round, due settlement prices, status root);
2. reads the margins at the status root and lists the option series the agents need (round 0);
3. collects every population's orders and intents (:mod:`offchain.sim.agents`), has the market
   makers fill the orders, and applies them in rounds (:func:`~offchain.sim.backend.schedule`);
   every fill moves the impacted market by the square-root law, a keeper's unwind of what it
   bought in a liquidation as a *liquidation* impact (the cascades' source);
4. the keepers bid in the active auctions (next rounds), then every expired option series is
   settled for its holders, then the keepers bid again, later in the step, at the first second a bid
   pays in an auction still open (as a keeper watching every block would), before the next price round;
5. the metrics read the state after the step (:mod:`offchain.sim.metrics`).

The record goes into a run folder (:func:`offchain.sim.record.write_run`), by default
``runs/<name>-seed<N>-<backend>/``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from offchain import __version__, rules
from offchain.chain.client import Deployment
from offchain.chain.indexer import PriceState, ProtocolState
from offchain.chain.units import price_to_tick
from offchain.engine.core import EngineCore
from offchain.engine.liquidation import auction_params
from offchain.errors import InputError
from offchain.protocol import WAD, Kind
from offchain.risk.engine import MarginResult
from offchain.risk.fixed_point import attested_figures
from offchain.sim import agents as ag
from offchain.sim.backend import (
    AuctionRecord,
    Backend,
    Bid,
    Intent,
    ListInstrument,
    Outcome,
    Settle,
    StartAuction,
    Trade,
    Withdraw,
    round_time,
    schedule,
    sim_account,
)
from offchain.sim.impact import ImpactState, apply_impact
from offchain.sim.metrics import Metrics, fraction, money
from offchain.sim.record import LiquidationRecord, RunRecord, write_run
from offchain.sim.scenario import AgentPopulation, Scenario, resolve

Progress = Callable[[int, int], None]
SETTLE_BATCH = 32  # accounts per Settle intent
LATE_BID_ROUNDS = 16  # rounds of keeper bids after a step's own rounds (Runner.late_bids), at most
#: The market maker added when a scenario has none, so that every order has a counterparty.
HOUSE_MAKER = AgentPopulation("market_maker", "house market maker", 1, 2_000_000.0, (250_000.0, 250_000.0), (),
                              {"spread_bps": 10.0, "inventory_limit": 1e7, "requote_every_steps": 1})  # fmt: skip


def default_folder(scenario: Scenario, backend: str) -> Path:
    """``runs/<name>-seed<N>-<backend>``."""
    return Path("runs") / f"{scenario.run.name}-seed{scenario.run.seed}-{backend}"


def initial_listings(scenario: Scenario) -> list[ListInstrument]:
    """The instruments listed at deployment (step 0), in order: one perpetual per underlying, then the
    option series the agents write or buy at the first prices (sorted). Both backends list exactly
    these in step 0's first round, before the deposits; later series are listed as they are needed."""
    path = scenario.market_path()
    prices = tuple(price_to_tick(float(p)) for p in path.prices[0])
    start = int(path.times[0])
    state = ProtocolState(quote="", block=0, timestamp=start, prices=PriceState(1, start, prices))
    market = ag.Market(state, scenario.risk_config, scenario.underlyings, path.iv[0], start)
    view = ag.StepView(0, start, start, state, [], _no_margins(), path.prices[:1], market)
    keys: set[ag.SeriesKey] = set()
    for p in populations(scenario, scenario.run.seed):
        keys |= p.listings(view)
    perps = [ListInstrument(int(Kind.PERP), u, 0, 0) for u in range(len(scenario.underlyings))]
    return perps + [ListInstrument(*k) for k in sorted(keys)]


def make_backend(name: str, scenario: Scenario, seed: int | None = None) -> Backend:
    """The backend called ``name`` for ``scenario`` (run with ``seed``, default ``run.seed``):
    ``twin``, :class:`offchain.sim.twin.TwinBackend`; ``chain``,
    :class:`offchain.sim.chain_backend.ChainBackend` (a fresh Anvil). Both start with nothing listed:
    the runner lists the perpetuals and the first series as step 0's first round
    (:func:`initial_listings`), the same intents on both.

    Raises
    ------
    InputError
        An unknown name (field ``backend``).
    """
    if seed is not None:
        scenario = dataclasses.replace(scenario, run=dataclasses.replace(scenario.run, seed=seed))
    if name == "twin":
        from offchain.sim.twin import TwinBackend

        return TwinBackend(scenario)
    if name == "chain":
        from offchain.sim.chain_backend import ChainBackend  # type: ignore[import-not-found,unused-ignore]

        return ChainBackend(scenario, seed=scenario.run.seed)  # type: ignore[no-any-return,unused-ignore]
    raise InputError("backend", f"must be 'twin' or 'chain', got {name!r}")


def _deployment(backend: Backend) -> Deployment | None:
    dep = getattr(backend, "deployment", None)
    return dep if isinstance(dep, Deployment) else None


def _no_margins() -> MarginResult:
    """The figures of no account."""
    f = np.zeros(0)
    return MarginResult(f, f, f, f, f, f, f, f, f, np.zeros(0, dtype=np.int64), f, f, f)


def populations(scenario: Scenario, seed: int) -> list[ag.Population]:
    """The scenario's populations with their accounts and generators (one spawned per population);
    a house market maker is appended when the scenario has none."""
    pops = list(scenario.agents)
    if not any(p.kind == "market_maker" for p in pops):
        pops.append(dataclasses.replace(HOUSE_MAKER, underlyings=scenario.underlyings))
    rngs = np.random.SeedSequence(seed).spawn(len(pops))
    min_size = scenario.protocol_params()[0].min_position_size
    out: list[ag.Population] = []
    index = 0
    for pop, ss in zip(pops, rngs, strict=True):
        accounts = [sim_account(seed, index + j)[0] for j in range(pop.count)]
        index += pop.count
        out.append(ag.KINDS[pop.kind](pop, accounts, np.random.default_rng(ss), scenario.underlyings, min_size))
    return out


class _Loop:
    """One run's moving parts (see the module notes)."""

    def __init__(self, scenario: Scenario, backend: Backend) -> None:
        self.sc = scenario
        self.backend = backend
        self.path = scenario.market_path()
        self.impact = ImpactState(scenario.impact, self.path)
        self.market_only = ImpactState(scenario.impact, self.path)  # without liquidation impact
        self.pops = populations(scenario, scenario.run.seed)
        self.makers = [p for p in self.pops if isinstance(p, ag.MarketMakers)]
        self.keepers = [p for p in self.pops if isinstance(p, ag.Keepers)]
        dep = _deployment(backend)
        self.deployment = dep
        self.decimals = {s: t.decimals for s, t in dep.tokens.items()} if dep else dict(ag.TOKEN_DECIMALS)
        self.collateral = {}
        for c in scenario.risk_config.collateral:
            if c.underlying and c.underlying in scenario.underlyings:
                self.collateral[scenario.underlyings.index(c.underlying)] = c.symbol
        fund = getattr(backend, "fund", None)
        if not isinstance(fund, str):
            fund = dep.contracts.get("InsuranceFund", "") if dep else ""
        self.metrics = Metrics(scenario.underlyings, fund, scenario.run.step_seconds)
        self.core = EngineCore(scenario.risk_config, dep) if dep else None
        self.history = np.zeros((scenario.run.steps, len(scenario.underlyings)))
        self.settled: set[int] = set()  # expired series settled for every holder
        self.depth: dict[str, int] = {}  # account in auction -> its cascade depth
        self.liq_depth = -1  # deepest liquidation whose unwind moved the price so far

    # ------------------------------------------------------------------ helpers
    def apply(self, step_start: int, r: int, intents: list[Intent]) -> tuple[int, list[Outcome]]:
        """``intents`` in rounds from round ``r`` (at :func:`round_time`); the next round and the outcomes."""
        first = round_time(step_start, r)
        after, timed = self.apply_from(step_start, first, intents)
        return r + after - first, [o for _, o in timed]

    def apply_from(self, step_start: int, first: int, intents: list[Intent]) -> tuple[int, list[tuple[int, Outcome]]]:
        """``intents`` in rounds at seconds ``first``, ``first + 1``, …, all before the next step's price
        round; the next free second and every outcome with its round's time."""
        end = step_start + self.sc.run.step_seconds
        out: list[tuple[int, Outcome]] = []
        at = first
        for batch in schedule(intents):
            if at >= end:
                rounds = at - step_start - 1
                raise InputError("run.step_seconds", f"a step of {self.sc.run.step_seconds} s cannot hold {rounds} "
                                 "rounds of intents: use longer steps or fewer agents")  # fmt: skip
            out.extend((at, o) for o in self.backend.apply(at, batch))
            at += 1
        for _, o in out:
            if not o.ok:
                self.metrics.on_refusal(o.error)
        return at, out

    def view(self, step: int, step_start: int, when: int, addresses: list[str],
             margins: MarginResult) -> ag.StepView:  # fmt: skip
        state = self.backend.state()
        market = ag.Market(state, self.sc.risk_config, self.sc.underlyings, self.path.iv[step], when)
        return ag.StepView(step, step_start, when, state, addresses, margins, self.history[: step + 1], market)

    def cascade_depth(self, state: ProtocolState, account: str) -> int:
        """0 if ``account`` breaches at the prices without the liquidations' impact, else 1 + the
        deepest liquidation that moved the price (the counterfactual figures from the engine)."""
        if self.liq_depth < 0 or self.core is None:
            return 0
        cf = [price_to_tick(float(p)) for p in self.market_only.prices()]
        if cf == list(state.prices.prices):
            return 0
        cf_state = dataclasses.replace(state, prices=PriceState(state.prices.round, state.prices.timestamp, tuple(cf)),
                                       block_hash=f"{state.block_hash}:counterfactual")  # fmt: skip
        acct = state.accounts[account]
        m = self.core.engine(cf_state).account(self.core.account_state(cf_state, acct))
        f = attested_figures(m.margin_equity, m.mtm_equity, m.im, m.mm)
        breached = rules.liquidatable(f.margin_equity, f.mm, acct.deposit_credit, acct.deposit_credit)
        return 0 if breached else self.liq_depth + 1

    def impact_of(self, state: ProtocolState, trade: Trade, order: ag.Order, market: ag.Market) -> None:
        ins = state.instruments[trade.instrument]
        signed = ag.usd(order.size) * market.spot[ins.underlying]
        if ins.kind in (Kind.CALL, Kind.PUT):
            signed *= market.delta(trade.instrument)
        apply_impact(self.impact, ins.underlying, signed)
        if order.depth < 0:
            apply_impact(self.market_only, ins.underlying, signed)
        else:
            self.liq_depth = max(self.liq_depth, order.depth)

    # ------------------------------------------------------------------ the step
    def step(self, step: int) -> None:
        sc, backend = self.sc, self.backend
        step_start = int(self.path.times[step])
        self.impact.advance(step)
        self.market_only.advance(step)
        prices = [price_to_tick(float(p)) for p in self.impact.prices()]
        backend.begin_step(step, step_start, prices)
        self.history[step] = [ag.usd(p) for p in prices]
        # at step 0 nothing is listed or held yet: the figures are read after the setup rounds
        addresses, margins = backend.root_margins() if step else ([], _no_margins())
        r = 0
        view = self.view(step, step_start, round_time(step_start, 0), addresses, margins)
        listings: list[Intent] = []
        if step == 0:
            listings += [ListInstrument(int(Kind.PERP), u, 0, 0) for u in range(len(sc.underlyings))
                         if u not in view.market.perp]  # fmt: skip
        keys: set[ag.SeriesKey] = set()
        for p in self.pops:
            keys |= p.listings(view)
        listings += [ListInstrument(*k) for k in sorted(keys) if k not in view.market.series]
        if step == 0:
            for p in self.pops:
                listings += p.initial_deposits(view.market.spot, self.decimals, self.collateral)
        if listings:
            r, _ = self.apply(step_start, r, listings)
        if step > 0:
            r = self.trade(step, step_start, r, addresses, margins)
        r = self.settle(step_start, r)
        if step > 0:
            self.late_bids(step, step_start, r, addresses, margins)
        if step == 0:
            addresses, margins = backend.margins()
        self.metrics.end_step(backend.state(), addresses, margins)

    def trade(self, step: int, step_start: int, r: int, addresses: list[str], margins: MarginResult) -> int:
        view = self.view(step, step_start, round_time(step_start, r), addresses, margins)
        orders: list[ag.Order] = []
        intents: list[Intent] = []
        for p in self.pops:
            wants, sends = p.decide(view)
            orders += wants
            intents += sends
        # an account in an auction knows it is frozen: it sends no order and no withdrawal
        accounts = view.state.accounts
        frozen = {a for a, acct in accounts.items() if acct.frozen}
        if frozen:
            orders = [o for o in orders if o.account not in frozen]
            intents = [i for i in intents if not (isinstance(i, Withdraw) and i.account in frozen)]
            intents += self.refreshes(view)
        fills: list[tuple[Trade, ag.Order]] = []
        if self.makers:
            fills = self.makers[0].fill(view, orders) if len(self.makers) == 1 else self._fill_many(view, orders)
        by_trade = {id(t): o for t, o in fills}
        state = view.state
        for intent in intents:
            if isinstance(intent, StartAuction):
                self.depth[intent.account] = self.cascade_depth(state, intent.account)
        r, outcomes = self.apply(step_start, r, intents + [t for t, _ in fills])
        for out in outcomes:
            if out.ok and isinstance(out.intent, Trade):
                self.metrics.on_trade(state, out.intent.size, out.intent.price)
                self.impact_of(state, out.intent, by_trade[id(out.intent)], view.market)
        if not self.keepers:
            return r
        auctions = self.backend.auctions()
        if not auctions:
            return r
        when = round_time(step_start, r)
        view = self.view(step, step_start, when, addresses, margins)
        bids: list[Intent] = []
        for k in self.keepers:
            bids += k.bids(view, auctions, when)
        if not bids:
            return r
        return r + self.bid(step, step_start, when, bids, auctions, view.state) - when

    def refreshes(self, view: ag.StepView) -> list[Intent]:
        """The keepers' refreshes of the auctions whose snapshot went stale (``Keepers.refreshes``), one per
        auction: the first keeper population takes it. Their leaves are the step's root's, at the nonce
        the accounts still have (a frozen account sends no order)."""
        if not self.keepers:
            return []
        auctions = self.backend.auctions()
        out: list[Intent] = []
        done: set[str] = set()
        for k in self.keepers:
            mine = k.refreshes(view, auctions, done)
            done.update(r.account for r in mine)
            out += mine
        return out

    def late_bids(self, step: int, step_start: int, r: int, addresses: list[str], margins: MarginResult) -> None:
        """The keepers' bids later in the step: at the first second a bid pays in an auction nobody bid
        in yet (:meth:`offchain.sim.agents.Keepers.next_bid_time`), as a keeper watching every block
        would, while it lands before the next price round; at most :data:`LATE_BID_ROUNDS` a step."""
        if not self.keepers:
            return
        now, end = round_time(step_start, r), step_start + self.sc.run.step_seconds
        for _ in range(LATE_BID_ROUNDS):
            auctions = self.backend.auctions()
            if not auctions:
                return
            view = self.view(step, step_start, now, addresses, margins)
            times = [t for k in self.keepers if (t := k.next_bid_time(view, auctions, now)) is not None]
            if not times or min(times) >= end:
                return
            at = min(times)
            view = self.view(step, step_start, at, addresses, margins)
            bids: list[Intent] = [b for k in self.keepers for b in k.bids(view, auctions, at)]
            if not bids or at + len(schedule(bids)) > end:
                return
            if at - 1 > now:
                # the chain went on producing blocks meanwhile: the engine attests the bids on the block
                # just before theirs (an attestation of an older block would have expired)
                self.backend.apply(at - 1, [])
            now = self.bid(step, step_start, at, bids, auctions, self.backend.state())

    def bid(self, step: int, step_start: int, first: int, bids: list[Intent], auctions: dict[str, AuctionRecord],
            before: ProtocolState) -> int:  # fmt: skip
        """Apply ``bids`` in rounds from second ``first`` and record each liquidation that moved positions
        (its price, fee and discount at its round's time, the fund draw and socialised loss it caused);
        returns the next free second. ``before`` is the state before them (the backend's moves on)."""
        lp = before.liquidation
        fund_cash = self.metrics.fund_cash(before)
        index = before.prices.prices
        notional = {b.account: sum(abs(rules.value(rules.moved_size(pos.size, b.fraction),
                                                   index[before.instruments[i].underlying]))
                                   for i, pos in before.accounts[b.account].positions.items())
                    for b in bids if isinstance(b, Bid)}  # fmt: skip
        cash = self.metrics.cash_base(before) if any(a.state.insolvent for a in auctions.values()) else (0, 0)
        loss_index = before.loss_index
        after, outcomes = self.apply_from(step_start, first, bids)
        for at, out in outcomes:
            if not (out.ok and isinstance(out.intent, Bid)) or lp is None:
                continue
            b = out.intent
            rec = auctions[b.account]
            price, fee = rules.bid_price(rec.state, b.fraction, at, auction_params(lp))
            worth = rules.mul_div_floor_signed(rec.state.mtm_equity, b.fraction, WAD)
            depth = self.depth.get(b.account, 0)
            for k in self.keepers:
                if b.keeper in k.accounts:
                    k.depth[b.keeper] = max(k.depth.get(b.keeper, 0), depth)
            disc = "0" if worth == 0 else str(round((worth - price) / abs(worth), 6))
            record = LiquidationRecord(step, at, b.account, b.keeper, fraction(b.fraction), money(price), money(fee),
                                       "0", "0", money(notional[b.account]), disc, depth)  # fmt: skip
            drawn0, social0 = self.metrics.fund_draws, self.metrics.socialised
            fund_cash = self.metrics.on_bid(record, price=price, fee=fee, worth=worth, notional=notional[b.account],
                                            fund_cash=fund_cash, cash_base=cash, loss_index=loss_index)  # fmt: skip
            self.metrics.liquidations[-1] = dataclasses.replace(
                record, fund_draw_usd=money(self.metrics.fund_draws - drawn0),
                socialised_usd=money(self.metrics.socialised - social0))  # fmt: skip
        return after

    def _fill_many(self, view: ag.StepView, orders: list[ag.Order]) -> list[tuple[Trade, ag.Order]]:
        out: list[tuple[Trade, ag.Order]] = []
        left = list(orders)
        for m in self.makers:
            filled = m.fill(view, left)
            done = {id(o) for _, o in filled}
            out += filled
            left = [o for o in left if id(o) not in done]
        return out

    def settle(self, step_start: int, r: int) -> int:
        state = self.backend.state()
        due = {i for i, ins in state.instruments.items() if ins.kind != Kind.PERP and ins.expiry <= state.timestamp
               and i not in self.settled and state.settlement_price(i) is not None}  # fmt: skip
        if not due:
            return r
        holders: dict[int, list[str]] = {}
        for a, acct in state.accounts.items():
            for i in acct.positions:
                if i in due:
                    holders.setdefault(i, []).append(a)
        self.settled |= due - set(holders)
        intents: list[Intent] = []
        for i in sorted(holders):
            accts = sorted(holders[i])
            intents += [Settle(i, tuple(accts[n : n + SETTLE_BATCH])) for n in range(0, len(accts), SETTLE_BATCH)]
        if intents:
            r, _ = self.apply(step_start, r, intents)
        return r


def run(scenario: Scenario, backend: Backend, seed: int | None = None, progress: Progress | None = None,
        folder: Path | None = None, write: bool = True) -> RunRecord:  # fmt: skip
    """Run ``scenario`` on ``backend`` and write its run folder.

    Parameters
    ----------
    scenario : Scenario
    backend : Backend
        The twin or the chain (closed by the caller).
    seed : int, optional
        Overrides ``run.seed`` (market path, agents' draws and accounts).
    progress : callable, optional
        Called as ``progress(steps_done, steps)`` after every step.
    folder : Path, optional
        Run folder (default ``runs/<name>-seed<N>-<backend>``); ``write=False`` writes none.

    Returns
    -------
    RunRecord
    """
    if seed is not None:
        scenario = dataclasses.replace(scenario, run=dataclasses.replace(scenario.run, seed=seed))
    began = time.perf_counter()
    loop = _Loop(scenario, backend)
    steps = scenario.run.steps
    for k in range(steps):
        loop.step(k)
        if progress is not None:
            progress(k + 1, steps)
    m = loop.metrics
    m.keeper_gas_usd = sum(k.gas_usd_total for k in loop.keepers)
    record = RunRecord(
        name=scenario.run.name, seed=scenario.run.seed, backend=backend.name, version=__version__,
        start=int(loop.path.times[0]), step_seconds=scenario.run.step_seconds, steps=steps,
        underlyings=scenario.underlyings, scenario=resolve(scenario), summary=m.summary(), series=m.series,
        liquidations=m.liquidations, wall_seconds=round(time.perf_counter() - began, 3),
    )  # fmt: skip
    if write:
        write_run(record, folder or default_folder(scenario, backend.name))
    return record
