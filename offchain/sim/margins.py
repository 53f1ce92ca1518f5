"""Every account's margin, step after step, without recomputing what did not change.

:meth:`offchain.engine.core.EngineCore.compute_all` rebuilds, at every block, the market (the
:class:`~offchain.risk.engine.MarginEngine`), every account's risk input from the indexed dicts (about
0.1 ms an account) and runs the scenario kernel over every account. The twin asks for every account's
figures at every step, twice (its status root, then the step's figures), while most accounts did not
move. :class:`IncrementalMargins` gives the same result, bit for bit, keeping:

* each account's risk input (the row ``EngineCore._account_state`` builds: instrument rows, sizes, cash
  net of socialised loss, cost basis, collateral) while its key holds (cash, loss snapshot, loss index,
  positions, collateral), and its funding owed while the cumulative funding of its perpetuals holds;
* the market while its inputs hold: price round, parameter hash, instruments, settlement prices (the
  market is valued at the price round's time, so a step's blocks share it);
* the kernel's per-account fields (``kernel.FIELDS``: grid losses, tail, add-ons, mark value) while the
  market and the account's positions hold: only the rows whose positions changed go through the kernel
  again. The kernel's figures of an account depend only on its positions and the market, and the margin
  rule over them (``MarginEngine._result``) is elementwise, applied to the whole arrays every time.

So a step costs one kernel pass over every account (the prices moved) and one over the accounts that
traded; the rest is a few numpy operations. Only which rows to revisit is decided from what the ledger
touched (:meth:`offchain.sim.ledger.Ledger.take_dirty`); without that hint every key is checked.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from offchain import rules
from offchain._typing import Float64Array, Int64Array
from offchain.chain.indexer import AccountState as ChainAccount
from offchain.chain.indexer import ProtocolState
from offchain.chain.units import Kind
from offchain.engine.core import E6, E18, EngineCore
from offchain.risk.accounts import AccountBook, AccountState
from offchain.risk.engine import MarginEngine, MarginResult
from offchain.risk.fixed_point import to_quote_units_up
from offchain.risk.kernel import margin_all

__all__ = ["IncrementalMargins"]

_Static = tuple[Int64Array, list[float], float, float, list[float]]  # rows, sizes, cash, cost basis, collateral


class IncrementalMargins:
    """``EngineCore.compute_all`` of a state that changes a little between calls (see the module notes).

    Parameters
    ----------
    core : EngineCore
        The engine core whose configuration, collateral columns and market builder are used.
    """

    def __init__(self, core: EngineCore) -> None:
        self.core = core
        self._static: dict[str, tuple[Any, _Static]] = {}
        self._owed: dict[str, tuple[Any, float]] = {}
        self._table: tuple[int, ...] = ()
        self._loss_index = -1
        self._addresses: list[str] = []
        self._where: dict[str, int] = {}
        self._market_key: Any = None
        self._engine: MarginEngine | None = None
        self._kernel_market: Any = None  # the market the cached kernel fields were computed on
        self._csr: sp.csr_matrix | None = None
        self._raw = np.zeros((0, 8))
        self._worst = np.zeros(0, dtype=np.int64)
        self._cash = self._cost = self._owed_arr = np.zeros(0)
        self._collateral = np.zeros((0, len(core._columns)))
        self._result: MarginResult | None = None
        self.stats = {"rows_built": 0, "markets_built": 0, "kernel_full": 0, "kernel_rows": 0, "results_reused": 0,
                      "im_hints": 0}

    # ------------------------------------------------------------------ market
    def engine(self, state: ProtocolState) -> MarginEngine:
        """The margin engine of ``state``'s market, rebuilt only when its inputs changed."""
        key = (state.prices.round, state.prices.timestamp, state.params_hash, tuple(sorted(state.instruments)),
               tuple(sorted(state.settlements.items())))  # fmt: skip
        if key != self._market_key or self._engine is None:
            self._engine = self.core._build_engine(state)
            self._market_key = key
            self.stats["markets_built"] += 1
        return self._engine

    # ------------------------------------------------------------------ rows (EngineCore._account_state)
    @staticmethod
    def _static_key(state: ProtocolState, acct: ChainAccount) -> Any:
        return (acct.cash, acct.loss_snapshot, state.loss_index, tuple(acct.positions.items()),
                tuple(acct.collateral.items()))  # fmt: skip

    def _static_row(self, state: ProtocolState, engine: MarginEngine, acct: ChainAccount) -> _Static:
        """Rows in canonical (increasing) order, sizes, effective cash, cost basis and collateral, converted
        as ``EngineCore._account_state`` and ``AccountState`` convert them."""
        ids = sorted(acct.positions)
        rows = engine.instruments.index_of(ids) if ids else np.zeros(0, dtype=np.int64)
        rows = np.asarray(rows, dtype=np.int64)
        sizes = [acct.positions[i].size / E18 for i in ids]
        order = np.argsort(rows, kind="stable").tolist()
        keep = [k for k in order if sizes[k] != 0.0]
        cost = sum(acct.positions[i].cost_basis for i in ids)
        quote = self.core._quote
        collateral = [acct.collateral.get(addr, 0) / 10**dec if addr != quote else 0.0
                      for addr, dec in self.core._columns]  # fmt: skip
        self.stats["rows_built"] += 1
        return rows[keep], [sizes[k] for k in keep], acct.effective_cash(state.loss_index) / E6, cost / E6, collateral

    @staticmethod
    def _owed_key(state: ProtocolState, acct: ChainAccount) -> Any:
        return tuple((i, p.size, p.funding_snapshot, state.instruments[i].cumulative_funding)
                     for i, p in acct.positions.items() if state.instruments[i].kind == Kind.PERP)  # fmt: skip

    @staticmethod
    def _owed_value(state: ProtocolState, acct: ChainAccount) -> float:
        """``EngineCore._funding_owed`` summed over the positions in id order, in USD."""
        owed = sum(rules.funding_payment(p.size, state.instruments[i].cumulative_funding, p.funding_snapshot)
                   for i, p in sorted(acct.positions.items()))  # fmt: skip
        return owed / E6

    # ------------------------------------------------------------------ one account (EngineCore.im_hint)
    def im_hint(self, engine: MarginEngine, address: str, account: AccountState) -> int | None:
        """The attested IM of ``account`` (``address``'s positions now) on ``engine``'s market, from the last
        :meth:`compute`, when that ran the kernel on this market and on these very positions; else None.
        An account's IM is a function of the market and its positions alone (cash, collateral and funding
        do not enter it), and ``MarginEngine`` gives the same bits for an account alone or in the batch."""
        i = self._where.get(address)
        static = self._static.get(address)
        if (i is None or static is None or self._result is None or engine is not self._engine
                or self._kernel_market != self._market_key):  # fmt: skip
            return None
        rows, sizes = static[1][0], static[1][1]
        if rows.tobytes() != account.rows.tobytes() or sizes != account.sizes.tolist():
            return None
        self.stats["im_hints"] += 1
        return to_quote_units_up(float(self._result.im[i]))

    # ------------------------------------------------------------------ results
    def compute(self, state: ProtocolState, dirty: set[str] | None = None,
                dirty_funding: set[int] | None = None) -> tuple[list[str], MarginResult]:  # fmt: skip
        """Every account's figures now: equal to ``EngineCore.compute_all(state)``.

        ``dirty`` and ``dirty_funding`` (from the ledger) name the accounts and perpetuals touched since
        the last call; without them every account's keys are checked.
        """
        engine = self.engine(state)
        table = tuple(sorted(state.instruments))
        rebuild = (table != self._table or state.loss_index != self._loss_index
                   or len(self._addresses) != len(state.accounts) or dirty is None)  # fmt: skip
        if table != self._table:
            self._static.clear()
        self._table, self._loss_index = table, state.loss_index
        if rebuild:
            return self._full(state, engine)
        assert dirty is not None
        todo = {a for a in dirty if a in self._where}
        if dirty_funding:
            todo |= {a for a in self._addresses if any(i in state.accounts[a].positions for i in dirty_funding)}
        moved: list[int] = []  # rows whose positions changed: through the kernel again
        touched = False
        for a in todo:
            acct, i = state.accounts[a], self._where[a]
            key = self._static_key(state, acct)
            old = self._static.get(a)
            if old is None or old[0] != key:
                row = self._static_row(state, engine, acct)
                if old is None or old[1][0].tolist() != row[0].tolist() or old[1][1] != row[1]:
                    moved.append(i)
                self._static[a] = (key, row)
                self._cash[i], self._cost[i] = row[2], row[3]
                self._collateral[i] = row[4]
                touched = True
            okey = self._owed_key(state, acct)
            if self._owed.get(a, (None,))[0] != okey:
                self._owed[a] = (okey, self._owed_value(state, acct))
                self._owed_arr[i] = self._owed[a][1]
                touched = True
        if moved:
            self._csr = self._positions(engine, self._addresses)
        market = self._market_key
        if market != self._kernel_market:
            self._kernel(engine)
        elif moved:
            self._kernel_rows(engine, sorted(moved))
        elif not touched and self._result is not None:
            self.stats["results_reused"] += 1
            return list(self._addresses), self._result
        return list(self._addresses), self._finish(engine)

    def _full(self, state: ProtocolState, engine: MarginEngine) -> tuple[list[str], MarginResult]:
        self._addresses = sorted(state.accounts)
        self._where = {a: i for i, a in enumerate(self._addresses)}
        n = len(self._addresses)
        self._cash, self._cost, self._owed_arr = np.zeros(n), np.zeros(n), np.zeros(n)
        self._collateral = np.zeros((n, len(self.core._columns)))
        for a, i in self._where.items():
            acct = state.accounts[a]
            key = self._static_key(state, acct)
            old = self._static.get(a)
            row = old[1] if old is not None and old[0] == key else self._static_row(state, engine, acct)
            self._static[a] = (key, row)
            self._cash[i], self._cost[i] = row[2], row[3]
            self._collateral[i] = row[4]
            self._owed[a] = (self._owed_key(state, acct), self._owed_value(state, acct))
            self._owed_arr[i] = self._owed[a][1]
        self._csr = self._positions(engine, self._addresses)
        self._kernel(engine)
        return list(self._addresses), self._finish(engine)

    def _positions(self, engine: MarginEngine, addresses: list[str]) -> sp.csr_matrix:
        """The accounts' positions as ``AccountBook`` stores them (canonical CSR, int64 indices)."""
        rows = [self._static[a][1] for a in addresses]
        n = len(rows)
        indptr = np.cumsum([0] + [r[0].size for r in rows])
        cols = np.concatenate([r[0] for r in rows]) if rows else np.zeros(0, dtype=np.int64)
        sizes = np.array([x for r in rows for x in r[1]], dtype=np.float64)
        csr = sp.csr_matrix((sizes, cols, indptr), shape=(n, len(engine.instruments)))
        book = AccountBook(csr, np.zeros(n), np.zeros(n), np.zeros(n), np.zeros((n, len(self.core._columns))))
        return book.positions

    def _kernel(self, engine: MarginEngine) -> None:
        """The kernel over every account (``MarginEngine.compute``'s pass)."""
        csr = self._csr
        assert csr is not None
        engine._check_settled(csr.indices)
        n = csr.shape[0]
        self._raw, self._worst = np.empty((n, 8)), np.empty(n, dtype=np.int64)
        if n:
            margin_all(csr.indptr, csr.indices, csr.data, *engine._kernel_args, self._raw, self._worst)
        self._kernel_market = self._market_key
        self.stats["kernel_full"] += 1

    def _kernel_rows(self, engine: MarginEngine, idx: list[int]) -> None:
        """The kernel over the rows ``idx`` only, spliced into the cached fields."""
        csr = self._csr
        assert csr is not None
        engine._check_settled(csr.indices)
        starts, ends = csr.indptr[idx], csr.indptr[np.asarray(idx) + 1]
        indptr = np.concatenate([[0], np.cumsum(ends - starts)]).astype(np.int64)
        take = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)]).astype(np.int64)
        raw, worst = np.empty((len(idx), 8)), np.empty(len(idx), dtype=np.int64)
        margin_all(indptr, csr.indices[take], csr.data[take], *engine._kernel_args, raw, worst)
        self._raw[idx], self._worst[idx] = raw, worst
        self.stats["kernel_rows"] += len(idx)

    def _finish(self, engine: MarginEngine) -> MarginResult:
        """``MarginEngine._result`` on the whole arrays (the elementwise margin rule)."""
        engine._check_collateral_width(self._collateral.shape[1])
        cash: Float64Array = self._cash.copy()
        self._result = engine._result(self._raw, self._worst, cash, self._cost.copy(), self._owed_arr.copy(),
                                      self._collateral.copy())  # fmt: skip
        return self._result
