r"""``pmsim demo``: the shipped scenario ``scenarios/demo.toml`` run on the chain backend, and the
checks only a chain can give.

The run itself is :func:`offchain.sim.runner.run` on a
:class:`~offchain.sim.chain_backend.ChainBackend`, exactly what ``pmsim sim run demo --backend chain``
does (deploy, fund, trade under the engine's attestations, the 2020-03-12 replay with a status root
every step, the keeper agents' auctions and bids, the run folder). After the last step, before the
chain stops, :func:`run_demo` reads from the chain what the runner's record cannot show:

* **gas per transaction of each kind** (:func:`gas_by_kind`): every transaction the simulator mined
  (the blocks from ``run.start`` on; the deployment's are left out), from the blocks' receipts,
  grouped by the function called (``Exchange.trade``, ``Liquidator.bid``, ...), with the count,
  mean, range and total;
* **the liquidations as the Liquidator recorded them** (:func:`chain_liquidations`): its
  ``AuctionStarted`` and ``Bid`` events, compared with the runner's record bid for bid (account,
  fraction, price, fee, fund draw, socialised loss);
* **conservation** (:func:`conservation`, invariant I-1): the Vault's USDC against the books, and each
  collateral token's balance against the accounts' balances.

It writes them beside the run folder's files as ``demo.json``. Deterministic: the same seed gives
the same run folder and the same ``demo.json``, byte for byte (``run.json``'s ``wall_seconds`` aside).

Notes
-----
Conservation (I-1), over every account :math:`a` (the insurance fund's and the fee collector's too)
and every position :math:`(a, i)`:

.. math:: \mathrm{USDC.balanceOf(Vault)} = \sum_a c_a - \sum_{a,i} b_{a,i}
          - \sum_{a,i\,\mathrm{perp}} \mathrm{funding}(s_{a,i}, F_i, f_{a,i}) + d,

with :math:`c_a` the cash net of the socialised loss not yet charged (``Vault.cashOf``),
:math:`b` the cost basis, the funding a position owes since its snapshot
(``rules.funding_payment``), and :math:`d` the dust: :math:`d = 0` exactly while no loss was
socialised (loss index 0); once one was, each account's pending loss charge rounds in the Vault's
favour, so :math:`0 \le d \le` the number of accounts (I-1b). For each collateral token,
``balanceOf(Vault)`` equals the sum of the accounts' balances exactly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eth_utils import function_signature_to_4byte_selector

from offchain import rules
from offchain.chain.build import compile_contracts
from offchain.chain.client import Protocol, _abi_type
from offchain.chain.indexer import ProtocolState
from offchain.keeper.receipts import BidOutcome
from offchain.protocol import Kind
from offchain.sim.chain_backend import ChainBackend
from offchain.sim.metrics import fraction, money
from offchain.sim.record import RunRecord
from offchain.sim.runner import default_folder
from offchain.sim.runner import run as run_scenario
from offchain.sim.scenario import Scenario

Progress = Callable[[str], None]
#: Progress labels before the first step (compile, deploy) and after the last (the chain's checks).
SETUP_STEPS, CHECK_STEPS = 2, 1
#: What each kind of transaction is, by the function called (``Contract.function``); a token's
#: ``mint`` and ``approve`` are named by its symbol. A call not listed keeps its ``Contract.function``.
OPERATIONS = {
    "PriceFeed.post": "price round (quorum-signed prices)",
    "Instruments.fixSettlement": "settlement price fix",
    "RiskOracle.postRoot": "status root post",
    "Instruments.list": "instrument listing",
    "mint": "test token mint ({token} faucet)",
    "approve": "{token} approve of the Vault",
    "Vault.deposit": "deposit",
    "Vault.withdraw": "withdrawal",
    "Exchange.trade": "trade with its two attestations",
    "Liquidator.start": "liquidation start with a root proof",
    "Liquidator.bid": "liquidation bid with its attestation",
    "Settler.settleExpired": "expiry settlement (one series, a batch of holders)",
}


@dataclass(frozen=True)
class GasRow:
    """Gas of one kind of transaction over the run (mean rounded half up)."""

    call: str  # the function called, "Exchange.trade" or "USDC.mint"
    operation: str  # what it is, in words
    transactions: int  # mined and successful
    reverted: int  # mined and reverted (not in the figures)
    gas_per_transaction: int
    min: int
    max: int
    total: int


@dataclass(frozen=True)
class Conservation:
    """Invariant I-1 at the end of the run (quote units; see the module notes)."""

    vault_usdc: int  # USDC.balanceOf(Vault)
    books: int  # Σ cash − Σ cost basis − Σ unsettled funding
    dust: int  # vault_usdc − books
    accounts: int
    loss_socialised: bool  # the loss index moved: dust in [0, accounts] allowed (I-1b)
    collateral: dict[str, tuple[int, int]]  # symbol -> (balanceOf(Vault), Σ accounts' balances), token units

    @property
    def holds(self) -> bool:
        quote = 0 <= self.dust <= self.accounts if self.loss_socialised else self.dust == 0
        return quote and all(held == owed for held, owed in self.collateral.values())


@dataclass(frozen=True)
class ChainAuction:
    """A ``Liquidator.AuctionStarted`` event (quote units)."""

    account: str
    time: int
    insolvent: bool
    mtm_equity: int
    equity: int
    maintenance_margin: int


@dataclass(frozen=True)
class ChainLiquidations:
    """The Liquidator's events over the run, and whether the runner's record says the same."""

    auctions: list[ChainAuction]
    bids: list[BidOutcome]
    bid_times: list[int]  # block time of each bid
    mismatches: list[str]  # "bid 3: fee_usd record 7.06 != chain 7.07"; empty when they agree

    @property
    def bad_debt(self) -> int:
        return sum(b.bad_debt for b in self.bids)

    @property
    def fund_draws(self) -> int:
        return sum(b.fund_draw for b in self.bids)

    @property
    def socialised(self) -> int:
        return sum(b.socialised for b in self.bids)

    @property
    def unrecovered(self) -> int:
        return sum(b.unrecovered for b in self.bids)

    @property
    def fees(self) -> int:
        return sum(b.fee for b in self.bids)

    @property
    def waterfall_holds(self) -> bool:
        """Bad debt (what the fund paid insolvent auctions' bidders) = fund draws + socialised + unrecovered."""
        paid = sum(-b.price for b in self.bids if b.price < 0)
        return paid == self.fund_draws + self.socialised + self.unrecovered


@dataclass
class DemoResult:
    """One demo run: the runner's record and folder, and the chain's own figures."""

    record: RunRecord
    folder: Path
    gas: list[GasRow] = field(default_factory=list)
    conservation: Conservation | None = None
    chain: ChainLiquidations | None = None
    names: dict[str, str] = field(default_factory=dict)  # account -> "leveraged dip buyers #2"

    @property
    def ok(self) -> bool:
        """Conservation holds, the loss waterfall holds, and the chain's liquidations are the record's."""
        return (self.conservation is not None and self.conservation.holds and self.chain is not None
                and self.chain.waterfall_holds and not self.chain.mismatches)  # fmt: skip

    def document(self) -> dict[str, Any]:
        """``demo.json``: money as exact decimal strings of quote units, gas in gas units."""
        assert self.conservation is not None and self.chain is not None
        c, ch = self.conservation, self.chain
        return {
            "gas": [asdict(g) for g in self.gas],
            "conservation": {
                "vault_usdc_usd": money(c.vault_usdc), "books_usd": money(c.books), "dust_units": c.dust,
                "accounts": c.accounts, "loss_socialised": c.loss_socialised, "holds": c.holds,
                "collateral": {s: {"vault_balance": h, "accounts_total": o} for s, (h, o) in c.collateral.items()},
            },
            "liquidations": {
                "auctions": [{"account": a.account, "name": self.names.get(a.account, ""), "time": a.time,
                              "insolvent": a.insolvent, "mtm_equity_usd": money(a.mtm_equity),
                              "margin_equity_usd": money(a.equity), "mm_usd": money(a.maintenance_margin)}
                             for a in ch.auctions],
                "bids": len(ch.bids), "bad_debt_usd": money(ch.bad_debt), "fund_draws_usd": money(ch.fund_draws),
                "socialised_usd": money(ch.socialised), "unrecovered_usd": money(ch.unrecovered),
                "fees_usd": money(ch.fees), "waterfall_holds": ch.waterfall_holds,
                "record_matches_chain": not ch.mismatches, "mismatches": ch.mismatches,
            },
        }  # fmt: skip


def run_demo(scenario: Scenario, folder: Path | None = None, progress: Progress | None = None) -> DemoResult:
    """Run ``scenario`` on a fresh chain through the simulator's runner, write its run folder and
    ``demo.json``, and check the chain (module notes).

    ``progress`` is called with a label after each of ``SETUP_STEPS + run.steps + CHECK_STEPS``
    steps: the contracts compiled (cached in ``build/`` after the first time), the protocol deployed,
    every simulated step, the chain's checks.
    """
    say = progress or (lambda _label: None)
    folder = folder or default_folder(scenario, "chain")
    compile_contracts()
    say("compiled the contracts")
    with ChainBackend(scenario) as backend:
        say(f"deployed the protocol on a fresh Anvil ({len(backend.tokens)} tokens, the engine and its signers)")

        def step(done: int, steps: int) -> None:
            say(f"step {done:,} of {steps:,}")

        record = run_scenario(scenario, backend, progress=step, folder=folder)
        result = DemoResult(record, folder, names=account_names(scenario))
        result.gas, bid_hashes = gas_by_kind(backend, scenario.run.start)
        result.chain = chain_liquidations(backend.p, record, bid_hashes)
        result.conservation = conservation(backend.p, backend.state())
    (folder / "demo.json").write_text(json.dumps(result.document(), indent=2) + "\n")
    say("read gas, liquidations and conservation from the chain")
    return result


def account_names(scenario: Scenario) -> dict[str, str]:
    """Each agent account's name: its population's and its number in it (``"keeper #1"``)."""
    from offchain.sim.runner import populations

    return {a: f"{p.pop.name} #{j + 1}" for p in populations(scenario, scenario.run.seed)
            for j, a in enumerate(p.accounts)}  # fmt: skip


def _selectors(p: Protocol) -> dict[tuple[str, bytes], str]:
    """``(address, selector) -> "Contract.function"`` over the deployment's contracts and tokens (the
    RiskOracle is a module of the Vault, at its address: ``postRoot`` is named the oracle's, the rest
    the Vault's)."""
    out: dict[tuple[str, bytes], str] = {}
    named = [(name, c) for name, c in p.c.items() if name != "RiskOracle"] + list(p.tokens.items())
    for name, c in named:
        abi: list[dict[str, Any]] = [dict(i) for i in c.abi]
        for item in abi:
            if item.get("type") != "function":
                continue
            types = ",".join(_abi_type(i) for i in item.get("inputs", []))
            key = (str(c.address).lower(), function_signature_to_4byte_selector(f"{item['name']}({types})"))
            out.setdefault(key, f"{'RiskOracle' if item['name'] == 'postRoot' else name}.{item['name']}")
    return out


def _operation(call: str) -> str:
    contract, fn = call.split(".", 1)
    if fn in ("mint", "approve") and call not in OPERATIONS:
        return OPERATIONS[fn].format(token=contract)
    return OPERATIONS.get(call, call)


def gas_by_kind(backend: ChainBackend, since: int) -> tuple[list[GasRow], list[str]]:
    """Gas of every transaction mined in blocks at or after ``since`` (the simulator's; the
    deployment's blocks come before), grouped by the function called, in the order of
    :data:`OPERATIONS`; and the hashes of the successful ``Liquidator.bid`` transactions, in order.

    Read from the chain: each block with its transactions (``eth_getBlockByNumber``) and their
    receipts (``eth_getBlockReceipts``).
    """
    rpc, names = backend.rpc, _selectors(backend.p)
    gas: dict[str, list[int]] = {}
    reverted: dict[str, int] = {}
    bids: list[str] = []
    number = int(rpc("eth_blockNumber"), 16)
    blocks = []
    while number > 0:  # newest first, down to the first block of the run
        block = rpc("eth_getBlockByNumber", hex(number), True)
        if int(block["timestamp"], 16) < since:
            break
        blocks.append(block)
        number -= 1
    for block in reversed(blocks):
        if not block["transactions"]:
            continue
        receipts = {r["transactionHash"]: r for r in rpc("eth_getBlockReceipts", block["number"])}
        for tx in block["transactions"]:
            data = bytes.fromhex(tx["input"].removeprefix("0x"))
            call = names.get(((tx.get("to") or "").lower(), data[:4]), f"{tx.get('to')}.{data[:4].hex()}")
            r = receipts[tx["hash"]]
            if int(r["status"], 16) != 1:
                reverted[call] = reverted.get(call, 0) + 1
                continue
            gas.setdefault(call, []).append(int(r["gasUsed"], 16))
            if call == "Liquidator.bid":
                bids.append(tx["hash"])
    order = list(OPERATIONS)

    def rank(call: str) -> tuple[int, str]:
        fn = call.split(".", 1)[1] if "." in call else call
        key = call if call in OPERATIONS else fn
        return (order.index(key) if key in order else len(order), call)

    rows = []
    for call in sorted(set(gas) | set(reverted), key=rank):
        g = gas.get(call, [])
        mean = (2 * sum(g) + len(g)) // (2 * len(g)) if g else 0
        rows.append(GasRow(call, _operation(call), len(g), reverted.get(call, 0), mean, min(g, default=0),
                           max(g, default=0), sum(g)))  # fmt: skip
    return rows, bids


def chain_liquidations(p: Protocol, record: RunRecord, bid_hashes: list[str]) -> ChainLiquidations:
    """The Liquidator's ``AuctionStarted`` and ``Bid`` events of the run, and every difference between
    the bids and the runner's :attr:`RunRecord.liquidations` (in order: account, keeper, fraction,
    price, fee, fund draw, socialised loss)."""
    w3 = p.w3
    bids = [BidOutcome.from_receipt(p, w3.eth.get_transaction_receipt(h)) for h in bid_hashes]  # type: ignore[arg-type]
    started = p.liquidator.events.AuctionStarted().get_logs(from_block=0, to_block="latest")
    auctions = []
    for ev in started:
        a = ev["args"]
        when = int(w3.eth.get_block(ev["blockNumber"])["timestamp"])
        auctions.append(ChainAuction(str(a["account"]), when, bool(a["insolvent"]), int(a["mtmEquity"]),
                                     int(a["equity"]), int(a["maintenanceMargin"])))  # fmt: skip
    bid_times = [int(w3.eth.get_block(b.block)["timestamp"]) for b in bids]
    mismatches = []
    if len(bids) != len(record.liquidations):
        mismatches.append(f"bids: record {len(record.liquidations)} != chain {len(bids)}")
    for n, (rec, b) in enumerate(zip(record.liquidations, bids, strict=False)):
        pairs = [("account", rec.account, b.account), ("keeper", rec.keeper, b.bidder),
                 ("fraction", rec.fraction, fraction(b.fraction)), ("price_usd", rec.price_usd, money(b.price)),
                 ("fee_usd", rec.fee_usd, money(b.fee)), ("fund_draw_usd", rec.fund_draw_usd, money(b.fund_draw)),
                 ("socialised_usd", rec.socialised_usd, money(b.socialised))]  # fmt: skip
        mismatches += [f"bid {n}: {k} record {x} != chain {y}" for k, x, y in pairs if x != y]
        mismatches += [f"bid {n}: time record {rec.time} != chain {t}"
                   for n, (rec, t) in enumerate(zip(record.liquidations, bid_times, strict=False)) if rec.time != t]
    return ChainLiquidations(auctions, bids, bid_times, mismatches)


def books(state: ProtocolState) -> int:
    """Σ cash (net of socialised loss not yet charged) − Σ cost basis − Σ funding owed since each
    perpetual position's snapshot, over every account (quote units)."""
    total = 0
    for a in state.accounts.values():
        total += a.effective_cash(state.loss_index)
        for iid, pos in a.positions.items():
            total -= pos.cost_basis
            ins = state.instruments[iid]
            if ins.kind == Kind.PERP:
                total -= rules.funding_payment(pos.size, ins.cumulative_funding, pos.funding_snapshot)
    return total


def conservation(p: Protocol, state: ProtocolState) -> Conservation:
    """I-1 on the chain now: the Vault's token balances (``balanceOf``) against the indexer's ``state``
    of the same block (module notes)."""
    vault = p.vault.address
    held = {sym: int(t.functions.balanceOf(vault).call(block_identifier=state.block))
            for sym, t in p.tokens.items()}  # fmt: skip
    owed = {sym: sum(a.collateral.get(str(t.address), 0) for a in state.accounts.values())
            for sym, t in p.tokens.items() if sym != "USDC"}  # fmt: skip
    quote = books(state)
    return Conservation(held["USDC"], quote, held["USDC"] - quote, len(state.accounts), state.loss_index != 0,
                        {s: (held[s], owed[s]) for s in owed})  # fmt: skip
