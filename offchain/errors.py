"""The exception hierarchy of pmsim.

Every error raised on purpose by the package derives from :class:`PmsimError`. Where a builtin
fits, the subclass inherits it too (``ConfigError`` is a ``ValueError``), so callers can catch
either the project root or the familiar builtin.
"""

from __future__ import annotations


class PmsimError(Exception):
    """Root of every error pmsim raises on purpose."""


class ConfigError(PmsimError, ValueError):
    """A configuration file or value is malformed; ``field`` names the offending entry."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class InputError(PmsimError, ValueError):
    """User input (positions, prices, requests) is invalid; ``field`` names the offending entry."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class UnknownInstrumentError(InputError, KeyError):
    """An instrument id or symbol that is not listed."""

    def __str__(self) -> str:  # KeyError quotes its message; keep the plain form
        return Exception.__str__(self)


class PricingError(PmsimError, ValueError):
    """A price, volatility or time input that makes a valuation meaningless (non-positive, NaN)."""


class PricingInputError(InputError, PricingError):
    """A pricing input (price, strike, volatility, time) is non-positive, negative or NaN.

    Both an :class:`InputError` (``field`` names the offending entry) and a :class:`PricingError`.
    """


class SettlementMissingError(InputError):
    """An option or future past expiry has no settlement price to value it at."""


class ChainError(PmsimError, RuntimeError):
    """A chain interaction failed (RPC error, revert, missing deployment)."""


class ContractRevertError(ChainError):
    """A transaction or call reverted; ``error_name`` is the decoded custom error if known."""

    def __init__(self, error_name: str, args: tuple[object, ...] = (), raw: str = "") -> None:
        self.error_name = error_name
        self.error_args = args
        self.raw = raw
        detail = f"{error_name}{args if args else ''}"
        super().__init__(f"reverted: {detail}")


class SigningError(PmsimError, ValueError):
    """A payload cannot be signed (bad key, wrong domain, value out of range)."""
