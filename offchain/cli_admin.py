"""``pmsim admin``: admin changes through the governance timelock (docs/governance.md).

Every owner role of a deployment made by ``pmsim deploy``, ``pmsim devnet up`` or ``scripts/deploy.py``
belongs to a TimelockController. ``schedule`` encodes a named admin call and schedules it (it can run
after the timelock's delay), ``pending`` lists what is scheduled with its ETA and the decoded calls,
``execute`` runs a ready operation, ``cancel`` drops one during its delay (the guardian and the admin
hold the canceller role). Times are chain time. Errors name the field at fault.

    pmsim admin schedule RiskParams setParams --set price_tolerance=0.02e18
    pmsim admin schedule PriceFeed setQuorum 3
    pmsim admin schedule-batch rotation.json        # [{"contract", "function", "args"}, ...] as one operation
    pmsim admin pending
    pmsim admin execute 0x1a2b3c…
    pmsim admin cancel 0x1a2b3c… --key $GUARDIAN_KEY
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from offchain.errors import InputError

DEPLOYMENT = Path("deployments/local.json")
console = Console(highlight=False)

admin_app = typer.Typer(help="Admin changes through the governance timelock: schedule, pending, execute, cancel.",
                        no_args_is_help=True)  # fmt: skip

DeploymentOpt = Annotated[Path, typer.Option(help="deployment file written by `pmsim deploy` or `pmsim devnet up`")]
RpcOpt = Annotated[str | None, typer.Option(help="RPC URL (default: the deployment's)")]
KeyOpt = Annotated[
    str | None,
    typer.Option(help="proposer / executor / canceller key (default: Anvil key 0, the devnet deployer)",
                 envvar="PMSIM_ADMIN_KEY"),
]  # fmt: skip
IdArg = Annotated[str, typer.Argument(help="operation id (0x… or a unique prefix of it), from `pmsim admin pending`")]


def _protocol(deployment: Path, rpc: str | None) -> Any:
    from offchain.chain.client import Deployment, Protocol, connect

    dep = Deployment.load(deployment)
    return Protocol(connect(rpc or dep.rpc_url), dep)


def _key(key: str | None) -> str:
    from offchain.chain.anvil import DEFAULT_KEYS

    return key or DEFAULT_KEYS[0]


def _when(eta: int, now: int) -> str:
    at = datetime.fromtimestamp(eta, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    left = eta - now
    if left <= 0:
        return f"{at} (ready)"
    d, rest = divmod(left, 86_400)
    h, rest = divmod(rest, 3_600)
    m, s = divmod(rest, 60)
    return f"{at} (in {d}d {h}h {m}m {s}s)"


def operation_lines(p: Any, op: Any) -> list[str]:
    """One operation as lines: id, state, ETA, then each decoded call."""
    from offchain.chain.governance import OpState

    state = "cancelled" if op.cancelled else op.state.name.lower()
    head = f"{op.hex_id}  {state}"
    if op.state in (OpState.WAITING, OpState.READY):
        head += f"  eta {_when(op.eta, p.now())}"
    lines = [head + f"  (delay {op.delay}s, scheduled in block {op.scheduled_block})"]
    lines += [f"  {i}. {c.describe(p)}" for i, c in enumerate(op.calls, start=1)]
    return lines


def _as_json(p: Any, op: Any) -> dict[str, Any]:
    return {"id": op.hex_id, "state": "cancelled" if op.cancelled else op.state.name.lower(), "eta": op.eta,
            "delay": op.delay, "salt": "0x" + op.salt.hex(), "predecessor": "0x" + op.predecessor.hex(),
            "calls": [{"contract": c.contract, "target": c.target, "data": "0x" + c.data.hex(),
                       "call": c.describe(p)} for c in op.calls]}  # fmt: skip


@admin_app.command("schedule")
def schedule_cmd(
    contract: Annotated[str, typer.Argument(help="deployed contract, e.g. RiskParams, PriceFeed, Vault")],
    function: Annotated[str, typer.Argument(help="its admin function, e.g. setParams, addSigner, setQuorum")],
    args: Annotated[list[str] | None, typer.Argument(help="arguments (tuples and arrays as JSON arrays)")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="field=value on top of the struct on chain (setParams, setLiquidationParams)"),
    ] = None,
    delay: Annotated[int | None, typer.Option(help="seconds (default: the timelock's minimum delay)")] = None,
    salt: Annotated[str | None, typer.Option(help="bytes32 salt (default: the latest block's hash)")] = None,
    key: KeyOpt = None,
    deployment: DeploymentOpt = DEPLOYMENT,
    rpc: RpcOpt = None,
) -> None:
    """Schedule one admin call on the timelock; prints the operation id and its ETA."""
    from offchain.chain import governance as gov

    p = _protocol(deployment, rpc)
    call = gov.encode_call(p, contract, function, args or [], set_ or [])
    if delay is not None and delay < 0:
        raise InputError("delay", "must not be negative")
    salt_bytes = None
    if salt is not None:
        salt_bytes = gov.parse_arg(salt, {"type": "bytes32"}, "salt")
    op = gov.schedule(p, _key(key), [call], delay=delay, salt=salt_bytes)
    console.print("scheduled " + "\n".join(operation_lines(p, op)))
    console.print(f"execute with `pmsim admin execute {op.hex_id}` once ready; cancel with `pmsim admin cancel "
                  f"{op.hex_id}`")  # fmt: skip


@admin_app.command("schedule-batch")
def schedule_batch_cmd(
    file: Annotated[Path, typer.Argument(help='JSON list of {"contract", "function", "args": [...]} or "set": {...}')],
    delay: Annotated[int | None, typer.Option(help="seconds (default: the timelock's minimum delay)")] = None,
    key: KeyOpt = None,
    deployment: DeploymentOpt = DEPLOYMENT,
    rpc: RpcOpt = None,
) -> None:
    """Schedule several admin calls as one operation: they execute together, in order, or not at all
    (e.g. add a signer and raise the quorum)."""
    from offchain.chain import governance as gov

    try:
        doc = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise InputError("file", f"{file}: not a JSON file ({exc})") from None
    if not isinstance(doc, list) or not doc or not all(isinstance(x, dict) for x in doc):
        raise InputError("file", f"{file}: expected a non-empty JSON list of calls")
    if delay is not None and delay < 0:
        raise InputError("delay", "must not be negative")
    p = _protocol(deployment, rpc)
    calls = []
    for i, item in enumerate(doc):
        unknown = set(item) - {"contract", "function", "args", "set"}
        if unknown or "contract" not in item or "function" not in item:
            raise InputError(f"file[{i}]", 'each call needs "contract" and "function", and may have "args" or "set"')
        sets = [f"{k}={v}" for k, v in dict(item.get("set", {})).items()]
        args = [a if isinstance(a, str) else json.dumps(a) for a in item.get("args", [])]
        calls.append(gov.encode_call(p, str(item["contract"]), str(item["function"]), args, sets))
    op = gov.schedule(p, _key(key), calls, delay=delay)
    console.print("scheduled " + "\n".join(operation_lines(p, op)))


@admin_app.command("pending")
def pending_cmd(
    all_: Annotated[bool, typer.Option("--all", help="also list executed and cancelled operations")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON document instead of text")] = False,
    deployment: DeploymentOpt = DEPLOYMENT,
    rpc: RpcOpt = None,
) -> None:
    """List the scheduled operations (waiting or ready) with their ETA and decoded calls."""
    from offchain.chain import governance as gov

    p = _protocol(deployment, rpc)
    ops = gov.operations(p) if all_ else gov.pending(p)
    if as_json:
        console.print_json(json.dumps({"now": p.now(), "operations": [_as_json(p, o) for o in ops]}))
        return
    tl = gov.timelock_of(p)
    console.print(f"timelock {tl.address}, min delay {int(p.call(tl.functions.getMinDelay()))}s, chain time "
                  f"{p.now()}: {len(ops)} operation{'s' if len(ops) != 1 else ''}")  # fmt: skip
    for op in ops:
        console.print("\n".join(operation_lines(p, op)))


@admin_app.command("execute")
def execute_cmd(op_id: IdArg, key: KeyOpt = None, deployment: DeploymentOpt = DEPLOYMENT, rpc: RpcOpt = None) -> None:
    """Execute a ready operation (refused before its ETA)."""
    from offchain.chain import governance as gov

    p = _protocol(deployment, rpc)
    op = gov.find_operation(p, op_id)
    if op.state != gov.OpState.READY:
        why = "cancelled" if op.cancelled else op.state.name.lower()
        extra = f"; ready at {_when(op.eta, p.now())}" if op.state == gov.OpState.WAITING else ""
        raise InputError("id", f"{op.hex_id} is not ready: {why}{extra}")
    gov.execute(p, _key(key), op)
    console.print(f"executed {op.hex_id}")
    for i, c in enumerate(op.calls, start=1):
        console.print(f"  {i}. {c.describe(p)}")


@admin_app.command("cancel")
def cancel_cmd(op_id: IdArg, key: KeyOpt = None, deployment: DeploymentOpt = DEPLOYMENT, rpc: RpcOpt = None) -> None:
    """Cancel a scheduled operation during its delay (canceller role: the admin or the guardian)."""
    from offchain.chain import governance as gov

    p = _protocol(deployment, rpc)
    op = gov.find_operation(p, op_id)
    if op.state not in (gov.OpState.WAITING, gov.OpState.READY):
        raise InputError("id", f"{op.hex_id} is not pending: {'cancelled' if op.cancelled else op.state.name.lower()}")
    gov.cancel(p, _key(key), op)
    console.print(f"cancelled {op.hex_id}")
    for i, c in enumerate(op.calls, start=1):
        console.print(f"  {i}. {c.describe(p)}")
