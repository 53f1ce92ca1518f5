"""Price sources: an iterator of (seconds since start, prices per underlying) steps.

Two kinds: a seeded correlated geometric Brownian motion with jumps (a synthetic market), and a
replay of the vendored historical BTC/ETH series (``data/market``), e.g. the March 2020 crash.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from offchain._typing import Float64Array
from offchain.errors import ConfigError, InputError
from offchain.risk.history import read_close_series

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "market"
REPLAYS = {
    "2020-03": ("btc_usd_1h_2020-03.csv", "eth_usd_1h_2020-03.csv"),
    "2021-05": ("btc_usd_1h_2021-05.csv", "eth_usd_1h_2021-05.csv"),
}


@dataclass(frozen=True)
class PriceStep:
    """One observation: ``offset`` seconds after the start, one price per underlying (USD)."""

    offset: int
    prices: tuple[float, ...]


@dataclass(frozen=True)
class GbmSource:
    """Correlated GBM with Poisson jumps (log-normal jump sizes), seeded.

    Notes
    -----
    Per step of ``dt`` years, for each underlying i:
    ``log S_i += (mu_i - sigma_i**2 / 2) dt + sigma_i sqrt(dt) Z_i + J_i``, with ``Z = L e``
    (``L`` the Cholesky factor of ``corr``) and ``J_i = N * jump`` where ``N ~ Poisson(rate dt)``
    is common to all underlyings (a market-wide jump) and ``jump ~ Normal(jump_mean, jump_vol)``.
    """

    spot: tuple[float, ...]
    vol: tuple[float, ...]
    corr: tuple[tuple[float, ...], ...]
    step_seconds: int = 3600
    drift: tuple[float, ...] | None = None
    jump_rate: float = 0.0  # jumps per year
    jump_mean: float = -0.05
    jump_vol: float = 0.05

    def __post_init__(self) -> None:
        n = len(self.spot)
        if len(self.vol) != n or len(self.corr) != n or any(len(r) != n for r in self.corr):
            raise ConfigError("corr", "spot, vol and corr must describe the same number of underlyings")
        if any(s <= 0 for s in self.spot):
            raise ConfigError("spot", "prices must be positive")
        if any(v < 0 for v in self.vol):
            raise ConfigError("vol", "volatilities must be non-negative")
        if self.step_seconds <= 0:
            raise ConfigError("step_seconds", "must be positive")
        try:
            np.linalg.cholesky(np.asarray(self.corr, dtype=np.float64))
        except np.linalg.LinAlgError:
            raise ConfigError("corr", "correlation matrix is not positive definite") from None

    def path(self, steps: int, rng: np.random.Generator) -> Float64Array:
        """``steps + 1`` rows of prices (the first row is ``spot``)."""
        n = len(self.spot)
        dt = self.step_seconds / (365.0 * 86_400)
        vol = np.asarray(self.vol)
        mu = np.asarray(self.drift) if self.drift is not None else np.zeros(n)
        chol = np.linalg.cholesky(np.asarray(self.corr, dtype=np.float64))
        z = rng.standard_normal((steps, n)) @ chol.T
        jumps = rng.poisson(self.jump_rate * dt, steps)[:, None] * rng.normal(self.jump_mean, self.jump_vol, (steps, 1))
        log_ret = (mu - 0.5 * vol**2) * dt + vol * np.sqrt(dt) * z + jumps
        log_path = np.vstack([np.zeros((1, n)), np.cumsum(log_ret, axis=0)])
        out: Float64Array = np.asarray(self.spot) * np.exp(log_path)
        return out

    def steps(self, steps: int, seed: int) -> Iterator[PriceStep]:
        rows = self.path(steps, np.random.default_rng(seed))
        for i, row in enumerate(rows):
            yield PriceStep(i * self.step_seconds, tuple(float(x) for x in row))


def _read_closes(path: Path) -> tuple[list[int], list[float]]:
    times, closes = read_close_series(path, "replay")
    return times.tolist(), closes.tolist()


@dataclass(frozen=True)
class ReplaySource:
    """A replay of joint historical closes (rows where every underlying has a price)."""

    files: Sequence[Path]

    @classmethod
    def named(cls, name: str) -> ReplaySource:
        if name not in REPLAYS:
            raise InputError("replay", f"unknown replay {name!r}; choose one of {sorted(REPLAYS)}")
        return cls([DATA_DIR / f for f in REPLAYS[name]])

    def steps(self) -> Iterator[PriceStep]:
        series = [_read_closes(f) for f in self.files]
        common = sorted(set.intersection(*(set(t) for t, _ in series)))
        if not common:
            raise InputError("replay", "the files share no timestamp")
        lookups = [dict(zip(t, c, strict=True)) for t, c in series]
        start = common[0]
        for ts in common:
            yield PriceStep(ts - start, tuple(lk[ts] for lk in lookups))


def scaled_steps(source: str, spot: Sequence[float], seed: int, steps: int) -> Iterator[PriceStep]:
    """Steps of ``source`` (``gbm`` or ``replay:<name>``), replays rescaled to start at ``spot``.

    A replay keeps the historical relative moves (the crash's shape) from today's price level.
    ``median:SRC,SRC,SRC`` posts the per-underlying median of three or more sources (GBM sources
    get seeds ``seed + i``), so one manipulated or broken source never reaches the chain
    (:func:`offchain.feeds.marking.median_steps`).
    """
    if source.startswith("median:"):
        from offchain.feeds.marking import median_steps

        parts = [p.strip() for p in source.split(":", 1)[1].split(",")]
        if len(parts) < 3 or "" in parts or any(p.startswith("median:") for p in parts):
            raise InputError("source", f"median needs 3 or more comma-separated sources, got {source!r}")
        yield from median_steps(scaled_steps(p, spot, seed + i, steps) for i, p in enumerate(parts))
        return
    if source == "gbm":
        gbm = GbmSource(spot=tuple(spot), vol=(0.6, 0.8)[: len(spot)] + (0.7,) * max(0, len(spot) - 2),
                        corr=_default_corr(len(spot)), jump_rate=10.0)  # fmt: skip
        yield from gbm.steps(steps, seed)
        return
    if not source.startswith("replay:"):
        raise InputError("source", f"expected gbm or replay:<name>, got {source!r}")
    replay = list(ReplaySource.named(source.split(":", 1)[1]).steps())
    base = replay[0].prices
    for step in replay[: steps + 1]:
        yield PriceStep(step.offset, tuple(s * p / b for s, p, b in zip(spot, step.prices, base, strict=True)))


def _default_corr(n: int) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(1.0 if i == j else 0.7 for j in range(n)) for i in range(n))
