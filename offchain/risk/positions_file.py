"""Positions files for ``pmsim margin``: JSON (market + instruments + accounts) or CSV + flags.

JSON layout (every money amount in USD, sizes in units of underlying)::

    {
      "now": 1735689600, "round": 7,
      "spot": {"BTC": 60000, "ETH": 3000},
      "vol": {"BTC": 0.55,
              "ETH": {"svi": [{"expiry": 1738281600, "a": 0.04, "b": 0.1, "rho": -0.3,
                               "m": 0.0, "sigma": 0.2}]}},
      "settlements": [{"underlying": "BTC", "expiry": 1735000000, "price": 59000}],
      "instruments": [{"id": 1, "kind": "PERP", "underlying": "BTC"},
                      {"id": 2, "kind": "CALL", "underlying": "BTC", "strike": 65000,
                       "expiry": 1738281600}],
      "accounts": [{"id": "alice", "cash": 10000, "funding_owed": 0,
                    "collateral": {"WETH": 2.0},
                    "positions": [{"instrument": 1, "size": 1.0, "entry_price": 58000}]}]
    }

``round``, ``vol``, ``settlements``, ``funding_owed``, ``collateral`` and an option's
``entry_price`` are optional; ``kind`` is ``PERP|FUTURE|CALL|PUT`` or the on-chain number 0-3;
``vol`` overrides the configuration's surface of an underlying with a flat volatility or SVI
pillars by expiry (the engine service always uses the configured surfaces). A linear
position's ``entry_price`` builds the account's cost basis (Σ size × entry price); option
premiums are assumed already in ``cash``.

CSV layout: one row per position with header
``account,instrument,kind,underlying,strike,expiry,size,entry_price``; rows of kind ``CASH`` and
``FUNDING`` (amount in ``size``) and ``COLLATERAL`` (token in ``underlying``, amount in
``size``) set balances. The market comes from :class:`MarketFlags` (``--now``, ``--spot`` and
optionally ``--vol`` flat volatilities on the command line).

Every error is an :class:`~offchain.errors.InputError` whose field names the place
(``accounts[0].positions[2].size``, ``line 7.strike``).

Values the contracts could never hold are refused rather than computed with: a size beyond
``Constants.MAX_SIZE`` (10^12 units), a price, strike or spot beyond ``MAX_PRICE`` (10^12 USD), a
balance beyond an ``int128`` of quote units, more than ``MAX_POSITIONS`` (64) positions in one
account, an instrument id beyond ``uint32``, a time beyond 2^40 s (year 36812), a flat volatility
beyond 1,000 % or an SVI parameter beyond 100 in size.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from offchain.errors import InputError, PmsimError
from offchain.models.vol_surface import SviSlice, VolSurface
from offchain.protocol import MAX_POSITIONS, MAX_PRICE, MAX_SIZE, PRICE_SCALE, QUOTE_SCALE, SIZE_SCALE
from offchain.risk._reader import Section, as_int, as_number, as_str, in_range, join
from offchain.risk.accounts import AccountBook
from offchain.risk.config import RiskConfig
from offchain.risk.instruments import InstrumentTable, Kind
from offchain.risk.market import SECONDS_PER_YEAR, MarketState

MAX_UNITS = MAX_SIZE / SIZE_SCALE  # largest size, units of the underlying
MAX_USD = MAX_PRICE / PRICE_SCALE  # largest price, strike or spot
MAX_BALANCE_USD = 2**127 / QUOTE_SCALE  # cash, funding: an int128 of quote units
MAX_TOKENS = 2**127 / 10**18  # collateral amounts
MAX_TIME = 2**40  # seconds since 1970 (year 36812)
MAX_ID = 2**32 - 1  # instrument ids are uint32 on chain
MAX_VOL = 10.0  # a flat implied volatility of 1,000 % a year
SVI_BOUND = 100.0  # |a|, |b|, |rho|, |m|, |sigma| of an SVI pillar


@dataclass(frozen=True, eq=False)
class PositionsInput:
    """Everything the engine needs, read from one positions file."""

    instruments: InstrumentTable
    market: MarketState
    book: AccountBook
    account_ids: tuple[str, ...]


@dataclass(frozen=True)
class MarketFlags:
    """Market given on the command line (CSV files): chain time, spots, flat vols."""

    now: int | None = None
    round_id: int = 0
    spot: Mapping[str, float] = field(default_factory=dict)
    vol: Mapping[str, float] = field(default_factory=dict)


class _Accounts:
    """Accumulates accounts (positions, balances) while a file is read."""

    def __init__(self, config: RiskConfig) -> None:
        self.config = config
        self.ids: list[str] = []
        self.rows: list[tuple[int, int, float]] = []  # (account, instrument id, size)
        self.cash: list[float] = []
        self.cost_basis: list[float] = []
        self.funding: list[float] = []
        self.collateral: list[list[float]] = []

    def add(self, account_id: str, path: str) -> int:
        if account_id in self.ids:
            raise InputError(path, f"duplicate account {account_id!r}")
        self.ids.append(account_id)
        for column in (self.cash, self.cost_basis, self.funding):
            column.append(0.0)
        self.collateral.append([0.0] * len(self.config.collateral))
        return len(self.ids) - 1

    def index(self, account_id: str) -> int:
        return self.ids.index(account_id) if account_id in self.ids else self.add(account_id, "account")

    def set_collateral(self, a: int, token: str, amount: float, path: str) -> None:
        symbols = [c.symbol for c in self.config.collateral]
        if token not in symbols:
            raise InputError(path, f"unknown collateral token {token[:40]!r} (known: {', '.join(symbols)})")
        if amount < 0.0:
            raise InputError(path, "collateral amounts must be >= 0")
        total = self.collateral[a][symbols.index(token)] + amount
        self.collateral[a][symbols.index(token)] = in_range(total, path, InputError, 0.0, MAX_TOKENS)

    def add_position(self, a: int, instrument_id: int, size: float, path: str) -> None:
        """One position row; an account holds at most ``MAX_POSITIONS`` instruments, as on chain."""
        held = {iid for acc, iid, _ in self.rows if acc == a}
        if instrument_id not in held and len(held) >= MAX_POSITIONS:
            raise InputError(path, f"more than {MAX_POSITIONS} positions in account {self.ids[a]!r} "
                                   f"(the contracts' maxPositions cap)")  # fmt: skip
        self.rows.append((a, instrument_id, size))

    def book(self, instruments: InstrumentTable) -> AccountBook:
        n = len(self.ids)
        if not self.rows:
            positions = sp.csr_matrix((n, len(instruments)))
        else:
            acc, ids, sizes = (np.array(c) for c in zip(*self.rows, strict=True))
            cols = instruments.index_of(ids)
            positions = sp.csr_matrix((sizes, (acc, cols)), shape=(n, len(instruments)))
        return AccountBook(
            positions,
            np.array(self.cash),
            np.array(self.cost_basis),
            np.array(self.funding),
            np.array(self.collateral).reshape(n, len(self.config.collateral)),
        )


def _kind(value: object, path: str) -> Kind:
    if isinstance(value, str) and value.upper() in Kind.__members__:
        return Kind[value.upper()]
    if isinstance(value, int) and not isinstance(value, bool) and value in set(Kind):
        return Kind(value)
    raise InputError(path, f"unknown kind {value!r} (PERP, FUTURE, CALL, PUT or 0-3)")


def _underlying(value: object, config: RiskConfig, path: str) -> int:
    if isinstance(value, str) and value in config.symbols:
        return config.symbols.index(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(config.symbols):
        return value
    raise InputError(path, f"unknown underlying {value!r} (known: {', '.join(config.symbols)})")


def _relabel(exc: InputError, field: str) -> InputError:
    """The same error (same class) re-attached to ``field``."""
    return type(exc)(field, str(exc).removeprefix(f"{exc.field}: "))


def _pillar(p: Section, now: int) -> SviSlice:
    expiry = p.integer("expiry", low=0, high=MAX_TIME)
    if expiry <= now:
        raise p.error("expiry", "an SVI pillar must expire after 'now'")
    params = {k: p.number(k, low=-SVI_BOUND, high=SVI_BOUND) for k in ("a", "b", "rho", "m", "sigma")}
    p.finish()
    try:
        return SviSlice(t=(expiry - now) / SECONDS_PER_YEAR, **params)
    except InputError as exc:
        raise _relabel(exc, join(p.path, exc.field)) from None


def _surface(value: object, now: int, path: str) -> VolSurface:
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            vol = as_number(value, path, InputError)
            return VolSurface.flat(in_range(vol, path, InputError, -math.inf, MAX_VOL))
        table = Section(value, path, InputError)
        pillars = tuple(_pillar(p, now) for p in table.tables("svi"))
        table.finish()
        return VolSurface(pillars)
    except InputError as exc:
        if exc.field.startswith(path):
            raise
        inner = exc.field.replace("pillars", "svi", 1)  # VolSurface names its list "pillars"
        raise _relabel(exc, path if inner == "vol" else join(path, inner)) from None


def _market(root: Section, config: RiskConfig) -> MarketState:
    now = root.integer("now", low=0, high=MAX_TIME)
    spot_table, vol_table = root.table("spot"), root.table("vol", required=False)
    spot = [spot_table.number(s, high=MAX_USD) for s in config.symbols]
    vols = tuple(
        _surface(vol_table.raw(s), now, join(vol_table.path, s)) if vol_table.has(s) else default
        for s, default in zip(config.symbols, config.vol_surfaces(), strict=True)
    )
    spot_table.finish()
    vol_table.finish()
    settlements = {}
    for entry in root.tables("settlements") if root.has("settlements") else []:
        u = _underlying(entry.raw("underlying"), config, join(entry.path, "underlying"))
        settlements[(u, entry.integer("expiry", low=0, high=MAX_TIME))] = entry.number("price", high=MAX_USD)
        entry.finish()
    root.raw("settlements", required=False)
    return MarketState(np.array(spot), now, vols, root.integer("round", 0, low=0, high=2**64 - 1), settlements)


def _instruments(root: Section, config: RiskConfig) -> InstrumentTable:
    records = []
    for t in root.tables("instruments"):
        kind = _kind(t.raw("kind"), join(t.path, "kind"))
        dated = kind != Kind.PERP
        records.append(
            {
                "instrument_id": t.integer("id", low=0, high=MAX_ID),
                "kind": int(kind),
                "underlying": _underlying(t.raw("underlying"), config, join(t.path, "underlying")),
                "strike": t.number("strike", high=MAX_USD) if kind >= Kind.CALL else 0.0,
                "expiry": t.integer("expiry", low=0, high=MAX_TIME) if dated else 0,
            }
        )
        t.finish()
    return InstrumentTable.from_records(records)


def _json_accounts(root: Section, config: RiskConfig, instruments: InstrumentTable) -> _Accounts:
    accounts = _Accounts(config)
    for t in root.tables("accounts"):
        a = accounts.add(as_str(t.raw("id"), join(t.path, "id"), InputError), join(t.path, "id"))
        accounts.cash[a] = t.number("cash", low=-MAX_BALANCE_USD, high=MAX_BALANCE_USD)
        accounts.funding[a] = t.number("funding_owed", 0.0, low=-MAX_BALANCE_USD, high=MAX_BALANCE_USD)
        coll = t.table("collateral", required=False)
        for token in coll.names():
            accounts.set_collateral(a, token, coll.number(token), join(coll.path, token))
        positions = t.tables("positions")
        for p in positions:
            _position(accounts, instruments, a, p)
        t.finish()
    return accounts


def _position(accounts: _Accounts, instruments: InstrumentTable, a: int, p: Section) -> None:
    instrument_id = p.integer("instrument", low=0, high=MAX_ID)
    row = int(_index(instruments, instrument_id, join(p.path, "instrument")))
    size = p.number("size", low=-MAX_UNITS, high=MAX_UNITS)
    if not instruments.is_option[row]:
        accounts.cost_basis[a] += size * p.number("entry_price", low=0.0, high=MAX_USD)
    else:
        p.raw("entry_price", required=False)
    accounts.add_position(a, instrument_id, size, p.path.rsplit("[", 1)[0])
    p.finish()


def _index(instruments: InstrumentTable, instrument_id: int, path: str) -> int:
    try:
        return int(instruments.index_of([instrument_id])[0])
    except InputError as exc:
        raise _relabel(exc, path) from None


def load_positions_json(path: Path, config: RiskConfig) -> PositionsInput:
    """Read a JSON positions file (see module notes)."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise InputError(str(path), f"cannot read: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise InputError(str(path), f"invalid JSON at line {exc.lineno}: {exc.msg}") from None
    except UnicodeDecodeError:
        raise InputError(str(path), "not UTF-8 text") from None
    except (ValueError, RecursionError) as exc:  # an integer over 4,300 digits, nesting too deep
        raise InputError(str(path), f"unacceptable JSON ({type(exc).__name__})") from None
    root = Section(data, "", InputError)
    market = _market(root, config)
    instruments = _instruments(root, config)
    accounts = _json_accounts(root, config, instruments)
    root.finish()
    return PositionsInput(instruments, market, accounts.book(instruments), tuple(accounts.ids))


CSV_COLUMNS = ("account", "instrument", "kind", "underlying", "strike", "expiry", "size", "entry_price")


def _cell_number(row: Mapping[str, str], key: str, path: str, low: float, high: float) -> float:
    text = (row.get(key) or "").strip()
    try:
        value = as_number(float(text), join(path, key), InputError)
    except ValueError:
        raise InputError(join(path, key), f"expected a number, got {text[:40]!r}") from None
    return in_range(value, join(path, key), InputError, low, high)


def _cell_int(row: Mapping[str, str], key: str, path: str, low: int, high: int) -> int:
    text = (row.get(key) or "").strip()
    try:
        value = as_int(int(text), join(path, key), InputError) if len(text) <= 40 else None
    except ValueError:
        value = None
    if value is None:
        raise InputError(join(path, key), f"expected an integer, got {text[:40]!r}")
    if not low <= value <= high:
        raise InputError(join(path, key), f"{value} is out of range [{low}, {high}]")
    return value


def _flags_market(flags: MarketFlags, config: RiskConfig) -> MarketState:
    if flags.now is None:
        raise InputError("--now", "a CSV positions file needs the chain time (--now)")
    if not 0 <= flags.now <= MAX_TIME:
        raise InputError("--now", f"{flags.now} is out of range [0, {MAX_TIME}]")
    if not 0 <= flags.round_id < 2**64:
        raise InputError("--round", f"{flags.round_id} is out of range [0, 2**64)")
    missing = [s for s in config.symbols if s not in flags.spot]
    if missing:
        raise InputError("--spot", f"missing for {', '.join(missing)} (e.g. --spot {missing[0]}=...)")
    for name, table in (("--spot", flags.spot), ("--vol", flags.vol)):
        extra = [s for s in table if s not in config.symbols]
        if extra:
            raise InputError(name, f"unknown underlying {extra[0][:40]!r}")
    for s, price in flags.spot.items():
        if not math.isfinite(price) or not 0.0 < price <= MAX_USD:
            raise InputError("--spot", f"{s}={price!r} must be in (0, {MAX_USD:g}] USD")
    vols = tuple(
        _surface(flags.vol[s], flags.now, f"--vol {s}") if s in flags.vol else default
        for s, default in zip(config.symbols, config.vol_surfaces(), strict=True)
    )
    spot = np.array([flags.spot[s] for s in config.symbols])
    return MarketState(spot, flags.now, vols, flags.round_id)


def _csv_instrument(row: Mapping[str, str], kind: Kind, config: RiskConfig, path: str) -> dict[str, int | float]:
    dated = kind != Kind.PERP
    return {
        "instrument_id": _cell_int(row, "instrument", path, 0, MAX_ID),
        "kind": int(kind),
        "underlying": _underlying((row.get("underlying") or "").strip(), config, join(path, "underlying")),
        "strike": _cell_number(row, "strike", path, -math.inf, MAX_USD) if kind >= Kind.CALL else 0.0,
        "expiry": _cell_int(row, "expiry", path, 0, MAX_TIME) if dated else 0,
    }


def _csv_rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            header = tuple(reader.fieldnames or ())
            if header != CSV_COLUMNS:
                raise InputError("line 1", f"header must be {','.join(CSV_COLUMNS)}")
            return list(enumerate(reader, start=2))
    except OSError as exc:
        raise InputError(str(path), f"cannot read: {exc.strerror}") from None


def load_positions_csv(path: Path, config: RiskConfig, flags: MarketFlags) -> PositionsInput:
    """Read a CSV positions file with the market from ``flags`` (see module notes)."""
    market = _flags_market(flags, config)
    accounts = _Accounts(config)
    specs: dict[int, dict[str, int | float]] = {}
    legs: list[tuple[int, int, float, float, int]] = []
    for line, row in _csv_rows(path):
        where = f"line {line}"
        a = accounts.index(as_str((row.get("account") or "").strip(), join(where, "account"), InputError))
        kind_text = (row.get("kind") or "").strip().upper()
        if kind_text in ("CASH", "FUNDING"):
            amount = _cell_number(row, "size", where, -MAX_BALANCE_USD, MAX_BALANCE_USD)
            column = accounts.cash if kind_text == "CASH" else accounts.funding
            column[a] = in_range(column[a] + amount, join(where, "size"), InputError, -MAX_BALANCE_USD,
                                 MAX_BALANCE_USD)  # fmt: skip
        elif kind_text == "COLLATERAL":
            size = _cell_number(row, "size", where, 0.0, MAX_TOKENS)
            accounts.set_collateral(a, (row.get("underlying") or "").strip(), size, join(where, "underlying"))
        else:
            kind = _kind(kind_text, join(where, "kind"))
            size = _cell_number(row, "size", where, -MAX_UNITS, MAX_UNITS)
            spec = _csv_instrument(row, kind, config, where)
            iid = int(spec["instrument_id"])
            if specs.setdefault(iid, spec) != spec:
                raise InputError(join(where, "instrument"), f"instrument {iid} is defined differently above")
            entry = _cell_number(row, "entry_price", where, 0.0, MAX_USD) if kind < Kind.CALL else 0.0
            legs.append((a, iid, size, entry, line))
    instruments = InstrumentTable.from_records(specs.values())
    for a, iid, size, entry, line in legs:
        accounts.cost_basis[a] += size * entry
        accounts.add_position(a, iid, size, f"line {line}.account")
    return PositionsInput(instruments, market, accounts.book(instruments), tuple(accounts.ids))


def load_positions(path: Path, config: RiskConfig, flags: MarketFlags | None = None) -> PositionsInput:
    """Read a positions file: ``.csv`` with market flags, anything else as JSON.

    Raises
    ------
    InputError
        Any malformed entry; ``field`` names it. Also raised for instrument, market or account
        validation errors, re-labelled with the file's location where possible.
    """
    try:
        if path.suffix.lower() == ".csv":
            return load_positions_csv(path, config, flags or MarketFlags())
        return load_positions_json(path, config)
    except InputError:
        raise
    except PmsimError as exc:
        raise InputError(str(path), str(exc)) from None
