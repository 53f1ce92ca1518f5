"""The simulator's chain backend on a real Anvil: blocks at the schedule's times, transactions in the
round's order, refusal names (the engine's and the contracts' custom errors, a revert inside a batch
included), a liquidation end to end, and the transaction rate (printed, never asserted)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from offchain import rules
from offchain.chain.indexer import Indexer
from offchain.chain.units import Kind
from offchain.engine.liquidation import auction_params
from offchain.errors import ChainError, InputError
from offchain.protocol import WAD
from offchain.sim.backend import (
    Bid,
    Deposit,
    ListInstrument,
    StartAuction,
    Trade,
    Withdraw,
    price_time,
    root_time,
    round_time,
    sim_account,
)
from offchain.sim.chain_backend import ChainBackend
from offchain.sim.scenario import Scenario, scenario_from_mapping

pytestmark = pytest.mark.chain

E18 = 10**18
USDC = 10**6
SEED = 7
STEP = 300


def small_scenario(seed: int = SEED) -> Scenario:
    return scenario_from_mapping({
        "run": {"name": "chain-backend", "seed": seed, "steps": 10, "step_seconds": STEP},
        "market": {"model": "gbm", "underlyings": ["BTC", "ETH"], "initial_prices": [60_000.0, 3_000.0],
                   "vol": [0.5, 0.6], "correlation": 0.8},
    })  # fmt: skip


def who(i: int) -> str:
    return sim_account(SEED, i)[0]


@pytest.fixture
def chain() -> Iterator[ChainBackend]:
    backend = ChainBackend(small_scenario(), 8)
    try:
        yield backend
    finally:
        backend.close()


def prices(btc: int, eth: int = 3_000) -> list[int]:
    return [btc * E18, eth * E18]


def open_market(b: ChainBackend, start: int, deposits: dict[int, int]) -> None:
    """Step 0: prices, the BTC and ETH perps listed, quote deposits (USD) to agents by index."""
    b.begin_step(0, start, prices(60_000))
    perps = [ListInstrument(int(Kind.PERP), 0, 0, 0), ListInstrument(int(Kind.PERP), 1, 0, 0)]
    out = b.apply(round_time(start, 0), [*perps, *(Deposit(who(i), "USDC", usd * USDC) for i, usd in deposits.items())])
    assert all(o.ok for o in out), out


def block_at(b: ChainBackend, when: int) -> dict[str, object]:
    block = b.w3.eth.get_block("latest", full_transactions=False)
    assert block["timestamp"] == when
    return dict(block)


def test_a_round_is_one_block_in_order_and_every_refusal_is_named(chain: ChainBackend) -> None:
    start = chain.scenario.run.start
    open_market(chain, start, {0: 100_000, 1: 100_000, 2: 100_000, 3: 1_000, 4: 50_000, 6: 5_000})
    assert chain.w3.eth.get_block(int(chain.w3.eth.block_number) - 2)["timestamp"] == price_time(start)
    assert chain.w3.eth.get_block(int(chain.w3.eth.block_number) - 1)["timestamp"] == root_time(start)
    before = chain.state()
    intents = [
        Trade(who(0), who(1), 1, E18, 60_000 * E18, True),  # accepted
        Trade(who(2), who(3), 1, 10 * E18, 60_000 * E18, True),  # the taker has 1,000 USD: the engine refuses
        Withdraw(who(4), "USDC", 60_000 * USDC),  # more than it holds: the Vault reverts, inside the batch
        Withdraw(who(5), "WETH", 0),  # nothing deposited, zero amount: the Vault reverts too
        Withdraw(who(6), "USDC", 1_000 * USDC),  # after the reverts, still mined and applied
        Deposit(who(7), "DOGE", 1),  # an unknown token: refused before anything is sent
    ]
    when = round_time(start, 1)
    sent = chain.stats.transactions
    out = chain.apply(when, intents)
    assert [(o.ok, o.error) for o in out] == [
        (True, ""), (False, "InsufficientMargin"), (False, "Vault_InsufficientCash"), (False, "Vault_ZeroAmount"),
        (True, ""), (False, "Input"),
    ]  # fmt: skip
    assert out[2].detail == "Vault_InsufficientCash(50000000000, 60000000000)"  # decoded: (balance, asked)
    block = block_at(chain, when)
    hashes = [h.hex() if isinstance(h, bytes) else str(h) for h in block["transactions"]]  # type: ignore[attr-defined]
    assert len(hashes) == chain.stats.transactions - sent == 4  # trade, two reverted withdrawals, one withdrawal
    statuses = [chain.w3.eth.get_transaction_receipt(h)["status"] for h in hashes]  # type: ignore[arg-type]
    assert statuses == [1, 0, 0, 1]  # the block holds the round's transactions in the round's order
    after = chain.state()
    assert after.timestamp == when
    assert after.accounts[who(0)].positions[1].size == -E18 and after.accounts[who(1)].positions[1].size == E18
    assert after.accounts[who(6)].cash == before.accounts[who(6)].cash - 1_000 * USDC
    assert after.accounts[who(4)].cash == before.accounts[who(4)].cash


def test_time_runs_forward_and_an_account_acts_once_per_round(chain: ChainBackend) -> None:
    start = chain.scenario.run.start
    open_market(chain, start, {0: 10_000, 1: 10_000})
    with pytest.raises(InputError, match="when"):
        chain.apply(round_time(start, 0), [Deposit(who(0), "USDC", USDC)])  # the round-0 block is already mined
    with pytest.raises(InputError, match="twice"):
        chain.apply(round_time(start, 1), [Deposit(who(0), "USDC", USDC), Withdraw(who(0), "USDC", USDC)])
    with pytest.raises(InputError, match="prices"):
        chain.begin_step(1, start + STEP, [60_000 * E18 + 1, 3_000 * E18])  # off the tick grid
    [out] = chain.apply(round_time(start, 1), [Deposit(sim_account(SEED + 1, 0)[0], "USDC", USDC)])  # not this run's
    assert (out.ok, out.error) == (False, "Input") and "not an agent account" in out.detail
    assert chain.apply(round_time(start, 2), []) == []  # an empty round is an empty block at its time
    assert chain.state().timestamp == round_time(start, 2)


def test_a_crash_liquidation_start_bid_and_auctions(chain: ChainBackend) -> None:
    """A leveraged long crashes below zero equity: the keeper starts the auction from the engine's
    root and takes it whole; the insurance fund pays what it holds and the rest is socialised."""
    start = chain.scenario.run.start
    open_market(chain, start, {0: 10_000, 1: 2_000_000, 2: 500_000, 3: 100_000})
    out = chain.apply(round_time(start, 1), [Trade(who(1), who(0), 1, E18, 60_000 * E18, True)])
    assert out[0].ok, out
    t1 = start + STEP
    chain.begin_step(1, t1, prices(48_000))  # -20 %: beyond maxMove, every price signer signs
    assert chain.state().prices.prices[0] == 48_000 * E18
    out = chain.apply(round_time(t1, 0), [StartAuction(who(2), who(0)), StartAuction(who(2 + 1), who(7))])
    assert (out[0].ok, out[1].error) == (True, "NoStatusLeaf"), out  # who(7) never acted: not in the root
    auctions = chain.auctions()
    assert list(auctions) == [who(0)]
    rec = auctions[who(0)]
    assert rec.state.insolvent and rec.state.mtm_equity < 0 and rec.version == 0
    again = chain.apply(round_time(t1, 1), [StartAuction(who(3), who(0))])
    assert (again[0].ok, again[0].error) == (False, "Liquidator_AlreadyInAuction")
    state = chain.state()
    lp = state.liquidation
    assert lp is not None
    when = round_time(t1, 2)
    price, _ = rules.bid_price(rec.state, WAD, when, auction_params(lp))
    fund_before = state.accounts[chain.roles["insurance_fund"]].cash
    out = chain.apply(when, [Bid(who(2), who(0), WAD, price)])
    assert out[0].ok, out
    after = chain.state()
    assert who(0) not in chain.auctions()
    assert after.accounts[who(2)].positions[1].size == E18 and not after.accounts[who(0)].positions
    assert after.accounts[chain.roles["insurance_fund"]].cash == 0 < fund_before  # the fund paid all it held
    assert after.loss_index > 0  # the rest was socialised over positive balances
    assert price < 0 and after.accounts[who(2)].cash > state.accounts[who(2)].cash  # the keeper was paid to take it


def test_a_large_round_keeps_its_order_and_the_fed_indexer_equals_a_fresh_sync(chain: ChainBackend) -> None:
    """Rounds far larger than Anvil keeps in order when they arrive in one JSON-RPC batch (it handles a
    batch's requests concurrently): each block holds its round's transactions in the round's order
    (decreasing gas prices do it), and the state the backend's indexer was handed block by block
    (``Indexer.apply_block``) equals an index of the whole chain built from scratch by ``eth_getLogs``."""
    start = chain.scenario.run.start
    n = 60
    open_market(chain, start, {})
    rounds = [
        [Deposit(who(i), "USDC", (100_000 + i) * USDC) for i in range(n)],  # mint, approve, deposit each
        [Trade(who(i), who(i + 1), 1 + i % 4 // 2, E18, (60_000 if i % 4 < 2 else 3_000) * E18, i % 3 == 0)
         for i in range(0, n, 2)],  # one relayer sends them all: its nonces order them too
        [*(Withdraw(who(i), "USDC", (10 + i) * USDC) for i in range(0, n, 3)),
         *(Deposit(who(i), "USDC", 5 * USDC) for i in range(n, n + 20))],
    ]  # fmt: skip
    senders = [
        [who(i) for i in range(n) for _ in range(3)],
        [None] * (n // 2),  # the relayer
        [*(who(i) for i in range(0, n, 3)), *(who(i) for i in range(n, n + 20) for _ in range(3))],
    ]
    for r, (intents, want) in enumerate(zip(rounds, senders, strict=True), start=1):
        out = chain.apply(round_time(start, r), intents)
        assert all(o.ok for o in out), [o for o in out if not o.ok][:3]
        block = chain.w3.eth.get_block("latest", full_transactions=True)
        assert block["timestamp"] == round_time(start, r)
        txs = list(block["transactions"])
        got = [tx["from"] for tx in txs]  # type: ignore[index]
        assert got == [w or got[0] for w in want]
        gas_prices = [tx["gasPrice"] for tx in txs]  # type: ignore[index]
        assert gas_prices == sorted(set(gas_prices), reverse=True)
    fresh = Indexer(chain.p)
    fresh.sync()
    assert fresh.state == chain.state()
    assert chain.state().accounts[who(n + 3)].cash == 5 * USDC


def test_the_indexer_takes_only_the_block_that_extends_it(chain: ChainBackend) -> None:
    start = chain.scenario.run.start
    open_market(chain, start, {0: 1_000})
    ix = Indexer(chain.p)
    ix.sync()
    head = chain.rpc("eth_getBlockByNumber", "latest", False)
    assert not ix.apply_block(head, [])  # already indexed
    chain.rpc("evm_mine", round_time(start, 1))
    child = chain.rpc("eth_getBlockByNumber", "latest", False)
    before = ix.state.copy()
    assert not ix.apply_block({**child, "parentHash": "0x" + "00" * 32}, [])  # another chain's child
    assert not Indexer(chain.p, confirmations=1).apply_block(child, [])  # it would need confirmations
    assert ix.state == before
    assert ix.apply_block(child, [])
    assert (ix.state.block, ix.state.block_hash, ix.state.timestamp) == (int(child["number"], 16), child["hash"],
                                                                         round_time(start, 1))  # fmt: skip
    assert ix.sync() == ix.state.block  # the head is the block it was handed: nothing more to index


def test_a_refused_request_in_a_batch_is_named_and_anvil_output_is_discarded(chain: ChainBackend) -> None:
    with pytest.raises(ChainError, match=r"eth_sendRawTransaction \(request 1 of a batch of 2\)"):
        chain.rpc.batch([("eth_blockNumber", []), ("eth_sendRawTransaction", ["0x00"])])
    assert chain.rpc("eth_chainId") == hex(chain.p.chain_id)  # the connection is still usable
    node = chain.node
    assert node is not None and node.sink is not None and node.sink.poll() is None
    chain.close()
    assert node.sink.poll() is not None and node.process.poll() is not None


def test_transaction_rate_is_measured(chain: ChainBackend) -> None:
    """Rounds of deposits and trades: every transaction confirmed; the rate is printed, not asserted
    (``scripts/bench_sim.py --chain`` measures it on a whole scenario)."""
    start = chain.scenario.run.start
    n = 8
    open_market(chain, start, {i: 1_000_000 for i in range(n)})
    sent, spent = chain.stats.transactions, chain.stats.seconds
    began = time.perf_counter()
    for r in range(1, 11):
        trades = [Trade(who(i), who(i + 1), 1 + (r % 2), E18 if r % 2 == 0 else 20 * E18,
                        (60_000 if r % 2 == 0 else 3_000) * E18, r % 4 < 2) for i in range(0, n, 2)]  # fmt: skip
        out = chain.apply(round_time(start, r), trades)
        assert all(o.ok for o in out), out
    wall = time.perf_counter() - began
    txs = chain.stats.transactions - sent
    assert txs == 10 * n // 2 and chain.stats.reverted == 0
    print(f"\nchain backend: {txs} trades in {wall:.2f} s wall ({txs / wall:.0f} tx/s; "
          f"{txs / (chain.stats.seconds - spent):.0f} tx/s inside apply)")


def test_legacy_signing_is_byte_for_byte_eth_accounts() -> None:
    import coincurve
    from eth_account import Account

    from offchain.chain.anvil import DEFAULT_KEYS
    from offchain.sim.chain_backend import sign_legacy

    acct = Account.from_key(DEFAULT_KEYS[3])
    for nonce, data in ((0, b""), (7, bytes.fromhex("deadbeef")), (2**40, bytes(range(256)) * 9)):
        tx = {"to": "0x5FbDB2315678afecb367f032d93F642f64180aa3", "data": data, "gas": 8_000_000, "gasPrice": 10**9,
              "nonce": nonce, "chainId": 31337, "value": 0}  # fmt: skip
        ref = acct.sign_transaction(tx)
        raw, tx_hash = sign_legacy(coincurve.PrivateKey(bytes(acct.key)), nonce, 10**9, 8_000_000, str(tx["to"]), data,
                                   31337)  # fmt: skip
        assert (raw, tx_hash) == (bytes(ref.raw_transaction), bytes(ref.hash))
