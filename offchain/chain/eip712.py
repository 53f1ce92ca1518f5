"""EIP-712 digests and signatures that byte-match the contracts.

The struct hashes are computed directly (``keccak256(abi.encode(typehash, fields))``) for speed;
tests check them against eth-account's generic ``encode_typed_data`` and against the contracts'
own digest views. Signatures are low-s (coincurve through eth-keys) and 65 bytes ``r || s || v``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass
from functools import lru_cache
from typing import Any

import coincurve
import sha3
from eth_abi import encode
from eth_keys import keys
from eth_utils import keccak, to_checksum_address

from offchain.errors import SigningError

DOMAIN_TYPE = "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
ORDER_TYPE = (
    "Order(address account,address signer,uint32 instrument,bool isBuy,bool isMaker,uint128 size,"
    "uint128 limitPrice,uint64 nonce,uint64 deadline,uint64 grant)"
)
PRICE_ROUND_TYPE = "PriceRound(uint64 round,uint64 timestamp,uint256[] prices)"
ATTESTATION_TYPE = (
    "Attestation(address account,uint64 riskNonce,bytes32 actionHash,int256 marginEquity,int256 mtmEquity,"
    "uint256 initialMargin,uint256 maintenanceMargin,uint256 creditCheckpoint,bytes32 paramsHash,"
    "uint64 priceRound,uint64 issuedAt,uint64 expiry)"
)
DOMAIN_TYPEHASH = keccak(text=DOMAIN_TYPE)
ORDER_TYPEHASH = keccak(text=ORDER_TYPE)
PRICE_ROUND_TYPEHASH = keccak(text=PRICE_ROUND_TYPE)
ATTESTATION_TYPEHASH = keccak(text=ATTESTATION_TYPE)

ORDER_ABI = ["address", "address", "uint32", "bool", "bool", "uint128", "uint128", "uint64", "uint64", "uint64"]
ATTESTATION_ABI = [
    "address", "uint64", "bytes32", "int256", "int256", "uint256", "uint256", "uint256", "bytes32",
    "uint64", "uint64", "uint64",
]  # fmt: skip


def keccak256(data: bytes) -> bytes:
    """keccak256 of ``data`` (pysha3's C Keccak: about 2 µs, where ``eth_utils.keccak`` through
    pycryptodome's ctypes binding takes about 16 µs; the engine hashes three times per attestation)."""
    return bytes(sha3.keccak_256(data).digest())


# ``abi.encode`` of static types is one 32-byte word per value: packed directly on the attestation path
# (eth_abi's generic encoder cost more than the margin computation). Each checks its range as eth_abi does.
def abi_uint(value: int, bits: int = 256) -> bytes:
    """One ``uintN`` word. Raises ValueError out of range."""
    if not 0 <= value < 1 << bits:
        raise ValueError(f"{value} is not a uint{bits}")
    return value.to_bytes(32, "big")


def abi_int(value: int, bits: int = 256) -> bytes:
    """One ``intN`` word (two's complement). Raises ValueError out of range."""
    if not -(1 << (bits - 1)) <= value < 1 << (bits - 1):
        raise ValueError(f"{value} is not an int{bits}")
    return (value % (1 << 256)).to_bytes(32, "big")


def abi_address(value: str) -> bytes:
    """One ``address`` word from a hex address. Raises ValueError if not 20 bytes of hex."""
    raw = bytes.fromhex(value.removeprefix("0x"))
    if len(raw) != 20:
        raise ValueError(f"{value!r} is not an address")
    return raw.rjust(32, b"\x00")


def abi_bool(value: bool) -> bytes:
    """One ``bool`` word. Raises ValueError unless a bool."""
    if not isinstance(value, bool):
        raise ValueError(f"{value!r} is not a bool")
    return b"\x00" * 31 + (b"\x01" if value else b"\x00")


def abi_bytes32(value: bytes) -> bytes:
    """One ``bytes32`` word. Raises ValueError unless 32 bytes."""
    if not isinstance(value, bytes) or len(value) != 32:
        raise ValueError(f"{value!r} is not 32 bytes")
    return value


@lru_cache(maxsize=64)
def _separator(name: str, version: str, chain_id: int, verifying_contract: str) -> bytes:
    """The domain separator (memoised: every digest of a domain starts from it)."""
    fields = [DOMAIN_TYPEHASH, keccak(text=name), keccak(text=version), chain_id, verifying_contract]
    return keccak(encode(["bytes32", "bytes32", "bytes32", "uint256", "address"], fields))


EXCHANGE_DOMAIN = ("pmsim Exchange", "1")
PRICE_FEED_DOMAIN = ("pmsim PriceFeed", "1")
RISK_ORACLE_DOMAIN = ("pmsim RiskOracle", "1")


@dataclass(frozen=True)
class Domain:
    """An EIP-712 domain: (name, version, chain id, verifying contract)."""

    name: str
    version: str
    chain_id: int
    verifying_contract: str

    def separator(self) -> bytes:
        return _separator(self.name, self.version, self.chain_id, self.verifying_contract)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "chainId": self.chain_id,
            "verifyingContract": to_checksum_address(self.verifying_contract),
        }


@dataclass(frozen=True)
class Order:
    """A signed order (see ``IExchange``). Sizes and prices are integers scaled by 1e18.

    ``signer`` is the account itself or one of its operators; an operator names the version of its
    grant (``grant``, ``Exchange.operatorGrant``), and the order dies once that grant is revoked or
    re-granted. ``is_maker`` states the order's role: a trade pairs one maker order (its limit is the
    fill price) with one taker order, so the relayer chooses neither the price nor the fee payer.
    """

    account: str
    signer: str
    instrument: int
    is_buy: bool
    is_maker: bool
    size: int
    limit_price: int
    nonce: int
    deadline: int
    grant: int = 0

    @classmethod
    def own(cls, account: str, instrument: int, is_buy: bool, size: int, limit_price: int, nonce: int,
            deadline: int, *, maker: bool) -> Order:  # fmt: skip
        """An order the account signs itself."""
        return cls(account, account, instrument, is_buy, maker, size, limit_price, nonce, deadline)

    def struct_hash(self) -> bytes:
        """``keccak256(abi.encode(ORDER_TYPEHASH, fields))``, the words packed directly (byte for byte
        eth_abi's ``encode(["bytes32", *ORDER_ABI], ...)``, which the tests check; same range errors)."""
        return keccak256(ORDER_TYPEHASH + abi_address(self.account) + abi_address(self.signer)
                         + abi_uint(self.instrument, 32) + abi_bool(self.is_buy) + abi_bool(self.is_maker)
                         + abi_uint(self.size, 128) + abi_uint(self.limit_price, 128) + abi_uint(self.nonce, 64)
                         + abi_uint(self.deadline, 64) + abi_uint(self.grant, 64))  # fmt: skip

    def as_tuple(self) -> tuple[Any, ...]:
        return astuple(self)


@dataclass(frozen=True)
class PriceRound:
    """A price round: one price per underlying (1e18 scale)."""

    round: int
    timestamp: int
    prices: tuple[int, ...]

    def struct_hash(self) -> bytes:
        prices_hash = keccak(b"".join(p.to_bytes(32, "big") for p in self.prices))
        fields = [PRICE_ROUND_TYPEHASH, self.round, self.timestamp, prices_hash]
        return keccak(encode(["bytes32", "uint64", "uint64", "bytes32"], fields))


@dataclass(frozen=True)
class Attestation:
    """A margin attestation (see ``IRiskOracle``); amounts in quote units (6 decimals)."""

    account: str
    risk_nonce: int
    action_hash: bytes
    margin_equity: int
    mtm_equity: int
    initial_margin: int
    maintenance_margin: int
    credit_checkpoint: int
    params_hash: bytes
    price_round: int
    issued_at: int
    expiry: int

    def struct_hash(self) -> bytes:
        """``keccak256(abi.encode(ATTESTATION_TYPEHASH, fields))``, the words packed directly (byte for
        byte eth_abi's ``encode(ATTESTATION_ABI, ...)``, which the tests check; same range errors)."""
        return keccak256(ATTESTATION_TYPEHASH + abi_address(self.account) + abi_uint(self.risk_nonce, 64)
                         + abi_bytes32(self.action_hash) + abi_int(self.margin_equity) + abi_int(self.mtm_equity)
                         + abi_uint(self.initial_margin) + abi_uint(self.maintenance_margin)
                         + abi_uint(self.credit_checkpoint) + abi_bytes32(self.params_hash)
                         + abi_uint(self.price_round, 64) + abi_uint(self.issued_at, 64)
                         + abi_uint(self.expiry, 64))  # fmt: skip

    def as_tuple(self) -> tuple[Any, ...]:
        return astuple(self)


def digest(domain: Domain, struct_hash: bytes) -> bytes:
    """``keccak256(0x1901 || domainSeparator || structHash)``."""
    return keccak256(b"\x19\x01" + domain.separator() + struct_hash)


class Signer:
    """A secp256k1 key that signs EIP-712 digests (low-s, ``v`` in {27, 28})."""

    def __init__(self, private_key: str | bytes) -> None:
        try:
            raw = bytes.fromhex(private_key.removeprefix("0x")) if isinstance(private_key, str) else private_key
            self._key = keys.PrivateKey(raw)
        except (ValueError, TypeError) as exc:
            raise SigningError(f"private_key: not a valid secp256k1 key ({exc})") from exc
        self.address: str = str(self._key.public_key.to_checksum_address())
        self._fast = coincurve.PrivateKey(raw)  # the same libsecp256k1 signature, without eth-keys' objects

    def sign(self, message_hash: bytes) -> bytes:
        """``r || s || v`` of ``message_hash`` (RFC 6979 nonce, low-s, ``v`` in {27, 28}): byte for byte
        eth-keys' ``sign_msg_hash`` (the tests check), through coincurve directly."""
        if len(message_hash) != 32:
            raise SigningError("message_hash: must be 32 bytes")
        sig = self._fast.sign_recoverable(message_hash, hasher=None)  # r || s || recovery id
        return sig[:64] + bytes([sig[64] + 27])

    def __repr__(self) -> str:
        return f"Signer({self.address})"


def quorum_signatures(message_hash: bytes, signers: Iterable[Signer]) -> bytes:
    """Signatures of every signer, concatenated in strictly increasing address order."""
    ordered = sorted(signers, key=lambda s: int(s.address, 16))
    addresses = [s.address for s in ordered]
    if len(set(addresses)) != len(addresses):
        raise SigningError("signers: duplicate signer")
    return b"".join(s.sign(message_hash) for s in ordered)


def sign_order(domain: Domain, order: Order, signer: Signer) -> bytes:
    return signer.sign(digest(domain, order.struct_hash()))


def sign_price_round(domain: Domain, pr: PriceRound, signers: Sequence[Signer]) -> bytes:
    return quorum_signatures(digest(domain, pr.struct_hash()), signers)


def sign_attestation(domain: Domain, att: Attestation, signers: Sequence[Signer]) -> bytes:
    return quorum_signatures(digest(domain, att.struct_hash()), signers)
