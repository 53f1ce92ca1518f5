"""``pmsim optimize``: the cheapest trades that bring an account's IM down to a target.

``pmsim optimize FILE --account ID --target-im X`` reads a positions file (as ``pmsim margin``);
``pmsim optimize 0xADDRESS --target-im X`` rebuilds a devnet account from the chain's events. The
target is a USD amount or a share of the current IM (``60%``). Every listed instrument (or those
given with ``--instrument``) may be traded, each within ``±--limit`` units after the trade, at a
cost of ``--cost-bps`` of the underlying's notional per unit. The linear programme is solved by
HiGHS (:mod:`offchain.risk.optimize`) and its answer re-checked by the engine.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from offchain.cli_margin import _pairs
from offchain.errors import InputError, PmsimError
from offchain.risk.accounts import AccountState
from offchain.risk.config import RiskConfig, load_config
from offchain.risk.engine import MarginEngine
from offchain.risk.instruments import Kind
from offchain.risk.optimize import Candidate, Optimisation, optimise_margin
from offchain.risk.positions_file import MarketFlags, load_positions

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


def parse_target(text: str, current_im: float) -> float:
    """``"25000"`` (USD) or ``"60%"`` (of ``current_im``); errors name ``--target-im``."""
    share = text.strip().endswith("%")
    try:
        value = float(text.strip().rstrip("%"))
    except ValueError:
        raise InputError("--target-im", f"expected USD or a percentage like 60%, got {text!r}") from None
    if not value >= 0.0 or value == float("inf"):
        raise InputError("--target-im", f"must be a finite number >= 0, got {text!r}")
    return current_im * value / 100.0 if share else value


def _file_account(
    path: Path, cfg: RiskConfig, account: str | None, flags: MarketFlags
) -> tuple[MarginEngine, AccountState, str]:
    data = load_positions(path, cfg, flags)
    ids = list(data.account_ids)
    if account is None:
        if len(ids) != 1:
            raise InputError("--account", f"the file holds {len(ids)} accounts: pick one of {', '.join(ids)}")
        account = ids[0]
    if account not in ids:
        raise InputError("--account", f"no account {account!r} in {path}")
    a = ids.index(account)
    book = data.book
    span = slice(book.positions.indptr[a], book.positions.indptr[a + 1])
    state = AccountState(book.positions.indices[span], book.positions.data[span], float(book.cash[a]),
                         float(book.cost_basis[a]), float(book.funding_owed[a]), book.collateral[a])  # fmt: skip
    return MarginEngine(cfg, data.instruments, data.market), state, account


def _chain_account(
    address: str, cfg: RiskConfig, deployment: Path, rpc: str | None
) -> tuple[MarginEngine, AccountState, str]:
    from eth_utils import to_checksum_address

    from offchain.chain.client import Deployment, Protocol, connect
    from offchain.chain.indexer import AccountState as ChainAccount
    from offchain.chain.indexer import Indexer
    from offchain.engine.core import EngineCore

    dep = Deployment.load(deployment)
    indexer = Indexer(Protocol(connect(rpc or dep.rpc_url), dep))
    indexer.sync()
    state = indexer.state
    core = EngineCore(cfg, dep)
    account = str(to_checksum_address(address))
    return core.engine(state), core.account_state(state, state.accounts.get(account) or ChainAccount()), account


def _name(engine: MarginEngine, row: int) -> str:
    ins = engine.instruments
    kind = Kind(int(ins.kind[row]))
    symbol = engine.config.symbols[int(ins.underlying[row])]
    if kind == Kind.PERP:
        return f"{symbol}-PERP (id {int(ins.instrument_id[row])})"
    days = (int(ins.expiry[row]) - engine.market.now) / 86_400
    strike = f" K={float(ins.strike[row]):,.0f}" if kind in (Kind.CALL, Kind.PUT) else ""
    return f"{symbol} {kind.name}{strike} {days:.0f}d (id {int(ins.instrument_id[row])})"


def optimize(
    target: Annotated[str, typer.Argument(help="positions file (.json/.csv), or a devnet account address")],
    target_im: Annotated[str, typer.Option("--target-im", help="IM to reach: USD, or a share of today's (60%)")],
    account: Annotated[str | None, typer.Option(help="file mode: the account id")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="risk configuration (TOML)")] = None,
    cost_bps: Annotated[float, typer.Option(help="trading cost per unit, basis points of the underlying")] = 5.0,
    limit: Annotated[float, typer.Option(help="position limit per instrument after the trades (units)")] = 100.0,
    instrument: Annotated[list[int] | None, typer.Option(help="instrument id that may be traded (repeat)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
    now: Annotated[int | None, typer.Option(help="CSV only: chain time, unix seconds")] = None,
    spot: Annotated[list[str] | None, typer.Option(help="CSV only: SYMBOL=PRICE, once per underlying")] = None,
    vol: Annotated[list[str] | None, typer.Option(help="CSV only: SYMBOL=VOL flat implied vol")] = None,
    deployment: Annotated[Path, typer.Option(help="devnet mode: deployment file")] = Path("deployments/local.json"),
    rpc: Annotated[str | None, typer.Option(help="devnet mode: RPC URL (default: the deployment's)")] = None,
) -> None:
    """Find the cheapest trades bringing an account's IM down to --target-im, and check them."""
    try:
        cfg = load_config(config)
        if not (cost_bps >= 0.0 and limit > 0.0):
            raise InputError("--cost-bps" if not cost_bps >= 0.0 else "--limit", "must be >= 0 (limit > 0)")
        if _ADDRESS.match(target):
            engine, state, name = _chain_account(target, cfg, deployment, rpc)
        else:
            flags = MarketFlags(now, 0, _pairs(spot, "--spot"), _pairs(vol, "--vol"))
            engine, state, name = _file_account(Path(target), cfg, account, flags)
        ins = engine.instruments
        rows = ins.index_of(instrument) if instrument else range(len(ins))
        candidates = [
            Candidate(int(r), cost_bps * 1e-4 * float(engine.valuation.spot[r]), -limit, limit)
            for r in rows if not engine.valuation.expired[r]
        ]  # fmt: skip
        before = engine.account(state)
        goal = parse_target(target_im, before.im)
        result = optimise_margin(engine, state, candidates, goal)
    except PmsimError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(_doc(engine, name, goal, result), indent=2))
    else:
        _print(engine, name, goal, result)
    if not result.feasible:
        raise typer.Exit(1)


def _doc(engine: MarginEngine, name: str, goal: float, r: Optimisation) -> dict[str, object]:
    trades = [{"instrument": int(engine.instruments.instrument_id[row]), "name": _name(engine, int(row)),
               "size": float(t)} for row, t in zip(r.rows, r.trades, strict=True) if t]  # fmt: skip
    return {
        "account": name, "target_im": goal, "feasible": r.feasible, "im_before": r.im_before,
        "im_after_lp": r.im_lp, "im_after_engine": r.after.im if r.after else None, "cost": r.cost,
        "trades": trades, "solver": r.message,
    }  # fmt: skip


def _print(engine: MarginEngine, name: str, goal: float, r: Optimisation) -> None:
    console = Console()
    if not r.feasible:
        console.print(f"{name}: no trades within the limits bring IM from {r.im_before:,.2f} to {goal:,.2f}")
        return
    table = Table(title=f"Cheapest trades for {name}: IM {r.im_before:,.2f} -> {goal:,.2f} (target)")
    table.add_column("Instrument")
    table.add_column("Trade (units)", justify="right")
    for row, t in zip(r.rows, r.trades, strict=True):
        if t:
            table.add_row(_name(engine, int(row)), f"{t:+,.4f}")
    console.print(table)
    after = r.after.im if r.after else float("nan")
    console.print(f"IM before {r.im_before:,.2f}; after {r.im_lp:,.2f} (programme), {after:,.2f} (engine re-check); "
                  f"trading cost {r.cost:,.2f}")  # fmt: skip
