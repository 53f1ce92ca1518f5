r"""Market models of the simulator: seeded price paths with an implied-volatility level per step.

Every model is a frozen dataclass validated on construction (errors are
:class:`~offchain.errors.InputError` naming the scenario field, e.g. ``market.jumps.intensity``)
with one method, ``simulate(steps, step_seconds, rng, start)``, that returns a :class:`MarketPath`.
Randomness comes only from the ``numpy.random.Generator`` (or integer seed) passed in: the same
seed gives the same path, bit for bit.

Models
------
- :class:`GbmModel`: correlated geometric Brownian motion.
- :class:`MertonModel`: GBM plus compensated Poisson jumps with lognormal sizes.
- :class:`RegimeModel`: Markov-switching volatility and drift.
- :class:`GarchModel`: GARCH(1,1) conditional volatility.
- :class:`ReplayModel`: the vendored hourly or daily BTC/ETH closes over a window of dates.

Each synthetic model draws all its shocks first (vectorised numpy calls in a fixed order) and then
turns them into prices; :mod:`offchain.sim.markets_reference` applies the same formulas step by
step in plain Python to the same shocks, and the tests compare the two.

The implied-volatility level of an underlying at a step is its volatility *state* (the
annualised volatility the model diffuses with at that step) times a variance-risk-premium factor
:math:`\kappa` (``variance_risk_premium``, default 1.1): :math:`IV_t = \kappa\,\sigma_t`. It moves
with the regime (Markov switching) and with the conditional volatility (GARCH). A replay has no
model volatility: its IV follows the backtest (the risk configuration's at-the-money implied
volatility, held constant) or, on request, an EWMA of the replayed returns times :math:`\kappa`.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Literal, Protocol

import numpy as np

from offchain._typing import Float64Array, Int64Array
from offchain.errors import ConfigError, InputError
from offchain.feeds.sources import DATA_DIR, REPLAYS, PriceStep
from offchain.models.vol_surface import VolSurface
from offchain.risk.history import read_close_series
from offchain.risk.market import SECONDS_PER_YEAR, MarketState
from offchain.risk.scenarios import correlated_draws, ewma_variance

#: Vendored series per replay source and underlying symbol (``data/market/SOURCES.md``): the devnet
#: feed's hourly replays (:data:`offchain.feeds.sources.REPLAYS`) and the risk configuration's daily files.
REPLAY_FILES: dict[str, dict[str, str]] = {
    **{f"hourly-{name}": dict(zip(("BTC", "ETH"), files, strict=True)) for name, files in REPLAYS.items()},
    "daily": {"BTC": "btc_usd_1d.csv", "ETH": "eth_usd_1d.csv"},
}
REPLAY_STEP_SECONDS = {name: 86_400 if name == "daily" else 3600 for name in REPLAY_FILES}
MAX_PRICE = 1e12  # USD: far above any asset, far below float overflow
JumpTiming = Literal["common", "independent"]
ReplayIv = Literal["config", "ewma"]

# ----------------------------------------------------------------------------- the path


@dataclass(frozen=True, eq=False)
class MarketPath:
    """A simulated or replayed market, ``steps + 1`` observations (row 0 is the start).

    Attributes
    ----------
    underlyings : tuple of str
        Symbols, in column order.
    times : ndarray of int64, shape (steps + 1,)
        Unix time of each observation (seconds, strictly increasing).
    prices : ndarray, shape (steps + 1, underlyings)
        Price of each underlying (USD, > 0).
    iv : ndarray, shape (steps + 1, underlyings)
        Implied-volatility level (annualised, > 0) per underlying per step.
    vol : ndarray, shape (steps + 1, underlyings)
        Volatility state (annualised) the model diffuses with at each step; the impact model
        reads its daily volatility from it.
    regime : ndarray of int64, shape (steps + 1,), or None
        Regime index per step (Markov-switching model only).
    """

    underlyings: tuple[str, ...]
    times: Int64Array
    prices: Float64Array
    iv: Float64Array
    vol: Float64Array
    regime: Int64Array | None = None

    def __post_init__(self) -> None:
        times = np.array(self.times, dtype=np.int64)
        n = len(self.underlyings)
        if times.ndim != 1 or times.size < 1 or np.any(np.diff(times) <= 0):
            raise InputError("path.times", "must be a non-empty, strictly increasing vector")
        shape = (times.size, n)
        for name in ("prices", "iv", "vol"):
            arr = np.array(getattr(self, name), dtype=np.float64)
            if arr.shape != shape:
                raise InputError(f"path.{name}", f"must have shape {shape}, got {arr.shape}")
            if name == "vol" and (not np.all(np.isfinite(arr)) or np.any(arr < 0.0)):
                raise InputError(f"path.{name}", "must be finite and >= 0")
            if name != "vol" and (not np.all(np.isfinite(arr)) or np.any(arr <= 0.0)):
                raise InputError(f"path.{name}", "must be finite and > 0")
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        times.setflags(write=False)
        object.__setattr__(self, "times", times)
        if self.regime is not None:
            regime = np.array(self.regime, dtype=np.int64)
            if regime.shape != times.shape:
                raise InputError("path.regime", "needs one regime per step")
            regime.setflags(write=False)
            object.__setattr__(self, "regime", regime)

    @property
    def steps(self) -> int:
        """Number of steps (observations minus one)."""
        return int(self.times.size - 1)

    def log_returns(self) -> Float64Array:
        """Log-returns per step, shape (steps, underlyings)."""
        out: Float64Array = np.diff(np.log(self.prices), axis=0)
        return out

    def market_state(self, step: int, prices: Float64Array | None = None) -> MarketState:
        """The risk engine's view of step ``step``: spots, chain time, a flat surface at the IV level.

        ``prices`` replaces the path's prices (e.g. the impacted ones of
        :class:`offchain.sim.impact.ImpactState`). The price round is ``step + 1`` and both ``now``
        and ``as_of`` are the step's time, so historical scenarios only see returns known then.
        """
        if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= self.steps:
            raise InputError("step", f"must be in [0, {self.steps}], got {step!r}")
        spot = self.prices[step] if prices is None else np.asarray(prices, dtype=np.float64)
        surfaces = tuple(VolSurface.flat(float(v)) for v in self.iv[step])
        now = int(self.times[step])
        return MarketState(spot, now, surfaces, round_id=step + 1, as_of=now)

    def price_steps(self) -> Iterator[PriceStep]:
        """The path as the price feed's steps (seconds since step 0, prices), for the devnet's price service."""
        start = int(self.times[0])
        for t, row in zip(self.times.tolist(), self.prices.tolist(), strict=True):
            yield PriceStep(t - start, tuple(row))


class MarketModel(Protocol):
    """What the simulator asks of a market model."""

    @property
    def underlyings(self) -> tuple[str, ...]: ...

    def simulate(self, steps: int, step_seconds: int, rng: np.random.Generator | int, start: int = 0) -> MarketPath: ...


# ----------------------------------------------------------------------------- validation helpers


def _fail(field: str, message: str) -> InputError:
    return InputError(field, message)


def _finite(value: float, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(field, f"must be a finite number, got {value!r}")
    return float(value)


def _vector(values: Sequence[float], n: int, field: str, low: float, high: float, *, low_open: bool = False) -> None:
    if len(values) != n:
        raise _fail(field, f"needs {n} values (one per underlying), got {len(values)}")
    for i, v in enumerate(values):
        x = _finite(v, f"{field}[{i}]")
        if x < low or x > high or (low_open and x == low):
            bracket = "(" if low_open else "["
            raise _fail(f"{field}[{i}]", f"{x!r} is out of range {bracket}{low:g}, {high:g}]")


def _rng(rng: np.random.Generator | int) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, bool) or not isinstance(rng, int) or rng < 0:
        raise _fail("run.seed", f"must be an integer >= 0 or a numpy Generator, got {rng!r}")
    return np.random.default_rng(rng)


def _check_run(steps: int, step_seconds: int) -> float:
    """Validate the step count and length; return the step length in years."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise _fail("run.steps", f"must be an integer >= 1, got {steps!r}")
    if isinstance(step_seconds, bool) or not isinstance(step_seconds, int) or step_seconds < 1:
        raise _fail("run.step_seconds", f"must be an integer >= 1, got {step_seconds!r}")
    return step_seconds / SECONDS_PER_YEAR


def check_correlation(matrix: Sequence[Sequence[float]], n: int, field: str = "market.correlation") -> Float64Array:
    """The correlation matrix as an array: square ``n × n``, symmetric, unit diagonal, PSD.

    Raises
    ------
    InputError
        Naming the entry at fault (``market.correlation[0][1]``) or the matrix if it is not
        positive semi-definite (its smallest eigenvalue is below ``-1e-10``).
    """
    if len(matrix) != n:
        raise _fail(field, f"must have {n} rows (one per underlying), got {len(matrix)}")
    for i, row in enumerate(matrix):
        if len(row) != n:
            raise _fail(f"{field}[{i}]", f"must have {n} entries, got {len(row)}")
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            x = _finite(value, f"{field}[{i}][{j}]")
            if abs(x) > 1.0:
                raise _fail(f"{field}[{i}][{j}]", f"must lie in [-1, 1], got {x!r}")
            if x != matrix[j][i]:
                raise _fail(f"{field}[{i}][{j}]", "the matrix must be symmetric")
        if row[i] != 1.0:
            raise _fail(f"{field}[{i}][{i}]", "the diagonal must be 1")
    corr = np.array(matrix, dtype=np.float64).reshape(n, n)
    smallest = float(np.linalg.eigvalsh(corr).min()) if n else 0.0
    if smallest < -1e-10:
        raise _fail(field, f"not positive semi-definite (smallest eigenvalue {smallest:.6g})")
    return corr


def cholesky_psd(corr: Float64Array) -> Float64Array:
    r"""Lower-triangular :math:`L` with :math:`L L^\top = C` for a positive *semi*-definite :math:`C`.

    Notes
    -----
    The Cholesky–Banachiewicz recursion
    :math:`L_{jj} = \sqrt{C_{jj} - \sum_{k<j} L_{jk}^2}`,
    :math:`L_{ij} = (C_{ij} - \sum_{k<j} L_{ik} L_{jk}) / L_{jj}`, where a pivot below
    :math:`10^{-12}` (a column that is a combination of earlier ones, e.g. correlation 1) is set
    to 0 with its column, so perfectly correlated underlyings are allowed.
    """
    n = corr.shape[0]
    out = np.zeros((n, n))
    for j in range(n):
        pivot = corr[j, j] - float(out[j, :j] @ out[j, :j])
        if pivot <= 1e-12:
            continue
        out[j, j] = math.sqrt(pivot)
        for i in range(j + 1, n):
            out[i, j] = (corr[i, j] - float(out[i, :j] @ out[j, :j])) / out[j, j]
    return out


def _times(start: int, steps: int, step_seconds: int) -> Int64Array:
    out: Int64Array = start + step_seconds * np.arange(steps + 1, dtype=np.int64)
    return out


def _prices(initial: Sequence[float], log_returns: Float64Array) -> Float64Array:
    """``S_t = S_0 exp(Σ_{s≤t} r_s)``, row 0 the initial prices.

    A path that overflows or underflows (extreme parameters over a long run) gives infinite or zero
    prices, which :class:`MarketPath` refuses with an ``InputError`` on ``path.prices``.
    """
    n = log_returns.shape[1]
    cum = np.vstack([np.zeros((1, n)), np.cumsum(log_returns, axis=0)])
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        out: Float64Array = np.asarray(initial, dtype=np.float64) * np.exp(cum)
    return out


@dataclass(frozen=True)
class Diffusion:
    """What every synthetic model shares: underlyings, start prices, correlation, the IV factor.

    Attributes
    ----------
    underlyings : tuple of str
        Unique symbols (``market.underlyings``).
    initial_prices : tuple of float
        Price at step 0 per underlying, USD, > 0 (``market.initial_prices``).
    correlation : tuple of tuple of float
        Correlation of the Brownian increments (``market.correlation``), PSD.
    variance_risk_premium : float
        :math:`\\kappa` in :math:`IV = \\kappa\\,\\sigma` (``market.variance_risk_premium``, > 0).
    """

    underlyings: tuple[str, ...]
    initial_prices: tuple[float, ...]
    correlation: tuple[tuple[float, ...], ...]
    variance_risk_premium: float = 1.1

    def __post_init__(self) -> None:
        n = len(self.underlyings)
        if n < 1:
            raise _fail("market.underlyings", "needs at least one underlying")
        for i, sym in enumerate(self.underlyings):
            if not isinstance(sym, str) or not sym:
                raise _fail(f"market.underlyings[{i}]", f"must be a non-empty symbol, got {sym!r}")
        if len(set(self.underlyings)) != n:
            raise _fail("market.underlyings", "symbols must be unique")
        _vector(self.initial_prices, n, "market.initial_prices", 0.0, MAX_PRICE, low_open=True)
        check_correlation(self.correlation, n)
        kappa = _finite(self.variance_risk_premium, "market.variance_risk_premium")
        if kappa <= 0.0:
            raise _fail("market.variance_risk_premium", f"must be > 0, got {kappa!r}")

    @property
    def n(self) -> int:
        return len(self.underlyings)

    def factor(self) -> Float64Array:
        """The Cholesky factor of the correlation (:func:`cholesky_psd`)."""
        return cholesky_psd(np.array(self.correlation, dtype=np.float64).reshape(self.n, self.n))

    def normals(self, rng: np.random.Generator, steps: int) -> Float64Array:
        """Correlated standard normals, shape (steps, underlyings) (``z = L ε``)."""
        return correlated_draws(rng, self.factor(), steps, 0.0).T.copy()


# ----------------------------------------------------------------------------- GBM


@dataclass(frozen=True)
class GbmModel:
    r"""Correlated geometric Brownian motion.

    Attributes
    ----------
    base : Diffusion
    vol : tuple of float
        Annualised volatility :math:`\sigma_u > 0` (``market.vol``).
    drift : tuple of float
        Annualised drift :math:`\mu_u` (``market.drift``).

    Notes
    -----
    With :math:`\Delta t` = ``step_seconds`` / (365 · 86,400) and :math:`z_t = L\varepsilon_t`
    (:math:`L L^\top` the correlation, :math:`\varepsilon_t` i.i.d. standard normals):

    .. math:: \ln S_{t+1,u} - \ln S_{t,u} = (\mu_u - \tfrac12\sigma_u^2)\Delta t
              + \sigma_u\sqrt{\Delta t}\, z_{t,u}

    so :math:`E[S_t] = S_0 e^{\mu t}` and the log-returns have correlation :math:`C`.
    IV is :math:`\kappa\sigma_u` at every step.
    """

    base: Diffusion
    vol: tuple[float, ...]
    drift: tuple[float, ...]

    def __post_init__(self) -> None:
        _vector(self.vol, self.base.n, "market.vol", 0.0, 10.0, low_open=True)
        _vector(self.drift, self.base.n, "market.drift", -10.0, 10.0)

    @property
    def underlyings(self) -> tuple[str, ...]:
        return self.base.underlyings

    def shocks(self, steps: int, rng: np.random.Generator) -> Float64Array:
        """The correlated normals ``z``, shape (steps, underlyings)."""
        return self.base.normals(rng, steps)

    def simulate(self, steps: int, step_seconds: int, rng: np.random.Generator | int, start: int = 0) -> MarketPath:
        """A path of ``steps`` steps of ``step_seconds`` from unix time ``start``."""
        dt_years = _check_run(steps, step_seconds)
        z = self.shocks(steps, _rng(rng))
        sigma, mu = np.asarray(self.vol), np.asarray(self.drift)
        log_returns = (mu - 0.5 * sigma**2) * dt_years + sigma * math.sqrt(dt_years) * z
        vol = np.broadcast_to(sigma, (steps + 1, self.base.n))
        return MarketPath(self.underlyings, _times(start, steps, step_seconds),
                          _prices(self.base.initial_prices, log_returns), self.base.variance_risk_premium * vol,
                          vol)  # fmt: skip


# ----------------------------------------------------------------------------- Merton


@dataclass(frozen=True)
class MertonModel:
    r"""Merton (1976) jump-diffusion: GBM plus compensated Poisson jumps with lognormal sizes.

    Attributes
    ----------
    gbm : GbmModel
        The diffusion part (its ``drift`` is the total expected return).
    intensity : float
        Jumps per year :math:`\lambda \ge 0` (``market.jumps.intensity``).
    mean : tuple of float
        Mean log jump size :math:`m_u` (``market.jumps.mean``; -0.05 is about a 5 % drop).
    vol : tuple of float
        Standard deviation of the log jump size :math:`s_u \ge 0` (``market.jumps.vol``).
    timing : {"common", "independent"}
        ``common``: one Poisson clock for the whole market; when it fires every underlying jumps,
        the jump sizes' normal parts correlated like the diffusion (a market-wide crash).
        ``independent``: one clock per underlying, each at rate :math:`\lambda`, sizes
        independent (``market.jumps.timing``).

    Notes
    -----
    Per step, :math:`N_{t,u} \sim \text{Poisson}(\lambda\Delta t)` (the same :math:`N_t` for
    every underlying under ``common`` timing) and, given :math:`N`, the sum of :math:`N` lognormal
    log-sizes is :math:`J = N m + \sqrt N\, s\, \eta` with :math:`\eta` standard normal:

    .. math:: \ln\frac{S_{t+1}}{S_t} = (\mu - \lambda k - \tfrac12\sigma^2)\Delta t
              + \sigma\sqrt{\Delta t}\,z_t + J_t, \qquad k = e^{m + s^2/2} - 1,

    the compensator :math:`\lambda k` keeps :math:`E[S_t] = S_0 e^{\mu t}`. The volatility state
    is the total one, :math:`\sqrt{\sigma^2 + \lambda (m^2 + s^2)}`, and IV is :math:`\kappa`
    times it.
    """

    gbm: GbmModel
    intensity: float
    mean: tuple[float, ...]
    vol: tuple[float, ...]
    timing: JumpTiming = "common"

    def __post_init__(self) -> None:
        lam = _finite(self.intensity, "market.jumps.intensity")
        if not 0.0 <= lam <= 10_000.0:
            raise _fail("market.jumps.intensity", f"{lam!r} is out of range [0, 10000] (jumps per year)")
        n = self.gbm.base.n
        _vector(self.mean, n, "market.jumps.mean", -5.0, 5.0)
        _vector(self.vol, n, "market.jumps.vol", 0.0, 5.0)
        if self.timing not in ("common", "independent"):
            raise _fail("market.jumps.timing", f"must be 'common' or 'independent', got {self.timing!r}")

    @property
    def underlyings(self) -> tuple[str, ...]:
        return self.gbm.underlyings

    def compensator(self) -> Float64Array:
        r""":math:`\lambda k_u` per underlying (annualised drift correction)."""
        m, s = np.asarray(self.mean), np.asarray(self.vol)
        out: Float64Array = self.intensity * np.expm1(m + 0.5 * s * s)
        return out

    def shocks(
        self, steps: int, step_seconds: int, rng: np.random.Generator
    ) -> tuple[Float64Array, Int64Array, Float64Array]:
        """``(z, counts, eta)``: diffusion normals, jump counts and jump-size normals, each (steps, n)."""
        n = self.gbm.base.n
        dt_years = step_seconds / SECONDS_PER_YEAR
        z = self.gbm.shocks(steps, rng)
        if self.timing == "common":
            counts = np.repeat(rng.poisson(self.intensity * dt_years, (steps, 1)), n, axis=1)
            eta = self.gbm.base.normals(rng, steps)
        else:
            counts = rng.poisson(self.intensity * dt_years, (steps, n))
            eta = rng.standard_normal((steps, n))
        return z, counts.astype(np.int64), eta

    def simulate(self, steps: int, step_seconds: int, rng: np.random.Generator | int, start: int = 0) -> MarketPath:
        """A path of ``steps`` steps of ``step_seconds`` from unix time ``start``."""
        dt_years = _check_run(steps, step_seconds)
        z, counts, eta = self.shocks(steps, step_seconds, _rng(rng))
        sigma, mu = np.asarray(self.gbm.vol), np.asarray(self.gbm.drift)
        m, s = np.asarray(self.mean), np.asarray(self.vol)
        jumps = counts * m + np.sqrt(counts) * s * eta
        drift = (mu - self.compensator() - 0.5 * sigma**2) * dt_years
        log_returns = drift + sigma * math.sqrt(dt_years) * z + jumps
        total = np.sqrt(sigma**2 + self.intensity * (m * m + s * s))
        vol = np.broadcast_to(total, (steps + 1, self.gbm.base.n))
        base = self.gbm.base
        return MarketPath(self.underlyings, _times(start, steps, step_seconds),
                          _prices(base.initial_prices, log_returns), base.variance_risk_premium * vol, vol)  # fmt: skip


# ----------------------------------------------------------------------------- Markov regimes


@dataclass(frozen=True)
class RegimeModel:
    r"""Markov-switching volatility and drift (a hidden regime chain, one step per price step).

    Attributes
    ----------
    base : Diffusion
    names : tuple of str
        Regime names (``market.regimes.state[k].name``).
    vol, drift : tuple of tuple of float
        ``vol[k][u]``, ``drift[k][u]``: annualised volatility and drift of underlying ``u`` in
        regime ``k``.
    transition : tuple of tuple of float
        Row-stochastic matrix :math:`P_{jk}` = probability of moving from regime ``j`` to ``k``
        in one step (``market.regimes.transition``).
    initial : int
        Regime at step 0 (``market.regimes.initial``).

    Notes
    -----
    :math:`r_t \in \{0..K-1\}` with :math:`P(r_{t+1}=k \mid r_t=j) = P_{jk}`, drawn by inverse
    transform from one uniform per step. Given the regimes, returns are the GBM's with the
    regime's parameters for the step:

    .. math:: \ln\frac{S_{t+1}}{S_t} = (\mu_{r_t} - \tfrac12\sigma_{r_t}^2)\Delta t
              + \sigma_{r_t}\sqrt{\Delta t}\,z_t

    The chain's stationary distribution :math:`\pi` solves :math:`\pi P = \pi`,
    :math:`\sum\pi = 1` (:meth:`stationary`). IV at step :math:`t` is :math:`\kappa\sigma_{r_t}`,
    so it jumps with the regime.
    """

    base: Diffusion
    names: tuple[str, ...]
    vol: tuple[tuple[float, ...], ...]
    drift: tuple[tuple[float, ...], ...]
    transition: tuple[tuple[float, ...], ...]
    initial: int = 0

    def __post_init__(self) -> None:
        k = len(self.names)
        if k < 1:
            raise _fail("market.regimes.state", "needs at least one regime")
        if len(set(self.names)) != k:
            raise _fail("market.regimes.state", "regime names must be unique")
        if len(self.vol) != k or len(self.drift) != k:
            raise _fail("market.regimes.state", "every regime needs a vol and a drift")
        for j in range(k):
            _vector(self.vol[j], self.base.n, f"market.regimes.state[{j}].vol", 0.0, 10.0, low_open=True)
            _vector(self.drift[j], self.base.n, f"market.regimes.state[{j}].drift", -10.0, 10.0)
        field_ = "market.regimes.transition"
        if len(self.transition) != k:
            raise _fail(field_, f"must have {k} rows (one per regime), got {len(self.transition)}")
        for j, row in enumerate(self.transition):
            _vector(row, k, f"{field_}[{j}]", 0.0, 1.0)
            if abs(math.fsum(row) - 1.0) > 1e-9:
                raise _fail(f"{field_}[{j}]", f"must sum to 1, sums to {math.fsum(row)!r}")
        if isinstance(self.initial, bool) or not isinstance(self.initial, int) or not 0 <= self.initial < k:
            raise _fail("market.regimes.initial", f"must be a regime index in [0, {k - 1}], got {self.initial!r}")

    @property
    def underlyings(self) -> tuple[str, ...]:
        return self.base.underlyings

    def stationary(self) -> Float64Array:
        r"""Stationary distribution :math:`\pi` (least squares of :math:`\pi(P - I) = 0`, :math:`\sum\pi = 1`)."""
        p = np.array(self.transition, dtype=np.float64)
        k = p.shape[0]
        a = np.vstack([(p - np.eye(k)).T, np.ones((1, k))])
        b = np.zeros(k + 1)
        b[-1] = 1.0
        out: Float64Array = np.linalg.lstsq(a, b, rcond=None)[0]
        return out

    def shocks(self, steps: int, rng: np.random.Generator) -> tuple[Float64Array, Float64Array]:
        """``(u, z)``: one uniform per step for the chain, and the correlated normals."""
        u = rng.random(steps)
        return u, self.base.normals(rng, steps)

    def chain(self, u: Float64Array) -> Int64Array:
        """Regime per step (``len(u) + 1`` of them) from the uniforms ``u`` by inverse transform.

        The next regime for *every* possible current regime is found for all steps at once
        (``searchsorted`` per row of the cumulative matrix); only the walk through those
        candidates is sequential.
        """
        cum = np.cumsum(np.array(self.transition, dtype=np.float64), axis=1)
        cum[:, -1] = np.inf  # rounding never leaves a uniform without a regime
        k = cum.shape[0]
        candidates = np.stack([np.searchsorted(cum[j], u, side="right") for j in range(k)], axis=1)
        states = np.empty(u.size + 1, dtype=np.int64)
        state = self.initial
        states[0] = state
        nxt = candidates.tolist()
        for t in range(u.size):
            state = nxt[t][state]
            states[t + 1] = state
        return states

    def simulate(self, steps: int, step_seconds: int, rng: np.random.Generator | int, start: int = 0) -> MarketPath:
        """A path of ``steps`` steps of ``step_seconds`` from unix time ``start``."""
        dt_years = _check_run(steps, step_seconds)
        u, z = self.shocks(steps, _rng(rng))
        regime = self.chain(u)
        sig_k, mu_k = np.array(self.vol, dtype=np.float64), np.array(self.drift, dtype=np.float64)
        sigma, mu = sig_k[regime[:-1]], mu_k[regime[:-1]]
        log_returns = (mu - 0.5 * sigma**2) * dt_years + sigma * math.sqrt(dt_years) * z
        vol = sig_k[regime]
        return MarketPath(self.underlyings, _times(start, steps, step_seconds),
                          _prices(self.base.initial_prices, log_returns), self.base.variance_risk_premium * vol,
                          vol, regime)  # fmt: skip


# ----------------------------------------------------------------------------- GARCH(1,1)


@dataclass(frozen=True)
class GarchModel:
    r"""GARCH(1,1) conditional volatility per underlying, correlated innovations.

    Attributes
    ----------
    base : Diffusion
    vol : tuple of float
        Long-run (unconditional) annualised volatility :math:`\bar\sigma_u > 0` (``market.vol``).
    alpha, beta : tuple of float
        ARCH and GARCH coefficients, :math:`\alpha, \beta \ge 0`, :math:`\alpha + \beta < 1`
        (``market.garch.alpha``, ``market.garch.beta``).
    drift : tuple of float
        Annualised drift :math:`\mu_u` (``market.drift``).
    initial_vol : tuple of float
        Annualised conditional volatility at step 0 (``market.garch.initial_vol``; defaults to
        the long-run volatility).

    Notes
    -----
    Per-step variance units (:math:`\bar\sigma^2\Delta t` is the long-run per-step variance):

    .. math:: \varepsilon_t = h_t^{1/2} z_t, \qquad
              h_{t+1} = \omega + \alpha\,\varepsilon_t^2 + \beta\,h_t, \qquad
              \omega = \bar\sigma^2\Delta t\,(1 - \alpha - \beta),

    so the unconditional variance :math:`\omega / (1 - \alpha - \beta)` is the long-run one, and
    :math:`\ln(S_{t+1}/S_t) = \mu\Delta t - \tfrac12 h_t + \varepsilon_t`. The volatility
    state is :math:`\sqrt{h_t / \Delta t}` (annualised) and IV is :math:`\kappa` times it. The
    recursion is sequential in time and vectorised over underlyings.
    """

    base: Diffusion
    vol: tuple[float, ...]
    alpha: tuple[float, ...]
    beta: tuple[float, ...]
    drift: tuple[float, ...]
    initial_vol: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        n = self.base.n
        _vector(self.vol, n, "market.vol", 0.0, 10.0, low_open=True)
        _vector(self.alpha, n, "market.garch.alpha", 0.0, 1.0)
        _vector(self.beta, n, "market.garch.beta", 0.0, 1.0)
        _vector(self.drift, n, "market.drift", -10.0, 10.0)
        for u in range(n):
            if self.alpha[u] + self.beta[u] >= 1.0:
                raise _fail(f"market.garch.beta[{u}]", "alpha + beta must be < 1 (stationary variance)")
        if self.initial_vol is not None:
            _vector(self.initial_vol, n, "market.garch.initial_vol", 0.0, 10.0, low_open=True)

    @property
    def underlyings(self) -> tuple[str, ...]:
        return self.base.underlyings

    def omega(self, step_seconds: int) -> Float64Array:
        r""":math:`\omega` per underlying in per-step variance units."""
        dt_years = step_seconds / SECONDS_PER_YEAR
        a, b = np.asarray(self.alpha), np.asarray(self.beta)
        out: Float64Array = np.asarray(self.vol) ** 2 * dt_years * (1.0 - a - b)
        return out

    def shocks(self, steps: int, rng: np.random.Generator) -> Float64Array:
        """The correlated normals ``z``, shape (steps, underlyings)."""
        return self.base.normals(rng, steps)

    def variances(self, z: Float64Array, step_seconds: int) -> Float64Array:
        """Conditional per-step variances :math:`h_t`, shape (steps + 1, underlyings)."""
        dt_years = step_seconds / SECONDS_PER_YEAR
        steps, n = z.shape
        omega = self.omega(step_seconds)
        a, b = np.asarray(self.alpha), np.asarray(self.beta)
        h0 = np.asarray(self.initial_vol if self.initial_vol is not None else self.vol) ** 2 * dt_years
        h = np.empty((steps + 1, n))
        h[0] = h0
        z2 = z * z
        for u in range(n):  # scalar recursion per underlying (plain floats are faster than 1-element arrays)
            w, al, be = float(omega[u]), float(a[u]), float(b[u])
            col = z2[:, u].tolist()
            out = [float(h0[u])]
            prev = out[0]
            for t in range(steps):
                prev = w + (al * col[t] + be) * prev
                out.append(prev)
            h[:, u] = out
        return h

    def simulate(self, steps: int, step_seconds: int, rng: np.random.Generator | int, start: int = 0) -> MarketPath:
        """A path of ``steps`` steps of ``step_seconds`` from unix time ``start``."""
        dt_years = _check_run(steps, step_seconds)
        z = self.shocks(steps, _rng(rng))
        h = self.variances(z, step_seconds)
        eps = np.sqrt(h[:-1]) * z
        log_returns = np.asarray(self.drift) * dt_years - 0.5 * h[:-1] + eps
        vol = np.sqrt(h / dt_years)
        return MarketPath(self.underlyings, _times(start, steps, step_seconds),
                          _prices(self.base.initial_prices, log_returns), self.base.variance_risk_premium * vol,
                          vol)  # fmt: skip


# ----------------------------------------------------------------------------- historical replay


def parse_time(text: str, field: str) -> int:
    """ISO 8601 date or date-time (UTC unless an offset is given) to unix seconds."""
    if not isinstance(text, str):
        raise _fail(field, f"expected an ISO date or date-time string, got {text!r}")
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            moment = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
        else:
            moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.UTC)
    except ValueError:
        raise _fail(field, f"not an ISO date or date-time: {text!r}") from None
    return int(moment.timestamp())


def iso(ts: int) -> str:
    """Unix seconds to ``YYYY-MM-DDTHH:MM:SSZ``."""
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@cache
def _series(source: str, symbol: str) -> tuple[Int64Array, Float64Array]:
    path = DATA_DIR / REPLAY_FILES[source][symbol]
    try:
        times, closes = read_close_series(path, f"market.replay.source[{symbol}]")
    except ConfigError as exc:  # a broken vendored file: name the scenario field
        raise InputError(exc.field, str(exc).split(": ", 1)[-1]) from None
    times.setflags(write=False)
    closes.setflags(write=False)
    return times, closes


def replay_series(source: str, underlyings: Sequence[str]) -> tuple[Int64Array, Float64Array]:
    """Joint closes of ``underlyings`` from ``source``: (times, closes (times × underlyings)).

    Only timestamps at which every underlying has a close are kept.
    """
    if source not in REPLAY_FILES:
        raise _fail("market.replay.source", f"must be one of {', '.join(REPLAY_FILES)}, got {source!r}")
    for i, sym in enumerate(underlyings):
        if sym not in REPLAY_FILES[source]:
            have = ", ".join(REPLAY_FILES[source])
            raise _fail(f"market.underlyings[{i}]", f"no vendored series for {sym!r} (have {have})")
    series = [_series(source, sym) for sym in underlyings]
    common = series[0][0]
    for times, _ in series[1:]:
        common = np.intersect1d(common, times)
    closes = np.stack([c[np.searchsorted(t, common)] for t, c in series], axis=1)
    return common, closes


@dataclass(frozen=True)
class ReplayModel:
    r"""Historical replay of the vendored closes over ``[start, end]`` (inclusive).

    Attributes
    ----------
    underlyings : tuple of str
        Symbols with a vendored series (BTC, ETH).
    source : str
        ``hourly-2020-03``, ``hourly-2021-05`` or ``daily`` (``market.replay.source``).
    start, end : int
        Unix times of the window (``market.replay.start`` / ``end``; ISO in the scenario).
    rebase_to : tuple of float or None
        If given, prices are rescaled so that the first one is this (the crash's relative moves
        from today's level, as the devnet demo does); None replays the closes exactly.
    iv_mode : {"config", "ewma"}
        ``config`` (default, as the backtest does): each underlying's at-the-money implied
        volatility of the risk configuration's surface at ``iv_tenor_days``, held constant.
        ``ewma``: :math:`\kappa` times the annualised EWMA volatility of the replayed log-returns
        (:func:`offchain.risk.scenarios.ewma_variance`, decay ``ewma_lambda`` per step), run over
        the whole vendored series so that the window's first steps are warmed up; causal (the IV
        at a step uses only returns up to it).
    atm_vol : tuple of float
        The constant ATM implied vol per underlying used by ``config`` mode (filled from the risk
        configuration by the scenario loader).
    """

    underlyings: tuple[str, ...]
    source: str
    start: int
    end: int
    rebase_to: tuple[float, ...] | None = None
    iv_mode: ReplayIv = "config"
    atm_vol: tuple[float, ...] = ()
    variance_risk_premium: float = 1.1
    ewma_lambda: float = 0.94
    _window: tuple[Int64Array, Float64Array, Float64Array] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.underlyings) < 1:
            raise _fail("market.underlyings", "needs at least one underlying")
        if len(set(self.underlyings)) != len(self.underlyings):
            raise _fail("market.underlyings", "symbols must be unique")
        lam = _finite(self.ewma_lambda, "market.replay.ewma_lambda")
        if not 0.0 < lam < 1.0:
            raise _fail("market.replay.ewma_lambda", f"must lie in (0, 1), got {lam!r}")
        times, closes = replay_series(self.source, self.underlyings)
        if self.end <= self.start:
            raise _fail("market.replay.end", "must be after market.replay.start")
        keep = (times >= self.start) & (times <= self.end)
        if int(keep.sum()) < 2:
            raise _fail("market.replay.start", f"the window holds fewer than 2 joint closes of {self.source} "
                        f"(data: {iso(int(times[0]))} .. {iso(int(times[-1]))})")  # fmt: skip
        ewma = ewma_variance(np.expm1(np.diff(np.log(closes), axis=0)), self.ewma_lambda)[keep]
        object.__setattr__(self, "_window", (times[keep], closes[keep], ewma))
        n = len(self.underlyings)
        if self.rebase_to is not None:
            _vector(self.rebase_to, n, "market.initial_prices", 0.0, MAX_PRICE, low_open=True)
        if self.iv_mode not in ("config", "ewma"):
            raise _fail("market.replay.iv", f"must be 'config' or 'ewma', got {self.iv_mode!r}")
        if self.iv_mode == "config":
            _vector(self.atm_vol, n, "market.replay.atm_vol", 0.0, 10.0, low_open=True)
        kappa = _finite(self.variance_risk_premium, "market.variance_risk_premium")
        if kappa <= 0.0:
            raise _fail("market.variance_risk_premium", f"must be > 0, got {kappa!r}")

    @property
    def step_seconds(self) -> int:
        """The series' cadence (3,600 or 86,400 s)."""
        return REPLAY_STEP_SECONDS[self.source]

    @property
    def available_steps(self) -> int:
        """Steps in the window (joint closes minus one)."""
        return int(self._window[0].size - 1)

    def simulate(self, steps: int | None = None, step_seconds: int | None = None,
                 rng: np.random.Generator | int | None = None, start: int = 0) -> MarketPath:  # fmt: skip
        """The first ``steps`` steps of the window (all of it for None); ``rng`` and ``start`` are unused.

        Raises
        ------
        InputError
            ``steps`` beyond the window, or ``step_seconds`` not the series' cadence.
        """
        del rng, start  # a replay is deterministic and carries its own times
        if step_seconds is not None and step_seconds != self.step_seconds:
            cadence = f"a {self.source} replay steps every {self.step_seconds} s"
            raise _fail("run.step_seconds", f"{cadence}, got {step_seconds}")
        times, closes, ewma = self._window
        if steps is None:
            steps = self.available_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= self.available_steps:
            raise _fail("run.steps", f"must be in [1, {self.available_steps}] for this window, got {steps!r}")
        times, prices = times[: steps + 1], closes[: steps + 1]
        if self.rebase_to is not None:
            prices = prices * (np.asarray(self.rebase_to) / prices[0])
        kappa = self.variance_risk_premium
        if self.iv_mode == "config":
            vol = np.broadcast_to(np.asarray(self.atm_vol) / kappa, prices.shape)
        else:
            vol = np.sqrt(ewma[: steps + 1] * (SECONDS_PER_YEAR / self.step_seconds))
            vol = np.maximum(vol, 1e-6)  # a flat stretch of history never gives a zero IV
        return MarketPath(self.underlyings, times, prices, kappa * vol, vol)
