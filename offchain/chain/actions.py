"""Mirrors of ``contracts/libraries/ActionHash.sol``: what a trade or withdrawal attestation binds."""

from __future__ import annotations

from eth_abi import encode
from eth_utils import keccak

TRADE_TAG = keccak(text="pmsim.action.trade")
WITHDRAW_TAG = keccak(text="pmsim.action.withdraw")
STATUS = b"\x00" * 32  # a status result binds no action


def trade_action(account: str, instrument: int, size_delta: int, price: int, fee: int) -> bytes:
    """Hash of a fill as seen by one side: ``size_delta`` > 0 buys, < 0 sells (1e18 units)."""
    return keccak(
        encode(
            ["bytes32", "address", "uint32", "int256", "uint256", "uint256"],
            [TRADE_TAG, account, instrument, size_delta, price, fee],
        )
    )


def withdraw_action(account: str, token: str, amount: int) -> bytes:
    return keccak(encode(["bytes32", "address", "address", "uint256"], [WITHDRAW_TAG, account, token, amount]))
