"""The keeper on Anvil with real adversity: real contracts, real signatures of the suite's risk
signers, real transactions. Every test waits on chain conditions (a receipt, a block, an event),
never on the wall clock; transaction replacement is timed by a clock the test advances."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hexbytes import HexBytes

from offchain import rules
from offchain.chain.actions import bid_action
from offchain.chain.merkle import StatusLeaf, StatusTree
from offchain.keeper import strategy
from offchain.keeper.attest import BidAttestation
from offchain.keeper.bot import LOST_RACE, Keeper
from offchain.keeper.config import FeeConfig, KeeperConfig, UnwindConfig
from tests.chain.conftest import ALICE, BOB, CAROL, RELAYER, addr
from tests.chain.harness import USDC, Harness, post_status_root, status_leaf, status_root

pytestmark = pytest.mark.chain
BTC = 55_000 * 10**18
GWEI = 10**9


# ---------------------------------------------------------------------- fixtures and helpers
class SuiteAttestor:
    """Signs the bidder's attestation with the suite's registered risk signers, binding the auction's
    current version read from chain, as the engine's ``/attest/bid`` does."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.calls = 0

    def attest_bid(self, bidder: str, account: str, fraction: int, worst_price: int) -> BidAttestation:
        self.calls += 1
        version = self.h.p.liquidator.functions.auctionOf(account).call()[3]
        att = self.h.attestation(bidder, bid_action(bidder, account, version, fraction, worst_price))
        _, sigs = self.h.proof(att)
        return BidAttestation(att, sigs)


class Clock:
    """A wall clock the test moves (transaction replacement timing)."""

    def __init__(self) -> None:
        self.t = 1_000.0

    def __call__(self) -> float:
        return self.t


def rpc(h: Harness, method: str, *params: Any) -> Any:
    out = h.p.w3.provider.make_request(method, list(params))  # type: ignore[arg-type]
    assert "error" not in out, out
    return out.get("result")


@pytest.fixture
def manual_mining(h: Harness) -> Iterator[None]:
    """Blocks only when the test mines them (transactions wait in the pool)."""
    rpc(h, "evm_setAutomine", False)
    try:
        yield
    finally:
        rpc(h, "evm_setIntervalMining", 0)
        rpc(h, "evm_setAutomine", True)


def book(h: Harness) -> None:
    """Alice 1 BTC long against Bob; Carol and Bob hold cash to bid with."""
    h.deposit(ALICE, "USDC", 20_000 * USDC)
    h.deposit(BOB, "USDC", 200_000 * USDC)
    h.deposit(CAROL, "USDC", 100_000 * USDC)
    h.fill(ALICE, BOB, h.ids["BTC-PERP"], 10**18, BTC)


def publish(h: Harness, rounds: Path, leaves: list[StatusLeaf]) -> int:
    """Post a root of ``leaves`` and publish its document as the engine does (rounds/<n>.json)."""
    tree = StatusTree.build(leaves)
    number = h.p.oracle.functions.rootRound().call() + 1
    root = status_root(h, tree.root, round_=number)
    post_status_root(h, root)
    doc = {"round": number, "block": h.p.w3.eth.block_number,
           "root": {"round": number, "root": "0x" + tree.root.hex(), "priceRound": root.price_round,
                    "issuedAt": root.issued_at, "expiry": root.expiry, "paramsHash": "0x" + root.params_hash.hex()},
           "tree": tree.dump()}  # fmt: skip
    rounds.mkdir(parents=True, exist_ok=True)
    (rounds / f"{number}.json").write_text(json.dumps(doc))
    return number


def breach(h: Harness, rounds: Path) -> str:
    """A root showing Alice below maintenance margin (V 10k, E 9k, MM 12k USD); Bob and the relayer healthy."""
    a = addr(ALICE)
    publish(h, rounds, [
        status_leaf(h, a, equity=9_000 * USDC, mm=12_000 * USDC, im=15_000 * USDC, mtm_equity=10_000 * USDC),
        status_leaf(h, addr(BOB)), status_leaf(h, addr(RELAYER)),
    ])  # fmt: skip
    return a


def keeper(h: Harness, tmp: Path, key: str = CAROL, *, name: str = "k", clock: Clock | None = None,
           **over: Any) -> Keeper:  # fmt: skip
    fees = over.pop("fees", FeeConfig(max_fee_gwei=500, priority_fee_gwei=1, replace_after_s=30))
    cfg = KeeperConfig(rpc_url="", engine_url=None, rounds_dir=tmp / "rounds", state_file=tmp / f"{name}.json",
                       health_port=None, fees=fees, **over).validate()  # fmt: skip
    return Keeper(h.p, key, cfg, SuiteAttestor(h), clock=clock or Clock())


def bids(h: Harness, account: str) -> list[dict[str, Any]]:
    logs = h.p.liquidator.events.Bid().get_logs(from_block=h.p.deployment.deploy_block, argument_filters={
        "account": account})
    return [dict(ev["args"]) | {"block": ev["blockNumber"], "tx": ev["transactionHash"]} for ev in logs]


def mine(h: Harness, timestamp: int | None = None) -> None:
    if timestamp is not None:
        rpc(h, "evm_setNextBlockTimestamp", timestamp)
    rpc(h, "evm_mine")


def settle_sent(h: Harness, k: Any) -> None:
    """Wait until every transaction the keeper has in flight is mined (automine answers at once on an
    idle machine, not always on a loaded one): tests wait on the chain, never race it."""
    for p in list(k.tx.pending.values()):
        h.p.w3.eth.wait_for_transaction_receipt(HexBytes(p.hashes[-1]), timeout=120)


def pool_size(h: Harness) -> int:
    content = rpc(h, "txpool_content")
    return sum(len(v) for v in content["pending"].values()) + sum(len(v) for v in content["queued"].values())


# ---------------------------------------------------------------------- the whole path
def test_keeper_starts_and_bids_from_a_verified_root(h: Harness, tmp_path: Path) -> None:
    """A breached leaf of the posted root is verified, started, then bid on until the auction ends;
    the bids follow the contract's rules; the metrics count it all."""
    book(h)
    a = breach(h, tmp_path / "rounds")
    k = keeper(h, tmp_path)
    k.step()  # loads the root, starts the auction (automine)
    settle_sent(h, k)
    assert k.round is not None and [c.account for c in k.candidates] == [] and a in k.watch
    s0 = k.auctions()[0].state
    assert s0.equity == 9_000 * USDC and not s0.insolvent
    k.step()  # settles the start, plans, bids (automine)
    settle_sent(h, k)
    k.step()  # settles the bid
    [got] = bids(h, a)
    [done] = [o for o in k.record.outcomes if o.pending.kind == "bid"]
    params, at = k._params, done.pending.meta["at"]
    assert params is not None
    mined_at = h.p.w3.eth.get_block(got["block"])["timestamp"]
    assert got["bidder"] == addr(CAROL) and got["fractionWad"] == rules.max_fraction(s0, at, params)
    assert (got["price"], got["fee"]) == rules.bid_price(s0, got["fractionWad"], mined_at, params)
    assert got["price"] <= done.pending.meta["worst_price"]
    # the keeper took f_max as of its planned second; landing then, the bid ends the auction; landing later
    # (a loaded machine), f_max had grown, and what is left is dust below the buffer, not worth a bid yet
    took_max = got["fractionWad"] == rules.max_fraction(s0, mined_at, params)
    left = rules.after_bid(s0, got["fractionWad"], got["price"], took_max=took_max)
    if left is None:
        assert k.auctions() == [] and not h.p.liquidator.functions.auctionOf(a).call()[0]
    else:
        assert k.auctions()[0].state == left
        plan = k.record.plans[a]
        assert plan is None or plan.at > k.now
    m = k.metrics.registry
    assert m.get_sample_value("keeper_auctions_started_total") == 1
    assert m.get_sample_value("keeper_bids_mined_total") == 1
    assert m.get_sample_value("keeper_profit_quote_total") > 0
    assert m.get_sample_value("keeper_breach_to_first_bid_seconds_count") == 1
    assert m.get_sample_value("keeper_gas_spent_wei_total") > 0
    assert k.health()["status"] == "ok" and not k.tx.pending
    h.check_conservation()


def test_a_stale_auction_is_refreshed_from_a_root_at_the_new_nonce_then_bid(h: Harness, tmp_path: Path) -> None:
    """A frozen account's fill that lowers its IM moves its nonce under the auction's snapshot: the keeper
    sends no bid (it would revert), waits for a root carrying the new nonce, refreshes the auction
    (``Liquidator.refresh``), then bids on the new version."""
    book(h)
    rounds = tmp_path / "rounds"
    a = breach(h, rounds)
    k = keeper(h, tmp_path)
    k.step()  # starts
    settle_sent(h, k)
    assert a in k.watch and not k.auctions()[0].stale
    h.fill(ALICE, BOB, h.ids["BTC-PERP"], 2 * 10**17, BTC, maker_buys=False)  # frozen Alice sells 0.2 BTC
    assert k.auctions()[0].stale
    k.step()  # the latest root predates the fill: neither a bid nor a refresh can land
    settle_sent(h, k)
    assert bids(h, a) == [] and not k.tx.pending
    assert not [o for o in k.record.outcomes if o.pending.kind in ("bid", "refresh")]
    publish(h, rounds, [
        status_leaf(h, a, equity=8_000 * USDC, mm=11_000 * USDC, im=14_000 * USDC, mtm_equity=9_000 * USDC),
        status_leaf(h, addr(BOB)), status_leaf(h, addr(RELAYER)),
    ])  # fmt: skip
    k.step()  # loads the root, refreshes
    settle_sent(h, k)
    auction = h.p.liquidator.functions.auctionOf(a).call()
    assert auction[0] and auction[3] == 1 and auction[7] == 8_000 * USDC  # version 1, the new leaf's equity
    assert not k.auctions()[0].stale
    k.step()  # settles the refresh, bids
    settle_sent(h, k)
    k.step()
    [got] = bids(h, a)
    assert got["bidder"] == addr(CAROL)
    assert k.metrics.registry.get_sample_value("keeper_auctions_refreshed_total") == 1
    h.check_conservation()


def test_an_auction_unprofitable_until_the_discount_grows(h: Harness, tmp_path: Path) -> None:
    """With an 8 % unwind cost, a bid at the 95 % start price loses money; the keeper computes the first
    profitable second from the rules, waits, and bids exactly then, not a second earlier."""
    book(h)
    a = breach(h, tmp_path / "rounds")
    k = keeper(h, tmp_path, unwind=UnwindConfig(base_bps=800, impact_bps=0))
    k.step()  # start
    settle_sent(h, k)
    k.step()  # settle the start; plan
    plan = k.record.plans[a]
    assert plan is not None and plan.at > k.now and not k.tx.pending
    s = k.auctions()[0].state
    params = k._params
    assert params is not None
    before = strategy.best_bid(s, plan.at - 1, params, plan.gas, k.cfg.profit, k.cfg.unwind)
    assert before is not None and not before.profitable and plan.profitable
    assert rules.discount(s, plan.at, params) < params.start_discount  # it is the discount that made it worth it
    mine(h, plan.at - 1)
    k.step()
    assert not k.tx.pending and not bids(h, a)
    mine(h, plan.at)
    k.step()
    assert [p.kind for p in k.tx.pending.values()] == ["bid"] or bids(h, a)  # automine: sent and mined
    settle_sent(h, k)
    k.step()
    [first, *_] = bids(h, a)
    assert first["bidder"] == addr(CAROL) and first["discountWad"] <= rules.discount(s, plan.at, params)
    assert h.p.w3.eth.get_block(first["block"])["timestamp"] >= plan.at


# ---------------------------------------------------------------------- transactions that land
def _started(h: Harness, tmp_path: Path, k: Keeper) -> str:
    """Start the auction (mined at once); the keeper settles it, and bids, at its next step."""
    a = breach(h, tmp_path / "rounds")
    k.step()
    assert h.p.liquidator.functions.auctionOf(a).call()[0] and [p.kind for p in k.tx.pending.values()] == ["start"]
    return a


def _bid_in_flight(h: Harness, tmp_path: Path) -> tuple[Keeper, Clock, str, Any]:
    """A started auction, then, with automine off, the keeper's bid sent and not yet mined."""
    rpc(h, "evm_setAutomine", True)
    book(h)
    clock = Clock()
    k = keeper(h, tmp_path, clock=clock)
    a = _started(h, tmp_path, k)
    rpc(h, "evm_setAutomine", False)
    k.step()
    [p] = k.tx.pending.values()
    return k, clock, a, p


def test_dropped_bid_is_replaced_at_the_same_nonce(h: Harness, tmp_path: Path, manual_mining: None) -> None:
    """A bid dropped from the pool is re-signed at the same nonce with both fees raised ≥ 12.5 %."""
    k, clock, a, p = _bid_in_flight(h, tmp_path)
    first = p.tx_hash
    nonce, fee, tip = p.nonce, p.max_fee, p.tip
    rpc(h, "anvil_dropTransaction", first)
    assert pool_size(h) == 0
    k.step()  # not yet time to replace
    assert k.tx.pending[nonce].hashes == [first]
    clock.t += 30
    k.step()
    p = k.tx.pending[nonce]
    assert len(p.hashes) == 2 and p.max_fee >= fee * 1.125 and p.tip >= tip * 1.125
    mine(h)
    k.step()
    [b] = bids(h, a)
    tx = h.p.w3.eth.get_transaction(b["tx"])
    assert "0x" + bytes(b["tx"]).hex() == p.hashes[-1] and tx["nonce"] == nonce
    assert k.metrics.registry.get_sample_value("keeper_tx_replaced_total", {"kind": "bid"}) == 1
    assert h.p.w3.eth.get_transaction_count(k.address) == nonce + 1 and not k.tx.pending


def test_base_fee_spike_is_outbid_up_to_the_cap(h: Harness, tmp_path: Path, manual_mining: None) -> None:
    """A base-fee spike leaves the bid unmined; the replacement raises both fees, never above the cap,
    and lands in the next block."""
    k, clock, a, p = _bid_in_flight(h, tmp_path)
    spike = p.max_fee * 4
    cap = spike * 3 // 2
    k.tx.fees = replace(k.tx.fees, max_fee_gwei=cap / GWEI)
    normal = h.p.w3.eth.get_block("latest")["baseFeePerGas"]
    try:
        _spike_and_replace(h, k, clock, p, a, spike, cap)
    finally:  # the node's fee state outlives evm_revert: leave the base fee as it was
        rpc(h, "anvil_setNextBlockBaseFeePerGas", hex(normal))


def _spike_and_replace(h: Harness, k: Keeper, clock: Clock, p: Any, a: str, spike: int, cap: int) -> None:
    rpc(h, "anvil_setNextBlockBaseFeePerGas", hex(spike))
    mine(h)
    assert h.p.w3.eth.get_block("latest")["baseFeePerGas"] == spike
    k.step()  # still pending: its max fee is below the base fee
    assert p.nonce in k.tx.pending and not bids(h, a)
    clock.t += 30
    k.step()
    q = k.tx.pending[p.nonce]
    assert len(q.hashes) == 2 and q.max_fee == cap >= spike  # 2 × base + tip would exceed the cap
    mine(h)
    k.step()
    [b] = bids(h, a)
    assert h.p.w3.eth.get_transaction(b["tx"])["maxFeePerGas"] == cap
    assert h.p.w3.eth.get_transaction(b["tx"])["nonce"] == p.nonce


def test_keeper_killed_between_send_and_mining_restarts_without_double_bid(
    h: Harness, tmp_path: Path, manual_mining: None
) -> None:
    """A keeper stopped after sending: the restarted keeper recovers the pending bid from its state file,
    sends nothing new while it is in the pool, replaces it at the same nonce once dropped; one bid, no gap."""
    rpc(h, "evm_setAutomine", True)
    book(h)
    clock = Clock()
    k1 = keeper(h, tmp_path, clock=clock)
    a = _started(h, tmp_path, k1)
    rpc(h, "evm_setAutomine", False)
    k1.step()
    [p] = k1.tx.pending.values()
    mined_before = h.p.w3.eth.get_transaction_count(k1.address)
    del k1  # killed: only its state file survives
    k2 = keeper(h, tmp_path, clock=clock)
    assert list(k2.tx.pending) == [p.nonce] and k2.tx.busy(a)
    k2.step()
    k2.step()
    assert pool_size(h) == 1 and k2.tx.pending[p.nonce].hashes == p.hashes  # no second bid
    rpc(h, "anvil_dropTransaction", p.tx_hash)  # lost while the keeper was down
    k3 = keeper(h, tmp_path, clock=clock)
    clock.t += 30
    k3.step()
    assert pool_size(h) == 1 and len(k3.tx.pending[p.nonce].hashes) == 2
    mine(h)
    k3.step()
    assert len(bids(h, a)) == 1
    assert h.p.w3.eth.get_transaction_count(k3.address) == mined_before + 1 and not k3.tx.pending


def test_two_keepers_race_for_one_auction(h: Harness, tmp_path: Path, manual_mining: None) -> None:
    """Both keepers bid on the same auction version in the same block: one wins; the other's bid reverts,
    is recorded as a lost race (not retried blindly) and that keeper stays healthy."""
    rpc(h, "evm_setAutomine", True)
    book(h)
    carol = keeper(h, tmp_path, CAROL, name="carol")
    bob = keeper(h, tmp_path, BOB, name="bob", start_auctions=False)
    a = _started(h, tmp_path, carol)
    rpc(h, "evm_setAutomine", False)
    carol.step()
    bob.step()
    assert len(carol.tx.pending) == len(bob.tx.pending) == 1
    mine(h)
    carol.step()
    bob.step()
    [win] = bids(h, a)
    winner, loser = (carol, bob) if win["bidder"] == carol.address else (bob, carol)
    assert winner.metrics.registry.get_sample_value("keeper_bids_mined_total") == 1
    assert loser.record.lost and loser.record.lost[0][1] in LOST_RACE
    assert loser.metrics.registry.get_sample_value("keeper_bids_lost_total") == 1
    assert loser.health()["status"] == "ok" and loser.health()["races_lost"] == 1
    assert [o.status for o in loser.record.outcomes if o.pending.kind == "bid"] == ["reverted"]
    # the loser re-plans on the new version rather than re-sending the stale bid
    loser.step()
    for p in loser.tx.pending.values():
        assert p.meta["version"] == h.p.liquidator.functions.auctionOf(a).call()[3]


def test_keeper_loop_with_interval_mining(h: Harness, tmp_path: Path, manual_mining: None) -> None:
    """The keeper's own loop (a thread, as ``pmsim keeper`` runs it) against one-second interval mining:
    it starts and bids with no step driven by the test; the test waits for the Bid event."""
    rpc(h, "evm_setAutomine", True)
    book(h)
    a = breach(h, tmp_path / "rounds")
    k = keeper(h, tmp_path, poll_interval_s=0.2)
    rpc(h, "evm_setAutomine", False)
    rpc(h, "evm_setIntervalMining", 1)
    stop = threading.Event()
    t = threading.Thread(target=k.run, args=(stop,), daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 120  # a generous bound on a loaded machine, not a speed check
        while not bids(h, a) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        stop.set()
        t.join(30)
    assert bids(h, a) and not t.is_alive()
    assert k.metrics.registry.get_sample_value("keeper_last_block") >= 1


def test_dry_run_decides_without_sending(h: Harness, tmp_path: Path) -> None:
    """--dry-run logs what it would start, sends nothing."""
    book(h)
    a = breach(h, tmp_path / "rounds")
    k = keeper(h, tmp_path, dry_run=True)
    n = h.p.w3.eth.get_transaction_count(k.address)
    k.step()
    k.step()
    assert [e["kind"] for e in k.record.dry_run][:1] == ["start"] and k.record.dry_run[0]["account"] == a
    assert h.p.w3.eth.get_transaction_count(k.address) == n and not h.p.liquidator.functions.auctionOf(a).call()[0]


def test_forged_round_document_is_refused(h: Harness, tmp_path: Path) -> None:
    """A published tree whose root is not the on-chain root is refused; no candidate is taken from it."""
    from offchain.keeper.candidates import RootMismatch

    book(h)
    rounds = tmp_path / "rounds"
    number = publish(h, rounds, [status_leaf(h, addr(ALICE)), status_leaf(h, addr(BOB))])
    forged = StatusTree.build([status_leaf(h, addr(ALICE), equity=1, mm=10**9), status_leaf(h, addr(BOB))])
    doc = json.loads((rounds / f"{number}.json").read_text())
    doc["tree"] = forged.dump()
    (rounds / f"{number}.json").write_text(json.dumps(doc))
    k = keeper(h, tmp_path)
    with pytest.raises(RootMismatch):
        k.step()
    assert not k.safe_step() and k.health()["status"] == "degraded" and not k.candidates
    assert k.metrics.registry.get_sample_value("keeper_rpc_errors_total") == 1


def test_rpc_failures_through_a_flaky_proxy(h: Harness, tmp_path: Path) -> None:
    """A third of the keeper's RPC requests dropped and some stalled past its timeout: requests and
    batches are retried with backoff (a step that still fails is counted and retried at the next poll);
    the auction is started once and bid on, no transaction is lost or doubled."""
    from offchain.chain.client import Protocol, connect
    from tests.chain.test_faults import FlakyProxy

    book(h)
    a = breach(h, tmp_path / "rounds")
    proxy = FlakyProxy(h.p.deployment.rpc_url, drop=0.3, stall_share=0.05, stall=1.5)
    try:
        flaky = Protocol(connect(f"http://127.0.0.1:{proxy.port}", timeout=1.0), h.p.deployment, h.p.artifacts)
        cfg = KeeperConfig(engine_url=None, rounds_dir=tmp_path / "rounds", state_file=tmp_path / "k.json",
                           health_port=None, fees=FeeConfig(replace_after_s=0.0)).validate()  # fmt: skip
        k = Keeper(flaky, CAROL, cfg, SuiteAttestor(h))
        proxy.enabled = True
        for _ in range(300):  # bounded by steps, not time
            k.safe_step()
            if bids(h, a) and not k.tx.pending:
                break
        proxy.enabled = False
        assert k.safe_step() and k.health()["status"] == "ok"
    finally:
        proxy.close()
    assert proxy.dropped >= 5 and proxy.stalled >= 1  # the faults happened; retries absorbed them
    started = h.p.liquidator.events.AuctionStarted().get_logs(from_block=h.p.deployment.deploy_block)
    assert [str(e["args"]["account"]) for e in started] == [a]
    got = bids(h, a)
    assert got and all(b["bidder"] == addr(CAROL) for b in got)
    assert k.metrics.registry.get_sample_value("keeper_bids_mined_total") == len(got)
    assert not [o for o in k.record.outcomes if o.status == "reverted"]


def test_stuck_bid_overtaken_by_a_competitor_is_cancelled_not_replayed(
    h: Harness, tmp_path: Path, manual_mining: None
) -> None:
    """Carol's bid is stuck (dropped) while Bob's lands: at replacement time the exact call now reverts,
    so Carol spends the nonce on a 0-value self-transfer instead of a bid sure to revert; the loss is
    recorded and her nonces stay contiguous."""
    rpc(h, "evm_setAutomine", True)
    book(h)
    clock = Clock()
    carol = keeper(h, tmp_path, CAROL, name="carol", clock=clock)
    bob = keeper(h, tmp_path, BOB, name="bob", start_auctions=False)
    a = _started(h, tmp_path, carol)
    rpc(h, "evm_setAutomine", False)
    carol.step()
    [p] = carol.tx.pending.values()
    fee0 = p.max_fee
    rpc(h, "anvil_dropTransaction", p.tx_hash)
    bob.step()
    mine(h)
    bob.step()
    assert [b["bidder"] for b in bids(h, a)] == [bob.address]
    clock.t += 30
    carol.step()
    q = carol.tx.pending[p.nonce]
    assert q.kind == "cancel" and q.meta["cancelled"] in LOST_RACE and q.max_fee >= fee0 * 1.125
    mine(h)
    carol.step()
    tx = h.p.w3.eth.get_transaction(q.tx_hash)
    assert tx["to"] == carol.address and tx["value"] == 0 and tx["nonce"] == p.nonce
    assert carol.record.lost and carol.record.lost[0][1] in LOST_RACE
    assert [b["bidder"] for b in bids(h, a)] == [bob.address]
    assert h.p.w3.eth.get_transaction_count(carol.address) == p.nonce + 1


def test_refused_attestation_means_no_bid_and_no_hammering(h: Harness, tmp_path: Path) -> None:
    """The engine refuses the bidder attestation (the keeper would fall below its IM): nothing is sent,
    the refusal is recorded for that auction version and not asked again every step."""
    from offchain.keeper.attest import AttestationRefused

    class Refusing(SuiteAttestor):
        def attest_bid(self, bidder: str, account: str, fraction: int, worst_price: int) -> BidAttestation:
            self.calls += 1
            raise AttestationRefused(422, "insufficient margin after this action", "fraction")

    book(h)
    a = breach(h, tmp_path / "rounds")
    k = keeper(h, tmp_path)
    k.attestor = att = Refusing(h)
    for _ in range(3):
        k.step()
    assert att.calls == 1 and (a.lower(), 0) in k.record.refused and not bids(h, a)
    assert [o.pending.kind for o in k.record.outcomes] == ["start"] and k.health()["status"] == "ok"


def test_state_file_of_another_key_is_refused(h: Harness, tmp_path: Path) -> None:
    """A pending-transaction file written for another sender is never adopted (its nonces are not ours)."""
    from offchain.errors import ChainError

    keeper(h, tmp_path, BOB, name="shared").tx._save()
    with pytest.raises(ChainError, match="belongs to"):
        keeper(h, tmp_path, CAROL, name="shared")
