r"""Rolling out-of-sample backtest of the engine's 1-day VaR, ES and IM on the vendored history.

For every test day :math:`D` (a joint return of the history, after a burn-in), the engine is
built at the close of :math:`D-1` — spot = that close, chain time and ``as_of`` = 00:00 UTC of
:math:`D` — so its historical scenarios hold only returns known then. Every portfolio (rolled
daily, :mod:`offchain.validation.portfolios`) is one account of the book; ``MarginEngine.compute``
gives its VaR 99 %, ES 97.5 % and IM. The realised loss is the P&L under the return that actually
happened on :math:`D`, priced by the engine's own scenario pricer with the same one-day time
step (vol surface unchanged, as in the historical scenarios). The tail losses are kept for the
ES test. One engine per (day, calibration) prices all portfolios at once.
"""

from __future__ import annotations

import datetime as dt
import math
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from offchain._typing import Float64Array, Int64Array
from offchain.errors import InputError
from offchain.risk.accounts import AccountBook
from offchain.risk.config import DEFAULT_CONFIG_PATH, RiskConfig, tail_count
from offchain.risk.engine import MarginEngine
from offchain.risk.history import close_time, read_closes
from offchain.risk.instruments import InstrumentTable, Kind
from offchain.risk.market import MarketState
from offchain.risk.pricing import scenario_pnl
from offchain.risk.scenarios import DAYS_PER_YEAR, ScenarioBlock, ScenarioKind
from offchain.validation.portfolios import NOTIONAL, Portfolio

DAY = 86_400
DEFAULT_BURN_IN = 500  # joint days of history before the first test day (2,906 test days)


@dataclass(frozen=True)
class DailyCloses:
    """Daily closes per underlying keyed by ISO date (the history files the config reads)."""

    by_date: tuple[dict[str, float], ...]

    def spot(self, date: str) -> Float64Array:
        return np.array([c[date] for c in self.by_date])


def load_closes(config_path: Path | None = None) -> DailyCloses:
    """Closes of the configuration's ``history_csv`` files (the same files as ``config.history``)."""
    path = Path(config_path) if config_path is not None else DEFAULT_CONFIG_PATH
    with path.open("rb") as handle:
        data = tomllib.load(handle)
    out = []
    for i, table in enumerate(data["underlying"]):
        closes = read_closes(path.parent / table["history_csv"], f"underlying[{i}].history_csv")
        out.append({d.isoformat(): c for d, c in closes.items()})
    return DailyCloses(tuple(out))


@dataclass(frozen=True, eq=False)
class BacktestSeries:
    """Per-day results of one calibration, arrays shaped (days, portfolios) unless stated.

    Attributes
    ----------
    dates : tuple of str
        Test days (the day whose return is realised).
    loss : ndarray
        Realised loss (``-P&L``) on the test day.
    var, es, im : ndarray
        The engine's VaR 99 %, ES 97.5 % and IM at the close before.
    tail : list of list of ndarray
        ``tail[d][p]``: the tail scenario losses beyond the ES level's VaR (``tail_var``), sorted
        descending (what the ES test's simulation draws from); ``n_scenarios[d]`` the scenario
        count.
    """

    dates: tuple[str, ...]
    loss: Float64Array
    var: Float64Array
    es: Float64Array
    im: Float64Array
    tail_var: Float64Array
    tail: list[list[Float64Array]]
    n_scenarios: Int64Array

    def __len__(self) -> int:
        return len(self.dates)

    def slice(self, start: int, stop: int) -> BacktestSeries:
        """Days ``start:stop`` of the series."""
        return BacktestSeries(self.dates[start:stop], self.loss[start:stop], self.var[start:stop],
                              self.es[start:stop], self.im[start:stop], self.tail_var[start:stop],
                              self.tail[start:stop], self.n_scenarios[start:stop])  # fmt: skip


def backtest_days(config: RiskConfig, burn_in: int, first: str | None = None, last: str | None = None) -> list[int]:
    """Indices into ``config.history`` of the test days (after ``burn_in`` joint returns)."""
    dates = config.history.dates
    days = [i for i in range(burn_in, len(dates)) if (first is None or dates[i] >= first)]
    return [i for i in days if last is None or dates[i] <= last]


def _instruments(portfolios: Sequence[Portfolio], spot: Float64Array, now: int) -> tuple[InstrumentTable, AccountBook]:
    records: list[dict[str, int | float]] = []
    rows: list[int] = []
    cols: list[int] = []
    sizes: list[float] = []
    for p, portfolio in enumerate(portfolios):
        for leg in portfolio.legs:
            s = float(spot[leg.underlying])
            strike = leg.moneyness * s if leg.kind in (Kind.CALL, Kind.PUT) else 0.0
            expiry = now + leg.tenor_days * DAY if leg.kind != Kind.PERP else 0
            rows.append(p)
            cols.append(len(records))
            sizes.append(leg.units * NOTIONAL / s)
            records.append({"instrument_id": len(records) + 1, "kind": leg.kind, "underlying": leg.underlying,
                            "strike": strike, "expiry": expiry})  # fmt: skip
    table = InstrumentTable.from_records(records)
    n = len(portfolios)
    book = AccountBook(
        sp.csr_matrix((sizes, (rows, cols)), shape=(n, len(records))),
        cash=np.zeros(n), cost_basis=np.zeros(n), funding_owed=np.zeros(n), collateral=np.zeros((n, 3)),
    )  # fmt: skip
    return table, book


def _tail_above(losses: Float64Array, level: float) -> tuple[float, Float64Array]:
    """The ``level`` VaR (the engine's order statistic) and the losses strictly above it, descending."""
    ordered = np.sort(losses)[::-1]
    var = float(ordered[math.floor(tail_count(ordered.size, level))])
    return var, ordered[ordered > var]


def run(
    config: RiskConfig,
    portfolios: Sequence[Portfolio],
    closes: DailyCloses,
    days: Sequence[int],
    progress: Callable[[int], None] | None = None,
    engine_config: RiskConfig | None = None,
) -> BacktestSeries:
    """Backtest ``portfolios`` under ``config`` on the test days ``days`` (see the module notes).

    ``days`` index ``config.history`` (the realised returns); ``engine_config`` (default
    ``config``) is what the engine values with, e.g. one whose history is a stressed window.
    """
    if not portfolios:
        raise InputError("portfolios", "nothing to backtest")
    h = config.history
    n_days, n_port = len(days), len(portfolios)
    loss, var, es, im, tail_var = (np.zeros((n_days, n_port)) for _ in range(5))
    tails: list[list[Float64Array]] = []
    n_scen = np.zeros(n_days, dtype=np.int64)
    surfaces = config.vol_surfaces()
    horizon = config.es.horizon_days
    for k, i in enumerate(days):
        prev = (dt.date.fromisoformat(h.dates[i]) - dt.timedelta(days=1)).isoformat()
        spot = closes.spot(prev)
        now = close_time(prev)
        instruments, book = _instruments(portfolios, spot, now)
        market = MarketState(spot, now, surfaces, round_id=k + 1, as_of=now)
        engine = MarginEngine(engine_config or config, instruments, market)
        result = engine.compute(book)
        var[k], es[k], im[k] = result.var, result.es, result.im
        realised = ScenarioBlock(
            spot_mult=(1.0 + h.returns[i])[:, None], vol_mult=np.ones(1), weight=np.ones(1),
            kind=np.array([int(ScenarioKind.HISTORICAL)]), dt_years=horizon / DAYS_PER_YEAR,
        )  # fmt: skip
        pnl = scenario_pnl(instruments, engine.valuation, market, config, realised)
        loss[k] = -(book.positions @ pnl)[:, 0]
        tail_pnl = book.positions @ engine.pnl[:, engine.grid.size :]
        cut = [_tail_above(-row, config.es.es_level) for row in np.asarray(tail_pnl)]
        tail_var[k] = [c[0] for c in cut]
        tails.append([c[1] for c in cut])
        n_scen[k] = tail_pnl.shape[1]
        if progress is not None:
            progress(k + 1)
    return BacktestSeries(tuple(h.dates[i] for i in days), loss, var, es, im, tail_var, tails, n_scen)
