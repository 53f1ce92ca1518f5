"""Benchmark of the margin engine on a production-size book (not part of the test suite).

Book: 100,000 accounts × 20 positions over about 1,000 listed BTC and ETH instruments (perps,
quarterly futures, calls and puts at 25 strikes × 10 expiries each). Every timed run counts
pricing (instrument × scenario P&L matrix), IM, MM and add-ons for every account; medians of
``--runs`` warm runs. Figures:

* the production recompute with the default configuration (joint grid + historical ES over
  the whole joint BTC/ETH history), and the grid-only recompute (``es.method = "none"``);
* one account's margin check (the fast path the service attests with);
* the plain per-position scalar Python loop (``offchain.risk.reference``) on a sample of
  accounts, extrapolated to the whole book, and the speed ratio.

Monte Carlo ES is in ``scripts/bench_mc_es.py``. The last line printed is one JSON object.

Usage: ``.venv/bin/python scripts/bench_margin.py [--accounts N] [--runs K] [--sample S]``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import statistics
import time
from collections.abc import Callable

import numba
import numpy as np
import scipy.sparse as sp

from offchain.models.vol_surface import SviSlice, VolSurface
from offchain.risk.accounts import AccountBook
from offchain.risk.config import RiskConfig, load_config
from offchain.risk.engine import MarginEngine, MarginResult
from offchain.risk.instruments import InstrumentTable, Kind
from offchain.risk.market import SECONDS_PER_YEAR, MarketState
from offchain.risk.reference import reference_account

NOW = 1_735_689_600
DAY = 86_400
SPOT = (60_000.0, 3_000.0)
ATM = (0.55, 0.70)
EXPIRY_DAYS = (1, 2, 7, 14, 30, 60, 90, 180, 270, 365)
STRIKES = np.linspace(0.6, 1.6, 25)


def listing() -> InstrumentTable:
    """Perp, 4 quarterly futures, calls and puts at 25 strikes × 10 expiries, per underlying."""
    records: list[dict[str, float | int]] = []
    for u, spot in enumerate(SPOT):
        records.append({"kind": Kind.PERP, "underlying": u, "strike": 0.0, "expiry": 0})
        records += [
            {"kind": Kind.FUTURE, "underlying": u, "strike": 0.0, "expiry": NOW + q * 91 * DAY} for q in (1, 2, 3, 4)
        ]
        for days in EXPIRY_DAYS:
            for m in STRIKES:
                for kind in (Kind.CALL, Kind.PUT):
                    strike = round(spot * float(m), 0)
                    records.append({"kind": kind, "underlying": u, "strike": strike, "expiry": NOW + days * DAY})
    return InstrumentTable.from_records([{"instrument_id": i + 1, **r} for i, r in enumerate(records)])


def market() -> MarketState:
    """SVI smiles with skew at every listed expiry, slightly upward term structure."""

    def smile(atm: float, days: int) -> SviSlice:
        t = days * DAY / SECONDS_PER_YEAR
        b, sigma = 0.4 * t, 0.1
        vol = atm * (1.0 + 0.05 * np.log1p(days / 30.0))
        return SviSlice(t=t, a=vol * vol * t - b * sigma, b=b, rho=-0.3, m=0.0, sigma=sigma)

    surfaces = tuple(VolSurface(tuple(smile(atm, d) for d in EXPIRY_DAYS)) for atm in ATM)
    return MarketState(np.array(SPOT), NOW, surfaces, round_id=1)


def book(instruments: InstrumentTable, accounts: int, positions: int, seed: int = 1) -> AccountBook:
    """Random book: distinct instruments per account, about 1 BTC or 20 ETH per position."""
    rng = np.random.default_rng(seed)
    chunk = 5_000  # argsort of random keys, a chunk of accounts at a time (bounded memory)
    cols = np.concatenate(
        [
            np.argsort(rng.random((min(chunk, accounts - a), len(instruments))), axis=1)[:, :positions].ravel()
            for a in range(0, accounts, chunk)
        ]
    )
    scale = np.where(instruments.underlying[cols] == 0, 1.0, 20.0)
    sizes = np.round(rng.normal(size=cols.size) * scale, 3)
    rows = np.repeat(np.arange(accounts), positions)
    return AccountBook(
        sp.csr_matrix((sizes, (rows, cols)), shape=(accounts, len(instruments))),
        cash=rng.uniform(0, 100_000, accounts),
        cost_basis=rng.normal(0, 50_000, accounts),
        funding_owed=rng.normal(0, 50, accounts),
        collateral=rng.uniform(0, 2, (accounts, 3)),
    )


def median_seconds(fn: Callable[[], object], runs: int) -> float:
    """Median wall time of ``runs`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def full_recompute(config: RiskConfig, instruments: InstrumentTable, mkt: MarketState, bk: AccountBook) -> MarginResult:
    """Pricing + IM + MM + add-ons for every account: what one engine round does."""
    return MarginEngine(config, instruments, mkt).compute(bk)


def reference_seconds_per_account(
    config: RiskConfig, instruments: InstrumentTable, mkt: MarketState, bk: AccountBook, sample: int
) -> float:
    """Scalar per-position loop on ``sample`` accounts, seconds per account (and checked equal)."""
    engine = MarginEngine(config, instruments, mkt)
    result = engine.compute(bk)
    start = time.perf_counter()
    for a in range(sample):
        ref = reference_account(config, instruments, mkt, bk.account(a), engine.grid, engine.tail)
        assert abs(ref.im - result.im[a]) <= 1e-9 * max(1.0, abs(ref.im)), (a, ref.im, result.im[a])
    return (time.perf_counter() - start) / sample


def single_account_ms(engine: MarginEngine, bk: AccountBook, instrument_id: int) -> tuple[float, float]:
    """Milliseconds of one account's check and of one what-if trade on it (medians)."""
    state = bk.account(0)
    calls = 2_000
    check = median_seconds(lambda: [engine.account(state) for _ in range(calls)], 3) / calls
    trade = median_seconds(
        lambda: [engine.what_if_trade(state, instrument_id, 0.1, 60_000.0, 1.0) for _ in range(calls)], 3
    )
    return check * 1e3, trade / calls * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--positions", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sample", type=int, default=3, help="accounts timed with the scalar reference")
    args = parser.parse_args()

    config = load_config()
    grid_only = dataclasses.replace(config, es=dataclasses.replace(config.es, method="none"))
    instruments, mkt = listing(), market()
    bk = book(instruments, args.accounts, args.positions)
    engine = MarginEngine(config, instruments, mkt)
    n_all, n_grid = engine.pnl.shape[1], engine.grid.size
    threads = numba.get_num_threads()
    print(f"{args.accounts} accounts x {args.positions} positions, {len(instruments)} instruments, {threads} threads")

    seconds = median_seconds(lambda: full_recompute(config, instruments, mkt, bk), args.runs)
    pricing = median_seconds(lambda: MarginEngine(config, instruments, mkt), args.runs)
    print(f"production ({n_all} scenarios = {n_grid} grid + {n_all - n_grid} historical): {seconds:.4f} s")
    print(f"  of which pricing: {pricing:.4f} s")
    grid_seconds = median_seconds(lambda: full_recompute(grid_only, instruments, mkt, bk), args.runs)
    print(f"grid only ({n_grid} scenarios, es.method = none): {grid_seconds:.4f} s")
    single, what_if = single_account_ms(engine, bk, int(instruments.instrument_id[0]))
    print(f"one account: {single:.4f} ms; what-if trade: {what_if:.4f} ms")
    reference = reference_seconds_per_account(config, instruments, mkt, bk, args.sample) * args.accounts
    reference_grid = reference_seconds_per_account(grid_only, instruments, mkt, bk, args.sample) * args.accounts
    print(f"scalar reference, extrapolated: {reference:,.0f} s (grid only {reference_grid:,.0f} s)")
    out = {
        "accounts": args.accounts,
        "positions_per_account": args.positions,
        "instruments": len(instruments),
        "scenarios": n_all,
        "seconds": round(seconds, 5),
        "reference_seconds_extrapolated": round(reference, 1),
        "ratio": round(reference / seconds, 1),
        "grid_scenarios": n_grid,
        "grid_seconds": round(grid_seconds, 5),
        "grid_reference_seconds_extrapolated": round(reference_grid, 1),
        "grid_ratio": round(reference_grid / grid_seconds, 1),
        "pricing_seconds": round(pricing, 5),
        "single_account_ms": round(single, 5),
        "what_if_trade_ms": round(what_if, 5),
        "threads": threads,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
