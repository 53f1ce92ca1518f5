"""Mirrors of ``contracts/libraries/ActionHash.sol``: what a trade, withdrawal or bid attestation binds.

``abi.encode`` of static types is one 32-byte word per value, packed directly with the word helpers of
:mod:`offchain.chain.eip712` (the engine hashes one action per attestation).
"""

from __future__ import annotations

from functools import lru_cache

from eth_utils import keccak

from offchain.chain.eip712 import abi_address, abi_int, abi_uint, keccak256

TRADE_TAG = keccak(text="pmsim.action.trade")
WITHDRAW_TAG = keccak(text="pmsim.action.withdraw")
STATUS = b"\x00" * 32  # a status result binds no action


@lru_cache(maxsize=4096)  # the engine, its margin check and the Vault's mirror each hash the same fill
def trade_action(account: str, instrument: int, size_delta: int, price: int, fee: int,
                 reduces_im: bool = False) -> bytes:  # fmt: skip
    """Hash of a fill as seen by one side: ``size_delta`` > 0 buys, < 0 sells (1e18 units).

    ``reduces_im``: the engine judged that the fill lowers the account's portfolio initial margin
    (:func:`offchain.rules.reduces_im`); the Vault then asks only maintenance margin (issue 8, F-7).
    """
    return keccak256(TRADE_TAG + abi_address(account) + abi_uint(instrument, 32) + abi_int(size_delta)
                     + abi_uint(price) + abi_uint(fee) + abi_uint(int(bool(reduces_im))))  # fmt: skip


def withdraw_action(account: str, token: str, amount: int) -> bytes:
    return keccak256(WITHDRAW_TAG + abi_address(account) + abi_address(token) + abi_uint(amount))


BID_TAG = keccak(text="pmsim.action.bid")


def bid_action(bidder: str, account: str, version: int, fraction: int, worst_price: int) -> bytes:
    """Hash of a liquidation bid (``ActionHash.bid``): the auction of ``account`` at ``version``,
    ``fraction`` (WAD) of its portfolio, paying at most ``worst_price`` (negative: paid at least)."""
    return keccak256(BID_TAG + abi_address(bidder) + abi_address(account) + abi_uint(version) + abi_uint(fraction)
                     + abi_int(worst_price))  # fmt: skip
