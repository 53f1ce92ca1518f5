"""Status Merkle trees, byte-compatible with OpenZeppelin's ``StandardMerkleTree``.

The risk engine publishes one tree of :class:`StatusLeaf` values per round and signs its root
(EIP-712 type ``StatusRoot``); anyone holding the published leaves (the :meth:`StatusTree.dump`
JSON, the format of the JS library's ``tree.dump()``) rebuilds the same tree and proofs, which
``RiskOracle.verifyStatus`` checks with OpenZeppelin's ``MerkleProof.verifyCalldata``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import astuple, dataclass, field
from typing import Any

from eth_abi import encode
from eth_utils import keccak

from offchain.chain.eip712 import Domain, Signer, digest, quorum_signatures
from offchain.errors import InputError

__all__ = [
    "LEAF_ENCODING",
    "STATUS_ROOT_TYPE",
    "STATUS_ROOT_TYPEHASH",
    "StatusLeaf",
    "StatusRoot",
    "StatusTree",
    "hash_pair",
    "layout",
    "leaf_hashes",
    "merkle_root",
    "sign_status_root",
    "verify",
]

LEAF_ENCODING = ("address", "uint64", "int256", "int256", "uint256", "uint256", "uint256")
DUMP_FORMAT = "standard-v1"
STATUS_ROOT_TYPE = (
    "StatusRoot(uint64 round,bytes32 root,uint64 priceRound,uint64 issuedAt,uint64 expiry,bytes32 paramsHash)"
)
STATUS_ROOT_TYPEHASH = keccak(text=STATUS_ROOT_TYPE)
STATUS_ROOT_ABI = ("uint64", "bytes32", "uint64", "uint64", "uint64", "bytes32")

_U64 = 1 << 64
_U256 = 1 << 256
_I256 = 1 << 255
_PAD12 = b"\x00" * 12


def _fast_keccak() -> Callable[[bytes], bytes]:
    """eth-hash's pysha3 backend when installed (about 3x faster than pycryptodome), else auto."""
    try:
        from eth_hash.backends import pysha3

        return pysha3.keccak256
    except ImportError:  # pragma: no cover - depends on the environment
        from eth_hash.auto import keccak as auto

        return auto


_keccak = _fast_keccak()


# ---------------------------------------------------------------------- leaves
def _uint_word(v: int, bound: int, name: str) -> bytes:
    if not 0 <= v < bound:
        raise InputError(name, f"{v} is out of range for uint{bound.bit_length() - 1}")
    return v.to_bytes(32, "big")


def _int_word(v: int, name: str) -> bytes:
    if not -_I256 <= v < _I256:
        raise InputError(name, f"{v} is out of range for int256")
    return v.to_bytes(32, "big", signed=True)


def _address_word(account: str) -> bytes:
    try:
        raw = bytes.fromhex(account.removeprefix("0x"))
    except ValueError:
        raw = b""
    if len(raw) != 20:
        raise InputError("account", f"{account!r} is not a 20-byte hex address")
    return _PAD12 + raw


@dataclass(frozen=True)
class StatusLeaf:
    """An account's status result (``Types.sol`` ``StatusLeaf``); amounts in quote units.

    Notes
    -----
    The leaf hash is OpenZeppelin's ``StandardMerkleTree`` one:
    ``keccak256(keccak256(abi.encode(account, riskNonce, marginEquity, mtmEquity, initialMargin,
    maintenanceMargin, creditCheckpoint)))``; the encoding is packed by hand (seven 32-byte words).
    """

    account: str
    risk_nonce: int
    margin_equity: int
    mtm_equity: int
    initial_margin: int
    maintenance_margin: int
    credit_checkpoint: int

    def as_tuple(self) -> tuple[Any, ...]:
        """The struct as a tuple, in ABI order (what web3 passes for a ``StatusLeaf``)."""
        return astuple(self)

    def encode(self) -> bytes:
        """``abi.encode`` of the seven fields; raises :class:`InputError` for out-of-range values."""
        return b"".join((
            _address_word(self.account),
            _uint_word(self.risk_nonce, _U64, "risk_nonce"),
            _int_word(self.margin_equity, "margin_equity"),
            _int_word(self.mtm_equity, "mtm_equity"),
            _uint_word(self.initial_margin, _U256, "initial_margin"),
            _uint_word(self.maintenance_margin, _U256, "maintenance_margin"),
            _uint_word(self.credit_checkpoint, _U256, "credit_checkpoint"),
        ))  # fmt: skip

    def hash(self) -> bytes:
        """The double-hashed leaf: ``keccak256(bytes.concat(keccak256(abi.encode(leaf))))``."""
        return _keccak(_keccak(self.encode()))

    def to_json(self) -> list[str]:
        """The leaf as a JS-library dump value: the address as given, integers as decimal strings."""
        return [self.account, *map(str, self._numbers())]

    def _numbers(self) -> tuple[int, ...]:
        return (self.risk_nonce, self.margin_equity, self.mtm_equity, self.initial_margin,
                self.maintenance_margin, self.credit_checkpoint)  # fmt: skip

    @classmethod
    def from_json(cls, value: Sequence[Any]) -> StatusLeaf:
        """Parse a dump value (integers as numbers, decimal or ``0x`` strings)."""
        if len(value) != len(LEAF_ENCODING):
            raise InputError("values", f"a leaf has {len(LEAF_ENCODING)} fields, got {len(value)}")
        return cls(str(value[0]), *(_parse_int(v) for v in value[1:]))


def _parse_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int | str):
        raise InputError("values", f"{v!r} is not an integer")
    try:
        return v if isinstance(v, int) else int(v, 0)
    except ValueError as exc:
        raise InputError("values", f"{v!r} is not an integer") from exc


def leaf_hashes(accounts: Sequence[str], nonces: Sequence[int], margin_equity: Sequence[int],
                mtm_equity: Sequence[int], initial_margin: Sequence[int], maintenance_margin: Sequence[int],
                credit_checkpoint: Sequence[int]) -> list[bytes]:  # fmt: skip
    """``[StatusLeaf(*row).hash() for row in zip(columns)]`` without building the leaves: the same
    seven-word encoding and range checks (columns of Python ints), for a whole round at once."""
    checks = ((nonces, 0, _U64, "risk_nonce"), (margin_equity, -_I256, _I256, "margin_equity"),
              (mtm_equity, -_I256, _I256, "mtm_equity"), (initial_margin, 0, _U256, "initial_margin"),
              (maintenance_margin, 0, _U256, "maintenance_margin"),
              (credit_checkpoint, 0, _U256, "credit_checkpoint"))  # fmt: skip
    for column, low, high, name in checks:
        if len(column) != len(accounts):
            raise InputError(name, f"{len(column)} values for {len(accounts)} accounts")
        if column and not (low <= min(column) and max(column) < high):
            bad = next(v for v in column if not low <= v < high)
            raise InputError(name, f"{bad} is out of range")
    k = _keccak
    return [k(k(b"".join((_address_word(a), n.to_bytes(32, "big"), e.to_bytes(32, "big", signed=True),
                          m.to_bytes(32, "big", signed=True), i.to_bytes(32, "big"), mm.to_bytes(32, "big"),
                          c.to_bytes(32, "big")))))
            for a, n, e, m, i, mm, c in zip(accounts, nonces, margin_equity, mtm_equity, initial_margin,
                                              maintenance_margin, credit_checkpoint, strict=True)]  # fmt: skip


# ---------------------------------------------------------------------- tree
def merkle_root(hashes: Sequence[bytes]) -> bytes:
    """The root :meth:`StatusTree.build` gives for leaves with these hashes (``StatusTree.root``)."""
    if not hashes:
        raise InputError("leaves", "a status tree needs at least one leaf")
    return _make_tree(sorted(hashes))[0]


def hash_pair(a: bytes, b: bytes) -> bytes:
    """An internal node: keccak256 of the two children in ascending byte order (OZ ``_hashPair``)."""
    return _keccak(a + b) if a < b else _keccak(b + a)


def _make_tree(leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """OZ's ``makeMerkleTree``: leaves stored from the end of a ``2n - 1`` array, in reverse."""
    n = len(leaf_hashes)
    tree = [b""] * (2 * n - 1)
    tree[n - 1 :] = leaf_hashes[::-1]
    for i in range(n - 2, -1, -1):
        tree[i] = hash_pair(tree[2 * i + 1], tree[2 * i + 2])
    return tree


def layout(leaf_hashes: Sequence[bytes]) -> tuple[list[bytes], list[int]]:
    """``StandardMerkleTree.of`` for any leaf hashes (sorted): the tree and each leaf's tree index.

    Parameters
    ----------
    leaf_hashes : sequence of bytes
        The values' leaf hashes, in the values' order.

    Returns
    -------
    tree : list of bytes
        The node array (root first).
    indices : list of int
        ``indices[i]`` is where ``leaf_hashes[i]`` sits in ``tree``.
    """
    order = sorted(range(len(leaf_hashes)), key=leaf_hashes.__getitem__)
    tree = _make_tree([leaf_hashes[i] for i in order])
    indices = [0] * len(leaf_hashes)
    for position, value_index in enumerate(order):
        indices[value_index] = len(tree) - 1 - position
    return tree, indices


def _path(tree: Sequence[bytes], index: int) -> list[bytes]:
    """OZ's ``getProof``: the siblings from ``index`` up to the root."""
    proof = []
    while index > 0:
        proof.append(tree[index + 1 if index % 2 else index - 1])
        index = (index - 1) // 2
    return proof


def verify(root: bytes, leaf: StatusLeaf, proof: Iterable[bytes]) -> bool:
    """True when ``proof`` links ``leaf`` to ``root`` (OZ ``MerkleProof.verify``)."""
    node = leaf.hash()
    for sibling in proof:
        node = hash_pair(node, sibling)
    return node == root


@dataclass(frozen=True)
class StatusTree:
    """One round's status tree, laid out exactly as the JS ``StandardMerkleTree.of(values, enc)``.

    Attributes
    ----------
    tree : tuple of bytes
        The complete binary tree as an array: root at 0, children of ``i`` at ``2i + 1, 2i + 2``,
        leaves (sorted by hash) at the end in reverse order.
    leaves : tuple of StatusLeaf
        The values in the order they were given.
    tree_indices : tuple of int
        Where each value's hash sits in ``tree``.
    """

    tree: tuple[bytes, ...]
    leaves: tuple[StatusLeaf, ...]
    tree_indices: tuple[int, ...]
    _by_account: dict[str, int] = field(repr=False, compare=False)

    @classmethod
    def build(cls, leaves: Iterable[StatusLeaf]) -> StatusTree:
        """Hash, sort and assemble the tree; one leaf per account, at least one leaf."""
        values = tuple(leaves)
        if not values:
            raise InputError("leaves", "a status tree needs at least one leaf")
        tree, indices = layout([leaf.hash() for leaf in values])
        return cls(tuple(tree), values, tuple(indices), _account_index(values))

    @property
    def root(self) -> bytes:
        return self.tree[0]

    def index_of(self, account: str) -> int:
        """Position of ``account``'s leaf in :attr:`leaves`."""
        try:
            return self._by_account[account.lower()]
        except KeyError:
            raise InputError("account", f"{account} has no leaf in this tree") from None

    def leaf(self, account: str) -> StatusLeaf:
        return self.leaves[self.index_of(account)]

    def proof(self, account: str) -> list[bytes]:
        """The Merkle proof of ``account``'s leaf, as ``getProof`` of the JS library returns it."""
        return _path(self.tree, self.tree_indices[self.index_of(account)])

    # ------------------------------------------------------------------ JSON (JS ``dump``/``load``)
    def dump(self) -> dict[str, Any]:
        """The JS library's ``tree.dump()`` object (``format: "standard-v1"``)."""
        return {
            "format": DUMP_FORMAT,
            "leafEncoding": list(LEAF_ENCODING),
            "tree": ["0x" + node.hex() for node in self.tree],
            "values": [
                {"value": leaf.to_json(), "treeIndex": index}
                for leaf, index in zip(self.leaves, self.tree_indices, strict=True)
            ],
        }

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> StatusTree:
        """Rebuild a tree from a dump and check it: every leaf hash and every internal node."""
        if data.get("format") != DUMP_FORMAT:
            raise InputError("format", f"expected {DUMP_FORMAT!r}, got {data.get('format')!r}")
        if list(data.get("leafEncoding", ())) != list(LEAF_ENCODING):
            raise InputError("leafEncoding", f"expected {list(LEAF_ENCODING)}")
        tree = tuple(_parse_node(node) for node in data.get("tree", ()))
        leaves = tuple(StatusLeaf.from_json(v["value"]) for v in data.get("values", ()))
        indices = tuple(int(v["treeIndex"]) for v in data.get("values", ()))
        _check_dump(tree, leaves, indices)
        return cls(tree, leaves, indices, _account_index(leaves))


def _account_index(leaves: Sequence[StatusLeaf]) -> dict[str, int]:
    index: dict[str, int] = {}
    for i, leaf in enumerate(leaves):
        key = leaf.account.lower()
        if key in index:
            raise InputError("leaves", f"duplicate leaf for account {leaf.account}")
        index[key] = i
    return index


def _parse_node(node: Any) -> bytes:
    raw = bytes.fromhex(str(node).removeprefix("0x")) if isinstance(node, str) else b""
    if len(raw) != 32:
        raise InputError("tree", f"{node!r} is not a 32-byte hex node")
    return raw


def _check_dump(tree: Sequence[bytes], leaves: Sequence[StatusLeaf], indices: Sequence[int]) -> None:
    """The JS library's ``validate()``: a well-formed tree whose leaves hash to their values."""
    n = len(leaves)
    if n == 0 or len(tree) != 2 * n - 1:
        raise InputError("tree", f"{len(tree)} nodes do not fit {n} values")
    for i in range(n - 1):
        if tree[i] != hash_pair(tree[2 * i + 1], tree[2 * i + 2]):
            raise InputError("tree", f"node {i} is not the hash of its children")
    if sorted(indices) != list(range(n - 1, 2 * n - 1)):
        raise InputError("values", "tree indices do not cover the leaves exactly once")
    for leaf, index in zip(leaves, indices, strict=True):
        if tree[index] != leaf.hash():
            raise InputError("values", f"leaf of {leaf.account} does not hash to tree[{index}]")


# ---------------------------------------------------------------------- signed root (EIP-712)
@dataclass(frozen=True)
class StatusRoot:
    """A round's signed root (``Types.sol`` ``StatusRoot``), as ``RiskOracle.postRoot`` takes it."""

    round: int
    root: bytes
    price_round: int
    issued_at: int
    expiry: int
    params_hash: bytes

    def struct_hash(self) -> bytes:
        return keccak(encode(["bytes32", *STATUS_ROOT_ABI], [STATUS_ROOT_TYPEHASH, *astuple(self)]))

    def as_tuple(self) -> tuple[Any, ...]:
        return astuple(self)


def sign_status_root(domain: Domain, root: StatusRoot, signers: Sequence[Signer]) -> bytes:
    """The quorum's signatures of ``root`` under the RiskOracle domain, in address order."""
    return quorum_signatures(digest(domain, root.struct_hash()), signers)
