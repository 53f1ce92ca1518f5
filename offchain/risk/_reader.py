"""Typed reading of nested mappings (parsed TOML or JSON) with dotted field paths in errors.

A :class:`Section` wraps one table, hands out typed values and remembers which keys it read, so
that :meth:`Section.finish` can reject unknown (misspelt) keys. Every error is raised through the
``error`` factory given at the root, so the same reader serves configuration files
(``ConfigError``) and positions files (``InputError``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence

from offchain.errors import PmsimError

ErrorFactory = Callable[[str, str], PmsimError]


def join(path: str, key: str | int) -> str:
    """Dotted path of ``key`` inside ``path`` (``grid`` + ``spot_shocks`` -> ``grid.spot_shocks``)."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if not key or not key.isprintable() or len(key) > 64:  # name odd keys so that the message shows them
        key = json.dumps(key[:64])
    return f"{path}.{key}" if path else key


def as_number(value: object, path: str, error: ErrorFactory) -> float:
    """A finite int or float (not bool) as float, else ``error(path, ...)``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise error(path, f"expected a number, got {type(value).__name__} {_show(value)}")
    try:
        out = float(value)
    except OverflowError:  # an integer beyond the float range
        raise error(path, f"expected a finite number, got {_show(value)}") from None
    if not math.isfinite(out):
        raise error(path, f"expected a finite number, got {_show(value)}")
    return out


def _show(value: object) -> str:
    """``repr`` of a value, huge integers summarised (``str`` refuses over 4,300 digits)."""
    if isinstance(value, int) and abs(value) > 10**40:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def in_range(value: float, path: str, error: ErrorFactory, low: float, high: float) -> float:
    """``value`` if ``low <= value <= high``, else ``error(path, ...)`` quoting the bounds."""
    if not low <= value <= high:
        raise error(path, f"{_show(value)} is out of range [{low:g}, {high:g}]")
    return value


def as_int(value: object, path: str, error: ErrorFactory) -> int:
    """An int (not bool, not float), else ``error(path, ...)``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(path, f"expected an integer, got {type(value).__name__} {_show(value)}")
    return value


def as_str(value: object, path: str, error: ErrorFactory) -> str:
    """A non-empty string, else ``error(path, ...)``."""
    if not isinstance(value, str) or not value:
        raise error(path, f"expected a non-empty string, got {_show(value)}")
    return value


def as_list(value: object, path: str, error: ErrorFactory) -> Sequence[object]:
    """A list (TOML array / JSON array), else ``error(path, ...)``."""
    if not isinstance(value, list):
        raise error(path, f"expected a list, got {type(value).__name__}")
    return value


class Section:
    """One table of a nested mapping, read key by key with typed accessors."""

    def __init__(self, data: object, path: str, error: ErrorFactory) -> None:
        if not isinstance(data, Mapping):
            raise error(path or "<root>", f"expected a table, got {type(data).__name__}")
        self._data: Mapping[str, object] = data
        self._path = path
        self._error = error
        self._seen: set[str] = set()

    @property
    def path(self) -> str:
        """Dotted path of this table."""
        return self._path

    def error(self, key: str | int, message: str) -> PmsimError:
        """An error naming ``key`` of this table."""
        return self._error(join(self._path, key), message)

    def has(self, key: str) -> bool:
        """True if ``key`` is present."""
        return key in self._data

    def raw(self, key: str, default: object = None, *, required: bool = True) -> object:
        """The untyped value of ``key`` (marked as read)."""
        self._seen.add(key)
        if key not in self._data:
            if required:
                raise self.error(key, "missing")
            return default
        return self._data[key]

    def number(self, key: str, default: float | None = None, *, low: float = -math.inf,
               high: float = math.inf) -> float:  # fmt: skip
        """A finite number in ``[low, high]``; ``default`` makes the key optional."""
        value = self.raw(key, default, required=default is None)
        path = join(self._path, key)
        return in_range(as_number(value, path, self._error), path, self._error, low, high)

    def integer(self, key: str, default: int | None = None, *, low: int | None = None,
                high: int | None = None) -> int:  # fmt: skip
        """An integer in ``[low, high]`` (each bound optional); ``default`` makes the key optional."""
        value = self.raw(key, default, required=default is None)
        path = join(self._path, key)
        out = as_int(value, path, self._error)
        if (low is not None and out < low) or (high is not None and out > high):
            lo, hi = "-inf" if low is None else low, "inf" if high is None else high
            raise self._error(path, f"{_show(out)} is out of range [{lo}, {hi}]")
        return out

    def string(self, key: str, default: str | None = None) -> str:
        """A non-empty string; ``default`` makes the key optional."""
        value = self.raw(key, default, required=default is None)
        return as_str(value, join(self._path, key), self._error)

    def numbers(self, key: str) -> tuple[float, ...]:
        """A list of finite numbers."""
        path = join(self._path, key)
        items = as_list(self.raw(key), path, self._error)
        return tuple(as_number(v, join(path, i), self._error) for i, v in enumerate(items))

    def matrix(self, key: str) -> tuple[tuple[float, ...], ...]:
        """A list of lists of finite numbers."""
        path = join(self._path, key)
        rows = as_list(self.raw(key), path, self._error)
        out = []
        for i, row in enumerate(rows):
            items = as_list(row, join(path, i), self._error)
            out.append(tuple(as_number(v, join(join(path, i), j), self._error) for j, v in enumerate(items)))
        return tuple(out)

    def table(self, key: str, *, required: bool = True) -> Section:
        """A sub-table (an empty one if optional and absent)."""
        return Section(self.raw(key, {}, required=required), join(self._path, key), self._error)

    def tables(self, key: str) -> list[Section]:
        """A list of tables (TOML array of tables, JSON list of objects)."""
        path = join(self._path, key)
        items = as_list(self.raw(key), path, self._error)
        return [Section(item, join(path, i), self._error) for i, item in enumerate(items)]

    def names(self) -> list[str]:
        """All keys of the table, in file order (each marked as read)."""
        self._seen.update(self._data)
        return list(self._data)

    def finish(self) -> None:
        """Reject keys that were never read (typos, unsupported options)."""
        for key in self._data:
            if key not in self._seen:
                raise self.error(key, "unknown key")
