"""The risk engine's configuration: typed, validated, hashed.

Every parameter that can change a margin figure lives in one :class:`RiskConfig` (frozen
dataclasses), loaded from ``config/risk.toml`` by :func:`load_config`. Any malformed value raises
:class:`~offchain.errors.ConfigError` naming its dotted field (``grid.spot_shocks[3]``,
``underlying[1].spot_range``). :meth:`RiskConfig.canonical_hash` binds the parameters *and* the
historical data to 32 bytes, the engine half of the on-chain ``paramsHash``.
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass, fields
from datetime import date
from fractions import Fraction
from functools import cached_property
from pathlib import Path
from typing import Literal, cast

import numpy as np
from eth_utils import keccak

from offchain._typing import Float64Array
from offchain.errors import ConfigError, PricingInputError
from offchain.models.vol_surface import SviSlice, VolSurface
from offchain.risk._reader import Section
from offchain.risk.history import HistoricalReturns, joint_returns, read_closes

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parents[2] / "config" / "risk.toml"
SCHEMA = "pmsim.risk/1"
TailMethod = Literal["historical", "monte_carlo", "none"]
TAIL_METHODS: tuple[TailMethod, ...] = ("historical", "monte_carlo", "none")
VolatilityFilter = Literal["none", "ewma"]
VOLATILITY_FILTERS: tuple[VolatilityFilter, ...] = ("none", "ewma")


@dataclass(frozen=True)
class UnderlyingConfig:
    """Per-underlying parameters (one ``[[underlying]]`` table; order = on-chain index).

    Attributes
    ----------
    symbol : str
        Ticker (``BTC``); instruments refer to the underlying by its index in the list.
    spot_range : float
        Full-weight spot move of the scenario grid, as a fraction (0.15 = ±15 %).
    short_option_min_rate : float
        Short-option minimum: IM is at least ``rate × spot`` per unit of short option.
    concentration_threshold : float
        Units of underlying per instrument held before the concentration charge starts.
    concentration_rate : float
        Concentration charge per USD of notional above the threshold.
    standard_linear_rate : float
        Standard margin of a perp or future, fraction of notional.
    standard_short_rate, standard_short_floor : float
        Standard margin of a short option: ``max(rate·S − OTM, floor·S) + premium`` per unit.
    vol : tuple of SviSlice
        The engine's implied-volatility surface: raw SVI pillars by time to expiry in years
        (``vol = [[t, a, b, rho, m, sigma], ...]``), linear in total variance between pillars. It
        is part of the configuration, hence of the parameter hash, so independent signers value
        options identically; changing it is a parameter change.
    """

    symbol: str
    spot_range: float
    short_option_min_rate: float
    concentration_threshold: float
    concentration_rate: float
    standard_linear_rate: float
    standard_short_rate: float
    standard_short_floor: float
    vol: tuple[SviSlice, ...]


@dataclass(frozen=True)
class CollateralConfig:
    """A collateral token: valued at its underlying's spot (1 USD if ``underlying`` is empty)."""

    symbol: str
    haircut: float
    underlying: str


@dataclass(frozen=True)
class GridConfig:
    """Scenario grid (see :mod:`offchain.risk.scenarios` for how it is laid out).

    Attributes
    ----------
    spot_shocks : tuple of float
        Spot levels as fractions of each underlying's range, strictly increasing in [-1, 1],
        containing 0.
    vol_shocks : tuple of float
        Relative implied-volatility shocks (0.3 = vol × 1.3), strictly increasing, > -1,
        containing 0.
    extreme_multiple, extreme_weight : float
        Extreme moves: ``±multiple × range`` at vol unchanged, loss counted at ``weight``.
    decorrelation_weight : float
        Weight of the scenarios where one underlying moves its full range alone.
    max_offset_credit : float
        Cap on the cross-underlying offset: the grid loss is at least
        ``(1 - max_offset_credit) × Σ standalone grid losses``.
    """

    spot_shocks: tuple[float, ...]
    vol_shocks: tuple[float, ...]
    extreme_multiple: float
    extreme_weight: float
    decorrelation_weight: float
    max_offset_credit: float


@dataclass(frozen=True)
class TailRiskConfig:
    """Expected Shortfall / VaR settings (``[es]``).

    Attributes
    ----------
    method : {"historical", "monte_carlo", "none"}
        Where the tail scenarios come from.
    es_level, var_level : float
        ES level feeding IM and the reported VaR level.
    horizon_days : float
        Margin period of risk in days (time advance of the tail scenarios).
    window_days : int
        Look-back of historical simulation in joint days before the valuation (0 = all history
        known at the valuation time).
    volatility_filter : {"none", "ewma"}
        ``ewma``: volatility-filtered historical simulation (FHS, as CME and OCC use): each
        return is rescaled by today's EWMA volatility over the volatility on its own day
        (:func:`offchain.risk.scenarios.filtered_returns`).
    ewma_lambda : float
        Decay of the EWMA variance, in (0, 1).
    stress_period : tuple of str
        Empty, or ``(first, last)`` ISO dates of a stressed period whose returns are always
        added to the window's scenarios once known (a stressed-period floor), unfiltered.
    """

    method: TailMethod
    es_level: float
    var_level: float
    horizon_days: float
    window_days: int
    volatility_filter: VolatilityFilter = "none"
    ewma_lambda: float = 0.97
    stress_period: tuple[str, ...] = ()


@dataclass(frozen=True)
class MonteCarloConfig:
    """Monte Carlo tail scenarios: ``paths`` joint draws; ``student_t_dof = 0`` is Gaussian."""

    paths: int
    student_t_dof: float


@dataclass(frozen=True, eq=False)
class RiskConfig:
    """All parameters of the risk engine (validated on construction).

    Attributes
    ----------
    quote : str
        Symbol of the vault's cash asset (withdrawals of it debit ``cash``).
    mm_factor : float
        Maintenance margin as a fraction of initial margin, in (0, 1].
    rate : float
        Continuously compounded discount rate used in Black-76.
    correlation : tuple of tuple of float
        Stressed correlation matrix of the underlyings' returns (symmetric, unit diagonal,
        positive semi-definite), used by the grid's joint moves and by Monte Carlo.
    history : HistoricalReturns
        Joint daily returns for historical simulation (bound into the hash by digest).
    """

    quote: str
    mm_factor: float
    rate: float
    underlyings: tuple[UnderlyingConfig, ...]
    collateral: tuple[CollateralConfig, ...]
    correlation: tuple[tuple[float, ...], ...]
    grid: GridConfig
    es: TailRiskConfig
    monte_carlo: MonteCarloConfig
    history: HistoricalReturns

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def symbols(self) -> tuple[str, ...]:
        """Underlying symbols in index order."""
        return tuple(u.symbol for u in self.underlyings)

    def vol_surfaces(self) -> tuple[VolSurface, ...]:
        """One volatility surface per underlying, in index order (built once)."""
        return self._surfaces

    @cached_property
    def _surfaces(self) -> tuple[VolSurface, ...]:
        return tuple(VolSurface(u.vol) for u in self.underlyings)

    def correlation_array(self) -> Float64Array:
        """The correlation matrix as a float64 array."""
        return np.array(self.correlation, dtype=np.float64)

    def tail_history(self, as_of: int | None = None) -> HistoricalReturns:
        """The historical returns inside the configured window, as known at unix time ``as_of``.

        ``as_of = None`` takes the whole history (configuration checks only); the engine always
        passes its market's observation time, so no return closing later is ever used.
        """
        history = self.history if as_of is None else self.history.as_of(as_of)
        return history.window(self.es.window_days)

    def canonical_json(self) -> str:
        """Canonical serialisation: JSON, sorted keys, no spaces, floats as ``repr``.

        The history enters as its date range, length and keccak digest, never as file paths.
        """
        return self._canonical[0]

    def canonical_hash(self) -> bytes:
        """keccak256 of :meth:`canonical_json` (32 bytes)."""
        return self._canonical[1]

    @cached_property
    def _canonical(self) -> tuple[str, bytes]:
        doc = {"schema": SCHEMA, **_plain_fields(self)}
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return text, bytes(keccak(text.encode()))


def _plain_fields(obj: object) -> dict[str, object]:
    return {f.name: _plain(getattr(obj, f.name)) for f in fields(cast("type", obj))}


def _plain(obj: object) -> object:
    if isinstance(obj, HistoricalReturns):
        return {
            "first": obj.dates[0],
            "last": obj.dates[-1],
            "count": len(obj.dates),
            "digest": obj.digest(),
        }
    if hasattr(obj, "__dataclass_fields__"):
        return _plain_fields(obj)
    if isinstance(obj, tuple):
        return [_plain(v) for v in obj]
    return obj


# ----------------------------------------------------------------------------- validation


def _fail(field: str, message: str) -> ConfigError:
    return ConfigError(field, message)


def _check(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise _fail(field, message)


def _in(value: float, lo: float, hi: float, field: str, *, lo_open: bool = False) -> None:
    ok = (value > lo if lo_open else value >= lo) and value <= hi
    _check(ok, field, f"must lie in {'(' if lo_open else '['}{lo}, {hi}], got {value!r}")


def _validate(cfg: RiskConfig) -> None:
    _in(cfg.mm_factor, 0.0, 1.0, "mm_factor", lo_open=True)
    _in(cfg.rate, -0.5, 1.0, "rate")
    _check(bool(cfg.quote), "quote", "must be a non-empty symbol")
    _validate_underlyings(cfg)
    _validate_collateral(cfg)
    _validate_correlation(cfg.correlation, len(cfg.underlyings))
    _validate_grid(cfg.grid, cfg.underlyings)
    _validate_tail(cfg)
    _check(cfg.history.returns.shape[1] == len(cfg.underlyings), "history", "one column each")


def _validate_underlyings(cfg: RiskConfig) -> None:
    _check(len(cfg.underlyings) >= 1, "underlying", "at least one underlying is needed")
    seen: set[str] = set()
    for i, u in enumerate(cfg.underlyings):
        path = f"underlying[{i}]"
        _check(u.symbol not in seen, f"{path}.symbol", f"duplicate symbol {u.symbol!r}")
        seen.add(u.symbol)
        _in(u.spot_range, 0.0, 0.9, f"{path}.spot_range", lo_open=True)
        _in(u.short_option_min_rate, 0.0, 1.0, f"{path}.short_option_min_rate")
        _in(u.concentration_threshold, 0.0, math.inf, f"{path}.concentration_threshold")
        _in(u.concentration_rate, 0.0, 1.0, f"{path}.concentration_rate")
        _in(u.standard_linear_rate, 0.0, 1.0, f"{path}.standard_linear_rate", lo_open=True)
        _in(u.standard_short_rate, 0.0, 1.0, f"{path}.standard_short_rate", lo_open=True)
        _in(u.standard_short_floor, 0.0, u.standard_short_rate, f"{path}.standard_short_floor")
        _validate_surface(u.vol, f"{path}.vol")


def _validate_surface(pillars: tuple[SviSlice, ...], field: str) -> None:
    """Pillars sorted, free of calendar arbitrage (``VolSurface`` checks), field-named errors."""
    try:
        VolSurface(pillars)
    except PricingInputError as exc:
        pillar = exc.field.removeprefix("pillars").split(".")[0]  # "[1]" or ""
        raise ConfigError(field + pillar, str(exc)) from None


def _validate_collateral(cfg: RiskConfig) -> None:
    seen: set[str] = set()
    for i, c in enumerate(cfg.collateral):
        path = f"collateral[{i}]"
        _check(c.symbol not in seen, f"{path}.symbol", f"duplicate symbol {c.symbol!r}")
        seen.add(c.symbol)
        _check(c.haircut >= 0.0 and c.haircut < 1.0, f"{path}.haircut", "must lie in [0, 1)")
        known = c.underlying == "" or c.underlying in cfg.symbols
        _check(known, f"{path}.underlying", f"unknown underlying {c.underlying!r}")


def _validate_correlation(matrix: tuple[tuple[float, ...], ...], n: int) -> None:
    _check(len(matrix) == n, "correlation.matrix", f"must have {n} rows (one per underlying)")
    for i, row in enumerate(matrix):
        _check(len(row) == n, f"correlation.matrix[{i}]", f"must have {n} entries")
        for j, value in enumerate(row):
            field = f"correlation.matrix[{i}][{j}]"
            _check(abs(value) <= 1.0, field, f"must lie in [-1, 1], got {value!r}")
            _check(value == matrix[j][i], field, "matrix must be symmetric")
        _check(row[i] == 1.0, f"correlation.matrix[{i}][{i}]", "diagonal must be 1")
    smallest = float(np.linalg.eigvalsh(np.array(matrix, dtype=np.float64)).min())
    _check(
        smallest >= -1e-12,
        "correlation.matrix",
        f"not positive semi-definite (smallest eigenvalue {smallest:.6g})",
    )


def _strictly_increasing(values: tuple[float, ...], field: str) -> None:
    for i in range(1, len(values)):
        _check(values[i] > values[i - 1], f"{field}[{i}]", "values must strictly increase")
    _check(0.0 in values, field, "must contain 0")


def _validate_grid(grid: GridConfig, underlyings: tuple[UnderlyingConfig, ...]) -> None:
    _check(len(grid.spot_shocks) >= 3, "grid.spot_shocks", "needs at least 3 levels")
    for i, s in enumerate(grid.spot_shocks):
        _in(s, -1.0, 1.0, f"grid.spot_shocks[{i}]")
    _strictly_increasing(grid.spot_shocks, "grid.spot_shocks")
    for i, v in enumerate(grid.vol_shocks):
        _in(v, -1.0, 10.0, f"grid.vol_shocks[{i}]", lo_open=True)
    _strictly_increasing(grid.vol_shocks, "grid.vol_shocks")
    _in(grid.extreme_multiple, 1.0, 10.0, "grid.extreme_multiple")
    widest = max(u.spot_range for u in underlyings)
    _check(
        widest * grid.extreme_multiple < 1.0,
        "grid.extreme_multiple",
        f"extreme move {widest * grid.extreme_multiple:.0%} would take a spot to zero or below",
    )
    _in(grid.extreme_weight, 0.0, 1.0, "grid.extreme_weight")
    _in(grid.decorrelation_weight, 0.0, 1.0, "grid.decorrelation_weight")
    _in(grid.max_offset_credit, 0.0, 1.0, "grid.max_offset_credit")


def _validate_tail(cfg: RiskConfig) -> None:
    es, mc = cfg.es, cfg.monte_carlo
    _check(es.method in TAIL_METHODS, "es.method", f"must be one of {', '.join(TAIL_METHODS)}")
    _in(es.es_level, 0.5, 1.0, "es.es_level", lo_open=True)
    _in(es.var_level, 0.5, 1.0, "es.var_level", lo_open=True)
    _check(es.es_level < 1.0, "es.es_level", "must be < 1")
    _check(es.var_level < 1.0, "es.var_level", "must be < 1")
    _in(es.horizon_days, 0.0, 30.0, "es.horizon_days", lo_open=True)
    _check(es.window_days >= 0, "es.window_days", "must be >= 0 (0 = all history)")
    filters = ", ".join(VOLATILITY_FILTERS)
    _check(es.volatility_filter in VOLATILITY_FILTERS, "es.volatility_filter", f"must be one of {filters}")
    _in(es.ewma_lambda, 0.0, 1.0, "es.ewma_lambda", lo_open=True)
    _check(es.ewma_lambda < 1.0, "es.ewma_lambda", "must be < 1")
    _validate_stress_period(es.stress_period)
    _in(float(mc.paths), 100.0, 1e6, "monte_carlo.paths")
    dof_ok = mc.student_t_dof == 0.0 or 2.0 < mc.student_t_dof <= 1e6
    _check(dof_ok, "monte_carlo.student_t_dof", "must be 0 (Gaussian) or > 2")
    for name, n in (("es.window_days", len(cfg.tail_history().dates)), ("monte_carlo.paths", mc.paths)):
        for level_name, level in (("es.es_level", es.es_level), ("es.var_level", es.var_level)):
            _check(
                tail_count(n, level) >= 1,
                level_name,
                f"{n} scenarios ({name}) leave no observation beyond the {level} quantile",
            )


def _validate_stress_period(period: tuple[str, ...]) -> None:
    if not period:
        return
    _check(len(period) == 2, "es.stress_period", "must be [] or [first, last] ISO dates")
    for i, text in enumerate(period):
        try:
            date.fromisoformat(text)
        except (TypeError, ValueError):
            raise _fail(f"es.stress_period[{i}]", f"not an ISO date: {text!r}") from None
    _check(period[0] <= period[1], "es.stress_period", "first date must not be after the last")


def tail_count(n: int, level: float) -> float:
    """``n (1 - level)`` computed on the decimal ``level`` as written (0.975 is 39/40 exactly)."""
    return float(n * (1 - Fraction(repr(level))))


# ----------------------------------------------------------------------------- loading


def load_config(path: str | Path | None = None) -> RiskConfig:
    """Load and validate a configuration file (default ``config/risk.toml`` of the repo).

    Raises
    ------
    ConfigError
        Unreadable file, TOML syntax error, missing or unknown key, or a value out of range; the
        error's ``field`` is the dotted path.
    """
    file = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    try:
        with file.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(str(file), f"cannot read configuration: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(file), f"TOML syntax error: {exc}") from None
    return config_from_mapping(data, base_dir=file.parent)


def config_from_mapping(data: object, base_dir: Path) -> RiskConfig:
    """Build a :class:`RiskConfig` from a parsed TOML mapping; relative paths from ``base_dir``."""
    root = Section(data, "", ConfigError)
    underlying_tables = root.tables("underlying")
    underlyings = tuple(_read_underlying(t) for t in underlying_tables)
    history_paths = [base_dir / t.string("history_csv") for t in underlying_tables]
    for table in underlying_tables:
        table.finish()
    closes = [read_closes(p, f"underlying[{i}].history_csv") for i, p in enumerate(history_paths)]
    cfg = RiskConfig(
        quote=root.string("quote"),
        mm_factor=root.number("mm_factor"),
        rate=root.number("rate", 0.0),
        underlyings=underlyings,
        collateral=tuple(_read_collateral(t) for t in root.tables("collateral")),
        correlation=_read_correlation(root.table("correlation")),
        grid=_read_grid(root.table("grid")),
        es=_read_tail(root.table("es")),
        monte_carlo=_read_mc(root.table("monte_carlo")),
        history=joint_returns(closes),
    )
    root.finish()
    return cfg


def _read_underlying(t: Section) -> UnderlyingConfig:
    return UnderlyingConfig(
        symbol=t.string("symbol"),
        spot_range=t.number("spot_range"),
        short_option_min_rate=t.number("short_option_min_rate"),
        concentration_threshold=t.number("concentration_threshold"),
        concentration_rate=t.number("concentration_rate"),
        standard_linear_rate=t.number("standard_linear_rate"),
        standard_short_rate=t.number("standard_short_rate"),
        standard_short_floor=t.number("standard_short_floor"),
        vol=_read_vol(t),
    )


_SVI_FIELDS = ("t", "a", "b", "rho", "m", "sigma")


def _read_vol(t: Section) -> tuple[SviSlice, ...]:
    """``vol = [[t, a, b, rho, m, sigma], ...]``; errors name the pillar (``underlying[0].vol[1]``)."""
    rows = t.matrix("vol")
    pillars = []
    for j, row in enumerate(rows):
        field = f"{t.path}.vol[{j}]"
        if len(row) != len(_SVI_FIELDS):
            raise ConfigError(field, f"needs 6 numbers [t, a, b, rho, m, sigma], got {len(row)}")
        try:
            pillars.append(SviSlice(*row))
        except PricingInputError as exc:
            raise ConfigError(f"{field}[{_SVI_FIELDS.index(exc.field)}]", str(exc)) from None
    return tuple(pillars)


def _read_collateral(t: Section) -> CollateralConfig:
    underlying = t.raw("underlying", "", required=False)
    if not isinstance(underlying, str):
        raise t.error("underlying", f"expected an underlying symbol, got {underlying!r}")
    out = CollateralConfig(symbol=t.string("symbol"), haircut=t.number("haircut"), underlying=underlying)
    t.finish()
    return out


def _read_correlation(t: Section) -> tuple[tuple[float, ...], ...]:
    out = t.matrix("matrix")
    t.finish()
    return out


def _read_grid(t: Section) -> GridConfig:
    out = GridConfig(
        spot_shocks=t.numbers("spot_shocks"),
        vol_shocks=t.numbers("vol_shocks"),
        extreme_multiple=t.number("extreme_multiple"),
        extreme_weight=t.number("extreme_weight"),
        decorrelation_weight=t.number("decorrelation_weight"),
        max_offset_credit=t.number("max_offset_credit"),
    )
    t.finish()
    return out


def _read_tail(t: Section) -> TailRiskConfig:
    method = t.string("method")
    if method not in TAIL_METHODS:
        raise t.error("method", f"must be one of {', '.join(TAIL_METHODS)}, got {method!r}")
    out = TailRiskConfig(
        method=method,
        es_level=t.number("es_level"),
        var_level=t.number("var_level"),
        horizon_days=t.number("horizon_days"),
        window_days=t.integer("window_days", 0),
        volatility_filter=cast("VolatilityFilter", t.string("volatility_filter", "none")),
        ewma_lambda=t.number("ewma_lambda", 0.97),
        stress_period=_read_dates(t, "stress_period"),
    )
    t.finish()
    return out


def _read_dates(t: Section, key: str) -> tuple[str, ...]:
    items = t.raw(key, [], required=False)
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        raise t.error(key, f"expected a list of ISO dates, got {items!r}")
    return tuple(items)


def _read_mc(t: Section) -> MonteCarloConfig:
    out = MonteCarloConfig(paths=t.integer("paths"), student_t_dof=t.number("student_t_dof", 0.0))
    t.finish()
    return out
