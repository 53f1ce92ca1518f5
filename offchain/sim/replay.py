"""The 2020-03-12 crash replayed on Anvil against leveraged accounts, liquidated by the keeper.

Set-up: a fresh devnet; traders each deposit cash and open a BTC or ETH perpetual long at a stated
leverage against a market maker, every fill attested by the engine (so each opens above its initial
margin). Then the vendored hourly closes (``data/market/*_1h_2020-03.csv``, rescaled to the devnet's
spot like ``pmsim prices --source replay:2020-03``) move the feed one hour at a time; after every step
the engine posts a status root and the keeper (:class:`offchain.keeper.bot.Keeper`, in this process)
starts and bids on what the root shows below maintenance margin (:func:`keeper_turn`).

Each account ends in one of four states, with the figures that decide it:

* ``never breached``: margin equity ≥ MM at every hourly observation;
* ``saved``: it breached MM and every auction of it was solvent (no bad debt);
* ``not saved (gap)``: an auction started insolvent although, after the keeper's turn the hour before,
  the account was at or above MM — the price went from above MM to insolvent within one hourly step,
  faster than any bidder can act between two observations;
* ``missed``: an auction started insolvent after an hour that ended with the account below MM while
  still solvent — a keeper failure (the test asserts there is none).

Deterministic: fixed genesis, one second per block, warps to each hour.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_utils import keccak
from hexbytes import HexBytes
from web3.logs import DISCARD

from offchain.chain.anvil import DEFAULT_KEYS, start_anvil
from offchain.chain.client import Protocol, connect
from offchain.chain.devnet import bootstrap
from offchain.chain.eip712 import Order, Signer, sign_order
from offchain.chain.merkle import StatusLeaf
from offchain.chain.units import LOT, SIZE_SCALE, price_to_tick
from offchain.engine.service import Engine, build_engine
from offchain.engine.signer import LocalSigner
from offchain.errors import InputError
from offchain.feeds.service import PriceService
from offchain.feeds.sources import PriceStep, scaled_steps
from offchain.keeper.attest import EngineAttestor
from offchain.keeper.bot import Keeper
from offchain.keeper.config import FeeConfig, KeeperConfig, ProfitConfig

CRASH_START = 7 * 24  # hourly step of 2020-03-12 00:00 UTC in the vendored file (starts 2020-03-05)
SHORT = (CRASH_START, 12)  # 2020-03-12 00:00 -> 12:00: a gradual slide, then BTC -13.7 % in one hour
FULL = (CRASH_START, 36)  # through 2020-03-13 12:00: adds -16.5 % and -12 % hours
UNDERLYINGS = ("BTC", "ETH")
GENESIS = 1_767_225_600  # 2026-01-01T00:00:00Z
USDC = 10**6


@dataclass(frozen=True)
class Trader:
    """A leveraged perp long: ``deposit`` USD of cash, notional ``leverage × deposit`` at the open."""

    name: str
    underlying: str
    leverage: float
    deposit: int = 100_000


SHORT_BOOK = (Trader("btc-3x", "BTC", 3.0), Trader("btc-4.5x", "BTC", 4.5), Trader("btc-6x", "BTC", 6.0),
              Trader("eth-2.5x", "ETH", 2.5), Trader("eth-4x", "ETH", 4.0))  # fmt: skip
FULL_BOOK = (*SHORT_BOOK, Trader("btc-2x", "BTC", 2.0), Trader("btc-5x", "BTC", 5.0), Trader("btc-5.5x", "BTC", 5.5),
             Trader("eth-3x", "ETH", 3.0), Trader("eth-4.5x", "ETH", 4.5))  # fmt: skip
Progress = Callable[[str], None]


@dataclass
class ReplayRun:
    """Everything observed; :meth:`report` is the deterministic document."""

    start_hour: int
    hours: int
    traders: tuple[Trader, ...]
    hourly: list[dict[str, Any]] = field(default_factory=list)  # per hour: spot, move, leaves before/after
    auctions: list[dict[str, Any]] = field(default_factory=list)
    bids: list[dict[str, Any]] = field(default_factory=list)
    accounts: dict[str, str] = field(default_factory=dict)  # name -> address

    def report(self) -> dict[str, Any]:
        rows = [self._account(t) for t in self.traders]
        counts = {s: sum(1 for r in rows if r["status"] == s) for s in ("never breached", "saved",
                                                                         "not saved (gap)", "missed")}  # fmt: skip
        keeper = [b for b in self.bids if b["first"]]
        return {
            "window": {"from": _label(self.start_hour, 0), "hours": self.hours,
                       "start_step": self.start_hour, "data": "data/market/{btc,eth}_usd_1h_2020-03.csv"},
            "accounts": rows,
            "summary": {**counts, "accounts": len(rows), "breached": len(rows) - counts["never breached"],
                        "bad_debt_usd": sum(r["bad_debt_usd"] for r in rows),
                        "keeper_bids": len(self.bids), "keeper_profit_usd": sum(b["profit_usd"] for b in self.bids),
                        "first_bid_after_breach_s_max": max((b["breach_to_bid_s"] for b in keeper), default=None),
                        "first_bid_after_breach_blocks_max": max((b["breach_to_bid_blocks"] for b in keeper),
                                                                 default=None)},
            "hourly": self.hourly,
            "auctions": self.auctions,
            "bids": self.bids,
        }

    def _account(self, t: Trader) -> dict[str, Any]:
        name = t.name
        obs = [(h["label"], h["move"], h["before"].get(name), h["after"].get(name)) for h in self.hourly]
        breaches = [i for i, (_, _, b, _) in enumerate(obs) if b is not None and b["equity"] < b["mm"]]
        auctions = [a for a in self.auctions if a["account"] == name]
        bids = [b for b in self.bids if b["account"] == name]
        bad_debt = round(sum(-b["price_usd"] for b in bids if b["price_usd"] < 0), 6)
        row: dict[str, Any] = {"account": name, "address": self.accounts[name], "underlying": t.underlying,
                               "leverage": t.leverage, "deposit_usd": t.deposit, "auctions": len(auctions),
                               "bids": len(bids), "bad_debt_usd": bad_debt,
                               "first_breach": obs[breaches[0]][0] if breaches else None}  # fmt: skip
        insolvent = [a for a in auctions if a["insolvent"]]
        if not breaches and not auctions:
            return {**row, "status": "never breached", "reason": "margin equity stayed at or above MM every hour"}
        if not insolvent:
            last = obs[-1][3]
            if last is not None and last["equity"] < last["mm"] and last["mtm"] > 0:
                return {**row, "status": "missed", "reason": (
                    f"still below MM and solvent after the keeper's last turn (equity {last['equity']:,.2f}, "
                    f"MM {last['mm']:,.2f} USD)")}  # fmt: skip
            first = [b for b in bids if b["first"]]
            delay = (f"; first bid {first[0]['breach_to_bid_s']} s ({first[0]['breach_to_bid_blocks']} blocks) "
                     "after the root that showed the breach") if first else ""  # fmt: skip
            return {**row, "status": "saved",
                    "reason": f"every auction solvent: liquidated before mark-to-market equity went negative{delay}"}
        a = insolvent[0]
        i = next(j for j, o in enumerate(obs) if o[0] == a["label"])
        prev = obs[i - 1][3] if i > 0 else None
        label, move = obs[i][0], obs[i][1][UNDERLYINGS.index(t.underlying)]
        if prev is None or prev["equity"] >= prev["mm"]:
            where = "at the start" if prev is None else (
                f"after the keeper's turn at {obs[i - 1][0]} margin equity {prev['equity']:,.2f} ≥ MM "
                f"{prev['mm']:,.2f} USD")  # fmt: skip
            return {**row, "status": "not saved (gap)", "reason": (
                f"{where}; at {label} mark-to-market equity {a['mtm_equity_usd']:,.2f} USD < 0: {t.underlying} "
                f"moved {move:+.1%} in that single hourly step, from above MM to insolvent between two "
                "observations")}  # fmt: skip
        return {**row, "status": "missed", "reason": (
            f"below MM and solvent after the keeper's turn at {obs[i - 1][0]} (equity {prev['equity']:,.2f}, MM "
            f"{prev['mm']:,.2f}, mark-to-market {prev['mtm']:,.2f} USD), insolvent at {label}")}  # fmt: skip


class Replay:
    """Drives one replay; see :func:`run_replay`."""

    def __init__(self, p: Protocol, engine: Engine, dev_price: Any, deployer: str, instruments: dict[str, int],
                 run: ReplayRun, workdir: Path, progress: Progress) -> None:  # fmt: skip
        self.p, self.engine, self.deployer, self.instruments, self.run = p, engine, deployer, instruments, run
        self.prices = PriceService(p, dev_price, deployer)
        self.progress = progress
        self.maker = DEFAULT_KEYS[1]
        self.keeper_key = DEFAULT_KEYS[2]
        # one key per trader from a public seed (devnet only), given gas money
        self.keys = {t.name: "0x" + keccak(text=f"pmsim-replay-{t.name}").hex() for t in run.traders}
        if len(self.keys) != len(run.traders):
            raise InputError("traders", "trader names must be distinct")
        for k in self.keys.values():
            p.w3.provider.make_request("anvil_setBalance", [str(Account.from_key(k).address), hex(10**21)])  # type: ignore[arg-type]
        self.names = {str(Account.from_key(k).address): n for n, k in self.keys.items()}
        run.accounts = {n: str(Account.from_key(k).address) for n, k in self.keys.items()}
        self.keeper = devnet_keeper(p, self.keeper_key, engine, workdir)
        self._nonce = 0

    def fund(self, key: str, usd: int) -> None:
        usdc, me = self.p.tokens["USDC"], str(Account.from_key(key).address)
        self.p.send(usdc.functions.mint(me, usd * USDC), self.deployer)
        self.p.send(usdc.functions.approve(self.p.vault.address, 2**256 - 1), key)
        self.p.send(self.p.vault.functions.deposit(usdc.address, usd * USDC, me), key)

    def open(self, t: Trader) -> None:
        """The trader's long against the maker at the engine's mark, both sides attested."""
        iid = self.instruments[f"{t.underlying}-PERP"]
        state = self.engine.refresh()
        model = self.engine.core.engine(state)
        mark = float(model.valuation.mark[model.instruments.index_of([iid])[0]])
        price = price_to_tick(mark)
        size = int(t.leverage * t.deposit / mark * SIZE_SCALE) // LOT * LOT
        key = self.keys[t.name]
        maker = self._order(self.maker, iid, False, size, price, maker=True)
        taker = self._order(key, iid, True, size, price, maker=False)
        m_att = self.engine.attest_trade(maker[0][0], iid, -size, price, "maker")
        t_att = self.engine.attest_trade(taker[0][0], iid, size, price, "taker")
        self.p.send(self.p.exchange.functions.trade(maker, taker, size, m_att.proof(), t_att.proof()), self.deployer)

    def _order(self, key: str, iid: int, buy: bool, size: int, price: int, *, maker: bool) -> tuple[Any, bytes]:
        self._nonce += 1
        o = Order.own(str(Account.from_key(key).address), iid, buy, size, price, self._nonce, self.p.now() + 3600,
                      maker=maker)  # fmt: skip
        return o.as_tuple(), sign_order(self.p.domain("Exchange"), o, Signer(key))

    def hours(self) -> None:
        run = self.run
        steps = list(scaled_steps("replay:2020-03", self._spot(), 0, run.start_hour + run.hours))
        window = steps[run.start_hour : run.start_hour + run.hours + 1]
        base, spot0 = window[0].prices, self._spot()
        prev = spot0
        for h, step in enumerate(window[1:], start=1):
            prices = tuple(x * s / b for x, s, b in zip(step.prices, spot0, base, strict=True))
            self.prices.run([PriceStep(3600, prices)], warp=True)
            hour_start = self.p.now()
            label = _label(run.start_hour, h)
            result = self.engine.run_round()
            before = self._leaves(result.tree.leaves if result else [])
            n_out, n_bids = len(self.keeper.record.outcomes), len(self.keeper.record.bids)
            keeper_turn(self.keeper, hour_start + 3600)
            after = self._leaves(self.engine.core.status_leaves(self.engine.refresh()))
            spot = self._spot()
            run.hourly.append({"label": label, "chain_time": _iso(hour_start), "spot": [round(x, 3) for x in spot],
                               "move": [round(b / a - 1, 6) for a, b in zip(prev, spot, strict=True)],
                               "before": before, "after": after})  # fmt: skip
            prev = spot
            self._record(label, n_out, n_bids)
            self.progress(f"2020-03-12 replay, hour {h} of {run.hours}")

    def _record(self, label: str, n_out: int, n_bids: int) -> None:
        k = self.keeper
        for o in k.record.outcomes[n_out:]:
            if o.receipt is None or o.status != "mined" or o.pending.kind != "start":
                continue
            for e in self.p.liquidator.events.AuctionStarted().process_receipt(o.receipt, errors=DISCARD):
                args = e["args"]
                self.run.auctions.append({"label": label, "account": self.names.get(str(args["account"]), "?"),
                                          "insolvent": bool(args["insolvent"]),
                                          "mtm_equity_usd": args["mtmEquity"] / USDC,
                                          "margin_equity_usd": args["equity"] / USDC,
                                          "mm_usd": args["maintenanceMargin"] / USDC})  # fmt: skip
        for b in k.record.bids[n_bids:]:
            self.run.bids.append({"label": label, "account": self.names.get(b["account"], "?"),
                                  "chain_time": _iso(b["chain_time"]), "fraction": round(b["fraction"] / 10**18, 6),
                                  "price_usd": b["price"] / USDC, "fee_usd": b["fee"] / USDC,
                                  "profit_usd": b["profit"] / USDC, "first": b["first"],
                                  "breach_to_bid_s": b["breach_to_bid_s"],
                                  "breach_to_bid_blocks": b["breach_to_bid_blocks"]})  # fmt: skip

    def _leaves(self, leaves: Any) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for leaf in leaves:
            assert isinstance(leaf, StatusLeaf)
            name = self.names.get(leaf.account)
            if name is not None:
                out[name] = {"equity": leaf.margin_equity / USDC, "mtm": leaf.mtm_equity / USDC,
                             "mm": leaf.maintenance_margin / USDC}  # fmt: skip
        return out

    def _spot(self) -> tuple[float, ...]:
        latest = int(self.p.feed.functions.latestRound().call()[0])
        n = len(self.p.deployment.underlyings)
        return tuple(int(self.p.feed.functions.priceAt(latest, i).call()) / 10**18 for i in range(n))


def _label(start_step: int, hour: int) -> str:
    """The historical time of hourly step ``start_step + hour`` of the March 2020 file (UTC)."""
    h = start_step - CRASH_START + hour
    return f"2020-03-{12 + h // 24:02d} {h % 24:02d}:00"


def run_replay(full: bool = False, traders: tuple[Trader, ...] | None = None, window: tuple[int, int] | None = None,
               progress: Progress | None = None) -> ReplayRun:  # fmt: skip
    """Replay the crash (``full``: 36 hours and 10 traders; else 12 hours and 5) on a fresh Anvil."""
    start, hours = window or (FULL if full else SHORT)
    book = traders or (FULL_BOOK if full else SHORT_BOOK)
    say = progress or (lambda _label: None)
    run = ReplayRun(start, hours, book)
    with start_anvil(timestamp=GENESIS) as node, tempfile.TemporaryDirectory() as tmp:
        w3 = connect(node.url)
        w3.provider.make_request("anvil_setBlockTimestampInterval", [1])  # type: ignore[arg-type]
        dev = bootstrap(w3, DEFAULT_KEYS[0], rpc_url=node.url)
        signers = [LocalSigner(s._key.to_bytes(), dev.protocol.domain("RiskOracle")) for s in dev.risk_signers]
        engine = build_engine(dev.protocol, signers, DEFAULT_KEYS[0], Path(tmp) / "engine")
        r = Replay(dev.protocol, engine, dev.price_signers, dev.deployer, dev.instruments, run, Path(tmp), say)
        r.fund(r.maker, 50_000_000)
        r.fund(r.keeper_key, 5_000_000)
        for t in book:
            r.fund(r.keys[t.name], t.deposit)
            r.open(t)
        say(f"opened {len(book)} leveraged longs")
        r.engine.run_round()
        r.hours()
    return run


def keeper_turn(k: Keeper, until: int, passes: int = 64) -> None:
    """Step ``k`` on a devnet until it has nothing in flight and no bid due before chain time
    ``until − 60``. Blocks are mined one per step (automine off meanwhile), so that what the keeper
    sends in one step lands together in the next block, a second later, as on a chain with one-second
    blocks; a bid it plans for a later second is made then (the chain is moved to it)."""
    w3 = k.p.w3

    def rpc(method: str, *params: Any) -> None:
        w3.provider.make_request(method, list(params))  # type: ignore[arg-type]

    rpc("evm_setAutomine", False)
    try:
        for _ in range(passes):  # bounded: each pass sends, settles or moves time forward
            k.step()
            if k.tx.pending:
                rpc("evm_mine")
                for pending in list(k.tx.pending.values()):
                    w3.eth.wait_for_transaction_receipt(HexBytes(pending.tx_hash), timeout=120)
                continue
            due = [p.at for a, p in k.record.plans.items() if p is not None and a in k.watch and p.at > k.now]
            if not due or min(due) >= until - 60:
                break
            rpc("evm_setNextBlockTimestamp", max(k.now + 1, min(due) - k.cfg.profit.landing_s))
            rpc("evm_mine")  # sent then, a bid lands at its planned second
    finally:
        rpc("evm_setAutomine", True)


def devnet_keeper(p: Protocol, key: str, engine: Engine, workdir: Path) -> Keeper:
    """The keeper as ``pmsim keeper`` runs it (:class:`offchain.keeper.bot.Keeper`), reading the engine's
    published rounds from disk and asking it for bid attestations in this process; a fixed wall clock
    (an automining chain never leaves a transaction waiting, so nothing is replaced) keeps the run
    deterministic."""
    cfg = KeeperConfig(rpc_url=p.deployment.rpc_url, engine_url=None, rounds_dir=engine.state_dir / "rounds",
                       state_file=workdir / "keeper" / "pending.json", health_port=None,
                       fees=FeeConfig(replace_after_s=3600.0), profit=ProfitConfig(landing_s=1)).validate()  # fmt: skip
    return Keeper(p, key, cfg, EngineAttestor(engine), clock=lambda: 0.0)


def _iso(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")



def write_report(run: ReplayRun, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run.report(), indent=2, sort_keys=True))
    return path
