"""The keeper's optional strategies on Anvil with the real engine: the independent margin recompute
(cross-check of published leaves, breaches the root hides) and hedging what a bid acquired."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from offchain.chain.eip712 import Order, Signer, sign_order
from offchain.chain.indexer import Indexer
from offchain.chain.merkle import StatusTree
from offchain.engine.core import EngineCore
from offchain.engine.service import Engine
from offchain.keeper.attest import EngineAttestor
from offchain.keeper.bot import Keeper
from offchain.keeper.config import FeeConfig, HedgeConfig, KeeperConfig, RecomputeConfig
from offchain.keeper.hedge import SignedOrder
from offchain.risk.config import load_config
from tests.chain.conftest import ALICE, BOB, CAROL, addr
from tests.chain.harness import Harness, next_nonce, post_status_root, status_root
from tests.chain.test_keeper import book, settle_sent

pytestmark = pytest.mark.chain
CRASH = (38_000.0, 2_800.0)  # BTC −31 %: Alice's 1 BTC long on 20k falls below its maintenance margin


def crash(h: Harness) -> None:
    h.warp(60)
    h.post_prices(CRASH, signers=h.price_signers)  # a move beyond the per-round bound: every signer


def keeper(h: Harness, tmp: Path, rounds: Path, engine: Engine, **over: Any) -> Keeper:
    counterparty = over.pop("counterparty", None)
    cfg = KeeperConfig(rpc_url="", engine_url=None, rounds_dir=rounds, state_file=tmp / "k.json", health_port=None,
                       fees=FeeConfig(max_fee_gwei=500, priority_fee_gwei=1, replace_after_s=30), **over).validate()
    return Keeper(h.p, CAROL, cfg, EngineAttestor(engine), counterparty=counterparty)


def test_recompute_agrees_with_an_honest_engine(h: Harness, tmp_path: Path, engine: Engine) -> None:
    """The engine's round, recomputed by the keeper from events at the round's block: every leaf agrees to
    the unit; the breach it shows is a candidate, not an unproven breach."""
    book(h)
    crash(h)
    result = engine.run_round()
    assert result is not None
    k = keeper(h, tmp_path, tmp_path / "engine" / "rounds", engine, start_auctions=False,
               recompute=RecomputeConfig(enabled=True, tolerance_usd=0.0, tolerance_ratio=0.0))
    k.step()
    rep = k.recomputer.report if k.recomputer else None
    assert rep is not None and rep.round == result.round and rep.round_block == result.block and not rep.skipped
    assert rep.checked == len(result.tree.leaves) >= 3 and rep.disagreements == [] and rep.missing == []
    assert [c.account for c in k.candidates] == [addr(ALICE)] and rep.unproven == []
    m = k.metrics.registry
    assert m.get_sample_value("keeper_recompute_disagreeing") == 0
    assert m.get_sample_value("keeper_unproven_breaches") == 0


def test_recompute_flags_a_root_that_hides_a_breach(h: Harness, tmp_path: Path, engine: Engine) -> None:
    """A root signed by the signers but computed with a lower MM for Alice (she looks healthy in it): the
    keeper's own figures disagree on her margins, and at the head she is below MM by its figures: an
    unproven breach, reported (it has no proof to start on, so it starts nothing)."""
    book(h)
    crash(h)
    ix = Indexer(h.p)
    block = ix.sync()
    honest = EngineCore(load_config(), h.p.deployment).status_leaves(ix.state)
    [alice] = [leaf for leaf in honest if leaf.account == addr(ALICE)]
    assert alice.margin_equity < alice.maintenance_margin
    hidden = type(alice)(alice.account, alice.risk_nonce, alice.margin_equity, alice.mtm_equity,
                         alice.margin_equity // 2, alice.margin_equity // 4, alice.credit_checkpoint)  # fmt: skip
    leaves = [hidden if leaf.account == alice.account else leaf for leaf in honest]
    tree = StatusTree.build(leaves)
    number = h.p.oracle.functions.rootRound().call() + 1
    root = status_root(h, tree.root, round_=number)
    post_status_root(h, root)
    rounds = tmp_path / "rounds"
    rounds.mkdir()
    (rounds / f"{number}.json").write_text(json.dumps({"round": number, "block": block, "root": {
        "issuedAt": root.issued_at}, "tree": tree.dump()}))
    k = keeper(h, tmp_path, rounds, engine, recompute=RecomputeConfig(enabled=True))
    k.step()
    assert k.recomputer is not None
    rep = k.recomputer.report
    assert {d.account for d in rep.disagreements} == {alice.account}
    assert {d.field for d in rep.disagreements} == {"initial_margin", "maintenance_margin"}
    [u] = rep.unproven
    assert u.account == alice.account and u.in_root and u.shortfall > 0
    assert k.candidates == [] and not k.tx.pending
    assert not h.p.liquidator.functions.auctionOf(alice.account).call()[0]
    m = k.metrics.registry
    assert m.get_sample_value("keeper_recompute_disagreeing") == 1
    assert m.get_sample_value("keeper_unproven_breaches") == 1
    health = k.health()["recompute"]
    assert health["disagreeing"] == health["unproven_breaches"] == [alice.account] and health["round"] == number


class Maker:
    """The test's counterparty: signs, with the project's order helpers, the other side of whatever the
    keeper asks, at the keeper's limit price."""

    def __init__(self, h: Harness, key: str) -> None:
        self.h, self.key = h, key
        self.quotes = 0

    def quote(self, instrument: int, keeper_buys: bool, size: int, limit_price: int,
              deadline: int) -> SignedOrder | None:  # fmt: skip
        self.quotes += 1
        o = Order.own(addr(self.key), instrument, not keeper_buys, size, limit_price, next_nonce(), deadline,
                      maker=True)  # fmt: skip
        return SignedOrder(o, sign_order(self.h.p.domain("Exchange"), o, Signer(self.key)))


def test_keeper_hedges_what_it_won_and_stays_above_im(h: Harness, tmp_path: Path, engine: Engine) -> None:
    """After its bid takes part of Alice's BTC long and of her WBTC, the keeper sells the BTC perp to the
    counterparty until its delta (perp and collateral) is within a lot of zero, or of the minimum position;
    every trade carries the engine's attestations; the keeper's margin equity stays at or above its IM."""
    book(h)
    h.deposit(ALICE, "WBTC", 2 * 10**6)  # 0.02 WBTC of collateral: a bid takes a share of it too
    crash(h)
    assert engine.run_round() is not None
    maker = Maker(h, BOB)
    k = keeper(h, tmp_path, tmp_path / "engine" / "rounds", engine, counterparty=maker,
               hedge=HedgeConfig(enabled=True, max_slippage_bps=50))
    assert k.hedger is not None
    for _ in range(12):  # bounded by steps: start, bid, hedge, re-measure
        k.step()
        settle_sent(h, k)
        if k.record.hedges and not k.tx.pending and not k._hedge_due:
            break
    assert k.record.bids and k.record.hedges and maker.quotes >= 1
    perp = h.ids["BTC-PERP"]
    pos = h.positions(k.address)
    won = sum(b["fraction"] for b in k.record.bids)
    assert won > 0
    wbtc = h.p.vault.functions.collateralOf(k.address, h.token("WBTC").address).call()
    assert wbtc > 0  # the keeper holds BTC as collateral now: its perp short offsets that too
    # BTC delta = perp + WBTC (in units): within a lot of zero, or within the Vault's minimum position size
    # (0.01) where a smaller perp position would be refused
    btc = pos.get(perp, (0, 0, 0))[0] / 10**18 + wbtc / 10**8
    deltas = k.hedger.deltas()
    assert abs(deltas[0] - btc) < 1e-9 and abs(btc) <= 0.005 + 1e-9 and abs(deltas.get(1, 0.0)) < 0.001
    [me] = [leaf for leaf in engine.core.status_leaves(engine.refresh()) if leaf.account == k.address]
    assert me.margin_equity >= me.initial_margin  # flat after the hedge: IM 0, cash kept
    m = k.metrics.registry
    assert m.get_sample_value("keeper_hedges_mined_total") == len(k.record.hedges) >= 1
    h.check_conservation()
