"""Admin changes through the governance timelock: encode, schedule, list, execute, cancel.

Every owner role of a timelocked deployment belongs to OpenZeppelin's ``TimelockController``
(``deployment.contracts["TimelockController"]``, see :func:`offchain.chain.deploy.hand_over` and
docs/governance.md). An admin change is a call (target, calldata) that a proposer schedules; it can be
executed once the delay has passed, and cancelled by a canceller until then. The timelock keeps no
list of its operations: :func:`operations` rebuilds them from its ``CallScheduled``, ``CallSalt``,
``CallExecuted`` and ``Cancelled`` events, and reads each one's state from the contract.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from decimal import Decimal, InvalidOperation
from enum import IntEnum
from typing import Any

from eth_abi import encode
from eth_utils import is_address, keccak, to_checksum_address
from web3.contract import Contract

from offchain.chain.build import abi_type
from offchain.chain.client import Protocol
from offchain.chain.params import LiquidationParams, OnchainParams
from offchain.errors import ChainError, InputError

TIMELOCK = "TimelockController"
ZERO32 = b"\x00" * 32
# Struct setters that take named ``field=value`` changes on top of the values on chain.
STRUCT_SETTERS: dict[tuple[str, str], tuple[str, type[OnchainParams] | type[LiquidationParams]]] = {
    ("RiskParams", "setParams"): ("params", OnchainParams),
    ("RiskParams", "setLiquidationParams"): ("liquidationParams", LiquidationParams),
}


class OpState(IntEnum):
    """``TimelockController.OperationState``; an operation that was cancelled reads ``UNSET`` again."""

    UNSET = 0
    WAITING = 1
    READY = 2
    DONE = 3


@dataclass(frozen=True)
class Call:
    """One admin call: ``contract`` (deployment name) at ``target`` gets ``data`` (selector + arguments)."""

    contract: str
    target: str
    data: bytes
    value: int = 0

    def describe(self, p: Protocol) -> str:
        """``Contract.function(arg, ...)``, decoded with the target's ABI."""
        return describe_call(p, self.target, self.data)


@dataclass(frozen=True)
class Operation:
    """A scheduled operation of the timelock, rebuilt from its events."""

    id: bytes
    calls: tuple[Call, ...]
    predecessor: bytes
    salt: bytes
    delay: int
    scheduled_block: int
    state: OpState
    eta: int  # chain time from which it may be executed (0 once cancelled, 1 once done)
    cancelled: bool = False

    @property
    def hex_id(self) -> str:
        return "0x" + self.id.hex()


# ---------------------------------------------------------------------- encoding
def timelock_of(p: Protocol) -> Contract:
    """The deployment's timelock, or a clear error for a deployment with instant admin."""
    if TIMELOCK not in p.c:
        raise ChainError("this deployment has no timelock (deployed with timelock=None): its owner key "
                         "changes parameters at once")  # fmt: skip
    return p.c[TIMELOCK]


def contract_named(p: Protocol, name: str) -> Contract:
    for known, c in p.c.items():
        if known.lower() == name.lower():
            return c
    raise InputError("contract", f"unknown contract {name!r}; the deployment has {', '.join(sorted(p.c))}")


def _function_abi(c: Contract, name: str, contract: str) -> dict[str, Any]:
    abi: list[dict[str, Any]] = [dict(i) for i in c.abi]
    matches = [i for i in abi if i.get("type") == "function" and i["name"] == name]
    if not matches:
        names = sorted({i["name"] for i in abi if i.get("type") == "function"
                        and i.get("stateMutability") not in ("view", "pure")})  # fmt: skip
        raise InputError("function", f"{contract} has no function {name!r}; it has {', '.join(names)}")
    if len(matches) > 1:
        raise InputError("function", f"{contract}.{name} is overloaded; not supported")
    return matches[0]


def encode_call(p: Protocol, contract: str, function: str, args: Sequence[str] = (),
                sets: Sequence[str] = ()) -> Call:  # fmt: skip
    """Encode ``contract.function(args)`` from strings (see :func:`parse_arg` for each ABI type).

    ``sets`` (``field=value``, snake_case field names) builds the argument of a struct setter
    (``RiskParams.setParams``, ``RiskParams.setLiquidationParams``) from its current value on chain
    with those fields changed; the other arguments must then be empty.
    """
    c = contract_named(p, contract)
    name = next(n for n, k in p.c.items() if k is c)
    fn = _function_abi(c, function, name)
    if sets:
        if args:
            raise InputError("args", "give either positional arguments or --set field=value, not both")
        values: list[Any] = [_struct_with(p, name, function, sets)]
    else:
        inputs = fn["inputs"]
        if len(args) != len(inputs):
            want = ", ".join(f"{abi_type(i)} {i['name']}" for i in inputs)
            raise InputError("args", f"{name}.{function} takes {len(inputs)} arguments ({want}), got {len(args)}")
        values = [parse_arg(a, i, i["name"] or f"arg{k}") for k, (a, i) in enumerate(zip(args, inputs, strict=True))]
    types = [abi_type(i) for i in fn["inputs"]]
    selector = keccak(text=f"{function}({','.join(types)})")[:4]
    return Call(name, c.address, selector + encode(types, values))


def _struct_with(p: Protocol, contract: str, function: str, sets: Sequence[str]) -> tuple[int, ...]:
    entry = STRUCT_SETTERS.get((contract, function))
    if entry is None:
        setters = ", ".join(f"{c}.{f}" for c, f in STRUCT_SETTERS)
        raise InputError("set", f"--set works with {setters}, not {contract}.{function}")
    getter, cls = entry
    current = cls(*(int(x) for x in p.call(getattr(p.c[contract].functions, getter)())))
    names = {f.name for f in fields(cls)}
    changes: dict[str, int] = {}
    for item in sets:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in names:
            raise InputError("set", f"{item!r}: expected field=value with a field of {', '.join(sorted(names))}")
        changes[key] = parse_int(raw, key)
    return replace(current, **changes).as_tuple()  # type: ignore[arg-type]


def parse_int(raw: str, field: str) -> int:
    """An exact integer: decimal, ``0x`` hex, or exact scientific notation (``0.02e18``, ``2e16``)."""
    text = raw.strip().replace("_", "")
    try:
        if text.lower().startswith(("0x", "-0x")):
            return int(text, 16)
        d = Decimal(text)
    except (InvalidOperation, ValueError):
        raise InputError(field, f"not an integer: {raw!r}") from None
    if not d.is_finite() or d != d.to_integral_value() or abs(d) >= Decimal(2) ** 256:
        raise InputError(field, f"{raw!r} is not an exact integer below 2^256")
    return int(d)


def parse_arg(raw: Any, item: dict[str, Any], field: str) -> Any:
    """A string (or, inside JSON, a value) to what eth-abi encodes for the ABI input ``item``.

    Integers as in :func:`parse_int`; ``address`` checksummed or not; ``bool`` true/false;
    ``bytesN``/``bytes`` hex; tuples and arrays as JSON arrays (``'[1, "0xabc…", true]'``).
    """
    typ: str = item["type"]
    if typ.endswith("]"):
        items = _json_list(raw, field)
        inner = {**item, "type": typ[: typ.rindex("[")]}
        return [parse_arg(x, inner, f"{field}[{k}]") for k, x in enumerate(items)]
    if typ == "tuple":
        items = _json_list(raw, field)
        comps = item["components"]
        if len(items) != len(comps):
            raise InputError(field, f"a tuple of {len(comps)} values, got {len(items)}")
        return tuple(parse_arg(x, c, f"{field}.{c['name']}") for x, c in zip(items, comps, strict=True))
    text = str(raw).strip() if not isinstance(raw, bool) else raw
    if typ.startswith(("uint", "int")):
        v = parse_int(str(text), field)
        bits = int(typ.lstrip("uint") or 256)
        lo, hi = (0, 2**bits) if typ.startswith("uint") else (-(2 ** (bits - 1)), 2 ** (bits - 1))
        if not lo <= v < hi:
            raise InputError(field, f"{raw!r} does not fit a {typ}")
        return v
    if typ == "address":
        if not isinstance(text, str) or not is_address(text):
            raise InputError(field, f"not an address: {raw!r}")
        return to_checksum_address(text)
    if typ == "bool":
        if isinstance(text, bool):
            return text
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise InputError(field, f"not a bool: {raw!r} (true or false)")
    if typ.startswith("bytes"):
        try:
            data = bytes.fromhex(str(text).removeprefix("0x"))
        except ValueError:
            raise InputError(field, f"not hex: {raw!r}") from None
        if typ != "bytes" and len(data) != int(typ[5:]):
            raise InputError(field, f"{typ} needs {typ[5:]} bytes, got {len(data)}")
        return data
    if typ == "string":
        return str(text)
    raise InputError(field, f"unsupported ABI type {typ}")


def _json_list(raw: Any, field: str) -> list[Any]:
    if isinstance(raw, list):
        return raw
    try:
        value = json.loads(str(raw))
    except ValueError:
        raise InputError(field, f"expected a JSON array, got {raw!r}") from None
    if not isinstance(value, list):
        raise InputError(field, f"expected a JSON array, got {raw!r}")
    return value


def describe_call(p: Protocol, target: str, data: bytes) -> str:
    """``Contract.function(arg=value, ...)`` for a call to a deployed contract, else the raw calldata."""
    names = [n for n, c in p.c.items() if c.address.lower() == target.lower() and n != "RiskOracle"]
    if not names:
        return f"{target}: 0x{data.hex()}"
    c = p.c[names[0]]
    try:
        fn, args = c.decode_function_input(data)
    except ValueError:
        return f"{names[0]} ({target}): 0x{data.hex()}"
    shown = ", ".join(f"{k}={_show(v)}" for k, v in args.items())
    return f"{names[0]}.{fn.fn_name}({shown})"


def _show(v: Any) -> str:
    if isinstance(v, bytes):
        return "0x" + v.hex()
    if isinstance(v, list | tuple):
        return "(" + ", ".join(_show(x) for x in v) + ")"
    return str(v)


# ---------------------------------------------------------------------- scheduling
def operation_id(calls: Sequence[Call], predecessor: bytes = ZERO32, salt: bytes = ZERO32) -> bytes:
    """``hashOperation`` (one call) or ``hashOperationBatch`` (several), byte for byte."""
    if len(calls) == 1:
        c = calls[0]
        return keccak(encode(["address", "uint256", "bytes", "bytes32", "bytes32"],
                             [c.target, c.value, c.data, predecessor, salt]))  # fmt: skip
    return keccak(encode(["address[]", "uint256[]", "bytes[]", "bytes32", "bytes32"],
                         [[c.target for c in calls], [c.value for c in calls], [c.data for c in calls],
                          predecessor, salt]))  # fmt: skip


def schedule(p: Protocol, key: str, calls: Sequence[Call], *, delay: int | None = None, salt: bytes | None = None,
             predecessor: bytes = ZERO32) -> Operation:  # fmt: skip
    """Schedule ``calls`` (one operation, a batch if several) with ``delay`` (default: the minimum).

    ``salt`` defaults to the latest block's hash, so that scheduling the same change again later is a
    new operation. Returns the operation as the chain recorded it.
    """
    if not calls:
        raise InputError("calls", "nothing to schedule")
    tl = timelock_of(p)
    delay = int(p.call(tl.functions.getMinDelay())) if delay is None else delay
    if salt is None:
        salt = bytes(p.w3.eth.get_block("latest")["hash"])
    if len(calls) == 1:
        c = calls[0]
        fn = tl.functions.schedule(c.target, c.value, c.data, predecessor, salt, delay)
    else:
        fn = tl.functions.scheduleBatch([c.target for c in calls], [c.value for c in calls],
                                        [c.data for c in calls], predecessor, salt, delay)  # fmt: skip
    p.send(fn, key)
    return find_operation(p, "0x" + operation_id(calls, predecessor, salt).hex())


def execute(p: Protocol, key: str, op: Operation) -> None:
    """Execute a ready operation (reverts with TimelockUnexpectedOperationState before its ETA)."""
    tl = timelock_of(p)
    calls = op.calls
    if len(calls) == 1:
        c = calls[0]
        fn = tl.functions.execute(c.target, c.value, c.data, op.predecessor, op.salt)
    else:
        fn = tl.functions.executeBatch([c.target for c in calls], [c.value for c in calls],
                                       [c.data for c in calls], op.predecessor, op.salt)  # fmt: skip
    p.send(fn, key)


def cancel(p: Protocol, key: str, op: Operation) -> None:
    """Cancel a pending operation (canceller role only)."""
    p.send(timelock_of(p).functions.cancel(op.id), key)


# ---------------------------------------------------------------------- listing
def operations(p: Protocol) -> list[Operation]:
    """Every operation ever scheduled on the deployment's timelock, oldest first, with its state."""
    tl = timelock_of(p)
    start = p.deployment.deploy_block
    scheduled = tl.events.CallScheduled().get_logs(from_block=start)
    salts = {bytes(e["args"]["id"]): bytes(e["args"]["salt"]) for e in tl.events.CallSalt().get_logs(from_block=start)}
    cancelled = {bytes(e["args"]["id"]) for e in tl.events.Cancelled().get_logs(from_block=start)}
    grouped: dict[bytes, list[Any]] = {}
    for e in scheduled:
        grouped.setdefault(bytes(e["args"]["id"]), []).append(e)
    ops = []
    for op_id, events in grouped.items():
        events.sort(key=lambda e: int(e["args"]["index"]))
        a = events[0]["args"]
        calls = tuple(Call(_name_at(p, e["args"]["target"]), e["args"]["target"], bytes(e["args"]["data"]),
                           int(e["args"]["value"])) for e in events)  # fmt: skip
        state = OpState(int(p.call(tl.functions.getOperationState(op_id))))
        eta = int(p.call(tl.functions.getTimestamp(op_id)))
        ops.append(Operation(op_id, calls, bytes(a["predecessor"]), salts.get(op_id, ZERO32), int(a["delay"]),
                             int(events[0]["blockNumber"]), state, eta,
                             cancelled=op_id in cancelled and state == OpState.UNSET))  # fmt: skip
    ops.sort(key=lambda o: o.scheduled_block)
    return ops


def pending(p: Protocol) -> list[Operation]:
    """The operations that are waiting or ready: scheduled, neither executed nor cancelled."""
    return [o for o in operations(p) if o.state in (OpState.WAITING, OpState.READY)]


def find_operation(p: Protocol, op_id: str) -> Operation:
    """The operation with this id (``0x`` + 64 hex digits, or a unique prefix of at least 6 digits)."""
    text = op_id.strip().lower().removeprefix("0x")
    if len(text) < 6 or any(ch not in "0123456789abcdef" for ch in text):
        raise InputError("id", f"{op_id!r}: an operation id is hex (at least 6 digits of it)")
    found = [o for o in operations(p) if o.id.hex().startswith(text)]
    if not found:
        raise InputError("id", f"no operation {op_id} on the timelock (see `pmsim admin pending`)")
    if len(found) > 1:
        raise InputError("id", f"{op_id} matches {len(found)} operations: give more digits")
    return found[0]


def _name_at(p: Protocol, address: str) -> str:
    names = [n for n, c in p.c.items() if c.address.lower() == address.lower() and n != "RiskOracle"]
    return names[0] if names else address
