"""The action hashes and the attestation's struct hash are packed by hand (one 32-byte word per static
value); they must equal eth_abi's ``abi.encode`` for every value in range, and refuse values out of
range. The contracts' side is checked by tests/chain/test_mirrors.py."""

from __future__ import annotations

from dataclasses import replace

import pytest
from eth_abi import encode
from eth_utils import keccak, to_checksum_address
from hypothesis import given
from hypothesis import strategies as st

from offchain.chain.actions import BID_TAG, TRADE_TAG, WITHDRAW_TAG, bid_action, trade_action, withdraw_action
from offchain.chain.eip712 import ATTESTATION_ABI, ATTESTATION_TYPEHASH, Attestation, keccak256

addresses = st.binary(min_size=20, max_size=20).map(lambda b: to_checksum_address(b))
u256 = st.integers(0, 2**256 - 1)
i256 = st.integers(-(2**255), 2**255 - 1)


@given(addresses, st.integers(0, 2**32 - 1), i256, u256, u256, st.booleans())
def test_trade_action_is_abi_encode(account: str, instrument: int, delta: int, price: int, fee: int,
                                    flag: bool) -> None:  # fmt: skip
    types = ["bytes32", "address", "uint32", "int256", "uint256", "uint256", "bool"]
    want = keccak(encode(types, [TRADE_TAG, account, instrument, delta, price, fee, flag]))
    assert trade_action(account, instrument, delta, price, fee, flag) == want


@given(addresses, addresses, u256)
def test_withdraw_action_is_abi_encode(account: str, token: str, amount: int) -> None:
    want = keccak(encode(["bytes32", "address", "address", "uint256"], [WITHDRAW_TAG, account, token, amount]))
    assert withdraw_action(account, token, amount) == want


@given(addresses, addresses, u256, u256, i256)
def test_bid_action_is_abi_encode(bidder: str, account: str, version: int, fraction: int, worst: int) -> None:
    types = ["bytes32", "address", "address", "uint256", "uint256", "int256"]
    want = keccak(encode(types, [BID_TAG, bidder, account, version, fraction, worst]))
    assert bid_action(bidder, account, version, fraction, worst) == want


def test_out_of_range_values_are_refused() -> None:
    a = "0x" + "11" * 20
    for bad in (lambda: trade_action(a, 2**32, 0, 0, 0), lambda: trade_action(a, 1, 2**255, 0, 0),
                lambda: trade_action(a, 1, 0, -1, 0), lambda: withdraw_action(a, "0x1234", 1),
                lambda: bid_action(a, a, 0, 2**256, 0)):  # fmt: skip
        with pytest.raises(ValueError):
            bad()


u64 = st.integers(0, 2**64 - 1)
words = st.binary(min_size=32, max_size=32)


@given(st.tuples(addresses, u64, words, i256, i256, u256, u256, u256, words, u64, u64, u64))
def test_attestation_struct_hash_is_abi_encode(fields: tuple[object, ...]) -> None:
    """The attestation's struct hash, packed by hand, is eth_abi's ``abi.encode(typehash, fields)``."""
    att = Attestation(*fields)  # type: ignore[arg-type]
    assert att.struct_hash() == keccak(encode(["bytes32", *ATTESTATION_ABI], [ATTESTATION_TYPEHASH, *fields]))


@given(st.binary(max_size=600))
def test_keccak256_is_eth_utils_keccak(data: bytes) -> None:
    assert keccak256(data) == keccak(data)


def test_attestation_out_of_range_fields_are_refused() -> None:
    good = Attestation("0x" + "11" * 20, 1, b"\x00" * 32, -5, 5, 1, 1, 0, b"\x22" * 32, 1, 2, 3)
    good.struct_hash()
    for change in ({"risk_nonce": 2**64}, {"margin_equity": 2**255}, {"initial_margin": -1},
                   {"action_hash": b"\x00" * 31}, {"account": "0x1234"}, {"expiry": -1}):  # fmt: skip
        with pytest.raises(ValueError):
            replace(good, **change).struct_hash()  # type: ignore[arg-type]
