"""Joint daily close history of the underlyings, turned into 1-day historical return scenarios.

Input files follow ``data/market/SOURCES.md``: CSV with a header holding ``timestamp`` (ISO 8601,
UTC, candle open) and ``close``. The scenarios are the simple returns
``close[d] / close[d - 1] - 1`` over every pair of consecutive calendar days ``(d - 1, d)`` on
which *every* underlying has a close; a pair spanning a gap in the joint dates is skipped rather
than treated as one day.
"""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from eth_utils import keccak

from offchain._typing import Float64Array, Int64Array
from offchain.errors import ConfigError, InputError

_DAY_SECONDS = 86_400


def close_time(date: str) -> int:
    """Unix time at which the daily return ending on ISO ``date`` is known (the next 00:00 UTC)."""
    day = dt.date.fromisoformat(date)
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()) + _DAY_SECONDS


@dataclass(frozen=True, eq=False)
class HistoricalReturns:
    """One-day joint returns: ``returns[i, u]`` is underlying ``u``'s return on ``dates[i]``.

    ``dates`` are ISO dates (the day the return ends on), ascending. The arrays are read-only.
    """

    dates: tuple[str, ...]
    returns: Float64Array

    def __post_init__(self) -> None:
        returns = np.array(self.returns, dtype=np.float64, order="C")
        if returns.ndim != 2 or returns.shape[0] != len(self.dates):
            raise ConfigError("history", "returns must be a (dates x underlyings) matrix")
        if not np.all(np.isfinite(returns)) or np.any(returns <= -1.0):
            raise ConfigError("history", "returns must be finite and > -100 %")
        returns.setflags(write=False)
        object.__setattr__(self, "returns", returns)

    def digest(self) -> str:
        """Hex keccak256 of the dates and the little-endian float64 returns (binds the data)."""
        payload = ",".join(self.dates).encode() + self.returns.astype("<f8").tobytes()
        return "0x" + keccak(payload).hex()

    @property
    def known_at(self) -> Int64Array:
        """Unix time from which each return is known (:func:`close_time` of its date), ascending."""
        return self._known_at

    @cached_property
    def _known_at(self) -> Int64Array:
        out = np.array([close_time(d) for d in self.dates], dtype=np.int64)
        out.setflags(write=False)
        return out

    def count_as_of(self, timestamp: int) -> int:
        """Number of returns known at unix time ``timestamp`` (a prefix of the history)."""
        return int(np.searchsorted(self.known_at, timestamp, side="right"))

    def as_of(self, timestamp: int) -> HistoricalReturns:
        """The returns known at unix time ``timestamp``: closes after it are never included.

        Raises
        ------
        InputError
            No return is known yet at ``timestamp`` (field ``market.as_of``).
        """
        n = self.count_as_of(timestamp)
        if n == len(self.dates):
            return self
        if n == 0:
            raise InputError("market.as_of", f"no historical return is known at {timestamp} (first: {self.dates[0]})")
        return HistoricalReturns(self.dates[:n], self.returns[:n])

    def window(self, days: int) -> HistoricalReturns:
        """The most recent ``days`` returns (all of them for ``days == 0``)."""
        if days == 0 or days >= len(self.dates):
            return self
        return HistoricalReturns(self.dates[-days:], self.returns[-days:])


def read_closes(path: Path, field: str) -> dict[dt.date, float]:
    """Daily closes of one CSV file keyed by date; errors name ``field`` and the line."""
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            closes = {}
            for line, row in enumerate(reader, start=2):
                closes[_parse_date(row, path, line, field)] = _parse_close(row, path, line, field)
    except OSError as exc:
        raise ConfigError(field, f"cannot read {path}: {exc.strerror}") from None
    if not closes:
        raise ConfigError(field, f"{path} holds no rows")
    return closes


def read_close_series(path: Path, field: str) -> tuple[Int64Array, Float64Array]:
    """Closes of one CSV file at their full timestamps (any cadence, e.g. hourly).

    Returns ``(times, closes)``: unix seconds of each candle's open (strictly increasing) and its
    close; errors name ``field`` and the line, like :func:`read_closes`.
    """
    times: list[int] = []
    closes: list[float] = []
    try:
        with path.open(newline="") as handle:
            for line, row in enumerate(csv.DictReader(handle), start=2):
                times.append(_parse_timestamp(row, path, line, field))
                closes.append(_parse_close(row, path, line, field))
                if len(times) > 1 and times[-1] <= times[-2]:
                    raise ConfigError(field, f"{path}:{line}: timestamps must strictly increase")
    except OSError as exc:
        raise ConfigError(field, f"cannot read {path}: {exc.strerror}") from None
    if not closes:
        raise ConfigError(field, f"{path} holds no rows")
    return np.array(times, dtype=np.int64), np.array(closes, dtype=np.float64)


def _parse_timestamp(row: dict[str, str], path: Path, line: int, field: str) -> int:
    try:
        moment = dt.datetime.fromisoformat(row["timestamp"].replace("Z", "+00:00"))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ConfigError(field, f"{path}:{line}: bad or missing timestamp") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp())


def _parse_date(row: dict[str, str], path: Path, line: int, field: str) -> dt.date:
    try:
        return dt.date.fromisoformat(row["timestamp"][:10])
    except (KeyError, TypeError, ValueError):
        raise ConfigError(field, f"{path}:{line}: bad or missing timestamp") from None


def _parse_close(row: dict[str, str], path: Path, line: int, field: str) -> float:
    try:
        close = float(row["close"])
    except (KeyError, TypeError, ValueError):
        raise ConfigError(field, f"{path}:{line}: bad or missing close") from None
    if not math.isfinite(close) or close <= 0.0:
        raise ConfigError(field, f"{path}:{line}: close must be finite and > 0")
    return close


def joint_returns(series: Sequence[dict[dt.date, float]]) -> HistoricalReturns:
    """Joint 1-day simple returns of several close series (see module notes)."""
    common = sorted(set.intersection(*(set(s) for s in series)))
    one_day = dt.timedelta(days=1)
    ends = [d for prev, d in itertools.pairwise(common) if d - prev == one_day]
    if not ends:
        raise ConfigError("history", "the close series share no two consecutive days")
    returns = np.array([[s[d] / s[d - one_day] - 1.0 for s in series] for d in ends])
    return HistoricalReturns(tuple(d.isoformat() for d in ends), returns)
