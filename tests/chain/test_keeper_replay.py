"""The 2020-03-12 crash replayed hour by hour on Anvil against leveraged perp longs, liquidated by the
keeper: every account that breaches MM while the price path leaves it solvent at an hourly observation
is liquidated before it becomes insolvent; the report says which could not be saved and why."""

from __future__ import annotations

import json
from typing import Any

import pytest

from offchain.sim.replay import ReplayRun, run_replay

pytestmark = pytest.mark.chain


def check(run: ReplayRun) -> dict[str, Any]:
    doc = run.report()
    rows = {r["account"]: r for r in doc["accounts"]}
    s = doc["summary"]
    assert s["missed"] == 0, [r for r in rows.values() if r["status"] == "missed"]
    assert s["breached"] >= 2 and s["saved"] >= 1
    for r in rows.values():
        acts = [h["after"].get(r["account"]) for h in doc["hourly"]]
        before = [h["before"].get(r["account"]) for h in doc["hourly"]]
        if r["status"] == "never breached":
            assert all(b is None or b["equity"] >= b["mm"] for b in before) and r["auctions"] == 0
        elif r["status"] == "saved":  # no bad debt; each breach with a bid in its hour (a root showed it)
            assert r["bad_debt_usd"] == 0 and r["bids"] >= 1
            hours = {h["label"] for h in doc["hourly"]}
            for b in (x for x in doc["bids"] if x["account"] == r["account"] and x["first"]):
                assert b["label"] in hours and b["breach_to_bid_s"] < 60
        else:  # not saved: it gapped from at/above MM (after the keeper's turn) to insolvent in one step
            assert r["status"] == "not saved (gap)" and r["bad_debt_usd"] > 0
            [first, *_] = [a for a in doc["auctions"] if a["account"] == r["account"] and a["insolvent"]]
            i = [h["label"] for h in doc["hourly"]].index(first["label"])
            prev = acts[i - 1]
            assert prev is not None and prev["equity"] >= prev["mm"] and before[i] is not None
            assert before[i]["mtm"] < 0 and "single hourly step" in r["reason"]
    assert all(b["profit_usd"] > 0 for b in doc["bids"])
    json.dumps(doc)  # the report is plain JSON
    return doc


def test_short_replay_liquidates_before_insolvency_where_the_path_allows() -> None:
    """2020-03-12 00:00-12:00 (BTC −13.7 % and ETH −17.2 % in the hour to 10:00), five longs at 2.5-6×."""
    doc = check(run_replay())
    rows = {r["account"]: r for r in doc["accounts"]}
    assert rows["btc-3x"]["status"] == "never breached"
    assert rows["btc-4.5x"]["status"] == "saved" and rows["eth-2.5x"]["status"] == "saved"
    # the 6x and 4x longs, liquidated back to their buffer margin hour after hour, gapped at 10:00
    assert rows["btc-6x"]["status"] == rows["eth-4x"]["status"] == "not saved (gap)"
    assert "-13.7%" in rows["btc-6x"]["reason"] and "-17.2%" in rows["eth-4x"]["reason"]


@pytest.mark.slow
def test_full_replay_liquidates_before_insolvency_where_the_path_allows() -> None:
    """2020-03-12 00:00 to 2020-03-13 12:00, ten longs at 2-6×."""
    doc = check(run_replay(full=True))
    assert doc["window"]["hours"] == 36 and len(doc["accounts"]) == 10
