r"""Scenario sets: the joint SPAN-style grid, historical returns and Monte Carlo paths.

A scenario moves every underlying's spot by a multiplier, scales every implied volatility by a
factor and may shift time forward. Blocks are priced once per instrument
(:mod:`offchain.risk.pricing`); accounts only combine the resulting P&L rows.

Grid layout (``N`` underlyings with ranges :math:`R_u`, stressed correlation :math:`C`)
----------------------------------------------------------------------------------------
Joint spot moves are points :math:`x` in range units (underlying :math:`u` moves by
:math:`x_u R_u`), never the cartesian product of per-underlying moves:

* **core** (weight 1): every level :math:`f` of ``grid.spot_shocks`` along each *axis*
  :math:`d` — the co-move :math:`(1, \dots, 1)` (correlation 1: same-direction books earn no
  offset), each column :math:`C e_i` (underlying :math:`i` moves its full range, the others
  :math:`\rho_{ij}` of theirs) and each principal axis :math:`\sqrt{\lambda_k} v_k` of
  :math:`C` (the smallest one is the spread move that a hedge fears) — crossed with every
  ``grid.vol_shocks`` level. All these points lie inside the correlation ellipsoid
  :math:`x^\top C^{-1} x \le 1` or on the co-move diagonal;
* **decorrelation** (weight ``grid.decorrelation_weight``): each underlying alone at
  :math:`\pm 1` range, crossed with the vol shocks, so a cross hedge is never fully netted;
* **extreme** (weight ``grid.extreme_weight``): ``±grid.extreme_multiple`` along the co-move
  and each :math:`C e_i`, vol unchanged, time unchanged.

For two underlyings and the default 7 spot × 3 vol levels: 5 axes × 6 + 1 points × 3 vols
+ 4 × 3 decorrelation + 6 extremes = 111 scenarios. Every underlying sees its 7 levels × 3
vols along its own axis :math:`C e_u`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from eth_utils import keccak
from scipy.signal import lfilter

from offchain._typing import Float64Array, Int64Array
from offchain.errors import InputError
from offchain.risk.config import RiskConfig, tail_count
from offchain.risk.history import HistoricalReturns
from offchain.risk.market import MarketState

DAYS_PER_YEAR = 365.0


class ScenarioKind(IntEnum):
    """What a scenario is (used for weights and descriptions)."""

    CORE = 0
    DECORRELATION = 1
    EXTREME = 2
    HISTORICAL = 3
    MONTE_CARLO = 4


@dataclass(frozen=True, eq=False)
class ScenarioBlock:
    """Scenarios sharing one time shift.

    Attributes
    ----------
    spot_mult : ndarray, shape (n_underlyings, n_scenarios)
        Spot multiplier ``1 + return`` per underlying and scenario (> 0).
    vol_mult : ndarray, shape (n_scenarios,)
        Implied-volatility multiplier ``1 + shock`` (> 0).
    weight : ndarray, shape (n_scenarios,)
        Weight applied to a loss in this scenario (grid only; 1 for tail scenarios).
    kind : ndarray of int, shape (n_scenarios,)
        :class:`ScenarioKind` of each scenario.
    dt_years : float
        Time elapsed in every scenario of the block (0 for the grid, the horizon for tails).
    labels : tuple of str
        Per-scenario label (the date of a historical return; empty otherwise).
    """

    spot_mult: Float64Array
    vol_mult: Float64Array
    weight: Float64Array
    kind: Int64Array
    dt_years: float
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("spot_mult", "vol_mult", "weight", "kind"):
            getattr(self, name).setflags(write=False)

    @property
    def size(self) -> int:
        """Number of scenarios."""
        return int(self.vol_mult.size)


def _principal_axes(corr: Float64Array) -> list[Float64Array]:
    """``sqrt(λ_k) v_k`` for each positive eigenvalue, sign fixed (largest entry positive)."""
    values, vectors = np.linalg.eigh(corr)
    axes = []
    for k in range(values.size - 1, -1, -1):
        if values[k] <= 1e-12:
            continue
        v = vectors[:, k]
        v = v if v[np.argmax(np.abs(v))] > 0 else -v
        axes.append(np.sqrt(values[k]) * v)
    return axes


def grid_axes(config: RiskConfig) -> list[Float64Array]:
    """Core axes in range units: co-move, columns of C, principal axes of C."""
    corr = config.correlation_array()
    n = corr.shape[0]
    return [np.ones(n), *(corr[:, i].copy() for i in range(n)), *_principal_axes(corr)]


def build_grid(config: RiskConfig) -> ScenarioBlock:
    """The joint scenario grid described in the module notes."""
    grid = config.grid
    n = len(config.underlyings)
    ranges = np.array([u.spot_range for u in config.underlyings])
    axes = grid_axes(config)
    points: list[tuple[Float64Array, float, float, ScenarioKind]] = []
    core = [np.zeros(n)] + [f * d for d in axes for f in grid.spot_shocks if f != 0.0]
    points += [(x, v, 1.0, ScenarioKind.CORE) for x in core for v in grid.vol_shocks]
    alone = [sign * np.eye(n)[i] for i in range(n) for sign in (-1.0, 1.0)]
    w_d = grid.decorrelation_weight
    points += [(x, v, w_d, ScenarioKind.DECORRELATION) for x in alone for v in grid.vol_shocks]
    extreme_axes = axes[: n + 1]
    points += [
        (sign * grid.extreme_multiple * d, 0.0, grid.extreme_weight, ScenarioKind.EXTREME)
        for d in extreme_axes
        for sign in (-1.0, 1.0)
    ]
    moves = np.array([p[0] for p in points]).T
    return ScenarioBlock(
        spot_mult=1.0 + moves * ranges[:, None],
        vol_mult=1.0 + np.array([p[1] for p in points]),
        weight=np.array([p[2] for p in points]),
        kind=np.array([int(p[3]) for p in points], dtype=np.int64),
        dt_years=0.0,
    )


def _tail_block(spot_mult: Float64Array, dt_years: float, kind: ScenarioKind, labels: list[str]) -> ScenarioBlock:
    """A tail block with its scenarios ordered most extreme first.

    The order (largest ``max_u |ln m_u| / sd_u`` first, stable) never changes a figure — ES and
    VaR depend on the set of losses only — but the kernel's bounded heap of largest losses then
    fills with near-final values early and rarely needs replacing.
    """
    log_moves = np.abs(np.log(spot_mult))
    scale = np.maximum(log_moves.std(axis=1, keepdims=True), 1e-12)
    order = np.argsort(-(log_moves / scale).max(axis=0), kind="stable")
    n = order.size
    return ScenarioBlock(
        spot_mult=np.ascontiguousarray(spot_mult[:, order]),
        vol_mult=np.ones(n),
        weight=np.ones(n),
        kind=np.full(n, int(kind), dtype=np.int64),
        dt_years=dt_years,
        labels=tuple(labels[i] for i in order),
    )


def build_historical(history: HistoricalReturns, horizon_days: float) -> ScenarioBlock:
    """One scenario per historical 1-day joint return, vol unchanged, time + horizon.

    Scenario labels are the dates; the order is most extreme first (see :func:`_tail_block`).
    """
    mult = 1.0 + history.returns.T
    return _tail_block(mult, horizon_days / DAYS_PER_YEAR, ScenarioKind.HISTORICAL, list(history.dates))


def monte_carlo_seed(config_hash: bytes, round_id: int) -> int:
    """128-bit seed ``keccak256(config_hash ‖ uint256(round_id))[:16]`` (big-endian)."""
    return int.from_bytes(keccak(config_hash + round_id.to_bytes(32, "big"))[:16], "big")


def correlation_factor(corr: Float64Array) -> Float64Array:
    """``A`` with ``A Aᵀ = C`` from the eigen-decomposition (works for semi-definite C)."""
    values, vectors = np.linalg.eigh(corr)
    out: Float64Array = vectors * np.sqrt(np.maximum(values, 0.0))
    return out


def correlated_draws(rng: np.random.Generator, factor: Float64Array, paths: int, dof: float) -> Float64Array:
    """Unit-variance joint draws, shape (n_underlyings, paths), correlation ``A Aᵀ``.

    Gaussian if ``dof == 0``, else multivariate Student-t scaled to unit variance. The product
    with the factor is summed in a fixed order (no BLAS), so draws are bit-identical anywhere.
    """
    n = factor.shape[0]
    eps = rng.standard_normal((n, paths))
    z = np.zeros((n, paths))
    for i in range(n):
        for j in range(n):
            z[i] += factor[i, j] * eps[j]
    if dof > 0.0:
        z *= np.sqrt((dof - 2.0) / rng.chisquare(dof, paths))
    return z


def build_monte_carlo(config: RiskConfig, market: MarketState) -> ScenarioBlock:
    r"""Correlated Monte Carlo returns over the horizon, vol unchanged.

    Notes
    -----
    Log-returns :math:`\sigma_u \sqrt h\, z_u - \tfrac12 \sigma_u^2 h` with :math:`z` from
    :func:`correlated_draws`, :math:`h` the horizon in years and :math:`\sigma_u` the
    at-the-money implied volatility of underlying :math:`u` at the horizon. The generator is
    ``numpy.random.Generator(PCG64(seed))`` with :func:`monte_carlo_seed` of the config hash
    and the price round, so every signer draws the same paths.
    """
    mc = config.monte_carlo
    h = config.es.horizon_days / DAYS_PER_YEAR
    rng = np.random.Generator(np.random.PCG64(monte_carlo_seed(config.canonical_hash(), market.round_id)))
    z = correlated_draws(rng, correlation_factor(config.correlation_array()), mc.paths, mc.student_t_dof)
    sigma = np.array([float(s.implied_vol(0.0, h)) for s in market.vol])[:, None]
    spot_mult = np.exp(sigma * np.sqrt(h) * z - 0.5 * sigma * sigma * h)
    return _tail_block(spot_mult, h, ScenarioKind.MONTE_CARLO, [str(p) for p in range(mc.paths)])


def ewma_variance(returns: Float64Array, lam: float) -> Float64Array:
    r"""EWMA variance forecasts, shape ``(n + 1, underlyings)``: row ``i`` uses returns before ``i``.

    Notes
    -----
    RiskMetrics recursion on log-returns :math:`x_i`:
    :math:`\sigma^2_{i+1} = \lambda \sigma^2_i + (1 - \lambda) x_i^2`, seeded with
    :math:`\sigma^2_0` = the mean of :math:`x^2` over the first ``min(n, 30)`` returns. Row ``n`` is
    the forecast for the day after the last return. A causal filter: the rows of a prefix of the
    history are the same numbers as the first rows of the whole history's forecasts.
    """
    x2 = np.log1p(returns) ** 2
    seed = x2[: min(x2.shape[0], 30)].mean(axis=0)
    out = np.empty((x2.shape[0] + 1, x2.shape[1]))
    out[0] = seed
    for u in range(x2.shape[1]):
        out[1:, u] = lfilter([1.0 - lam], [1.0, -lam], x2[:, u], zi=[lam * seed[u]])[0]
    return out


def filtered_returns(history: HistoricalReturns, lam: float) -> Float64Array:
    r"""Volatility-filtered returns (FHS): every day's move rescaled to today's volatility.

    Notes
    -----
    With log-returns :math:`x_i` and EWMA forecasts :math:`\sigma_i` (:func:`ewma_variance`),
    :math:`\tilde x_i = x_i\,\sigma_{n} / \sigma_i` and the scenario return is
    :math:`e^{\tilde x_i} - 1` (so a filtered move never takes a price to zero or below).
    Barone-Adesi, Giannopoulos & Vosper (1999); Hull & White (1998).
    """
    sigma = np.sqrt(np.maximum(ewma_variance(history.returns, lam), 1e-300))
    scaled = np.log1p(history.returns) * (sigma[-1] / sigma[:-1])
    out: Float64Array = np.expm1(scaled)
    return out


def historical_scenarios(config: RiskConfig, as_of: int | None) -> HistoricalReturns:
    """The historical-simulation scenario set known at unix time ``as_of`` (see ``TailRiskConfig``).

    Steps: cut the history at ``as_of`` (no look-ahead), filter it if ``es.volatility_filter`` is
    ``ewma``, keep the last ``es.window_days`` returns, then add the raw returns of
    ``es.stress_period`` that fall outside the window.
    """
    es = config.es
    known = config.history if as_of is None else config.history.as_of(as_of)
    scenarios = known
    if es.volatility_filter == "ewma":
        scenarios = HistoricalReturns(known.dates, filtered_returns(known, es.ewma_lambda))
    scenarios = scenarios.window(es.window_days)
    if es.stress_period:
        first, last = es.stress_period[0], es.stress_period[-1]
        inside = set(scenarios.dates)
        rows = [i for i, d in enumerate(known.dates) if first <= d <= last and d not in inside]
        if rows:
            scenarios = HistoricalReturns(
                scenarios.dates + tuple(known.dates[i] for i in rows),
                np.vstack([scenarios.returns, known.returns[rows]]),
            )
    return scenarios


def tail_key(config: RiskConfig, market: MarketState, method: str) -> tuple[object, ...]:
    """What :func:`build_tail` of ``config`` reads from ``market`` for ``method``: two markets with
    the same key (and the same configuration) get the same tail block.

    Historical: the number of returns known at ``market.as_of`` (daily returns: the same for every
    price round of a day). Monte Carlo: the price round (the seed) and the at-the-money implied
    volatilities at the horizon. None: nothing.
    """
    if method == "historical":
        known = len(config.history.dates) if market.as_of is None else config.history.count_as_of(market.as_of)
        return (method, known)
    if method == "monte_carlo":
        h = config.es.horizon_days / DAYS_PER_YEAR
        return (method, market.round_id, tuple(float(s.implied_vol(0.0, h)) for s in market.vol))
    return (method,)


def build_tail(config: RiskConfig, market: MarketState, method: str) -> ScenarioBlock | None:
    """Tail-risk scenarios for ``method`` (historical, monte_carlo) or None for ``none``.

    Historical scenarios use only returns known at ``market.as_of`` (the price round's time).

    Raises
    ------
    InputError
        Too few historical returns known at ``market.as_of`` for the ES and VaR levels.
    """
    if method == "historical":
        scenarios = historical_scenarios(config, market.as_of)
        n = len(scenarios.dates)
        for name, level in (("es.es_level", config.es.es_level), ("es.var_level", config.es.var_level)):
            if tail_count(n, level) < 1:
                raise InputError("market.as_of", f"{n} historical returns known at {market.as_of} leave "
                                 f"no observation beyond the {name} quantile {level}")  # fmt: skip
        return build_historical(scenarios, config.es.horizon_days)
    if method == "monte_carlo":
        return build_monte_carlo(config, market)
    return None


def _pct(x: float) -> str:
    return f"{x * 100:+.1f} %".replace("+0.0 %", "0 %")


def describe(block: ScenarioBlock, s: int, symbols: tuple[str, ...]) -> str:
    """Human description, e.g. ``BTC -30.0 %, ETH -40.0 %, vol 0 % (extreme, weight 35 %)``."""
    moves = ", ".join(f"{sym} {_pct(float(block.spot_mult[u, s]) - 1.0)}" for u, sym in enumerate(symbols))
    text = f"{moves}, vol {_pct(float(block.vol_mult[s]) - 1.0)}"
    kind = ScenarioKind(int(block.kind[s]))
    weight = f"weight {float(block.weight[s]) * 100:.0f} %"
    if kind is ScenarioKind.DECORRELATION:
        return f"{text} (one underlying alone, {weight})"
    if kind is ScenarioKind.EXTREME:
        return f"{text} (extreme, {weight})"
    if kind is ScenarioKind.HISTORICAL:
        return f"historical {block.labels[s]}: {moves}"
    if kind is ScenarioKind.MONTE_CARLO:
        return f"Monte Carlo path {block.labels[s]}: {moves}"
    return text
