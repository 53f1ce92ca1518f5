"""SVI smiles and the volatility surface: formula, time interpolation, reference, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from offchain.errors import PricingInputError
from offchain.models import SviSlice, VolSurface
from offchain.models.reference import implied_vol_ref, svi_total_variance_ref

SHORT = SviSlice(t=0.1, a=0.004, b=0.02, rho=-0.3, m=0.05, sigma=0.1)
LONG = SviSlice(t=0.5, a=0.02, b=0.05, rho=-0.4, m=0.0, sigma=0.2)
SURFACE = VolSurface((SHORT, LONG))


def test_svi_raw_formula_at_known_points() -> None:
    # Gatheral's raw SVI: w(k) = a + b (ρ (k − m) + √((k − m)² + σ²)); at k = m it is a + b σ.
    assert float(SHORT.total_variance(0.05)) == pytest.approx(0.004 + 0.02 * 0.1, rel=1e-15)
    # far wings are linear with slopes b (1 ± ρ)
    w_hi, w_hi2 = SHORT.total_variance(1000.0), SHORT.total_variance(1001.0)
    assert float(w_hi2 - w_hi) == pytest.approx(0.02 * (1 - 0.3), rel=1e-6)
    w_lo, w_lo2 = SHORT.total_variance(-1000.0), SHORT.total_variance(-1001.0)
    assert float(w_lo2 - w_lo) == pytest.approx(0.02 * (1 + 0.3), rel=1e-6)


def test_linear_in_total_variance_between_pillars() -> None:
    k = np.array([-0.3, 0.0, 0.2])
    t = 0.1 + 0.25 * (0.5 - 0.1)
    expected = 0.75 * SHORT.total_variance(k) + 0.25 * LONG.total_variance(k)
    np.testing.assert_allclose(SURFACE.variance_rate(k, t) * t, expected, rtol=1e-14)


def test_flat_extrapolation_outside_pillars() -> None:
    k = np.array([-0.2, 0.1])
    np.testing.assert_allclose(SURFACE.implied_vol(k, 0.01), np.sqrt(SHORT.total_variance(k) / 0.1), rtol=1e-14)
    np.testing.assert_allclose(SURFACE.implied_vol(k, 0.0), np.sqrt(SHORT.total_variance(k) / 0.1), rtol=1e-14)
    np.testing.assert_allclose(SURFACE.implied_vol(k, 2.0), np.sqrt(LONG.total_variance(k) / 0.5), rtol=1e-14)


def test_continuous_at_pillars() -> None:
    k = np.linspace(-1, 1, 11)
    for p in (SHORT, LONG):
        for dt in (-1e-9, 0.0, 1e-9):
            np.testing.assert_allclose(SURFACE.variance_rate(k, p.t + dt), p.total_variance(k) / p.t, rtol=1e-7)


def test_flat_surface() -> None:
    surface = VolSurface.flat(0.65)
    np.testing.assert_allclose(
        surface.implied_vol(np.array([[-1.0, 0.0, 2.0]]), np.array([[0.0], [3.0]])), 0.65, rtol=1e-15
    )


@given(st.floats(-2.0, 2.0), st.floats(0.0, 2.0))
def test_vectorised_matches_scalar_reference(k: float, t: float) -> None:
    assert float(SURFACE.implied_vol(k, t)) == pytest.approx(implied_vol_ref(SURFACE.pillars, k, t), rel=1e-13)
    assert float(SHORT.total_variance(k)) == pytest.approx(svi_total_variance_ref(k, SHORT), rel=1e-14)


def test_broadcasting_of_moneyness_and_time() -> None:
    k = np.linspace(-0.5, 0.5, 7)[None, :]
    t = np.array([[0.05], [0.2], [0.9]])
    out = SURFACE.implied_vol(k, t)
    assert out.shape == (3, 7)
    for i in range(3):
        for j in range(7):
            assert out[i, j] == pytest.approx(
                implied_vol_ref(SURFACE.pillars, float(k[0, j]), float(t[i, 0])), rel=1e-13
            )


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"t": 0.0}, "t"),
        ({"b": -0.1}, "b"),
        ({"rho": 1.0}, "rho"),
        ({"sigma": 0.0}, "sigma"),
        ({"a": -1.0}, "a"),
        ({"b": 1.8, "rho": 0.5}, "b"),
        ({"m": math.nan}, "m"),
    ],
)
def test_invalid_svi_parameters_name_the_field(params: dict[str, float], field: str) -> None:
    base = {"t": 0.1, "a": 0.004, "b": 0.02, "rho": -0.3, "m": 0.0, "sigma": 0.1}
    with pytest.raises(PricingInputError) as info:
        SviSlice(**(base | params))
    assert info.value.field == field


def test_calendar_arbitrage_and_order_rejected() -> None:
    with pytest.raises(PricingInputError) as info:
        VolSurface((LONG, SHORT))
    assert info.value.field == "pillars[1].t"
    lower = SviSlice(t=0.6, a=0.001, b=0.01, rho=0.0, m=0.0, sigma=0.1)
    with pytest.raises(PricingInputError, match="below the previous pillar") as info:
        VolSurface((LONG, lower))
    assert info.value.field == "pillars[1]"
    with pytest.raises(PricingInputError):
        VolSurface(())
    with pytest.raises(PricingInputError):
        VolSurface.flat(0.0)
