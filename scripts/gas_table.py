"""Gas table of the margin check: marginal cost per check and whole transactions by portfolio size.

    .venv/bin/python scripts/gas_table.py             # table, then one JSON line (operation -> gas)
    .venv/bin/python scripts/gas_table.py --check     # exit 1 if any figure rose > 5 % over gas/snapshot.json
    .venv/bin/python scripts/gas_table.py --update    # rewrite gas/snapshot.json with the new figures

Marginal figures come from ``contracts/mocks/VaultGasProbe.sol``, the Vault plus two probes: the
bench deploys it as the protocol's Vault, and each probe runs the very internal check a withdrawal or
a trade side runs (the RiskOracle is a module of the Vault) and returns its gas, measured with
``gasleft()`` inside an ``eth_call`` from the account with its real risk nonce and deposit credit,
so storage is cold as in an action's first check. Whole-transaction figures are receipts' gasUsed,
each taken from the same chain state (a snapshot reverted afterwards), for an account that already
holds 1, 16 or 64 option positions.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eth_utils import keccak  # noqa: E402
from web3.contract import Contract  # noqa: E402
from web3.types import TxReceipt  # noqa: E402

from offchain.chain.actions import bid_action, withdraw_action  # noqa: E402
from offchain.chain.anvil import DEFAULT_KEYS, start_anvil  # noqa: E402
from offchain.chain.client import Protocol, connect  # noqa: E402
from offchain.chain.deploy import InstrumentSpec, list_instruments  # noqa: E402
from offchain.chain.devnet import DAY, bootstrap  # noqa: E402
from offchain.chain.eip712 import Signer  # noqa: E402
from offchain.chain.merkle import StatusLeaf, StatusTree  # noqa: E402
from offchain.chain.params import LiquidationParams  # noqa: E402
from offchain.chain.units import Kind  # noqa: E402
from offchain.protocol import WAD  # noqa: E402
from tests.chain.harness import USDC, Harness, key_addr, post_status_root, status_leaf, status_root  # noqa: E402

DEPLOYER, ALICE, BOB, CAROL = DEFAULT_KEYS[:4]
GENESIS = 1_767_225_600
SNAPSHOT = ROOT / "gas" / "snapshot.json"
TOLERANCE = 0.05  # a figure may rise this much over the snapshot before --check fails
NOISE = 0.005  # smaller moves (calldata bytes, Merkle branch order) are not reported

SIGNER_COUNTS = (1, 3, 5)
TX_QUORUM = 2  # quorum of the whole-transaction figures (2 of 5 registered signers)
PORTFOLIOS = (1, 16, 64)
WHOLE_TX_OPS = {  # operation -> label; keys of the JSON are "<operation>_<n>_positions"
    "trade_2_attestations": "trade, 2 attestations",
    "withdraw_attested": "withdrawal, attestation",
    "withdraw_root_proof": "withdrawal, root + proof",
    "liquidation_bid": "liquidation bid, half f_max",
    "emergency_withdrawal": "emergency withdrawal",
}
TARGET_PER_POSITION_MOVED = 50_000
# Operations whose gas must not depend on the portfolio (the attested margin check); a liquidation bid
# moves every position and an emergency withdrawal values each one on chain, so theirs grow with it.
CONSTANT_OPS = ("trade_2_attestations", "withdraw_attested", "withdraw_root_proof")
TREE_LEAVES = 2**17  # 131,072 accounts: every proof has 17 nodes
TARGET_ONE_SIGNER = 16_000
TARGET_PER_SIGNER = 7_000
# On-chain scenario-grid margin (Derive v2's own integration test): options held -> gas.
GRID_REFERENCE = {16: 3_500_000, 127: 28_700_000}

DEPOSIT = 1_000_000 * USDC
WITHDRAWAL = 100 * USDC
SIZE = 10**18  # one unit per trade
PREMIUM = 1_000 * 10**18


# ---------------------------------------------------------------------- status tree
@cache
def _other_leaves() -> tuple[StatusLeaf, ...]:
    """TREE_LEAVES - 1 other accounts' status results (synthetic, deterministic)."""
    im, mm, credit = 5_000 * USDC, 4_000 * USDC, 60_000 * USDC
    return tuple(
        StatusLeaf("0x" + keccak(i.to_bytes(32, "big"))[:20].hex(), i % 97, credit + i, credit + i, im, mm, credit)
        for i in range(1, TREE_LEAVES)
    )


# ---------------------------------------------------------------------- the bench
@dataclass
class Bench:
    """A devnet with five risk signers, the probe, 64 listed calls and two funded traders."""

    h: Harness
    probe: Contract
    options: list[int]
    alice: str
    bob: str

    @property
    def p(self) -> Protocol:
        return self.h.p

    @property
    def usdc(self) -> str:
        return str(self.p.tokens["USDC"].address)

    @classmethod
    def setup(cls, url: str) -> Bench:
        dev = bootstrap(connect(url), DEPLOYER, rpc_url=url, risk_signers=max(SIGNER_COUNTS), risk_quorum=TX_QUORUM,
                        vault_artifact="VaultGasProbe", timelock=None)  # fmt: skip
        h = Harness(dev.protocol, DEPLOYER, dev.risk_signers, dev.price_signers, dev.instruments)
        for key in (ALICE, BOB, CAROL):
            h.fund(key, "USDC", DEPOSIT)
            h.deposit(key, "USDC", DEPOSIT)
        probe = h.p.vault  # the protocol's own Vault, with the probes
        options = list_instruments(h.p, DEPLOYER, _calls(h.now(), max(PORTFOLIOS)))
        # A first root: measured posts overwrite one, as every engine round does.
        post_status_root(h, status_root(h, keccak(text="pmsim gas table: first root")), h.risk_signers[:TX_QUORUM])
        return cls(h, probe, options, key_addr(ALICE), key_addr(BOB))

    def grow(self, n: int) -> None:
        """Alice buys one unit of each call from Bob until both hold ``n`` positions."""
        held = len(self.p.vault.functions.positionIds(self.alice).call())
        for iid in self.options[held:n]:
            self.h.fill(ALICE, BOB, iid, SIZE, PREMIUM)

    # ------------------------------------------------------------------ marginal checks (probe)
    def check_attestation(self, k: int, **fields: Any) -> int:
        """Marginal gas of ``requireMargin`` for Alice's withdrawal, at quorum ``k`` with ``k`` signatures
        (attestation ``fields`` override the harness defaults)."""
        self.p.send(self.p.oracle.functions.setQuorum(k), DEPLOYER)
        action = withdraw_action(self.alice, self.usdc, WITHDRAWAL)
        att = self.h.attestation(self.alice, action, **fields)
        proof = self.h.proof(att, self.h.risk_signers[:k])
        fn = self.probe.functions.requireMarginGas(proof, att.risk_nonce, action, att.credit_checkpoint, True)
        return int(self.p.call(fn, sender=self.alice))

    def check_previous_round(self) -> int:
        """One signer, attested at the previous price round: the oracle asks the feed how far prices
        moved since (here not at all), the path taken when a round lands between attestation and action."""
        with self.h.isolated():
            previous = self.h.latest_round()
            self.h.refresh_prices()
            return self.check_attestation(1, price_round=previous)

    def check_root(self) -> int:
        """Marginal gas of ``verifyStatus`` for Alice's leaf against a fresh root."""
        with self.h.isolated():
            leaf, proof, _ = self.post_root(self.alice)
            fn = self.probe.functions.verifyStatusGas(leaf.as_tuple(), proof, leaf.risk_nonce, leaf.credit_checkpoint)
            return int(self.p.call(fn, sender=self.alice))

    def checks(self) -> dict[str, int]:
        gas = {_check_key(k): self.check_attestation(k) for k in SIGNER_COUNTS}
        self.p.send(self.p.oracle.functions.setQuorum(TX_QUORUM), DEPLOYER)
        first, last = SIGNER_COUNTS[0], SIGNER_COUNTS[-1]
        gas["per_extra_signer"] = round((gas[_check_key(last)] - gas[_check_key(first)]) / (last - first))
        gas[f"{_check_key(1)}_previous_round"] = self.check_previous_round()
        gas["check_root_proof"] = self.check_root()
        return gas

    # ------------------------------------------------------------------ whole transactions
    def trade(self) -> TxReceipt:
        """Alice buys one more unit of her first call from Bob (no position count changes)."""
        return self.h.fill(ALICE, BOB, self.options[0], SIZE, PREMIUM)

    def withdraw_attested(self) -> TxReceipt:
        proof = self.h.withdraw_proof(self.alice, self.usdc, WITHDRAWAL)
        return self.p.send(self.p.vault.functions.withdraw(self.usdc, WITHDRAWAL, self.alice, proof), ALICE)

    def root_withdrawal(self) -> tuple[int, int]:
        """Gas of a root post holding Alice's leaf (replacing a root, as every round but the first does;
        setting the quorum above cleared the last one, F-8), then of her withdrawal against it."""
        with self.h.isolated():
            self.post_root(self.alice)
            leaf, proof, posted = self.post_root(self.alice)
            fn = self.p.vault.functions.withdrawQuoteWithStatus(WITHDRAWAL, self.alice, leaf.as_tuple(), proof)
            return int(posted["gasUsed"]), int(self.p.send(fn, ALICE)["gasUsed"])

    def whole_tx(self) -> dict[str, int]:
        """Each whole-transaction operation (WHOLE_TX_OPS, then ``post_root``) from the current state."""
        post, withdraw = self.root_withdrawal()
        start, refresh, bid = self.liquidation()
        return {
            "trade_2_attestations": self._isolated_gas(self.trade),
            "withdraw_attested": self._isolated_gas(self.withdraw_attested),
            "withdraw_root_proof": withdraw,
            "post_root": post,
            "liquidation_start_root_proof": start,
            "liquidation_refresh_root_proof": refresh,
            "liquidation_bid": bid,
            "emergency_withdrawal": self._isolated_gas(self.emergency_withdrawal),
        }

    # ------------------------------------------------------------------ liquidations
    def liquidation(self, insolvent: bool = False) -> tuple[int, int, int]:
        """Gas of starting Alice's liquidation with a root proof (her leaf breached: equity below MM),
        of refreshing its snapshot with her leaf at the nonce the start gave her (``Liquidator.refresh``,
        measured apart), then of
        Carol's bid for half the largest fraction (every position moves to Carol, who holds none of
        them: each is a new position of hers). Insolvent: mark-to-market below zero, the whole
        portfolio, paid by the insurance fund (funded first)."""
        with self.h.isolated():
            mtm = -5_000 * USDC if insolvent else 100_000 * USDC
            leaf = status_leaf(self.h, self.alice, equity=50_000 * USDC, im=100_000 * USDC, mm=80_000 * USDC,
                               mtm_equity=mtm)  # fmt: skip
            tree = StatusTree.build([leaf, *_other_leaves()])
            root = status_root(self.h, tree.root, int(self.p.oracle.functions.rootRound().call()) + 1)
            post_status_root(self.h, root, self._quorum_signers())
            liq = self.p.liquidator.functions
            started = self.p.send(liq.start(self.alice, leaf.as_tuple(), tree.proof(self.alice)), CAROL)
            with self.h.isolated():  # the start bumped her nonce: a leaf at the new one, in a new root
                again = replace(leaf, risk_nonce=int(self.p.vault.functions.riskNonce(self.alice).call()))
                tree2 = StatusTree.build([again, *_other_leaves()])
                post_status_root(self.h, status_root(self.h, tree2.root, root.round + 1), self._quorum_signers())
                refreshed = self.p.send(liq.refresh(self.alice, again.as_tuple(), tree2.proof(self.alice)), CAROL)
            if insolvent:
                self.h.fund(BOB, "USDC", 100_000 * USDC)
                self.h.deposit(BOB, "USDC", 100_000 * USDC, account=self.p.fund.address)
            a = liq.auctionOf(self.alice).call()
            f = WAD if insolvent else liq.maxFraction(self.alice).call() // 2
            worst = int(liq.quote(self.alice, f).call()[0]) + 10 * USDC
            carol = key_addr(CAROL)
            att = self.h.attestation(carol, bid_action(carol, self.alice, a[3], f, worst))
            bid = self.p.send(liq.bid(self.alice, f, worst, a[3], self.h.proof(att)), CAROL)
            return int(started["gasUsed"]), int(refreshed["gasUsed"]), int(bid["gasUsed"])

    def emergency_withdrawal(self) -> TxReceipt:
        """Alice withdraws with no signatures in emergency mode (no root for the delay): the on-chain
        standard margin values each of her positions."""
        lp = LiquidationParams(*self.p.params.functions.liquidationParams().call())
        fn = self.p.params.functions.setLiquidationParams(LiquidationParams(**{**lp.__dict__,
                                                                               "emergency_delay": 600}).as_tuple())
        self.p.send(fn, DEPLOYER)
        self.h.warp(601)
        self.h.refresh_prices()
        none = ((self.alice, 0, b"\x00" * 32, 0, 0, 0, 0, 0, b"\x00" * 32, 0, 0, 0), b"")
        return self.p.send(self.p.vault.functions.withdraw(self.usdc, WITHDRAWAL, self.alice, none), ALICE)

    def _isolated_gas(self, action: Callable[[], TxReceipt]) -> int:
        with self.h.isolated():
            return int(action()["gasUsed"])

    # ------------------------------------------------------------------ status roots
    def post_root(self, account: str) -> tuple[StatusLeaf, list[bytes], TxReceipt]:
        """Post a quorum-signed root of a TREE_LEAVES tree holding ``account``'s current status
        (100k equity, 10k IM, 8k MM); returns the leaf, its proof and the receipt."""
        leaf = status_leaf(self.h, account, equity=100_000 * USDC, im=10_000 * USDC, mm=8_000 * USDC)
        tree = StatusTree.build([leaf, *_other_leaves()])
        root = status_root(self.h, tree.root, int(self.p.oracle.functions.rootRound().call()) + 1)
        receipt = post_status_root(self.h, root, self._quorum_signers())
        return leaf, tree.proof(account), receipt

    def _quorum_signers(self) -> list[Signer]:
        return self.h.risk_signers[: int(self.p.oracle.functions.quorum().call())]


def _calls(now: int, n: int) -> list[InstrumentSpec]:
    """``n`` BTC calls, 30 days out, strikes 60k, 61k, ... (out of the money, so that a premium of 1,000
    USD sits inside the Exchange's no-arbitrage bounds)."""
    return [InstrumentSpec(Kind.CALL, 0, now + 30 * DAY, (60_000 + 1_000 * i) * 10**18) for i in range(n)]


def _signers(k: int, sep: str = " ") -> str:
    return f"{k}{sep}signer{'s' if k > 1 else ''}"


def _check_key(k: int) -> str:
    return f"check_attestation_{_signers(k, '_')}"


# ---------------------------------------------------------------------- measurement
@contextmanager
def _chain(url: str | None) -> Iterator[str]:
    """A fresh Anvil, or the node at ``url`` left as it was found (snapshot, then revert)."""
    if url is None:
        with start_anvil(timestamp=GENESIS) as node:
            yield node.url
        return
    provider: Any = connect(url).provider
    snap = provider.make_request("evm_snapshot", [])["result"]
    try:
        yield url
    finally:
        provider.make_request("evm_revert", [snap])


def measure(url: str | None = None) -> dict[str, int]:
    """Every figure of the table (operation -> gas), on a fresh Anvil or on the node at ``url``."""
    with _chain(url) as node:
        bench = Bench.setup(node)
        bench.grow(PORTFOLIOS[0])
        gas = bench.checks()
        by_size: dict[int, dict[str, int]] = {}
        for n in PORTFOLIOS:
            bench.grow(n)
            by_size[n] = bench.whole_tx()
        _, _, insolvent_bid = bench.liquidation(insolvent=True)  # at the largest portfolio
    whole = {f"{op}_{n}_positions": by_size[n][op] for op in WHOLE_TX_OPS for n in PORTFOLIOS}
    first, last = PORTFOLIOS[0], PORTFOLIOS[-1]
    per_position = round((whole[f"liquidation_bid_{last}_positions"] - whole[f"liquidation_bid_{first}_positions"])
                         / (last - first))  # fmt: skip
    return {**gas, **whole, "post_root": max(row["post_root"] for row in by_size.values()),
            "liquidation_start_root_proof": by_size[first]["liquidation_start_root_proof"],
            "liquidation_refresh_root_proof": by_size[first]["liquidation_refresh_root_proof"],
            f"liquidation_insolvent_bid_fund_draw_{last}_positions": insolvent_bid,
            "liquidation_per_position_moved": per_position}  # fmt: skip


# ---------------------------------------------------------------------- snapshot (CI regression check)
def load_snapshot(path: Path = SNAPSHOT) -> dict[str, int]:
    return {str(k): int(v) for k, v in json.loads(path.read_text()).items()}


def write_snapshot(gas: dict[str, int], path: Path = SNAPSHOT) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(gas, indent=2) + "\n")


def compare(
    measured: dict[str, int], recorded: dict[str, int], tolerance: float = TOLERANCE
) -> tuple[list[str], list[str]]:
    """(failures, notes): rises above ``tolerance`` and operations missing on either side fail;
    decreases beyond the noise are reported as improvements."""
    failures = [f"{op}: recorded {recorded[op]:,}, not measured any more" for op in recorded if op not in measured]
    failures += [f"{op}: measured {measured[op]:,}, not in the snapshot (run --update)" for op in measured
                 if op not in recorded]  # fmt: skip
    notes = []
    for op in (op for op in measured if op in recorded):
        old, new = recorded[op], measured[op]
        line = f"{op}: {old:,} -> {new:,} ({(new - old) / old:+.2%})"
        if new > old * (1 + tolerance):
            failures.append(f"{line}, above the +{tolerance:.0%} tolerance")
        elif new < old * (1 - NOISE):
            notes.append(f"{line}, improvement")
    return failures, notes


# ---------------------------------------------------------------------- table
def table(gas: dict[str, int]) -> list[str]:
    return [*_marginal_lines(gas), "", *_whole_tx_lines(gas), "", *_liquidation_lines(gas), "",
            *_reference_lines(gas)]  # fmt: skip


def _liquidation_lines(gas: dict[str, int]) -> list[str]:
    per = gas["liquidation_per_position_moved"]
    last = PORTFOLIOS[-1]
    return [
        "Liquidations (quorum 2; the bidder receives every position as a new one of its own)",
        f"  {'start with a root proof':<44}{gas['liquidation_start_root_proof']:>8,}",
        f"  {'refresh with a root proof':<44}{gas['liquidation_refresh_root_proof']:>8,}",
        f"  {f'insolvent bid, all {last} pos., fund draw':<44}"
        f"{gas[f'liquidation_insolvent_bid_fund_draw_{last}_positions']:>8,}",
        f"  {'per position moved (marginal)':<44}{per:>8,}   target <= {TARGET_PER_POSITION_MOVED:,}: "
        f"{'met' if per <= TARGET_PER_POSITION_MOVED else 'MISSED'}",
    ]


def _marginal_lines(gas: dict[str, int]) -> list[str]:
    def row(label: str, used: int, target: int | None = None) -> str:
        verdict = "" if target is None else f"   target <= {target:,}: {'met' if used <= target else 'MISSED'}"
        return f"  {label:<44}{used:>8,}{verdict}"

    first, last = SIGNER_COUNTS[0], SIGNER_COUNTS[-1]
    depth = (TREE_LEAVES - 1).bit_length()
    checks = [
        row(f"attestation, {_signers(k)} (quorum {k})", gas[_check_key(k)], TARGET_ONE_SIGNER if k == 1 else None)
        for k in SIGNER_COUNTS
    ]
    return [
        "Margin check, marginal gas inside the action (probe in the Vault, eth_call from the account, cold storage)",
        *checks,
        row(f"per extra signer (({last} - {first}) / {last - first})", gas["per_extra_signer"], TARGET_PER_SIGNER),
        row("attestation, 1 signer, previous price round", gas[f"{_check_key(1)}_previous_round"]),
        row(f"root + proof ({depth} nodes, {TREE_LEAVES:,} leaves)", gas["check_root_proof"]),
    ]


def _whole_tx_lines(gas: dict[str, int]) -> list[str]:
    head = "".join(f"{f'{n} pos.':>11}" for n in PORTFOLIOS)
    lines = [f"Whole transaction gasUsed, quorum {TX_QUORUM} of {max(SIGNER_COUNTS)}", f"  {'':<28}{head}   spread"]
    for op, label in WHOLE_TX_OPS.items():
        used = [gas[f"{op}_{n}_positions"] for n in PORTFOLIOS]
        cells = "".join(f"{u:>11,}" for u in used)
        lines.append(f"  {label:<28}{cells}   {(max(used) - min(used)) / min(used):.2%}")
    lines.append(f"  {'root post':<28}{gas['post_root']:>11,}   (no account involved)")
    return lines


def _reference_lines(gas: dict[str, int]) -> list[str]:
    one = gas[_check_key(1)]
    return ["Reference: on-chain scenario-grid margin check (Derive v2's own integration test)"] + [
        f"  {n:>3} options {used:>12,}   {used // n:>7,} per option, {used / one:,.0f}x the 1-signer check"
        for n, used in GRID_REFERENCE.items()
    ]


# ---------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help=f"fail on a rise > {TOLERANCE:.0%} over {SNAPSHOT.name}")
    mode.add_argument("--update", action="store_true", help=f"rewrite {SNAPSHOT.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    gas = measure()
    print("\n".join(table(gas)))
    status = 0
    if args.update:
        write_snapshot(gas)
        print(f"\nwrote {SNAPSHOT.relative_to(ROOT)}")
    elif args.check:
        status = _report_check(gas)
    print(json.dumps(gas))
    return status


def _report_check(gas: dict[str, int]) -> int:
    if not SNAPSHOT.exists():
        print(f"GAS CHECK: no {SNAPSHOT.relative_to(ROOT)} to compare with: record one with --update")
        return 1
    failures, notes = compare(gas, load_snapshot())
    print(f"\nCheck against {SNAPSHOT.relative_to(ROOT)} (tolerance +{TOLERANCE:.0%}):")
    print("\n".join(f"  {n}" for n in notes) or "  no improvements")
    if failures:
        print("GAS CHECK FAILED:\n" + "\n".join(f"  {f}" for f in failures))
        return 1
    print("  ok: no operation rose above the tolerance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
