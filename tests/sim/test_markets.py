"""Market models and price impact: statistics with fixed seeds, references, replay exactness."""

from __future__ import annotations

import csv
import datetime as dt
import math
from pathlib import Path

import numpy as np
import pytest

from offchain.errors import ConfigError, InputError
from offchain.risk.config import load_config
from offchain.risk.history import read_close_series
from offchain.risk.market import SECONDS_PER_YEAR
from offchain.sim import markets_reference as ref
from offchain.sim.impact import DAY_FRACTION, ImpactModel, ImpactState, apply_impact
from offchain.sim.markets import (
    DATA_DIR,
    Diffusion,
    GarchModel,
    GbmModel,
    MarketPath,
    MertonModel,
    RegimeModel,
    ReplayModel,
    cholesky_psd,
    parse_time,
)

HOUR = 3600
YEAR_HOURS = 8760
BASE = Diffusion(("BTC", "ETH"), (60_000.0, 3_000.0), ((1.0, 0.7), (0.7, 1.0)))


def gbm(vol: tuple[float, float] = (0.5, 0.7), drift: tuple[float, float] = (0.0, 0.0)) -> GbmModel:
    return GbmModel(BASE, vol, drift)


def merton(intensity: float = 20.0, timing: str = "common") -> MertonModel:
    return MertonModel(gbm(), intensity, (-0.08, -0.1), (0.04, 0.05), timing)  # type: ignore[arg-type]


def regime() -> RegimeModel:
    return RegimeModel(BASE, ("calm", "stress"), ((0.4, 0.5), (1.2, 1.5)), ((0.0, 0.0), (-0.5, -0.6)),
                       ((0.98, 0.02), (0.05, 0.95)))  # fmt: skip


def garch(alpha: float = 0.06, beta: float = 0.9) -> GarchModel:
    return GarchModel(BASE, (0.5, 0.7), (alpha, alpha), (beta, beta), (0.0, 0.0))


MODELS = {"gbm": gbm, "merton": merton, "regime": regime, "garch": garch}


# ----------------------------------------------------------------------------- reproducibility


@pytest.mark.parametrize("name", sorted(MODELS))
def test_same_seed_gives_the_same_path_and_another_seed_does_not(name: str) -> None:
    model = MODELS[name]()
    a = model.simulate(500, HOUR, 11, start=1_000)
    b = model.simulate(500, HOUR, np.random.default_rng(11), start=1_000)
    c = model.simulate(500, HOUR, 12, start=1_000)
    assert np.array_equal(a.prices, b.prices) and np.array_equal(a.iv, b.iv)
    assert not np.array_equal(a.prices, c.prices)
    assert a.times[0] == 1_000 and np.all(np.diff(a.times) == HOUR)
    assert a.prices.shape == a.iv.shape == (501, 2) and np.all(a.prices[0] == BASE.initial_prices)


def test_a_generator_is_consumed_not_reset() -> None:
    rng = np.random.default_rng(5)
    first = gbm().simulate(10, HOUR, rng)
    second = gbm().simulate(10, HOUR, rng)
    assert not np.array_equal(first.prices, second.prices)


# ----------------------------------------------------------------------------- vectorised == reference


def test_gbm_matches_its_plain_reference() -> None:
    model = gbm(drift=(0.3, -0.2))
    path = model.simulate(300, HOUR, 3)
    z = model.shocks(300, np.random.default_rng(3))
    assert np.allclose(path.prices, ref.gbm_prices(model, z, HOUR), rtol=1e-12, atol=0)


@pytest.mark.parametrize("timing", ["common", "independent"])
def test_merton_matches_its_plain_reference(timing: str) -> None:
    model = merton(400.0, timing)
    path = model.simulate(300, HOUR, 4)
    z, counts, eta = model.shocks(300, HOUR, np.random.default_rng(4))
    assert counts.sum() > 0
    assert np.allclose(path.prices, ref.merton_prices(model, z, counts, eta, HOUR), rtol=1e-12, atol=0)


def test_regime_matches_its_plain_reference() -> None:
    model = regime()
    path = model.simulate(2_000, HOUR, 5)
    u, z = model.shocks(2_000, np.random.default_rng(5))
    prices, states = ref.regime_path(model, u, z, HOUR)
    assert path.regime is not None and path.regime.tolist() == states
    assert 0 < path.regime.sum() < path.regime.size  # both regimes visited
    assert np.allclose(path.prices, prices, rtol=1e-12, atol=0)


def test_garch_matches_its_plain_reference() -> None:
    model = garch()
    path = model.simulate(2_000, HOUR, 6)
    z = model.shocks(2_000, np.random.default_rng(6))
    prices, h = ref.garch_path(model, z, HOUR)
    assert np.allclose(path.prices, prices, rtol=1e-10, atol=0)
    assert np.allclose(path.vol, np.sqrt(np.array(h) / (HOUR / SECONDS_PER_YEAR)), rtol=1e-10, atol=0)


# ----------------------------------------------------------------------------- statistics


def test_gbm_log_returns_have_the_target_correlation_and_vol() -> None:
    path = gbm().simulate(YEAR_HOURS, HOUR, 21)
    r = path.log_returns()
    assert np.corrcoef(r.T)[0, 1] == pytest.approx(0.7, abs=0.03)
    assert r.std(axis=0) * math.sqrt(YEAR_HOURS) == pytest.approx([0.5, 0.7], rel=0.05)
    assert np.allclose(path.iv, 1.1 * np.array([0.5, 0.7]), rtol=1e-15)


def test_gbm_drift_sets_the_mean_log_return() -> None:
    model = GbmModel(Diffusion(("X",), (100.0,), ((1.0,),)), (0.2,), (0.5,))
    r = model.simulate(200_000, HOUR, 22).log_returns()[:, 0]
    dt_years = HOUR / SECONDS_PER_YEAR
    expected = (0.5 - 0.5 * 0.04) * dt_years
    assert r.mean() == pytest.approx(expected, abs=4 * 0.2 * math.sqrt(dt_years) / math.sqrt(r.size))


def test_perfectly_correlated_underlyings_are_allowed() -> None:
    base = Diffusion(("A", "B"), (1.0, 1.0), ((1.0, 1.0), (1.0, 1.0)))
    r = GbmModel(base, (0.3, 0.3), (0.0, 0.0)).simulate(100, HOUR, 1).log_returns()
    assert np.allclose(r[:, 0], r[:, 1])


def test_cholesky_psd_reproduces_the_matrix() -> None:
    c = np.array([[1.0, 0.5, 0.2], [0.5, 1.0, 0.5], [0.2, 0.5, 1.0]])
    factor = cholesky_psd(c)
    assert np.allclose(factor @ factor.T, c) and np.allclose(factor, np.linalg.cholesky(c))
    assert np.allclose(np.tril(factor), factor)


def test_merton_jump_count_is_about_lambda_t() -> None:
    lam = 500.0
    model = merton(lam)
    _, counts, _ = model.shocks(YEAR_HOURS, HOUR, np.random.default_rng(31))
    assert np.array_equal(counts[:, 0], counts[:, 1])  # common timing: one clock
    assert abs(int(counts[:, 0].sum()) - lam) < 4 * math.sqrt(lam)
    _, counts, _ = merton(lam, "independent").shocks(YEAR_HOURS, HOUR, np.random.default_rng(31))
    assert not np.array_equal(counts[:, 0], counts[:, 1])
    assert np.all(np.abs(counts.sum(axis=0) - lam) < 4 * math.sqrt(lam))


def test_merton_drift_is_compensated() -> None:
    """E[S_{t+1}/S_t] = exp(mu dt): without the compensator the mean gross return would be off by lambda k dt."""
    one = Diffusion(("X",), (100.0,), ((1.0,),))
    model = MertonModel(GbmModel(one, (0.3,), (0.0,)), 200.0, (-0.1,), (0.05,))
    gross = np.exp(model.simulate(400_000, HOUR, 32).log_returns()[:, 0])
    dt_years = HOUR / SECONDS_PER_YEAR
    uncompensated_gap = float(model.compensator()[0]) * dt_years
    se = gross.std() / math.sqrt(gross.size)
    assert abs(gross.mean() - 1.0) < 4 * se < abs(uncompensated_gap) / 2


def test_garch_unconditional_variance_is_omega_over_one_minus_alpha_beta() -> None:
    model = garch(0.05, 0.9)
    path = model.simulate(200_000, HOUR, 41)
    omega = model.omega(HOUR)
    eps = path.log_returns() + 0.5 * (path.vol[:-1] ** 2) * (HOUR / SECONDS_PER_YEAR)
    target = omega / (1 - 0.05 - 0.9)
    assert eps.var(axis=0) == pytest.approx(target, rel=0.1)
    assert np.allclose(path.iv, 1.1 * path.vol, rtol=1e-15)
    assert path.iv[:, 0].max() > 1.3 * path.iv[:, 0].min()  # IV moves with the conditional vol


def test_markov_chain_occupancy_matches_its_stationary_distribution() -> None:
    model = regime()
    pi = model.stationary()
    p = np.array(model.transition)
    assert np.allclose(pi @ p, pi) and pi.sum() == pytest.approx(1.0)
    assert pi == pytest.approx([5 / 7, 2 / 7])
    path = model.simulate(200_000, HOUR, 51)
    assert path.regime is not None
    occupancy = np.bincount(path.regime, minlength=2) / path.regime.size
    assert occupancy == pytest.approx(pi, abs=0.03)
    vol = np.array(model.vol)[path.regime]
    assert np.array_equal(path.vol, vol) and np.allclose(path.iv, 1.1 * vol)  # IV moves with the regime


# ----------------------------------------------------------------------------- replay


def _closes(name: str) -> tuple[list[int], list[float]]:
    times, closes = [], []
    with (DATA_DIR / name).open() as fh:
        for row in csv.DictReader(fh):
            moment = dt.datetime.strptime(row["timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
            times.append(int(moment.timestamp()))
            closes.append(float(row["close"]))
    return times, closes


@pytest.mark.parametrize(
    ("source", "files", "start", "end"),
    [
        ("hourly-2020-03", ("btc_usd_1h_2020-03.csv", "eth_usd_1h_2020-03.csv"), "2020-03-10", "2020-03-17"),
        ("hourly-2021-05", ("btc_usd_1h_2021-05.csv", "eth_usd_1h_2021-05.csv"), "2021-05-12", "2021-05-26T23:00:00Z"),
        ("daily", ("btc_usd_1d.csv", "eth_usd_1d.csv"), "2020-01-01", "2020-12-31"),
    ],
)
def test_replay_reproduces_the_vendored_closes_exactly(
    source: str, files: tuple[str, str], start: str, end: str
) -> None:
    model = ReplayModel(("BTC", "ETH"), source, parse_time(start, "s"), parse_time(end, "e"), atm_vol=(0.5, 0.7))
    path = model.simulate()
    (tb, cb), (te, ce) = _closes(files[0]), _closes(files[1])
    lo, hi = parse_time(start, "s"), parse_time(end, "e")
    rows = [(t, cb[i], ce[te.index(t)]) for i, t in enumerate(tb) if lo <= t <= hi and t in te]
    assert path.times.tolist() == [r[0] for r in rows]
    assert path.prices[:, 0].tolist() == [r[1] for r in rows]  # exact: no arithmetic on the closes
    assert path.prices[:, 1].tolist() == [r[2] for r in rows]
    assert np.all(path.iv == np.array([0.5, 0.7]))


def test_replay_iv_as_the_backtest_and_ewma() -> None:
    surfaces = load_config().vol_surfaces()
    t30 = 30 * 86_400 / SECONDS_PER_YEAR
    atm = tuple(float(s.implied_vol(0.0, t30)) for s in surfaces)
    start, end = parse_time("2020-03-10", "s"), parse_time("2020-03-17", "e")
    path = ReplayModel(("BTC", "ETH"), "hourly-2020-03", start, end, atm_vol=atm).simulate()
    assert np.all(path.iv == np.array(atm))
    ewma = ReplayModel(("BTC", "ETH"), "hourly-2020-03", start, end, iv_mode="ewma")
    full = ewma.simulate().iv
    peak = int(np.argmax(full[:, 0]))
    assert 48 <= peak <= 96 and full[peak, 0] > 3 * full[0, 0]  # IV peaks in the crash of the 12th/13th
    shorter = ReplayModel(("BTC", "ETH"), "hourly-2020-03", start, parse_time("2020-03-12", "e"), iv_mode="ewma")
    assert np.array_equal(shorter.simulate().iv, full[: shorter.available_steps + 1])  # causal


def test_replay_rebase_keeps_the_relative_moves() -> None:
    start, end = parse_time("2020-03-10", "s"), parse_time("2020-03-17", "e")
    plain = ReplayModel(("BTC",), "hourly-2020-03", start, end, atm_vol=(0.5,)).simulate(48)
    rebased = ReplayModel(("BTC",), "hourly-2020-03", start, end, (60_000.0,), atm_vol=(0.5,)).simulate(48)
    assert rebased.prices[0, 0] == 60_000.0 and rebased.steps == 48
    assert np.allclose(rebased.prices / rebased.prices[0], plain.prices / plain.prices[0], rtol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"source": "weekly"}, "market.replay.source"),
        ({"underlyings": ("BTC", "SOL")}, "market.underlyings[1]"),
        ({"start": parse_time("2019-01-01", "s"), "end": parse_time("2019-02-01", "e")}, "market.replay.start"),
        ({"end": parse_time("2020-03-01", "e")}, "market.replay.end"),
        ({"iv_mode": "implied"}, "market.replay.iv"),
        ({"atm_vol": (0.5,)}, "market.replay.atm_vol"),
        ({"rebase_to": (1.0, -1.0)}, "market.initial_prices[1]"),
    ],
)
def test_replay_errors_name_the_field(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"underlyings": ("BTC", "ETH"), "source": "hourly-2020-03",
                               "start": parse_time("2020-03-10", "s"), "end": parse_time("2020-03-17", "e"),
                               "atm_vol": (0.5, 0.7)}  # fmt: skip
    args.update(kwargs)
    with pytest.raises(InputError) as err:
        ReplayModel(**args)  # type: ignore[arg-type]
    assert err.value.field == field


def test_replay_steps_and_cadence_are_checked() -> None:
    model = ReplayModel(("BTC",), "daily", parse_time("2020-01-01", "s"), parse_time("2020-01-31", "e"), atm_vol=(0.5,))
    assert model.available_steps == 30
    with pytest.raises(InputError, match=r"run\.steps"):
        model.simulate(31)
    with pytest.raises(InputError, match=r"run\.step_seconds"):
        model.simulate(5, 3600)


# ----------------------------------------------------------------------------- model validation


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: Diffusion(("A", "B"), (1.0, 1.0), ((1.0, 0.9), (0.8, 1.0))), "market.correlation[0][1]"),
        (lambda: Diffusion(("A", "B"), (1.0, 1.0), ((1.0, 1.1), (1.1, 1.0))), "market.correlation[0][1]"),
        (lambda: Diffusion(("A", "B"), (1.0, 1.0), ((1.0, 0.5), (0.5, 0.9))), "market.correlation[1][1]"),
        (lambda: Diffusion(("A", "B"), (1.0, 1.0), ((1.0, 0.5),)), "market.correlation"),
        (lambda: Diffusion(("A", "B"), (1.0, 1.0), ((1.0,), (0.5, 1.0))), "market.correlation[0]"),
        (
            lambda: Diffusion(("A", "B", "C"), (1.0,) * 3, ((1, 0.9, 0.9), (0.9, 1, -0.9), (0.9, -0.9, 1))),
            "market.correlation",
        ),
        (lambda: Diffusion(("A", "A"), (1.0, 1.0), ((1.0, 0.0), (0.0, 1.0))), "market.underlyings"),
        (lambda: Diffusion(("A",), (0.0,), ((1.0,),)), "market.initial_prices[0]"),
        (lambda: Diffusion(("A",), (1.0,), ((1.0,),), -1.0), "market.variance_risk_premium"),
        (lambda: GbmModel(BASE, (0.5, -0.1), (0.0, 0.0)), "market.vol[1]"),
        (lambda: GbmModel(BASE, (0.5, math.nan), (0.0, 0.0)), "market.vol[1]"),
        (lambda: GbmModel(BASE, (0.0, 0.5), (0.0, 0.0)), "market.vol[0]"),
        (lambda: Diffusion(("A",), (1e13,), ((1.0,),)), "market.initial_prices[0]"),
        (lambda: MertonModel(gbm(), -1.0, (0.0, 0.0), (0.1, 0.1)), "market.jumps.intensity"),
        (lambda: MertonModel(gbm(), 1.0, (0.0,), (0.1, 0.1)), "market.jumps.mean"),
        (lambda: MertonModel(gbm(), 1.0, (0.0, 0.0), (0.1, 0.1), "sometimes"), "market.jumps.timing"),  # type: ignore[arg-type]
        (lambda: GarchModel(BASE, (0.5, 0.7), (0.1, 0.1), (0.9, 0.5), (0.0, 0.0)), "market.garch.beta[0]"),
        (lambda: GarchModel(BASE, (0.5, 0.0), (0.1, 0.1), (0.5, 0.5), (0.0, 0.0)), "market.vol[1]"),
        (
            lambda: RegimeModel(BASE, ("a", "b"), ((0.1, 0.1),) * 2, ((0.0, 0.0),) * 2, ((0.5, 0.4), (0.5, 0.5))),
            "market.regimes.transition[0]",
        ),
        (
            lambda: RegimeModel(BASE, ("a", "b"), ((0.1, 0.1),) * 2, ((0.0, 0.0),) * 2, ((1.0, 0.0), (0.5, 0.5)), 2),
            "market.regimes.initial",
        ),
        (
            lambda: RegimeModel(BASE, ("a", "b"), ((0.1, 0.1), (0.1,)), ((0.0, 0.0),) * 2, ((1.0, 0.0), (0.5, 0.5))),
            "market.regimes.state[1].vol",
        ),
    ],
)
def test_model_errors_name_the_field(build: object, field: str) -> None:
    with pytest.raises(InputError) as err:
        build()  # type: ignore[operator]
    assert err.value.field == field


@pytest.mark.parametrize(("steps", "step_seconds", "field"), [(0, 3600, "run.steps"), (10, 0, "run.step_seconds")])
def test_run_arguments_are_checked(steps: int, step_seconds: int, field: str) -> None:
    with pytest.raises(InputError) as err:
        gbm().simulate(steps, step_seconds, 1)
    assert err.value.field == field


def test_market_path_feeds_the_engine_and_the_price_service() -> None:
    path = regime().simulate(30, HOUR, 8, start=1_700_000_000)
    state = path.market_state(7)
    assert np.array_equal(state.spot, path.prices[7]) and state.now == state.as_of == int(path.times[7])
    assert state.round_id == 8
    for u, surface in enumerate(state.vol):
        assert surface.implied_vol([-0.5, 0.0, 0.5], 0.1) == pytest.approx([path.iv[7, u]] * 3, rel=1e-12)
    impacted = path.market_state(7, prices=path.prices[7] * 0.9)
    assert np.allclose(impacted.spot, path.prices[7] * 0.9)
    with pytest.raises(InputError, match="step"):
        path.market_state(31)
    steps = list(path.price_steps())
    assert len(steps) == 31 and steps[0].offset == 0 and steps[3].offset == 3 * HOUR
    assert steps[30].prices == tuple(path.prices[30])


def test_market_path_checks_its_shapes() -> None:
    with pytest.raises(InputError, match=r"path\.times"):
        MarketPath(("A",), np.array([0, 0]), np.ones((2, 1)), np.ones((2, 1)), np.ones((2, 1)))
    with pytest.raises(InputError, match=r"path\.iv"):
        MarketPath(("A",), np.array([0, 1]), np.ones((2, 1)), np.zeros((2, 1)), np.ones((2, 1)))


# ----------------------------------------------------------------------------- impact


def _state(**kwargs: object) -> ImpactState:
    path = gbm().simulate(48, HOUR, 7)
    model = ImpactModel((20e9, 10e9), **kwargs)  # type: ignore[arg-type]
    return ImpactState(model, path)


def test_square_root_impact_moves_the_price_by_the_formula() -> None:
    state = _state(y=0.7)
    p0 = state.price(0)
    sigma_d = 0.5 * math.sqrt(DAY_FRACTION)
    new = apply_impact(state, 0, -200e6)  # a 200 M USD sell into 20 bn of daily volume
    move = 0.7 * sigma_d * math.sqrt(200e6 / 20e9)
    assert new == pytest.approx(p0 * math.exp(-move), rel=1e-12)
    assert state.price(1) == state.path.prices[0, 1]  # the other underlying is untouched


def test_impact_grows_with_the_square_root_of_size_and_buys_push_up() -> None:
    small, big = _state(), _state()
    p = small.price(1)
    up_small = math.log(apply_impact(small, 1, 1e6) / p)
    up_big = math.log(apply_impact(big, 1, 4e6) / p)
    assert up_small > 0 and up_big == pytest.approx(2 * up_small, rel=1e-12)


def test_temporary_impact_decays_and_permanent_impact_stays() -> None:
    state = _state(permanent_fraction=0.25, half_life_seconds=3600.0)
    p0 = state.price(0)
    move = math.log(apply_impact(state, 0, -1e9) / p0)
    state.advance(1)
    expected = 0.25 * move + 0.75 * move * 0.5
    assert math.log(state.price(0) / state.path.prices[1, 0]) == pytest.approx(expected, rel=1e-12)
    state.advance(48)
    assert math.log(state.price(0) / state.path.prices[48, 0]) == pytest.approx(0.25 * move, rel=1e-6)
    assert np.allclose(state.prices()[1], state.path.prices[48, 1])


def test_disabled_impact_and_bad_trades() -> None:
    state = _state(enabled=False)
    assert apply_impact(state, 0, -1e12) == state.path.prices[0, 0]
    with pytest.raises(InputError, match="signed_notional"):
        apply_impact(state, 0, math.inf)
    with pytest.raises(InputError, match="underlying"):
        apply_impact(state, 2, 1.0)
    with pytest.raises(InputError, match=r"impact\.daily_volume"):
        ImpactModel((1.0, 0.0))
    with pytest.raises(InputError, match=r"impact\.permanent_fraction"):
        ImpactModel((1.0,), permanent_fraction=1.5)
    with pytest.raises(InputError, match="step"):
        state.advance(49)


def test_close_series_reader_names_the_field_and_line(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text("timestamp,close\n2020-03-05T00:00:00Z,10.5\n2020-03-05T01:00:00Z,11\n")
    times, closes = read_close_series(good, "f")
    assert times.tolist() == [1_583_366_400, 1_583_370_000] and closes.tolist() == [10.5, 11.0]
    for body, where in (("2020-03-05T00:00:00Z,-1\n", ":2:"), ("2020-03-05T00:00:00Z,1\nnot-a-time,1\n", ":3:"),
                        ("2020-03-05T01:00:00Z,1\n2020-03-05T00:00:00Z,1\n", ":3:")):  # fmt: skip
        bad = tmp_path / "bad.csv"
        bad.write_text("timestamp,close\n" + body)
        with pytest.raises(ConfigError) as err:
            read_close_series(bad, "market.replay.source[BTC]")
        assert err.value.field == "market.replay.source[BTC]" and where in str(err.value)
