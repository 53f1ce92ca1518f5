"""Black-76: textbook values, QuantLib, parity, Greeks vs finite differences, scalar reference, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import QuantLib as ql
from hypothesis import given, settings
from hypothesis import strategies as st

from offchain.errors import InputError, PricingError, PricingInputError
from offchain.models import OptionType, black76_greeks, black76_price
from offchain.models.reference import black76_greeks_ref, black76_price_ref

forwards = st.floats(1.0, 200_000.0)
moneyness = st.floats(0.3, 3.0)
times = st.floats(1.0 / 365.0, 3.0)
vols = st.floats(0.05, 2.0)
rates = st.floats(-0.02, 0.1)


# ----------------------------------------------------------------------------- textbook values


def test_haug_black76_example() -> None:
    # Haug, The Complete Guide to Option Pricing Formulas, 2nd ed. (2007), ch. 1, options on
    # futures (Black-76): F = 19, X = 19, T = 0.75, r = 10 %, σ = 28 %  =>  c = p = 1.7011.
    call = float(black76_price(19.0, 19.0, 0.75, 0.28, True, 0.10))
    put = float(black76_price(19.0, 19.0, 0.75, 0.28, False, 0.10))
    assert round(call, 4) == 1.7011
    assert round(put, 4) == 1.7011


def test_hull_crude_oil_put_futures_option() -> None:
    # Hull, Options, Futures, and Other Derivatives, 8th ed. (2012), ch. 18 "Futures options",
    # Black's model example: put on crude oil futures, F0 = K = 20, r = 9 %, T = 4 months,
    # σ = 25 %: p = e^(-0.09 × 4/12) (20 N(-d2) − 20 N(-d1)) = 1.12 (Hull rounds to the cent).
    assert round(float(black76_price(20.0, 20.0, 4.0 / 12.0, 0.25, False, 0.09)), 2) == 1.12


def test_hull_greek_letters_running_example() -> None:
    # Hull, OFOD 8th ed., ch. 19 "The Greek letters": call, S = 49, K = 50, r = 5 %, σ = 20 %,
    # T = 20 weeks. Price ≈ 2.40 (the "$240,000" for 100,000 options), delta 0.522,
    # gamma 0.066, vega 12.1. Black-76 on F = S e^{rT}: dV/dS = e^{rT} dV/dF, d²V/dS² = e^{2rT}·Γ_F.
    s, k, r, vol, t = 49.0, 50.0, 0.05, 0.20, 20.0 / 52.0
    growth = math.exp(r * t)
    g = black76_greeks(s * growth, k, t, vol, True, r)
    assert round(float(g.price), 2) == 2.40
    assert round(float(g.delta) * growth, 3) == 0.522
    assert round(float(g.gamma) * growth**2, 3) == 0.066
    assert round(float(g.vega), 1) == 12.1


# ----------------------------------------------------------------------------- QuantLib


def _quantlib(forward: float, strike: float, t: float, vol: float, call: bool, rate: float) -> tuple[float, ...]:
    kind = ql.Option.Call if call else ql.Option.Put
    calc = ql.BlackCalculator(ql.PlainVanillaPayoff(kind, strike), forward, vol * math.sqrt(t), math.exp(-rate * t))
    return calc.value(), calc.deltaForward(), calc.gammaForward(), calc.vega(t)


def _quantlib_theta(forward: float, strike: float, t: float, vol: float, call: bool, rate: float) -> float:
    kind = ql.Option.Call if call else ql.Option.Put
    h = 1e-5 * t

    def value(tt: float) -> float:
        return ql.blackFormula(kind, strike, forward, vol * math.sqrt(tt), math.exp(-rate * tt))

    return -(value(t + h) - value(t - h)) / (2.0 * h)


@settings(max_examples=200, deadline=None)
@given(forwards, moneyness, times, vols, st.booleans(), rates)
def test_matches_quantlib(forward: float, m: float, t: float, vol: float, call: bool, rate: float) -> None:
    strike = forward * m
    g = black76_greeks(forward, strike, t, vol, call, rate)
    value, delta, gamma, vega = _quantlib(forward, strike, t, vol, call, rate)
    scale = forward  # absolute tolerances relative to the notional
    assert float(g.price) == pytest.approx(value, rel=1e-10, abs=1e-12 * scale)
    assert float(g.delta) == pytest.approx(delta, rel=1e-10, abs=1e-12)
    assert float(g.gamma) == pytest.approx(gamma, rel=1e-9, abs=1e-15 / scale)
    assert float(g.vega) == pytest.approx(vega, rel=1e-9, abs=1e-12 * scale)
    theta = _quantlib_theta(forward, strike, t, vol, call, rate)
    assert float(g.theta) == pytest.approx(theta, rel=1e-5, abs=1e-7 * scale)


# ----------------------------------------------------------------------------- identities


@given(forwards, moneyness, times, vols, rates)
def test_put_call_parity(forward: float, m: float, t: float, vol: float, rate: float) -> None:
    strike = forward * m
    call = float(black76_price(forward, strike, t, vol, True, rate))
    put = float(black76_price(forward, strike, t, vol, False, rate))
    assert call - put == pytest.approx(math.exp(-rate * t) * (forward - strike), abs=1e-10 * (forward + strike))


@settings(max_examples=150, deadline=None)
@given(forwards, st.floats(0.5, 2.0), st.floats(7.0 / 365.0, 3.0), vols, st.booleans(), rates)
def test_greeks_match_finite_differences(
    forward: float, m: float, t: float, vol: float, call: bool, rate: float
) -> None:
    strike = forward * m
    g = black76_greeks(forward, strike, t, vol, call, rate)

    def v(f: float = forward, tt: float = t, s: float = vol) -> float:
        return float(black76_price(f, strike, tt, s, call, rate))

    sd = forward * vol * math.sqrt(t)  # forward steps scale with its s.d. to expiry (short, low-vol options)
    hf, hg, ht, hv = 1e-3 * sd, 1e-2 * sd, 1e-5 * t, 1e-5
    fd_delta = (v(f=forward + hf) - v(f=forward - hf)) / (2 * hf)
    fd_gamma = (v(f=forward + hg) - 2 * v() + v(f=forward - hg)) / hg**2
    fd_vega = (v(s=vol + hv) - v(s=vol - hv)) / (2 * hv)
    fd_theta = -(v(tt=t + ht) - v(tt=t - ht)) / (2 * ht)
    assert float(g.delta) == pytest.approx(fd_delta, rel=1e-5, abs=1e-7)
    assert float(g.gamma) == pytest.approx(fd_gamma, rel=1e-3, abs=1e-6 / forward)
    assert float(g.vega) == pytest.approx(fd_vega, rel=1e-5, abs=1e-6 * forward)
    assert float(g.theta) == pytest.approx(fd_theta, rel=1e-4, abs=1e-6 * forward)


@given(forwards, moneyness, st.floats(0.0, 3.0), vols, st.booleans(), rates)
def test_vectorised_matches_scalar_reference(
    forward: float, m: float, t: float, vol: float, call: bool, rate: float
) -> None:
    strike = forward * m
    got = black76_greeks(forward, strike, t, vol, call, rate)
    ref = black76_greeks_ref(forward, strike, t, vol, call, rate)
    for a, b in zip(got, ref, strict=True):
        assert float(a) == pytest.approx(b, rel=1e-12, abs=1e-12 * forward)


def test_broadcasts_over_arrays() -> None:
    forward = np.array([[100.0], [120.0]])
    strike = np.array([80.0, 100.0, 120.0])
    prices = black76_price(forward, strike, 0.5, 0.4, np.array([True, False, True]))
    assert prices.shape == (2, 3)
    expected = [
        [black76_price_ref(f, k, 0.5, 0.4, c) for k, c in zip(strike, [True, False, True], strict=True)]
        for f in (100.0, 120.0)
    ]
    np.testing.assert_allclose(prices, expected, rtol=1e-13)


def test_at_expiry_is_intrinsic_with_step_delta() -> None:
    g = black76_greeks(np.array([90.0, 110.0]), 100.0, 0.0, 0.5, np.array([True, False]))
    np.testing.assert_array_equal(g.price, [0.0, 0.0])
    g = black76_greeks(np.array([110.0, 90.0]), 100.0, 0.0, 0.5, np.array([True, False]))
    np.testing.assert_array_equal(g.price, [10.0, 10.0])
    np.testing.assert_array_equal(g.delta, [1.0, -1.0])
    np.testing.assert_array_equal(g.gamma + g.vega + g.theta, [0.0, 0.0])


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"forward": -1.0}, "forward"),
        ({"forward": 0.0}, "forward"),
        ({"strike": 0.0}, "strike"),
        ({"vol": 0.0}, "vol"),
        ({"vol": -0.2}, "vol"),
        ({"t": -0.01}, "t"),
        ({"t": math.nan}, "t"),
        ({"forward": math.inf}, "forward"),
        ({"rate": math.nan}, "rate"),
        ({"strike": np.array([100.0, math.nan])}, "strike[1]"),
        ({"vol": "high"}, "vol"),
    ],
)
def test_bad_input_names_the_field(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"forward": 100.0, "strike": 100.0, "t": 0.5, "vol": 0.4, "is_call": True, "rate": 0.0}
    args.update(kwargs)
    for fn in (black76_price, black76_greeks):
        with pytest.raises(PricingInputError) as info:
            fn(**args)  # type: ignore[arg-type]
        assert info.value.field == field
        assert isinstance(info.value, PricingError) and isinstance(info.value, InputError)


def test_scalar_reference_rejects_bad_input() -> None:
    with pytest.raises(PricingInputError, match="vol"):
        black76_price_ref(100.0, 100.0, 1.0, 0.0, True)
    with pytest.raises(PricingInputError, match="forward"):
        black76_price_ref(math.nan, 100.0, 1.0, 0.2, True)


# ----------------------------------------------------------------------------- is_call hygiene


@pytest.mark.parametrize(
    ("is_call", "field"),
    [
        ("put", "is_call"),
        ("call", "is_call"),
        (math.nan, "is_call"),
        (2, "is_call"),
        (1, "is_call"),
        (0, "is_call"),
        (None, "is_call"),
        ([True, "put"], "is_call[1]"),
        (np.array([1, 0]), "is_call[0]"),
        (np.array([True, False, True])[None, :].astype(float), "is_call[0]"),
    ],
)
def test_is_call_accepts_only_booleans(is_call: object, field: str) -> None:
    for fn in (black76_price, black76_greeks):
        with pytest.raises(PricingInputError) as info:
            fn(100.0, 100.0, 0.5, 0.4, is_call)  # type: ignore[arg-type]
        assert info.value.field == field
    with pytest.raises(PricingInputError, match="is_call"):
        black76_price_ref(100.0, 100.0, 0.5, 0.4, is_call)  # type: ignore[arg-type]


def test_option_type_enum_and_numpy_booleans_price_like_python_booleans() -> None:
    call, put = black76_price(100.0, 90.0, 0.5, 0.4, True), black76_price(100.0, 90.0, 0.5, 0.4, False)
    assert black76_price(100.0, 90.0, 0.5, 0.4, OptionType.CALL) == call
    assert black76_price(100.0, 90.0, 0.5, 0.4, OptionType.PUT) == put
    assert black76_price(100.0, 90.0, 0.5, 0.4, np.bool_(True)) == call
    mixed = black76_price(100.0, 90.0, 0.5, 0.4, [OptionType.CALL, OptionType.PUT, True, np.bool_(False)])
    np.testing.assert_array_equal(mixed, [call, put, call, put])
    assert black76_greeks(100.0, 90.0, 0.5, 0.4, OptionType.PUT).price == put
    assert call - put == pytest.approx(10.0, abs=1e-12)  # parity: the put really is a put


def test_unchecked_fast_path_is_private_and_still_refuses_non_boolean_types() -> None:
    import offchain.models as models
    from offchain.models import _fast, black76

    assert not hasattr(models, "price_unchecked") and "price_unchecked" not in black76.__all__
    one = np.array([100.0])
    with pytest.raises(PricingInputError, match="is_call"):
        _fast.price_unchecked(one, one, one, one, np.array([2]))
