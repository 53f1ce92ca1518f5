"""Scenario files of the simulator: TOML, validated into frozen dataclasses (see docs/simulator.md).

A scenario says what market to simulate (``[market]``, ``[impact]``), who trades in it
(``[[agents]]``), under which protocol and risk parameters (``[protocol]``, ``[risk]``), for how
long and with which seed (``[run]``). :func:`load_scenario` reads a file, :func:`scenario_from_mapping`
a parsed mapping; both raise :class:`~offchain.errors.InputError` whose ``field`` is the dotted path
of the entry at fault (``market.jumps.intensity``, ``agents[2].count``), and refuse unknown keys.
:func:`resolve` gives back the scenario with every default filled in, in the same format (so it loads
again to the same scenario): what a run folder records.

``[protocol]`` is checked against the names of :class:`offchain.chain.params.OnchainParams` and
:class:`offchain.chain.params.LiquidationParams`, in the contracts' own integer units, each within its
ABI integer width (the contract's hard bounds are checked when the parameters are set).
``[risk]`` overrides ``config/risk.toml`` (``mm_factor``, ``rate`` and the ``grid``, ``es``,
``monte_carlo`` and ``correlation`` tables); the merged configuration is validated at load by the
risk package's own loader, its errors renamed under ``risk.``.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, cast

import numpy as np

from offchain.chain.params import LIQUIDATION_PARAMS_ABI, PARAMS_ABI, LiquidationParams, OnchainParams
from offchain.errors import ConfigError, InputError, PmsimError
from offchain.risk._reader import Section, as_list, as_number
from offchain.risk.config import DEFAULT_CONFIG_PATH, RiskConfig, config_from_mapping
from offchain.risk.market import SECONDS_PER_YEAR
from offchain.sim.impact import ImpactModel
from offchain.sim.markets import (
    REPLAY_STEP_SECONDS,
    Diffusion,
    GarchModel,
    GbmModel,
    MarketPath,
    MertonModel,
    RegimeModel,
    ReplayModel,
    iso,
    parse_time,
)

FORMAT_VERSION = 1
Backend = Literal["twin", "chain"]
BACKENDS: tuple[Backend, ...] = ("twin", "chain")
MODELS = ("gbm", "merton", "regime", "garch", "replay")
#: Sub-tables of ``[market]`` and the model that uses each.
MODEL_TABLES = {"jumps": "merton", "regimes": "regime", "garch": "garch", "replay": "replay"}
DEFAULT_START = "2026-01-01T00:00:00Z"
MAX_STEPS = 10_000_000
MAX_STEP_SECONDS = 366 * 86_400
#: Daily traded volume (USD) of the impact model when the scenario does not give one.
DEFAULT_DAILY_VOLUME = {"BTC": 20e9, "ETH": 10e9}
RISK_OVERRIDABLE = ("mm_factor", "rate", "grid", "es", "monte_carlo", "correlation")
SyntheticModel = GbmModel | MertonModel | RegimeModel | GarchModel
AnyModel = SyntheticModel | ReplayModel


def _error(field: str, message: str) -> PmsimError:
    return InputError(field, message)


# ----------------------------------------------------------------------------- agents


@dataclass(frozen=True)
class Opt:
    """One kind-specific agent option: a number, an integer or a choice, with its default and range."""

    kind: Literal["number", "integer", "choice"]
    default: float | int | str
    low: float = -math.inf
    high: float = math.inf
    choices: tuple[str, ...] = ()
    doc: str = ""


AGENT_KINDS: dict[str, dict[str, Opt]] = {
    "option_writer": {
        "strategy": Opt("choice", "covered_call", choices=("covered_call", "short_put"), doc="what is written"),
        "moneyness": Opt("number", 1.1, 0.01, 10.0, doc="strike / spot at writing"),
        "tenor_days": Opt("integer", 30, 1, 3650, doc="days to expiry at writing"),
        "roll_days": Opt("integer", 1, 0, 3650, doc="roll this many days before expiry"),
    },
    "delta_hedger": {
        "hedge_every_steps": Opt("integer", 1, 1, MAX_STEPS, doc="re-hedge period in steps"),
        "band": Opt("number", 0.05, 0.0, 1.0, doc="delta tolerance before re-hedging, fraction of the option delta"),
        "moneyness": Opt("number", 1.0, 0.01, 10.0, doc="strike / spot of the option book hedged"),
        "tenor_days": Opt("integer", 30, 1, 3650, doc="days to expiry of the option book"),
    },
    "trend_trader": {
        "leverage": Opt("number", 3.0, 0.01, 100.0, doc="position notional / margin equity at the step's root"),
        "lookback_steps": Opt("integer", 24, 1, MAX_STEPS, doc="moving-average window"),
        "trade_every_steps": Opt("integer", 1, 1, MAX_STEPS, doc="decision period"),
    },
    "mean_reversion_trader": {
        "leverage": Opt("number", 3.0, 0.01, 100.0, doc="position notional / margin equity at the step's root"),
        "lookback_steps": Opt("integer", 24, 1, MAX_STEPS, doc="window of the mean and deviation"),
        "entry_z": Opt("number", 2.0, 0.0, 100.0, doc="open when |z-score| exceeds it"),
        "exit_z": Opt("number", 0.5, 0.0, 100.0, doc="close when |z-score| falls below it"),
    },
    "market_maker": {
        "spread_bps": Opt("number", 10.0, 0.0, 10_000.0, doc="quoted spread around the model price, basis points"),
        "inventory_limit": Opt("number", 1e6, 0.0, math.inf, doc="largest inventory, USD notional per underlying"),
        "requote_every_steps": Opt("integer", 1, 1, MAX_STEPS, doc="re-quote period"),
    },
    "depositor": {
        "deposit_probability": Opt("number", 0.01, 0.0, 1.0, doc="chance per step of a deposit"),
        "withdraw_probability": Opt("number", 0.01, 0.0, 1.0, doc="chance per step of a withdrawal"),
    },
    "keeper": {
        "latency_steps": Opt("integer", 0, 0, MAX_STEPS, doc="steps between seeing a liquidatable account and bidding"),
        "gas_budget_usd": Opt("number", 1_000.0, 0.0, math.inf, doc="gas spend allowed per step, USD"),
        "unwind_liquidity_usd": Opt("number", 1e6, 0.0, math.inf, doc="notional it can unwind per step, USD"),
        "min_profit_usd": Opt("number", 0.0, 0.0, math.inf, doc="smallest expected profit worth a bid, USD"),
    },
}


@dataclass(frozen=True, eq=False)
class AgentPopulation:
    """One ``[[agents]]`` entry: ``count`` agents of one kind with the same parameters.

    Attributes
    ----------
    kind : str
        One of :data:`AGENT_KINDS`.
    name : str
        Unique name of the population (default: the kind).
    count : int
        Number of agents (>= 1).
    capital : float
        Quote deposited by each agent at the start, USD (> 0).
    size : tuple of float
        ``(low, high)`` notional per position or trade in USD; each agent draws its size uniformly
        in it (``size = 50000`` means ``[50000, 50000]``).
    underlyings : tuple of str
        Underlyings the agents trade (default: all of the market's).
    options : mapping
        Kind-specific options, every one present (defaults filled in).
    """

    kind: str
    name: str
    count: int
    capital: float
    size: tuple[float, float]
    underlyings: tuple[str, ...]
    options: Mapping[str, float | int | str]


def _read_option(t: Section, key: str, opt: Opt) -> float | int | str:
    if opt.kind == "number":
        return t.number(key, float(opt.default), low=opt.low, high=opt.high)
    if opt.kind == "integer":
        return t.integer(key, int(opt.default), low=int(opt.low), high=int(opt.high))
    value = t.string(key, str(opt.default))
    if value not in opt.choices:
        raise t.error(key, f"must be one of {', '.join(opt.choices)}, got {value!r}")
    return value


def _read_agent(t: Section, symbols: tuple[str, ...]) -> AgentPopulation:
    kind = t.string("kind")
    if kind not in AGENT_KINDS:
        raise t.error("kind", f"must be one of {', '.join(AGENT_KINDS)}, got {kind!r}")
    name = t.string("name", kind)
    count = t.integer("count", 1, low=1, high=1_000_000)
    capital = t.number("capital", low=0.0, high=1e15)
    if capital <= 0.0:
        raise t.error("capital", "must be > 0 (USD per agent)")
    size = _read_size(t, capital)
    underlyings = _read_symbols(t, "underlyings", symbols)
    options = {key: _read_option(t, key, opt) for key, opt in AGENT_KINDS[kind].items()}
    if kind == "mean_reversion_trader" and float(options["exit_z"]) > float(options["entry_z"]):
        raise t.error("exit_z", "must be <= entry_z")
    t.finish()
    return AgentPopulation(kind, name, count, capital, size, underlyings, MappingProxyType(options))


def _read_size(t: Section, capital: float) -> tuple[float, float]:
    raw = t.raw("size", capital, required=False)
    path = f"{t.path}.size"
    if isinstance(raw, list):
        if len(raw) != 2:
            raise _error(path, "expected a number or [low, high] (USD)")
        low, high = (as_number(v, f"{path}[{i}]", _error) for i, v in enumerate(raw))
    else:
        low = high = as_number(raw, path, _error)
    if not 0.0 < low <= high <= 1e15:
        raise _error(path, f"needs 0 < low <= high <= 1e15 (USD), got [{low!r}, {high!r}]")
    return (low, high)


def _read_symbols(t: Section, key: str, symbols: tuple[str, ...]) -> tuple[str, ...]:
    raw = t.raw(key, list(symbols), required=False)
    path = f"{t.path}.{key}"
    items = as_list(raw, path, _error)
    if not items:
        raise _error(path, "needs at least one underlying")
    out: list[str] = []
    for i, sym in enumerate(items):
        if not isinstance(sym, str) or sym not in symbols:
            raise _error(f"{path}[{i}]", f"must be one of the market's underlyings {list(symbols)}, got {sym!r}")
        if sym in out:
            raise _error(f"{path}[{i}]", f"{sym!r} is listed twice")
        out.append(sym)
    return tuple(out)


# ----------------------------------------------------------------------------- run


@dataclass(frozen=True)
class RunConfig:
    """The ``[run]`` table.

    Attributes
    ----------
    name : str
        Run name (default: the file name without ``.toml``).
    seed : int
        Seed of every random draw of the run (markets, agents), in [0, 2**63).
    steps : int
        Number of steps (from ``steps``, or ``duration / step_seconds``; a replay defaults to its
        whole window).
    step_seconds : int
        Length of a step in seconds (default 3,600; a replay's is its series' cadence).
    backend : {"twin", "chain"}
        Default backend (default ``twin``).
    start : int
        Unix time of step 0 (``start``, ISO; default 2026-01-01T00:00:00Z; a replay's is its
        window's start).
    """

    name: str
    seed: int
    steps: int
    step_seconds: int
    backend: Backend
    start: int


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_duration(raw: object, field: str) -> int:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"45s"``, ``"2w"`` or an integer of seconds, to seconds (> 0)."""
    if isinstance(raw, bool):
        raise _error(field, f"expected a duration like '30d' or seconds, got {raw!r}")
    if isinstance(raw, int):
        seconds = raw
    elif isinstance(raw, str) and (match := _DURATION.match(raw)):
        value = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        if not value.is_integer() or value > MAX_STEPS * MAX_STEP_SECONDS:
            raise _error(field, f"must be a whole number of seconds, got {raw!r}")
        seconds = int(value)
    else:
        raise _error(field, f"expected a duration like '30d', '12h', '90m', '45s', '2w' or seconds, got {raw!r}")
    if seconds <= 0:
        raise _error(field, f"must be > 0, got {raw!r}")
    return seconds


def _read_run(t: Section, default_name: str, replay: ReplayModel | None) -> RunConfig:
    name = t.string("name", default_name)
    seed = t.integer("seed", 0, low=0, high=2**63 - 1)
    backend = t.string("backend", "twin")
    if backend not in BACKENDS:
        raise t.error("backend", f"must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if replay is not None:
        step_seconds = t.integer("step_seconds", replay.step_seconds, low=1, high=MAX_STEP_SECONDS)
        if step_seconds != replay.step_seconds:
            raise t.error("step_seconds", f"a {replay.source} replay steps every {replay.step_seconds} s")
        if t.has("start"):
            raise t.error("start", "a replay starts at market.replay.start")
        start = int(replay.simulate(1).times[0])
    else:
        step_seconds = t.integer("step_seconds", 3600, low=1, high=MAX_STEP_SECONDS)
        start = parse_time(t.string("start", DEFAULT_START), f"{t.path}.start")
    steps = _read_steps(t, step_seconds, replay)
    t.finish()
    return RunConfig(name, seed, steps, step_seconds, backend, start)


def _read_steps(t: Section, step_seconds: int, replay: ReplayModel | None) -> int:
    if t.has("steps") and t.has("duration"):
        raise t.error("duration", "give steps or duration, not both")
    if t.has("duration"):
        seconds = parse_duration(t.raw("duration"), f"{t.path}.duration")
        if seconds % step_seconds:
            raise t.error("duration", f"{seconds} s is not a whole number of {step_seconds}-second steps")
        steps = seconds // step_seconds
    elif t.has("steps") or replay is None:
        steps = t.integer("steps", low=1, high=MAX_STEPS)
    else:
        steps = replay.available_steps
    if steps > MAX_STEPS:
        raise t.error("duration", f"{steps} steps is more than {MAX_STEPS}")
    if replay is not None and steps > replay.available_steps:
        raise t.error("steps" if t.has("steps") else "duration",
                      f"the replay window holds {replay.available_steps} steps, asked for {steps}")  # fmt: skip
    return steps


# ----------------------------------------------------------------------------- market


def _per_underlying(t: Section, key: str, n: int, default: float | None = None) -> tuple[float, ...]:
    """A number (the same for every underlying) or a list of ``n`` numbers."""
    raw = t.raw(key, default, required=default is None)
    path = f"{t.path}.{key}"
    if isinstance(raw, list):
        if len(raw) != n:
            raise _error(path, f"needs {n} values (one per underlying), got {len(raw)}")
        return tuple(as_number(v, f"{path}[{i}]", _error) for i, v in enumerate(raw))
    return (as_number(raw, path, _error),) * n


def _read_correlation(t: Section, n: int) -> tuple[tuple[float, ...], ...]:
    path = f"{t.path}.correlation"
    if not t.has("correlation"):
        if n > 1:
            raise _error(path, "missing (a matrix, or one number for every pair)")
        t.raw("correlation", required=False)
        return ((1.0,),)
    raw = t.raw("correlation")
    if not isinstance(raw, list):
        rho = as_number(raw, path, _error)
        return tuple(tuple(1.0 if i == j else rho for j in range(n)) for i in range(n))
    return t.matrix("correlation")


def _read_underlyings(t: Section) -> tuple[str, ...]:
    raw = as_list(t.raw("underlyings", ["BTC", "ETH"], required=False), f"{t.path}.underlyings", _error)
    out = []
    for i, sym in enumerate(raw):
        if not isinstance(sym, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,16}", sym):
            raise _error(f"{t.path}.underlyings[{i}]", f"must be a symbol of 1-16 letters or digits, got {sym!r}")
        out.append(sym)
    if not out:
        raise _error(f"{t.path}.underlyings", "needs at least one underlying")
    if len(set(out)) != len(out):
        raise _error(f"{t.path}.underlyings", "symbols must be unique")
    return tuple(out)


def _read_market(t: Section) -> tuple[str, AnyModel]:
    model = t.string("model")
    if model not in MODELS:
        raise t.error("model", f"must be one of {', '.join(MODELS)}, got {model!r}")
    for table, owner in MODEL_TABLES.items():
        if t.has(table) and owner != model:
            raise t.error(table, f"only used by model {owner!r} (this market's model is {model!r})")
    symbols = _read_underlyings(t)
    if model == "replay":
        return model, _read_replay(t, symbols)
    n = len(symbols)
    base = Diffusion(symbols, _per_underlying(t, "initial_prices", n), _read_correlation(t, n),
                     t.number("variance_risk_premium", 1.1, low=0.0, high=100.0))  # fmt: skip
    out: SyntheticModel
    if model == "regime":
        out = _read_regimes(t.table("regimes"), base)
    else:
        vol = _per_underlying(t, "vol", n)
        drift = _per_underlying(t, "drift", n, 0.0)
        if model == "garch":
            g = t.table("garch")
            initial = _per_underlying(g, "initial_vol", n) if g.has("initial_vol") else None
            out = GarchModel(base, vol, _per_underlying(g, "alpha", n), _per_underlying(g, "beta", n), drift, initial)
            g.finish()
        else:
            out = GbmModel(base, vol, drift)
            if model == "merton":
                j = t.table("jumps")
                timing = j.string("timing", "common")
                if timing not in ("common", "independent"):
                    raise j.error("timing", f"must be 'common' or 'independent', got {timing!r}")
                out = MertonModel(out, j.number("intensity"), _per_underlying(j, "mean", n),
                                  _per_underlying(j, "vol", n), cast("Any", timing))  # fmt: skip
                j.finish()
    t.finish()
    return model, out


def _read_regimes(t: Section, base: Diffusion) -> RegimeModel:
    states = t.tables("state")
    names, vols, drifts = [], [], []
    for s in states:
        names.append(s.string("name"))
        vols.append(_per_underlying(s, "vol", base.n))
        drifts.append(_per_underlying(s, "drift", base.n, 0.0))
        s.finish()
    out = RegimeModel(base, tuple(names), tuple(vols), tuple(drifts), t.matrix("transition"), t.integer("initial", 0))
    t.finish()
    return out


@cache
def _base_risk_mapping() -> dict[str, Any]:
    with DEFAULT_CONFIG_PATH.open("rb") as handle:
        return tomllib.load(handle)


@cache
def _default_risk_config() -> RiskConfig:
    return config_from_mapping(_base_risk_mapping(), DEFAULT_CONFIG_PATH.parent)


def _read_replay(t: Section, symbols: tuple[str, ...]) -> ReplayModel:
    r = t.table("replay")
    source = r.string("source")
    if source not in REPLAY_STEP_SECONDS:
        raise r.error("source", f"must be one of {', '.join(REPLAY_STEP_SECONDS)}, got {source!r}")
    start = parse_time(r.string("start"), f"{r.path}.start")
    end = parse_time(r.string("end"), f"{r.path}.end")
    iv = r.string("iv", "config")
    if iv not in ("config", "ewma"):
        raise r.error("iv", f"must be 'config' or 'ewma', got {iv!r}")
    tenor = r.integer("iv_tenor_days", 30, low=1, high=3650)
    lam = r.number("ewma_lambda", 0.94)
    kappa = t.number("variance_risk_premium", 1.1, low=0.0, high=100.0)
    rebase = _per_underlying(t, "initial_prices", len(symbols)) if t.has("initial_prices") else None
    atm: tuple[float, ...] = ()
    if iv == "config" and r.has("atm_vol"):
        atm = _per_underlying(r, "atm_vol", len(symbols))
    elif iv == "config":
        surfaces = dict(zip(_default_risk_config().symbols, _default_risk_config().vol_surfaces(), strict=True))
        for i, sym in enumerate(symbols):
            if sym not in surfaces:
                raise _error(f"{t.path}.underlyings[{i}]", f"{sym!r} has no volatility surface in config/risk.toml")
        atm = tuple(float(surfaces[s].implied_vol(0.0, tenor * 86_400 / SECONDS_PER_YEAR)) for s in symbols)
    out = ReplayModel(symbols, source, start, end, rebase, cast("Any", iv), atm, kappa, lam)
    r.finish()
    t.finish()
    return out


def _read_impact(t: Section, symbols: tuple[str, ...]) -> ImpactModel:
    enabled = t.raw("enabled", True, required=False)
    if not isinstance(enabled, bool):
        raise t.error("enabled", f"must be true or false, got {enabled!r}")
    if t.has("daily_volume"):
        volume = _per_underlying(t, "daily_volume", len(symbols))
    else:
        missing = [s for s in symbols if s not in DEFAULT_DAILY_VOLUME]
        if missing:
            raise t.error("daily_volume", f"missing (no default daily volume for {', '.join(missing)})")
        volume = tuple(DEFAULT_DAILY_VOLUME[s] for s in symbols)
    out = ImpactModel(volume, t.number("y", 0.7, low=0.0, high=10.0),
                      t.number("permanent_fraction", 0.5, low=0.0, high=1.0),
                      t.number("half_life_seconds", 3600.0, low=1e-9, high=1e9), enabled)  # fmt: skip
    t.finish()
    return out


# ----------------------------------------------------------------------------- protocol and risk


def _abi_bits(abi: str) -> list[int]:
    return [int(kind.removeprefix("uint")) for kind in abi.strip("()").split(",")]


#: Every on-chain parameter a scenario may set, with its unsigned integer width (from the ABI).
PROTOCOL_PARAMS: dict[str, int] = {
    f.name: bits
    for struct, abi in ((OnchainParams, PARAMS_ABI), (LiquidationParams, LIQUIDATION_PARAMS_ABI))
    for f, bits in zip(dataclasses.fields(struct), _abi_bits(abi), strict=True)
}


def _read_protocol(t: Section) -> dict[str, int]:
    out: dict[str, int] = {}
    for key in t.names():
        if key not in PROTOCOL_PARAMS:
            raise t.error(key, f"unknown protocol parameter (known: {', '.join(PROTOCOL_PARAMS)})")
        out[key] = t.integer(key, low=0, high=2 ** PROTOCOL_PARAMS[key] - 1)
    return out


def _plain_copy(value: object) -> object:
    if isinstance(value, Mapping):
        return {str(k): _plain_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_copy(v) for v in value]
    return value


def _merge(base: dict[str, Any], over: Mapping[str, object]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _read_risk(t: Section) -> tuple[dict[str, object], RiskConfig]:
    overrides: dict[str, object] = {}
    for key in t.names():
        if key not in RISK_OVERRIDABLE:
            raise t.error(key, f"not a risk parameter a scenario may override (may: {', '.join(RISK_OVERRIDABLE)})")
        overrides[key] = _plain_copy(t.raw(key))
    if not overrides:
        return overrides, _default_risk_config()
    merged = _merge(_base_risk_mapping(), overrides)
    try:
        config = config_from_mapping(merged, DEFAULT_CONFIG_PATH.parent)
    except ConfigError as exc:
        message = str(exc).removeprefix(f"{exc.field}: ")
        raise InputError(f"risk.{exc.field}", message) from None
    except PmsimError as exc:  # a pricing error below the loader: name the table
        raise InputError("risk", str(exc)) from None
    return overrides, config


# ----------------------------------------------------------------------------- the scenario


@dataclass(frozen=True, eq=False)
class Scenario:
    """A validated scenario (see the module notes and docs/simulator.md).

    Attributes
    ----------
    run : RunConfig
    model : str
        The market model's name (``market.model``).
    market : GbmModel, MertonModel, RegimeModel, GarchModel or ReplayModel
    impact : ImpactModel
    agents : tuple of AgentPopulation
    protocol : mapping
        On-chain parameter overrides, contract units.
    risk : mapping
        Risk-configuration overrides as written (merged over ``config/risk.toml``).
    risk_config : RiskConfig
        The merged risk configuration.
    """

    run: RunConfig
    model: str
    market: AnyModel
    impact: ImpactModel
    agents: tuple[AgentPopulation, ...]
    protocol: Mapping[str, int]
    risk: Mapping[str, object]
    risk_config: RiskConfig

    @property
    def underlyings(self) -> tuple[str, ...]:
        """The market's underlyings, in column order."""
        return self.market.underlyings

    def market_path(self, rng: np.random.Generator | int | None = None) -> MarketPath:
        """The run's market path; ``rng`` defaults to a generator seeded with ``run.seed``."""
        if isinstance(self.market, ReplayModel):
            return self.market.simulate(self.run.steps)
        generator = np.random.default_rng(self.run.seed) if rng is None else rng
        return self.market.simulate(self.run.steps, self.run.step_seconds, generator, self.run.start)

    def protocol_params(self) -> tuple[OnchainParams, LiquidationParams]:
        """The on-chain parameter structs: defaults of :mod:`offchain.chain.params` with the overrides."""
        onchain = {k: v for k, v in self.protocol.items() if k in OnchainParams.__dataclass_fields__}
        liquidation = {k: v for k, v in self.protocol.items() if k in LiquidationParams.__dataclass_fields__}
        return OnchainParams(**onchain), LiquidationParams(**liquidation)


def scenario_from_mapping(data: object, name: str = "scenario") -> Scenario:
    """Validate a parsed scenario mapping (see :func:`load_scenario`); ``name`` is the default run name."""
    root = Section(data, "", _error)
    version = root.integer("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise root.error("format_version", f"this pmsim reads scenario format {FORMAT_VERSION}, got {version}")
    model, market = _read_market(root.table("market"))
    replay = market if isinstance(market, ReplayModel) else None
    run = _read_run(root.table("run", required=False), name, replay)
    impact = _read_impact(root.table("impact", required=False), market.underlyings)
    agents = tuple(_read_agent(a, market.underlyings) for a in root.tables("agents")) if root.has("agents") else ()
    root.raw("agents", required=False)
    seen: set[str] = set()
    for i, agent in enumerate(agents):
        if agent.name in seen:
            raise _error(f"agents[{i}].name", f"population name {agent.name!r} is used twice")
        seen.add(agent.name)
    protocol = _read_protocol(root.table("protocol", required=False))
    risk, risk_config = _read_risk(root.table("risk", required=False))
    root.finish()
    return Scenario(run, model, market, impact, agents, MappingProxyType(protocol), MappingProxyType(risk), risk_config)


def load_scenario(path: str | Path) -> Scenario:
    """Load and validate a scenario file.

    Raises
    ------
    InputError
        Unreadable file (field: the path), TOML syntax error, missing or unknown key, or a value out
        of range; ``field`` is the dotted path of the entry at fault.
    """
    file = Path(path)
    try:
        with file.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise InputError(str(file), f"cannot read the scenario: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(str(file), f"TOML syntax error: {exc}") from None
    return scenario_from_mapping(data, name=file.stem)


# ----------------------------------------------------------------------------- resolve


def _market_dict(model: str, m: AnyModel) -> dict[str, object]:
    if isinstance(m, ReplayModel):
        out: dict[str, object] = {"model": model, "underlyings": list(m.underlyings),
                                  "variance_risk_premium": m.variance_risk_premium}  # fmt: skip
        if m.rebase_to is not None:
            out["initial_prices"] = list(m.rebase_to)
        replay: dict[str, object] = {"source": m.source, "start": iso(m.start), "end": iso(m.end), "iv": m.iv_mode,
                                     "ewma_lambda": m.ewma_lambda}  # fmt: skip
        if m.iv_mode == "config":
            replay["atm_vol"] = list(m.atm_vol)
        out["replay"] = replay
        return out
    base = m.gbm.base if isinstance(m, MertonModel) else m.base
    out = {
        "model": model,
        "underlyings": list(base.underlyings),
        "initial_prices": list(base.initial_prices),
        "correlation": [list(r) for r in base.correlation],
        "variance_risk_premium": base.variance_risk_premium,
    }
    if isinstance(m, GbmModel | MertonModel):
        gbm = m.gbm if isinstance(m, MertonModel) else m
        out["vol"], out["drift"] = list(gbm.vol), list(gbm.drift)
    if isinstance(m, MertonModel):
        out["jumps"] = {"intensity": m.intensity, "mean": list(m.mean), "vol": list(m.vol), "timing": m.timing}
    if isinstance(m, GarchModel):
        out["vol"], out["drift"] = list(m.vol), list(m.drift)
        garch: dict[str, object] = {"alpha": list(m.alpha), "beta": list(m.beta)}
        if m.initial_vol is not None:
            garch["initial_vol"] = list(m.initial_vol)
        out["garch"] = garch
    if isinstance(m, RegimeModel):
        out["regimes"] = {"transition": [list(r) for r in m.transition], "initial": m.initial,
                          "state": [{"name": n, "vol": list(v), "drift": list(d)}
                                    for n, v, d in zip(m.names, m.vol, m.drift, strict=True)]}  # fmt: skip
    return out


def resolve(scenario: Scenario) -> dict[str, object]:
    """The scenario with every default filled in, as plain data in the scenario format.

    Loading the result again (:func:`scenario_from_mapping`) gives the same scenario; a run folder
    records it beside the seed and the software version. ``protocol`` lists every on-chain
    parameter (defaults included); ``risk`` holds the overrides as written.
    """
    run = scenario.run
    run_out: dict[str, object] = {"name": run.name, "seed": run.seed, "steps": run.steps,
                                  "step_seconds": run.step_seconds, "backend": run.backend}  # fmt: skip
    if not isinstance(scenario.market, ReplayModel):
        run_out["start"] = iso(run.start)
    impact = scenario.impact
    onchain, liquidation = scenario.protocol_params()
    return {
        "format_version": FORMAT_VERSION,
        "run": run_out,
        "market": _market_dict(scenario.model, scenario.market),
        "impact": {"enabled": impact.enabled, "daily_volume": list(impact.daily_volume), "y": impact.y,
                   "permanent_fraction": impact.permanent_fraction, "half_life_seconds": impact.half_life_seconds},
        "agents": [{"kind": a.kind, "name": a.name, "count": a.count, "capital": a.capital, "size": list(a.size),
                    "underlyings": list(a.underlyings), **a.options} for a in scenario.agents],
        "protocol": {**dataclasses.asdict(onchain), **dataclasses.asdict(liquidation)},
        "risk": _plain_copy(scenario.risk),
    }  # fmt: skip
