"""Fixed-point conversion: exact, rounding against the account, vectorised = scalar."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from offchain.errors import InputError
from offchain.risk.fixed_point import (
    attested_figures,
    from_price_e18,
    from_quote_units,
    from_size_e18,
    quote_units_down,
    quote_units_up,
    to_price_e18,
    to_quote_units_down,
    to_quote_units_up,
    to_size_e18,
)

usd = st.floats(-9e12, 9e12, allow_nan=False, allow_infinity=False)


def test_known_values_round_against_the_account() -> None:
    # 0.1 is 0.1000000000000000055...: down stays at 100000, up goes to 100001
    assert to_quote_units_down(0.1) == 100_000
    assert to_quote_units_up(0.1) == 100_001
    # 1.005 is 1.00499999999999989...: both directions see the true binary value
    assert to_quote_units_down(1.005) == 1_004_999
    assert to_quote_units_up(1.005) == 1_005_000
    assert to_quote_units_down(-0.0000001) == -1  # a debt rounds to the larger debt
    assert to_quote_units_up(-0.0000001) == 0
    assert to_quote_units_down(12.5) == to_quote_units_up(12.5) == 12_500_000


@given(usd)
def test_scalar_is_exact_floor_and_ceil(x: float) -> None:
    exact = Fraction(x) * 1_000_000
    down, up = to_quote_units_down(x), to_quote_units_up(x)
    assert down <= exact <= up
    assert up - down == (0 if exact.denominator == 1 else 1)


@given(
    st.lists(
        usd | st.sampled_from([0.1, -0.1, 1.005, 2.0**-30, -(2.0**-30), 9.007e9, 123456.789]), min_size=1, max_size=50
    )
)
def test_vectorised_matches_scalar(values: list[float]) -> None:
    arr = np.array(values)
    assert quote_units_down(arr).tolist() == [to_quote_units_down(v) for v in values]
    assert quote_units_up(arr).tolist() == [to_quote_units_up(v) for v in values]


def test_attested_figures_round_equity_down_and_margin_up() -> None:
    figures = attested_figures(margin_equity=100.0000004, mtm_equity=-3.0000001, im=50.0000001, mm=40.0)
    assert figures.margin_equity == 100_000_000
    assert figures.mtm_equity == -3_000_001
    assert figures.im == 50_000_001
    assert figures.mm == 40_000_000


@given(st.integers(-(2**100), 2**100))
def test_e18_round_trip_is_nearest(value: int) -> None:
    assert from_price_e18(value) == float(Fraction(value, 10**18))
    assert from_size_e18(value) == float(Fraction(value, 10**18))
    assert abs(Fraction(to_price_e18(from_price_e18(value)), 10**18) - Fraction(from_price_e18(value))) <= Fraction(
        1, 2 * 10**18
    )


def test_e18_known_values() -> None:
    assert to_size_e18(1.5) == 1_500_000_000_000_000_000
    assert to_price_e18(60_000.0) == 60_000 * 10**18
    assert from_price_e18(60_000 * 10**18 + 5 * 10**14) == 60_000.0005


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "1.0", None])
def test_bad_input(bad: object) -> None:
    with pytest.raises(InputError):
        to_quote_units_down(bad)  # type: ignore[arg-type]
    with pytest.raises(InputError):
        to_price_e18(bad)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"equity\[1\]"):
        quote_units_up(np.array([1.0, math.nan if bad is None else 1e20]), field="equity")
    with pytest.raises(InputError):
        from_quote_units(1.5)  # type: ignore[arg-type]
