"""Positions files (JSON and CSV): parsing into engine inputs, errors naming the field."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from offchain.errors import InputError, UnknownInstrumentError
from offchain.risk.config import RiskConfig
from offchain.risk.positions_file import MarketFlags, load_positions

NOW = 1_735_689_600
EXPIRY = NOW + 30 * 86_400

SAMPLE: dict[str, Any] = {
    "now": NOW,
    "round": 7,
    "spot": {"BTC": 60_000, "ETH": 3_000},
    "vol": {
        "BTC": 0.55,
        "ETH": {"svi": [{"expiry": EXPIRY, "a": 0.035, "b": 0.03, "rho": -0.3, "m": 0.0, "sigma": 0.1}]},
    },
    "settlements": [{"underlying": "BTC", "expiry": NOW - 86_400, "price": 59_000}],
    "instruments": [
        {"id": 1, "kind": "PERP", "underlying": "BTC"},
        {"id": 2, "kind": 0, "underlying": "ETH"},
        {"id": 3, "kind": "CALL", "underlying": "BTC", "strike": 66_000, "expiry": EXPIRY},
        {"id": 4, "kind": "PUT", "underlying": 0, "strike": 54_000, "expiry": EXPIRY},
        {"id": 5, "kind": "FUTURE", "underlying": "ETH", "expiry": EXPIRY},
    ],
    "accounts": [
        {
            "id": "alice",
            "cash": 20_000,
            "collateral": {"WETH": 2.0},
            "positions": [{"instrument": 1, "size": 1.0, "entry_price": 58_000}, {"instrument": 3, "size": -1.0}],
        },
        {
            "id": "bob",
            "cash": 15_000,
            "funding_owed": 12.5,
            "positions": [
                {"instrument": 1, "size": 1.0, "entry_price": 61_000},
                {"instrument": 2, "size": -20, "entry_price": 3_050},
            ],
        },
        {
            "id": "carol",
            "cash": 5_000,
            "positions": [{"instrument": 4, "size": -2.0}, {"instrument": 5, "size": 3, "entry_price": 2_990}],
        },
    ],
}

CSV = f"""account,instrument,kind,underlying,strike,expiry,size,entry_price
alice,1,PERP,BTC,,,1.0,58000
alice,3,CALL,BTC,66000,{EXPIRY},-1.0,
alice,,CASH,,,,20000,
alice,,COLLATERAL,WETH,,,2.0,
bob,1,PERP,BTC,,,1.0,61000
bob,2,PERP,ETH,,,-20,3050
bob,,CASH,,,,15000,
bob,,FUNDING,,,,12.5,
carol,4,PUT,BTC,54000,{EXPIRY},-2.0,
carol,5,FUTURE,ETH,,{EXPIRY},3,2990
carol,,CASH,,,,5000,
"""

FLAGS = MarketFlags(now=NOW, round_id=7, spot={"BTC": 60_000.0, "ETH": 3_000.0}, vol={"BTC": 0.55, "ETH": 0.7})


def write_json(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "positions.json"
    path.write_text(json.dumps(doc))
    return path


def test_json_file(config: RiskConfig, tmp_path: Path) -> None:
    data = load_positions(write_json(tmp_path, SAMPLE), config)
    assert data.account_ids == ("alice", "bob", "carol")
    assert data.instruments.instrument_id.tolist() == [1, 2, 3, 4, 5]
    assert data.instruments.kind.tolist() == [0, 0, 2, 3, 1]
    assert data.instruments.underlying.tolist() == [0, 1, 0, 0, 1]
    assert data.market.round_id == 7 and data.market.now == NOW
    assert dict(data.market.settlements) == {(0, NOW - 86_400): 59_000.0}
    book = data.book
    assert book.positions.toarray().tolist() == [
        [1.0, 0.0, -1.0, 0.0, 0.0],
        [1.0, -20.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, -2.0, 3.0],
    ]
    assert book.cash.tolist() == [20_000.0, 15_000.0, 5_000.0]
    assert book.cost_basis.tolist() == [58_000.0, 61_000.0 - 20 * 3_050.0, 3 * 2_990.0]
    assert book.funding_owed.tolist() == [0.0, 12.5, 0.0]
    assert book.collateral.tolist() == [[0.0, 2.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    assert float(data.market.vol[0].implied_vol(0.3, 0.1)) == pytest.approx(0.55)


def test_csv_file_matches_json(config: RiskConfig, tmp_path: Path) -> None:
    path = tmp_path / "positions.csv"
    path.write_text(CSV)
    csv_data = load_positions(path, config, FLAGS)
    json_data = load_positions(write_json(tmp_path, SAMPLE), config)
    assert csv_data.account_ids == json_data.account_ids
    columns = csv_data.instruments.index_of(json_data.instruments.instrument_id)  # CSV lists in order of use
    np.testing.assert_array_equal(csv_data.book.positions.toarray()[:, columns], json_data.book.positions.toarray())
    np.testing.assert_array_equal(csv_data.instruments.strike[columns], json_data.instruments.strike)
    for name in ("cash", "cost_basis", "funding_owed", "collateral"):
        np.testing.assert_array_equal(getattr(csv_data.book, name), getattr(json_data.book, name))


def _broken(path: str, value: object) -> dict[str, Any]:
    doc = copy.deepcopy(SAMPLE)
    *parents, last = path.split(".")
    node: Any = doc
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    if value is KeyError:
        del node[last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("accounts.1.positions.1.size", "lots", "accounts[1].positions[1].size"),
        ("accounts.0.positions.0.entry_price", KeyError, "accounts[0].positions[0].entry_price"),
        ("accounts.0.positions.1.instrument", 99, "accounts[0].positions[1].instrument"),
        ("accounts.0.collateral", {"DOGE": 1.0}, "accounts[0].collateral.DOGE"),
        ("accounts.2.cash", None, "accounts[2].cash"),
        ("accounts.1.id", "alice", "accounts[1].id"),
        ("instruments.2.kind", "SWAPTION", "instruments[2].kind"),
        ("instruments.3.underlying", "SOL", "instruments[3].underlying"),
        ("instruments.2.strike", -5, "instruments.strike[2]"),
        ("spot.ETH", 0, "market.spot[1]"),
        ("spot.SOL", 10, "spot.SOL"),
        ("vol.BTC", -0.5, "vol.BTC"),
        ("vol.ETH.svi.0.rho", 1.5, "vol.ETH.svi[0].rho"),
        ("now", "yesterday", "now"),
        ("accounts.0.positions.0.leverage", 10, "accounts[0].positions[0].leverage"),
    ],
)
def test_json_errors_name_the_field(config: RiskConfig, tmp_path: Path, path: str, value: object, field: str) -> None:
    with pytest.raises(InputError) as info:
        load_positions(write_json(tmp_path, _broken(path, value)), config)
    assert info.value.field == field


def test_unknown_instrument_error_type(config: RiskConfig, tmp_path: Path) -> None:
    with pytest.raises(UnknownInstrumentError, match="99"):
        load_positions(write_json(tmp_path, _broken("accounts.0.positions.1.instrument", 99)), config)


def test_unreadable_files(config: RiskConfig, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="invalid JSON at line 1"):
        load_positions(bad, config)
    with pytest.raises(InputError, match="cannot read"):
        load_positions(tmp_path / "absent.json", config)


@pytest.mark.parametrize(
    ("edit", "flags", "field"),
    [
        (lambda s: s.replace("1.0,58000", "one,58000"), FLAGS, "line 2.size"),
        (lambda s: s.replace("alice,3,CALL,BTC,66000", "alice,3,CALL,BTC,abc"), FLAGS, "line 3.strike"),
        (lambda s: s.replace("bob,2,PERP,ETH", "bob,1,PERP,ETH"), FLAGS, "line 7.instrument"),
        (lambda s: s.replace("account,instrument", "acct,instrument"), FLAGS, "line 1"),
        (lambda s: s, MarketFlags(now=None, spot=FLAGS.spot, vol=FLAGS.vol), "--now"),
        (lambda s: s, MarketFlags(now=NOW, spot={"BTC": 60_000.0}, vol=FLAGS.vol), "--spot"),
        (lambda s: s.replace("COLLATERAL,WETH", "COLLATERAL,WXYZ"), FLAGS, "line 5.underlying"),
    ],
)
def test_csv_errors_name_the_field(
    config: RiskConfig, tmp_path: Path, edit: Any, flags: MarketFlags, field: str
) -> None:
    path = tmp_path / "positions.csv"
    path.write_text(edit(CSV))
    with pytest.raises(InputError) as info:
        load_positions(path, config, flags)
    assert info.value.field == field


def test_volatility_defaults_to_the_configured_surfaces(config: RiskConfig, tmp_path: Path) -> None:
    doc = copy.deepcopy(SAMPLE)
    del doc["vol"]["BTC"]
    data = load_positions(write_json(tmp_path, doc), config)
    assert data.market.vol[0] is config.vol_surfaces()[0]
    assert float(data.market.vol[1].implied_vol(0.0, 0.01)) != float(config.vol_surfaces()[1].implied_vol(0.0, 0.01))
    path = tmp_path / "positions.csv"
    path.write_text(CSV)
    flags = MarketFlags(now=NOW, spot=FLAGS.spot, vol={"ETH": 0.9})
    market = load_positions(path, config, flags).market
    assert market.vol[0] is config.vol_surfaces()[0]
    assert float(market.vol[1].implied_vol(0.2, 0.5)) == pytest.approx(0.9)
    with pytest.raises(InputError) as info:
        load_positions(path, config, MarketFlags(now=NOW, spot=FLAGS.spot, vol={"SOL": 0.9}))
    assert info.value.field == "--vol"


def test_svi_pillars_out_of_order_name_the_pillar(config: RiskConfig, tmp_path: Path) -> None:
    doc = copy.deepcopy(SAMPLE)
    pillar = dict(doc["vol"]["ETH"]["svi"][0])
    doc["vol"]["ETH"]["svi"] = [pillar | {"expiry": EXPIRY + 86_400}, pillar]
    with pytest.raises(InputError) as info:
        load_positions(write_json(tmp_path, doc), config)
    assert info.value.field == "vol.ETH.svi[1].t"
