"""Benchmark of Monte Carlo Expected Shortfall for the whole book (not part of the test suite).

Same book as ``scripts/bench_margin.py`` (100,000 accounts × 20 positions over about 1,000 BTC
and ETH instruments). The Monte Carlo run draws ``monte_carlo.paths`` (2,000 by default)
correlated 1-day returns seeded from (config hash, price round), prices every instrument on every
path and reduces each account's path P&L to ES 97.5 % and VaR 99 % (plus the grid, which rides
along in the same kernel pass). Median of ``--runs`` warm runs; the last line printed is JSON.

Usage: ``.venv/bin/python scripts/bench_mc_es.py [--accounts N] [--paths P] [--runs K]``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource

import numba
import numpy as np
from bench_margin import book, listing, market, median_seconds

from offchain.risk.config import load_config
from offchain.risk.engine import MarginEngine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--positions", type=int, default=20)
    parser.add_argument("--paths", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    config = load_config()
    config = dataclasses.replace(
        config,
        es=dataclasses.replace(config.es, method="monte_carlo"),
        monte_carlo=dataclasses.replace(config.monte_carlo, paths=args.paths),
    )
    instruments, mkt = listing(), market()
    bk = book(instruments, args.accounts, args.positions)
    result = MarginEngine(config, instruments, mkt).compute(bk)
    assert np.all(np.isfinite(result.es)) and np.all(np.isfinite(result.var))
    seconds = median_seconds(lambda: MarginEngine(config, instruments, mkt).compute(bk), args.runs)
    pricing = median_seconds(lambda: MarginEngine(config, instruments, mkt), args.runs)
    print(f"Monte Carlo ES, {args.paths} paths, {args.accounts} accounts: {seconds:.3f} s (pricing {pricing:.3f} s)")
    out = {
        "accounts": args.accounts,
        "positions_per_account": args.positions,
        "instruments": len(instruments),
        "paths": args.paths,
        "scenarios": int(MarginEngine(config, instruments, mkt).pnl.shape[1]),
        "seconds": round(seconds, 4),
        "pricing_seconds": round(pricing, 4),
        "threads": numba.get_num_threads(),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
