"""Protocol constants shared by every layer: mirrors of ``contracts/libraries/Constants.sol`` and
the on-chain ``Kind`` enum. Pure Python, no imports of the package: ``risk`` and ``chain`` both
build on it."""

from __future__ import annotations

from enum import IntEnum

PRICE_SCALE = 10**18  # 1e18 = 1 USD
SIZE_SCALE = 10**18  # 1e18 = one unit of the underlying
WAD = 10**18
LOT = 10**15  # sizes are multiples of 0.001 unit
TICK = 10**15  # prices are multiples of 0.001 USD
VALUE_DIVISOR = 10**30  # size * price / 1e30 = quote units
QUOTE_DECIMALS = 6
QUOTE_SCALE = 1_000_000  # 10**QUOTE_DECIMALS
FUNDING_PERIOD = 8 * 3600
FUNDING_DECAY = 3600  # a traded premium decays to zero over this time (Constants.FUNDING_DECAY)
MAX_SIZE = 10**30  # largest fill size (SIZE_SCALE)
MAX_PRICE = 10**30  # largest price (PRICE_SCALE)
MAX_POSITIONS = 64  # hard cap of the on-chain maxPositions parameter


class Kind(IntEnum):
    """Instrument kind, numbered as the on-chain enum."""

    PERP = 0
    FUTURE = 1
    CALL = 2
    PUT = 3
