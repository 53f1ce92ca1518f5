"""Governance (F-11): every owner role behind a TimelockController, a guardian that may only tighten,
and ``pmsim admin schedule | pending | execute | cancel``.

The timelocked deployment runs on its own Anvil (the suite's shared deployment keeps instant admin
for its fixtures); guardian rules that need no timelock run on the shared one."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from offchain.chain import governance as gov
from offchain.chain.anvil import Anvil, start_anvil
from offchain.chain.client import Deployment, Protocol, connect
from offchain.chain.deploy import CANCELLER_ROLE, EXECUTOR_ROLE, PROPOSER_ROLE, TIMELOCK, write_deployment
from offchain.chain.devnet import bootstrap
from offchain.chain.params import WAD, LiquidationParams, OnchainParams
from offchain.cli import app
from offchain.errors import InputError
from tests.chain.conftest import ALICE, BOB, CAROL, DEPLOYER, GENESIS, SUITE_LIQUIDATION, addr
from tests.chain.harness import Harness, reverts, signer_from_seed

pytestmark = pytest.mark.chain
ROOT = Path(__file__).resolve().parents[2]
DAY = 86_400
DELAY = 2 * DAY
ADMIN_ROLE = b"\x00" * 32
READY = (1 << gov.OpState.READY).to_bytes(32, "big")  # the expected-states bitmap of an early execute


def pmsim(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def refused(result: Result, field: str) -> str:
    assert isinstance(result.exception, InputError), (result.output, result.exception)
    assert result.exception.field == field, result.exception
    return str(result.exception)


# ---------------------------------------------------------------------- a timelocked deployment
@pytest.fixture(scope="module")
def _chain() -> Iterator[Anvil]:
    with start_anvil(timestamp=GENESIS) as node:
        yield node


@pytest.fixture(scope="module")
def _timelocked(_chain: Anvil, tmp_path_factory: pytest.TempPathFactory) -> tuple[Harness, Path]:
    """The devnet as ``pmsim deploy`` makes it: two-day timelock, the deployer proposes and executes,
    Carol is the guardian (pauses, tightens, cancels)."""
    dev = bootstrap(connect(_chain.url), DEPLOYER, rpc_url=_chain.url, guardian=addr(CAROL))
    h = Harness(dev.protocol, DEPLOYER, dev.risk_signers, dev.price_signers, dev.instruments)
    for key in (ALICE, BOB):
        h.fund(key, "USDC", 10**6 * 10**6)
        h.deposit(key, "USDC", 10**5 * 10**6)
    return h, write_deployment(h.p, tmp_path_factory.mktemp("gov") / "timelocked.json")


@pytest.fixture
def tl(_timelocked: tuple[Harness, Path]) -> Iterator[tuple[Harness, str]]:
    """The timelocked deployment and its deployment file, reverted after each test."""
    h, path = _timelocked
    snap = h.snapshot()
    try:
        yield h, str(path)
    finally:
        h.revert_to(snap)


def _owned(h: Harness) -> dict[str, object]:
    return {n: c for n, c in h.p.c.items() if any(i.get("name") == "owner" for i in c.abi)}


def test_every_owner_role_belongs_to_the_timelock(tl: tuple[Harness, str]) -> None:
    """F-11, I-28: after deployment every contract with an owner() is owned by the timelock (nothing pending),
    whose delay is two days and which administers itself; the deployer proposes, executes and cancels,
    the guardian may only cancel; nobody else holds a role."""
    h, _ = tl
    timelock = h.p.c[TIMELOCK].functions
    owned = _owned(h)
    assert {"RiskParams", "PriceFeed", "Vault", "Instruments", "InsuranceFund"} <= set(owned)
    for name, c in owned.items():
        assert c.functions.owner().call() == h.p.c[TIMELOCK].address, name  # type: ignore[attr-defined]
        assert int(c.functions.pendingOwner().call(), 16) == 0, name  # type: ignore[attr-defined]
    assert timelock.getMinDelay().call() == DELAY
    deployer, carol = addr(DEPLOYER), addr(CAROL)
    assert timelock.hasRole(ADMIN_ROLE, h.p.c[TIMELOCK].address).call()
    assert not timelock.hasRole(ADMIN_ROLE, deployer).call()
    assert all(timelock.hasRole(r, deployer).call() for r in (PROPOSER_ROLE, EXECUTOR_ROLE, CANCELLER_ROLE))
    assert timelock.hasRole(CANCELLER_ROLE, carol).call()
    assert not any(timelock.hasRole(r, carol).call() for r in (PROPOSER_ROLE, EXECUTOR_ROLE))
    for c in (h.p.vault, h.p.params, h.p.feed):
        assert c.functions.guardian().call() == carol


def test_F11_signer_takeover_waits_in_the_timelock_and_is_cancelled(tl: tuple[Harness, str]) -> None:
    """F-11 replayed on a timelocked deployment (I-28): the former owner adds its own signer and sets the
    quorum to 1 — refused at once (it owns nothing). Scheduled instead, the change is visible for two
    days (``pmsim admin pending`` lists it decoded, the CallScheduled events decode), executing it
    early is refused, and the guardian cancels it: the signer set never changes."""
    h, dep = tl
    v = h.p.vault.functions
    attacker = signer_from_seed("F-11 attacker").address
    deployer = addr(DEPLOYER)
    with reverts("OwnableUnauthorizedAccount", deployer):
        h.send(v.addSigner(attacker))
    with reverts("OwnableUnauthorizedAccount", deployer):
        h.send(v.setQuorum(1))
    with reverts("OwnableUnauthorizedAccount", deployer):
        h.send(h.p.feed.functions.setQuorum(1))
    exploit = [gov.encode_call(h.p, "Vault", "addSigner", [attacker]),
               gov.encode_call(h.p, "Vault", "setQuorum", ["1"])]  # fmt: skip
    op = gov.schedule(h.p, DEPLOYER, exploit)
    scheduled_at = int(h.p.w3.eth.get_block(op.scheduled_block)["timestamp"])
    assert (op.state, op.eta, op.calls) == (gov.OpState.WAITING, scheduled_at + DELAY, tuple(exploit))
    assert h.p.c[TIMELOCK].functions.hashOperationBatch([c.target for c in exploit], [0, 0],
                                                        [c.data for c in exploit], op.predecessor,
                                                        op.salt).call() == op.id  # fmt: skip
    # seen: the timelock's own events decode to the two calls, and `pending` lists them with the ETA
    logs = h.p.c[TIMELOCK].events.CallScheduled().get_logs(from_block=op.scheduled_block)
    assert [(e["args"]["target"], bytes(e["args"]["data"])) for e in logs] == [(c.target, c.data) for c in exploit]
    assert [gov.describe_call(h.p, e["args"]["target"], bytes(e["args"]["data"])) for e in logs] == [
        f"Vault.addSigner(signer={attacker})", "Vault.setQuorum(quorum_=1)"]
    listed = json.loads(ok(pmsim("admin", "pending", "--json", "--deployment", dep)))["operations"]
    assert [(o["id"], o["state"], o["eta"]) for o in listed] == [(op.hex_id, "waiting", op.eta)]
    assert [c["call"] for c in listed[0]["calls"]] == [f"Vault.addSigner(signer={attacker})",
                                                       "Vault.setQuorum(quorum_=1)"]  # fmt: skip
    text = ok(pmsim("admin", "pending", "--deployment", dep))
    assert op.hex_id in text and "waiting" in text and f"addSigner(signer={attacker})" in text
    # executing early is refused, on chain and by the CLI
    with reverts("TimelockUnexpectedOperationState", op.id, READY):
        gov.execute(h.p, DEPLOYER, op)
    h.warp(DELAY - 120)
    with reverts("TimelockUnexpectedOperationState", op.id, READY):
        gov.execute(h.p, DEPLOYER, op)
    assert "not ready: waiting" in refused(pmsim("admin", "execute", op.hex_id[:12], "--deployment", dep), "id")
    # cancelled by the guardian during the delay
    with reverts("AccessControlUnauthorizedAccount", addr(BOB), CANCELLER_ROLE):
        gov.cancel(h.p, BOB, op)
    assert f"cancelled {op.hex_id}" in ok(pmsim("admin", "cancel", op.hex_id, "--key", CAROL, "--deployment", dep))
    h.warp(DAY)
    with reverts("TimelockUnexpectedOperationState", op.id, READY):
        gov.execute(h.p, DEPLOYER, op)
    assert (v.isSigner(attacker).call(), v.quorum().call(), v.signerCount().call()) == (False, 2, 3)
    assert json.loads(ok(pmsim("admin", "pending", "--json", "--deployment", dep)))["operations"] == []
    everything = json.loads(ok(pmsim("admin", "pending", "--all", "--json", "--deployment", dep)))["operations"]
    assert [o["state"] for o in everything if o["id"] == op.hex_id] == ["cancelled"]


def test_a_scheduled_change_runs_after_the_delay(tl: tuple[Harness, str]) -> None:
    """``pmsim admin schedule RiskParams setParams --set ...`` changes one field of the struct on chain,
    runs once its ETA has passed (not before), and is gone from ``pending`` once done."""
    h, dep = tl
    rp = h.p.params.functions
    before = OnchainParams(*rp.params().call())
    out = ok(pmsim("admin", "schedule", "RiskParams", "setParams", "--set", "price_tolerance=0.02e18",
                   "--deployment", dep))  # fmt: skip
    [op] = gov.pending(h.p)
    assert op.hex_id in out and "RiskParams.setParams(" in out
    c = op.calls[0]
    assert h.p.c[TIMELOCK].functions.hashOperation(c.target, 0, c.data, op.predecessor, op.salt).call() == op.id
    assert op.calls[0].data == gov.encode_call(h.p, "RiskParams", "setParams",
                                               sets=["price_tolerance=20000000000000000"]).data  # fmt: skip
    assert "not ready" in refused(pmsim("admin", "execute", op.hex_id, "--deployment", dep), "id")
    h.warp(DELAY)
    out = ok(pmsim("admin", "execute", op.hex_id, "--deployment", dep))
    assert f"executed {op.hex_id}" in out
    assert OnchainParams(*rp.params().call()) == replace(before, price_tolerance=WAD // 50)
    assert gov.pending(h.p) == [] and gov.find_operation(h.p, op.hex_id).state == gov.OpState.DONE
    # a positional call: the PriceFeed's quorum, scheduled and executed
    ok(pmsim("admin", "schedule", "PriceFeed", "setQuorum", "3", "--deployment", dep))
    [op] = gov.pending(h.p)
    h.warp(DELAY)
    gov.execute(h.p, DEPLOYER, op)
    assert h.p.feed.functions.quorum().call() == 3
    # a batch from a file: a new risk signer and a higher quorum, executed together
    new = signer_from_seed("a fourth risk signer").address
    batch = Path(dep).with_name("rotation.json")
    batch.write_text(json.dumps([{"contract": "Vault", "function": "addSigner", "args": [new]},
                                 {"contract": "Vault", "function": "setQuorum", "args": [3]}]))  # fmt: skip
    out = ok(pmsim("admin", "schedule-batch", str(batch), "--deployment", dep))
    assert f"1. Vault.addSigner(signer={new})" in out and "2. Vault.setQuorum(quorum_=3)" in out
    [op] = gov.pending(h.p)
    h.warp(DELAY)
    ok(pmsim("admin", "execute", op.hex_id, "--deployment", dep))
    v = h.p.vault.functions
    assert (v.isSigner(new).call(), v.quorum().call(), v.signerCount().call()) == (True, 3, 4)
    batch.write_text(json.dumps([{"contract": "Vault"}]))
    refused(pmsim("admin", "schedule-batch", str(batch), "--deployment", dep), "file[0]")
    batch.write_text("{")
    refused(pmsim("admin", "schedule-batch", str(batch), "--deployment", dep), "file")


def test_guardian_tightens_a_timelocked_deployment_at_once(tl: tuple[Harness, str]) -> None:
    """The guardian needs no timelock to tighten: a shorter attestation life and a higher haircut take
    effect in the same block; the timelock's own proposer cannot do it."""
    h, _ = tl
    rp = h.p.params.functions
    tighter = replace(OnchainParams(*rp.params().call()), attestation_max_age=60)
    with reverts("Guarded_OnlyGuardian", addr(DEPLOYER)):
        h.send(rp.tightenParams(tighter.as_tuple()))
    h.send(rp.tightenParams(tighter.as_tuple()), CAROL)
    assert OnchainParams(*rp.params().call()) == tighter
    weth = h.p.deployment.tokens["WETH"].address
    h.send(rp.raiseHaircut(weth, WAD // 5), CAROL)
    assert rp.collateral(weth).call() == [1, WAD // 5]


def test_admin_cli_names_the_field_at_fault(tl: tuple[Harness, str]) -> None:
    h, dep = tl
    common = ("--deployment", dep)
    assert "unknown contract" in refused(pmsim("admin", "schedule", "Nope", "setParams", *common), "contract")
    assert "no function" in refused(pmsim("admin", "schedule", "RiskParams", "setParms", *common), "function")
    assert "takes 1 arguments" in refused(pmsim("admin", "schedule", "Vault", "setQuorum", *common), "args")
    refused(pmsim("admin", "schedule", "Vault", "setQuorum", "1.5", *common), "quorum_")
    refused(pmsim("admin", "schedule", "Vault", "addSigner", "0x1234", *common), "signer")
    refused(pmsim("admin", "schedule", "RiskParams", "setParams", "--set", "nope=1", *common), "set")
    refused(pmsim("admin", "schedule", "RiskParams", "setParams", "--set", "maker_fee=abc", *common), "maker_fee")
    refused(pmsim("admin", "schedule", "PriceFeed", "setConfig", "--set", "max_move=1", *common), "set")
    refused(pmsim("admin", "schedule", "Vault", "setQuorum", "1", "--delay", "-1", *common), "delay")
    refused(pmsim("admin", "execute", "0xzz", *common), "id")
    refused(pmsim("admin", "cancel", "0x" + "ab" * 32, *common), "id")
    # a delay below the minimum is the timelock's own refusal, decoded
    with reverts("TimelockInsufficientDelay", 60, DELAY):
        gov.schedule(h.p, DEPLOYER, [gov.encode_call(h.p, "Vault", "setQuorum", ["1"])], delay=60)


# ---------------------------------------------------------------------- guardian rules (shared deployment)
def test_guardian_tightens_params_and_is_refused_when_loosening(h: Harness) -> None:
    """Lower is tighter for attestationMaxAge, priceTolerance, maxPositions; fees, funding cap, min size
    and the fund's fee share may not move; each loosening is refused naming the field."""
    rp = h.p.params.functions
    base = OnchainParams(*rp.params().call())
    tighter = replace(base, attestation_max_age=120, price_tolerance=base.price_tolerance // 2,
                      max_positions=32)  # fmt: skip
    rc = h.send(rp.tightenParams(tighter.as_tuple()))
    assert h.events(h.p.params, "ParamsSet", rc) and OnchainParams(*rp.params().call()) == tighter
    for field, value in (("attestation_max_age", 121), ("price_tolerance", base.price_tolerance),
                         ("max_positions", 33), ("maker_fee", base.maker_fee + 1), ("taker_fee", 0),
                         ("max_funding_rate", 0), ("min_position_size", 2 * base.min_position_size),
                         ("fund_fee_share", 0)):  # fmt: skip
        name = "".join(w if i == 0 else w.capitalize() for i, w in enumerate(field.split("_")))
        with reverts("Guarded_Loosens", name):
            h.send(rp.tightenParams(replace(tighter, **{field: value}).as_tuple()))
    with reverts("Guarded_OnlyGuardian", addr(ALICE)):
        h.send(rp.tightenParams(tighter.as_tuple()), ALICE)
    with reverts("RiskParams_OutOfBounds", "attestationMaxAge"):  # the hard bounds still hold
        h.send(rp.tightenParams(replace(tighter, attestation_max_age=1).as_tuple()))


def test_guardian_tightens_liquidation_params_and_haircuts(h: Harness) -> None:
    """emergencyDelay may fall; the emergency rates and MM ratio may rise; auction fields may not move;
    haircuts may only rise, on listed tokens only."""
    rp = h.p.params.functions
    base = SUITE_LIQUIDATION
    tighter = replace(base, emergency_delay=DAY, emergency_linear_rate=WAD // 4,
                      emergency_option_rate=WAD // 5, emergency_mm_ratio=9 * WAD // 10)  # fmt: skip
    h.send(rp.tightenLiquidationParams(tighter.as_tuple()))
    assert LiquidationParams(*rp.liquidationParams().call()) == tighter
    for field, value, name in (("emergency_delay", DAY + 1, "emergencyDelay"),
                               ("emergency_linear_rate", WAD // 5, "emergencyLinearRate"),
                               ("emergency_mm_ratio", 8 * WAD // 10, "emergencyMmRatio"),
                               ("start_discount", base.start_discount - 1, "startDiscount"),
                               ("slow_length", base.slow_length + 1, "slowLength"),
                               ("buffer_ratio", 0, "bufferRatio")):  # fmt: skip
        with reverts("Guarded_Loosens", name):
            h.send(rp.tightenLiquidationParams(replace(tighter, **{field: value}).as_tuple()))
    weth = h.p.deployment.tokens["WETH"].address
    h.send(rp.raiseHaircut(weth, WAD // 4))
    with reverts("Guarded_Loosens", "haircut"):
        h.send(rp.raiseHaircut(weth, WAD // 5))
    with reverts("RiskParams_UnknownCollateral", addr(CAROL)):
        h.send(rp.raiseHaircut(addr(CAROL), WAD // 2))
    with reverts("Guarded_OnlyGuardian", addr(BOB)):
        h.send(rp.raiseHaircut(weth, WAD // 2), BOB)


def test_guardian_may_only_lower_the_feed_bounds(h: Harness) -> None:
    """PriceFeed.tightenConfig: heartbeat, maxDelay and maxMove may only fall."""
    f = h.p.feed.functions
    hb, delay, move = f.heartbeat().call(), f.maxDelay().call(), f.maxMove().call()
    h.send(f.tightenConfig(hb, delay, WAD // 20))
    assert f.maxMove().call() == WAD // 20
    with reverts("Guarded_Loosens", "maxMove"):
        h.send(f.tightenConfig(hb, delay, move))
    with reverts("Guarded_Loosens", "heartbeat"):
        h.send(f.tightenConfig(hb + 1, delay, WAD // 20))
    with reverts("Guarded_Loosens", "maxDelay"):
        h.send(f.tightenConfig(hb, delay + 1, WAD // 20))
    with reverts("Guarded_OnlyGuardian", addr(ALICE)):
        h.send(f.tightenConfig(hb, delay, WAD // 40), ALICE)
    h.send(f.tightenConfig(600, 60, WAD // 40))
    assert (f.heartbeat().call(), f.maxDelay().call(), f.maxMove().call()) == (600, 60, WAD // 40)


def test_guardian_is_set_by_the_owner_and_never_zero(h: Harness) -> None:
    for c in (h.p.params, h.p.feed):
        fn = c.functions
        with reverts("Guarded_ZeroGuardian"):
            h.send(fn.setGuardian("0x" + "00" * 20))
        with reverts("OwnableUnauthorizedAccount", addr(ALICE)):
            h.send(fn.setGuardian(addr(ALICE)), ALICE)
        rc = h.send(fn.setGuardian(addr(CAROL)))
        assert h.events(c, "GuardianSet", rc) == [{"guardian": addr(CAROL)}]
        assert fn.guardian().call() == addr(CAROL)


@pytest.mark.parametrize("name", ["RiskParams", "PriceFeed", "Instruments", "InsuranceFund"])
def test_renounce_ownership_is_disabled(h: Harness, name: str) -> None:
    """Renouncing would freeze every parameter for ever: refused, even for the owner."""
    c = h.p.c[name]
    with reverts("Governed_RenounceDisabled"):
        h.send(c.functions.renounceOwnership())
    assert c.functions.owner().call() == addr(DEPLOYER)


# ---------------------------------------------------------------------- docs/governance.md's cast recipes
def recipes() -> dict[str, str]:
    text = (ROOT / "docs" / "governance.md").read_text()
    return dict(re.findall(r"```bash\n# recipe: (\w+)\n(.*?)```", text, flags=re.DOTALL))


def test_cast_recipes_of_the_governance_doc(tl: tuple[Harness, str]) -> None:
    """The doc's schedule / execute / cancel / tighten recipes, run verbatim with the npm ``cast`` against
    the timelocked deployment: the change waits for the delay, then lands; the vetoed one is gone."""
    h, dep = tl
    blocks = recipes()
    assert set(blocks) == {"gov_setup", "gov_schedule", "gov_execute", "gov_cancel"}
    script = "set -euo pipefail\n" + "".join(f"echo '== {name}'\n{blocks[name]}" for name in
                                             ("gov_setup", "gov_schedule", "gov_execute", "gov_cancel"))  # fmt: skip
    env = {**os.environ, "RPC": h.p.deployment.rpc_url, "DEP": dep, "GUARDIAN_KEY": CAROL}
    start = h.now()
    run = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "Error" not in run.stderr, run.stdout + run.stderr  # npm's cast exits 0 anyway
    parts = re.split(r"^== (\w+)$", run.stdout, flags=re.MULTILINE)
    out = dict(zip(parts[1::2], parts[2::2], strict=True))
    lines = out["gov_schedule"].strip().splitlines()
    assert lines[-1] == "false" and int(lines[-2].split()[0]) >= start + DELAY  # ETA a delay ahead, not ready
    assert out["gov_execute"].strip().splitlines()[-1] == "0x" + "11" * 32
    assert h.p.params.functions.engineConfigHash().call() == b"\x11" * 32
    assert out["gov_cancel"].strip().splitlines()[-1] != "true" and "\nfalse\n" in out["gov_cancel"]
    assert h.p.feed.functions.maxMove().call() == WAD // 20
    assert gov.pending(h.p) == []


def test_pmsim_deploy_hands_over_to_a_configured_admin(tmp_path: Path) -> None:
    """``pmsim deploy --timelock-delay --admin --guardian``: the admin alone proposes and executes (the
    deployer keeps no role), the guardian guards every guarded contract and may cancel; a bad address
    is refused naming the option."""
    alice, bob, deployer = addr(ALICE), addr(BOB), addr(DEPLOYER)
    with start_anvil(timestamp=GENESIS) as node:
        bad = pmsim("deploy", "--rpc", node.url, "--out", str(tmp_path / "x.json"), "--admin", "0x12")
        assert bad.exit_code == 2 and "admin" in bad.output
        out = tmp_path / "d.json"
        ok(pmsim("deploy", "--rpc", node.url, "--out", str(out), "--timelock-delay", "3600", "--admin", alice,
                 "--guardian", bob))  # fmt: skip
        p = Protocol(connect(node.url), Deployment.load(out))
        t = p.c[TIMELOCK].functions
        assert t.getMinDelay().call() == 3600
        assert all(t.hasRole(r, alice).call() for r in (PROPOSER_ROLE, EXECUTOR_ROLE, CANCELLER_ROLE))
        assert not any(t.hasRole(r, deployer).call() for r in (PROPOSER_ROLE, EXECUTOR_ROLE, CANCELLER_ROLE))
        assert t.hasRole(CANCELLER_ROLE, bob).call() and not t.hasRole(PROPOSER_ROLE, bob).call()
        assert [c.functions.guardian().call() for c in (p.vault, p.params, p.feed)] == [bob] * 3
        assert all(c.functions.owner().call() == p.c[TIMELOCK].address
                   for n, c in p.c.items() if any(i.get("name") == "owner" for i in c.abi))  # fmt: skip
