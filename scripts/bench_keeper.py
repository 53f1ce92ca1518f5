"""Keeper speed on a 10,000-account root: seeing the root -> verified, prioritised candidates, and
-> its first transaction sent.

    .venv/bin/python scripts/bench_keeper.py [--accounts 10000] [--breached 8] [--repeat 5] [--seed 7]

A fresh Anvil and the devnet deployment; a status root of ``--accounts`` synthetic leaves (random
addresses from a seeded generator, ``--breached`` of them below maintenance margin) signed by the
dev risk signers and posted on chain; its document published as the engine publishes it. Measured
in the keeper, per repeat (median reported):

* ``detect_ms``: read ``rootRound``/``statusRoot`` -> read the document -> rebuild the tree and check
  every node and leaf against the on-chain root -> breached leaves -> their on-chain deposit credit
  and risk nonce in one batch -> ordered by shortfall (:meth:`Keeper.refresh_round`);
* ``send_ms``: the same, then the first ``start`` re-checked by ``eth_call`` of the exact
  transaction, gas estimated, signed, persisted and broadcast (first repeat only: a start is sent
  once per account), with ``blocks_before_send`` (0: sent before the next block).

Plain reference in the same run: parse the leaves, build the tree, and verify each leaf's own Merkle
proof against the on-chain root one by one (O(n log n) hashes), then filter and sort. The last line
is JSON with ``accounts``, ``detect_ms``, ``send_ms``, ``reference_ms`` and ``ratio`` (reference / detect).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from offchain import rules
from offchain.chain.anvil import DEFAULT_KEYS, start_anvil
from offchain.chain.client import connect
from offchain.chain.devnet import Devnet, bootstrap
from offchain.chain.merkle import StatusLeaf, StatusRoot, StatusTree, sign_status_root, verify
from offchain.keeper.attest import NoAttestor
from offchain.keeper.bot import Keeper
from offchain.keeper.config import KeeperConfig

GENESIS = 1_767_225_600
USDC = 10**6


def synthetic_leaves(n: int, breached: int, rng: np.random.Generator) -> list[StatusLeaf]:
    """``n`` accounts at risk nonce 0 and no deposit credit (fresh addresses: valid on chain as they
    are); the first ``breached`` are below maintenance margin by growing shortfalls."""
    raw = rng.integers(0, 256, size=(n, 20), dtype=np.uint8)
    leaves = []
    for i in range(n):
        account = "0x" + raw[i].tobytes().hex()
        mm = int(rng.integers(1_000, 100_000)) * USDC
        equity = mm - (i + 1) * 100 * USDC if i < breached else mm + int(rng.integers(1, 50_000)) * USDC
        leaves.append(StatusLeaf(account, 0, equity, equity, mm * 5 // 4, mm, 0))
    return leaves


def reference(doc: dict[str, Any], onchain_root: bytes) -> list[StatusLeaf]:
    """Naive: rebuild, then verify each leaf's own proof against the on-chain root, filter, sort."""
    leaves = [StatusLeaf.from_json(v["value"]) for v in doc["tree"]["values"]]
    tree = StatusTree.build(leaves)
    for leaf in leaves:
        if not verify(onchain_root, leaf, tree.proof(leaf.account)):
            raise SystemExit(f"proof of {leaf.account} does not verify")
    low = [x for x in leaves if rules.liquidatable(x.margin_equity, x.maintenance_margin, x.credit_checkpoint,
                                                   x.credit_checkpoint)]  # fmt: skip
    return sorted(low, key=lambda x: x.margin_equity - x.maintenance_margin)


def post(dev: Devnet, root: StatusRoot) -> None:
    p = dev.protocol
    sigs = sign_status_root(p.domain("RiskOracle"), root, dev.risk_signers[:2])
    p.send(p.oracle.functions.postRoot(root.as_tuple(), sigs), DEFAULT_KEYS[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument("--breached", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    with start_anvil(timestamp=GENESIS) as node, tempfile.TemporaryDirectory() as tmp:
        dev = bootstrap(connect(node.url), DEFAULT_KEYS[0], rpc_url=node.url)
        p = dev.protocol
        leaves = synthetic_leaves(args.accounts, args.breached, rng)
        tree = StatusTree.build(leaves)
        now = p.now()
        root = StatusRoot(1, tree.root, int(p.feed.functions.latestRound().call()[0]), now, now + 300,
                          bytes(p.oracle.functions.paramsHash().call()))  # fmt: skip
        post(dev, root)
        rounds = Path(tmp) / "rounds"
        rounds.mkdir()
        doc = {"round": 1, "block": p.w3.eth.block_number,
               "root": {"round": 1, "root": "0x" + tree.root.hex(), "priceRound": root.price_round,
                        "issuedAt": root.issued_at, "expiry": root.expiry, "paramsHash": "0x" + root.params_hash.hex()},
               "tree": tree.dump()}  # fmt: skip
        (rounds / "1.json").write_text(json.dumps(doc))
        cfg = KeeperConfig(engine_url=None, rounds_dir=rounds, state_file=Path(tmp) / "pending.json",
                           health_port=None).validate()  # fmt: skip
        k = Keeper(p, DEFAULT_KEYS[3], cfg, NoAttestor())
        k.step()  # warm-up: connections, ABI caches (starts every breached account: sends are timed below)
        detect, ref, send_ms, blocks = [], [], 0.0, -1
        for _ in range(args.repeat + 1):
            k.round = None  # "sees" the root afresh
            t0 = time.perf_counter()
            k.refresh_round()
            detect.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            ref_low = reference(json.loads((rounds / "1.json").read_text()), tree.root)
            ref.append((time.perf_counter() - t0) * 1000)
            assert {x.account.lower() for x in ref_low} >= {c.account.lower() for c in k.candidates}
        # first send: a second root with fresh breached accounts, seen and started from scratch
        more = synthetic_leaves(args.accounts, args.breached, np.random.default_rng(args.seed + 1))
        tree2 = StatusTree.build(more)
        now = p.now()
        root2 = StatusRoot(2, tree2.root, root.price_round, now, now + 300, root.params_hash)
        post(dev, root2)
        doc2 = {**doc, "round": 2, "root": {**doc["root"], "round": 2, "root": "0x" + tree2.root.hex()},
                "tree": tree2.dump()}
        (rounds / "2.json").write_text(json.dumps(doc2))
        sent: list[float] = []
        first_tx: list[str] = []
        orig = k.tx.send

        def timed(*a: Any, **kw: Any) -> Any:
            out = orig(*a, **kw)
            if not sent:
                sent.append(time.perf_counter())
                first_tx.append(out.tx_hash)
            return out

        k.tx.send = timed  # type: ignore[method-assign]
        head = p.w3.eth.block_number
        t0 = time.perf_counter()
        k.refresh_round()
        k._start_auctions()
        send_ms = (sent[0] - t0) * 1000 if sent else float("nan")
        if first_tx:
            rc = p.w3.eth.wait_for_transaction_receipt(first_tx[0])  # type: ignore[arg-type]
            blocks = int(rc["blockNumber"]) - head - 1  # 0: mined in the very next block
        d, r = statistics.median(detect[1:]), statistics.median(ref[1:])
        print(f"accounts           {args.accounts:,} ({args.breached} breached)")
        print(f"detect (keeper)    median {d:8.1f} ms  (min {min(detect[1:]):.1f}, max {max(detect[1:]):.1f})")
        print(f"reference (naive)  median {r:8.1f} ms  (per-leaf proof verification)")
        print(f"first tx sent      {send_ms:8.1f} ms after seeing the root; mined {blocks} block(s) after the next one")
        print(json.dumps({"accounts": args.accounts, "breached": args.breached, "detect_ms": round(d, 1),
                          "send_ms": round(send_ms, 1), "reference_ms": round(r, 1), "ratio": round(r / d, 2),
                          "blocks_before_mined": blocks}))  # fmt: skip


if __name__ == "__main__":
    main()
