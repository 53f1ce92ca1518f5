"""Unchecked Black-76 kernels (private): callers must have validated every input.

The risk engine validates its market state and instrument table once per price round, then
prices thousands of scenarios through :func:`price_unchecked`; everyone else uses
:func:`offchain.models.black76.black76_price`, which checks its inputs. The one check kept
here costs O(1): ``is_call`` must already be a boolean array, so a string or a number can
never be priced as a call.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from offchain._typing import BoolArray, Float64Array
from offchain.errors import PricingInputError


def d1_d2(
    f: Float64Array, k: Float64Array, t: Float64Array, vol: Float64Array
) -> tuple[BoolArray, Float64Array, Float64Array, Float64Array]:
    """Return (live, sqrt_t, d1, d2); where ``live`` is False (expired) d1 and d2 are unused."""
    sqrt_t = np.sqrt(t)
    live = sqrt_t > 0.0
    sd = np.where(live, vol * sqrt_t, 1.0)
    d1 = (np.log(f / k) + 0.5 * sd * sd) / sd
    return live, sqrt_t, d1, d1 - sd


def price_unchecked(
    forward: Float64Array,
    strike: Float64Array,
    t: Float64Array,
    vol: Float64Array,
    is_call: BoolArray,
    discount: Float64Array | float = 1.0,
) -> Float64Array:
    """Black-76 value with no input checks (inputs must already be finite, positive, t >= 0).

    Parameters
    ----------
    forward, strike, t, vol : ndarray
        Forward price, strike, time to expiry in years and Black volatility.
    is_call : ndarray of bool
        True for calls, False for puts.
    discount : ndarray or float
        Discount factor ``exp(-r t)`` applied to the payoff.

    Returns
    -------
    ndarray
        Option value; intrinsic value ``max(±(F - K), 0)`` where ``t == 0``.
    """
    if np.asarray(is_call).dtype != np.bool_:
        raise PricingInputError("is_call", f"must be a boolean array, got dtype {np.asarray(is_call).dtype}")
    live, _, d1, d2 = d1_d2(forward, strike, t, vol)
    sign = np.where(is_call, 1.0, -1.0)
    black = sign * (forward * ndtr(sign * d1) - strike * ndtr(sign * d2))
    intrinsic = np.maximum(sign * (forward - strike), 0.0)
    out: Float64Array = discount * np.where(live, black, intrinsic)
    return out
