"""The main job (``pmsim demo``): a devnet run end to end, reproducible from its seed."""

from __future__ import annotations

import json

from offchain.sim.demo import run_demo


def test_the_devnet_run_is_reproducible_and_conserves_value() -> None:
    a, b = run_demo(seed=11), run_demo(seed=11)
    assert json.dumps(a.report(), sort_keys=True) == json.dumps(b.report(), sort_keys=True)
    report = a.report()
    assert report["conservation"]["holds"]
    assert [t["instrument"] for t in report["trades"]] == ["BTC-C60K", "BTC-P50K", "BTC-PERP", "ETH-PERP"]
    rounds = report["rounds"]
    assert [r["round"] for r in rounds] == list(range(1, len(rounds) + 1))  # consecutive, none skipped
    assert rounds[0]["below_mm"] == []
    assert "carol" in rounds[-1]["below_mm"]  # the leveraged long does not survive the March 2020 replay
    before, after = report["phases"]
    assert after["spot"][0] < 0.75 * before["spot"][0]
    assert after["accounts"]["alice"]["status"] == "ok"  # the writer was paid and is covered
    assert run_demo(seed=12).report()["phases"][0]["spot"] != before["spot"]  # the seed drives the market
