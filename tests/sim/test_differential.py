"""The differential test: one scenario and seed on the twin and on the chain, compared after every call.

:class:`offchain.sim.diff.Lockstep` drives both backends with the runner's calls and, after the setup,
every step's price round and root and every round of intents, checks that they agree to the unit:
every intent's outcome (success or the same refusal name), every account's cash, loss snapshot,
deposit credit, risk nonce, collateral by symbol and positions (size, cost basis, funding snapshot),
the instruments' funding state, prices, settlements, the loss index, the insurance fund and the fee
collector by role, the active auctions, and after each step's root every account's attested margin
figures. The first disagreement fails the test with the step, round and field.

The scenario crashes (Merton jumps of about -14 % / -17 % on highly levered books, a few per run), so
that auctions start and bids land on every seed; on seed 1 an auction starts insolvent, the insurance
fund pays all it holds and the rest is socialised. The test checks that these happened, so that the
agreement covers them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from offchain.chain.indexer import PositionState
from offchain.sim.backend import (
    Bid,
    Deposit,
    ListInstrument,
    RefreshAuction,
    StartAuction,
    Trade,
    round_time,
    sim_account,
)
from offchain.sim.chain_backend import ChainBackend
from offchain.sim.diff import DivergenceError, Lockstep, Side, diff_outcomes, diff_states, side
from offchain.sim.record import RunRecord
from offchain.sim.runner import run
from offchain.sim.scenario import Scenario, scenario_from_mapping
from offchain.sim.twin import TwinBackend

pytestmark = pytest.mark.chain

STEPS = 500
SEEDS = (1, 2, 3)
E18 = 10**18


def crash_scenario(seed: int, steps: int = STEPS) -> Scenario:
    """12 accounts (levered trend and mean-reversion traders, a market maker, depositors, keepers) on
    five-minute steps through a jumpy market; the grid-only risk rule (both backends share the engine)."""
    return scenario_from_mapping({
        "run": {"name": "differential", "seed": seed, "steps": steps, "step_seconds": 300},
        "market": {"model": "merton", "underlyings": ["BTC", "ETH"], "initial_prices": [60_000.0, 3_000.0],
                   "vol": [0.6, 0.8], "correlation": 0.7,
                   "jumps": {"intensity": 500.0, "mean": [-0.15, -0.18], "vol": [0.03, 0.04], "timing": "common"}},
        "agents": [
            {"kind": "trend_trader", "count": 5, "capital": 20_000.0, "size": [50_000.0, 150_000.0], "leverage": 10.0,
             "lookback_steps": 6},
            {"kind": "mean_reversion_trader", "count": 2, "capital": 20_000.0, "size": [50_000.0, 100_000.0],
             "leverage": 8.0, "lookback_steps": 6},
            {"kind": "market_maker", "count": 1, "capital": 3_000_000.0, "size": 200_000.0},
            {"kind": "depositor", "count": 2, "capital": 10_000.0, "deposit_probability": 0.05,
             "withdraw_probability": 0.05},
            {"kind": "keeper", "count": 2, "capital": 500_000.0},
        ],
        "risk": {"es": {"method": "none"}},
    })  # fmt: skip


def twin_and_chain(scenario: Scenario) -> tuple[TwinBackend, ChainBackend]:
    """Both backends on ``scenario``; the twin's deployment time is the chain's (its genesis block time)."""
    chain = ChainBackend(scenario)
    try:
        return TwinBackend(scenario, setup_time=chain.state().timestamp), chain
    except BaseException:
        chain.close()
        raise


def run_in_lockstep(scenario: Scenario, label: str) -> tuple[RunRecord, Lockstep, ChainBackend]:
    """``scenario`` run on the twin and the chain compared after every call; fails at the first divergence."""
    twin, chain = twin_and_chain(scenario)
    lock = Lockstep(twin, chain)
    try:
        try:
            record = run(scenario, lock, write=False)
        except DivergenceError as exc:
            pytest.fail(f"{label}: {exc}")
    finally:
        lock.close()
    return record, lock, chain


@pytest.mark.parametrize("seed", SEEDS)
def test_twin_and_chain_agree_to_the_unit_every_round(seed: int) -> None:
    scenario = crash_scenario(seed)
    record, lock, chain = run_in_lockstep(scenario, f"seed {seed}")
    s = record.summary
    checks = lock.checks
    print(f"\nseed {seed}: {checks} checks over {STEPS} steps, {s['trades']} trades, {s['liquidations']} bids, "
          f"fund draws {s['fund_draws_usd']} USD, socialised {s['socialised_usd']} USD, {chain.stats.transactions} "
          f"transactions")  # fmt: skip
    assert checks >= 2 * STEPS  # every step's prices and root and at least one round
    bids = [o for _, outs in lock.outcomes for o in outs if isinstance(o.intent, Bid) and o.ok]
    assert bids and len(bids) == s["liquidations"]
    assert any(not o.ok for _, outs in lock.outcomes for o in outs)  # refusals were compared too
    if seed == 1:  # its crash leaves an auction insolvent: the fund pays all it holds, the rest is socialised
        assert float(s["fund_draws_usd"]) > 0 and float(s["socialised_usd"]) > 0


def options_scenario(seed: int, steps: int = 72) -> Scenario:
    """Option writers (covered calls with WBTC/WETH cover, short puts), a delta hedger, traders and a
    maker, hourly, at the DEFAULT risk rule (historical ES over the vendored history): every attested
    round reprices the options a second later, and the agents decide on the root's figures."""
    return scenario_from_mapping({
        "run": {"name": "differential-options", "seed": seed, "steps": steps, "step_seconds": 3600},
        "market": {"model": "gbm", "underlyings": ["BTC", "ETH"], "initial_prices": [60_000.0, 3_000.0],
                   "vol": [0.7, 0.9], "correlation": 0.8},
        "agents": [
            {"kind": "option_writer", "name": "calls", "count": 3, "capital": 50_000.0, "size": [10_000.0, 40_000.0],
             "strategy": "covered_call", "moneyness": 1.05, "tenor_days": 2, "roll_days": 1},
            {"kind": "option_writer", "name": "puts", "count": 2, "capital": 50_000.0, "size": [10_000.0, 40_000.0],
             "strategy": "short_put", "moneyness": 0.95, "tenor_days": 2, "roll_days": 0},
            {"kind": "delta_hedger", "count": 1, "capital": 200_000.0, "size": 100_000.0},
            {"kind": "trend_trader", "count": 3, "capital": 20_000.0, "size": [20_000.0, 60_000.0], "leverage": 5.0,
             "lookback_steps": 4},
            {"kind": "market_maker", "count": 2, "capital": 5_000_000.0, "size": 300_000.0},
            {"kind": "keeper", "count": 1, "capital": 500_000.0},
        ],
    })  # fmt: skip


def test_twin_and_chain_agree_with_options_at_the_default_rule() -> None:
    """The same agreement with listed, written, rolled and settled options under the default rule."""
    scenario = options_scenario(4)
    record, lock, chain = run_in_lockstep(scenario, "options")
    state = chain.state()
    options = [i for i, ins in state.instruments.items() if ins.kind != 0]
    held = {i for acct in state.accounts.values() for i in acct.positions if i in options}
    print(f"\noptions: {lock.checks} checks, {record.summary['trades']} trades, {len(options)} series listed, "
          f"{len(state.settlements)} settlement prices")  # fmt: skip
    option_fills = [o for _, outs in lock.outcomes for o in outs
                    if isinstance(o.intent, Trade) and o.ok and o.intent.instrument in options]  # fmt: skip
    assert len(options) >= 4 and held and len(option_fills) >= 10  # series listed, written, held
    assert state.settlements  # and some expired and were fixed
    assert lock.checks > scenario.run.steps  # every step's root, and the rounds


def test_a_stale_auction_is_refused_then_refreshed_alike() -> None:
    """A frozen account's fill that lowers its IM stales its auction: on both backends the bid is refused
    and the refresh with the next root's leaf (``Liquidator.refresh``) ends the auction, the account
    being back above maintenance margin (a refresh that keeps it open: ``tests/sim/test_ledger.py``)."""
    scenario = crash_scenario(7, steps=4)
    twin, chain = twin_and_chain(scenario)
    lock = Lockstep(twin, chain)
    try:
        t0, dt = scenario.run.start, scenario.run.step_seconds
        maker, trader, keeper = (sim_account(7, i)[0] for i in range(3))
        lock.begin_step(0, t0, [60_000 * E18, 3_000 * E18])
        usdc = 10**6
        lock.apply(round_time(t0, 0), [ListInstrument(0, 0, 0, 0), ListInstrument(0, 1, 0, 0),
                                       Deposit(maker, "USDC", 3_000_000 * usdc), Deposit(trader, "USDC", 10_000 * usdc),
                                       Deposit(keeper, "USDC", 500_000 * usdc)])  # fmt: skip
        bought = lock.apply(round_time(t0, 1), [Trade(maker, trader, 1, E18, 60_000 * E18, True)])  # 1 BTC perp
        assert bought[0].ok, bought
        crashed = [53_000 * E18, 2_900 * E18]
        lock.begin_step(1, t0 + dt, crashed)  # the root shows the trader below MM
        started = lock.apply(round_time(t0 + dt, 0), [StartAuction(keeper, trader)])
        assert started[0].ok, started
        assert twin.auctions()[trader].nonce == twin.state().accounts[trader].risk_nonce
        # frozen, the trader still sells 0.9 BTC (that lowers its IM): its nonce moves under the snapshot
        out = lock.apply(round_time(t0 + dt, 1), [Trade(maker, trader, 1, 9 * E18 // 10, 53_000 * E18, False)])
        assert out[0].ok and twin.auctions()[trader].stale(twin.state())
        bid = Bid(keeper, trader, 10**17, 10**15)
        assert not lock.apply(round_time(t0 + dt, 2), [bid])[0].ok  # refused alike on both
        lock.begin_step(2, t0 + 2 * dt, crashed)  # a root with the trader's leaf at its new nonce
        assert lock.apply(round_time(t0 + 2 * dt, 0), [RefreshAuction(keeper, trader)])[0].ok
        # the fill needed maintenance margin after it, so the leaf shows the trader healthy: the auction ends
        assert trader not in twin.auctions() and not chain.state().accounts[trader].frozen
        assert not lock.apply(round_time(t0 + 2 * dt, 1), [bid])[0].ok  # nothing left to bid on, alike
    finally:
        lock.close()


# ---------------------------------------------------------------------- the comparison can fail
@pytest.fixture(scope="module")
def agreed() -> Iterator[tuple[TwinBackend, ChainBackend]]:
    """Both backends after a short identical history: prices, perps, deposits and a trade."""
    scenario = crash_scenario(5, steps=4)
    twin, chain = twin_and_chain(scenario)
    lock = Lockstep(twin, chain)
    start = scenario.run.start
    a, b = sim_account(5, 0)[0], sim_account(5, 1)[0]
    lock.begin_step(0, start, [60_000 * E18, 3_000 * E18])
    lock.apply(round_time(start, 0), [ListInstrument(0, 0, 0, 0), ListInstrument(0, 1, 0, 0),
                                      Deposit(a, "USDC", 100_000 * 10**6), Deposit(b, "WETH", 10 * E18)])  # fmt: skip
    lock.apply(round_time(start, 1), [Trade(a, b, 1, E18, 60_000 * E18, True)])
    try:
        yield twin, chain
    finally:
        lock.close()


def perturbed(s: Side, **changes: Any) -> Side:
    return dataclasses.replace(s, state=s.state.copy(), **changes)


def test_agreeing_states_compare_equal(agreed: tuple[TwinBackend, ChainBackend]) -> None:
    twin, chain = agreed
    assert diff_states(side(twin), side(chain)) is None


def test_a_perturbed_twin_is_reported_with_the_field_path(agreed: tuple[TwinBackend, ChainBackend]) -> None:
    twin, chain = agreed
    b = sim_account(5, 1)[0]
    left = perturbed(side(twin))
    pos = left.state.accounts[b].positions[1]
    left.state.accounts[b].positions[1] = PositionState(pos.size, pos.cost_basis + 1, pos.funding_snapshot)
    d = diff_states(left, side(chain))
    assert d is not None
    assert d.message("step 137 round 2") == (f"step 137 round 2: accounts[{b[:6]}..{b[-4:]}].positions[1].cost_basis: "
                                             f"twin {pos.cost_basis + 1} chain {pos.cost_basis}")  # fmt: skip

    left = perturbed(side(twin))
    weth = twin.token_address("WETH")
    left.state.accounts[b].collateral[weth] -= 1
    d = diff_states(left, side(chain))
    assert d is not None and d.path == f"accounts[{b[:6]}..{b[-4:]}].collateral[WETH]" and d.left + 1 == d.right

    left = perturbed(side(twin))
    fund = left.roles["insurance_fund"]
    left.state.accounts[fund].cash += 1
    d = diff_states(left, side(chain))
    assert d is not None and d.path == "roles.insurance_fund.effective_cash"

    left = perturbed(side(twin))
    left.state.loss_index += 1
    d = diff_states(left, side(chain))
    assert d is not None and d.path == "loss_index"


def test_collateral_and_roles_compare_by_symbol_and_role_not_address(agreed: tuple[TwinBackend, ChainBackend]) -> None:
    """The same balances under other token and fund addresses are equal (addresses may differ)."""
    twin, chain = agreed
    left = perturbed(side(twin))
    weth, other = twin.token_address("WETH"), "0x" + "77" * 20
    for acct in left.state.accounts.values():
        if weth in acct.collateral:
            acct.collateral[other] = acct.collateral.pop(weth)
    left.state.collaterals[other] = left.state.collaterals.pop(weth)
    fund, new_fund = left.roles["insurance_fund"], "0x" + "66" * 20
    left.state.accounts[new_fund] = left.state.accounts.pop(fund)
    symbols = {**{a: s for a, s in left.symbols.items() if a != weth}, other: "WETH"}
    moved = dataclasses.replace(left, symbols=symbols, roles={**left.roles, "insurance_fund": new_fund})
    assert diff_states(moved, side(chain)) is None


def test_outcomes_compare_by_intent_success_and_refusal_name() -> None:
    from offchain.sim.backend import Outcome

    intent = Deposit(sim_account(1, 0)[0], "USDC", 1)
    assert diff_outcomes([Outcome(intent, False, "Input", "a")], [Outcome(intent, False, "Input", "b")]) is None
    d = diff_outcomes([Outcome(intent, False, "Input")], [Outcome(intent, False, "Vault_ZeroAmount")])
    assert d is not None and d.message("step 3 round 0") == (
        "step 3 round 0: outcomes[0].error: twin 'Input' chain 'Vault_ZeroAmount'")
