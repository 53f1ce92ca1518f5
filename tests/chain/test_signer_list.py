"""SignerQuorum.signers(): the list of registered signers, kept by addSigner/removeSigner, on both
quorum contracts (the RiskOracle inside the Vault, and the PriceFeed), with the storage packing of
the hot configuration unchanged."""

from __future__ import annotations

from typing import Any

from eth_utils import keccak, to_checksum_address

from tests.chain.harness import Harness, reverts, signer_from_seed

MAX_SIGNERS = 16  # contracts/libraries/Constants.sol


def _listed(contract: Any) -> list[str]:
    return [to_checksum_address(a) for a in contract.functions.signers().call()]


def _check(contract: Any, want: set[str]) -> None:
    listed = _listed(contract)
    assert len(listed) == len(set(listed)), f"duplicates in {listed}"
    assert set(listed) == want
    assert contract.functions.signerCount().call() == len(want)
    assert all(contract.functions.isSigner(a).call() for a in listed)


def test_signers_lists_the_deployed_sets(h: Harness) -> None:
    _check(h.p.oracle, {s.address for s in h.risk_signers})
    _check(h.p.feed, {s.address for s in h.price_signers})


def test_signers_follows_adds_and_removals_up_to_the_bound(h: Harness) -> None:
    """Removal of the middle, first and last entries (swap-and-pop), re-adding, and the MAX_SIGNERS bound."""
    for contract in (h.p.oracle, h.p.feed):
        fn = contract.functions
        h.send(fn.setQuorum(1))
        want = set(_listed(contract))
        extra = [signer_from_seed(f"signer-list-{i}").address for i in range(MAX_SIGNERS - len(want))]
        for a in extra:
            h.send(fn.addSigner(a))
            want.add(a)
            _check(contract, want)
        with reverts("SignerQuorum_TooManySigners"):
            h.send(fn.addSigner(signer_from_seed("one too many").address))
        _check(contract, want)
        listed = _listed(contract)
        for victim in (listed[len(listed) // 2], listed[0], listed[-1], extra[3]):
            h.send(fn.removeSigner(victim))
            want.discard(victim)
            _check(contract, want)
        with reverts("SignerQuorum_NotSigner", listed[0]):
            h.send(fn.removeSigner(listed[0]))
        h.send(fn.addSigner(listed[0]))
        want.add(listed[0])
        _check(contract, want)
        for a in list(want)[1:]:  # down to a single signer, the quorum of 1 still reachable
            h.send(fn.removeSigner(a))
            want.discard(a)
        _check(contract, want)


def test_signer_list_keeps_the_hot_slot_packed(h: Harness) -> None:
    """The list sits before the two bytes (signer count, quorum), which still share one slot with the
    RiskOracle's latest price round: the one-slot read that keeps a margin check cheap."""
    w3, vault = h.p.w3, h.p.vault.address
    count = h.p.oracle.functions.signerCount().call()
    quorum = h.p.oracle.functions.quorum().call()
    latest = h.p.oracle.functions.latestPriceRound().call()
    assert latest > 0

    def word(slot: int) -> int:
        return int.from_bytes(w3.eth.get_storage_at(vault, slot), "big")

    hot = count | quorum << 8 | latest << 16  # uint8 count, uint8 quorum, uint64 latestPriceRound
    packed = [s for s in range(64) if word(s) & (2**80 - 1) == hot]
    assert len(packed) == 1, packed
    array_slot = packed[0] - 1
    assert word(array_slot) == count  # the array's length
    first = w3.eth.get_storage_at(vault, int.from_bytes(keccak(array_slot.to_bytes(32, "big")), "big"))
    assert to_checksum_address(first[-20:]) == _listed(h.p.oracle)[0]
