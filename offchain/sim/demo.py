"""The devnet run end to end: deploy, fund, trade under engine attestations, crash, attest, report.

Deterministic: a fixed genesis time, one second per block (``anvil_setBlockTimestampInterval``),
warps to each price step, and a seeded market before the crash; the same seed gives the same
report, byte for byte.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_typing import HexStr

from offchain.chain.anvil import DEFAULT_KEYS, start_anvil
from offchain.chain.client import Protocol, connect
from offchain.chain.devnet import Devnet, bootstrap
from offchain.chain.eip712 import Order, Signer, sign_order
from offchain.chain.units import SIZE_SCALE, TICK, value
from offchain.engine.service import Engine, build_engine
from offchain.engine.signer import LocalSigner
from offchain.feeds.service import PriceService
from offchain.feeds.sources import PriceStep, scaled_steps

GENESIS = 1_767_225_600  # 2026-01-01T00:00:00Z
USDC = 10**6
U = SIZE_SCALE
ROLES = {"alice": "option writer", "bob": "option buyer", "carol": "leveraged perp long", "dave": "market maker"}
FUNDING = {"alice": 150_000, "bob": 60_000, "carol": 40_000, "dave": 400_000}
CRASH_START, CRASH_HOURS = 7 * 24, 36  # 2020-03-12 00:00 UTC, through 2020-03-13 12:00 UTC


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
    gas: dict[str, int] = field(default_factory=dict)
    conservation: dict[str, Any] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        return {"seed": self.seed, "roles": ROLES, "trades": self.trades, "rounds": self.rounds,
                "phases": self.phases, "gas": self.gas, "conservation": self.conservation}  # fmt: skip


class Demo:
    """Drives one run; see :func:`run_demo`."""

    def __init__(self, dev: Devnet, engine: Engine, seed: int) -> None:
        self.dev, self.engine, self.seed = dev, engine, seed
        self.p: Protocol = dev.protocol
        self.actors = {n: Actor(n, DEFAULT_KEYS[i + 1]) for i, n in enumerate(ROLES)}
        self.prices = PriceService(self.p, dev.price_signers, dev.deployer)
        self.run = DemoRun(seed)
        self._nonce = 0

    # ------------------------------------------------------------------ steps
    def fund(self) -> None:
        usdc = self.p.tokens["USDC"]
        for name, amount in FUNDING.items():
            a = self.actors[name]
            self._gas("mint", self.p.send(usdc.functions.mint(a.address, amount * USDC), self.dev.deployer))
            self._gas("approve", self.p.send(usdc.functions.approve(self.p.vault.address, 2**256 - 1), a.key))
            fn = self.p.vault.functions.deposit(usdc.address, amount * USDC, a.address)
            self._gas("deposit", self.p.send(fn, a.key))

    def drift(self, hours: int) -> None:
        """A seeded synthetic market for ``hours`` before the crash."""
        spot = self._spot()
        steps = list(scaled_steps("gbm", spot, self.seed, hours))[1:]
        self.prices.run(_shift(steps, 3600), warp=True)

    def trade(self, maker: str, taker: str, instrument: str, maker_buys: bool, units: float) -> None:
        """A fill at the engine's model mark, each side attested by the engine."""
        ins = self.dev.instruments[instrument]
        state = self.engine.refresh()
        model = self.engine.core.engine(state)
        mark = model.valuation.mark[model.instruments.index_of([ins])[0]]
        price = max(TICK, round(float(mark) * 1000) * TICK)
        size = round(units * 1000) * (U // 1000)
        m, t = self.actors[maker], self.actors[taker]
        m_order = self._order(m, ins, maker_buys, size, price)
        t_order = self._order(t, ins, not maker_buys, size, price)
        m_att = self.engine.attest_trade(m.address, ins, size if maker_buys else -size, price, "maker")
        t_att = self.engine.attest_trade(t.address, ins, -size if maker_buys else size, price, "taker")
        fn = self.p.exchange.functions.trade(m_order, t_order, size, m_att.proof(), t_att.proof())
        receipt = self.p.send(fn, self.dev.deployer)
        self._gas("trade_2_attestations", receipt)
        self.run.trades.append({"maker": maker, "taker": taker, "instrument": instrument,
                                "side": "buy" if maker_buys else "sell", "size": units,
                                "price": price / 1e18, "notional_usd": value(size, price) / USDC})  # fmt: skip

    def _order(self, actor: Actor, ins: int, buy: bool, size: int, price: int) -> tuple[Any, bytes]:
        self._nonce += 1
        o = Order(actor.address, ins, buy, size, price, self._nonce, self.p.now() + 3600)
        return o.as_tuple(), sign_order(self.p.domain("Exchange"), o, Signer(actor.key))

    def round(self, label: str) -> None:
        result = self.engine.run_round()
        if result is None:
            return
        self._gas("post_root", self.p.w3.eth.get_transaction_receipt(HexStr(result.tx)))
        below = [leaf.account for leaf in result.tree.leaves if leaf.margin_equity < leaf.maintenance_margin]
        names = {a.address: n for n, a in self.actors.items()}
        self.run.rounds.append({"round": result.round, "label": label, "price_round": result.root.price_round,
                                "spot": list(self._spot()), "accounts": len(result.tree.leaves),
                                "below_mm": sorted(names.get(a, a) for a in below)})  # fmt: skip

    def crash(self, every: int = 6) -> None:
        """Replay the March 2020 crash's hourly moves from today's prices, a round every few hours."""
        steps = list(scaled_steps("replay:2020-03", self._spot(), 0, CRASH_START + CRASH_HOURS))
        window = steps[CRASH_START : CRASH_START + CRASH_HOURS + 1]
        base = window[0]
        rel = [PriceStep(s.offset - base.offset, tuple(x * sp / b for x, sp, b in
                         zip(s.prices, self._spot(), base.prices, strict=True))) for s in window[1:]]  # fmt: skip
        for i, chunk in enumerate(_chunks(rel, every)):
            self.prices.run(_shift(chunk, 0), warp=True)
            self.round(f"crash +{(i + 1) * every}h")

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

    def check_conservation(self) -> None:
        """I-1: the vault's USDC equals Σ cash − Σ cost basis over every account, exactly."""
        state = self.engine.refresh()
        held = int(self.p.tokens["USDC"].functions.balanceOf(self.p.vault.address).call())
        books = sum(a.cash - sum(pos.cost_basis for pos in a.positions.values()) for a in state.accounts.values())
        self.run.conservation = {"vault_usdc": held, "sum_cash_minus_cost_basis": books, "holds": held == books}

    # ------------------------------------------------------------------ helpers
    def _spot(self) -> tuple[float, ...]:
        latest = int(self.p.feed.functions.latestRound().call()[0])
        n = len(self.p.deployment.underlyings)
        return tuple(int(self.p.feed.functions.priceAt(latest, i).call()) / 1e18 for i in range(n))

    def _gas(self, op: str, receipt: Any) -> None:
        self.run.gas[op] = self.run.gas.get(op, 0) + int(receipt["gasUsed"])


def _shift(steps: list[PriceStep], base: int) -> list[PriceStep]:
    first = steps[0].offset if steps else 0
    return [PriceStep(s.offset - first + base + 3600, s.prices) for s in steps]


def _chunks(items: list[PriceStep], n: int) -> Iterator[list[PriceStep]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def run_demo(seed: int, workdir: Path | None = None) -> DemoRun:
    """Run the whole scenario on a fresh Anvil and return what happened."""
    with start_anvil(timestamp=GENESIS) as node, tempfile.TemporaryDirectory() as tmp:
        w3 = connect(node.url)
        w3.provider.make_request("anvil_setBlockTimestampInterval", [1])  # type: ignore[arg-type]
        dev = bootstrap(w3, DEFAULT_KEYS[0], rpc_url=node.url)
        signers = [LocalSigner(s._key.to_bytes(), dev.protocol.domain("RiskOracle")) for s in dev.risk_signers]
        engine = build_engine(dev.protocol, signers, DEFAULT_KEYS[0], workdir or Path(tmp))
        demo = Demo(dev, engine, seed)
        demo.fund()
        demo.drift(6)
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


def write_report(run: DemoRun, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run.report(), indent=2, sort_keys=True))
    return path
