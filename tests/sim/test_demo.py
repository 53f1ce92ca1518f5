"""The main job (``pmsim demo``): a devnet run end to end, reproducible from its seed, in which the
2020-03-12 replay pushes the leveraged long below maintenance margin and the keeper (the real
``offchain.keeper`` code, in-process) liquidates it with the engine's attestations."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

from offchain.cli_demo import console, show
from offchain.sim.demo import GAS_OPERATIONS, STEPS, run_demo

ROOT = Path(__file__).resolve().parents[2]


def floats(x: Any) -> list[float]:
    if isinstance(x, float):
        return [x]
    if isinstance(x, dict):
        return [f for v in x.values() for f in floats(v)]
    if isinstance(x, list):
        return [f for v in x for f in floats(v)]
    return []


def units(usd: float) -> int:
    return round(usd * 10**6)


def test_the_devnet_run_is_reproducible_liquidates_and_conserves_value() -> None:
    """I-19, I-20, I-22, I-1: byte-identical reports for one seed; liquidations only of accounts the round
    showed below MM; every bid's fee feeds the fund; bad debt = fund draws + socialised loss; value
    conserved (exactly while no loss is socialised, else within the loss charges' rounding dust)."""
    labels: list[str] = []
    a = run_demo(seed=11, progress=labels.append)
    b = run_demo(seed=11)
    assert json.dumps(a.report(), sort_keys=True) == json.dumps(b.report(), sort_keys=True)
    report = a.report()
    assert len(labels) == STEPS and labels[-1] == "checked conservation"  # progress, step by step
    assert labels[:3] == ["started Anvil", "compiled and deployed the protocol", "started the risk engine"]
    c = report["conservation"]
    assert c["holds"]
    # balances as exact USD decimal strings (six decimals), the dust also in quote units
    assert all(len(c[k].split(".")[1]) == 6 for k in ("vault_usdc_usd", "books_usd", "rounding_dust_usd"))
    assert Decimal(c["vault_usdc_usd"]) == Decimal(c["books_usd"]) + Decimal(c["rounding_dust_usd"])
    assert Decimal(c["rounding_dust_usd"]) * 10**6 == c["rounding_dust_units"]
    assert Decimal(c["vault_usdc_usd"]) > 1_000_000  # the funded accounts' deposits, in USD, not raw units
    assert [t["instrument"] for t in report["trades"]] == ["BTC-C60K", "BTC-P50K", "BTC-PERP", "ETH-PERP"]
    rounds = report["rounds"]
    assert [r["round"] for r in rounds] == list(range(1, len(rounds) + 1))  # consecutive, none skipped
    assert len(rounds) == 6 + 1 + 36  # one root per hourly step: never in emergency mode when it matters
    assert rounds[0]["below_mm"] == []
    # gas: one labelled row per kind of transaction, per transaction as in the README's gas table
    gas = report["gas"]
    for op, row in gas.items():
        assert row["operation"] == GAS_OPERATIONS[op]
        assert row["min"] <= row["gas_per_transaction"] <= row["max"]
        assert row["total"] >= row["transactions"] * row["min"] and row["total"] <= row["transactions"] * row["max"]
    assert gas["trade_2_attestations"]["transactions"] == 4 and gas["deposit"]["transactions"] == 5
    assert gas["post_root"]["transactions"] == len(rounds)
    snapshot = json.loads((ROOT / "gas" / "snapshot.json").read_text())  # what the README's table shows
    assert abs(gas["post_root"]["gas_per_transaction"] / snapshot["post_root"] - 1) < 0.2
    # the README's trade adds to a position both sides hold; each demo trade opens one on both (new storage)
    reference = snapshot["trade_2_attestations_1_positions"]
    assert reference < gas["trade_2_attestations"]["gas_per_transaction"] < 2 * reference
    # liquidations: each auction starts in a round that showed its account below MM
    below = {r["label"]: set(r["below_mm"]) for r in rounds}
    assert report["auctions"], "the leveraged long does not survive the March 2020 replay unliquidated"
    for auction in report["auctions"]:
        assert auction["account"] in below[auction["label"]]
        assert auction["margin_equity_usd"] < auction["mm_usd"]
    bids = report["liquidations"]
    assert bids and {r["account"] for r in bids} == {"carol"} and {r["bidder"] for r in bids} == {"erin"}
    assert all(int(r["fraction_wad"]) > 0 for r in bids)
    solvent = [r for r in bids if r["price_usd"] >= 0]
    assert solvent and all(r["fee_usd"] > 0 or r["price_usd"] < 1 for r in solvent)
    assert all(0.7 < r["discount"] < 0.95 for r in solvent if r["price_usd"] >= 1)  # bid in the fast phase
    # the keeper's own accounting: profitable after fee, modelled unwind and gas; timed from the breach
    assert all(r["keeper_profit_usd"] > 0 and r["keeper_gas_usd"] > 0 for r in bids)
    starts = {a["label"]: a for a in report["auctions"]}
    for r in bids:
        assert r["breach_to_bid_blocks"] >= 1 and r["breach_to_bid_s"] >= r["breach_to_bid_blocks"]
        if r["label"] in starts and r["price_usd"] >= 0:  # solvent: bid at once, within seconds of the root
            assert r["breach_to_bid_s"] < 60
    assert all(r["ended"] for r in bids if r["fraction"] == 1.0 or r is bids[-1])
    # the loss waterfall, to the unit
    losses = report["losses"]
    insolvent = [r for r in bids if r["price_usd"] < 0]
    assert units(losses["bad_debt_usd"]) == sum(-units(r["price_usd"]) for r in insolvent)
    assert units(losses["bad_debt_usd"]) == units(losses["fund_draws_usd"]) + units(losses["socialised_usd"])
    assert losses["bad_debt_equals_draws_plus_socialised"] and losses["unrecovered_usd"] == 0
    assert units(losses["fees_to_fund_usd"]) == sum(units(r["fee_usd"]) for r in bids)
    assert losses["explanation"]
    fund = [units(p["balance_usd"]) for p in report["insurance_fund"]]
    assert max(fund) >= units(losses["fund_draws_usd"]) and fund[-1] == max(fund) - units(losses["fund_draws_usd"])
    before, after = report["phases"]
    assert after["spot"][0] < 0.75 * before["spot"][0]
    assert after["accounts"]["carol"]["positions"] == 0  # liquidated to the last unit
    assert after["accounts"]["alice"]["status"] == "ok"  # the writer was paid and is covered
    assert after["accounts"]["erin"]["status"] == "ok"  # the bidder stayed above IM
    # human units without float noise: every figure has at most six decimals
    assert all(float(f"{x:.6f}") == x for x in floats(report))
    assert run_demo(seed=12).report()["phases"][0]["spot"] != before["spot"]  # the seed drives the market
    # what `pmsim demo` prints from it: every figure labelled, in USD with separators, never raw units
    with console.capture() as captured:
        show(json.loads(json.dumps(report, sort_keys=True)))  # as read back from the JSON file
    out = captured.get()
    assert "gas per transaction" in out and GAS_OPERATIONS["trade_2_attestations"] in out
    assert "USDC held by the vault" in out and re.search(r"vault \d{1,3}(,\d{3})+\.\d{2} USD", out)
    assert not re.search(r"\d{7,}", out)  # thousands separators everywhere: no raw quote units
