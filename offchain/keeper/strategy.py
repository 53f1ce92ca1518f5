"""When and how much to bid: the auction rules of :mod:`offchain.rules`, an unwind-cost model and
the profit thresholds. Pure integers in quote units (6 decimals) and WAD fractions; no chain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from offchain import rules
from offchain.keeper.config import ProfitConfig, UnwindConfig
from offchain.protocol import QUOTE_SCALE, WAD


@dataclass(frozen=True)
class BidPlan:
    """A priced bid at chain time ``at``: what it takes, pays and is expected to earn (quote units).

    Attributes
    ----------
    fraction : int
        WAD share of the remaining portfolio.
    price, fee : int
        ``rules.bid_price`` at ``at``: paid by the bidder (negative: paid to it) and the fund's fee.
    worth : int
        Mark-to-market value received, ``f · V`` rounded down.
    unwind : int
        Modelled cost of unwinding it.
    gas : int
        Gas cost in quote units.
    profit : int
        ``worth − price − fee − unwind − gas``.
    profitable : bool
        Whether it meets the thresholds (:func:`meets`).
    """

    at: int
    fraction: int
    price: int
    fee: int
    worth: int
    unwind: int
    gas: int
    profit: int
    profitable: bool


def unwind_cost(exposure: int, u: UnwindConfig) -> int:
    """``C(X) = X·(b + k·X/D)/1e4 + c0`` in quote units, rounded up (see :class:`UnwindConfig`)."""
    if exposure <= 0:
        return 0
    depth = u.depth_usd * QUOTE_SCALE
    cost = exposure * (u.base_bps + u.impact_bps * exposure / depth) / 10_000 + u.fixed_usd * QUOTE_SCALE
    return math.ceil(cost)


def meets(gross: int, gas: int, price: int, fee: int, p: ProfitConfig) -> bool:
    """The bid thresholds: gross profit ``g`` (before gas) ≥ ``gas_multiple · gas`` and net profit
    ``g − gas`` ≥ ``min_profit_ratio · (|price| + fee)`` (1 % of what changes hands by default)."""
    return gross >= p.gas_multiple * gas and gross - gas >= p.min_profit_ratio * (abs(price) + fee) and gross > gas


def price_bid(a: rules.AuctionState, fraction: int, now: int, ap: rules.AuctionParams, gas: int,
              p: ProfitConfig, u: UnwindConfig) -> BidPlan:  # fmt: skip
    """Value a bid of ``fraction`` at chain time ``now`` with the contract's own rules."""
    price, fee = rules.bid_price(a, fraction, now, ap)
    worth = rules.mul_div_floor_signed(a.mtm_equity, fraction, WAD)
    exposure = rules.mul_div_up(abs(a.mtm_equity) + a.maintenance_margin, fraction, WAD)
    cost = unwind_cost(exposure, u)
    gross = worth - price - fee - cost
    return BidPlan(now, fraction, price, fee, worth, cost, gas, gross - gas, meets(gross, gas, price, fee, p))


def best_bid(a: rules.AuctionState, now: int, ap: rules.AuctionParams, gas: int, p: ProfitConfig,
             u: UnwindConfig) -> BidPlan | None:  # fmt: skip
    """The most profitable fraction allowed at ``now`` (None when the contract allows none).

    Notes
    -----
    Profit is concave in ``f``: ``π(f) = f·(V·(1 − d) − φ) − f·X·(b + k·f·X/D)`` for a solvent auction
    (``φ`` the fee per unit), maximal at ``f* = (V(1 − d) − φ − bX)·D / (2kX²)``; the keeper compares
    ``f_max`` (the contract's and its own cap) with ``f*`` clamped to ``[1, f_max]``.
    """
    f_max = min(rules.max_fraction(a, now, ap), int(p.max_fraction * WAD))
    if f_max <= 0:
        return None
    best = price_bid(a, f_max, now, ap, gas, p, u)
    if u.impact_bps > 0 and f_max > 1:
        unit = price_bid(a, WAD, now, ap, 0, ProfitConfig(), UnwindConfig(u.base_bps, 0.0, u.depth_usd, 0.0))
        x = abs(a.mtm_equity) + a.maintenance_margin
        if x > 0 and unit.profit > 0:
            depth = u.depth_usd * QUOTE_SCALE
            f_star = int(unit.profit * depth * 10_000 / (2 * u.impact_bps * x * x) * WAD)
            f_star = max(1, min(f_max, f_star))
            other = price_bid(a, f_star, now, ap, gas, p, u)
            if other.profit > best.profit:
                best = other
    return best


def horizon(a: rules.AuctionState, ap: rules.AuctionParams) -> int:
    """Chain time after which the auction's price no longer improves for the bidder."""
    if a.insolvent:
        return a.started_at + ap.insolvent_length
    return a.started_at + ap.fast_length + ap.slow_length


def earliest_profitable(a: rules.AuctionState, now: int, ap: rules.AuctionParams, gas: int, p: ProfitConfig,
                        u: UnwindConfig, min_profit: int = 0) -> BidPlan | None:  # fmt: skip
    """The first chain time ≥ ``now`` at which :func:`best_bid` is profitable and earns at least
    ``min_profit`` (quote units, after gas), with its plan; None if it never does before the auction's
    price stops improving.

    Notes
    -----
    The bidder's price is non-increasing in time (the discount ``d(t)`` falls; an insolvent auction's
    payment to the bidder grows) and ``f_max`` is non-decreasing, so profitability and the best profit
    are monotone in ``t``: a binary search over whole seconds finds the first second that pays.
    """

    def pays(plan: BidPlan | None) -> bool:
        return plan is not None and plan.profitable and plan.profit >= min_profit

    plan = best_bid(a, now, ap, gas, p, u)
    if pays(plan):
        return plan
    hi = max(now, horizon(a, ap))
    last = best_bid(a, hi, ap, gas, p, u)
    if not pays(last):
        return None
    lo = now  # does not pay at lo, pays at hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        trial = best_bid(a, mid, ap, gas, p, u)
        if pays(trial):
            hi, last = mid, trial
        else:
            lo = mid
    return last


def gas_cost_quote(gas: int, fee_per_gas: int, eth_usd_e18: int) -> int:
    """Gas × price (wei) valued in quote units at ``eth_usd_e18`` (USD per ETH, 1e18), rounded up."""
    return rules.mul_div_up(gas * fee_per_gas, eth_usd_e18 * QUOTE_SCALE, 10**36)
