r"""The metrics of a simulation run: per-step series (``record.SERIES``) and the run's summary.

:class:`Metrics` is fed by the runner (:mod:`offchain.sim.runner`) with what each step did (fills,
bids, the state after the step's last round, the margins at its status root) and gives the
``series`` and ``summary`` of the :class:`~offchain.sim.record.RunRecord`.

Money that comes from the chain's integers (bids, fees, the fund, bad debt) is added up in quote
units (6-decimal integers) and written as exact decimal strings (``"2779.577"``, never
``2779.5769999999998``); the series are floats (they feed plots).

Notes
-----
Per insolvent bid (price :math:`P < 0`, the fund pays the bidder :math:`-P`):

.. math:: \text{bad debt} = -P = \underbrace{\min(F, -P)}_{\text{fund draw}}
          + \underbrace{s}_{\text{socialised}} + \underbrace{(-P - \min(F, -P) - s)}_{\text{unrecovered}},

with :math:`F` the fund's cash before the bid and :math:`s` what ``rules.socialise`` spreads over
positive cash balances (at most their total less one unit). The insurance fund's path is its
effective cash after each step; its maximum drawdown is :math:`\max_t (\max_{u \le t} F_u - F_t)`.

*Cascade depth* (per liquidation): 0 when the account breached its maintenance margin at the
market's own prices; otherwise :math:`1 + d` where :math:`d` is the deepest liquidation whose
unwind had moved the price by then (the account would not have breached at the prices without the
liquidations' impact; the runner checks that counterfactual with the engine).

*Capital efficiency*: :math:`\sum_a IM_a / \sum_a SM_a` over accounts with positions, portfolio
initial margin against the position-by-position standard margin of the same books (the risk
engine's ``standard_margin``, the baseline of ``offchain/risk/strategies.py``); below 1 the
portfolio rule asks less capital.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal

import numpy as np

from offchain import rules
from offchain.chain.indexer import ProtocolState
from offchain.protocol import PRICE_SCALE, QUOTE_SCALE, Kind
from offchain.risk.engine import MarginResult
from offchain.sim.record import SERIES, LiquidationRecord


def money(units: int) -> str:
    """Quote units (6 decimals) as an exact USD decimal string (``1234567 -> "1.234567"``)."""
    return str(Decimal(units).scaleb(-6).normalize()) if units else "0"


def fraction(wad: int) -> str:
    """A WAD fraction as an exact decimal string (``25 * 10**16 -> "0.25"``)."""
    return str(Decimal(wad).scaleb(-18).normalize()) if wad else "0"


def series_names(underlyings: Sequence[str]) -> list[str]:
    """The columns of ``series.csv`` after ``step, time``: ``record.SERIES`` with one price per underlying."""
    out: list[str] = []
    for name in SERIES:
        out.extend(name.format(u=u) for u in underlyings) if "{u}" in name else out.append(name)
    return out


class Metrics:
    """Accumulates a run's metrics (see the module notes).

    Parameters
    ----------
    underlyings : sequence of str
    fund : str
        The insurance fund's account address ("" if the backend does not say: its path stays 0).
    step_seconds : int
    """

    def __init__(self, underlyings: Sequence[str], fund: str, step_seconds: int) -> None:
        self.underlyings = tuple(underlyings)
        self.fund = fund
        self.step_hours = step_seconds / 3600
        self.series: dict[str, list[float]] = {n: [] for n in series_names(underlyings)}
        self.liquidations: list[LiquidationRecord] = []
        self.bad_debt = self.fund_draws = self.socialised = self.unrecovered = 0
        self.fees_to_fund = self.liquidation_fees = 0
        self.keeper_gross = 0
        self.keeper_gas_usd = 0.0
        self.discount_paid = 0
        self.notional = 0
        self.trades = self.refused = 0
        self.refusals: dict[str, int] = {}
        self.account_hours_below_mm = 0.0
        self.fund_path: list[int] = []
        self.fund_start: int | None = None
        self.max_depth = 0
        self._step_liquidations = 0
        self._ratio: list[float] = []

    # ------------------------------------------------------------------ events
    def fund_cash(self, state: ProtocolState) -> int:
        acct = state.accounts.get(self.fund) if self.fund else None
        return acct.effective_cash(state.loss_index) if acct is not None else 0

    def on_trade(self, state: ProtocolState, size: int, price: int) -> None:
        """A fill: the fund's share of both sides' fees (``rules.fee_split``)."""
        p = state.params
        self.trades += 1
        if p is None:
            return
        fees = rules.fee(size, price, p.maker_fee) + rules.fee(size, price, p.taker_fee)
        self.fees_to_fund += rules.fee_split(fees, p.fund_fee_share)[0]

    def on_refusal(self, error: str) -> None:
        self.refused += 1
        self.refusals[error] = self.refusals.get(error, 0) + 1

    @staticmethod
    def cash_base(state: ProtocolState) -> tuple[int, int]:
        """(positive cash, loss pending on it) over every account: what ``rules.socialise`` spreads over."""
        positive = sum(max(a.cash, 0) for a in state.accounts.values())
        pending = sum(rules.pending_charge(a.cash, a.loss_snapshot, state.loss_index) for a in state.accounts.values())
        return positive, pending

    def on_bid(self, record: LiquidationRecord, *, price: int, fee: int, worth: int, notional: int, fund_cash: int,
               cash_base: tuple[int, int], loss_index: int) -> int:  # fmt: skip
        """A bid that moved positions; returns the fund's cash after it (draws taken). ``cash_base`` and
        ``loss_index`` are those before the bid's round (:meth:`cash_base`)."""
        self._step_liquidations += 1
        self.liquidations.append(record)
        self.liquidation_fees += fee
        self.keeper_gross += worth - price - fee
        self.discount_paid += worth - price
        self.notional += notional
        self.max_depth = max(self.max_depth, record.cascade_depth)
        if price >= 0:
            return fund_cash + fee
        owed = -price
        draw, left = rules.fund_draw(fund_cash, owed)
        social = rules.socialise(left, cash_base[0], cash_base[1], loss_index)[0] if left else 0
        self.bad_debt += owed
        self.fund_draws += draw
        self.socialised += social
        self.unrecovered += left - social
        return fund_cash - draw

    def end_step(self, state: ProtocolState, addresses: Sequence[str], margins: MarginResult) -> None:
        """Append the step's row of every series (state after the step; margins at its root)."""
        s = self.series
        prices = state.prices.prices
        for u, sym in enumerate(self.underlyings):
            s[f"price_{sym}"].append(prices[u] / PRICE_SCALE if u < len(prices) else math.nan)
        fund = self.fund_cash(state)
        if self.fund_start is None:
            self.fund_start = fund
        self.fund_path.append(fund)
        s["fund_usd"].append(fund / QUOTE_SCALE)
        s["bad_debt_usd"].append(self.bad_debt / QUOTE_SCALE)
        s["socialised_usd"].append(self.socialised / QUOTE_SCALE)
        s["open_interest_usd"].append(open_interest(state) / QUOTE_SCALE)
        has = np.array([bool(state.accounts[a].positions) for a in addresses], dtype=bool)
        below = margins.margin_equity < margins.mm
        s["accounts_below_mm"].append(float(np.count_nonzero(below)))
        self.account_hours_below_mm += float(np.count_nonzero(below)) * self.step_hours
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = margins.margin_equity[has] / margins.mm[has]
        ratio = ratio[np.isfinite(ratio)]
        s["margin_ratio_min"].append(float(ratio.min()) if ratio.size else math.nan)
        s["margin_ratio_p50"].append(float(np.median(ratio)) if ratio.size else math.nan)
        im, sm = float(margins.im[has].sum()), float(margins.standard_margin[has].sum())
        s["im_usd"].append(im)
        s["standard_im_usd"].append(sm)
        if sm > 0:
            self._ratio.append(im / sm)
        s["liquidations"].append(float(self._step_liquidations))
        self._step_liquidations = 0

    # ------------------------------------------------------------------ summary
    def summary(self) -> dict[str, object]:
        """The run's summary (money as exact decimal strings of quote units)."""
        path = np.array(self.fund_path, dtype=object) if self.fund_path else np.array([0], dtype=object)
        peak, drawdown = path[0], 0
        for x in path.tolist():
            peak = max(peak, x)
            drawdown = max(drawdown, peak - x)
        oi = self.series["open_interest_usd"]
        depths: dict[str, int] = {}
        for rec in self.liquidations:
            depths[str(rec.cascade_depth)] = depths.get(str(rec.cascade_depth), 0) + 1
        gas_units = round(self.keeper_gas_usd * QUOTE_SCALE)
        return {
            "bad_debt_usd": money(self.bad_debt),
            "fund_draws_usd": money(self.fund_draws),
            "socialised_usd": money(self.socialised),
            "unrecovered_usd": money(self.unrecovered),
            "fund_start_usd": money(self.fund_start or 0),
            "fund_end_usd": money(int(path[-1])),
            "fund_min_usd": money(int(min(path.tolist()))),
            "fund_max_drawdown_usd": money(int(drawdown)),
            "fund_fee_income_usd": money(self.fees_to_fund),
            "liquidation_fees_usd": money(self.liquidation_fees),
            "liquidations": len(self.liquidations),
            "liquidated_accounts": len({r.account for r in self.liquidations}),
            "liquidation_notional_usd": money(self.notional),
            "discount_paid_usd": money(self.discount_paid),
            "cascade_depth_max": self.max_depth,
            "liquidations_by_cascade_depth": dict(sorted(depths.items(), key=lambda kv: int(kv[0]))),
            "account_hours_below_mm": round(self.account_hours_below_mm, 6),
            "keeper_gross_usd": money(self.keeper_gross),
            "keeper_gas_usd": money(gas_units),
            "keeper_profit_usd": money(self.keeper_gross - gas_units),
            "capital_efficiency_mean": round(float(np.mean(self._ratio)), 6) if self._ratio else None,
            "capital_efficiency_end": round(self._ratio[-1], 6) if self._ratio else None,
            "open_interest_max_usd": round(max(oi), 2) if oi else 0.0,
            "open_interest_end_usd": round(oi[-1], 2) if oi else 0.0,
            "trades": self.trades,
            "refused": self.refused,
            "refusals": dict(sorted(self.refusals.items())),
        }


def open_interest(state: ProtocolState) -> int:
    """Long-side open interest of perpetuals and futures at the index, quote units (truncated)."""
    total = 0
    prices = state.prices.prices
    for acct in state.accounts.values():
        for iid, pos in acct.positions.items():
            if pos.size > 0:
                ins = state.instruments[iid]
                if ins.kind in (Kind.PERP, Kind.FUTURE):
                    total += rules.value(pos.size, prices[ins.underlying])
    return total
