"""Fair-price marking against a manipulated source: median index, time-weighted basis, option marks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from offchain.errors import InputError
from offchain.feeds.marking import SourceQuote, TwapBasis, median_index, median_steps, option_marks, perp_mark
from offchain.feeds.sources import PriceStep, ReplaySource

NOW = 1_700_000_000


def test_median_index_ignores_one_manipulated_stale_or_broken_source() -> None:
    honest = [SourceQuote("a", NOW - 5, 60_000.0), SourceQuote("b", NOW - 2, 60_030.0), SourceQuote("c", NOW, 59_990.0)]
    assert median_index(honest, NOW) == 60_000.0
    for bad in (10 * 60_000.0, 0.01, float("nan"), -1.0):
        index = median_index([*honest, SourceQuote("evil", NOW, bad)], NOW)
        assert 59_990.0 <= index <= 60_030.0
    stale = [*honest[:2], SourceQuote("c", NOW - 3_600, 1.0), SourceQuote("d", NOW + 30, 1.0)]  # old, future
    with pytest.raises(InputError) as info:
        median_index(stale, NOW)
    assert info.value.field == "quotes"


def test_a_manipulated_source_never_reaches_the_posted_prices() -> None:
    """Three honest copies of the May 2021 crash (seeded noise) and one source pumping BTC +50 % for 6 hours."""
    replay = list(ReplaySource.named("2021-05").steps())
    rng = np.random.default_rng(7)

    def honest() -> list[PriceStep]:
        return [PriceStep(s.offset, tuple(p * (1 + 2e-4 * rng.standard_normal()) for p in s.prices)) for s in replay]

    sources = [honest(), honest(), honest()]
    evil = [PriceStep(s.offset, (s.prices[0] * (1.5 if 100 <= i < 106 else 1.0), s.prices[1]))
            for i, s in enumerate(replay)]  # fmt: skip
    merged = list(median_steps(iter(x) for x in [*sources, evil]))
    truth = np.array([s.prices for s in replay])
    posted = np.array([s.prices for s in merged])
    assert len(merged) == len(replay)
    assert np.max(np.abs(posted / truth - 1)) < 2e-3  # within the honest sources' own noise
    naive = np.mean([np.array([s.prices for s in x]) for x in [*sources, evil]], axis=0)
    assert np.max(np.abs(naive / truth - 1)) > 0.1  # an average would have posted the pump
    with pytest.raises(InputError):
        list(median_steps(iter(x) for x in sources[:2]))


def test_time_weighted_basis_absorbs_a_burst_and_is_bounded() -> None:
    basis = TwapBasis(window=3_600, band=0.05)
    for t in range(NOW - 3_600, NOW, 60):  # an hour of trading 1 % over the index
        basis.update(t, 60_600.0, 60_000.0)
    assert basis.value(NOW) == pytest.approx(0.01, abs=1e-12)
    assert perp_mark(60_000.0, basis, NOW) == pytest.approx(60_600.0)
    basis.update(NOW, 78_000.0, 60_000.0)  # a minute of prints 30 % over the index
    basis.update(NOW + 60, 60_600.0, 60_000.0)
    burst = perp_mark(60_000.0, basis, NOW + 120)
    assert abs(burst / 60_600.0 - 1) <= 0.30 * 60 / 3_600 + 1e-9  # moved by at most its share of the hour
    sustained = TwapBasis(window=3_600, band=0.05)
    for t in range(NOW, NOW + 7_200, 60):
        sustained.update(t, 78_000.0, 60_000.0)
    assert perp_mark(60_000.0, sustained, NOW + 7_200) == pytest.approx(63_000.0)  # clamped at the 5 % band
    with pytest.raises(InputError):
        sustained.update(NOW, 60_000.0, 60_000.0)  # time going back


def test_option_marks_take_the_median_and_stay_near_the_model() -> None:
    model = np.array([1_000.0, 250.0, 40.0])
    honest = [model * 1.01, model * 0.99]
    manipulated = model * 10
    np.testing.assert_allclose(option_marks(model, [*honest, manipulated]), model * 1.01)
    np.testing.assert_allclose(option_marks(model, [manipulated, manipulated, model]), model * 1.2)
    broken = np.array([np.nan, -1.0, 41.0])
    np.testing.assert_allclose(option_marks(model, [broken]), [1_000.0, 250.0, 41.0])
    assert list(itertools.chain(option_marks(model, []))) == list(model)


def test_price_service_source_spec_takes_the_median_of_sources() -> None:
    from offchain.feeds.sources import scaled_steps

    spot = (60_000.0, 3_000.0)
    merged = list(scaled_steps("median:replay:2021-05,replay:2021-05,gbm", spot, 1, 50))
    replay = list(scaled_steps("replay:2021-05", spot, 1, 50))
    assert [s.prices for s in merged] == [s.prices for s in replay]  # two honest copies outvote the third
    with pytest.raises(InputError) as info:
        list(scaled_steps("median:gbm,gbm", spot, 1, 5))
    assert info.value.field == "source"
