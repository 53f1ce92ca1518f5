r"""Fair-price marking: an index that one bad source cannot move, and a time-weighted perp basis.

A price service that posts the *median* of several independent sources per underlying (after
dropping stale and invalid quotes) survives any single manipulated source as long as the honest
ones agree: with :math:`n \ge 3` sources the median stays between the honest quotes. The perp mark
adds to that index a *time-weighted* average of the perp's basis over a window, clamped to a band,
so a short burst of trades at a manipulated price moves the mark — hence funding and equity — by
at most (burst length / window) × the manipulation, and never beyond the band. Option marks take
the median of the sources' marks, bounded to a band around the engine's own model value.

Notes
-----
Index: :math:`I_t = \operatorname{median}\{p^{(i)}_t : t - \tau^{(i)} \le \text{max\_age}\}`.
Basis: with samples :math:`b_k = (P_k - I_k)/I_k` held from :math:`t_k` to :math:`t_{k+1}`,

.. math::

    \bar b_t = \frac{\sum_k b_k\, |[t_k, t_{k+1}) \cap [t - W, t)|}{\sum_k |[t_k, t_{k+1}) \cap [t - W, t)|},
    \qquad \text{mark}_t = I_t\,(1 + \operatorname{clip}(\bar b_t, -\beta, \beta)).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from offchain._typing import Float64Array
from offchain.errors import InputError
from offchain.feeds.sources import PriceStep


@dataclass(frozen=True)
class SourceQuote:
    """One source's latest price of one underlying, observed at ``time`` (unix seconds)."""

    source: str
    time: int
    price: float


def median_index(quotes: Sequence[SourceQuote], now: int, max_age: int = 60, min_sources: int = 3) -> float:
    """Median of the fresh, valid quotes (see the module notes).

    Raises
    ------
    InputError
        Fewer than ``min_sources`` quotes are fresh (``time`` within ``max_age`` of ``now``, not in
        the future), finite and > 0; the field is ``quotes``.
    """
    good = [q.price for q in quotes
            if 0 <= now - q.time <= max_age and math.isfinite(q.price) and q.price > 0.0]  # fmt: skip
    if len(good) < min_sources:
        raise InputError("quotes", f"{len(good)} fresh valid sources, {min_sources} needed")
    return float(np.median(good))


@dataclass
class TwapBasis:
    """Time-weighted average perp basis over the last ``window`` seconds, clamped to ``±band``."""

    window: int = 3_600
    band: float = 0.05
    _samples: deque[tuple[int, float]] = field(default_factory=deque)

    def __post_init__(self) -> None:
        if self.window <= 0 or not 0.0 <= self.band < 1.0:
            raise InputError("basis", "window must be > 0 and band in [0, 1)")

    def update(self, time: int, perp_price: float, index: float) -> None:
        """Record the basis ``perp_price / index - 1`` from ``time`` on (times must not go back)."""
        if not (math.isfinite(perp_price) and perp_price > 0.0 and math.isfinite(index) and index > 0.0):
            raise InputError("basis", f"prices must be finite and > 0, got {perp_price!r}, {index!r}")
        if self._samples and time < self._samples[-1][0]:
            raise InputError("basis.time", f"{time} is before the last sample {self._samples[-1][0]}")
        self._samples.append((time, perp_price / index - 1.0))
        while len(self._samples) > 1 and self._samples[1][0] <= time - self.window:
            self._samples.popleft()

    def value(self, now: int) -> float:
        """The clamped time-weighted basis at ``now`` (0 before any sample)."""
        if not self._samples:
            return 0.0
        start = now - self.window
        total = weighted = 0.0
        items = list(self._samples)
        for (t, b), nxt in zip(items, [*items[1:], (now, 0.0)], strict=True):
            held = max(0, min(nxt[0], now) - max(t, start))
            total += held
            weighted += held * b
        mean = weighted / total if total > 0 else items[-1][1]
        return min(max(mean, -self.band), self.band)


def perp_mark(index: float, basis: TwapBasis, now: int) -> float:
    """Fair perp mark: the index plus the clamped time-weighted basis."""
    return index * (1.0 + basis.value(now))


def option_marks(model: Float64Array, sources: Sequence[Float64Array], band: float = 0.2) -> Float64Array:
    """Per option, the median of the sources' marks bounded to ``model × (1 ± band)``.

    ``model`` is the engine's own value (its volatility surface at the median index); a source
    that quotes nonsense for an option can move its mark by at most ``band`` of the model value
    even if it is the median, and not at all while the other sources agree.
    """
    values = np.asarray(model, dtype=np.float64)
    if not sources:
        return values.copy()
    stacked = np.vstack([np.asarray(s, dtype=np.float64) for s in sources])
    if stacked.shape[1] != values.size:
        raise InputError("sources", f"each source needs {values.size} option marks")
    valid = np.isfinite(stacked) & (stacked >= 0.0)
    median = values.copy()
    for j in np.flatnonzero(valid.any(axis=0)):  # invalid quotes are dropped; none valid -> the model
        median[j] = float(np.median(stacked[valid[:, j], j]))
    out: Float64Array = np.clip(median, values * (1.0 - band), values * (1.0 + band))
    return out


def median_steps(sources: Iterable[Iterator[PriceStep]]) -> Iterator[PriceStep]:
    """Merge aligned price sources step by step into their per-underlying median.

    The price service can post these steps (``PriceService.run(median_steps(...))``): one bad
    source among three or more never reaches the chain. Sources must yield the same offsets.
    """
    for steps in zip(*sources, strict=True):
        offsets = {s.offset for s in steps}
        if len(offsets) != 1:
            raise InputError("sources", f"sources disagree on the step time: {sorted(offsets)}")
        prices = np.array([s.prices for s in steps], dtype=np.float64)
        if prices.shape[0] < 3:
            raise InputError("sources", "a median needs at least 3 sources")
        yield PriceStep(steps[0].offset, tuple(float(x) for x in np.median(prices, axis=0)))
