"""The keeper's configuration: a TOML file (``config/keeper.toml``) overridden by command-line flags.

The private key is never part of the configuration: it is read from a file (``key_file``) or an
environment variable (``key_env``, default ``PMSIM_KEEPER_KEY``), kept in memory only and never
logged or written anywhere (its address is).
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from eth_account import Account

from offchain.errors import ConfigError

GWEI = 10**9
MIN_BUMP = 0.125  # the smallest fee raise nodes accept for a replacement at the same nonce


@dataclass(frozen=True)
class FeeConfig:
    """EIP-1559 fees and replacement of stuck transactions.

    Attributes
    ----------
    max_fee_gwei : float
        Cap on ``maxFeePerGas``: no transaction, first or replacement, ever offers more.
    priority_fee_gwei : float
        ``maxPriorityFeePerGas`` of a first send (the tip).
    base_fee_multiple : float
        A first send offers ``maxFeePerGas = base_fee_multiple · baseFee + tip`` (capped).
    replace_after_s : float
        Seconds a transaction may stay unmined before it is replaced at the same nonce (40 s on
        mainnet-like chains; a second or less on Anvil).
    bump : float
        Relative raise of both fees per replacement, at least 0.125 (12.5 %).
    gas_margin : float
        Gas limit = estimate × gas_margin.
    """

    max_fee_gwei: float = 300.0
    priority_fee_gwei: float = 1.5
    base_fee_multiple: float = 2.0
    replace_after_s: float = 40.0
    bump: float = MIN_BUMP
    gas_margin: float = 1.25

    @property
    def max_fee(self) -> int:
        return int(self.max_fee_gwei * GWEI)

    @property
    def priority_fee(self) -> int:
        return int(self.priority_fee_gwei * GWEI)


@dataclass(frozen=True)
class ProfitConfig:
    """When a bid is worth sending.

    Attributes
    ----------
    min_profit_ratio : float
        Net profit (after unwind cost and gas) ≥ this share of the price's magnitude (default 1 %).
    gas_multiple : float
        Gross profit (before gas) ≥ gas cost × this (default 1.01).
    eth_usd : float or None
        ETH price used to value gas; None reads the feed's ``ETH`` underlying.
    bid_gas : int
        Gas a bid is assumed to use when valuing it (the real limit comes from an estimate).
    max_fraction : float
        Largest share of a portfolio taken in one bid (besides the contract's ``maxFraction``).
    landing_s : int
        Seconds from the latest block to the block a bid sent now lands in (the chain's block time):
        bids are priced for that second, so that a bid of the largest fraction lands as one and ends
        the auction instead of leaving a remainder (0: priced at the latest block's time).
    """

    min_profit_ratio: float = 0.01
    gas_multiple: float = 1.01
    eth_usd: float | None = None
    bid_gas: int = 900_000
    max_fraction: float = 1.0
    landing_s: int = 0


@dataclass(frozen=True)
class UnwindConfig:
    """The cost of unwinding what a bid acquires (a slippage model by size).

    Notes
    -----
    For a fraction ``f`` of an auction with mark-to-market equity ``V`` and maintenance margin ``M``
    the keeper unwinds exposure ``X = f · (|V| + M)`` (the value taken plus its maintenance margin,
    a proxy of the risk's size) and pays

    .. math:: C(X) = X \\left(\\frac{b}{10^4} + \\frac{k}{10^4} \\frac{X}{D}\\right) + c_0

    with ``b = base_bps``, ``k = impact_bps`` per ``D = depth_usd`` of exposure and a fixed
    ``c_0 = fixed_usd``: linear spread plus square-law market impact.
    """

    base_bps: float = 30.0
    impact_bps: float = 10.0
    depth_usd: float = 1_000_000.0
    fixed_usd: float = 0.0


@dataclass(frozen=True)
class RecomputeConfig:
    """Settings of the independent recompute.

    Attributes
    ----------
    enabled : bool
        Off by default: it costs an indexer and a margin computation per root and per block.
    risk_config : Path or None
        The risk engine's configuration (default ``config/risk.toml``); its canonical hash should be the
        deployment's ``engineConfigHash`` (a mismatch is logged: every leaf would then disagree).
    tolerance_usd : float
        Absolute tolerance per figure, USD.
    tolerance_ratio : float
        Relative tolerance per figure, of the larger of the two values and the leaf's MM.
    at_head : bool
        Also recompute at every new block and report breaches the latest root does not show.

    Notes
    -----
    A figure disagrees when :math:`|x_{pub} - x_{own}| > \\max(t_{abs}, t_{rel} \\max(|x_{pub}|, |x_{own}|, MM))`;
    the risk nonce and the credit checkpoint must match exactly.
    """

    enabled: bool = False
    risk_config: Path | None = None
    tolerance_usd: float = 0.01
    tolerance_ratio: float = 1e-9
    at_head: bool = True


@dataclass(frozen=True)
class HedgeConfig:
    """Hedging what a bid acquired (see :mod:`offchain.keeper.hedge`).

    Attributes
    ----------
    enabled : bool
        Off by default.
    counterparty_url : str or None
        ``POST {url}/quote`` answers signed orders on the other side (``pmsim keeper`` needs it when
        enabled; in-process runs pass their own counterparty).
    max_slippage_bps : float
        The keeper's limit price: the perp's mark ± this.
    min_delta : float
        Units of an underlying below which its delta is left alone (at least one lot is traded).
    order_ttl_s : int
        Seconds an order stays valid (its ``deadline``).
    risk_config : Path or None
        The risk configuration whose pricing measures the delta (default ``config/risk.toml``).
    """

    enabled: bool = False
    counterparty_url: str | None = None
    max_slippage_bps: float = 50.0
    min_delta: float = 0.001
    order_ttl_s: int = 600
    risk_config: Path | None = None


@dataclass(frozen=True)
class KeeperConfig:
    """Everything ``pmsim keeper`` reads (see ``config/keeper.toml`` for a commented example)."""

    rpc_url: str = "http://127.0.0.1:8545"
    deployment: Path = Path("deployments/local.json")
    engine_url: str | None = "http://127.0.0.1:8600"
    rounds_dir: Path | None = None
    key_file: Path | None = None
    key_env: str = "PMSIM_KEEPER_KEY"
    state_file: Path = Path("state/keeper/pending.json")
    poll_interval_s: float = 1.0
    start_auctions: bool = True
    dry_run: bool = False
    health_host: str = "127.0.0.1"
    health_port: int | None = 9600
    fees: FeeConfig = field(default_factory=FeeConfig)
    profit: ProfitConfig = field(default_factory=ProfitConfig)
    unwind: UnwindConfig = field(default_factory=UnwindConfig)
    recompute: RecomputeConfig = field(default_factory=RecomputeConfig)
    hedge: HedgeConfig = field(default_factory=HedgeConfig)

    def validate(self) -> KeeperConfig:
        """Check every value; raises :class:`ConfigError` naming the field at fault."""
        f, p, u = self.fees, self.profit, self.unwind
        _positive("fees.max_fee_gwei", f.max_fee_gwei)
        _non_negative("fees.priority_fee_gwei", f.priority_fee_gwei)
        if f.priority_fee_gwei > f.max_fee_gwei:
            raise ConfigError("fees.priority_fee_gwei", "exceeds fees.max_fee_gwei")
        _at_least("fees.base_fee_multiple", f.base_fee_multiple, 1.0)
        _non_negative("fees.replace_after_s", f.replace_after_s)
        _at_least("fees.bump", f.bump, MIN_BUMP, "nodes refuse a replacement raising fees by less than 12.5 %")
        _at_least("fees.gas_margin", f.gas_margin, 1.0)
        _non_negative("profit.min_profit_ratio", p.min_profit_ratio)
        _at_least("profit.gas_multiple", p.gas_multiple, 1.0)
        if p.eth_usd is not None:
            _positive("profit.eth_usd", p.eth_usd)
        _positive("profit.bid_gas", p.bid_gas)
        _non_negative("profit.landing_s", p.landing_s)
        if not 0 < p.max_fraction <= 1:
            raise ConfigError("profit.max_fraction", f"must be in (0, 1], got {p.max_fraction}")
        for name in ("base_bps", "impact_bps", "fixed_usd"):
            _non_negative(f"unwind.{name}", getattr(u, name))
        _positive("unwind.depth_usd", u.depth_usd)
        r, hd = self.recompute, self.hedge
        _non_negative("recompute.tolerance_usd", r.tolerance_usd)
        _non_negative("recompute.tolerance_ratio", r.tolerance_ratio)
        _non_negative("hedge.max_slippage_bps", hd.max_slippage_bps)
        if hd.max_slippage_bps >= 10_000:
            raise ConfigError("hedge.max_slippage_bps", f"must be below 10000, got {hd.max_slippage_bps}")
        _positive("hedge.min_delta", hd.min_delta)
        _positive("hedge.order_ttl_s", hd.order_ttl_s)
        _positive("poll_interval_s", self.poll_interval_s)
        if self.engine_url is None and self.rounds_dir is None:
            raise ConfigError("engine_url", "set engine_url or rounds_dir: the keeper needs the published leaves")
        if self.health_port is not None and not 0 <= self.health_port < 65536:
            raise ConfigError("health_port", f"not a port: {self.health_port}")
        return self

    def load_key(self) -> str:
        """The keeper's private key from ``key_file`` or ``$key_env`` (never logged)."""
        if self.key_file is not None:
            try:
                text = self.key_file.read_text().strip()
            except OSError as exc:
                raise ConfigError("key_file", f"cannot read {self.key_file}: {exc.strerror}") from None
            source = "key_file"
        else:
            text = os.environ.get(self.key_env, "").strip()
            source = "key_env"
            if not text:
                raise ConfigError("key_env", f"${self.key_env} is not set (or give key_file)")
        try:
            Account.from_key(text)
        except Exception:  # the message could echo the key: never show it
            raise ConfigError(source, "not a valid private key (32 bytes of hex)") from None
        return text


_SECTIONS = {"fees": FeeConfig, "profit": ProfitConfig, "unwind": UnwindConfig, "recompute": RecomputeConfig,
             "hedge": HedgeConfig}  # fmt: skip
_PATHS = {"deployment", "rounds_dir", "key_file", "state_file", "risk_config"}
_OPTIONAL = {"eth_usd", "risk_config", "counterparty_url"}


def load_config(path: Path | None, overrides: dict[str, Any] | None = None) -> KeeperConfig:
    """Read ``path`` (TOML; sections ``[keeper]``, ``[fees]``, ``[profit]``, ``[unwind]``, ``[recompute]``,
    ``[hedge]``), apply
    ``overrides`` (dotted names such as ``"fees.max_fee_gwei"``; None values are ignored) and validate.

    Raises
    ------
    ConfigError
        Unreadable file, unknown key or section, wrong type or out-of-range value; ``field`` names it.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError("config", f"cannot read {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("config", f"{path} is not valid TOML: {exc}") from None
    flat: dict[str, Any] = {}
    for section, body in raw.items():
        if not isinstance(body, dict) or section not in ("keeper", *_SECTIONS):
            raise ConfigError(section, "unknown section (expected keeper, fees, profit, unwind, recompute, hedge)")
        for k, v in body.items():
            flat[k if section == "keeper" else f"{section}.{k}"] = v
    flat.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return _build(flat).validate()


def _build(flat: dict[str, Any]) -> KeeperConfig:
    top: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {s: {} for s in _SECTIONS}
    for name, v in flat.items():
        section, _, key = name.rpartition(".")
        if section:
            if section not in _SECTIONS:
                raise ConfigError(name, "unknown section")
            nested[section][key] = v
        else:
            top[key] = v
    cfg = KeeperConfig()
    known = {f.name: f for f in fields(KeeperConfig)}
    for key, v in top.items():
        if key not in known or key in _SECTIONS:
            raise ConfigError(key, "unknown setting")
        top[key] = _coerce(key, v, getattr(cfg, key), optional=key in ("engine_url", "rounds_dir", "key_file",
                                                                       "health_port"))  # fmt: skip
    for section, values in nested.items():
        base = getattr(cfg, section)
        names = {f.name for f in fields(base)}
        for key, v in values.items():
            if key not in names:
                raise ConfigError(f"{section}.{key}", "unknown setting")
            values[key] = _coerce(f"{section}.{key}", v, getattr(base, key), optional=key in _OPTIONAL)
        top[section] = replace(base, **values)
    return replace(cfg, **top)


def _coerce(name: str, v: Any, default: Any, optional: bool = False) -> Any:
    key = name.rpartition(".")[2]
    if optional and (v is None or v == ""):
        return None
    if key in _PATHS:
        if not isinstance(v, str | Path):
            raise ConfigError(name, f"must be a path, got {v!r}")
        return Path(v)
    want = type(default) if default is not None else (float if key == "eth_usd" else int if key == "health_port"
                                                      else str)  # fmt: skip
    if want is bool:
        if not isinstance(v, bool):
            raise ConfigError(name, f"must be true or false, got {v!r}")
        return v
    if want in (int, float):
        if isinstance(v, bool) or not isinstance(v, int | float) or (want is int and not float(v).is_integer()):
            raise ConfigError(name, f"must be a number, got {v!r}")
        if not math.isfinite(float(v)):
            raise ConfigError(name, "must be finite")
        return want(v)
    if not isinstance(v, str):
        raise ConfigError(name, f"must be a string, got {v!r}")
    return v


def _positive(name: str, v: float) -> None:
    if not v > 0:
        raise ConfigError(name, f"must be positive, got {v}")


def _non_negative(name: str, v: float) -> None:
    if not v >= 0:
        raise ConfigError(name, f"must be ≥ 0, got {v}")


def _at_least(name: str, v: float, low: float, why: str = "") -> None:
    if not v >= low:
        raise ConfigError(name, f"must be ≥ {low}, got {v}" + (f" ({why})" if why else ""))
