"""Input checks shared by the pricing models: each failure names the field (and index) at fault."""

from __future__ import annotations

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
