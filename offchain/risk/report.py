"""Margin reports per account and for the whole book, from in-memory inputs.

A report adds to the engine's figures what a user reads: margin ratio, the worst scenario in
words, net Greeks and liquidation prices per underlying, the cross-underlying offset credit,
the saving over standard margin and the attested fixed-point figures. :func:`report_to_dict`
gives the JSON form; rendering (tables) is the CLI's job.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from offchain._typing import Float64Array
from offchain.risk.accounts import AccountBook, AccountState
from offchain.risk.engine import AccountMargin, MarginEngine
from offchain.risk.fixed_point import AttestedFigures, attested_figures
from offchain.risk.liquidation import LiquidationLevels, liquidation_levels

#: Net Greeks reported per underlying: delta (units), gamma (per USD), vega (USD per vol
#: point, i.e. per 0.01 of volatility) and theta (USD per calendar day).
GREEK_UNITS = {"delta": 1.0, "gamma": 1.0, "vega": 0.01, "theta": 1.0 / 365.0}


@dataclass(frozen=True)
class UnderlyingRisk:
    """Net Greeks and liquidation levels of one account on one underlying."""

    symbol: str
    delta: float
    gamma: float
    vega: float
    theta: float
    liquidation: LiquidationLevels | None


@dataclass(frozen=True)
class AccountReport:
    """Everything reported for one account."""

    account: str
    margin: AccountMargin
    margin_ratio: float | None
    worst_scenario: str
    saving_vs_standard: float
    underlyings: tuple[UnderlyingRisk, ...]
    attested: AttestedFigures


@dataclass(frozen=True)
class BookReport:
    """Book totals (exactly rounded sums) and the per-account reports."""

    config_hash: str
    round_id: int
    now: int
    spot: dict[str, float]
    totals: dict[str, float]
    liquidatable: int
    below_im: int
    accounts: tuple[AccountReport, ...]


def margin_ratio(margin: AccountMargin) -> float | None:
    """``margin_equity / MM`` (below 1 the account can be liquidated); None when MM is 0."""
    return None if margin.mm == 0.0 else margin.margin_equity / margin.mm


def net_greeks(engine: MarginEngine, state: AccountState) -> Float64Array:
    """Σ size × Greek per underlying, shape (n_underlyings, 4), in :data:`GREEK_UNITS`."""
    greeks = engine.greeks
    columns = (greeks.delta, greeks.gamma, greeks.vega, greeks.theta)
    scale = np.array(list(GREEK_UNITS.values()))
    out = np.zeros((len(engine.config.underlyings), 4))
    for row, size in zip(state.rows, state.sizes, strict=True):
        u = int(engine.instruments.underlying[row])
        out[u] += size * np.array([c[row] for c in columns]) * scale
    return out


def account_report(
    engine: MarginEngine, state: AccountState, account: str, *, liquidation: bool = True
) -> AccountReport:
    """Report of one account (``liquidation=False`` skips the liquidation-price search)."""
    margin = engine.account(state)
    greeks = net_greeks(engine, state)
    underlyings = tuple(
        UnderlyingRisk(
            symbol=symbol,
            delta=float(greeks[u, 0]),
            gamma=float(greeks[u, 1]),
            vega=float(greeks[u, 2]),
            theta=float(greeks[u, 3]),
            liquidation=(
                liquidation_levels(engine.config, engine.instruments, engine.market, state, u) if liquidation else None
            ),
        )
        for u, symbol in enumerate(engine.config.symbols)
    )
    return AccountReport(
        account=account,
        margin=margin,
        margin_ratio=margin_ratio(margin),
        worst_scenario=engine.describe_scenario(margin.worst_scenario),
        saving_vs_standard=margin.standard_margin - margin.im,
        underlyings=underlyings,
        attested=attested_figures(margin.margin_equity, margin.mtm_equity, margin.im, margin.mm),
    )


TOTALS = ("im", "mm", "margin_equity", "mtm_equity", "standard_margin", "standalone_grid_loss", "offset_credit")


def build_report(
    engine: MarginEngine, book: AccountBook, account_ids: Sequence[str], *, liquidation: bool = True
) -> BookReport:
    """Report of every account of ``book`` and of the book as a whole."""
    result = engine.compute(book)
    reports = tuple(
        account_report(engine, book.account(a), account_ids[a], liquidation=liquidation) for a in range(book.n_accounts)
    )
    totals = {name: math.fsum(getattr(result, name)) for name in TOTALS}
    totals["saving_vs_standard"] = math.fsum(result.standard_margin - result.im)
    return BookReport(
        config_hash="0x" + engine.config.canonical_hash().hex(),
        round_id=engine.market.round_id,
        now=engine.market.now,
        spot={s: float(engine.market.spot[u]) for u, s in enumerate(engine.config.symbols)},
        totals=totals,
        liquidatable=int(np.sum(result.margin_equity < result.mm)),
        below_im=int(np.sum(result.margin_equity < result.im)),
        accounts=reports,
    )


def report_to_dict(report: BookReport) -> dict[str, object]:
    """JSON-ready form of a report (plain dicts, lists, floats, ints, strings, None)."""
    out = asdict(report)
    for account in out["accounts"]:
        account["worst_scenario"] = {
            "index": account["margin"]["worst_scenario"],
            "description": account["worst_scenario"],
        }
        account["underlyings"] = {u.pop("symbol"): u for u in account["underlyings"]}
    return out
