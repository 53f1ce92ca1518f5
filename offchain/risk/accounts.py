"""Account inputs: the whole book (sparse positions) and one account (for the fast path).

Units: sizes in units of underlying (signed, + long, − short; one unit per 1.0 of size); all
money in USD as floats; collateral in token units. ``cost_basis`` is Σ over the account's
*linear* positions of the entry notional (size × entry price, signed), so that their unrealised
P&L is ``Σ size × mark − cost_basis``; option premiums are already in ``cash``.
``funding_owed`` is accrued perp funding not yet settled into cash (positive = the account owes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from offchain._typing import ArrayLike, Float64Array, Int64Array
from offchain.errors import InputError


def _finite_vector(name: str, values: ArrayLike, n: int) -> Float64Array:
    arr = np.array(values, dtype=np.float64)
    if arr.shape != (n,):
        raise InputError(name, f"must hold one value per account ({n}), got shape {arr.shape}")
    _require_finite(name, arr)
    arr.setflags(write=False)
    return arr


def _require_finite(name: str, arr: Float64Array) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        index = np.unravel_index(int(np.argmax(bad)), arr.shape)
        where = "".join(f"[{int(i)}]" for i in index)
        raise InputError(f"{name}{where}", "must be a finite number")


def _collateral_matrix(name: str, values: ArrayLike, shape: tuple[int, ...]) -> Float64Array:
    arr = np.array(values, dtype=np.float64)
    if arr.shape != shape:
        raise InputError(name, f"must have shape {shape}, got {arr.shape}")
    _require_finite(name, arr)
    if np.any(arr < 0.0):
        index = np.unravel_index(int(np.argmax(arr < 0.0)), arr.shape)
        raise InputError(name + "".join(f"[{int(i)}]" for i in index), "must be >= 0")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class AccountState:
    """One account, positions as instrument *row indices* (into the ``InstrumentTable``).

    Rows are strictly increasing with non-zero sizes (the canonical order every computation
    sums in). Use :meth:`from_ids` to start from on-chain instrument ids.
    """

    rows: Int64Array
    sizes: Float64Array
    cash: float
    cost_basis: float
    funding_owed: float
    collateral: Float64Array

    def __post_init__(self) -> None:
        rows = np.array(self.rows, dtype=np.int64).reshape(-1)
        sizes = np.array(self.sizes, dtype=np.float64).reshape(-1)
        if rows.size != sizes.size:
            raise InputError("positions", "needs one size per instrument")
        _require_finite("positions.size", sizes)
        order = np.argsort(rows, kind="stable")
        rows, sizes = rows[order], sizes[order]
        if rows.size > 1 and np.any(rows[1:] == rows[:-1]):
            raise InputError("positions", "an instrument appears twice")
        keep = sizes != 0.0
        for name, arr in (("rows", rows[keep]), ("sizes", sizes[keep])):
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        for name in ("cash", "cost_basis", "funding_owed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float | np.floating) or not np.isfinite(value):
                raise InputError(name, f"must be a finite number, got {value!r}")
            object.__setattr__(self, name, float(value))
        coll = np.asarray(self.collateral, dtype=np.float64).reshape(-1)
        object.__setattr__(self, "collateral", _collateral_matrix("collateral", coll, coll.shape))

    @classmethod
    def derived(
        cls,
        rows: Int64Array,
        sizes: Float64Array,
        cash: float,
        cost_basis: float,
        funding_owed: float,
        collateral: Float64Array,
    ) -> AccountState:
        """A state derived from a validated one (a what-if), without re-validating what cannot have
        changed: ``rows`` strictly increasing and in range, ``collateral`` of the right shape and >= 0.
        Zero sizes are dropped and the sizes and the three figures must be finite, as in the constructor.
        """
        if not (math.isfinite(cash) and math.isfinite(cost_basis) and math.isfinite(funding_owed)):
            raise InputError("cash", "the action leaves a non-finite balance")
        _require_finite("positions.size", sizes)
        keep = sizes != 0.0
        if not keep.all():
            rows, sizes = rows[keep], sizes[keep]
        rows.setflags(write=False)
        sizes.setflags(write=False)
        self = object.__new__(cls)
        for name, value in (("rows", rows), ("sizes", sizes), ("cash", float(cash)), ("cost_basis", float(cost_basis)),
                            ("funding_owed", float(funding_owed)), ("collateral", collateral)):  # fmt: skip
            object.__setattr__(self, name, value)
        return self

    @classmethod
    def from_ids(
        cls,
        instrument_index: Int64Array,
        sizes: ArrayLike,
        *,
        cash: float,
        cost_basis: float,
        funding_owed: float,
        collateral: ArrayLike,
    ) -> AccountState:
        """Build from row indices already resolved with ``InstrumentTable.index_of``."""
        return cls(
            np.asarray(instrument_index, dtype=np.int64),
            np.asarray(sizes, dtype=np.float64),
            cash,
            cost_basis,
            funding_owed,
            np.asarray(collateral, dtype=np.float64),
        )


@dataclass(frozen=True, eq=False)
class AccountBook:
    """Every account at once.

    Attributes
    ----------
    positions : scipy.sparse.csr_matrix
        Accounts × instruments sizes (float, units of underlying, signed). Stored canonical:
        a private copy with sorted indices, duplicates summed, explicit zeros removed.
    cash, cost_basis, funding_owed : ndarray
        One USD value per account (see the module notes).
    collateral : ndarray
        Accounts × collateral tokens (configuration order), token units, >= 0.
    """

    positions: sp.csr_matrix
    cash: Float64Array
    cost_basis: Float64Array
    funding_owed: Float64Array
    collateral: Float64Array

    def __post_init__(self) -> None:
        if not sp.issparse(self.positions):
            raise InputError("positions", "must be a scipy.sparse matrix (accounts × instruments)")
        csr = sp.csr_matrix(self.positions, dtype=np.float64, copy=True)
        csr.sum_duplicates()
        csr.eliminate_zeros()
        _require_finite("positions.data", csr.data)
        csr.indices = csr.indices.astype(np.int64)
        csr.indptr = csr.indptr.astype(np.int64)
        object.__setattr__(self, "positions", csr)
        n = csr.shape[0]
        for name in ("cash", "cost_basis", "funding_owed"):
            object.__setattr__(self, name, _finite_vector(name, getattr(self, name), n))
        coll = np.asarray(self.collateral, dtype=np.float64)
        width = coll.shape[1] if coll.ndim == 2 else -1
        object.__setattr__(self, "collateral", _collateral_matrix("collateral", coll, (n, width)))

    @property
    def n_accounts(self) -> int:
        """Number of accounts (rows)."""
        return int(self.positions.shape[0])

    def account(self, a: int) -> AccountState:
        """Account ``a`` as an :class:`AccountState` (same canonical order as the book)."""
        lo, hi = self.positions.indptr[a], self.positions.indptr[a + 1]
        return AccountState(
            self.positions.indices[lo:hi],
            self.positions.data[lo:hi],
            float(self.cash[a]),
            float(self.cost_basis[a]),
            float(self.funding_owed[a]),
            self.collateral[a],
        )

    @classmethod
    def from_states(cls, states: Sequence[AccountState], n_instruments: int) -> AccountBook:
        """Stack single accounts into a book over ``n_instruments`` instrument rows."""
        indptr = np.cumsum([0] + [s.rows.size for s in states])
        rows = np.concatenate([s.rows for s in states]) if states else np.zeros(0, np.int64)
        sizes = np.concatenate([s.sizes for s in states]) if states else np.zeros(0)
        positions = sp.csr_matrix((sizes, rows, indptr), shape=(len(states), n_instruments))
        width = states[0].collateral.size if states else 0
        return cls(
            positions,
            np.array([s.cash for s in states]),
            np.array([s.cost_basis for s in states]),
            np.array([s.funding_owed for s in states]),
            np.array([s.collateral for s in states]).reshape(len(states), width),
        )
