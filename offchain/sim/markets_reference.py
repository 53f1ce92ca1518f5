"""Plain scalar references of the market models: the same formulas, step by step, in Python floats.

Each function takes a model of :mod:`offchain.sim.markets` and the shocks its ``shocks`` method
drew, and applies the model's recursion one step and one underlying at a time. The tests compare
them with the vectorised ``simulate``; ``scripts/bench_markets.py`` times both.
"""

from __future__ import annotations

import math

from offchain._typing import Float64Array, Int64Array
from offchain.risk.market import SECONDS_PER_YEAR
from offchain.sim.markets import GarchModel, GbmModel, MertonModel, RegimeModel


def gbm_prices(model: GbmModel, z: Float64Array, step_seconds: int) -> list[list[float]]:
    """Prices per step (``steps + 1`` rows) of :class:`GbmModel` from its normals ``z``."""
    dt = step_seconds / SECONDS_PER_YEAR
    rows = [list(model.base.initial_prices)]
    for t in range(z.shape[0]):
        row = []
        for u in range(z.shape[1]):
            sigma, mu = model.vol[u], model.drift[u]
            r = (mu - 0.5 * sigma * sigma) * dt + sigma * math.sqrt(dt) * float(z[t, u])
            row.append(rows[-1][u] * math.exp(r))
        rows.append(row)
    return rows


def merton_prices(
    model: MertonModel, z: Float64Array, counts: Int64Array, eta: Float64Array, step_seconds: int
) -> list[list[float]]:
    """Prices per step of :class:`MertonModel` from its shocks ``(z, counts, eta)``."""
    dt = step_seconds / SECONDS_PER_YEAR
    gbm = model.gbm
    rows = [list(gbm.base.initial_prices)]
    for t in range(z.shape[0]):
        row = []
        for u in range(z.shape[1]):
            sigma, mu, m, s = gbm.vol[u], gbm.drift[u], model.mean[u], model.vol[u]
            k = math.exp(m + 0.5 * s * s) - 1.0
            n = int(counts[t, u])
            jump = n * m + math.sqrt(n) * s * float(eta[t, u])
            r = (mu - model.intensity * k - 0.5 * sigma * sigma) * dt + sigma * math.sqrt(dt) * float(z[t, u]) + jump
            row.append(rows[-1][u] * math.exp(r))
        rows.append(row)
    return rows


def regime_path(
    model: RegimeModel, u: Float64Array, z: Float64Array, step_seconds: int
) -> tuple[list[list[float]], list[int]]:
    """Prices and regimes per step of :class:`RegimeModel` from its shocks ``(u, z)``."""
    dt = step_seconds / SECONDS_PER_YEAR
    state = model.initial
    states = [state]
    rows = [list(model.base.initial_prices)]
    for t in range(z.shape[0]):
        row = []
        for j in range(z.shape[1]):
            sigma, mu = model.vol[state][j], model.drift[state][j]
            r = (mu - 0.5 * sigma * sigma) * dt + sigma * math.sqrt(dt) * float(z[t, j])
            row.append(rows[-1][j] * math.exp(r))
        rows.append(row)
        acc, nxt = 0.0, len(model.names) - 1
        for k, p in enumerate(model.transition[state]):
            acc += p
            if float(u[t]) < acc:
                nxt = k
                break
        state = nxt
        states.append(state)
    return rows, states


def garch_path(model: GarchModel, z: Float64Array, step_seconds: int) -> tuple[list[list[float]], list[list[float]]]:
    """Prices and conditional per-step variances of :class:`GarchModel` from its normals ``z``."""
    dt = step_seconds / SECONDS_PER_YEAR
    n = z.shape[1]
    h0 = model.initial_vol if model.initial_vol is not None else model.vol
    hs = [[v * v * dt for v in h0]]
    rows = [list(model.base.initial_prices)]
    for t in range(z.shape[0]):
        row, hrow = [], []
        for u in range(n):
            a, b = model.alpha[u], model.beta[u]
            omega = model.vol[u] ** 2 * dt * (1.0 - a - b)
            h = hs[-1][u]
            eps = math.sqrt(h) * float(z[t, u])
            row.append(rows[-1][u] * math.exp(model.drift[u] * dt - 0.5 * h + eps))
            hrow.append(omega + a * eps * eps + b * h)
        rows.append(row)
        hs.append(hrow)
    return rows, hs
