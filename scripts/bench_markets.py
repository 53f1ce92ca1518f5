"""Speed of the market models: one year of hourly steps (8,760) for two underlyings, per model.

Each model's vectorised ``simulate`` is timed against a plain reference measured in the same run:
one random draw call per step followed by the model's scalar recursion from
``offchain.sim.markets_reference`` (the formulas the tests compare it with). Best of ``--repeat``
runs each. The last line is JSON.

    .venv/bin/python scripts/bench_markets.py [--steps 8760] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np

from offchain.sim import markets_reference as ref
from offchain.sim.markets import Diffusion, GarchModel, GbmModel, MertonModel, RegimeModel

HOUR = 3600
BASE = Diffusion(("BTC", "ETH"), (60_000.0, 3_000.0), ((1.0, 0.7), (0.7, 1.0)))
GBM = GbmModel(BASE, (0.5, 0.7), (0.0, 0.0))
MERTON = MertonModel(GBM, 20.0, (-0.08, -0.1), (0.04, 0.05))
REGIME = RegimeModel(BASE, ("calm", "stress"), ((0.4, 0.5), (1.2, 1.5)), ((0.0, 0.0), (-0.5, -0.6)),
                     ((0.995, 0.005), (0.02, 0.98)))  # fmt: skip
GARCH = GarchModel(BASE, (0.5, 0.7), (0.06, 0.06), (0.9, 0.9), (0.0, 0.0))


def _per_step_normals(rng: np.random.Generator, steps: int) -> np.ndarray:
    factor = BASE.factor()
    return np.array([factor @ rng.standard_normal(2) for _ in range(steps)])


def _ref_gbm(steps: int, rng: np.random.Generator) -> object:
    return ref.gbm_prices(GBM, _per_step_normals(rng, steps), HOUR)


def _ref_merton(steps: int, rng: np.random.Generator) -> object:
    z = _per_step_normals(rng, steps)
    lam_dt = MERTON.intensity * HOUR / (365 * 86_400)
    counts = np.array([[c, c] for c in (int(rng.poisson(lam_dt)) for _ in range(steps))])
    eta = _per_step_normals(rng, steps)
    return ref.merton_prices(MERTON, z, counts, eta, HOUR)


def _ref_regime(steps: int, rng: np.random.Generator) -> object:
    u = np.array([rng.random() for _ in range(steps)])
    return ref.regime_path(REGIME, u, _per_step_normals(rng, steps), HOUR)


def _ref_garch(steps: int, rng: np.random.Generator) -> object:
    return ref.garch_path(GARCH, _per_step_normals(rng, steps), HOUR)


CASES: dict[str, tuple[Callable[[int, np.random.Generator], object], Callable[[int, np.random.Generator], object]]] = {
    "gbm": (lambda s, r: GBM.simulate(s, HOUR, r), _ref_gbm),
    "merton": (lambda s, r: MERTON.simulate(s, HOUR, r), _ref_merton),
    "regime": (lambda s, r: REGIME.simulate(s, HOUR, r), _ref_regime),
    "garch": (lambda s, r: GARCH.simulate(s, HOUR, r), _ref_garch),
}


def _best(fn: Callable[[int, np.random.Generator], object], steps: int, repeat: int) -> float:
    best = float("inf")
    for i in range(repeat):
        rng = np.random.default_rng(i)
        t0 = time.perf_counter()
        fn(steps, rng)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8760)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    out: dict[str, dict[str, float]] = {}
    for name, (fast, plain) in CASES.items():
        fast_s = _best(fast, args.steps, args.repeat)
        plain_s = _best(plain, args.steps, max(1, args.repeat // 2))
        out[name] = {"seconds": round(fast_s, 6), "reference_seconds": round(plain_s, 6),
                     "ratio": round(plain_s / fast_s, 1)}  # fmt: skip
        ratio = plain_s / fast_s
        print(f"{name:>7}: {fast_s * 1e3:8.2f} ms vectorised, {plain_s * 1e3:8.1f} ms plain loop, {ratio:6.1f}x")
    print(json.dumps({"steps": args.steps, "underlyings": 2, "models": out}))


if __name__ == "__main__":
    main()
