"""The risk engine service end to end: orders attested by a running engine, enforced on chain.

Real Anvil, real contracts, real signatures; the engine talks HTTP like any client would.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from offchain.chain.actions import trade_action
from offchain.chain.eip712 import Attestation, Signer
from offchain.chain.indexer import Indexer
from offchain.chain.merkle import StatusTree
from offchain.engine.core import EngineCore, TradeRequest, WithdrawRequest
from offchain.engine.follower import HeadProbe
from offchain.engine.http import serve_signer
from offchain.engine.service import Engine, QuorumError, SignedAttestation, build_engine
from offchain.engine.signer import RemoteSigner, SignerNode, SignJob
from offchain.errors import ConfigError, ContractRevertError
from offchain.risk.config import load_config
from tests.chain.conftest import ALICE, BOB, CAROL, DEPLOYER, addr, local_signers
from tests.chain.harness import USDC, Harness

U = 10**18
CALL, PERP = "BTC-C60K", "BTC-PERP"


def http(url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if resp.headers["Content-Type"] == "application/json" else raw
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def proof_of(doc: dict[str, Any]) -> tuple[tuple[Any, ...], bytes]:
    a = doc["attestation"]
    att = Attestation(
        a["account"], int(a["risk_nonce"]), bytes.fromhex(a["action_hash"][2:]), int(a["margin_equity"]),
        int(a["mtm_equity"]), int(a["initial_margin"]), int(a["maintenance_margin"]), int(a["credit_checkpoint"]),
        bytes.fromhex(a["params_hash"][2:]), int(a["price_round"]), int(a["issued_at"]), int(a["expiry"]),
    )  # fmt: skip
    return att.as_tuple(), bytes.fromhex(doc["signatures"][2:])


def engine_trade(h: Harness, api: str, maker_key: str, taker_key: str, name: str, maker_buys: bool, size: int,
                 price_usd: str) -> Any:  # fmt: skip
    """Both sides ask the engine for an attestation over HTTP, then a relayer submits the trade."""
    ins = h.ids[name]
    price = int(float(price_usd) * 1000) * 10**15
    maker = h.order(maker_key, ins, maker_buys, size, price, maker=True)
    taker = h.order(taker_key, ins, not maker_buys, size, price)
    units = f"{size / U:.3f}"
    docs = []
    for key, buys, role in ((maker_key, maker_buys, "maker"), (taker_key, not maker_buys, "taker")):
        status, doc = http(api + "/attest/trade", {"account": addr(key), "instrument": ins,
                                                   "size": units if buys else "-" + units, "price": price_usd,
                                                   "role": role})  # fmt: skip
        assert status == 200, doc
        docs.append(proof_of(doc))
    fn = h.p.exchange.functions.trade(h.signed(maker, maker_key), h.signed(taker, taker_key), size, *docs)
    return h.p.send(fn, DEPLOYER)


def test_orders_attested_by_the_engine_are_enforced_by_the_contracts(h: Harness, engine: Engine, api: str) -> None:
    h.deposit(ALICE, "USDC", 200_000 * USDC)
    h.deposit(BOB, "USDC", 50_000 * USDC)
    engine_trade(h, api, ALICE, BOB, CALL, False, 2 * U, "300")  # Alice writes 2 calls to Bob (model: 270.84)
    view = h.p.lens.functions.getAccount(addr(BOB)).call()
    assert view[5] == [(h.ids[CALL], 2 * U, 0, 0)]
    # the engine's status for Alice now shows the short calls' margin
    engine.refresh()
    leaves = {leaf.account: leaf for leaf in engine.core.status_leaves(engine.indexer.state)}
    alice = leaves[addr(ALICE)]
    assert alice.initial_margin > 0 and alice.maintenance_margin < alice.initial_margin
    assert alice.risk_nonce == 1
    # a trade that would leave Carol under-margined is not signed: 422 with the shortfall ...
    h.deposit(CAROL, "USDC", 100 * USDC)
    body = {"account": addr(CAROL), "instrument": h.ids[PERP], "size": "-5", "price": "55000", "role": "taker"}
    status, doc = http(api + "/attest/trade", body)  # Carol shorts 5 BTC on 100 USDC
    assert (status, doc["field"]) == (422, "size"), doc
    shortfall = int(doc["shortfall"])
    assert int(doc["margin_equity"]) + shortfall == int(doc["required"]) > 0
    # ... and the contract refuses the same figures, had they been signed
    state = engine.refresh()
    req = TradeRequest(addr(CAROL), h.ids[PERP], -5 * U, 55_000 * U, 137_500_000)
    att = engine.core.attest_trade(state, req, state.timestamp, state.timestamp + 60)
    assert att.margin_equity - att.initial_margin == -shortfall
    signed = SignedAttestation(att, engine._collect(SignJob(state.block, att, req)), state.block)
    bob_side = h.order(BOB, h.ids[PERP], True, 5 * U, 55_000 * U, maker=True)
    carol_side = h.order(CAROL, h.ids[PERP], False, 5 * U, 55_000 * U)
    bob_status, bob_doc = http(api + "/attest/trade", {**body, "account": addr(BOB), "size": "5", "role": "maker"})
    assert bob_status == 200, bob_doc
    fn = h.p.exchange.functions.trade(h.signed(bob_side, BOB), h.signed(carol_side, CAROL), 5 * U, proof_of(bob_doc),
                                      signed.proof())  # fmt: skip
    with pytest.raises(ContractRevertError) as err:
        h.p.send(fn, DEPLOYER)
    assert err.value.error_name == "RiskOracle_InsufficientMargin"
    # deposits leave the risk nonce alone: once Carol covers the shortfall, the engine signs
    h.deposit(CAROL, "USDC", shortfall)
    status, doc = http(api + "/attest/trade", body)
    assert status == 200, doc
    assert int(doc["attestation"]["margin_equity"]) >= int(doc["attestation"]["initial_margin"])


def test_withdrawals_attested_by_the_engine(h: Harness, engine: Engine, api: str) -> None:
    h.deposit(ALICE, "USDC", 100_000 * USDC)
    h.deposit(BOB, "USDC", 100_000 * USDC)
    engine_trade(h, api, ALICE, BOB, PERP, False, U, "55000")
    usdc = h.p.tokens["USDC"].address
    status, doc = http(api + "/attest/withdraw", {"account": addr(ALICE), "token": "USDC", "amount": "1000"})
    assert status == 200, doc
    h.p.send(h.p.vault.functions.withdraw(usdc, 1000 * USDC, addr(ALICE), proof_of(doc)), ALICE)
    # taking almost everything out would leave equity below IM: the engine refuses to sign ...
    cash = h.cash(addr(ALICE)) // USDC - 1
    status, doc = http(api + "/attest/withdraw", {"account": addr(ALICE), "token": usdc, "amount": str(cash)})
    assert (status, doc["field"]) == (422, "amount"), doc
    assert "initial margin" in doc["error"] and int(doc["shortfall"]) > 0
    # ... and the chain refuses the same figures, had they been signed
    state = engine.refresh()
    req = WithdrawRequest(addr(ALICE), usdc, cash * USDC)
    att = engine.core.attest_withdraw(state, req, state.timestamp, state.timestamp + 60)
    sigs = engine._collect(SignJob(state.block, att, req))
    with pytest.raises(ContractRevertError, match="RiskOracle_InsufficientMargin"):
        h.p.send(h.p.vault.functions.withdraw(usdc, cash * USDC, addr(ALICE), (att.as_tuple(), sigs)), ALICE)
    # more than the account holds: refused before any computation, as the Vault would
    status, doc = http(api + "/attest/withdraw", {"account": addr(ALICE), "token": "WETH", "amount": "1"})
    assert (status, doc["field"]) == (400, "amount"), doc


def test_rounds_post_roots_and_publish_leaves_for_keepers(h: Harness, engine: Engine, api: str) -> None:
    h.deposit(ALICE, "USDC", 100_000 * USDC)
    h.deposit(BOB, "USDC", 100_000 * USDC)
    engine_trade(h, api, ALICE, BOB, CALL, False, U, "300")
    first = engine.run_round()
    assert first is not None and first.round == 1
    assert h.p.oracle.functions.statusRoot().call() == first.tree.root
    # a keeper rebuilds the proof from the published leaves alone
    status, doc = http(api + "/round/latest")
    assert status == 200
    keeper_tree = StatusTree.load(doc["tree"])
    assert keeper_tree.root == first.tree.root
    alice = addr(ALICE)
    status, served = http(api + "/proof/" + alice)
    assert served["proof"] == ["0x" + p.hex() for p in keeper_tree.proof(alice)]
    leaf = keeper_tree.leaf(alice)
    fn = h.p.vault.functions.withdrawQuoteWithStatus(10 * USDC, alice, leaf.as_tuple(), keeper_tree.proof(alice))
    h.p.send(fn, ALICE)
    assert (engine.state_dir / "rounds" / "1.json").exists()
    assert engine.run_round().round == 2  # type: ignore[union-attr]


def test_a_crash_shows_up_in_liquidatable(h: Harness, engine: Engine, api: str) -> None:
    h.deposit(ALICE, "USDC", 12_000 * USDC)
    h.deposit(BOB, "USDC", 100_000 * USDC)
    engine_trade(h, api, BOB, ALICE, PERP, False, U, "55000")  # Alice long 1 BTC
    engine.run_round()
    assert http(api + "/liquidatable")[1] == {"accounts": []}
    assert engine.metrics.registry.get_sample_value("pmsim_liquidatable_accounts") == 0
    h.warp(60)
    h.post_prices((47_000.0, 2_400.0), signers=h.price_signers)  # -14.5 %: every signer signs; margin gone
    engine.run_round()
    _, doc = http(api + "/liquidatable")
    assert [a["leaf"][0] for a in doc["accounts"]] == [addr(ALICE)]
    leaf = doc["accounts"][0]["leaf"]
    assert int(leaf[2]) < int(leaf[5])  # margin equity below maintenance margin
    assert engine.metrics.registry.get_sample_value("pmsim_liquidatable_accounts") == 1  # as /liquidatable


def test_below_quorum_nothing_is_posted(h: Harness, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    h.deposit(ALICE, "USDC", 1_000 * USDC)
    lonely = build_engine(h.p, local_signers(h, 1), DEPLOYER, tmp_path)  # quorum is 2
    with caplog.at_level(logging.ERROR, logger="pmsim.engine"):
        assert lonely.run_round() is None
    assert "below quorum" in caplog.text
    assert h.p.oracle.functions.rootRound().call() == 0
    with pytest.raises(QuorumError):
        lonely.attest_withdraw(addr(ALICE), h.p.tokens["USDC"].address, USDC)


def test_a_restarted_engine_neither_skips_nor_repeats_a_round(h: Harness, tmp_path: Path) -> None:
    h.deposit(ALICE, "USDC", 1_000 * USDC)
    first = build_engine(h.p, local_signers(h), DEPLOYER, tmp_path)
    assert [first.run_round().round, first.run_round().round] == [1, 2]  # type: ignore[union-attr]
    # a crash after signing and before posting: the post fails (a relayer with no ether) ...
    broke = Account.create().key.hex()
    crashing = build_engine(h.p, local_signers(h), broke, tmp_path)
    with pytest.raises(Exception, match=r"(?i)insufficient|funds"):
        crashing.run_round()
    # ... and a fresh process with the same state directory carries on with round 3
    again = build_engine(h.p, local_signers(h), DEPLOYER, tmp_path)
    assert again.latest is not None and again.latest.round == 2  # reloaded from the published tree
    assert again.run_round().round == 3  # type: ignore[union-attr]
    posted = h.p.oracle.events.RootPosted().get_logs(from_block=0)
    assert [e["args"]["round"] for e in posted] == [1, 2, 3]


def test_independent_signers_recompute_and_refuse_what_differs(h: Harness, engine: Engine, tmp_path: Path) -> None:
    h.deposit(ALICE, "USDC", 100_000 * USDC)
    h.deposit(BOB, "USDC", 100_000 * USDC)
    call, size, price = h.ids[CALL], U, 1_250 * U
    h.trade(ALICE, h.order(ALICE, call, False, size, price), BOB, h.order(BOB, call, True, size, price), size)
    cfg = load_config()
    domain = h.p.domain("RiskOracle")

    def node(i: int, mm_factor: float | None = None) -> SignerNode:
        config = cfg if mm_factor is None else _with_mm(cfg, mm_factor)
        return SignerNode(h.risk_signers[i]._key.to_bytes(), EngineCore(config, h.p.deployment), Indexer(h.p), domain)

    good = [node(0), node(1)]
    servers = [serve_signer(n) for n in good]
    urls = [f"http://127.0.0.1:{s.server_address[1]}" for s in servers]
    remote = [RemoteSigner(url, n.address) for url, n in zip(urls, good, strict=True)]
    try:
        engine.signers = list(remote)
        result = engine.run_round()
        assert result is not None and h.p.oracle.functions.statusRoot().call() == result.tree.root
        # a signer configured differently computes another root and refuses to sign this one
        engine.signers = [remote[0], node(2, mm_factor=0.5)]
        assert engine.run_round() is None
        assert h.p.oracle.functions.rootRound().call() == 1
        state = engine.refresh()
        att = engine.core.attest_status(state, addr(ALICE), state.timestamp, state.timestamp + 60)
        with pytest.raises(Exception, match="differs"):
            node(2, mm_factor=0.5).sign(SignJob(state.block, attestation=att))
        assert len(good[0].sign(SignJob(state.block, attestation=att))) == 65
    finally:
        for s in servers:
            s.shutdown()


def _with_mm(cfg: Any, mm: float) -> Any:
    from dataclasses import replace

    return replace(cfg, mm_factor=mm)


def test_bad_requests_get_clear_errors(h: Harness, api: str) -> None:
    cases = [
        ({"instrument": 1, "size": "1", "price": "1", "role": "maker"}, "account"),
        ({"account": "0x12", "instrument": 1, "size": "1", "price": "1", "role": "maker"}, "account"),
        ({"account": addr(ALICE), "instrument": 999, "size": "1", "price": "1", "role": "maker"}, "instrument"),
        ({"account": addr(ALICE), "instrument": 1, "size": "0.0001", "price": "1", "role": "maker"}, "size"),
        ({"account": addr(ALICE), "instrument": 1, "size": "1", "price": "-5", "role": "maker"}, "price"),
        ({"account": addr(ALICE), "instrument": 1, "size": "1", "price": "50000", "role": "both"}, "role"),
    ]
    for body, field in cases:
        status, doc = http(api + "/attest/trade", body)
        assert (status, doc.get("field")) == (400, field), (body, doc)
    status, doc = http(api + "/attest/withdraw", {"account": addr(ALICE), "token": "DOGE", "amount": "1"})
    assert (status, doc["field"]) == (400, "token")
    assert http(api + "/nope")[0] == 404
    assert http(api + "/proof/0xzz")[1]["field"] == "account"
    status, health = http(api + "/health")
    assert status == 200 and health["quorum"] == 2 and len(health["signers"]) == 3
    status, metrics = http(api + "/metrics")
    assert status == 200 and b"pmsim_attestation_errors_total" in metrics


def test_a_configuration_the_chain_does_not_bind_is_refused(h: Harness, tmp_path: Path) -> None:
    other = tmp_path / "risk.toml"
    text = Path("config/risk.toml").read_text().replace("mm_factor = 0.8", "mm_factor = 0.7")
    other.write_text(text.replace('"../data/market/', f'"{Path.cwd()}/data/market/'))
    with pytest.raises(ConfigError, match="engine_config_hash"):
        build_engine(h.p, local_signers(h), DEPLOYER, tmp_path, config_path=other)


def test_the_same_block_gives_the_same_root_in_two_processes(h: Harness, engine: Engine) -> None:
    h.deposit(ALICE, "USDC", 10_000 * USDC)
    h.deposit(BOB, "WETH", 3 * U)
    state = engine.refresh()
    other = EngineCore(load_config(), h.p.deployment)
    ix = Indexer(h.p)
    ix.sync(to_block=state.block)
    a = StatusTree.build(engine.core.status_leaves(state)).root
    b = StatusTree.build(other.status_leaves(ix.state)).root
    assert a == b
    assert Signer(h.risk_signers[0]._key.to_bytes()).address == h.risk_signers[0].address


def test_pmsim_margin_reports_devnet_accounts(h: Harness, tmp_path: Path) -> None:
    """``pmsim margin --account``: the same figures the engine attests, from the chain's events."""
    from typer.testing import CliRunner

    from offchain.cli import app

    h.deposit(ALICE, "USDC", 100_000 * USDC)
    h.deposit(BOB, "USDC", 100_000 * USDC)
    call, size, price = h.ids[CALL], U, 1_250 * U
    h.trade(ALICE, h.order(ALICE, call, False, size, price), BOB, h.order(BOB, call, True, size, price), size)
    dep = tmp_path / "deployment.json"
    h.p.deployment.save(dep)
    runner = CliRunner()
    result = runner.invoke(app, ["margin", "--account", addr(ALICE), "--deployment", str(dep), "--json",
                                 "--no-liquidation"])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    (alice,) = report["accounts"]
    assert alice["account"] == addr(ALICE)
    ix = Indexer(h.p)
    ix.sync()
    leaves = {leaf.account: leaf for leaf in EngineCore(load_config(), h.p.deployment).status_leaves(ix.state)}
    leaf, shown = leaves[addr(ALICE)], alice["attested"]
    assert leaf.initial_margin > 0
    assert (shown["im"], shown["mm"], shown["margin_equity"]) == (  # exactly the figures the engine signs
        leaf.initial_margin, leaf.maintenance_margin, leaf.margin_equity)
    bad = runner.invoke(app, ["margin", "--account", "0x12", "--deployment", str(dep)])
    assert bad.exit_code == 2 and "account" in bad.output
    idle = runner.invoke(app, ["margin", "--account", addr(CAROL), "--deployment", str(dep)])
    assert idle.exit_code == 2 and "no activity" in idle.output


def test_local_signers_sign_exactly_as_the_reference_signer(h: Harness, engine: Engine) -> None:
    """The engine's fast path (coincurve key kept, separator hashed once) gives the same bytes."""
    from offchain.chain.eip712 import digest

    h.deposit(ALICE, "USDC", 10_000 * USDC)
    state = engine.refresh()
    domain = h.p.domain("RiskOracle")
    for i in range(5):
        att = engine.core.attest_status(state, addr(ALICE), state.timestamp + i, state.timestamp + 60)
        job = SignJob(state.block, attestation=att)
        for fast, ref in zip(local_signers(h), h.risk_signers[:3], strict=True):
            assert fast.sign(job) == Signer(ref._key.to_bytes()).sign(digest(domain, att.struct_hash()))


def test_engine_attests_only_fills_within_the_bands(h: Harness, engine: Engine, api: str) -> None:
    """The trade attestation binds the fill price, so the engine's signers hold every fill to the bands:
    a perpetual outside the Exchange's linear band, an option outside its no-arbitrage bounds or more
    than bands.option · S (1 % of 55,000 = 550 USD) from the engine's model price gets a 400 naming
    `price`; a fill near the model price is attested and fills on chain."""
    h.deposit(ALICE, "USDC", 200_000 * USDC)
    h.deposit(BOB, "USDC", 200_000 * USDC)
    state = engine.refresh()
    model = engine.core.engine(state)
    call = h.ids[CALL]
    mark = float(model.valuation.mark[model.instruments.index_of([call])[0]])
    base = {"account": addr(ALICE), "instrument": h.ids[PERP], "size": "1", "role": "maker"}
    for price in ("60500.001", "49499.999"):  # just outside ±10 % of 55,000
        status, doc = http(api + "/attest/trade", {**base, "price": price})
        assert (status, doc["field"]) == (400, "price"), doc
        assert "band" in doc["error"]
    status, doc = http(api + "/attest/trade", {**base, "price": "60500"})
    assert status == 200, doc
    opt = {**base, "instrument": call}
    assert mark < 550  # this call is worth less than the band: only its upper side can be crossed
    status, doc = http(api + "/attest/trade", {**opt, "price": f"{mark + 551:.3f}"})
    assert (status, doc["field"]) == (400, "price"), doc
    assert "model price" in doc["error"]
    status, doc = http(api + "/attest/trade", {**opt, "price": "60500.001"})  # above S(1 + 10 %): no-arbitrage
    assert (status, doc["field"]) == (400, "price"), doc
    engine_trade(h, api, ALICE, BOB, CALL, False, U, f"{mark + 549:.3f}")  # within the band: fills
    assert h.positions(addr(BOB))[call][0] == U


def test_per_block_memo_never_serves_a_stale_figure(h: Harness, engine: Engine, api: str) -> None:
    """Each trade attestation compares the IM after the fill with the account's IM before it, which the
    core remembers per (block, account) (:meth:`EngineCore.status_figures`). A new block, a trade or a
    deposit gives new figures, each equal to what a core with no memo computes on the same state; an
    attestation served after a change equals a fresh core's."""
    h.deposit(ALICE, "USDC", 200_000 * USDC)
    h.deposit(BOB, "USDC", 200_000 * USDC)

    def fresh(state: Any, account: str) -> Any:
        return EngineCore(engine.core.config, h.p.deployment).status_figures(state, state.accounts[account])

    state = engine.refresh()
    alice = state.accounts[addr(ALICE)]
    before = engine.core.status_figures(state, alice)
    assert engine.core.status_figures(state, alice) is before  # remembered within the block
    assert before == fresh(state, addr(ALICE))
    # the same block's account as another object (a re-published snapshot): computed again, same figures
    again = engine.core.status_figures(state, state.copy().accounts[addr(ALICE)])
    assert again is not before and again == before
    # a trade changes Alice's book: the next block's figures are new, and a fresh core's
    engine_trade(h, api, ALICE, BOB, PERP, False, U, "55000")
    state2 = engine.refresh()
    after_trade = engine.core.status_figures(state2, state2.accounts[addr(ALICE)])
    assert after_trade.im > before.im and after_trade == fresh(state2, addr(ALICE))
    # a deposit adds 1,000 USD of equity and nothing else
    h.deposit(ALICE, "USDC", 1_000 * USDC)
    state3 = engine.refresh()
    after_deposit = engine.core.status_figures(state3, state3.accounts[addr(ALICE)])
    assert after_deposit == fresh(state3, addr(ALICE))
    assert abs(after_deposit.margin_equity - after_trade.margin_equity - 1_000 * USDC) <= 1
    assert after_deposit.im == after_trade.im
    # the reduce-IM judgement uses the current figures: a closing fill attested by the engine (memo warm
    # from the blocks before) is the fresh core's attestation, flagged as lowering IM
    fee = engine._fee(state3, U, 55_000 * U, "taker")
    req = TradeRequest(addr(ALICE), h.ids[PERP], U, 55_000 * U, fee)
    served = engine.core.attest_trade(state3, req, state3.timestamp, state3.timestamp + 60)
    cold = EngineCore(engine.core.config, h.p.deployment).attest_trade(state3, req, state3.timestamp,
                                                                      state3.timestamp + 60)  # fmt: skip
    assert served == cold
    assert served.action_hash == trade_action(addr(ALICE), h.ids[PERP], U, 55_000 * U, fee, True)


def test_the_follower_finds_a_same_height_branch_in_the_background(h: Harness, engine: Engine, tmp_path: Path) -> None:
    """A head check compares heights only; the periodic resync, in a background thread that no request
    waits for, checks the indexed block's hash: a branch of the same height replaces the one indexed
    (the indexer re-indexes it) and the checkpoint is written from there too."""
    h.deposit(ALICE, "USDC", 1_000 * USDC)
    follower = engine.follower
    follower.resync = follower.save_every = 0.2
    engine.start_following()
    try:
        snap = h.snapshot()
        h.deposit(ALICE, "USDC", 777 * USDC)  # branch A
        on_a = engine.state()  # every block mined before the call
        assert on_a.block == h.p.w3.eth.block_number
        cash_a = on_a.accounts[addr(ALICE)].cash
        h.revert_to(snap)
        h.deposit(BOB, "USDC", 5 * USDC)  # branch B: as many blocks, other hashes
        assert h.p.w3.eth.block_number == on_a.block  # the same height: no head check sees a change
        checkpoint = tmp_path / "engine" / "indexer.json"
        for _ in range(600):  # the background resync finds branch B (bounded wait on the condition)
            snap_b = follower.snapshot
            if (snap_b.block, snap_b.block_hash) == (on_a.block, h.p.w3.eth.get_block(on_a.block)["hash"].to_0x_hex()) \
                    and json.loads(checkpoint.read_text())["state"]["block_hash"] == snap_b.block_hash:  # fmt: skip
                break
            time.sleep(0.1)
        assert snap_b.block == on_a.block and snap_b.block_hash != on_a.block_hash
        assert engine.indexer.reorgs == 1
        assert snap_b.accounts[addr(ALICE)].cash == cash_a - 777 * USDC and addr(BOB) in snap_b.accounts
        assert engine.state().block_hash == snap_b.block_hash  # requests are answered on branch B
        h.deposit(BOB, "USDC", 5 * USDC)  # and see every block mined on it before they arrive
        assert engine.state().block == h.p.w3.eth.block_number
    finally:
        engine.stop_following()


def test_the_head_probe_follows_the_chain_on_one_connection(h: Harness) -> None:
    """The follower's ``eth_blockNumber`` on a raw keep-alive socket: the node's head as blocks are mined,
    one connection for many probes, reopened once when the node has closed it."""
    probe = HeadProbe(h.p)
    assert probe() == h.p.w3.eth.block_number
    sock = probe._sock
    for _ in range(3):
        h.warp(1)  # mines a block
        assert probe() == h.p.w3.eth.block_number
    assert probe._sock is sock is not None  # kept alive
    sock.shutdown(socket.SHUT_RDWR)  # as a node closing an idle connection would
    h.warp(1)
    assert probe() == h.p.w3.eth.block_number and probe._sock is not sock
    probe.close()
