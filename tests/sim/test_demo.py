"""The main job (``pmsim demo``): the shipped scenario ``demo`` run on the chain backend (a real Anvil,
the real contracts, the engine's real signatures) through the simulator's runner. Reproducible from
its seed; the 2020-03-12 replay pushes the dip buyers below maintenance margin and the
keeper agents liquidate them; what the chain's events say equals the runner's record; value is
conserved; gas is read per transaction of each kind from the receipts."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from offchain.cli_sim import find_scenario
from offchain.sim.chain_backend import ROOT_ROLE_KEYS, ChainBackend
from offchain.sim.demo import CHECK_STEPS, OPERATIONS, SETUP_STEPS, conservation, run_demo
from offchain.sim.metrics import money
from offchain.sim.runner import run
from offchain.sim.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[2]
FILES = ["demo.json", "liquidations.json", "run.json", "scenario.json", "series.csv"]


def files(folder: Path) -> dict[str, Any]:
    """The run folder's files, ``run.json`` without its wall time."""
    out: dict[str, Any] = {}
    for name in FILES:
        text = (folder / name).read_text()
        if name == "run.json":
            meta = json.loads(text)
            meta.pop("wall_seconds")
            out[name] = meta
        else:
            out[name] = text
    return out


def test_the_demo_liquidates_on_chain_agrees_with_its_record_conserves_value_and_is_reproducible(
    tmp_path: Path,
) -> None:
    """I-1, I-19, I-20, I-22 on the chain; the CLI's output labelled and in human units; same seed,
    same run folder."""
    scenario = load_scenario(find_scenario("demo"))
    assert scenario.run.backend == "chain" and scenario.run.seed == 7
    labels: list[str] = []
    a = run_demo(scenario, tmp_path / "a", progress=labels.append)
    steps = scenario.run.steps
    # progress: the set-up's two steps, every simulated step, the chain's checks
    assert len(labels) == SETUP_STEPS + steps + CHECK_STEPS
    assert labels[0] == "compiled the contracts" and labels[1].startswith("deployed the protocol")
    assert labels[2] == f"step 1 of {steps}" and labels[-1].startswith("read gas")
    record = a.record
    assert record.backend == "chain" and record.steps == steps
    assert sorted(p.name for p in a.folder.iterdir()) == FILES
    # the chain's liquidations are the record's, bid for bid; the crash liquidates solvent and insolvent auctions
    chain, c = a.chain, a.conservation
    assert chain is not None and c is not None
    assert chain.mismatches == [] and len(chain.bids) == len(record.liquidations) == record.summary["liquidations"]
    assert chain.auctions and all(x.equity < x.maintenance_margin for x in chain.auctions)  # started on a breach
    assert {b.account for b in chain.bids} <= {x.account for x in chain.auctions}
    names = a.names
    assert all(names[x.account].startswith("dip buyers") for x in chain.auctions)
    assert all(names[b.bidder].startswith("keepers") for b in chain.bids)
    assert any(x.insolvent for x in chain.auctions) and any(not x.insolvent for x in chain.auctions)
    assert all(b.fee > 0 for b in chain.bids if b.price > 0)
    # the loss waterfall, to the unit, on the chain's events and in the runner's summary
    assert chain.bad_debt > 0 and chain.waterfall_holds
    assert chain.bad_debt == chain.fund_draws + chain.socialised + chain.unrecovered
    summary = record.summary
    assert summary["bad_debt_usd"] == money(chain.bad_debt) and summary["fund_draws_usd"] == money(chain.fund_draws)
    assert summary["socialised_usd"] == money(chain.socialised)
    assert summary["liquidation_fees_usd"] == money(chain.fees)
    # conservation: exact for the collateral tokens; the quote within the loss charges' rounding dust
    assert c.holds and c.loss_socialised and 0 <= c.dust <= c.accounts
    assert set(c.collateral) == {"WBTC", "WETH"} and all(v > 0 for v, _ in c.collateral.values())
    assert c.vault_usdc > 3_000_000 * 10**6  # the agents' deposits
    assert a.ok
    # gas: one labelled row per kind of transaction, read from the receipts
    gas = {g.call: g for g in a.gas}
    for g in a.gas:
        assert g.operation and g.min <= g.gas_per_transaction <= g.max and g.reverted == 0
        assert g.transactions * g.min <= g.total <= g.transactions * g.max
    assert {"Exchange.trade", "PriceFeed.post", "RiskOracle.postRoot", "Liquidator.start", "Liquidator.bid",
            "Vault.deposit", "Instruments.list"} <= set(gas)  # fmt: skip
    assert gas["Exchange.trade"].operation == OPERATIONS["Exchange.trade"]
    assert gas["PriceFeed.post"].transactions == steps  # one price round a step
    assert gas["RiskOracle.postRoot"].transactions == steps - 1  # a root every step once accounts exist
    assert gas["Exchange.trade"].transactions == summary["trades"]
    assert gas["Liquidator.bid"].transactions == len(chain.bids)
    assert gas["Liquidator.start"].transactions == len(chain.auctions)
    snapshot = json.loads((ROOT / "gas" / "snapshot.json").read_text())  # what the README's gas table shows
    assert abs(gas["RiskOracle.postRoot"].gas_per_transaction / snapshot["post_root"] - 1) < 0.2
    assert abs(gas["Liquidator.start"].gas_per_transaction / snapshot["liquidation_start_root_proof"] - 1) < 0.2
    reference = snapshot["trade_2_attestations_1_positions"]  # adds to a position both sides hold
    assert 0.8 * reference < gas["Exchange.trade"].gas_per_transaction < 2 * reference
    doc = json.loads((a.folder / "demo.json").read_text())
    assert doc["conservation"]["holds"] and doc["liquidations"]["record_matches_chain"]
    assert Decimal(doc["conservation"]["vault_usdc_usd"]) * 10**6 == c.vault_usdc
    # `pmsim demo --out`: the same run, byte for byte; every figure labelled, in USD, never raw units
    out = tmp_path / "b"
    env = {**os.environ, "COLUMNS": "160"}
    done = subprocess.run([sys.executable, "-m", "offchain.cli", "demo", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert files(a.folder) == files(out)
    text = done.stdout
    assert re.search(r"demo \[1/\d+, +\d+\.\d s\] demo, chain backend, seed 7: compiled the contracts", text)
    assert f"step {steps} of {steps}" in text
    assert "run summary" in text and "bad debt (USD)" in text  # the runner's summary table
    assert "gas per transaction" in text and OPERATIONS["Liquidator.bid"] in text
    assert re.search(r"bad debt [\d,]+\.\d\d USD = insurance fund draws [\d,]+\.\d\d USD \+ socialised loss", text)
    assert re.search(r"USDC held by the vault \d{1,3}(,\d{3})+\.\d\d USD", text) and "BROKEN" not in text
    assert "agree on all" in text and "dip buyers #" in text
    assert not re.search(r"(?<![\w/.-])\d{7,}", text)  # thousands separators everywhere: no raw quote units
    assert not re.search(r"\d\.\d*9{6,}\d*|\d\.\d*0{6,}[1-9]", text)  # no binary float noise
    report = out / "report.html"
    assert f"report: {report}" in text and report.stat().st_size > 10_000


def test_the_conservation_check_sees_a_vault_that_does_not_add_up() -> None:
    """The check reads the chain: USDC or collateral the books do not hold breaks it (I-1)."""
    scenario = load_scenario(find_scenario("demo"))
    short = dataclasses.replace(scenario, run=dataclasses.replace(scenario.run, steps=2))
    with ChainBackend(short) as backend:
        run(short, backend, write=False)
        before = conservation(backend.p, backend.state())
        assert before.holds and before.dust == 0 and not before.loss_socialised
        backend.rpc("evm_setAutomine", True)
        p, vault = backend.p, backend.p.vault.address
        p.send(p.tokens["USDC"].functions.mint(vault, 1_000 * 10**6), ROOT_ROLE_KEYS["deployer"])  # a donation
        after = conservation(p, backend.engine.refresh())
        assert after.dust == 1_000 * 10**6 and not after.holds
        p.send(p.tokens["USDC"].functions.mint(vault, 0), ROOT_ROLE_KEYS["deployer"])
        p.send(p.tokens["WBTC"].functions.mint(vault, 1), ROOT_ROLE_KEYS["deployer"])
        wbtc = conservation(p, backend.engine.refresh()).collateral["WBTC"]
        assert wbtc[0] == wbtc[1] + 1


def test_pmsim_demo_names_the_option_at_fault(tmp_path: Path) -> None:
    """Bad input: a one-line error naming the option, exit status 2, nothing run."""
    afile = tmp_path / "a-file"
    afile.write_text("")
    for args, field in ((["--seed", "-1"], "seed"), (["--out", str(afile)], "out")):
        done = subprocess.run([sys.executable, "-m", "offchain.cli", "demo", *args], cwd=ROOT, capture_output=True,
                              env={**os.environ, "COLUMNS": "300"}, text=True, timeout=300)  # fmt: skip
        assert done.returncode == 2 and done.stderr.startswith(f"error: {field}: "), done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
