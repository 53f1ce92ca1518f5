"""Gas regression check (CI): the gas table re-measured must not rise > 5 % over gas/snapshot.json.

The measurement is ``scripts/gas_table.py``'s own ``measure()``, run on this worker's session Anvil
(a snapshot reverted afterwards, so the other chain tests never see it). Refresh the figures after
an intended change with ``.venv/bin/python scripts/gas_table.py --update``.
"""

from __future__ import annotations

import importlib.util
import sys
from functools import cache
from types import ModuleType

import pytest

from offchain.chain.anvil import Anvil
from offchain.chain.build import ROOT

pytestmark = pytest.mark.chain


@cache
def gas_table() -> ModuleType:
    """``scripts/gas_table.py`` as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("gas_table", ROOT / "scripts" / "gas_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_gas_within_five_percent_of_snapshot(anvil: Anvil) -> None:
    gt = gas_table()
    measured = gt.measure(anvil.url)
    failures, _ = gt.compare(measured, gt.load_snapshot())
    assert not failures, "gas regression against gas/snapshot.json:\n" + "\n".join(failures)
    for op in gt.CONSTANT_OPS:  # the margin check does not depend on portfolio size
        used = [measured[f"{op}_{n}_positions"] for n in gt.PORTFOLIOS]
        assert max(used) - min(used) < 200, f"{op}: {used} varies with the portfolio"


def test_compare_flags_rises_and_reports_improvements() -> None:
    gt = gas_table()
    recorded = {"a": 100_000, "b": 100_000, "c": 100_000, "gone": 1}
    failures, notes = gt.compare({"a": 105_001, "b": 104_999, "c": 90_000, "new": 1}, recorded)
    assert failures == [
        "gone: recorded 1, not measured any more",
        "new: measured 1, not in the snapshot (run --update)",
        "a: 100,000 -> 105,001 (+5.00%), above the +5% tolerance",
    ]
    assert notes == ["c: 100,000 -> 90,000 (-10.00%), improvement"]
