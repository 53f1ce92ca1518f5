"""Input parsing of ``pmsim liquidate``: exact conversions, errors naming the option at fault."""

from __future__ import annotations

import pytest

from offchain.cli_liquidate import parse_fraction, parse_price, pct, usd
from offchain.errors import InputError


@pytest.mark.parametrize(("text", "wad"), [("0.25", 25 * 10**16), ("25%", 25 * 10**16), ("1", 10**18),
                                           ("0.000000000000000001", 1), (" 100% ", 10**18)])  # fmt: skip
def test_fraction_is_exact(text: str, wad: int) -> None:
    assert parse_fraction(text) == wad


@pytest.mark.parametrize("text", ["0", "1.01", "-0.5", "abc", "0.0000000000000000001", "nan", "inf", "101%"])
def test_bad_fraction_names_the_option(text: str) -> None:
    with pytest.raises(InputError) as err:
        parse_fraction(text)
    assert err.value.field == "fraction"


@pytest.mark.parametrize(("text", "units"), [("12000", 12_000 * 10**6), ("-500.5", -500_500_000), ("0.000001", 1)])
def test_price_is_exact_and_may_be_negative(text: str, units: int) -> None:
    assert parse_price(text) == units


@pytest.mark.parametrize("text", ["1.0000001", "x", "nan", "1e40"])
def test_bad_price_names_the_option(text: str) -> None:
    with pytest.raises(InputError) as err:
        parse_price(text)
    assert err.value.field == "max_price"


def test_human_units() -> None:
    assert usd(-521_154_514) == "-521.154514" and usd(3_992_420_000) == "3,992.420000"
    assert pct(606_548 * 10**12) == "60.6548 %"
