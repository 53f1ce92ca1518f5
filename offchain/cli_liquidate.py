"""``pmsim liquidate``: start, bid on and inspect liquidation auctions by hand.

``start`` takes the account's status leaf and Merkle proof from the engine (``GET /liquidatable``),
or rebuilds them from the latest posted round's published leaves (``--round-file``, a
``<state-dir>/rounds/<N>.json`` document or ``GET /round/latest`` saved to a file); ``bid`` asks the
engine for the bidder's attestation (``POST /attest/bid``) and sends ``Liquidator.bid``; ``status``
reads the auction. Amounts are printed in USD; errors name the field at fault.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any

import typer

from offchain.errors import ChainError, InputError

DEPLOYMENT = Path("deployments/local.json")
ENGINE = "http://127.0.0.1:8600"

liquidate_app = typer.Typer(help="Liquidation auctions by hand: start, bid, status.", no_args_is_help=True)

DeploymentOpt = Annotated[Path, typer.Option(help="deployment file written by `pmsim deploy` or `pmsim devnet up`")]
RpcOpt = Annotated[str | None, typer.Option(help="RPC URL (default: the deployment's)")]
EngineOpt = Annotated[str, typer.Option(help="the risk engine's URL", envvar="PMSIM_ENGINE_URL")]
KeyOpt = Annotated[
    str | None,
    typer.Option(help="key that sends the transaction (default: Anvil key 9, devnets only)", envvar="PMSIM_BIDDER_KEY"),
]
AccountArg = Annotated[str, typer.Argument(help="the account to liquidate (address)")]


# ---------------------------------------------------------------------- helpers
def _protocol(deployment: Path, rpc: str | None) -> Any:
    from offchain.chain.client import Deployment, Protocol, connect

    dep = Deployment.load(deployment)
    return Protocol(connect(rpc or dep.rpc_url), dep)


def _account(value: str, field: str = "account") -> str:
    from eth_utils import is_address, to_checksum_address

    if not is_address(value):
        raise InputError(field, f"not an address: {value!r}")
    return str(to_checksum_address(value))


def _key(key: str | None) -> str:
    from offchain.chain.anvil import DEFAULT_KEYS

    return key or DEFAULT_KEYS[9]


def _engine(url: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """A JSON request to the engine; its 4xx answers become errors naming the same field."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url.rstrip("/") + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            doc = json.loads(exc.read())
        except ValueError:
            raise ChainError(f"engine {url}: HTTP {exc.code}") from None
        field = doc.get("field")
        message = str(doc.get("error", ""))
        if field:
            raise InputError(field, message.removeprefix(f"{field}: ")) from None
        raise ChainError(f"engine {url}: {message}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise ChainError(f"engine unreachable at {url}: {exc} (start it with `pmsim devnet up`, or pass --engine, "
                         "or --round-file to rebuild the proof from published leaves)") from None  # fmt: skip


def usd(units: int) -> str:
    """Quote units as USD, exact, with thousands separators."""
    return f"{Decimal(units).scaleb(-6):,.6f}"


def pct(wad: int) -> str:
    """A WAD share as a percentage (four decimals)."""
    return f"{Decimal(wad).scaleb(-16):.4f} %"


def parse_fraction(value: str) -> int:
    """A share of the portfolio in (0, 1] to WAD, exactly (``max`` is handled by the caller)."""
    try:
        d = Decimal(value.strip().rstrip("%")) / (100 if value.strip().endswith("%") else 1)
    except InvalidOperation:
        raise InputError("fraction", f"not a number: {value!r} (a share in (0, 1], a percentage, or max)") from None
    scaled = d.scaleb(18)
    if not d.is_finite() or not 0 < d <= 1 or scaled != scaled.to_integral_value():
        raise InputError("fraction", f"{value!r} must be in (0, 1] with at most 18 decimals")
    return int(scaled)


def parse_price(value: str) -> int:
    """A worst price in USD (negative: the least the bidder is paid) to quote units, exactly."""
    try:
        d = Decimal(value.strip())
    except InvalidOperation:
        raise InputError("max_price", f"not a number: {value!r} (USD; negative in an insolvent auction)") from None
    scaled = d.scaleb(6)
    if not d.is_finite() or scaled != scaled.to_integral_value():
        raise InputError("max_price", f"{value!r} must be a finite USD amount with at most 6 decimals")
    if abs(scaled) >= 10**30:
        raise InputError("max_price", f"{value!r} is too large")
    return int(scaled)


def auction_lines(p: Any, account: str) -> list[str]:
    """The auction's snapshot, current discount, max fraction and a quote for it, as lines."""
    from offchain.engine.liquidation import AuctionView

    liq = p.liquidator.functions
    a = AuctionView.from_tuple(p.call(liq.auctionOf(account)))
    if not a.active:
        return [f"{account}: no auction"]
    fmax = int(p.call(liq.maxFraction(account)))
    price, fee = (int(x) for x in p.call(liq.quote(account, fmax)))
    kind = "insolvent (the insurance fund pays the bidder)" if a.insolvent else "solvent"
    lines = [
        f"auction of {account}: {kind}{', emergency mode' if a.emergency else ''}, version {a.version}, "
        f"started at {a.started_at} (chain time {p.now()})",
        f"  mark-to-market equity {usd(a.mtm_equity)} USD, margin equity {usd(a.equity)} USD",
        f"  maintenance margin {usd(a.maintenance_margin)} USD, buffer margin {usd(a.buffer_margin)} USD",
    ]
    if not a.insolvent:
        lines.append(f"  discount now {pct(int(p.call(liq.discount(account))))} of mark-to-market paid")
    lines.append(f"  max fraction now {pct(fmax)} ({fmax} wad): price {usd(price)} USD, fee {usd(fee)} USD")
    return lines


def proof_from_json(doc: dict[str, Any]) -> tuple[tuple[Any, ...], bytes]:
    """A ``MarginProof`` from the engine's signed-attestation JSON."""
    from dataclasses import fields

    from offchain.chain.eip712 import Attestation

    a = doc["attestation"]
    values: dict[str, Any] = {}
    for f in fields(Attestation):
        v = a[f.name]
        values[f.name] = bytes.fromhex(v[2:]) if f.type == "bytes" else v if f.type == "str" else int(v)
    return Attestation(**values).as_tuple(), bytes.fromhex(doc["signatures"][2:])


# ---------------------------------------------------------------------- commands
@liquidate_app.command("start")
def start(
    account: AccountArg,
    engine: EngineOpt = ENGINE,
    round_file: Annotated[
        Path | None, typer.Option(help="rebuild the proof from a published round document instead of the engine")
    ] = None,
    key: KeyOpt = None,
    deployment: DeploymentOpt = DEPLOYMENT,
    rpc: RpcOpt = None,
) -> None:
    """Start the liquidation of an account below its maintenance margin (proof of the latest root)."""
    from offchain import rules
    from offchain.chain.merkle import StatusTree

    who = _account(account)
    p = _protocol(deployment, rpc)
    if round_file is not None:
        try:
            doc = json.loads(round_file.read_text())
            tree = StatusTree.load(doc["tree"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError("round_file", f"{round_file}: not a published round document ({exc})") from None
        onchain = int(p.call(p.oracle.functions.rootRound()))
        if int(doc.get("round", -1)) != onchain:
            raise InputError("round_file", f"round {doc.get('round')} is not the latest root on chain ({onchain})")
        try:
            leaf = tree.leaf(who)
        except InputError:
            raise InputError("account", f"{who} is not in round {onchain}") from None
        credit = int(p.call(p.vault.functions.depositCredit(who)))
        if not rules.liquidatable(leaf.margin_equity, leaf.maintenance_margin, leaf.credit_checkpoint, credit):
            equity = rules.credited_equity(leaf.margin_equity, leaf.credit_checkpoint, credit)
            raise InputError("account", f"not liquidatable: credited margin equity {usd(equity)} USD is at or above "
                             f"its maintenance margin {usd(leaf.maintenance_margin)} USD")  # fmt: skip
        leaf_tuple, proof = leaf.as_tuple(), tree.proof(who)
    else:
        listed = {e["account"]: e for e in _engine(engine, "/liquidatable")["accounts"]}
        if who not in listed:
            raise InputError("account", f"{who} is not liquidatable now (not in the engine's /liquidatable: healthy, "
                             "already in auction, or the latest root is stale)")  # fmt: skip
        e = listed[who]
        leaf_tuple = (e["leaf"][0], *(int(x) for x in e["leaf"][1:]))
        proof = [bytes.fromhex(x.removeprefix("0x")) for x in e["proof"]]
    receipt = p.send(p.liquidator.functions.start(who, leaf_tuple, proof), _key(key))
    typer.echo(f"started the liquidation of {who} (block {receipt['blockNumber']}, gas {receipt['gasUsed']:,})")
    for line in auction_lines(p, who):
        typer.echo(line)


@liquidate_app.command("bid")
def bid(
    account: AccountArg,
    fraction: Annotated[str, typer.Option(help="share of the portfolio to take: 0.25, 25%, or max")],
    max_price: Annotated[str, typer.Option(help="the most to pay, USD (negative: the least to be paid)")],
    engine: EngineOpt = ENGINE,
    key: KeyOpt = None,
    deployment: DeploymentOpt = DEPLOYMENT,
    rpc: RpcOpt = None,
) -> None:
    """Take a fraction of an auctioned account's whole portfolio, with the engine's bidder attestation."""
    from eth_account import Account

    from offchain.engine.liquidation import AuctionView
    from offchain.keeper.receipts import send_bid

    who = _account(account)
    worst = parse_price(max_price)
    p = _protocol(deployment, rpc)
    sender = _key(key)
    bidder = str(Account.from_key(sender).address)
    if fraction.strip().lower() == "max":
        if not AuctionView.from_tuple(p.call(p.liquidator.functions.auctionOf(who))).active:
            raise InputError("account", f"{who} is not in auction (start it first: pmsim liquidate start)")
        f = int(p.call(p.liquidator.functions.maxFraction(who)))
    else:
        f = parse_fraction(fraction)
    body = {"bidder": bidder, "account": who, "fraction": f"{Decimal(f).scaleb(-18):f}",
            "worst_price": f"{Decimal(worst).scaleb(-6):f}"}  # fmt: skip
    try:
        doc = _engine(engine, "/attest/bid", body)
    except InputError as exc:  # the engine names its own fields; the options are --fraction / --max-price
        raise InputError({"worst_price": "max_price"}.get(exc.field, exc.field),
                         str(exc).removeprefix(f"{exc.field}: ")) from None  # fmt: skip
    o = send_bid(p, sender, who, f, worst, int(doc["version"]), proof_from_json(doc))
    typer.echo(f"bid on {who} by {bidder} (block {o.block}, gas {o.gas:,})")
    typer.echo(f"  fraction taken {pct(o.fraction)} ({o.fraction} wad)")
    if o.price >= 0:
        typer.echo(f"  price paid {usd(o.price)} USD at a discount factor of {pct(o.discount)} of mark-to-market")
    else:
        typer.echo(f"  paid to the bidder {usd(-o.price)} USD (insolvent auction)")
    typer.echo(f"  liquidation fee to the insurance fund {usd(o.fee)} USD")
    typer.echo(f"  insurance fund draw {usd(o.fund_draw)} USD, socialised loss {usd(o.socialised)} USD"
               + (f", unrecovered {usd(o.unrecovered)} USD" if o.unrecovered else ""))  # fmt: skip
    typer.echo(f"  auction {'ended: ' + o.ended if o.ended else 'goes on'}")
    if not o.ended:
        for line in auction_lines(p, who):
            typer.echo(line)


@liquidate_app.command("status")
def status(account: AccountArg, deployment: DeploymentOpt = DEPLOYMENT, rpc: RpcOpt = None) -> None:
    """The auction of an account: snapshot, discount now, max fraction and its quote."""
    p = _protocol(deployment, rpc)
    for line in auction_lines(p, _account(account)):
        typer.echo(line)
