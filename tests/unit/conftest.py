"""Shared fixtures of the unit tests: a risk configuration, a listing of instruments, a market."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp

from offchain.models.vol_surface import SviSlice, VolSurface
from offchain.risk.accounts import AccountBook
from offchain.risk.config import RiskConfig, load_config
from offchain.risk.instruments import InstrumentTable, Kind
from offchain.risk.market import SECONDS_PER_YEAR, MarketState

NOW = 1_735_689_600  # 2025-01-01T00:00:00Z
DAY = 86_400
SPOT = (60_000.0, 3_000.0)
EXPIRIES_DAYS = (7, 30, 90)


def smile(atm: float, days: float, rho: float = -0.3) -> SviSlice:
    """A raw SVI slice with ATM vol ``atm`` at ``days`` to expiry (wings scale with time)."""
    t = days * DAY / SECONDS_PER_YEAR
    b, sigma = 0.4 * t, 0.1
    return SviSlice(t=t, a=atm * atm * t - b * sigma, b=b, rho=rho, m=0.0, sigma=sigma)


def make_market(spot: tuple[float, float] = SPOT, round_id: int = 7, settlements: dict | None = None) -> MarketState:
    surfaces = (
        VolSurface((smile(0.55, 7), smile(0.55, 30), smile(0.58, 90))),
        VolSurface((smile(0.70, 7), smile(0.72, 30), smile(0.75, 90))),
    )
    return MarketState(np.array(spot), NOW, surfaces, round_id, settlements or {})


def make_listing() -> InstrumentTable:
    """Per underlying: a perp, futures at 30 and 90 days, calls and puts at 5 strikes × 3 expiries."""
    records = []
    for u, spot in enumerate(SPOT):
        records.append({"kind": Kind.PERP, "underlying": u, "strike": 0.0, "expiry": 0})
        for days in (30, 90):
            records.append({"kind": Kind.FUTURE, "underlying": u, "strike": 0.0, "expiry": NOW + days * DAY})
        for days in EXPIRIES_DAYS:
            for m in (0.8, 0.9, 1.0, 1.1, 1.2):
                for kind in (Kind.CALL, Kind.PUT):
                    records.append({"kind": kind, "underlying": u, "strike": spot * m, "expiry": NOW + days * DAY})
    return InstrumentTable.from_records([{"instrument_id": 100 + i, **r} for i, r in enumerate(records)])


def random_book(
    rng: np.random.Generator, instruments: InstrumentTable, accounts: int, positions: int, n_collateral: int = 3
) -> AccountBook:
    """Random book: each account holds ``positions`` distinct instruments, ~1 BTC / ~20 ETH each."""
    cols = np.concatenate([rng.choice(len(instruments), positions, replace=False) for _ in range(accounts)])
    scale = np.where(instruments.underlying[cols] == 0, 1.0, 20.0)
    sizes = np.round(rng.normal(size=cols.size) * scale, 3)
    rows = np.repeat(np.arange(accounts), positions)
    return AccountBook(
        sp.csr_matrix((sizes, (rows, cols)), shape=(accounts, len(instruments))),
        cash=np.round(rng.uniform(0, 50_000, accounts), 2),
        cost_basis=np.round(rng.normal(0, 20_000, accounts), 2),
        funding_owed=np.round(rng.normal(0, 50, accounts), 2),
        collateral=np.round(rng.uniform(0, 2, (accounts, n_collateral)), 4),
    )


def with_es(config: RiskConfig, **changes: object) -> RiskConfig:
    return dataclasses.replace(config, es=dataclasses.replace(config.es, **changes))


@pytest.fixture(scope="session")
def config() -> RiskConfig:
    """The repository's default configuration (config/risk.toml)."""
    return load_config()


@pytest.fixture(scope="session")
def short_config(config: RiskConfig) -> RiskConfig:
    """Default configuration with a 250-day ES window: same rules, cheaper scalar reference."""
    return with_es(config, window_days=250)


@pytest.fixture(scope="session")
def listing() -> InstrumentTable:
    return make_listing()


@pytest.fixture(scope="session")
def market() -> MarketState:
    return make_market()
