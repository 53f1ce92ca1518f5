"""Calibration study: the backtest of each calibration choice, its statistics and procyclicality.

A calibration is a change of the ``[es]`` table (window length, volatility filter, stressed
period); :data:`CALIBRATIONS` is the menu a risk committee compares. :func:`summarise` turns a
:class:`~offchain.validation.backtest.BacktestSeries` into one :class:`Row` per portfolio.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from offchain._typing import BoolArray, Float64Array
from offchain.errors import InputError
from offchain.risk.config import RiskConfig, VolatilityFilter
from offchain.risk.history import HistoricalReturns
from offchain.validation.backtest import BacktestSeries, DailyCloses, run
from offchain.validation.portfolios import Portfolio
from offchain.validation.stats import (
    Zone,
    acerbi_szekely_z2,
    christoffersen_independence,
    kupiec_pof,
    traffic_light,
    zones,
)

STRESS_2020 = ("2020-03-01", "2020-03-31")


def calibration(
    window_days: int,
    volatility_filter: VolatilityFilter = "none",
    ewma_lambda: float = 0.97,
    stress_period: tuple[str, ...] = (),
) -> Callable[[RiskConfig], RiskConfig]:
    """The change of ``[es]`` that sets these four calibration choices (the rest unchanged)."""

    def apply(config: RiskConfig) -> RiskConfig:
        es = dataclasses.replace(config.es, window_days=window_days, volatility_filter=volatility_filter,
                                 ewma_lambda=ewma_lambda, stress_period=stress_period)  # fmt: skip
        return dataclasses.replace(config, es=es)

    return apply


#: name -> change of the configuration's ``[es]`` table.
CALIBRATIONS: dict[str, Callable[[RiskConfig], RiskConfig]] = {
    "expanding": calibration(0),
    "365 d": calibration(365),
    "730 d": calibration(730),
    "365 d + stress 2020-03": calibration(365, stress_period=STRESS_2020),
    "FHS λ 0.97": calibration(0, "ewma", 0.97),
    "FHS λ 0.94": calibration(0, "ewma", 0.94),
}


@dataclass(frozen=True)
class Row:
    """Backtest statistics of one portfolio under one calibration."""

    portfolio: str
    days: int
    exceptions: int
    expected: float
    kupiec_p: float
    christoffersen_p: float
    zone_blocks: dict[Zone, int]
    worst_rolling_zone: Zone
    es_z2: float
    es_p: float
    im_exceptions: int
    mean_im: float

    @property
    def zone(self) -> str:
        """Worst zone over the consecutive 250-day blocks (``n/a`` under 250 days)."""
        if not sum(self.zone_blocks.values()):
            return "n/a"
        if self.zone_blocks["red"]:
            return "red"
        return "yellow" if self.zone_blocks["yellow"] else "green"


def block_zones(hits: BoolArray, window: int = 250) -> list[Zone]:
    """Traffic-light zone of each consecutive, non-overlapping ``window``-day block."""
    n = hits.size // window
    return [traffic_light(int(hits[b * window : (b + 1) * window].sum()), window) for b in range(n)]


def summarise(series: BacktestSeries, names: list[str], var_level: float, es_level: float, seed: int = 1) -> list[Row]:
    """One :class:`Row` per portfolio (the ES test's simulation draws from ``seed``)."""
    rows = []
    p = 1.0 - var_level
    for j, name in enumerate(names):
        hits = series.loss[:, j] > series.var[:, j]
        n, x = hits.size, int(hits.sum())
        blocks = block_zones(hits)
        counts: dict[Zone, int] = {"green": blocks.count("green"), "yellow": blocks.count("yellow"),
                                   "red": blocks.count("red")}  # fmt: skip
        rolling = zones(hits)
        worst: Zone = "red" if "red" in rolling else "yellow" if "yellow" in rolling else "green"
        es_test = acerbi_szekely_z2(
            series.loss[:, j], series.es[:, j], series.tail_var[:, j], [t[j] for t in series.tail],
            series.n_scenarios, 1.0 - es_level, np.random.default_rng(seed),
        )  # fmt: skip
        rows.append(Row(
            portfolio=name, days=n, exceptions=x, expected=n * p,
            kupiec_p=kupiec_pof(x, n, p)[1], christoffersen_p=christoffersen_independence(hits)[1],
            zone_blocks=counts, worst_rolling_zone=worst, es_z2=es_test.z2, es_p=es_test.p_value,
            im_exceptions=int(np.sum(series.loss[:, j] > series.im[:, j])), mean_im=float(series.im[:, j].mean()),
        ))  # fmt: skip
    return rows


# ----------------------------------------------------------------------------- procyclicality

#: The two stress episodes of the issue, with the dates bracketing them.
EPISODES: dict[str, tuple[str, str]] = {
    "2020-03": ("2020-02-01", "2020-04-30"),
    "2021-05": ("2021-04-01", "2021-06-30"),
}


def peak_to_trough(dates: tuple[str, ...], im: Float64Array, first: str, last: str) -> float:
    r"""Largest rise of IM inside ``[first, last]``: :math:`\max_t IM_t / \min_{s \le t} IM_s`."""
    sel = np.array([first <= d <= last for d in dates])
    values = im[sel]
    if values.size == 0:
        return float("nan")
    trough = np.minimum.accumulate(values)
    return float(np.max(values / trough))


def buffer_release(im: Float64Array, buffer: float = 0.25, rebuild_days: int = 20) -> Float64Array:
    r"""Margin charged under EMIR's anti-procyclicality buffer, released in stress.

    Notes
    -----
    In normal times the charge is :math:`(1 + b)\,IM_t`. When IM rises, the buffer absorbs the
    rise: the charge stays at the previous charge until IM passes it, and it is rebuilt by at most
    :math:`b\,IM_t / n` a day (``rebuild_days`` = n) once IM settles:

    .. math::

        C_t = \max\bigl(IM_t,\ \min((1+b)\,IM_t,\ C_{t-1} + b\,IM_t/n)\bigr), \quad C_0 = (1+b)\,IM_0.
    """
    out = np.empty_like(im)
    out[0] = (1 + buffer) * im[0]
    for t in range(1, im.size):
        out[t] = max(im[t], min((1 + buffer) * im[t], out[t - 1] + buffer * im[t] / rebuild_days))
    return out


def lookback_floor(im: Float64Array, im_long: Float64Array) -> Float64Array:
    """EMIR's floor: never below the margin of a long (10-year) look-back, ``max(IM, IM_long)``."""
    out: Float64Array = np.maximum(im, im_long)
    return out


def stressed_windows(history: HistoricalReturns, days: list[int], length: int = 120) -> list[tuple[int, int]]:
    r"""Per test day, the most volatile ``length``-day window of returns known before it.

    Notes
    -----
    Window score: :math:`\sum_{i \in W} \sum_u \ln(1 + r_{i,u})^2` over consecutive joint returns;
    for day :math:`D` (history index ``i``) the candidates end at or before ``i - 1``, so the choice
    never looks ahead. Returns ``(start, stop)`` history indices.
    """
    x2 = (np.log1p(history.returns) ** 2).sum(axis=1)
    score = np.convolve(x2, np.ones(length), mode="valid")  # score[j]: window j .. j + length - 1
    best = np.maximum.accumulate(score)
    arg = np.array([int(np.flatnonzero(score[: k + 1] == best[k])[-1]) for k in range(score.size)])
    out = []
    for i in days:
        k = i - length  # last window ending at i - 1
        if k < 0:
            raise InputError("burn_in", f"the first test day needs {length} earlier returns")
        out.append((int(arg[k]), int(arg[k]) + length))
    return out


def stressed_im(
    config: RiskConfig, portfolios: Sequence[Portfolio], closes: DailyCloses, days: list[int], length: int = 120
) -> Float64Array:
    """IM of every portfolio on every test day with only the stressed window's raw returns as scenarios.

    The engine runs unchanged on a configuration whose history is that window (unfiltered, whole
    window), so grid, add-ons and ES come from the one rule; days sharing a window share a run.
    """
    windows = stressed_windows(config.history, days, length)
    out = np.zeros((len(days), len(portfolios)))
    es = dataclasses.replace(config.es, window_days=0, volatility_filter="none", stress_period=())

    for _, group in itertools.groupby(range(len(days)), key=lambda k: windows[k]):
        ks = list(group)
        a, b = windows[ks[0]]
        h = config.history
        stressed = dataclasses.replace(config, es=es, history=HistoricalReturns(h.dates[a:b], h.returns[a:b]))
        out[ks[0] : ks[-1] + 1] = run(config, portfolios, closes, [days[k] for k in ks], engine_config=stressed).im

    return out


def stressed_weight(im: Float64Array, im_stress: Float64Array, weight: float = 0.25) -> Float64Array:
    """EMIR's stressed-observation tool: ``(1 - weight) × IM + weight × IM on the stressed window``."""
    out: Float64Array = (1.0 - weight) * im + weight * im_stress
    return out
