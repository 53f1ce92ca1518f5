"""Representative portfolios of the backtest, and portfolios read from a positions file.

A backtest portfolio is a list of :class:`Leg` described relative to the market of each test day
(rolled daily): a linear leg holds a constant USD notional of a perp; an option leg is a
constant-maturity European option struck at ``moneyness × spot`` with ``tenor_days`` to expiry,
sized to a constant USD notional of underlying. So the book's risk profile is the same on every
day of the nine years, and the only thing that changes is the market.
"""

from __future__ import annotations

from dataclasses import dataclass

from offchain.errors import InputError
from offchain.risk.instruments import Kind
from offchain.risk.positions_file import PositionsInput

NOTIONAL = 100_000.0  # USD of underlying per unit leg


@dataclass(frozen=True)
class Leg:
    """One position: ``units`` × :data:`NOTIONAL` USD of underlying (negative = short)."""

    kind: Kind
    underlying: int
    units: float
    moneyness: float = 1.0
    tenor_days: int = 0

    def __post_init__(self) -> None:
        option = self.kind in (Kind.CALL, Kind.PUT)
        if option and (self.moneyness <= 0.0 or self.tenor_days <= 0):
            raise InputError("leg", "an option leg needs moneyness > 0 and tenor_days > 0")
        if self.kind == Kind.FUTURE and self.tenor_days <= 0:
            raise InputError("leg", "a future leg needs tenor_days > 0")


@dataclass(frozen=True)
class Portfolio:
    """A named list of legs."""

    name: str
    legs: tuple[Leg, ...]


def _opt(kind: Kind, units: float, moneyness: float = 1.0, tenor: int = 30) -> Leg:
    return Leg(kind, 0, units, moneyness, tenor)


#: The representative set: linear long and short, a cross-underlying hedge, short options and an
#: option spread (all on a USD 100,000 notional per leg; options on BTC, 30 days to expiry).
REPRESENTATIVE: tuple[Portfolio, ...] = (
    Portfolio("long BTC", (Leg(Kind.PERP, 0, 1.0),)),
    Portfolio("short ETH", (Leg(Kind.PERP, 1, -1.0),)),
    Portfolio("BTC/ETH hedge", (Leg(Kind.PERP, 0, 1.0), Leg(Kind.PERP, 1, -1.0))),
    Portfolio("short straddle", (_opt(Kind.CALL, -1.0), _opt(Kind.PUT, -1.0))),
    Portfolio("short strangle", (_opt(Kind.CALL, -1.0, 1.1), _opt(Kind.PUT, -1.0, 0.9))),
    Portfolio("call spread", (_opt(Kind.CALL, 1.0), _opt(Kind.CALL, -1.0, 1.1))),
)


def from_positions(data: PositionsInput) -> tuple[Portfolio, ...]:
    """Portfolios equivalent to a positions file's accounts, relative to the file's market.

    Each position becomes a leg of the same USD notional (``size × spot``), the same moneyness
    (``strike / spot``) and the same whole number of days to expiry, re-struck on every test
    day. Expired positions are dropped; accounts left without positions are skipped.
    """
    ins, spot, now = data.instruments, data.market.spot, data.market.now
    csr = data.book.positions
    out = []
    for a, name in enumerate(data.account_ids):
        legs = []
        span = slice(csr.indptr[a], csr.indptr[a + 1])
        for row, size in zip(csr.indices[span], csr.data[span], strict=True):
            kind = Kind(int(ins.kind[row]))
            u = int(ins.underlying[row])
            tenor = round((int(ins.expiry[row]) - now) / 86_400) if kind != Kind.PERP else 0
            if (kind != Kind.PERP and tenor <= 0) or size == 0.0:
                continue
            money = float(ins.strike[row]) / float(spot[u]) if kind in (Kind.CALL, Kind.PUT) else 1.0
            legs.append(Leg(kind, u, float(size) * float(spot[u]) / NOTIONAL, money, tenor))
        if legs:
            out.append(Portfolio(name, tuple(legs)))
    return tuple(out)
