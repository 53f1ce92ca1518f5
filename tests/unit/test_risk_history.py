"""As-of history: the engine only ever uses returns known at its valuation time (no look-ahead)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from offchain.chain.client import Deployment, TokenInfo
from offchain.chain.indexer import InstrumentState, PriceState, ProtocolState
from offchain.engine.core import EngineCore
from offchain.errors import InputError
from offchain.risk.accounts import AccountState
from offchain.risk.config import RiskConfig
from offchain.risk.engine import MarginEngine
from offchain.risk.history import HistoricalReturns, close_time
from offchain.risk.instruments import InstrumentTable, Kind
from offchain.risk.market import MarketState
from offchain.risk.scenarios import historical_scenarios
from offchain.validation.study import calibration

from .conftest import make_listing, random_book

FTX = close_time("2022-11-06")  # 2022-11-07 00:00 UTC: the evening before FTX's collapse
BTC_2022_11_06 = 20_909.17  # close of 2022-11-06 (data/market/btc_usd_1d.csv)


def _perp() -> InstrumentTable:
    return InstrumentTable.from_records([{"instrument_id": 1, "kind": Kind.PERP, "underlying": 0, "strike": 0.0,
                                          "expiry": 0}])  # fmt: skip


def _long_btc(config: RiskConfig, as_of: int) -> tuple[float, float]:
    market = MarketState(np.array([BTC_2022_11_06, 1_600.0]), FTX, config.vol_surfaces(), 1, as_of=as_of)
    m = MarginEngine(config, _perp(), market).account(
        AccountState(np.array([0]), np.array([1.0]), 0, 0, 0, np.zeros(3))
    )
    return m.es, m.var


def test_as_of_keeps_exactly_the_returns_closed_by_then(config: RiskConfig) -> None:
    h = config.history
    i = h.dates.index("2022-11-06")
    assert close_time("2022-11-06") == 1_667_779_200  # 2022-11-07T00:00:00Z
    assert h.as_of(FTX).dates[-1] == "2022-11-06" and len(h.as_of(FTX).dates) == i + 1
    assert h.as_of(FTX - 1).dates[-1] == "2022-11-05"  # one second earlier the 11-06 close is not known
    assert h.as_of(2_000_000_000) is h
    with pytest.raises(InputError) as info:
        h.as_of(close_time(h.dates[0]) - 1)
    assert info.value.field == "market.as_of"


def test_engine_defaults_as_of_to_now_and_replays_2022_without_the_future(config: RiskConfig) -> None:
    """The issue's figure: long 1 BTC, ES 97.5 % on 2022-11-07 with the whole history vs as of then."""
    config = calibration(0)(config)  # the calibration: unfiltered, all history
    es_now, _ = _long_btc(config, FTX)
    es_future, _ = _long_btc(config, 2_000_000_000)  # what the engine used to do: the whole history
    market = MarketState(np.array([BTC_2022_11_06, 1_600.0]), FTX, config.vol_surfaces(), 1)
    assert market.as_of == FTX
    assert es_now == pytest.approx(2_365.32, abs=0.01)  # the 2,367.90 at a 0.1 % higher spot
    assert es_future == pytest.approx(2_155.19, abs=0.01)  # ... and 2,157.54: the ratio is the same
    assert es_now / es_future == pytest.approx(2_367.90 / 2_157.54, rel=1e-4)


def test_changing_the_future_changes_nothing(config: RiskConfig) -> None:
    """Rewrite every return after the valuation time: every figure stays bit-identical."""
    h = config.history
    n = h.count_as_of(FTX)
    wild = h.returns.copy()
    wild[n:] = np.where(np.arange(wild.shape[0] - n)[:, None] % 2 == 0, -0.5, 1.0)
    future = dataclasses.replace(config, history=HistoricalReturns(h.dates, wild))
    listing = make_listing()
    book = random_book(np.random.default_rng(3), listing, accounts=40, positions=6)
    market = MarketState(np.array([BTC_2022_11_06, 1_600.0]), FTX, config.vol_surfaces(), 1)
    # expiries of the shared listing are in 2025: value them as of 2022 with expiries moved back
    shifted = InstrumentTable(listing.instrument_id, listing.kind, listing.underlying,
                              listing.strike / np.where(listing.underlying == 0, 3.0, 2.0),
                              np.where(listing.expiry > 0, listing.expiry - (1_735_689_600 - FTX), 0))  # fmt: skip
    a = MarginEngine(config, shifted, market).compute(book)
    b = MarginEngine(future, shifted, market).compute(book)
    for f in ("im", "es", "var", "grid_loss"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    later = dataclasses.replace(market, as_of=close_time("2022-11-30"))
    c = MarginEngine(future, shifted, later).compute(book)
    assert not np.array_equal(a.es, c.es)  # the perturbation would have shown had it been seen
    assert set(historical_scenarios(config, FTX).dates) == set(h.dates[:n])


def test_as_of_is_the_history_cut_the_day_before(config: RiskConfig) -> None:
    """Same figures as an engine whose configuration only ever held the history up to the day before."""
    h = config.history
    n = h.count_as_of(FTX)
    cut = dataclasses.replace(config, history=HistoricalReturns(h.dates[:n], h.returns[:n]))
    assert _long_btc(config, FTX) == _long_btc(cut, 2_000_000_000)


@pytest.mark.parametrize("window", [0, 365])
def test_window_counts_back_from_the_valuation_time(config: RiskConfig, window: int) -> None:
    cfg = dataclasses.replace(config, es=dataclasses.replace(config.es, window_days=window))
    dates = historical_scenarios(cfg, FTX).dates
    assert dates[-1] == "2022-11-06"
    assert len(dates) == (window or config.history.count_as_of(FTX))


def test_too_little_history_known_is_an_error_naming_the_field(config: RiskConfig) -> None:
    early = close_time(config.history.dates[49])  # 50 returns: none beyond the 99 % quantile
    market = MarketState(np.array([500.0, 10.0]), early, config.vol_surfaces(), 1)
    with pytest.raises(InputError) as info:
        MarginEngine(config, _perp(), market)
    assert info.value.field == "market.as_of"


def test_engine_service_core_cuts_history_at_the_price_round_time(config: RiskConfig) -> None:
    """The service's engine values the market at the price round's time (its clock and its history cut),
    not at the latest block's; a later block on the same round shares that market, a new round does not."""
    tokens = {s: TokenInfo(s, f"0x{i + 1:040x}", d, u) for i, (s, d, u) in
              enumerate((("USDC", 6, None), ("WETH", 18, 1), ("WBTC", 8, 0)))}  # fmt: skip
    deployment = Deployment(31337, "", 0, {}, tokens, ["BTC", "ETH"])
    core = EngineCore(config, deployment)
    state = ProtocolState(
        quote=tokens["USDC"].address, block=10, block_hash="0x01", timestamp=2_000_000_000,
        instruments={1: InstrumentState(1, Kind.PERP, 0, 0, 0)},
        prices=PriceState(3, FTX, (int(BTC_2022_11_06 * 10**18), 1_600 * 10**18)),
    )  # fmt: skip
    engine = core.engine(state)
    assert engine.market.as_of == FTX and engine.market.now == FTX
    assert engine.tail is not None and max(engine.tail.labels) == "2022-11-06"
    later = dataclasses.replace(state, block=11, block_hash="0x02", timestamp=2_000_000_600)
    assert core.engine(later) is engine and core.markets_built == 1
    eth_perp = InstrumentState(2, Kind.PERP, 1, 0, 0)
    listed = dataclasses.replace(later, block=12, block_hash="0x04", instruments={**state.instruments, 2: eth_perp})
    assert len(core.engine(listed).instruments) == 2 and core.markets_built == 2  # same round, new listing
    next_round = PriceState(4, FTX + 3600, (int(BTC_2022_11_06 * 10**18), 1_601 * 10**18))
    moved = dataclasses.replace(later, block=12, block_hash="0x03", prices=next_round)
    assert core.engine(moved) is not engine and core.engine(moved).market.now == FTX + 3600
    assert core.markets_built == 3
