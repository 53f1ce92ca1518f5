"""The devnet run end to end: deploy, fund, trade under engine attestations, crash, liquidate, report.

The engine posts a status root after every hourly price step (as a live engine would, well inside the
protocol's one-hour emergency delay). During the replay of the 2020-03-12 crash the liquidation keeper
(:class:`offchain.keeper.bot.Keeper`, the code ``pmsim keeper`` runs, in this process, with the funded
devnet account ``erin``) reads each published round, verifies it against the on-chain root, starts an
auction for every account below maintenance margin and bids when its profit rule says so; when its
plan is a later second within the hour, the chain is moved to that second. The report shows each
liquidation with the keeper's profit and the time from the breach (the root that showed it) to the
bid, in chain seconds and blocks, the insurance fund's balance over time, bad debt and socialised loss.

Deterministic: a fixed genesis time, one second per block (``anvil_setBlockTimestampInterval``),
warps to each price step, and a seeded market before the crash; the same seed gives the same
report, byte for byte. Money in the report is in USD: every float a figure of at most six decimals
(quote units / 1e6, exact) with no binary noise, the conservation check's balances as exact decimal
strings; fractions and discounts rounded to six decimals beside their exact WAD integers. Gas is per
transaction of each kind (the meaning of the README's gas table), with the count, range and total.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_typing import HexStr
from hexbytes import HexBytes
from web3.logs import DISCARD

from offchain import rules
from offchain.chain.anvil import DEFAULT_KEYS, start_anvil
from offchain.chain.client import Protocol, connect
from offchain.chain.devnet import Devnet, bootstrap
from offchain.chain.eip712 import Order, Signer, sign_order
from offchain.chain.units import SIZE_SCALE, TICK, Kind, value
from offchain.engine.service import Engine, build_engine
from offchain.engine.signer import LocalSigner
from offchain.feeds.service import PriceService
from offchain.feeds.sources import PriceStep, scaled_steps
from offchain.keeper.attest import EngineAttestor
from offchain.keeper.bot import Keeper
from offchain.keeper.config import FeeConfig, KeeperConfig, ProfitConfig
from offchain.keeper.receipts import BidOutcome
from offchain.protocol import WAD
from offchain.risk.fixed_point import from_price_e18

GENESIS = 1_767_225_600  # 2026-01-01T00:00:00Z
USDC = 10**6
U = SIZE_SCALE
ROLES = {"alice": "option writer", "bob": "option buyer", "carol": "leveraged perp long", "dave": "market maker",
         "erin": "liquidator (pmsim keeper)"}  # fmt: skip
FUNDING = {"alice": 150_000, "bob": 60_000, "carol": 40_000, "dave": 400_000, "erin": 1_000_000}
CRASH_START, CRASH_HOURS = 7 * 24, 36  # 2020-03-12 00:00 UTC, through 2020-03-13 12:00 UTC
DRIFT_HOURS = 6
SETUP_STEPS = 3  # Anvil started, protocol compiled and deployed, engine started
STEPS = SETUP_STEPS + 1 + DRIFT_HOURS + 4 + 1 + CRASH_HOURS + 1 + 1  # + fund, drift, trades, snapshot, crash, ...
Progress = Callable[[str], None]
#: What each gas figure is: one whole transaction of that kind (the README's gas table measures the same).
GAS_OPERATIONS = {
    "mint": "test USDC mint (faucet)",
    "approve": "USDC approve",
    "deposit": "deposit of USDC",
    "trade_2_attestations": "trade with its two attestations, both sides opening a position",
    "post_root": "status root post",
    "liquidation_start": "liquidation start with a root proof",
    "liquidation_bid": "liquidation bid",
    "liquidation_cancel": "keeper cancel (replacement transaction)",
}


@dataclass
class Actor:
    name: str
    key: str

    @property
    def address(self) -> str:
        return str(Account.from_key(self.key).address)


@dataclass
class DemoRun:
    """What the run did and saw; ``report()`` is the deterministic document."""

    seed: int
    phases: list[dict[str, Any]] = field(default_factory=list)
    trades: list[dict[str, Any]] = field(default_factory=list)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    gas: dict[str, list[int]] = field(default_factory=dict)
    conservation: dict[str, Any] = field(default_factory=dict)
    auctions: list[dict[str, Any]] = field(default_factory=list)
    liquidations: list[dict[str, Any]] = field(default_factory=list)
    fund: list[dict[str, Any]] = field(default_factory=list)
    losses: dict[str, Any] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        doc = {"seed": self.seed, "roles": ROLES, "trades": self.trades, "rounds": self.rounds,
               "phases": self.phases, "gas": gas_table(self.gas), "conservation": self.conservation,
               "auctions": self.auctions, "liquidations": self.liquidations, "insurance_fund": self.fund,
               "losses": self.losses}  # fmt: skip
        clean: dict[str, Any] = _no_noise(doc)
        return clean


def gas_table(gas: dict[str, list[int]]) -> dict[str, dict[str, Any]]:
    """Per kind of transaction: what it is, how many were mined, the gas of one (mean, rounded half
    up, and the range) and the total, in the order of :data:`GAS_OPERATIONS`."""
    order = [k for k in GAS_OPERATIONS if k in gas] + sorted(k for k in gas if k not in GAS_OPERATIONS)
    out = {}
    for op in order:
        g = gas[op]
        out[op] = {"operation": GAS_OPERATIONS.get(op, op), "transactions": len(g),
                   "gas_per_transaction": (2 * sum(g) + len(g)) // (2 * len(g)), "min": min(g), "max": max(g),
                   "total": sum(g)}  # fmt: skip
    return out


def _no_noise(x: Any) -> Any:
    """Every float rounded to six decimals (the report's figures have no more): its JSON is the short
    decimal, never a binary neighbour such as ``2779.5769999999998``."""
    if isinstance(x, float):
        return float(f"{x:.6f}")
    if isinstance(x, dict):
        return {k: _no_noise(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_no_noise(v) for v in x]
    return x


def usd_text(units: int) -> str:
    """Quote units as an exact USD decimal string: ``2779577000`` -> ``"2779.577000"``."""
    sign, q = ("-" if units < 0 else ""), abs(units)
    return f"{sign}{q // USDC}.{q % USDC:06d}"


class Demo:
    """Drives one run; see :func:`run_demo`."""

    def __init__(self, dev: Devnet, engine: Engine, seed: int, progress: Progress | None = None,
                 workdir: Path | None = None) -> None:  # fmt: skip
        self.dev, self.engine, self.seed = dev, engine, seed
        self.p: Protocol = dev.protocol
        self.actors = {n: Actor(n, DEFAULT_KEYS[i + 1]) for i, n in enumerate(ROLES)}
        self.prices = PriceService(self.p, dev.price_signers, dev.deployer)
        self.keeper = demo_keeper(self.p, self.actors["erin"].key, engine, workdir or engine.state_dir)
        self._hour_start = 0
        self.run = DemoRun(seed)
        self._nonce = 0
        self._progress = progress or (lambda _label: None)
        self._names = {a.address: n for n, a in self.actors.items()}

    # ------------------------------------------------------------------ steps
    def fund(self) -> None:
        usdc = self.p.tokens["USDC"]
        for name, amount in FUNDING.items():
            a = self.actors[name]
            self._gas("mint", self.p.send(usdc.functions.mint(a.address, amount * USDC), self.dev.deployer))
            self._gas("approve", self.p.send(usdc.functions.approve(self.p.vault.address, 2**256 - 1), a.key))
            fn = self.p.vault.functions.deposit(usdc.address, amount * USDC, a.address)
            self._gas("deposit", self.p.send(fn, a.key))
        self._progress("funded the accounts")

    def drift(self, hours: int) -> None:
        """A seeded synthetic market for ``hours`` before the crash, a status root after every hour."""
        spot = self._spot()
        steps = list(scaled_steps("gbm", spot, self.seed, hours))[1:]
        for i, step in enumerate(steps):
            self.prices.run([PriceStep(3600, step.prices)], warp=True)
            self.round(f"drift +{i + 1}h")
            self._progress(f"synthetic market, hour {i + 1} of {hours}")

    def trade(self, maker: str, taker: str, instrument: str, maker_buys: bool, units: float) -> None:
        """A fill at the engine's model mark, each side attested by the engine."""
        ins = self.dev.instruments[instrument]
        state = self.engine.refresh()
        model = self.engine.core.engine(state)
        mark = model.valuation.mark[model.instruments.index_of([ins])[0]]
        price = max(TICK, round(float(mark) * 1000) * TICK)
        size = round(units * 1000) * (U // 1000)
        m, t = self.actors[maker], self.actors[taker]
        m_order = self._order(m, ins, maker_buys, size, price, maker=True)
        t_order = self._order(t, ins, not maker_buys, size, price, maker=False)
        m_att = self.engine.attest_trade(m.address, ins, size if maker_buys else -size, price, "maker")
        t_att = self.engine.attest_trade(t.address, ins, -size if maker_buys else size, price, "taker")
        fn = self.p.exchange.functions.trade(m_order, t_order, size, m_att.proof(), t_att.proof())
        receipt = self.p.send(fn, self.dev.deployer)
        self._gas("trade_2_attestations", receipt)
        self.run.trades.append({"maker": maker, "taker": taker, "instrument": instrument,
                                "side": "buy" if maker_buys else "sell", "size": units,
                                "price": from_price_e18(price), "notional_usd": value(size, price) / USDC})  # fmt: skip
        self._progress(f"{maker} and {taker} traded {instrument}")

    def _order(self, actor: Actor, ins: int, buy: bool, size: int, price: int, *, maker: bool) -> tuple[Any, bytes]:
        self._nonce += 1
        o = Order.own(actor.address, ins, buy, size, price, self._nonce, self.p.now() + 3600, maker=maker)
        return o.as_tuple(), sign_order(self.p.domain("Exchange"), o, Signer(actor.key))

    def round(self, label: str) -> None:
        result = self.engine.run_round()
        if result is None:
            return
        self._gas("post_root", self.p.w3.eth.get_transaction_receipt(HexStr(result.tx)))
        below = [leaf.account for leaf in result.tree.leaves if leaf.margin_equity < leaf.maintenance_margin]
        self.run.rounds.append({"round": result.round, "label": label, "price_round": result.root.price_round,
                                "spot": list(self._spot()), "accounts": len(result.tree.leaves),
                                "below_mm": sorted(self._name(a) for a in below)})  # fmt: skip
        self.run.fund.append({"label": label, "chain_time": _iso(self.p.now()), "balance_usd": self._fund_usd()})

    def crash(self, every: int = 1) -> None:
        """Replay the March 2020 crash's hourly moves from today's prices: a round after every ``every``
        hours, then the keeper starts and bids on what the posted root shows below MM."""
        steps = list(scaled_steps("replay:2020-03", self._spot(), 0, CRASH_START + CRASH_HOURS))
        window = steps[CRASH_START : CRASH_START + CRASH_HOURS + 1]
        base = window[0]
        rel = [PriceStep(s.offset - base.offset, tuple(x * sp / b for x, sp, b in
                         zip(s.prices, self._spot(), base.prices, strict=True))) for s in window[1:]]  # fmt: skip
        for i, chunk in enumerate(_chunks(rel, every)):
            self.prices.run(_shift(chunk, 0), warp=True)
            self._hour_start = self.p.now()
            label = f"crash +{(i + 1) * every}h"
            self.round(label)
            self.liquidate(label)
            self._progress(f"2020-03-12 replay, hour {(i + 1) * every} of {CRASH_HOURS}")

    def liquidate(self, label: str) -> None:
        """The keeper's turn: steps until it has nothing in flight and nothing due before the next hour
        (a bid it plans for a later second of this hour is made then: the chain is moved to it)."""
        k = self.keeper
        n_out, n_bids = len(k.record.outcomes), len(k.record.bids)
        keeper_turn(k, self._hour_start + 3600)
        for o in k.record.outcomes[n_out:]:
            if o.receipt is None or o.status != "mined":
                continue
            self._gas(f"liquidation_{o.pending.kind}", o.receipt)
            if o.pending.kind != "start":
                continue
            [ev] = [dict(e["args"]) for e in
                    self.p.liquidator.events.AuctionStarted().process_receipt(o.receipt, errors=DISCARD)]  # fmt: skip
            self.run.auctions.append({
                "label": label, "chain_time": _iso(self._block_time(o.receipt)),
                "account": self._name(o.pending.account),
                "insolvent": bool(ev["insolvent"]), "mtm_equity_usd": ev["mtmEquity"] / USDC,
                "margin_equity_usd": ev["equity"] / USDC, "mm_usd": ev["maintenanceMargin"] / USDC,
            })  # fmt: skip
        for b in k.record.bids[n_bids:]:
            receipt = self.p.w3.eth.get_transaction_receipt(HexStr(b["tx"]))
            self._record_bid(label, BidOutcome.from_receipt(self.p, receipt), b)

    def _record_bid(self, label: str, o: BidOutcome, mined: dict[str, Any]) -> None:
        self.run.liquidations.append({
            "label": label, "chain_time": _iso(int(self.p.w3.eth.get_block(o.block)["timestamp"])),
            "account": self._name(o.account), "bidder": self._name(o.bidder),
            "fraction": round(o.fraction / WAD, 6), "fraction_wad": str(o.fraction),
            "price_usd": o.price / USDC, "discount": round(o.discount / WAD, 6), "discount_wad": str(o.discount),
            "fee_usd": o.fee / USDC, "fund_draw_usd": o.fund_draw / USDC, "socialised_usd": o.socialised / USDC,
            "unrecovered_usd": o.unrecovered / USDC, "ended": o.ended or "",
            "keeper_profit_usd": mined["profit"] / USDC, "keeper_unwind_usd": mined["unwind"] / USDC,
            "keeper_gas_usd": mined["gas"] / USDC, "breach_to_bid_s": mined["breach_to_bid_s"],
            "breach_to_bid_blocks": mined["breach_to_bid_blocks"],
        })  # fmt: skip
        self.run.fund.append({"label": f"{label}, after a bid on {self._name(o.account)}",
                              "chain_time": _iso(int(self.p.w3.eth.get_block(o.block)["timestamp"])),
                              "balance_usd": self._fund_usd()})  # fmt: skip

    def snapshot(self, label: str) -> None:
        state = self.engine.refresh()
        addresses, result = self.engine.core.compute_all(state)
        rows = {}
        for name, actor in self.actors.items():
            i = addresses.index(actor.address)
            m = result.account(i)
            acct = state.accounts[actor.address]
            rows[name] = {"cash_usd": acct.cash / USDC, "positions": len(acct.positions),
                          "margin_equity": round(m.margin_equity, 2), "im": round(m.im, 2), "mm": round(m.mm, 2),
                          "standard_margin": round(m.standard_margin, 2),
                          "status": "below MM" if m.margin_equity < m.mm else
                          "below IM" if m.margin_equity < m.im else "ok"}  # fmt: skip
        self.run.phases.append({"label": label, "spot": list(self._spot()), "chain_time": state.timestamp,
                                "accounts": rows})  # fmt: skip
        self._progress(f"margin snapshot {label}")

    def check_conservation(self) -> None:
        """I-1: the vault's USDC equals Σ cash − Σ cost basis − Σ funding not yet settled, over every
        account, cash net of the socialised loss not yet charged (``Vault.cashOf``): exactly while no
        loss was socialised, else up to the loss charges' rounding dust (one unit per account at most,
        in the vault's favour, I-1b). I-22: bad debt = fund draws + socialised loss (+ unrecovered,
        never silent)."""
        state = self.engine.refresh()
        held = int(self.p.tokens["USDC"].functions.balanceOf(self.p.vault.address).call())
        books = 0
        for a in state.accounts.values():
            books += a.effective_cash(state.loss_index)
            for iid, pos in a.positions.items():
                books -= pos.cost_basis
                ins = state.instruments[iid]
                if ins.kind == Kind.PERP:
                    books -= rules.funding_payment(pos.size, ins.cumulative_funding, pos.funding_snapshot)
        dust = held - books
        holds = dust == 0 if state.loss_index == 0 else 0 <= dust <= len(state.accounts)
        self.run.conservation = {"vault_usdc_usd": usd_text(held), "books_usd": usd_text(books), "holds": holds,
                                 "rounding_dust_usd": usd_text(dust), "rounding_dust_units": dust,
                                 "accounts": len(state.accounts)}  # fmt: skip
        liq = self.run.liquidations
        bad_debt = sum(-_units(r["price_usd"]) for r in liq if r["price_usd"] < 0)
        draws = sum(_units(r["fund_draw_usd"]) for r in liq)
        social = sum(_units(r["socialised_usd"]) for r in liq)
        lost = sum(_units(r["unrecovered_usd"]) for r in liq)
        self.run.losses = {
            "bad_debt_usd": bad_debt / USDC, "fund_draws_usd": draws / USDC, "socialised_usd": social / USDC,
            "unrecovered_usd": lost / USDC, "fees_to_fund_usd": sum(_units(r["fee_usd"]) for r in liq) / USDC,
            "bad_debt_equals_draws_plus_socialised": bad_debt == draws + social + lost,
            "loss_index": str(state.loss_index), "explanation": self._explain(bad_debt, draws, social),
        }  # fmt: skip
        self._progress("checked conservation")

    def _explain(self, bad_debt: int, draws: int, social: int) -> str:
        """Why bad debt and socialised loss are what they are, with the figures that decide it."""
        if not self.run.liquidations:
            return "no account fell below its maintenance margin: nothing was liquidated"
        if bad_debt == 0:
            return ("every auction was solvent: with a status root after every hourly step the keeper caught each "
                    "account below its maintenance margin before its mark-to-market equity went negative, so the "
                    "insurance fund paid nothing and no loss was socialised")  # fmt: skip
        spots = [r["spot"][0] for r in self.run.rounds]
        drops = [(b / a - 1, r["label"]) for a, b, r in zip(spots, spots[1:], self.run.rounds[1:], strict=False)]
        worst, when = min(drops)
        bad = [a for a in self.run.auctions if a["insolvent"]]
        who = ", ".join(f"{a['account']} at {a['label']} (mark-to-market {a['mtm_equity_usd']:,.2f} USD)" for a in bad)
        text = (f"{len(bad)} auction(s) started insolvent: {who}. The replay moves in hourly steps and BTC fell "
                f"{-worst:.1%} in the single hour to {when}, more than the maintenance margin left on a leveraged "
                "long that earlier partial liquidations had restored only to its buffer margin (MM plus 15 % of its "
                "distance); between two observations no bidder can act. ")  # fmt: skip
        if social == 0:
            return text + f"The insurance fund covered the whole deficit ({draws / USDC:,.2f} USD)."
        return text + (f"The insurance fund, fed so far only by its 25 % share of trading fees and by liquidation "
                       f"fees, paid {draws / USDC:,.2f} USD; the remaining {social / USDC:,.2f} USD was socialised "
                       "over positive quote balances through the loss index (attestations bind to it).")  # fmt: skip

    # ------------------------------------------------------------------ helpers
    def _spot(self) -> tuple[float, ...]:
        latest = int(self.p.feed.functions.latestRound().call()[0])
        n = len(self.p.deployment.underlyings)
        return tuple(from_price_e18(int(self.p.feed.functions.priceAt(latest, i).call())) for i in range(n))

    def _gas(self, op: str, receipt: Any) -> None:
        self.run.gas.setdefault(op, []).append(int(receipt["gasUsed"]))

    def _name(self, address: str) -> str:
        return self._names.get(address, address)

    def _fund_usd(self) -> float:
        return int(self.p.vault.functions.cashOf(self.p.fund.address).call()) / USDC

    def _block_time(self, receipt: Any) -> int:
        return int(self.p.w3.eth.get_block(receipt["blockNumber"])["timestamp"])


def _iso(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _units(usd: float) -> int:
    """Back to quote units (the report's USD figures are exact quote units / 1e6)."""
    return round(usd * USDC)


def _shift(steps: list[PriceStep], base: int) -> list[PriceStep]:
    first = steps[0].offset if steps else 0
    return [PriceStep(s.offset - first + base + 3600, s.prices) for s in steps]


def _chunks(items: list[PriceStep], n: int) -> Iterator[list[PriceStep]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def run_demo(seed: int, workdir: Path | None = None, progress: Progress | None = None) -> DemoRun:
    """Run the whole scenario on a fresh Anvil and return what happened; ``progress`` is called with a
    label after each of the :data:`STEPS` steps (the first :data:`SETUP_STEPS` are the set-up's)."""
    say = progress or (lambda _label: None)
    with start_anvil(timestamp=GENESIS) as node, tempfile.TemporaryDirectory() as tmp:
        say("started Anvil")
        w3 = connect(node.url)
        w3.provider.make_request("anvil_setBlockTimestampInterval", [1])  # type: ignore[arg-type]
        dev = bootstrap(w3, DEFAULT_KEYS[0], rpc_url=node.url)
        say("compiled and deployed the protocol")
        signers = [LocalSigner(s._key.to_bytes(), dev.protocol.domain("RiskOracle")) for s in dev.risk_signers]
        engine = build_engine(dev.protocol, signers, DEFAULT_KEYS[0], workdir or Path(tmp))
        say("started the risk engine")
        demo = Demo(dev, engine, seed, progress, Path(tmp))
        demo.fund()
        demo.drift(DRIFT_HOURS)
        demo.trade("alice", "bob", "BTC-C60K", False, 4.0)  # Alice writes calls to Bob
        demo.trade("dave", "bob", "BTC-P50K", False, 2.0)  # Bob buys puts from the market maker
        demo.trade("dave", "carol", "BTC-PERP", False, 3.0)  # Carol goes long 3 BTC on 40k
        demo.trade("dave", "alice", "ETH-PERP", True, 20.0)  # Alice shorts ETH against the maker
        demo.round("after trading")
        demo.snapshot("before the crash")
        demo.crash()
        demo.snapshot("after the crash")
        demo.check_conservation()
        return demo.run


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


def demo_keeper(p: Protocol, key: str, engine: Engine, workdir: Path) -> Keeper:
    """The keeper as ``pmsim keeper`` runs it, reading the engine's published rounds from disk and asking
    it for bid attestations in this process; a fixed wall clock (an automining chain never leaves a
    transaction waiting, so nothing is replaced) keeps the run deterministic."""
    cfg = KeeperConfig(rpc_url=p.deployment.rpc_url, engine_url=None, rounds_dir=engine.state_dir / "rounds",
                       state_file=workdir / "keeper" / "pending.json", health_port=None,
                       fees=FeeConfig(replace_after_s=3600.0), profit=ProfitConfig(landing_s=1)).validate()  # fmt: skip
    return Keeper(p, key, cfg, EngineAttestor(engine), clock=lambda: 0.0)


def write_report(run: DemoRun, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run.report(), indent=2, sort_keys=True))
    return path
