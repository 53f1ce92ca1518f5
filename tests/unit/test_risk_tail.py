"""Expected Shortfall and VaR: historical simulation, Monte Carlo seeding and draws."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offchain.risk.accounts import AccountState
from offchain.risk.config import RiskConfig
from offchain.risk.engine import MarginEngine
from offchain.risk.instruments import InstrumentTable, Kind
from offchain.risk.scenarios import build_monte_carlo, correlated_draws, correlation_factor, monte_carlo_seed

from .conftest import make_market, random_book, with_es


def _es_var(losses: np.ndarray, es_level: float, var_level: float) -> tuple[float, float]:
    """Textbook historical-simulation estimators (Acerbi & Tasche 2002), written independently."""
    ordered = np.sort(losses)[::-1]
    n = ordered.size
    beta = float(n * (1 - Fraction(str(es_level))))
    j = math.floor(beta)
    es = (ordered[:j].sum() + (beta - j) * ordered[j]) / beta
    return es, ordered[math.floor(n * (1 - Fraction(str(var_level))))]


@pytest.mark.parametrize("size", [2.5, -40.0])
def test_historical_es_and_var_of_a_linear_position(config: RiskConfig, listing: InstrumentTable, size: float) -> None:
    config = with_es(config, volatility_filter="none")
    u = 0 if abs(size) < 10 else 1
    perp = int(np.flatnonzero((listing.kind == Kind.PERP) & (listing.underlying == u))[0])
    market = make_market()
    margin = MarginEngine(config, listing, market).account(
        AccountState(np.array([perp]), np.array([size]), 0.0, 0.0, 0.0, np.zeros(3))
    )
    known = config.history.as_of(market.now)  # returns closed by 2025-01-01 00:00 UTC only
    assert known.dates[-1] == "2024-12-31"
    losses = -size * market.spot[u] * known.returns[:, u]
    es, var = _es_var(losses, 0.975, 0.99)
    assert margin.es == pytest.approx(es, rel=1e-12)
    assert margin.var == pytest.approx(var, rel=1e-12)
    # 3,140 days: ES_97.5 averages the 78 worst days and half the 79th; VaR_99 is the 32nd worst
    assert len(known.dates) == 3_140
    ordered = np.sort(losses)[::-1]
    assert margin.var == pytest.approx(ordered[31], rel=1e-12)


@settings(max_examples=15, deadline=None)
@given(
    st.sampled_from([0.9, 0.95, 0.975, 0.99]), st.integers(0, 2**31 - 1), st.sampled_from(["historical", "monte_carlo"])
)
def test_es_is_at_least_var_at_the_same_level(
    config: RiskConfig, listing: InstrumentTable, level: float, seed: int, method: str
) -> None:
    cfg = with_es(config, method=method, es_level=level, var_level=level)
    cfg = dataclasses.replace(cfg, monte_carlo=dataclasses.replace(cfg.monte_carlo, paths=500))
    book = random_book(np.random.default_rng(seed), listing, accounts=30, positions=8)
    r = MarginEngine(cfg, listing, make_market()).compute(book)
    assert np.all(r.es >= r.var)


def test_es_grows_with_the_level(config: RiskConfig, listing: InstrumentTable) -> None:
    book = random_book(np.random.default_rng(9), listing, accounts=30, positions=8)
    es = [
        MarginEngine(with_es(config, es_level=a), listing, make_market()).compute(book).es for a in (0.95, 0.975, 0.99)
    ]
    assert np.all(es[0] <= es[1]) and np.all(es[1] <= es[2])


def test_monte_carlo_seed_comes_from_config_hash_and_round(config: RiskConfig) -> None:
    h = config.canonical_hash()
    assert monte_carlo_seed(h, 7) == monte_carlo_seed(h, 7)
    assert len({monte_carlo_seed(h, 7), monte_carlo_seed(h, 8), monte_carlo_seed(bytes(32), 7)}) == 3
    same = build_monte_carlo(config, make_market(round_id=7))
    again = build_monte_carlo(config, make_market(round_id=7))
    other = build_monte_carlo(config, make_market(round_id=8))
    np.testing.assert_array_equal(same.spot_mult, again.spot_mult)
    assert not np.array_equal(same.spot_mult, other.spot_mult)
    assert same.spot_mult.shape == (2, config.monte_carlo.paths)


@pytest.mark.parametrize("dof", [0.0, 5.0])
def test_correlated_draws_have_the_configured_correlation(dof: float) -> None:
    corr = np.array([[1.0, 0.7, 0.2], [0.7, 1.0, 0.4], [0.2, 0.4, 1.0]])
    z = correlated_draws(np.random.Generator(np.random.PCG64(1)), correlation_factor(corr), 400_000, dof)
    np.testing.assert_allclose(np.corrcoef(z), corr, atol=0.01)
    np.testing.assert_allclose(z.var(axis=1), 1.0, atol=0.02)
    kurtosis = np.mean(z[0] ** 4) / np.mean(z[0] ** 2) ** 2
    assert kurtosis == pytest.approx(3.0, abs=0.1) if dof == 0.0 else kurtosis > 4.0


def test_monte_carlo_uses_atm_implied_vol_at_the_horizon(config: RiskConfig) -> None:
    gaussian = dataclasses.replace(
        config, monte_carlo=dataclasses.replace(config.monte_carlo, paths=200_000, student_t_dof=0.0)
    )
    market = make_market()
    block = build_monte_carlo(gaussian, market)
    h = 1.0 / 365.0
    log_returns = np.log(block.spot_mult)
    for u in (0, 1):
        sigma = float(market.vol[u].implied_vol(0.0, h))
        assert log_returns[u].std() == pytest.approx(sigma * math.sqrt(h), rel=0.01)
    assert np.corrcoef(log_returns)[0, 1] == pytest.approx(0.7, abs=0.01)


@pytest.mark.parametrize("lam", [0.97, 0.94])
def test_filtered_historical_simulation_matches_a_plain_loop(
    config: RiskConfig, listing: InstrumentTable, lam: float
) -> None:
    """FHS (the default): every return rescaled by the EWMA vol now over the EWMA vol on its day."""
    cfg = with_es(config, volatility_filter="ewma", ewma_lambda=lam)
    perp = int(np.flatnonzero((listing.kind == Kind.PERP) & (listing.underlying == 0))[0])
    market = make_market()
    margin = MarginEngine(cfg, listing, market).account(
        AccountState(np.array([perp]), np.array([1.0]), 0.0, 0.0, 0.0, np.zeros(3))
    )
    r = [float(x) for x in config.history.as_of(market.now).returns[:, 0]]
    x = [math.log1p(v) for v in r]
    var = math.fsum(v * v for v in x[:30]) / 30  # seed: mean square of the first 30 log-returns
    sigma = []
    for v in x:
        sigma.append(math.sqrt(var))
        var = lam * var + (1 - lam) * v * v
    now = math.sqrt(var)
    losses = np.array([-market.spot[0] * math.expm1(v * now / s) for v, s in zip(x, sigma, strict=True)])
    es, var99 = _es_var(losses, 0.975, 0.99)
    assert margin.es == pytest.approx(es, rel=1e-9)
    assert margin.var == pytest.approx(var99, rel=1e-9)
    plain = MarginEngine(with_es(config, volatility_filter="none"), listing, market).account(
        AccountState(np.array([perp]), np.array([1.0]), 0.0, 0.0, 0.0, np.zeros(3))
    )
    assert margin.es != plain.es
