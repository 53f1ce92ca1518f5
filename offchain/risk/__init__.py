"""Portfolio margin for every account at once (see docs/risk-engine.md).

The public API, re-exported here: the configuration (:func:`load_config`, :class:`RiskConfig`
with :meth:`RiskConfig.canonical_hash`), the inputs (:class:`InstrumentTable`, :class:`Kind`,
:class:`MarketState`, :class:`AccountBook`, :class:`AccountState`), the engine
(:class:`MarginEngine`: ``compute`` for all accounts, ``account`` and the ``what_if_*`` helpers
for one), its results, the fixed-point conversions and the reports.
"""

from offchain.risk.accounts import AccountBook, AccountState
from offchain.risk.config import RiskConfig, load_config
from offchain.risk.engine import AccountMargin, MarginEngine, MarginResult, WhatIf
from offchain.risk.fixed_point import (
    AttestedFigures,
    attested_figures,
    from_price_e18,
    from_quote_units,
    from_size_e18,
    quote_units_down,
    quote_units_up,
    to_price_e18,
    to_quote_units_down,
    to_quote_units_up,
    to_size_e18,
)
from offchain.risk.instruments import InstrumentTable, Kind
from offchain.risk.liquidation import LiquidationLevels, liquidation_levels
from offchain.risk.market import MarketState
from offchain.risk.report import AccountReport, BookReport, account_report, build_report, report_to_dict

__all__ = [
    "AccountBook",
    "AccountMargin",
    "AccountReport",
    "AccountState",
    "AttestedFigures",
    "BookReport",
    "InstrumentTable",
    "Kind",
    "LiquidationLevels",
    "MarginEngine",
    "MarginResult",
    "MarketState",
    "RiskConfig",
    "WhatIf",
    "account_report",
    "attested_figures",
    "build_report",
    "from_price_e18",
    "from_quote_units",
    "from_size_e18",
    "liquidation_levels",
    "load_config",
    "quote_units_down",
    "quote_units_up",
    "report_to_dict",
    "to_price_e18",
    "to_quote_units_down",
    "to_quote_units_up",
    "to_size_e18",
]
