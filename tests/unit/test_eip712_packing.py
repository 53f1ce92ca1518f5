"""The order's struct hash is packed by hand and the EIP-712 signer calls coincurve directly (both on
the chain backend's hot path); they must equal eth_abi's ``abi.encode`` and eth-keys' signatures
byte for byte, and refuse what those refuse. The contracts' side is checked by tests/chain/test_mirrors.py."""

from __future__ import annotations

from dataclasses import astuple, replace

import pytest
from eth_abi import encode
from eth_keys import keys
from eth_utils import keccak, to_checksum_address
from hypothesis import given
from hypothesis import strategies as st

from offchain.chain.eip712 import ORDER_ABI, ORDER_TYPEHASH, Domain, Order, Signer, digest

addresses = st.binary(min_size=20, max_size=20).map(lambda b: to_checksum_address(b))
u32, u64, u128 = (st.integers(0, 2**bits - 1) for bits in (32, 64, 128))


@given(st.builds(Order, addresses, addresses, u32, st.booleans(), st.booleans(), u128, u128, u64, u64, u64))
def test_order_struct_hash_is_abi_encode(order: Order) -> None:
    assert order.struct_hash() == keccak(encode(["bytes32", *ORDER_ABI], [ORDER_TYPEHASH, *astuple(order)]))


def test_order_out_of_range_fields_are_refused() -> None:
    good = Order("0x" + "11" * 20, "0x" + "22" * 20, 1, True, False, 5, 7, 1, 2)
    good.struct_hash()
    for change in ({"instrument": 2**32}, {"size": 2**128}, {"limit_price": -1}, {"nonce": 2**64},
                   {"grant": -1}, {"signer": "0x1234"}, {"is_buy": 1}):  # fmt: skip
        with pytest.raises(ValueError):
            replace(good, **change).struct_hash()  # type: ignore[arg-type]


@given(st.binary(min_size=32, max_size=32), st.integers(1, 2**255))
def test_signer_is_byte_for_byte_eth_keys(message_hash: bytes, secret: int) -> None:
    key = secret.to_bytes(32, "big")
    ref = keys.PrivateKey(key).sign_msg_hash(message_hash)
    want = int(ref.r).to_bytes(32, "big") + int(ref.s).to_bytes(32, "big") + bytes([int(ref.v) + 27])
    assert Signer(key).sign(message_hash) == want


def test_domain_separator_is_abi_encode_and_remembered_per_domain() -> None:
    a = Domain("pmsim Exchange", "1", 31337, "0x" + "33" * 20)
    b = replace(a, chain_id=1)
    domain_type = keccak(text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
    for d in (a, b, a):
        fields = [domain_type, keccak(text=d.name), keccak(text=d.version), d.chain_id, d.verifying_contract]
        assert d.separator() == keccak(encode(["bytes32", "bytes32", "bytes32", "uint256", "address"], fields))
    assert digest(a, b"\x00" * 32) != digest(b, b"\x00" * 32)
