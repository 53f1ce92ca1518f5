"""Mirrors of ``contracts/libraries/ActionHash.sol``: what a trade, withdrawal or bid attestation binds."""

from __future__ import annotations

from eth_abi import encode
from eth_utils import keccak

TRADE_TAG = keccak(text="pmsim.action.trade")
WITHDRAW_TAG = keccak(text="pmsim.action.withdraw")
STATUS = b"\x00" * 32  # a status result binds no action


def trade_action(account: str, instrument: int, size_delta: int, price: int, fee: int,
                 reduces_im: bool = False) -> bytes:  # fmt: skip
    """Hash of a fill as seen by one side: ``size_delta`` > 0 buys, < 0 sells (1e18 units).

    ``reduces_im``: the engine judged that the fill lowers the account's portfolio initial margin
    (:func:`offchain.rules.reduces_im`); the Vault then asks only maintenance margin (issue 8, F-7).
    """
    return keccak(
        encode(
            ["bytes32", "address", "uint32", "int256", "uint256", "uint256", "bool"],
            [TRADE_TAG, account, instrument, size_delta, price, fee, reduces_im],
        )
    )


def withdraw_action(account: str, token: str, amount: int) -> bytes:
    return keccak(encode(["bytes32", "address", "address", "uint256"], [WITHDRAW_TAG, account, token, amount]))


BID_TAG = keccak(text="pmsim.action.bid")


def bid_action(bidder: str, account: str, version: int, fraction: int, worst_price: int) -> bytes:
    """Hash of a liquidation bid (``ActionHash.bid``): the auction of ``account`` at ``version``,
    ``fraction`` (WAD) of its portfolio, paying at most ``worst_price`` (negative: paid at least)."""
    return keccak(
        encode(
            ["bytes32", "address", "address", "uint256", "uint256", "int256"],
            [BID_TAG, bidder, account, version, fraction, worst_price],
        )
    )
