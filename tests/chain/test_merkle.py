"""Status Merkle trees: OpenZeppelin StandardMerkleTree compatibility, on-chain roots and proofs."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest
from eth_abi import encode
from eth_utils import keccak, to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from offchain.chain.eip712 import digest
from offchain.chain.merkle import (
    LEAF_ENCODING,
    StatusLeaf,
    StatusRoot,
    StatusTree,
    layout,
    leaf_hashes,
    merkle_root,
    verify,
)
from offchain.chain.params import OnchainParams
from offchain.errors import InputError
from tests.chain.conftest import ALICE, BOB
from tests.chain.harness import (
    USDC,
    Harness,
    key_addr,
    post_status_root,
    reverts,
    status_leaf,
    status_root,
)

U256 = 2**256 - 1
I256 = 2**255


def random_leaves(n: int, seed: int) -> list[StatusLeaf]:
    rng = random.Random(seed)
    return [
        StatusLeaf(
            to_checksum_address(rng.randbytes(20)), rng.randrange(2**64), rng.randrange(-I256, I256),
            rng.randrange(-(10**15), 10**15), rng.randrange(U256), rng.randrange(10**12), rng.randrange(10**12),
        )
        for _ in range(n)
    ]


def verify_on_chain(h: Harness, tree: StatusTree, leaf: StatusLeaf) -> tuple[int, int, int]:
    fn = h.p.oracle.functions.verifyStatus(
        leaf.as_tuple(), tree.proof(leaf.account), leaf.account, leaf.risk_nonce, leaf.credit_checkpoint
    )
    return tuple(h.p.call(fn))  # type: ignore[return-value]


# ---------------------------------------------------------------------- pure Python
def test_layout_matches_the_js_library_dump() -> None:
    """Golden vector: OpenZeppelin/merkle-tree test/dumps/standard-v1.sorted.1_0_6.json, leaves a..f
    of type ``string``: same root and the same tree index for every value."""
    hashes = [keccak(keccak(encode(["string"], [c]))) for c in "abcdef"]
    tree, indices = layout(hashes)
    assert tree[0].hex() == "6deb52b5da8fd108f79fab00341f38d2587896634c646ee52e49f845680a70c8"
    assert tree[5].hex() == "eba909cf4bb90c6922771d7f126ad0fd11dfde93f3937a196274e1ac20fd2f5b"
    assert indices == [8, 10, 7, 5, 9, 6]


def test_leaf_encoding_is_abi_encode() -> None:
    for leaf in random_leaves(20, seed=1):
        assert leaf.encode() == encode(list(LEAF_ENCODING), list(leaf.as_tuple()))


def test_out_of_range_fields_are_refused() -> None:
    (leaf,) = random_leaves(1, seed=2)
    for field, bad in (("risk_nonce", 2**64), ("margin_equity", I256), ("initial_margin", -1),
                       ("account", "0x1234")):  # fmt: skip
        with pytest.raises(InputError) as info:
            replace(leaf, **{field: bad}).hash()
        assert info.value.field == field


def columns(leaves: list[StatusLeaf]) -> list[list]:
    return [list(c) for c in zip(*(leaf.as_tuple() for leaf in leaves), strict=True)]


@pytest.mark.parametrize("n", [1, 2, 3, 64, 257])
def test_column_hashes_and_root_equal_the_tree(n: int) -> None:
    """The twin's path (leaf hashes from columns, the root alone) gives the tree's own hashes and root."""
    leaves = random_leaves(n, seed=n)
    assert leaf_hashes(*columns(leaves)) == [leaf.hash() for leaf in leaves]
    assert merkle_root(leaf_hashes(*columns(leaves))) == StatusTree.build(leaves).root


def test_column_hashes_refuse_what_the_leaf_refuses() -> None:
    leaves = random_leaves(3, seed=9)
    for field, bad in ((1, 2**64), (2, -I256 - 1), (3, I256), (4, -1), (5, 2**256), (6, -5)):
        cols = columns(leaves)
        cols[field][1] = bad
        name = list(StatusLeaf.__dataclass_fields__)[field]
        with pytest.raises(InputError):
            replace(leaves[1], **{name: bad}).encode()
        with pytest.raises(InputError):
            leaf_hashes(*cols)
    with pytest.raises(InputError):
        merkle_root([])


def test_single_leaf_tree_has_the_leaf_as_root_and_an_empty_proof() -> None:
    (leaf,) = random_leaves(1, seed=3)
    tree = StatusTree.build([leaf])
    assert tree.root == leaf.hash() and tree.proof(leaf.account) == []
    assert verify(tree.root, leaf, [])


def test_duplicate_accounts_and_empty_trees_are_refused() -> None:
    (leaf,) = random_leaves(1, seed=4)
    with pytest.raises(InputError, match="duplicate"):
        StatusTree.build([leaf, replace(leaf, risk_nonce=leaf.risk_nonce ^ 1)])
    with pytest.raises(InputError, match="at least one"):
        StatusTree.build([])


def test_dump_load_round_trip_gives_the_same_proofs() -> None:
    leaves = random_leaves(37, seed=5)
    tree = StatusTree.build(leaves)
    text = json.dumps(tree.dump())
    again = StatusTree.load(json.loads(text))
    assert again.root == tree.root and again.leaves == tree.leaves
    assert all(again.proof(leaf.account) == tree.proof(leaf.account) for leaf in leaves)
    assert json.loads(text)["values"][0]["value"][1] == str(leaves[0].risk_nonce)  # bigints as strings


def test_load_refuses_a_tampered_dump() -> None:
    data = StatusTree.build(random_leaves(5, seed=6)).dump()
    data["values"][2]["value"][2] = "1"
    with pytest.raises(InputError, match="does not hash"):
        StatusTree.load(data)
    data = StatusTree.build(random_leaves(5, seed=6)).dump()
    data["tree"][1] = "0x" + "00" * 32
    with pytest.raises(InputError, match="not the hash of its children"):
        StatusTree.load(data)


def test_a_large_tree_proves_its_leaves() -> None:
    """100,000 leaves (the size the keeper benchmark uses): sampled leaves prove against the root and
    a leaf from another position does not (its speed is measured by scripts/bench_keeper.py, not here)."""
    leaves = [StatusLeaf(f"0x{i + 1:040x}", i, -i, i, i, i, i) for i in range(100_000)]
    tree = StatusTree.build(leaves)
    for i in (0, 1, 77_777, 99_999):
        assert verify(tree.root, leaves[i], tree.proof(leaves[i].account))
    assert not verify(tree.root, leaves[3], tree.proof(leaves[4].account))


leaf_strategy = st.builds(
    StatusLeaf,
    st.binary(min_size=20, max_size=20).map(to_checksum_address),
    st.integers(0, 2**64 - 1),
    st.integers(-I256, I256 - 1),
    st.integers(-I256, I256 - 1),
    st.integers(0, U256),
    st.integers(0, U256),
    st.integers(0, U256),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(leaf_strategy, min_size=1, max_size=40, unique_by=lambda leaf: leaf.account.lower()))
def test_every_proof_verifies_and_no_other_leaf_does(leaves: list[StatusLeaf]) -> None:
    tree = StatusTree.build(leaves)
    for leaf in leaves:
        proof = tree.proof(leaf.account)
        assert verify(tree.root, leaf, proof)
        assert not verify(tree.root, replace(leaf, risk_nonce=(leaf.risk_nonce + 1) % 2**64), proof)


# ---------------------------------------------------------------------- against the contracts
@pytest.mark.chain
def test_leaf_hash_matches_the_contract(h: Harness) -> None:
    leaves = [*random_leaves(5, seed=7), StatusLeaf(key_addr(ALICE), 0, -1, -(2**255), 0, 0, 0)]
    probe, _ = h.probe()
    for leaf in leaves:
        assert bytes(probe.functions.leafHash(leaf.as_tuple()).call()) == leaf.hash()


@pytest.mark.chain
def test_root_digest_matches_the_contract(h: Harness) -> None:
    root = StatusRoot(7, keccak(b"root"), 3, 1_700_000_000, 1_700_000_100, keccak(b"params"))
    probe, domain = h.probe()
    expected = probe.functions.rootDigest(root.as_tuple()).call()
    assert bytes(expected) == digest(domain, root.struct_hash())


@pytest.mark.chain
@pytest.mark.parametrize("n", [1, 2, 3, 7, 100])
def test_posted_root_accepts_every_python_proof(h: Harness, n: int) -> None:
    leaves = random_leaves(n, seed=n)
    tree = StatusTree.build(leaves)
    post_status_root(h, status_root(h, tree.root))
    assert bytes(h.p.oracle.functions.statusRoot().call()) == tree.root
    for leaf in leaves:
        assert verify_on_chain(h, tree, leaf) == (leaf.margin_equity, leaf.initial_margin, leaf.maintenance_margin)


@pytest.mark.chain
def test_verify_status_rejects_a_tampered_leaf_and_a_wrong_nonce(h: Harness) -> None:
    leaves = random_leaves(7, seed=8)
    tree = StatusTree.build(leaves)
    post_status_root(h, status_root(h, tree.root))
    leaf = leaves[3]
    proof = tree.proof(leaf.account)
    oracle = h.p.oracle.functions
    tampered = replace(leaf, initial_margin=0)
    with reverts("RiskOracle_BadProof"):
        h.p.call(oracle.verifyStatus(tampered.as_tuple(), proof, leaf.account, leaf.risk_nonce, leaf.credit_checkpoint))
    with reverts("RiskOracle_StaleNonce"):
        h.p.call(oracle.verifyStatus(leaf.as_tuple(), proof, leaf.account, leaf.risk_nonce ^ 1, leaf.credit_checkpoint))


@pytest.mark.chain
def test_post_root_refusals(h: Harness) -> None:
    root = keccak(b"some root")
    post_status_root(h, status_root(h, root, round_=5))
    with reverts("RiskOracle_StaleRoot", 5, 5):
        post_status_root(h, status_root(h, root, round_=5))
    with reverts("RiskOracle_WrongParams"):
        post_status_root(h, status_root(h, root, round_=6, params_hash=keccak(b"other params")))
    now = h.now()
    with reverts("RiskOracle_Expired"):
        post_status_root(h, status_root(h, root, round_=6, issued_at=now - 60, expiry=now - 30))
    with reverts("SignerQuorum_TooFewSigners", 1, 2):
        post_status_root(h, status_root(h, root, round_=6), signers=h.risk_signers[:1])
    post_status_root(h, status_root(h, root, round_=6), signers=h.risk_signers[1:])


@pytest.mark.chain
def test_a_parameter_change_clears_the_root(h: Harness) -> None:
    leaves = random_leaves(3, seed=9)
    tree = StatusTree.build(leaves)
    post_status_root(h, status_root(h, tree.root))
    verify_on_chain(h, tree, leaves[0])
    h.send(h.p.params.functions.setParams(replace(OnchainParams(), maker_fee=3 * 10**14).as_tuple()))
    assert bytes(h.p.oracle.functions.statusRoot().call()) == b"\x00" * 32
    with reverts("RiskOracle_NoRoot"):
        verify_on_chain(h, tree, leaves[0])


@pytest.mark.chain
def test_withdraw_quote_with_status_checks_headroom(h: Harness) -> None:
    alice, bob = key_addr(ALICE), key_addr(BOB)
    for key in (ALICE, BOB):
        h.deposit(key, "USDC", 100_000 * USDC)
    h.fill(ALICE, BOB, h.ids["BTC-PERP"], 10**18, 55_000 * 10**18)  # Alice long one BTC perp
    leaf = status_leaf(h, alice, equity=100_000 * USDC, im=20_000 * USDC, mm=10_000 * USDC)
    others = random_leaves(6, seed=10)
    tree = StatusTree.build([*others, leaf, status_leaf(h, bob)])
    post_status_root(h, status_root(h, tree.root))
    vault = h.p.vault.functions
    cash = h.cash(alice)
    with reverts("Vault_InsufficientHeadroom", 100_000 * USDC, 80_000 * USDC + 1, 20_000 * USDC):
        h.send(vault.withdrawQuoteWithStatus(80_000 * USDC + 1, alice, leaf.as_tuple(), tree.proof(alice)), ALICE)
    h.send(vault.withdrawQuoteWithStatus(80_000 * USDC, alice, leaf.as_tuple(), tree.proof(alice)), ALICE)
    assert h.cash(alice) == cash - 80_000 * USDC
    assert h.positions(alice)  # the position is still open: the headroom check was what let it through
    with reverts("RiskOracle_StaleNonce"):  # the withdrawal bumped the nonce: the leaf is spent
        h.send(vault.withdrawQuoteWithStatus(USDC, alice, leaf.as_tuple(), tree.proof(alice)), ALICE)
