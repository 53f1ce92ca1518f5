"""Mirrors of ``contracts/libraries/ActionHash.sol``: what a trade, withdrawal or bid attestation binds."""

from __future__ import annotations

from eth_utils import keccak

TRADE_TAG = keccak(text="pmsim.action.trade")
WITHDRAW_TAG = keccak(text="pmsim.action.withdraw")
STATUS = b"\x00" * 32  # a status result binds no action


# ``abi.encode`` of static types is one 32-byte word per value: packed directly (the engine hashes one
# action per attestation, and eth_abi's generic encoder cost more than the margin computation).
def _uint(value: int, bits: int = 256) -> bytes:
    if not 0 <= value < 1 << bits:
        raise ValueError(f"{value} is not a uint{bits}")
    return value.to_bytes(32, "big")


def _int(value: int) -> bytes:
    if not -(1 << 255) <= value < 1 << 255:
        raise ValueError(f"{value} is not an int256")
    return (value % (1 << 256)).to_bytes(32, "big")


def _address(value: str) -> bytes:
    raw = bytes.fromhex(value.removeprefix("0x"))
    if len(raw) != 20:
        raise ValueError(f"{value!r} is not an address")
    return raw.rjust(32, b"\x00")


def trade_action(account: str, instrument: int, size_delta: int, price: int, fee: int,
                 reduces_im: bool = False) -> bytes:  # fmt: skip
    """Hash of a fill as seen by one side: ``size_delta`` > 0 buys, < 0 sells (1e18 units).

    ``reduces_im``: the engine judged that the fill lowers the account's portfolio initial margin
    (:func:`offchain.rules.reduces_im`); the Vault then asks only maintenance margin (issue 8, F-7).
    """
    return keccak(TRADE_TAG + _address(account) + _uint(instrument, 32) + _int(size_delta) + _uint(price)
                  + _uint(fee) + _uint(int(bool(reduces_im))))  # fmt: skip


def withdraw_action(account: str, token: str, amount: int) -> bytes:
    return keccak(WITHDRAW_TAG + _address(account) + _address(token) + _uint(amount))


BID_TAG = keccak(text="pmsim.action.bid")


def bid_action(bidder: str, account: str, version: int, fraction: int, worst_price: int) -> bytes:
    """Hash of a liquidation bid (``ActionHash.bid``): the auction of ``account`` at ``version``,
    ``fraction`` (WAD) of its portfolio, paying at most ``worst_price`` (negative: paid at least)."""
    return keccak(BID_TAG + _address(bidder) + _address(account) + _uint(version) + _uint(fraction) + _int(worst_price))
