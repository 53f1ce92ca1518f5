r"""The simulator's agents: the populations of a scenario turned into intents, step by step.

Each ``[[agents]]`` population of a :class:`~offchain.sim.scenario.Scenario` becomes one
:class:`Population` of ``count`` accounts (``sim_account(seed, i)``, ``i`` in population order). At
every step the runner (:mod:`offchain.sim.runner`) hands every population the same
:class:`StepView` (the backend's state, the step's margins at its status root, the posted price
history and the path's implied volatility) and collects:

* **orders** (:class:`Order`): a signed size of an instrument an agent wants to trade. The market
  makers (:class:`MarketMakers`) are the counterparty of every order: they fill it at their quote
  (the model price plus or minus half the spread) within their inventory limits, as a
  :class:`~offchain.sim.backend.Trade` with the maker as ``maker``;
* **intents** sent directly: deposits, withdrawals, auction starts and bids (keepers);
* **listings** (:meth:`Population.listings`): the option series the writers and hedgers need this
  step, listed by the protocol before anyone decides.

Agents decide from the view only, and draw random numbers only from their population's own
``numpy.random.Generator`` (spawned from the run's seed), so two backends that agree on the state
produce the same intents. Sizes and prices are contract integers: sizes on the LOT grid (at least
``minPositionSize``), prices on the TICK grid, linear fills at the index plus or minus half the
spread (far inside the Exchange's 10 % band) and option fills within 90 % of the engine's model
band (``bands.option`` x spot around the engine's Black-76 value on its own surface) and within the
Exchange's no-arbitrage bounds.

Notes
-----
Expiries lie on a grid of 08:00 UTC each day: a series written at step start :math:`t_0` with a
tenor of :math:`n` days expires at the first 08:00 at or after :math:`t_0 + 86400 n`. Strikes lie on a
grid of :math:`5 \cdot 10^{\lfloor \log_{10} x \rfloor - 2}` USD (500 USD at 60,000; 50 USD at
3,000), so that agents of one population share a handful of series.

Keepers value gas with the README's per-operation figures (:data:`GAS`) at :data:`GAS_PRICE_GWEI`
gwei and the feed's ETH price (1 USD per unit when no ETH underlying is listed).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from offchain import rules
from offchain._typing import Float64Array
from offchain.chain.indexer import AccountState, ProtocolState
from offchain.engine.liquidation import auction_params
from offchain.keeper.config import ProfitConfig, UnwindConfig
from offchain.keeper.strategy import best_bid, earliest_profitable, gas_cost_quote
from offchain.models._fast import price_unchecked
from offchain.models.black76 import black76_greeks
from offchain.protocol import LOT, PRICE_SCALE, QUOTE_SCALE, SIZE_SCALE, TICK, WAD, Kind
from offchain.risk.config import RiskConfig
from offchain.risk.engine import MarginResult
from offchain.risk.fixed_point import quote_units_down, quote_units_up
from offchain.risk.market import SECONDS_PER_YEAR
from offchain.sim.backend import AuctionRecord, Bid, Deposit, Intent, RefreshAuction, StartAuction, Trade, Withdraw
from offchain.sim.scenario import AgentPopulation

DAY = 86_400
EXPIRY_HOUR = 8 * 3600  # options expire at 08:00 UTC
#: Gas of the operations a keeper pays for (README, "whole transaction (quorum 2)" and "liquidation").
GAS = {"start_auction": 243_211, "refresh_auction": 92_727, "bid": 320_804, "bid_per_position": 48_023,
       "trade": 283_816}  # fmt: skip
#: Gas price the keepers value gas at (gwei): a busy but not congested L1 block.
GAS_PRICE_GWEI = 20
QUOTE = "USDC"
#: Share of the engine's option band (``bands.option`` x spot) a market maker's option quote stays within.
BAND_USE = 0.9
#: Token decimals of the deployment's collateral (``offchain.chain.deploy``), used when the backend
#: has no deployment to ask.
TOKEN_DECIMALS = {"USDC": 6, "WBTC": 8, "WETH": 18}

SeriesKey = tuple[int, int, int, int]  # (kind, underlying, expiry, strike 1e18)


# ----------------------------------------------------------------------------- grids and units
def expiry_after(t: int) -> int:
    """The first 08:00 UTC at or after unix time ``t``."""
    day = (t - EXPIRY_HOUR + DAY - 1) // DAY
    return day * DAY + EXPIRY_HOUR


def strike_grid(x: float) -> int:
    """``x`` (USD > 0) rounded to the strike grid, as a 1e18 price (see the module notes)."""
    e = math.floor(math.log10(x)) - 2
    if e >= 0:
        step: int = 5 * 10**e
        return max(1, round(x / step)) * step * PRICE_SCALE
    tick_step = 5 * 10 ** (e + 3) if e >= -3 else 1  # the step in TICKs (0.001 USD)
    return max(1, round(x * 1000 / tick_step)) * tick_step * TICK


def lots(notional_usd: float, price_usd: float) -> int:
    """The size (1e18, on the LOT grid, rounded down) worth ``notional_usd`` at ``price_usd``."""
    if price_usd <= 0 or notional_usd <= 0:
        return 0
    return int(notional_usd / price_usd * (SIZE_SCALE // LOT)) * LOT


def usd(x: int) -> float:
    """A 1e18 integer (price or size) as a float."""
    return x / PRICE_SCALE


# ----------------------------------------------------------------------------- what agents see
@dataclass(frozen=True)
class Order:
    """``account`` wants to trade ``size`` (signed, 1e18, > 0 buys) of ``instrument``.

    ``depth`` is the cascade depth of the liquidation whose acquisition a keeper unwinds (-1 for an
    ordinary trade): the runner's impact bookkeeping reads it.
    """

    account: str
    instrument: int
    size: int
    depth: int = -1


class Market:
    """The instruments of a state with their prices: the engine's marks and the path-IV model's.

    ``engine_mark`` is what the engine values an instrument at (its own volatility surfaces,
    :func:`offchain.risk.pricing.value_instruments`' formula), ``model`` the Black-76 value at the
    path's implied volatility (what market makers quote around) and ``delta`` its Black-76 delta.
    """

    def __init__(self, state: ProtocolState, config: RiskConfig, symbols: Sequence[str], iv: Sequence[float],
                 now: int) -> None:  # fmt: skip
        self.state = state
        self.symbols = tuple(symbols)
        self.now = now
        self.index = state.prices.prices
        self.spot = [usd(p) for p in self.index]
        self.perp: dict[int, int] = {}
        self.series: dict[SeriesKey, int] = {}
        for i, ins in state.instruments.items():
            if ins.kind == Kind.PERP:
                self.perp.setdefault(ins.underlying, i)
            else:
                self.series.setdefault((int(ins.kind), ins.underlying, ins.expiry, ins.strike), i)
        self._config = config
        self._iv = [float(v) for v in iv]
        self._priced: dict[int, tuple[float, float, float]] = {}

    def underlying_index(self, symbol: str) -> int | None:
        return self.symbols.index(symbol) if symbol in self.symbols else None

    def live(self, instrument: int) -> bool:
        ins = self.state.instruments[instrument]
        return ins.kind == Kind.PERP or ins.expiry > self.now

    def _price(self, instrument: int) -> tuple[float, float, float]:
        hit = self._priced.get(instrument)
        if hit is None:
            self._price_options()
            hit = self._priced.get(instrument)
        if hit is None:  # a perpetual, a future, or an expired option (worth its intrinsic value to nobody here)
            s = self.spot[self.state.instruments[instrument].underlying]
            hit = self._priced[instrument] = (s, s, 1.0)
        return hit

    def _price_options(self) -> None:
        """Price every live option of the state at once (vectorised Black-76)."""
        rows = [(i, ins) for i, ins in self.state.instruments.items()
                if ins.kind in (Kind.CALL, Kind.PUT) and ins.expiry > self.now and i not in self._priced]  # fmt: skip
        if not rows:
            return
        u = np.array([ins.underlying for _, ins in rows])
        s = np.array(self.spot)[u]
        k = np.array([usd(ins.strike) for _, ins in rows])
        t = np.array([(ins.expiry - self.now) / SECONDS_PER_YEAR for _, ins in rows])
        call = np.array([ins.kind == Kind.CALL for _, ins in rows])
        ev = np.zeros(len(rows))
        for j, surface in enumerate(self._config.vol_surfaces()):
            at = u == j
            if at.any():
                ev[at] = surface.implied_vol(np.log(k[at] / s[at]), t[at])
        disc = np.exp(-self._config.rate * t)
        engine = price_unchecked(s, k, t, ev, call, disc)
        g = black76_greeks(s, k, t, np.array(self._iv)[u], call, self._config.rate)
        for n, (i, _) in enumerate(rows):
            self._priced[i] = (float(engine[n]), float(g.price[n]), float(g.delta[n]))

    def engine_mark(self, instrument: int) -> float:
        return self._price(instrument)[0]

    def model(self, instrument: int) -> float:
        return self._price(instrument)[1]

    def delta(self, instrument: int) -> float:
        return self._price(instrument)[2]


@dataclass
class StepView:
    """What every agent decides from at one step (see the module notes).

    Attributes
    ----------
    step, step_start, when : int
        Step number, its start time and the time of the first decision round.
    state : ProtocolState
        The backend's state after the step's price round and listings.
    addresses : list of str
        Accounts of ``margins``, in its row order.
    margins : MarginResult
        The engine's figures at the step's status root.
    history : ndarray
        Posted index prices (USD), one row per step so far (this one last).
    market : Market
    """

    step: int
    step_start: int
    when: int
    state: ProtocolState
    addresses: list[str]
    margins: MarginResult
    history: Float64Array
    market: Market
    row: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.row:
            self.row = {a: i for i, a in enumerate(self.addresses)}

    def account(self, address: str) -> AccountState:
        return self.state.accounts.get(address) or AccountState()

    def position(self, address: str, instrument: int | None) -> int:
        if instrument is None:
            return 0
        acct = self.state.accounts.get(address)
        pos = acct.positions.get(instrument) if acct is not None else None
        return pos.size if pos is not None else 0


def liquidatable_accounts(view: StepView) -> list[str]:
    """Accounts the step's status root proves liquidatable: ``rules.liquidatable`` on the leaf's
    figures (equity rounded down, MM up, as the engine's leaves) with the deposit credit unchanged
    since the root; accounts already frozen in an auction are left out. Sorted by address."""
    m = view.margins
    if not view.addresses:
        return []
    equity = quote_units_down(m.margin_equity, "margin_equity")
    mm = quote_units_up(m.mm, "mm")
    out = []
    for i in np.flatnonzero(equity < mm).tolist():
        a = view.addresses[i]
        acct = view.state.accounts[a]
        if not acct.frozen and rules.liquidatable(int(equity[i]), int(mm[i]), acct.deposit_credit, acct.deposit_credit):
            out.append(a)
    return sorted(out)


# ----------------------------------------------------------------------------- populations
class Population:
    """``count`` agents of one kind (the base: deposits the capital, trades nothing)."""

    kind = "base"

    def __init__(self, pop: AgentPopulation, accounts: Sequence[str], rng: np.random.Generator,
                 underlyings: Sequence[str], min_size: int) -> None:  # fmt: skip
        self.pop = pop
        self.accounts = list(accounts)
        self.rng = rng
        self.sizes = rng.uniform(pop.size[0], pop.size[1], len(self.accounts)) if pop.size[0] < pop.size[1] \
            else np.full(len(self.accounts), pop.size[0])  # fmt: skip
        idx = [underlyings.index(u) for u in pop.underlyings]
        self.underlying = [idx[j % len(idx)] for j in range(len(self.accounts))]
        self.min_size = min_size
        self.opt = pop.options
        self.setup()

    def setup(self) -> None:
        """Per-kind state and options (called at the end of ``__init__``)."""

    def initial_deposits(self, spot: Sequence[float], decimals: dict[str, int],
                         collateral: dict[int, str]) -> list[Intent]:  # fmt: skip
        units = round(self.pop.capital * QUOTE_SCALE)
        return [Deposit(a, QUOTE, units) for a in self.accounts]

    def listings(self, view: StepView) -> set[SeriesKey]:
        return set()

    def decide(self, view: StepView) -> tuple[list[Order], list[Intent]]:
        return [], []

    def _order(self, orders: list[Order], account: str, instrument: int, delta: int, current: int) -> None:
        """Append an order of ``delta`` unless it would leave a position below ``minPositionSize``."""
        if delta == 0:
            return
        new = current + delta
        if new != 0 and abs(new) < self.min_size:
            return
        orders.append(Order(account, instrument, delta))


class OptionBook(Population):
    """What option writers and delta hedgers share: one series per agent, written and rolled."""

    side = -1  # -1 writes (sells), +1 buys
    moneyness = 1.0
    tenor_days = 30
    roll_days = 1

    def setup(self) -> None:
        super().setup()
        self.current: list[int | None] = [None] * len(self.accounts)

    def _kind(self) -> Kind:
        return Kind.CALL

    def _key(self, view: StepView, u: int) -> SeriesKey:
        strike = strike_grid(view.market.spot[u] * self.moneyness)
        return (int(self._kind()), u, expiry_after(view.step_start + self.tenor_days * DAY), strike)

    def _needs_new(self, view: StepView, j: int) -> bool:
        cur = self.current[j]
        return cur is None or view.position(self.accounts[j], cur) == 0

    def listings(self, view: StepView) -> set[SeriesKey]:
        return {self._key(view, self.underlying[j]) for j in range(len(self.accounts)) if self._needs_new(view, j)}

    def _book(self, view: StepView, orders: list[Order]) -> None:
        for j, a in enumerate(self.accounts):
            cur = self.current[j]
            held = view.position(a, cur)
            if cur is not None and held != 0:
                expiry = view.state.instruments[cur].expiry
                if view.step_start >= expiry - self.roll_days * DAY and view.market.live(cur):
                    orders.append(Order(a, cur, -held))  # roll: close now, write the next series next step
                continue
            u = self.underlying[j]
            series = view.market.series.get(self._key(view, u))
            if series is None:
                continue
            size = lots(float(self.sizes[j]), view.market.spot[u])
            if size >= self.min_size:
                self.current[j] = series
                orders.append(Order(a, series, self.side * size))


class OptionWriter(OptionBook):
    """Covered calls (the underlying deposited as collateral) or cash-secured short puts."""

    kind = "option_writer"

    def setup(self) -> None:
        super().setup()
        self.moneyness = float(self.opt["moneyness"])
        self.tenor_days = int(self.opt["tenor_days"])
        self.roll_days = int(self.opt["roll_days"])
        self.covered = self.opt["strategy"] == "covered_call"

    def _kind(self) -> Kind:
        return Kind.CALL if self.covered else Kind.PUT

    def initial_deposits(self, spot: Sequence[float], decimals: dict[str, int],
                         collateral: dict[int, str]) -> list[Intent]:  # fmt: skip
        out = super().initial_deposits(spot, decimals, collateral)
        if not self.covered:
            return out
        for j, a in enumerate(self.accounts):
            token = collateral.get(self.underlying[j])
            if token is None:
                continue
            size = lots(float(self.sizes[j]), spot[self.underlying[j]])
            amount = size * 10 ** decimals[token] // SIZE_SCALE
            if amount > 0:
                out.append(Deposit(a, token, amount))
        return out

    def decide(self, view: StepView) -> tuple[list[Order], list[Intent]]:
        orders: list[Order] = []
        self._book(view, orders)
        return orders, []


class DeltaHedger(OptionBook):
    """Buys a call book and keeps its delta hedged with the perpetual within a band."""

    kind = "delta_hedger"
    side = 1

    def setup(self) -> None:
        super().setup()
        self.moneyness = float(self.opt["moneyness"])
        self.tenor_days = int(self.opt["tenor_days"])
        self.every = int(self.opt["hedge_every_steps"])
        self.band = float(self.opt["band"])

    def decide(self, view: StepView) -> tuple[list[Order], list[Intent]]:
        orders: list[Order] = []
        self._book(view, orders)
        if view.step % self.every:
            return orders, []
        for j, a in enumerate(self.accounts):
            u = self.underlying[j]
            perp = view.market.perp.get(u)
            cur = self.current[j]
            if perp is None:
                continue
            option_delta = 0.0
            if cur is not None and view.market.live(cur):
                option_delta = view.market.delta(cur) * usd(view.position(a, cur))
            target = -int(option_delta * (SIZE_SCALE // LOT)) * LOT
            held = view.position(a, perp)
            if abs(held - target) > max(self.band * abs(option_delta) * SIZE_SCALE, self.min_size):
                self._order(orders, a, perp, target - held, held)
        return orders, []


class LeveragedTrader(Population):
    """A leveraged perpetual trader (the base of the trend and mean-reversion traders)."""

    def setup(self) -> None:
        super().setup()
        self.lookback = int(self.opt["lookback_steps"])
        self.leverage = float(self.opt["leverage"])

    def _notional(self, view: StepView, j: int) -> float:
        """Agent ``j``'s position notional (USD): ``min(size, leverage × equity)``, its equity the margin
        equity of the step's root (the capital before the first root). A trader who lost sizes down, one
        with nothing left opens nothing, instead of sending orders its margin cannot carry."""
        row = view.row.get(self.accounts[j])
        equity = float(view.margins.margin_equity[row]) if row is not None else self.pop.capital
        return min(float(self.sizes[j]), self.leverage * max(equity, 0.0))


class TrendTrader(LeveragedTrader):
    """Long above the moving average of the index, short below; notional ``min(size, leverage x equity)``."""

    kind = "trend_trader"

    def setup(self) -> None:
        super().setup()
        self.every = int(self.opt.get("trade_every_steps", 1))

    def decide(self, view: StepView) -> tuple[list[Order], list[Intent]]:
        orders: list[Order] = []
        if view.step % self.every or len(view.history) <= self.lookback:
            return orders, []
        window = view.history[-self.lookback - 1 : -1]
        ma = window.mean(axis=0)
        m = view.market
        signs = [1 if m.spot[u] > ma[u] else -1 if m.spot[u] < ma[u] else 0 for u in range(len(m.spot))]
        accounts = view.state.accounts
        for j, a in enumerate(self.accounts):
            u = self.underlying[j]
            perp, sign = m.perp.get(u), signs[u]
            if perp is None or sign == 0:
                continue
            acct = accounts.get(a)
            pos = acct.positions.get(perp) if acct is not None else None
            held = pos.size if pos is not None else 0
            if held != 0 and (held > 0) == (sign > 0):
                continue
            target = sign * lots(self._notional(view, j), m.spot[u])
            self._order(orders, a, perp, target - held, held)
        return orders, []


class MeanReversionTrader(LeveragedTrader):
    """Opens against a move beyond ``entry_z`` standard deviations of the log index, closes inside ``exit_z``."""

    kind = "mean_reversion_trader"

    def setup(self) -> None:
        super().setup()
        self.entry = float(self.opt["entry_z"])
        self.exit = float(self.opt["exit_z"])

    def decide(self, view: StepView) -> tuple[list[Order], list[Intent]]:
        orders: list[Order] = []
        if len(view.history) <= self.lookback:
            return orders, []
        logs = np.log(view.history[-self.lookback - 1 : -1])
        mean, std = logs.mean(axis=0), logs.std(axis=0)
        m = view.market
        z = [(math.log(m.spot[u]) - mean[u]) / std[u] if std[u] > 0 else 0.0 for u in range(len(m.spot))]
        accounts = view.state.accounts
        for j, a in enumerate(self.accounts):
            u = self.underlying[j]
            perp, zu = m.perp.get(u), z[u]
            if perp is None:
                continue
            acct = accounts.get(a)
            pos = acct.positions.get(perp) if acct is not None else None
            held = pos.size if pos is not None else 0
            if held == 0 and abs(zu) > self.entry:
                self._order(orders, a, perp, -int(math.copysign(1, zu)) * lots(self._notional(view, j), m.spot[u]), 0)
            elif held != 0 and abs(zu) < self.exit:
                orders.append(Order(a, perp, -held))
        return orders, []


class Depositor(Population):
    """Deposits ``size`` with one probability per step and withdraws up to ``size`` with another."""

    kind = "depositor"

    def decide(self, view: StepView) -> tuple[list[Order], list[Intent]]:
        draws = self.rng.random((len(self.accounts), 2))  # drawn every step: a fixed stream
        p_in, p_out = float(self.opt["deposit_probability"]), float(self.opt["withdraw_probability"])
        out: list[Intent] = []
        loss_index = view.state.loss_index
        for j in np.flatnonzero((draws[:, 0] < p_in) | (draws[:, 1] < p_out)).tolist():
            a = self.accounts[j]
            amount = round(float(self.sizes[j]) * QUOTE_SCALE)
            if draws[j, 0] < p_in:
                out.append(Deposit(a, QUOTE, amount))
            if draws[j, 1] < p_out:
                cash = view.account(a).effective_cash(loss_index)
                if min(amount, cash) > 0:
                    out.append(Withdraw(a, QUOTE, min(amount, cash)))
        return [], out


class Keepers(Population):
    """Keepers: start auctions of the accounts the root proves liquidatable (after ``latency_steps``),
    bid the most profitable fraction the unwind liquidity and gas budget allow, and unwind what they
    acquire against the market makers, at most ``unwind_liquidity_usd`` of notional per step."""

    kind = "keeper"

    def setup(self) -> None:
        super().setup()
        self.latency = int(self.opt["latency_steps"])
        self.budget = float(self.opt["gas_budget_usd"])
        self.liquidity = float(self.opt["unwind_liquidity_usd"])
        self.min_profit = float(self.opt["min_profit_usd"])
        self.seen: dict[str, int] = {}
        self.spent: list[float] = [0.0] * len(self.accounts)  # gas spent this step, USD
        self.gas_usd_total = 0.0
        self.depth: dict[str, int] = {}  # keeper -> deepest cascade depth of what it holds

    def gas_usd(self, gas: int, view: StepView) -> float:
        return gas_cost_quote(gas, GAS_PRICE_GWEI * 10**9, _eth_price(view)) / QUOTE_SCALE

    def _pay(self, j: int, usd_cost: float) -> bool:
        if self.spent[j] + usd_cost > self.budget:
            return False
        self.spent[j] += usd_cost
        self.gas_usd_total += usd_cost
        return True

    def decide(self, view: StepView) -> tuple[list[Order], list[Intent]]:
        """Starts and unwinds (the bids come after, in :meth:`bids`, once the auctions exist)."""
        self.spent = [0.0] * len(self.accounts)
        mine = set(self.accounts)
        candidates = [a for a in liquidatable_accounts(view) if a not in mine]
        for a in list(self.seen):
            if a not in candidates:
                del self.seen[a]
        intents: list[Intent] = []
        start_gas = self.gas_usd(GAS["start_auction"], view)
        for n, a in enumerate(candidates):
            first = self.seen.setdefault(a, view.step)
            j = n % len(self.accounts)
            if view.step - first >= self.latency and self._pay(j, start_gas):
                intents.append(StartAuction(self.accounts[j], a))
        return self._unwinds(view), intents

    def refreshes(self, view: StepView, auctions: dict[str, AuctionRecord], skip: set[str]) -> list[RefreshAuction]:
        """Refresh each auction of another account whose snapshot went stale (the account's risk nonce
        moved under it: ``AuctionRecord.stale``), with its leaf of the step's root, keepers taken in turn,
        leaving out the accounts in ``skip`` (refreshed by another population). Without it every bid is
        refused and the auction never ends."""
        out: list[RefreshAuction] = []
        gas = self.gas_usd(GAS["refresh_auction"], view)
        mine = set(self.accounts)
        stale = [a for a, rec in sorted(auctions.items())
                 if a not in skip and a not in mine and rec.stale(view.state)]  # fmt: skip
        for n, a in enumerate(stale):
            j = n % len(self.accounts)
            if self._pay(j, gas):
                out.append(RefreshAuction(self.accounts[j], a))
        return out

    def _unwinds(self, view: StepView) -> list[Order]:
        orders: list[Order] = []
        for k in self.accounts:
            acct = view.state.accounts.get(k)
            if acct is None or acct.frozen:
                continue
            left = self.liquidity
            for iid in sorted(acct.positions):
                size = acct.positions[iid].size
                if not view.market.live(iid) or left <= 0:
                    continue
                ins = view.state.instruments[iid]
                s = view.market.spot[ins.underlying]
                if ins.kind in (Kind.CALL, Kind.PUT):
                    notional = abs(usd(size)) * max(view.market.model(iid), 0.01 * s)
                else:
                    notional = abs(usd(size)) * s
                take = size if notional <= left else int(math.copysign(lots(left, notional / abs(usd(size))), size))
                rest = size - take
                if take == 0 or (rest != 0 and abs(rest) < self.min_size):
                    continue
                left -= notional * take / size
                orders.append(Order(k, iid, -take, self.depth.get(k, 0)))
        return orders

    def bids(self, view: StepView, auctions: dict[str, AuctionRecord], when: int) -> list[Bid]:
        """One bid per active auction (keepers taken in turn), priced with the keeper's own rules
        (:func:`offchain.keeper.strategy.best_bid`) at ``when``, the earliest time it can land: the
        price a bidder pays only falls with time and the largest fraction only grows, so the bid still
        holds in a later round."""
        lp = view.state.liquidation
        if lp is None:
            return []
        ap = auction_params(lp)
        out: list[Bid] = []
        for n, (a, rec) in enumerate(self._theirs(view, auctions)):
            j = n % len(self.accounts)
            gas_usd, profit = self._costs(view, a, rec)
            plan = best_bid(self._snapshot(view, rec, when), when, ap, round(gas_usd * QUOTE_SCALE), profit,
                            UnwindConfig())  # fmt: skip
            if plan is None or not plan.profitable or plan.profit < self.min_profit * QUOTE_SCALE:
                continue
            if self._pay(j, gas_usd):
                out.append(Bid(self.accounts[j], a, plan.fraction, plan.price))
        return out

    def next_bid_time(self, view: StepView, auctions: dict[str, AuctionRecord], now: int) -> int | None:
        """The first second ≥ ``now`` at which a bid of these keepers pays in one of ``auctions``
        (:func:`offchain.keeper.strategy.earliest_profitable` with the keepers' costs and minimum
        profit), or None: a keeper watches every block and bids as soon as the auction pays it, not
        only at the step's own rounds. The gas budget is checked when the bid is made (:meth:`bids`)."""
        lp = view.state.liquidation
        if lp is None:
            return None
        ap = auction_params(lp)
        first: int | None = None
        for a, rec in self._theirs(view, auctions):
            gas_usd, profit = self._costs(view, a, rec)
            plan = earliest_profitable(self._snapshot(view, rec, now), now, ap, round(gas_usd * QUOTE_SCALE), profit,
                                       UnwindConfig(), math.ceil(self.min_profit * QUOTE_SCALE))  # fmt: skip
            if plan is not None and (first is None or plan.at < first):
                first = plan.at
        return first

    @staticmethod
    def _snapshot(view: StepView, rec: AuctionRecord, now: int) -> rules.AuctionState:
        """The auction as a bid at ``now`` prices it: deposits made since the snapshot credited
        (``rules.credited_auction``, ``Liquidator._credited``)."""
        return rules.credited_auction(rec.state, view.account(rec.account).deposit_credit - rec.credit, now)

    def _theirs(self, view: StepView, auctions: dict[str, AuctionRecord]) -> list[tuple[str, AuctionRecord]]:
        """The auctions of other accounts than the keepers' own that a bid can take (not stale), by address."""
        mine = set(self.accounts)
        return [(a, auctions[a]) for a in sorted(auctions) if a not in mine and not auctions[a].stale(view.state)]

    def _costs(self, view: StepView, account: str, rec: AuctionRecord) -> tuple[float, ProfitConfig]:
        """A bid's gas in USD (the README gas table, per position moved) and the profit rule, whose
        largest fraction is what the unwind liquidity can carry."""
        positions = max(1, len(view.account(account).positions))
        gas_usd = self.gas_usd(GAS["bid"] + GAS["bid_per_position"] * (positions - 1), view)
        exposure = (abs(rec.state.mtm_equity) + rec.state.maintenance_margin) / QUOTE_SCALE
        cap = 1.0 if exposure <= 0 else min(1.0, self.liquidity / exposure)
        return gas_usd, ProfitConfig(max_fraction=cap)


def _eth_price(view: StepView) -> int:
    """The feed's ETH price (1e18), or 1 USD if ETH is not an underlying of the run."""
    u = view.market.underlying_index("ETH")
    if u is None:
        return PRICE_SCALE
    return view.market.index[u]


class MarketMakers(Population):
    """Quote around the model price (Black-76 at the path's IV for options, the index for linear
    instruments) with ``spread_bps`` and fill every order as its maker, within ``inventory_limit``
    (USD of delta per underlying) and ``size`` (USD notional per fill)."""

    kind = "market_maker"

    def setup(self) -> None:
        super().setup()
        self.half_spread = float(self.opt["spread_bps"]) / 2 / 10_000
        self.limit = float(self.opt["inventory_limit"])
        self.requote = int(self.opt["requote_every_steps"])
        self._quotes: dict[tuple[int, bool], int] = {}
        self._quoted_at = -1

    def quote(self, view: StepView, instrument: int, taker_buys: bool) -> int:
        """The price (1e18, on TICK) the makers fill a taker at: re-quoted every ``requote_every_steps``
        (a quote made at an earlier step stands until then, even if the index has moved)."""
        if view.step - self._quoted_at >= self.requote or self._quoted_at < 0:
            self._quotes.clear()
            self._quoted_at = view.step
        key = (instrument, taker_buys)
        price = self._quotes.get(key)
        if price is None:
            price = self._quotes[key] = self._fresh_quote(view, instrument, taker_buys)
        return price

    def _fresh_quote(self, view: StepView, instrument: int, taker_buys: bool) -> int:
        m = view.market
        ins = view.state.instruments[instrument]
        index = m.index[ins.underlying]
        sign = 1 if taker_buys else -1
        if ins.kind in (Kind.PERP, Kind.FUTURE):
            half = int(usd(index) * self.half_spread * PRICE_SCALE) // TICK * TICK
            return index + sign * half
        s = m.spot[ins.underlying]
        raw = m.model(instrument) + sign * self.half_spread * s
        band = BAND_USE * _option_band(view) * s
        engine = m.engine_mark(instrument)
        raw = min(max(raw, engine - band), engine + band)
        bands = view.state.bands
        price = max(TICK, int(raw * (PRICE_SCALE // TICK)) * TICK)
        if bands is not None:
            low, high = rules.price_band(ins.kind, index, ins.strike, bands.linear)
            price = min(max(price, -(-low // TICK) * TICK), high // TICK * TICK)
        return max(price, TICK)

    def _inventory(self, view: StepView) -> list[list[float]]:
        n = len(view.market.spot)
        out = [[0.0] * n for _ in self.accounts]
        for j, a in enumerate(self.accounts):
            acct = view.state.accounts.get(a)
            if acct is None:
                continue
            for iid, pos in acct.positions.items():
                out[j][view.state.instruments[iid].underlying] += self._delta_usd(view, iid, pos.size)
        return out

    @staticmethod
    def _delta_usd(view: StepView, instrument: int, size: int) -> float:
        ins = view.state.instruments[instrument]
        if not view.market.live(instrument):
            return 0.0
        return usd(size) * view.market.delta(instrument) * view.market.spot[ins.underlying]

    def fill(self, view: StepView, orders: Iterable[Order]) -> list[tuple[Trade, Order]]:
        """The makers' fills of ``orders`` (maker taken in turn; refused over the limits)."""
        inv = self._inventory(view)
        out: list[tuple[Trade, Order]] = []
        n = len(self.accounts)
        for i, o in enumerate(orders):
            ins = view.state.instruments[o.instrument]
            if not view.market.live(o.instrument):
                continue
            for t in range(n):
                j = (i + t) % n
                maker = self.accounts[j]
                if maker == o.account or view.account(maker).frozen:
                    continue
                size = o.size
                cap = lots(float(self.sizes[j]), view.market.spot[ins.underlying])
                if abs(size) > cap and o.depth < 0:
                    continue
                d = -self._delta_usd(view, o.instrument, size)
                after = inv[j][ins.underlying] + d
                if abs(after) > self.limit and abs(after) > abs(inv[j][ins.underlying]):
                    continue
                inv[j][ins.underlying] = after
                buys = size > 0
                out.append(
                    (Trade(maker, o.account, o.instrument, abs(size), self.quote(view, o.instrument, buys), buys), o)
                )
                break
        return out


def _option_band(view: StepView) -> float:
    bands = view.state.bands
    return 0.01 if bands is None else bands.option / WAD


KINDS: dict[str, type[Population]] = {
    "option_writer": OptionWriter,
    "delta_hedger": DeltaHedger,
    "trend_trader": TrendTrader,
    "mean_reversion_trader": MeanReversionTrader,
    "market_maker": MarketMakers,
    "depositor": Depositor,
    "keeper": Keepers,
}
