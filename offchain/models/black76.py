"""Black-76 prices and Greeks of European calls and puts, vectorised over numpy arrays.

All functions broadcast their arguments against each other. Inputs are checked at these public
entry points (:func:`black76_price`, :func:`black76_greeks`): prices, strikes and volatilities
finite and > 0, times >= 0, and ``is_call`` a real boolean (or boolean array) or an
:class:`OptionType` — never a string, a number or NaN, which ``bool()`` would silently turn into
a call. The unchecked fast path used by the risk engine on inputs it has validated once per price
round is private (``offchain.models._fast``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy.special import ndtr

from offchain._typing import ArrayLike, Float64Array
from offchain.models._checks import OptionType, check_finite, check_is_call, check_non_negative, check_positive
from offchain.models._fast import d1_d2, price_unchecked

__all__ = ["Greeks", "OptionType", "black76_greeks", "black76_price"]

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class Greeks(NamedTuple):
    """Black-76 value and sensitivities, one array each, all per unit of underlying.

    ``delta`` and ``gamma`` are taken with respect to the forward, ``vega`` per 1.00 (100 vol
    points) of volatility and ``theta`` is the calendar decay ``dV/dt`` per year with the forward
    held fixed.
    """

    price: Float64Array
    delta: Float64Array
    gamma: Float64Array
    vega: Float64Array
    theta: Float64Array


def _checked(
    forward: ArrayLike, strike: ArrayLike, t: ArrayLike, vol: ArrayLike, rate: ArrayLike
) -> tuple[Float64Array, Float64Array, Float64Array, Float64Array, Float64Array]:
    f = check_positive("forward", forward)
    k = check_positive("strike", strike)
    tt = check_non_negative("t", t)
    v = check_positive("vol", vol)
    r = check_finite("rate", rate)
    return f, k, tt, v, r


def black76_price(
    forward: ArrayLike,
    strike: ArrayLike,
    t: ArrayLike,
    vol: ArrayLike,
    is_call: ArrayLike,
    rate: ArrayLike = 0.0,
) -> Float64Array:
    r"""Black-76 value of European calls and puts.

    Parameters
    ----------
    forward : array_like
        Forward (or futures) price of the underlying, > 0.
    strike : array_like
        Strike price, > 0.
    t : array_like
        Time to expiry in years, >= 0 (0 gives intrinsic value).
    vol : array_like
        Black volatility per sqrt(year), > 0.
    is_call : bool, array of bool, or OptionType
        True (``OptionType.CALL``) for a call, False (``OptionType.PUT``) for a put. Anything
        else (``"put"``, 1, NaN) raises.
    rate : array_like, optional
        Continuously compounded discount rate (default 0).

    Returns
    -------
    ndarray
        Option values, broadcast shape of the inputs.

    Raises
    ------
    PricingInputError
        A non-positive or non-finite forward, strike or volatility, a negative or non-finite
        time, a non-finite rate, or an ``is_call`` that is not a boolean or an
        :class:`OptionType`; the message names the field and the first bad index.

    Notes
    -----
    Black (1976):

    .. math::

        d_{1,2} = \frac{\ln(F/K) \pm \tfrac12 \sigma^2 T}{\sigma\sqrt T}, \qquad
        C = e^{-rT}\,[F N(d_1) - K N(d_2)], \qquad
        P = e^{-rT}\,[K N(-d_2) - F N(-d_1)].

    Put-call parity :math:`C - P = e^{-rT}(F - K)` holds to rounding.
    """
    f, k, tt, v, r = _checked(forward, strike, t, vol, rate)
    calls = check_is_call("is_call", is_call)
    return price_unchecked(f, k, tt, v, calls, np.exp(-r * tt))


def black76_greeks(
    forward: ArrayLike,
    strike: ArrayLike,
    t: ArrayLike,
    vol: ArrayLike,
    is_call: ArrayLike,
    rate: ArrayLike = 0.0,
) -> Greeks:
    r"""Black-76 value, delta, gamma, vega and theta of European calls and puts.

    Parameters are those of :func:`black76_price`.

    Returns
    -------
    Greeks
        Named tuple of arrays (price, delta, gamma, vega, theta).

    Notes
    -----
    With :math:`D = e^{-rT}`, :math:`\phi` the standard normal density and
    :math:`\omega = +1` for calls, :math:`-1` for puts:

    .. math::

        \Delta = \omega D\,N(\omega d_1), \quad
        \Gamma = \frac{D\,\phi(d_1)}{F \sigma \sqrt T}, \quad
        \mathcal V = D\,F \phi(d_1) \sqrt T, \quad
        \Theta = \frac{\partial V}{\partial t} = r V - \frac{D\,F \phi(d_1)\,\sigma}{2\sqrt T}.

    At expiry (``t == 0``) delta is the step ``ω·1[ω(F − K) > 0]`` and gamma, vega and theta
    are 0.
    """
    f, k, tt, v, r = _checked(forward, strike, t, vol, rate)
    f, k, tt, v, r, calls = np.broadcast_arrays(f, k, tt, v, r, check_is_call("is_call", is_call))
    disc = np.exp(-r * tt)
    live, sqrt_t, d1, _ = d1_d2(f, k, tt, v)
    sign = np.where(calls, 1.0, -1.0)
    price = price_unchecked(f, k, tt, v, calls, disc)
    step = sign * (sign * (f - k) > 0.0)
    delta = np.where(live, disc * sign * ndtr(sign * d1), step)
    d1_bounded = np.clip(d1, -40.0, 40.0)  # φ(±40) underflows to 0 anyway; avoids d1² overflow
    density = disc * _INV_SQRT_2PI * np.exp(-0.5 * d1_bounded * d1_bounded)
    safe_sqrt_t = np.where(live, sqrt_t, 1.0)
    gamma = np.where(live, density / (f * v * safe_sqrt_t), 0.0)
    vega = np.where(live, f * density * sqrt_t, 0.0)
    theta = np.where(live, r * price - f * density * v / (2.0 * safe_sqrt_t), 0.0)
    return Greeks(price, delta, gamma, vega, theta)
