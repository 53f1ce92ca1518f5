"""Integrator tools: ``pmsim decode-error``, ``pmsim faucet``, ``pmsim signers``."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from offchain.errors import InputError

DEPLOYMENT = Path("deployments/local.json")
DeploymentOpt = Annotated[Path, typer.Option(help="deployment file written by `pmsim deploy` or `pmsim devnet up`")]
RpcOpt = Annotated[str | None, typer.Option(help="RPC URL (default: the deployment's)")]

# Solidity's two built-in reverts, beside the custom errors of build/errors.json.
ERROR_STRING = "0x08c379a0"  # Error(string): require(cond, "...") and revert("...")
PANIC = "0x4e487b71"  # Panic(uint256)
PANIC_CODES = {
    0x00: "generic compiler panic",
    0x01: "assert failed",
    0x11: "arithmetic overflow or underflow",
    0x12: "division or modulo by zero",
    0x21: "conversion to an invalid enum value",
    0x22: "incorrectly encoded storage byte array",
    0x31: "pop() on an empty array",
    0x32: "array index out of bounds",
    0x41: "out of memory (allocation too large)",
    0x51: "call to a zero-initialised internal function",
}
_CAST_DATA = re.compile(r'data:\s*"?(0x[0-9a-fA-F]*)')
_CAST_CUSTOM = re.compile(r"custom error (0x[0-9a-fA-F]{8})(?::\s*(?:0x)?([0-9a-fA-F]*))?")
_HEX = re.compile(r"(?:0x)?([0-9a-fA-F]*)")


def revert_bytes(text: str) -> bytes:
    """Revert data from what a user has at hand: ``0x…`` hex, or a whole ``cast`` error message
    (``… custom error 0x118cdaa7: 0000…, data: "0x118cdaa7…"``)."""
    text = text.strip()
    found = _CAST_DATA.search(text)
    if found:
        text = found.group(1)
    else:
        custom = _CAST_CUSTOM.search(text)
        if custom:
            text = custom.group(1) + (custom.group(2) or "")
    m = _HEX.fullmatch(text)
    if not m or len(m.group(1)) % 2:
        raise InputError("data", f"expected hex revert data such as 0x118cdaa7…, got {text[:80]!r}")
    raw = bytes.fromhex(m.group(1))
    if len(raw) < 4:
        raise InputError("data", f"{len(raw)} bytes: revert data starts with a 4-byte selector")
    return raw


def decode_revert(raw: bytes, table: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Decode revert data with the error table of the build (see :func:`offchain.chain.build.error_table`).

    Returns ``selector``, ``name``, ``signature``, ``args`` (``[{"name", "type", "value"}]``),
    ``contracts`` (whose ABI carries the error) and, for a panic, ``meaning``. An unknown selector
    raises :class:`InputError` naming ``data``; a known selector whose arguments do not decode keeps
    its name with ``args`` empty and ``note`` saying so.
    """
    from eth_abi import decode
    from eth_abi.exceptions import DecodingError

    from offchain.chain.build import abi_signature, abi_type

    selector = "0x" + raw[:4].hex()
    if selector == ERROR_STRING:
        entry: dict[str, Any] = {"name": "Error", "inputs": [{"name": "message", "type": "string"}], "abis": []}
    elif selector == PANIC:
        entry = {"name": "Panic", "inputs": [{"name": "code", "type": "uint256"}], "abis": []}
    elif selector in table:
        entry = table[selector]
    else:
        raise InputError(
            "data",
            f"unknown selector {selector}: not an error of any pmsim contract, of the OpenZeppelin code they "
            "use, Error(string) or Panic(uint256) (all known ones: docs/errors.md). It may come from another "
            "contract (a token, a router): decode it with that contract's ABI, "
            "e.g. `cast decode-error --sig 'Name(types)' 0x…`",
        )
    sig = abi_signature(entry)
    contracts = sorted({w.rsplit(":", 1)[-1] for w in entry.get("abis", [])})
    out: dict[str, Any] = {"selector": selector, "name": entry["name"], "signature": sig, "contracts": contracts,
                           "args": []}  # fmt: skip
    types = [abi_type(i) for i in entry["inputs"]]
    try:
        values = decode(types, raw[4:])
    except (DecodingError, ValueError, OverflowError) as exc:
        out["note"] = f"arguments do not decode as {sig}: {exc}"
        return out
    for item, typ, value in zip(entry["inputs"], types, values, strict=True):
        out["args"].append({"name": item.get("name", ""), "type": typ, "value": _plain(value, typ)})
    if entry["name"] == "Panic":
        out["meaning"] = PANIC_CODES.get(int(values[0]), "unknown panic code")
    return out


def _plain(value: Any, typ: str = "") -> Any:
    """JSON-friendly values: addresses checksummed, bytes as 0x-hex, tuples and arrays as lists."""
    from eth_utils import to_checksum_address

    if typ == "address" and isinstance(value, str):
        return to_checksum_address(value)
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def decode_error(
    data: Annotated[
        str | None, typer.Argument(help="revert data (0x…), a whole `cast` error message, or - to read stdin")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the decoded error as JSON")] = False,
    markdown: Annotated[bool, typer.Option(help="print the whole selector table (docs/errors.md) instead")] = False,
) -> None:
    """Decode a revert (selector and arguments) with every project ABI, OpenZeppelin errors included."""
    from offchain.chain.build import errors_markdown, load_error_table

    table = load_error_table()
    if markdown:
        typer.echo(errors_markdown(table), nl=False)
        return
    if data is None:
        raise InputError("data", "pass the revert data (0x…), or --markdown for the whole table")
    if data == "-":
        data = sys.stdin.read()
    decoded = decode_revert(revert_bytes(data), table)
    if as_json:
        typer.echo(json.dumps(decoded, indent=2))
        return
    args = ", ".join(f"{a['name'] or a['type']}={a['value']}" for a in decoded["args"])
    typer.echo(f"{decoded['name']}({args})")  # plain lines (no wrapping): easy to grep and pipe
    typer.echo(f"  selector {decoded['selector']} = {decoded['signature']}")
    if decoded["contracts"]:
        typer.echo(f"  in the ABI of {', '.join(decoded['contracts'])}")
    for key in ("meaning", "note"):
        if key in decoded:
            typer.echo(f"  {key}: {decoded[key]}")


FAUCET_DEFAULTS = {"USDC": "100000", "WBTC": "1", "WETH": "10"}


def faucet(
    address: Annotated[str, typer.Argument(help="account that receives the tokens")],
    token: Annotated[str, typer.Option(help="USDC, WBTC or WETH (the deployment's mock tokens)")] = "USDC",
    amount: Annotated[
        str | None, typer.Option(help="human units, e.g. 2500.5 (default: 100000 USDC, 1 WBTC, 10 WETH)")
    ] = None,
    deployment: DeploymentOpt = DEPLOYMENT,
    rpc: RpcOpt = None,
    key: Annotated[
        str | None, typer.Option(envvar="PMSIM_FAUCET_KEY", help="pays the gas (default: Anvil key 9)")
    ] = None,
) -> None:
    """Mint a devnet's mock tokens (USDC, WBTC, WETH) to an address; their `mint` is open to anyone."""
    from eth_utils import is_address, to_checksum_address

    from offchain.chain.anvil import DEFAULT_KEYS
    from offchain.chain.client import Deployment, Protocol, connect
    from offchain.chain.units import token_units

    if not is_address(address):
        raise InputError("address", f"not an address: {address!r}")
    to = to_checksum_address(address)
    dep = Deployment.load(deployment)
    symbol = token.upper()
    if symbol not in dep.tokens:
        raise InputError("token", f"unknown token {token!r}; this deployment has {', '.join(dep.tokens)}")
    info = dep.tokens[symbol]
    human = amount if amount is not None else FAUCET_DEFAULTS.get(symbol, "1")
    units = token_units(human, info.decimals, "amount")
    proto = Protocol(connect(rpc or dep.rpc_url), dep)
    erc20 = proto.tokens[symbol]
    proto.send(erc20.functions.mint(to, units), key or DEFAULT_KEYS[9])
    balance = int(proto.call(erc20.functions.balanceOf(to)))
    typer.echo(f"minted {human} {symbol} to {to}; balance {_human(balance, info.decimals)} {symbol}")
    typer.echo(f"  token {info.address} ({info.decimals} decimals)")


def _human(units: int, decimals: int) -> str:
    from decimal import Decimal

    return f"{Decimal(units).scaleb(-decimals).normalize():f}"


def signers(
    deployment: DeploymentOpt = DEPLOYMENT,
    rpc: RpcOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """List the registered signers and the quorum of the RiskOracle (at the Vault) and the PriceFeed."""
    from offchain.chain.client import Deployment, Protocol, connect

    dep = Deployment.load(deployment)
    proto = Protocol(connect(rpc or dep.rpc_url), dep)
    out: dict[str, dict[str, Any]] = {}
    for name in ("RiskOracle", "PriceFeed"):
        fns = proto.c[name].functions
        out[name] = {"address": proto.c[name].address, "quorum": int(proto.call(fns.quorum())),
                     "signers": [str(a) for a in proto.call(fns.signers())]}  # fmt: skip
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    for name, info in out.items():
        n = len(info["signers"])
        typer.echo(f"{name} {info['address']}: quorum {info['quorum']} of {n} signers")
        for a in info["signers"]:
            typer.echo(f"  {a}")
