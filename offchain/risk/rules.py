r"""Position-by-position rules: standard margin and the add-on bases, per unit of each instrument.

Standard margin (isolated, the baseline users compare portfolio margin against), per unit held,
with :math:`S` the index price and :math:`V` the option's mark:

* perp or future, long or short: ``standard_linear_rate`` × :math:`S`;
* long option: its premium at mark, :math:`V` (all it can lose);
* short option: :math:`\max(x S - \mathrm{OTM},\ y S) + V` with :math:`x` =
  ``standard_short_rate``, :math:`y` = ``standard_short_floor`` and OTM the out-of-the-money
  amount (:math:`\max(K - S, 0)` for a call, :math:`\max(S - K, 0)` for a put) — the
  Deribit/CME style rule.

An account's standard margin is the plain sum over its positions: no offsets at all.

Add-on bases (combined per account by the margin kernel):

* short-option minimum: ``short_option_min_rate`` × :math:`S` per unit of *short* option;
* concentration: per position, ``concentration_rate`` × :math:`S` per unit held beyond
  ``concentration_threshold`` units.

Expired positions carry no requirement (their value is settled).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from offchain._typing import Float64Array
from offchain.risk.config import RiskConfig
from offchain.risk.instruments import InstrumentTable, Kind
from offchain.risk.pricing import Valuation


@dataclass(frozen=True, eq=False)
class PositionRules:
    """Per-unit requirement bases of every instrument (arrays indexed by instrument row)."""

    standard_long: Float64Array
    standard_short: Float64Array
    short_option_min: Float64Array
    concentration_threshold: Float64Array
    concentration_unit: Float64Array


def position_rules(instruments: InstrumentTable, valuation: Valuation, config: RiskConfig) -> PositionRules:
    """Evaluate the module's rules at the current marks."""
    params = config.underlyings
    u = instruments.underlying
    per = {
        name: np.array([getattr(p, name) for p in params])[u]
        for name in (
            "standard_linear_rate",
            "standard_short_rate",
            "standard_short_floor",
            "short_option_min_rate",
            "concentration_threshold",
            "concentration_rate",
        )
    }
    s, mark, strike = valuation.spot, valuation.mark, instruments.strike
    live = ~valuation.expired
    opt = valuation.live_option
    otm = np.where(instruments.kind == Kind.CALL, np.maximum(strike - s, 0.0), 0.0)
    otm = np.where(instruments.kind == Kind.PUT, np.maximum(s - strike, 0.0), otm)
    short_opt = np.maximum(per["standard_short_rate"] * s - otm, per["standard_short_floor"] * s)
    linear = np.where(live, per["standard_linear_rate"] * s, 0.0)
    return PositionRules(
        standard_long=np.where(opt, mark, linear),
        standard_short=np.where(opt, short_opt + mark, linear),
        short_option_min=np.where(opt, per["short_option_min_rate"] * s, 0.0),
        concentration_threshold=per["concentration_threshold"],
        concentration_unit=np.where(live, per["concentration_rate"] * s, 0.0),
    )
