"""The listed instruments, as parallel arrays (one row per instrument).

Columns mirror the on-chain ``Instruments`` registry:

``instrument_id`` (int)
    On-chain id, unique.
``kind`` (int)
    The on-chain enum: 0 = PERP, 1 = FUTURE, 2 = CALL, 3 = PUT (see :class:`Kind`).
``underlying`` (int)
    Index into ``RiskConfig.underlyings`` (0 = BTC, 1 = ETH with the default configuration).
``strike`` (float, USD)
    Option strike; 0 for perps and futures.
``expiry`` (int, unix seconds)
    Expiry of options and futures; 0 for perps.

Contract size: one unit of underlying per 1.0 of position size. Options are European,
cash-settled in the quote asset against the settlement price of their expiry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from offchain._typing import ArrayLike, BoolArray, Float64Array, Int64Array
from offchain.errors import InputError, UnknownInstrumentError
from offchain.protocol import Kind as Kind


def _readonly_int(values: ArrayLike, name: str) -> Int64Array:
    arr = np.asarray(values)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise InputError(f"instruments.{name}", "must be a 1-d integer array")
    out = np.array(arr, dtype=np.int64)
    out.setflags(write=False)
    return out


def _readonly_float(values: ArrayLike, name: str) -> Float64Array:
    out = np.array(values, dtype=np.float64)
    if out.ndim != 1 or not np.all(np.isfinite(out)):
        raise InputError(f"instruments.{name}", "must be a 1-d array of finite numbers")
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class InstrumentTable:
    """Instruments as read-only column arrays, validated on construction.

    Raises
    ------
    InputError
        Columns of different lengths, duplicate ids, an unknown kind, a negative underlying
        index, an option without a positive strike, an option or future without an expiry, or
        a perp with one; the field names the column and row (``instruments.strike[4]``).
    """

    instrument_id: Int64Array
    kind: Int64Array
    underlying: Int64Array
    strike: Float64Array
    expiry: Int64Array
    _order: Int64Array = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("instrument_id", "kind", "underlying", "expiry"):
            object.__setattr__(self, name, _readonly_int(getattr(self, name), name))
        object.__setattr__(self, "strike", _readonly_float(self.strike, "strike"))
        n = self.instrument_id.size
        for name in ("kind", "underlying", "strike", "expiry"):
            if getattr(self, name).size != n:
                raise InputError(f"instruments.{name}", f"has a different length than the {n} ids")
        order = np.argsort(self.instrument_id, kind="stable")
        sorted_ids = self.instrument_id[order]
        if n > 1 and np.any(sorted_ids[1:] == sorted_ids[:-1]):
            dup = int(sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]][0])
            raise InputError("instruments.instrument_id", f"duplicate id {dup}")
        self._check_rows()
        object.__setattr__(self, "_order", order)

    def same_as(self, other: InstrumentTable) -> bool:
        """The same instruments in the same rows (every column equal)."""
        return self is other or all(
            np.array_equal(getattr(self, name), getattr(other, name))
            for name in ("instrument_id", "kind", "underlying", "strike", "expiry")
        )

    def _check_rows(self) -> None:
        def fail(name: str, bad: BoolArray, message: str) -> None:
            if bad.any():
                row = int(np.argmax(bad))
                raise InputError(f"instruments.{name}[{row}]", message)

        fail("kind", (self.kind < Kind.PERP) | (self.kind > Kind.PUT), "must be 0..3")
        fail("underlying", self.underlying < 0, "must be a valid underlying index")
        fail("strike", self.is_option & (self.strike <= 0.0), "an option needs a strike > 0")
        fail("strike", ~self.is_option & (self.strike != 0.0), "must be 0 for perps/futures")
        dated = self.kind != Kind.PERP
        fail("expiry", dated & (self.expiry <= 0), "options and futures need an expiry")
        fail("expiry", ~dated & (self.expiry != 0), "a perp has no expiry (0)")

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, object]]) -> InstrumentTable:
        """Build from dicts with keys ``instrument_id, kind, underlying, strike, expiry``."""
        rows = list(records)
        cols = ("instrument_id", "kind", "underlying", "strike", "expiry")
        data = {c: [r[c] for r in rows] for c in cols}
        return cls(
            instrument_id=np.array(data["instrument_id"], dtype=np.int64),
            kind=np.array(data["kind"], dtype=np.int64),
            underlying=np.array(data["underlying"], dtype=np.int64),
            strike=np.array(data["strike"], dtype=np.float64),
            expiry=np.array(data["expiry"], dtype=np.int64),
        )

    def __len__(self) -> int:
        return int(self.instrument_id.size)

    @property
    def is_option(self) -> BoolArray:
        """True for calls and puts."""
        out: BoolArray = self.kind >= Kind.CALL
        return out

    @property
    def is_call(self) -> BoolArray:
        """True for calls."""
        out: BoolArray = self.kind == Kind.CALL
        return out

    def row_of(self, instrument_id: int) -> int:
        """Row index of one on-chain id (a dictionary lookup; :meth:`index_of` for many).

        Raises
        ------
        UnknownInstrumentError
            An id that is not listed.
        """
        try:
            return self._rows[int(instrument_id)]
        except KeyError:
            raise UnknownInstrumentError("instrument", f"unknown instrument id {int(instrument_id)}") from None

    @cached_property
    def _rows(self) -> dict[int, int]:
        return {int(i): r for r, i in enumerate(self.instrument_id.tolist())}

    def index_of(self, ids: ArrayLike) -> Int64Array:
        """Row index of each on-chain id.

        Raises
        ------
        UnknownInstrumentError
            An id that is not listed (the message names it).
        """
        if isinstance(ids, list | tuple):  # a few ids (one account's): dictionary lookups, no numpy search
            table = self._rows
            try:
                return np.array([table[i] for i in ids], dtype=np.int64)
            except (KeyError, TypeError):
                pass  # an unknown or non-integer id: the checked path below names it
        wanted = np.asarray(ids, dtype=np.int64)
        sorted_ids = self.instrument_id[self._order]
        pos = np.searchsorted(sorted_ids, wanted)
        pos_clipped = np.minimum(pos, max(len(self) - 1, 0))
        found = (pos < len(self)) & (sorted_ids[pos_clipped] == wanted) if len(self) else pos < 0
        if not np.all(found):
            bad = int(np.ravel(wanted)[np.argmin(np.ravel(found))])
            raise UnknownInstrumentError("instrument", f"unknown instrument id {bad}")
        out: Int64Array = self._order[pos_clipped]
        return out

    def subset(self, rows: Int64Array) -> InstrumentTable:
        """The instruments at the given row indices, in that order."""
        return InstrumentTable(
            self.instrument_id[rows],
            self.kind[rows],
            self.underlying[rows],
            self.strike[rows],
            self.expiry[rows],
        )
