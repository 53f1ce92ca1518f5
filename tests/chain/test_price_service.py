"""The price service: sources and signed posting (issue 4, point 4)."""

from __future__ import annotations

import numpy as np
import pytest

from offchain.errors import ChainError, ConfigError, InputError
from offchain.feeds.service import PriceService
from offchain.feeds.sources import GbmSource, PriceStep, ReplaySource
from tests.chain.harness import Harness

CORR = ((1.0, 0.8), (0.8, 1.0))


def test_gbm_is_reproducible_from_its_seed_and_differs_across_seeds() -> None:
    src = GbmSource(spot=(50_000.0, 2_500.0), vol=(0.6, 0.8), corr=CORR, jump_rate=20.0)
    a = [s.prices for s in src.steps(200, seed=7)]
    b = [s.prices for s in src.steps(200, seed=7)]
    c = [s.prices for s in src.steps(200, seed=8)]
    assert a == b
    assert a != c
    assert a[0] == (50_000.0, 2_500.0)


def test_gbm_log_returns_have_the_configured_correlation() -> None:
    src = GbmSource(spot=(100.0, 100.0), vol=(0.5, 0.5), corr=CORR)
    path = src.path(20_000, np.random.default_rng(1))
    r = np.diff(np.log(path), axis=0)
    assert np.corrcoef(r.T)[0, 1] == pytest.approx(0.8, abs=0.02)


def test_gbm_rejects_a_non_positive_definite_correlation() -> None:
    with pytest.raises(ConfigError, match="corr"):
        GbmSource(spot=(1.0, 1.0), vol=(0.1, 0.1), corr=((1.0, 1.2), (1.2, 1.0)))


def test_replay_of_march_2020_holds_the_crash() -> None:
    steps = list(ReplaySource.named("2020-03").steps())
    assert len(steps) == 384  # 16 days of hourly candles, both series complete (SOURCES.md)
    btc = np.array([s.prices[0] for s in steps])
    eth = np.array([s.prices[1] for s in steps])
    assert btc.min() < 0.6 * btc[0] and eth.min() < 0.6 * eth[0]
    assert steps[1].offset == 3600
    with pytest.raises(InputError, match="replay"):
        ReplaySource.named("1929-10")


def test_service_posts_rounds_and_signs_a_crash_with_every_key(h: Harness) -> None:
    svc = PriceService(h.p, h.price_signers, h.deployer)
    start = h.latest_round()
    steps = [PriceStep(0, (55_000.0, 2_800.0)), PriceStep(3600, (55_500.0, 2_790.0)),
             PriceStep(7200, (41_000.0, 2_000.0))]  # fmt: skip
    assert svc.run(steps, warp=True) == 3
    assert h.latest_round() == start + 3
    latest = h.latest_round()
    assert h.p.feed.functions.priceAt(latest, 0).call() == 41_000 * 10**18
    # the crash round carried all three signatures: the same move with only two is refused
    two = PriceService(h.p, h.price_signers[:2], h.deployer)
    h.warp(60)
    with pytest.raises(Exception, match="PriceFeed_MoveNeedsAllSigners"):
        two.post((60_000.0, 2_000.0))


def test_service_refuses_bad_prices_and_too_few_keys(h: Harness) -> None:
    svc = PriceService(h.p, h.price_signers, h.deployer)
    with pytest.raises(InputError, match="prices"):
        svc.post((55_000.0,))
    with pytest.raises(InputError, match="positive"):
        svc.post((55_000.0, -1.0))
    with pytest.raises(ChainError, match="quorum"):
        PriceService(h.p, h.price_signers[:1], h.deployer).post((55_000.0, 2_800.0))
