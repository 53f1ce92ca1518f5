"""Speed of the simulator (issue 11): a year of hourly steps for 1,000 accounts on the twin.

    .venv/bin/python scripts/bench_sim.py [--accounts 1000] [--steps 8760] [--chain] [--chain-steps 1000]
                                          [--skip-twin-year]

Runs the same seeded scenario (a mixed population of ``--accounts`` agents, GBM market) on the twin
backend twice, with the margins of every account recomputed at every step (the runner reads them at
each status root): at the default risk rule (``max(grid, ES) + add-ons``) and with the grid-only
rule (``[risk.es] method = "none"``). Targets: <= 120 s and <= 30 s on 2 cores.

Plain reference, measured in the same run on the final state: every account's margin computed one
account at a time (``MarginEngine.account``, no batch) against the batch kernel
(``MarginEngine.compute`` over the whole book) the twin's margins use, inputs built once; the ratio is
printed.

``--chain`` (the chain half): the same scenario over ``--chain-steps`` steps on
``offchain.sim.chain_backend.ChainBackend`` and on the twin, giving ``chain_tx_per_s``
(transactions mined per second of the whole chain run, set-up, price rounds and roots included) and
``twin_chain_ratio`` (chain seconds / twin seconds on that scenario). Without ``--chain`` both are null.
The chain run's seconds start when the runner starts (the scenario's set-up rounds included); Anvil's
start and the contracts' deployment before it are timed apart and printed, with the rate they would
give if counted (``chain_deploy_seconds``, ``chain_tx_per_s_with_deploy``).

``--phases STEPS`` first prints where a twin step's time goes (:data:`PHASES`, ms a step over ``STEPS`` steps,
at the default rule and grid-only): a guide for speed work, not a target.

``--skip-twin-year`` skips the two twin runs of ``--steps`` steps (``twin_seconds`` and
``twin_grid_seconds`` are then null): the chain half alone, quickly.

The last line is JSON: accounts, steps, twin_seconds, twin_grid_seconds, chain_tx_per_s,
twin_chain_ratio (and the reference figures).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from typing import Any

from offchain.sim.backend import Backend, Outcome
from offchain.sim.runner import make_backend, run
from offchain.sim.scenario import Scenario, scenario_from_mapping

#: Population shares of the benchmark scenario (sum 1): what a realistic venue holds.
SHARES = (
    ("option_writer", "covered-call writers", 0.05, 50_000.0, [10_000.0, 40_000.0], {"strategy": "covered_call"}),
    ("option_writer", "put writers", 0.05, 50_000.0, [10_000.0, 40_000.0], {"strategy": "short_put", "moneyness": 0.9}),
    ("delta_hedger", "delta_hedger", 0.05, 200_000.0, 100_000.0, {}),
    ("trend_trader", "trend_trader", 0.30, 20_000.0, [5_000.0, 60_000.0], {"trade_every_steps": 4}),
    ("mean_reversion_trader", "mean_reversion_trader", 0.30, 20_000.0, [5_000.0, 60_000.0], {}),
    ("market_maker", "market_maker", 0.004, 20_000_000.0, 250_000.0, {"inventory_limit": 2e7}),
    ("keeper", "keeper", 0.006, 500_000.0, 500_000.0, {}),
)


def bench_scenario(accounts: int, steps: int, grid_only: bool = False, seed: int = 11) -> Scenario:
    """The benchmark's scenario: ``accounts`` agents in :data:`SHARES`, the rest depositors."""
    agents: list[dict[str, Any]] = []
    used = 0
    for kind, name, share, capital, size, opts in SHARES:
        n = max(1, round(accounts * share))
        used += n
        agents.append({"kind": kind, "name": name, "count": n, "capital": capital, "size": size, **opts})
    agents.append({"kind": "depositor", "count": max(1, accounts - used), "capital": 10_000.0,
                   "deposit_probability": 0.01, "withdraw_probability": 0.01})  # fmt: skip
    mapping: dict[str, Any] = {
        "run": {"name": f"bench-{accounts}x{steps}", "seed": seed, "steps": steps, "step_seconds": 3600},
        "market": {"model": "gbm", "underlyings": ["BTC", "ETH"], "initial_prices": [60_000.0, 3_000.0],
                   "vol": [0.5, 0.65], "correlation": 0.8},
        "agents": agents,
    }  # fmt: skip
    if grid_only:
        mapping["risk"] = {"es": {"method": "none"}}
    return scenario_from_mapping(mapping)


class Counting:
    """A backend wrapper counting the intents applied (for transactions per second)."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name
        self.intents = 0
        self.deployment = getattr(inner, "deployment", None)

    def apply(self, when: int, intents: Any) -> list[Outcome]:
        self.intents += len(intents)
        return self.inner.apply(when, intents)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def timed(scenario: Scenario, name: str) -> tuple[float, int, Backend]:
    seconds, intents, backend, _ = timed_with_setup(scenario, name)
    return seconds, intents, backend


def timed_with_setup(scenario: Scenario, name: str) -> tuple[float, int, Backend, float]:
    """(run seconds, intents, backend, seconds to make the backend: Anvil and the deployment for the chain)."""
    began = time.perf_counter()
    backend = Counting(make_backend(name, scenario))
    made = time.perf_counter()
    run(scenario, backend, write=False)  # type: ignore[arg-type]
    return time.perf_counter() - made, backend.intents, backend, made - began  # type: ignore[return-value]


def work(backend: Backend, steps: int) -> str:
    """What a twin step did on average: rounds, attestations, markets built, kernel rows."""
    twin = getattr(backend, "inner", backend)
    st, core, margins = twin.stats, twin.core, twin._margins.stats
    return (f"  per step: {st['rounds'] / steps:.1f} rounds, {st['attestations'] / steps:.1f} attestations, "
            f"{core.markets_built / steps:.1f} markets built, {margins['kernel_full'] / steps:.1f} full kernel "
            f"passes + {margins['kernel_rows'] / steps:.1f} rows")  # fmt: skip


def reference(backend: Backend) -> tuple[float, float]:
    """(batch seconds, one-account-at-a-time seconds) of every account's margin on the final state."""
    from offchain.engine.core import EngineCore

    core: EngineCore | None = getattr(backend, "core", None) or getattr(backend, "engine", None)
    if not isinstance(core, EngineCore):
        return float("nan"), float("nan")
    state = backend.state()
    engine = core.engine(state)
    _, book = core.book(state)  # inputs built once: the kernels are what is compared
    singles = [core.account_state(state, acct) for acct in state.accounts.values()]
    began = time.perf_counter()
    engine.compute(book)
    batch = time.perf_counter() - began
    began = time.perf_counter()
    for one in singles:
        engine.account(one)
    return batch, time.perf_counter() - began


#: Where a twin step's time goes (``--phases``): (module, class, method, label); an indented label is inside the one
#: above it (the agents' rounds hold the attestations and the ledger).
PHASES = (
    ("offchain.sim.runner", "_Loop", "step", "a step, all of it"),
    ("offchain.sim.twin", "TwinBackend", "_post_root", "  the status root: every account's margins"),
    ("offchain.engine.core", "EngineCore", "_build_engine", "  the market (valuation, scenario P&L), wherever built"),
    ("offchain.sim.margins", "IncrementalMargins", "_kernel", "  the kernel over every account (first call: loading)"),
    ("offchain.sim.runner", "_Loop", "trade", "  the agents' rounds (attestations and ledger included)"),
    ("offchain.sim.twin", "TwinBackend", "_attest", "  attestations (the engine)"),
    ("offchain.sim.twin", "TwinBackend", "_execute", "  the ledger (the contracts' rules)"),
    ("offchain.sim.metrics", "Metrics", "end_step", "  the metrics"),
)


def phases(scenario: Scenario) -> list[tuple[str, float]]:
    """(label, seconds) of :data:`PHASES` over a twin run of ``scenario`` (each method timed by a wrapper)."""
    spent: dict[str, float] = {label: 0.0 for *_, label in PHASES}
    saved = []
    for module, cls_name, method, label in PHASES:
        cls = getattr(importlib.import_module(module), cls_name)
        inner = getattr(cls, method)
        saved.append((cls, method, inner))

        def timed_call(*a: Any, _inner: Any = inner, _label: str = label, **k: Any) -> Any:
            began = time.perf_counter()
            try:
                return _inner(*a, **k)
            finally:
                spent[_label] += time.perf_counter() - began

        setattr(cls, method, timed_call)
    try:
        backend = make_backend("twin", scenario)
        run(scenario, backend, write=False)
        backend.close()
    finally:
        for cls, method, inner in saved:
            setattr(cls, method, inner)
    return list(spent.items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--accounts", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=8760)
    ap.add_argument("--chain", action="store_true", help="also run the chain backend (needs ChainBackend)")
    ap.add_argument("--chain-steps", type=int, default=1000)
    ap.add_argument("--skip-twin-year", action="store_true", help="skip the twin runs of --steps steps")
    ap.add_argument("--phases", type=int, metavar="STEPS", default=0,
                    help="first print where a twin step's time goes over STEPS steps (default, grid-only)")  # fmt: skip
    args = ap.parse_args()

    for grid_only in (False, True) if args.phases else ():
        table = phases(bench_scenario(args.accounts, args.phases, grid_only=grid_only))
        rule = "grid-only" if grid_only else "default"
        print(f"where a twin step's time goes, {rule} rule, {args.accounts} accounts x {args.phases} steps, ms a step:")
        for label, seconds in table:
            print(f"  {label:<56} {seconds / args.phases * 1e3:7.2f}")

    twin_s: float | None = None
    grid_s: float | None = None
    batch = single = float("nan")
    if not args.skip_twin_year:
        twin_s, intents, backend = timed(bench_scenario(args.accounts, args.steps), "twin")
        print(f"twin, default rule: {args.accounts} accounts x {args.steps} steps in {twin_s:.1f} s "
              f"({intents} intents, target <= 120 s)")  # fmt: skip
        print(work(backend, args.steps))
        batch, single = reference(backend)
        backend.close()
        print(f"reference (final state): batch margins {batch * 1e3:.1f} ms, one account at a time "
              f"{single * 1e3:.1f} ms: {single / batch:.1f}x")  # fmt: skip
        grid_s, _, b2 = timed(bench_scenario(args.accounts, args.steps, grid_only=True), "twin")
        print(work(b2, args.steps))
        b2.close()
        print(f"twin, grid-only rule: {grid_s:.1f} s (target <= 30 s)")

    chain_tx_per_s: float | None = None
    with_deploy: float | None = None
    deploy_s: float | None = None
    ratio: float | None = None
    if args.chain:
        # ---- chain half: needs offchain.sim.chain_backend.ChainBackend (the chainsim helper's) ----
        try:
            importlib.import_module("offchain.sim.chain_backend")
        except ImportError:
            print("--chain: offchain.sim.chain_backend is not there yet; chain figures left null", file=sys.stderr)
        else:
            sc = bench_scenario(args.accounts, args.chain_steps)
            chain_s, chain_intents, cb, deploy_s = timed_with_setup(sc, "chain")
            cb.close()
            twin_small, _, tb = timed(sc, "twin")
            tb.close()
            stats = cb.inner.stats  # type: ignore[attr-defined]
            chain_tx_per_s = stats.transactions / chain_s
            with_deploy = stats.transactions / (chain_s + deploy_s)
            ratio = chain_s / twin_small
            print(f"chain: {stats.transactions} transactions ({chain_intents} intents, {stats.blocks} blocks) in "
                  f"{chain_s:.1f} s of the whole run = {chain_tx_per_s:.0f} tx/s (target >= 100); Anvil's start "
                  f"and the deployment before it {deploy_s:.1f} s ({with_deploy:.0f} tx/s counting them); twin "
                  f"{twin_small:.1f} s on the same {args.chain_steps} steps: {ratio:.0f}x")  # fmt: skip

    def r(x: float | None, digits: int) -> float | None:
        return None if x is None or x != x else round(x, digits)

    print(json.dumps({"accounts": args.accounts, "steps": args.steps, "twin_seconds": r(twin_s, 2),
                      "twin_grid_seconds": r(grid_s, 2), "chain_tx_per_s": chain_tx_per_s,
                      "twin_chain_ratio": ratio, "chain_deploy_seconds": r(deploy_s, 2),
                      "chain_tx_per_s_with_deploy": with_deploy,
                      "chain_steps": args.chain_steps if args.chain else None,
                      "reference_batch_ms": r(batch * 1e3, 3), "reference_single_ms": r(single * 1e3, 3)}))  # fmt: skip


if __name__ == "__main__":
    main()
