"""Candidates from the latest posted root: fetch the round's published tree, check it against the
on-chain ``statusRoot()``, and order the accounts below maintenance margin by shortfall.

Trust nothing that can be checked: the tree is rebuilt from its leaves (every leaf hash and every
internal node, :meth:`StatusTree.load`) and its root must equal the root on chain, which proves the
proof of every leaf at once in O(n) hashes; each proof sent in a transaction is verified again
against the on-chain root just before use (:func:`offchain.chain.merkle.verify`).
"""

from __future__ import annotations

import heapq
import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from eth_utils import to_checksum_address

from offchain import rules
from offchain.chain.merkle import StatusLeaf, StatusTree
from offchain.errors import ChainError, InputError, PmsimError

log = logging.getLogger(__name__)


class RootMismatch(PmsimError):
    """The published tree's root is not the root on chain (a wrong, stale or forged document)."""


@dataclass(frozen=True)
class Round:
    """A verified round: its number, on-chain root, issue time and tree."""

    number: int
    root: bytes
    issued_at: int
    tree: StatusTree
    block: int | None = None  # the block the engine computed it at (``"block"`` of the document)


@dataclass(order=True)
class Candidate:
    """An account below maintenance margin in the latest root; ordered by shortfall, largest first.

    ``shortfall = MM − credited equity`` (quote units), the credit being the account's deposit credit
    on chain (``rules.credited_equity``).
    """

    sort_key: tuple[int, str] = field(repr=False)
    account: str = field(compare=False)
    leaf: StatusLeaf = field(compare=False)
    shortfall: int = field(compare=False)
    breach_time: int = field(compare=False)  # chain time of the root that first showed the breach


class RoundSource:
    """Where the published rounds come from: the engine's ``GET /round/latest`` or a rounds directory
    (``<state_dir>/rounds/<n>.json`` of an engine)."""

    def __init__(self, engine_url: str | None = None, rounds_dir: Path | None = None, timeout: float = 10.0) -> None:
        if engine_url is None and rounds_dir is None:
            raise InputError("engine_url", "give an engine URL or a rounds directory")
        self.engine_url = engine_url.rstrip("/") if engine_url else None
        self.rounds_dir = rounds_dir
        self.timeout = timeout

    def fetch(self, number: int) -> dict[str, Any] | None:
        """The document of round ``number``, or None when it is not published (yet)."""
        if self.rounds_dir is not None:
            path = self.rounds_dir / f"{number}.json"
            if path.exists():
                doc: dict[str, Any] = json.loads(path.read_text())
                return doc
            if self.engine_url is None:
                return None
        try:
            with urllib.request.urlopen(f"{self.engine_url}/round/latest", timeout=self.timeout) as resp:
                doc = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 400:  # "no round posted by this engine yet"
                return None
            raise ChainError(f"engine answered {exc.code} for /round/latest") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ChainError(f"engine unreachable: {exc}") from None
        return doc if int(doc.get("round", -1)) == number else None


def load_round(doc: dict[str, Any], onchain_root: bytes, number: int) -> Round:
    """Rebuild and check a round document against the on-chain root.

    Raises
    ------
    InputError
        The document is malformed or its tree is inconsistent (a node not the hash of its children,
        a leaf not hashing to its slot).
    RootMismatch
        The tree is consistent but its root is not the one on chain.
    """
    tree = StatusTree.load(doc["tree"])
    if tree.root != onchain_root:
        raise RootMismatch(f"round {number}: published root 0x{tree.root.hex()} != on-chain 0x{onchain_root.hex()}")
    issued = int(doc.get("root", {}).get("issuedAt", 0))
    block = doc.get("block")
    return Round(number, onchain_root, issued, tree, int(block) if isinstance(block, int) else None)


def breached(tree: StatusTree) -> list[StatusLeaf]:
    """Leaves below maintenance margin at their own checkpoint (``rules.liquidatable`` with no deposit
    since). Deposits only raise equity, so no other leaf can be liquidatable."""
    return [leaf for leaf in tree.leaves
            if rules.liquidatable(leaf.margin_equity, leaf.maintenance_margin, leaf.credit_checkpoint,
                                  leaf.credit_checkpoint)]  # fmt: skip


def prioritise(leaves: list[StatusLeaf], credits: dict[str, int], nonces: dict[str, int],
               breach_times: dict[str, int], now_issued: int) -> list[Candidate]:  # fmt: skip
    """Candidates still liquidatable with the on-chain deposit credit and at the leaf's risk nonce,
    largest shortfall first (ties by address)."""
    out: list[Candidate] = []
    for leaf in leaves:
        key = leaf.account.lower()
        credit = credits[key]
        if nonces[key] != leaf.risk_nonce:
            continue  # traded, liquidated or withdrew since: this leaf can no longer start an auction
        if not rules.liquidatable(leaf.margin_equity, leaf.maintenance_margin, leaf.credit_checkpoint, credit):
            continue
        equity = rules.credited_equity(leaf.margin_equity, leaf.credit_checkpoint, credit)
        shortfall = leaf.maintenance_margin - equity
        when = breach_times.setdefault(key, now_issued)
        account = str(to_checksum_address(leaf.account))  # leaves may carry any case; web3 wants checksums
        out.append(Candidate((-shortfall, key), account, replace(leaf, account=account), shortfall, when))
    heapq.heapify(out)
    return [heapq.heappop(out) for _ in range(len(out))]
