r"""Backtest statistics: Kupiec, Christoffersen, the Basel traffic light and Acerbi–Székely's Z2.

All functions take plain arrays (pure numpy/scipy) and are checked in the tests against
hand-computed values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.stats import binom, chi2

from offchain._typing import BoolArray, Float64Array, Int64Array

Zone = Literal["green", "yellow", "red"]


def _xlogy(x: float, y: float) -> float:
    return 0.0 if x == 0 else x * math.log(y)


def kupiec_pof(exceptions: int, n: int, p: float) -> tuple[float, float]:
    r"""Kupiec's proportion-of-failures likelihood ratio and its :math:`\chi^2_1` p-value.

    Notes
    -----
    With :math:`x` exceptions in :math:`n` days, :math:`\hat p = x/n` and expected rate :math:`p`:

    .. math::

        LR_{POF} = -2\bigl[(n-x)\ln(1-p) + x\ln p - (n-x)\ln(1-\hat p) - x\ln\hat p\bigr]
        \sim \chi^2_1.
    """
    if n <= 0 or not 0 <= exceptions <= n:
        raise ValueError("need 0 <= exceptions <= n and n > 0")
    phat = exceptions / n
    lr = -2.0 * (
        _xlogy(n - exceptions, 1 - p) + _xlogy(exceptions, p)
        - _xlogy(n - exceptions, 1 - phat) - _xlogy(exceptions, phat)
    )  # fmt: skip
    lr = max(lr, 0.0)
    return lr, float(chi2.sf(lr, 1))


def christoffersen_independence(hits: BoolArray) -> tuple[float, float]:
    r"""Christoffersen's (1998) independence likelihood ratio and its :math:`\chi^2_1` p-value.

    Notes
    -----
    With :math:`n_{ij}` the number of days in state :math:`j` after a day in state :math:`i`
    (1 = exception), :math:`\pi_{ij} = n_{ij}/(n_{i0}+n_{i1})` and
    :math:`\pi = (n_{01}+n_{11})/\sum n_{ij}`:

    .. math::

        LR_{ind} = -2\ln\frac{(1-\pi)^{n_{00}+n_{10}}\pi^{n_{01}+n_{11}}}
        {(1-\pi_{01})^{n_{00}}\pi_{01}^{n_{01}}(1-\pi_{11})^{n_{10}}\pi_{11}^{n_{11}}}
        \sim \chi^2_1.

    Exceptions that cluster (an exception more likely after an exception) give a small p-value.
    """
    h = np.asarray(hits, dtype=bool)
    a, b = h[:-1], h[1:]
    n00 = int(np.sum(~a & ~b))
    n01 = int(np.sum(~a & b))
    n10 = int(np.sum(a & ~b))
    n11 = int(np.sum(a & b))
    total = n00 + n01 + n10 + n11
    if total == 0 or n01 + n11 == 0:
        return 0.0, 1.0
    pi = (n01 + n11) / total
    pi0 = n01 / (n00 + n01) if n00 + n01 else 0.0
    pi1 = n11 / (n10 + n11) if n10 + n11 else 0.0
    null = _xlogy(n00 + n10, 1 - pi) + _xlogy(n01 + n11, pi)
    alt = _xlogy(n00, 1 - pi0) + _xlogy(n01, pi0) + _xlogy(n10, 1 - pi1) + _xlogy(n11, pi1)
    lr = max(-2.0 * (null - alt), 0.0)
    return lr, float(chi2.sf(lr, 1))


def traffic_light(exceptions: int, n: int = 250, p: float = 0.01) -> Zone:
    """Basel zone of ``exceptions`` VaR 99 % exceptions in ``n`` days.

    Notes
    -----
    Green while the binomial probability of at most that many exceptions is below 95 %, red from
    99.99 % (Basel Committee, 1996). For 250 days at 99 %: green 0-4, yellow 5-9, red >= 10.
    """
    cdf = float(binom.cdf(exceptions, n, p))
    if cdf < 0.95:
        return "green"
    return "yellow" if cdf < 0.9999 else "red"


def zones(hits: BoolArray, window: int = 250) -> list[Zone]:
    """The traffic-light zone of every trailing ``window``-day block (one per day from ``window``)."""
    h = np.asarray(hits, dtype=np.int64)
    if h.size < window:
        return []
    counts = np.convolve(h, np.ones(window, dtype=np.int64), mode="valid")
    return [traffic_light(int(c), window) for c in counts]


def worst_zone(zone_list: list[Zone]) -> Zone:
    """The worst zone of a list (green if empty)."""
    if "red" in zone_list:
        return "red"
    return "yellow" if "yellow" in zone_list else "green"


@dataclass(frozen=True)
class EsTest:
    """Acerbi–Székely Z2 of an ES backtest: the statistic, its p-value, and the verdict."""

    z2: float
    p_value: float

    @property
    def verdict(self) -> str:
        """``reject`` (p < 5 %: ES underestimates the tail), else ``accept``."""
        return "reject" if self.p_value < 0.05 else "accept"


def acerbi_szekely_z2(
    loss: Float64Array,
    es: Float64Array,
    var: Float64Array,
    tail: list[Float64Array],
    n_scenarios: Int64Array,
    alpha: float,
    rng: np.random.Generator,
    simulations: int = 2000,
) -> EsTest:
    r"""Acerbi & Székely (2014) test 2 of Expected Shortfall, p-value by simulation under the model.

    Parameters
    ----------
    loss, es, var : ndarray, shape (days,)
        Realised losses and the model's ES and VaR at level ``1 - alpha``.
    tail : list of ndarray
        Per day, the model's scenario losses strictly beyond its ``1 - alpha`` VaR (descending).
    n_scenarios : ndarray of int
        Per day, the number of equally likely scenarios of the model's loss distribution.
    alpha : float
        Tail probability (0.025 for ES 97.5 %).
    rng : numpy.random.Generator
        Source of the simulated samples (pass a seeded one: the p-value is reproducible).

    Notes
    -----
    .. math::

        Z_2 = \sum_{t=1}^{T} \frac{L_t\,\mathbb 1\{L_t > \mathrm{VaR}_t\}}{T\,\alpha\,\mathrm{ES}_t} - 1,

    about 0 when the ES is right and positive when losses beyond VaR are worse than ES says. The
    p-value is the share of samples, each day's loss drawn from the model's own scenario
    distribution (uniform over its scenarios), whose :math:`Z_2` is at least the realised one.
    """
    loss = np.asarray(loss, dtype=np.float64)
    es = np.asarray(es, dtype=np.float64)
    t = loss.size
    beyond = loss > np.asarray(var, dtype=np.float64)
    scale = t * alpha * np.maximum(es, 1e-300)
    z2 = float(np.sum(np.where(beyond, loss, 0.0) / scale) - 1.0)
    sims = np.zeros(simulations)
    for d in range(t):
        k = tail[d].size
        if k == 0:
            continue
        draws = rng.integers(0, int(n_scenarios[d]), simulations)
        hit = draws < k
        sims[hit] += tail[d][draws[hit]] / scale[d]
    sims -= 1.0
    p = float((1 + np.sum(sims >= z2)) / (1 + simulations))
    return EsTest(z2, p)
