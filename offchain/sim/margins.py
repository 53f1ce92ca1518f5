"""Every account's margin, step after step, without rebuilding what did not change.

:meth:`offchain.engine.core.EngineCore.compute_all` rebuilds, at every block, the market (the
:class:`~offchain.risk.engine.MarginEngine`) and every account's risk input from the indexed dicts
(about 0.1 ms an account). The twin asks for every account's figures at every step, often twice (the
status root, then the step's figures), while most accounts did not move. :class:`IncrementalMargins`
gives the same result, bit for bit, reusing:

* each account's risk input (:class:`~offchain.risk.accounts.AccountState` row: instrument rows, sizes,
  cash net of socialised loss, cost basis, funding owed, collateral) while its key is unchanged: its cash,
  loss snapshot, positions, collateral, the loss index and the cumulative funding of the perpetuals it
  holds, under the same instrument table;
* the assembled :class:`~offchain.risk.accounts.AccountBook` while no account changed;
* the market while its inputs are unchanged: price round, parameter hash, instruments, settlement prices,
  and the block time when an instrument is dated (perpetuals do not depend on it);
* the result itself when both the book and the market are reused.

Everything is computed exactly as ``EngineCore._account_state`` and ``AccountBook.from_states`` do (the
same integer sums, the same float conversions, the same canonical row order), so the figures equal
``compute_all``'s (checked by ``tests/sim/test_twin.py``).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import numpy as np
import scipy.sparse as sp

from offchain import rules
from offchain._typing import Int64Array
from offchain.chain.indexer import AccountState as ChainAccount
from offchain.chain.indexer import ProtocolState
from offchain.chain.units import Kind
from offchain.engine.core import E6, E18, EngineCore
from offchain.risk.accounts import AccountBook
from offchain.risk.engine import MarginEngine, MarginResult

__all__ = ["IncrementalMargins"]

_Row = tuple[Int64Array, list[float], float, float, float, list[float]]


class IncrementalMargins:
    """``EngineCore.compute_all`` of a state that changes a little between calls (see the module notes).

    Parameters
    ----------
    core : EngineCore
        The engine core whose configuration and columns are used.
    """

    def __init__(self, core: EngineCore) -> None:
        self.core = core
        self._rows: dict[str, tuple[Any, _Row]] = {}
        self._table_key: tuple[int, ...] = ()
        self._addresses: list[str] = []
        self._book: AccountBook | None = None
        self._market_key: Any = None
        self._engine: MarginEngine | None = None
        self._result: MarginResult | None = None
        self._changed: set[str] = set()
        self._loss_index = -1
        self._result_market: Any = None
        self.stats = {"rows_built": 0, "books_built": 0, "markets_built": 0, "results_reused": 0,
                      "partial_results": 0}  # fmt: skip

    # ------------------------------------------------------------------ market
    def engine(self, state: ProtocolState) -> MarginEngine:
        """The margin engine of ``state``'s market, rebuilt only when its inputs changed."""
        dated = any(i.kind != Kind.PERP for i in state.instruments.values())
        key = (state.prices.round, state.prices.timestamp, state.params_hash, tuple(sorted(state.instruments)),
               tuple(sorted(state.settlements.items())), state.timestamp if dated else None)  # fmt: skip
        if key != self._market_key or self._engine is None:
            self._engine = self.core._build_engine(state)
            self._market_key = key
            self.stats["markets_built"] += 1
        return self._engine

    # ------------------------------------------------------------------ accounts
    def _key(self, state: ProtocolState, acct: ChainAccount) -> Any:
        perps = tuple(state.instruments[i].cumulative_funding for i, p in acct.positions.items()
                      if state.instruments[i].kind == Kind.PERP)  # fmt: skip
        return (acct.cash, acct.loss_snapshot, state.loss_index, tuple(acct.positions.items()),
                tuple(acct.collateral.items()), perps)  # fmt: skip

    def _row(self, state: ProtocolState, engine: MarginEngine, acct: ChainAccount) -> _Row:
        """``EngineCore._account_state`` as plain values (same sums, same conversions)."""
        ids = sorted(acct.positions)
        rows = engine.instruments.index_of(ids) if ids else np.zeros(0, dtype=np.int64)
        sizes = [acct.positions[i].size / E18 for i in ids]
        cost = sum(acct.positions[i].cost_basis for i in ids)
        owed = sum(
            rules.funding_payment(acct.positions[i].size, state.instruments[i].cumulative_funding,
                                  acct.positions[i].funding_snapshot)
            for i in ids
        )  # fmt: skip
        quote = self.core._quote
        collateral = [acct.collateral.get(addr, 0) / 10**dec if addr != quote else 0.0
                      for addr, dec in self.core._columns]  # fmt: skip
        order = np.argsort(np.asarray(rows, dtype=np.int64), kind="stable")
        rows = np.asarray(rows, dtype=np.int64)[order]
        sizes = [sizes[k] for k in order.tolist()]
        keep = [k for k, x in enumerate(sizes) if x != 0.0]
        self.stats["rows_built"] += 1
        return (rows[keep], [sizes[k] for k in keep], acct.effective_cash(state.loss_index) / E6, cost / E6,
                owed / E6, collateral)  # fmt: skip

    def book(self, state: ProtocolState, engine: MarginEngine, dirty: set[str] | None = None,
             dirty_funding: set[int] | None = None) -> tuple[list[str], AccountBook]:  # fmt: skip
        """Every account, sorted by address, as one book, rebuilding only the rows that changed: those of
        ``dirty`` accounts and of holders of ``dirty_funding`` perpetuals when given (what the ledger
        touched), else those whose key (:meth:`_key`) changed."""
        self._changed = set()
        table = tuple(sorted(state.instruments))
        full = table != self._table_key or state.loss_index != self._loss_index or self._book is None
        if table != self._table_key:
            self._rows.clear()
            self._table_key = table
        self._loss_index = state.loss_index
        if len(self._addresses) != len(state.accounts):
            self._addresses = sorted(state.accounts)
            full = True
        if full or dirty is None:
            todo: list[str] | set[str] = self._addresses
        else:
            todo = {a for a in dirty if a in state.accounts}
            if dirty_funding:
                todo |= {a for a, acct in state.accounts.items() if any(i in acct.positions for i in dirty_funding)}
        for a in todo:
            acct = state.accounts[a]
            key = self._key(state, acct)
            hit = self._rows.get(a)
            if hit is None or hit[0] != key:
                self._rows[a] = (key, self._row(state, engine, acct))
                self._changed.add(a)
        if self._changed or full:
            self._book = self._assemble(engine, self._addresses)
            self.stats["books_built"] += 1
        assert self._book is not None
        return self._addresses, self._book

    def _assemble(self, engine: MarginEngine, addresses: list[str]) -> AccountBook:
        rows = [self._rows[a][1] for a in addresses]
        n = len(rows)
        width = len(self.core._columns)
        if n == 0:
            empty = sp.csr_matrix((0, len(engine.instruments)))
            return AccountBook(empty, np.zeros(0), np.zeros(0), np.zeros(0), np.zeros((0, width)))
        indptr = np.cumsum([0] + [r[0].size for r in rows])
        cols = np.concatenate([r[0] for r in rows])
        sizes = np.array([x for r in rows for x in r[1]], dtype=np.float64)
        positions = sp.csr_matrix((sizes, cols, indptr), shape=(n, len(engine.instruments)))
        return AccountBook(
            positions,
            np.array([r[2] for r in rows]),
            np.array([r[3] for r in rows]),
            np.array([r[4] for r in rows]),
            np.array([r[5] for r in rows], dtype=np.float64).reshape(n, width),
        )

    # ------------------------------------------------------------------ results
    def compute(self, state: ProtocolState, dirty: set[str] | None = None,
                dirty_funding: set[int] | None = None) -> tuple[list[str], MarginResult]:  # fmt: skip
        """Every account's figures now: equal to ``EngineCore.compute_all(state)``.

        Notes
        -----
        The kernel's figures of an account depend only on its row and the market, and the margin rule
        applied to them is elementwise: on an unchanged market, only the changed rows are recomputed
        (as a book of their own) and spliced into the previous result, which gives the same bits.
        """
        engine = self.engine(state)
        before = list(self._addresses)
        addresses, book = self.book(state, engine, dirty, dirty_funding)
        previous = self._result
        if previous is None or addresses != before or self._market_key != self._result_market:
            self._result = engine.compute(book)
        elif self._changed:
            where = {a: i for i, a in enumerate(addresses)}
            idx = [where[a] for a in sorted(self._changed)]
            sub = engine.compute(self._assemble(engine, sorted(self._changed)))
            arrays = {f.name: getattr(previous, f.name).copy() for f in fields(previous)}
            for name, arr in arrays.items():
                arr[idx] = getattr(sub, name)
            self._result = MarginResult(**arrays)
            self.stats["partial_results"] += 1
        else:
            self.stats["results_reused"] += 1
        self._result_market = self._market_key
        assert self._result is not None
        return list(addresses), self._result
