"""Pricing models: Black-76 prices and Greeks, SVI volatility surfaces, scalar references."""

from offchain.models.black76 import Greeks, OptionType, black76_greeks, black76_price
from offchain.models.vol_surface import SviSlice, VolSurface

__all__ = [
    "Greeks",
    "OptionType",
    "SviSlice",
    "VolSurface",
    "black76_greeks",
    "black76_price",
]
