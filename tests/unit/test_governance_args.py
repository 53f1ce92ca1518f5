"""``pmsim admin`` argument parsing: exact integers, ABI types, and errors that name the field."""

from __future__ import annotations

from typing import Any

import pytest

from offchain.chain.governance import ZERO32, Call, operation_id, parse_arg, parse_int
from offchain.errors import InputError

ADDR = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


@pytest.mark.parametrize(
    ("raw", "want"),
    [("42", 42), ("0.02e18", 2 * 10**16), ("2e16", 2 * 10**16), ("1_000", 1000), ("0x10", 16), ("-3", -3),
     (" 7 ", 7), ("1e2", 100)],
)  # fmt: skip
def test_parse_int_is_exact(raw: str, want: int) -> None:
    assert parse_int(raw, "x") == want


@pytest.mark.parametrize("raw", ["1.5", "abc", "", "1e400", "nan", "inf", "0xzz", "2e-1"])
def test_parse_int_refuses_what_is_not_an_exact_integer(raw: str) -> None:
    with pytest.raises(InputError) as info:
        parse_int(raw, "price_tolerance")
    assert info.value.field == "price_tolerance"


def _item(typ: str, **kw: Any) -> dict[str, Any]:
    return {"type": typ, "name": "v", **kw}


def test_parse_arg_by_abi_type() -> None:
    assert parse_arg("255", _item("uint8"), "v") == 255
    assert parse_arg("-128", _item("int8"), "v") == -128
    assert parse_arg(ADDR.lower(), _item("address"), "v") == ADDR
    assert parse_arg("true", _item("bool"), "v") is True and parse_arg("0", _item("bool"), "v") is False
    assert parse_arg("0x" + "ab" * 32, _item("bytes32"), "v") == b"\xab" * 32
    assert parse_arg("0x", _item("bytes"), "v") == b""
    assert parse_arg('["1", "2"]', _item("uint64[]"), "v") == [1, 2]
    tup = _item("tuple", components=[{"type": "address", "name": "token"}, {"type": "uint64", "name": "haircut"}])
    assert parse_arg(f'["{ADDR}", "0.1e18"]', tup, "v") == (ADDR, 10**17)


@pytest.mark.parametrize(
    ("raw", "item", "field"),
    [("256", _item("uint8"), "v"), ("-1", _item("uint64"), "v"), ("128", _item("int8"), "v"),
     ("0x1234", _item("address"), "v"), ("maybe", _item("bool"), "v"), ("0xab", _item("bytes32"), "v"),
     ("zz", _item("bytes"), "v"), ("[1,", _item("uint8[]"), "v"), ('{"a": 1}', _item("uint8[]"), "v"),
     ('["x"]', _item("uint8[]"), "v[0]"),
     ("[1]", _item("tuple", components=[{"type": "uint8", "name": "a"}, {"type": "uint8", "name": "b"}]), "v")],
)  # fmt: skip
def test_parse_arg_names_the_field_at_fault(raw: str, item: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError) as info:
        parse_arg(raw, item, "v")
    assert info.value.field == field


def test_operation_ids_differ_by_salt_and_batch() -> None:
    """One call hashes as ``hashOperation``, several as ``hashOperationBatch`` (checked against the
    contract in tests/chain/test_governance.py, whose scheduled operations are found by this id)."""
    a, b = Call("Vault", ADDR, b"\x01"), Call("Vault", ADDR, b"\x02")
    assert operation_id([a]) != operation_id([a], salt=b"\x01" * 32)
    assert operation_id([a, b]) != operation_id([b, a]) != operation_id([a])
    assert operation_id([a], ZERO32, ZERO32) == operation_id([a])
