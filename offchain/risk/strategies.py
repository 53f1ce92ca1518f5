"""Classic strategies: how much capital portfolio margin saves over standard margin.

The strategies are priced on a fixed reference market (:func:`reference_market`: BTC 60,000,
ETH 3,000, 2025-01-01 00:00 UTC) with the configuration given, including its volatility
surfaces, so the table in the README is reproducible with ``pmsim margin --strategies``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from offchain.risk.accounts import AccountState
from offchain.risk.config import RiskConfig
from offchain.risk.engine import AccountMargin, MarginEngine
from offchain.risk.instruments import InstrumentTable, Kind
from offchain.risk.market import MarketState

REFERENCE_NOW = 1_735_689_600  # 2025-01-01T00:00:00Z
_DAY = 86_400
_SPOT = {"BTC": 60_000.0, "ETH": 3_000.0}


def _listing() -> list[tuple[str, dict[str, int | float]]]:
    """(name, instrument record) of every instrument the strategies use."""
    out: list[tuple[str, dict[str, int | float]]] = []
    for u, symbol in enumerate(("BTC", "ETH")):
        out.append((f"{symbol}-PERP", {"kind": Kind.PERP, "underlying": u, "strike": 0.0, "expiry": 0}))
    btc = _SPOT["BTC"]
    for days in (30, 60):
        for moneyness in (0.9, 1.0, 1.1):
            strike = btc * moneyness
            for kind, letter in ((Kind.CALL, "C"), (Kind.PUT, "P")):
                record = {"kind": kind, "underlying": 0, "strike": strike, "expiry": REFERENCE_NOW + days * _DAY}
                out.append((f"BTC-{days}d-{strike:.0f}-{letter}", record))
    return out


def reference_market(config: RiskConfig) -> tuple[InstrumentTable, MarketState, dict[str, int]]:
    """Instruments, market and ``name -> row`` of the reference setting (BTC, ETH configs)."""
    listing = _listing()
    records = [{"instrument_id": i + 1, **rec} for i, (_, rec) in enumerate(listing)]
    spot = np.array([_SPOT[s] for s in config.symbols])
    market = MarketState(spot, REFERENCE_NOW, config.vol_surfaces(), round_id=1)
    return InstrumentTable.from_records(records), market, {name: i for i, (name, _) in enumerate(listing)}


@dataclass(frozen=True)
class StrategyRow:
    """One strategy's legs and margins (USD)."""

    name: str
    legs: str
    standard_margin: float
    portfolio_im: float
    offset_credit: float

    @property
    def saving(self) -> float:
        """Capital saved by portfolio margin."""
        return self.standard_margin - self.portfolio_im


def _strategies(delta_atm_call: float) -> list[tuple[str, list[tuple[str, float]]]]:
    c = "BTC-30d-{:.0f}-{}".format
    return [
        ("Covered call", [("BTC-PERP", 1.0), (c(66000, "C"), -1.0)]),
        ("Short straddle", [(c(60000, "C"), -1.0), (c(60000, "P"), -1.0)]),
        ("Short strangle", [(c(66000, "C"), -1.0), (c(54000, "P"), -1.0)]),
        ("Long call butterfly", [(c(54000, "C"), 1.0), (c(60000, "C"), -2.0), (c(66000, "C"), 1.0)]),
        ("Calendar spread", [(c(60000, "C"), -1.0), ("BTC-60d-60000-C", 1.0)]),
        ("Delta-hedged short call", [(c(60000, "C"), -1.0), ("BTC-PERP", delta_atm_call)]),
        ("BTC/ETH cross hedge", [("BTC-PERP", 1.0), ("ETH-PERP", -20.0)]),
        ("BTC + ETH same direction", [("BTC-PERP", 1.0), ("ETH-PERP", 20.0)]),
    ]


def _margin(engine: MarginEngine, rows: dict[str, int], legs: list[tuple[str, float]]) -> AccountMargin:
    collateral = np.zeros(len(engine.config.collateral))
    state = AccountState(
        np.array([rows[n] for n, _ in legs]), np.array([q for _, q in legs]), 0.0, 0.0, 0.0, collateral
    )
    return engine.account(state)


def strategy_rows(config: RiskConfig) -> list[StrategyRow]:
    """Standard margin vs portfolio IM of each classic strategy on the reference market."""
    instruments, market, rows = reference_market(config)
    engine = MarginEngine(config, instruments, market)
    delta = round(float(engine.greeks.delta[rows["BTC-30d-60000-C"]]), 2)
    out = []
    for name, legs in _strategies(delta):
        margin = _margin(engine, rows, legs)
        text = ", ".join(f"{q:+g} {leg}" for leg, q in legs)
        out.append(StrategyRow(name, text, margin.standard_margin, margin.im, margin.offset_credit))
    return out


def strategy_markdown(rows: list[StrategyRow]) -> str:
    """The rows as a GitHub markdown table (USD, rounded to the dollar)."""
    lines = [
        "| Strategy | Legs | Standard margin | Portfolio IM | Saving | Cross offset credit |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        share = r.saving / r.standard_margin if r.standard_margin else 0.0
        lines.append(
            f"| {r.name} | {r.legs} | {r.standard_margin:,.0f} | {r.portfolio_im:,.0f} "
            f"| {r.saving:,.0f} ({share:.0%}) | {r.offset_credit:,.0f} |"
        )
    return "\n".join(lines)
