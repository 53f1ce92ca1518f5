"""Input checks shared by the pricing models: each failure names the field (and index) at fault."""

from __future__ import annotations

import enum

import numpy as np

from offchain._typing import ArrayLike, BoolArray, Float64Array
from offchain.errors import PricingInputError


def as_float_array(name: str, value: ArrayLike) -> Float64Array:
    """Return ``value`` as a float64 array, or raise naming ``name`` if it is not numeric."""
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise PricingInputError(name, f"not a number ({exc})") from None


def _first_bad(name: str, bad: BoolArray, values: Float64Array, what: str) -> None:
    if not bad.any():
        return
    flat = int(np.flatnonzero(bad.ravel())[0])
    field = name if values.ndim == 0 else f"{name}[{flat}]"
    raise PricingInputError(field, f"must be {what}, got {values.ravel()[flat]!r}")


def check_positive(name: str, value: ArrayLike) -> Float64Array:
    """Return ``value`` as floats; raise :class:`PricingInputError` unless finite and > 0."""
    arr = as_float_array(name, value)
    _first_bad(name, ~(np.isfinite(arr) & (arr > 0.0)), arr, "finite and > 0")
    return arr


def check_non_negative(name: str, value: ArrayLike) -> Float64Array:
    """Return ``value`` as floats; raise :class:`PricingInputError` unless finite and >= 0."""
    arr = as_float_array(name, value)
    _first_bad(name, ~(np.isfinite(arr) & (arr >= 0.0)), arr, "finite and >= 0")
    return arr


def check_finite(name: str, value: ArrayLike) -> Float64Array:
    """Return ``value`` as floats; raise :class:`PricingInputError` unless finite."""
    arr = as_float_array(name, value)
    _first_bad(name, ~np.isfinite(arr), arr, "finite")
    return arr


class OptionType(enum.Enum):
    """Explicit option type, accepted wherever ``is_call`` is (``CALL`` is ``True``)."""

    CALL = "call"
    PUT = "put"


def _is_call_scalar(value: object) -> bool | None:
    if isinstance(value, OptionType):
        return value is OptionType.CALL
    if isinstance(value, bool | np.bool_):
        return bool(value)
    return None


def check_is_call(name: str, value: object) -> BoolArray:
    """``value`` as a boolean array; only booleans (or arrays of them) and :class:`OptionType`.

    Raises
    ------
    PricingInputError
        Anything else — a string such as ``"put"``, a number (0, 1, 2), NaN — naming the field
        and the first bad index; ``bool()`` would have priced each of them as a call or a put.
    """
    scalar = _is_call_scalar(value)
    if scalar is not None:
        return np.asarray(scalar)
    try:  # sequences keep their items (np.asarray would turn [True, "put"] into strings)
        arr = value if isinstance(value, np.ndarray) else np.array(value, dtype=object)
    except (TypeError, ValueError) as exc:
        raise PricingInputError(name, f"must be a bool or OptionType ({exc})") from None
    if arr.dtype == np.bool_:
        return arr
    flat = arr.ravel()
    out = np.empty(flat.size, dtype=bool)
    for i, item in enumerate(flat):
        parsed = _is_call_scalar(item)
        if parsed is None:
            field = name if arr.ndim == 0 else f"{name}[{i}]"
            raise PricingInputError(field, f"must be a bool or OptionType, got {item!r}")
        out[i] = parsed
    return out.reshape(arr.shape)
