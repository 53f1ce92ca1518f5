"""The simulator's chain backend: a scenario's intents as real signed transactions on a fresh Anvil.

:class:`ChainBackend` implements :class:`offchain.sim.backend.Backend` with the real pieces of the
devnet, nothing mocked:

* a fresh Anvil (``--order fees``: a block holds its transactions by decreasing gas price, which
  the backend sets from each transaction's place in its round, see :meth:`ChainBackend._mine`),
  automine off, every block mined explicitly at the time the backend's schedule gives
  (:func:`~offchain.sim.backend.price_time`, :func:`~offchain.sim.backend.root_time`,
  :func:`~offchain.sim.backend.round_time`);
* the compiled contracts deployed by :func:`offchain.chain.deploy.deploy_protocol` with the scenario's
  ``[protocol]`` parameters and its risk configuration's canonical hash, owner = the deployer (no
  timelock);
* the price service's signing rule (``PriceFeed.signersRequired``, asked of the feed) for each step's
  round, and the settlement prices that round fixes;
* the engine (:class:`offchain.engine.service.Engine` over :class:`~offchain.engine.core.EngineCore`,
  in this process) posting its status root every step and attesting every trade, withdrawal and bid
  with real EIP-712 signatures of its risk signers;
* the agents' accounts (:func:`~offchain.sim.backend.sim_account`), funded with gas by
  ``anvil_setBalance``; a deposit mints the tokens to the account first.

Speed: a round's transactions are built and signed locally (nonces counted here, a fixed gas
limit: no estimate, no per-transaction request), sent in one JSON-RPC batch, mined as one block, and
confirmed with one batch of ``eth_getBlockByNumber`` and ``eth_getBlockReceipts``: three requests a
block, the indexer's included. A transaction that reverted is traced (``debug_traceTransaction``,
call tracer) for its custom error. The state is what the project's indexer rebuilds from the chain's
events (:mod:`offchain.chain.indexer`): it is handed each block's header and logs as the node
returned them (:meth:`~offchain.chain.indexer.Indexer.apply_block`, which checks that the block
extends the indexed one), and the engine works on the indexer's state itself, as the twin does on
its own (no snapshot copied per block; the engine's refresh syncs from the node only when the
indexer did not take a block).

Refusal names (:attr:`Outcome.error`): the contract's custom error (``Vault_InsufficientCash``,
``Liquidator_BadFraction``), or, when the engine refuses to attest, the engine's exception class name
without ``Error`` (:func:`offchain.sim.backend.refusal`: ``InsufficientMargin``, ``Input``,
``FeedStale``, ``ProtocolPaused``, ``Chain``), or ``NoStatusLeaf`` for a start on an account the
latest root does not hold.

Attestations of a round are computed on the state before the round (the chain's latest block): the
engine cannot see a block that is not mined. The maker's side of a trade is attested before the
taker's; a refusal of either refuses the trade.
"""

from __future__ import annotations

import http.client
import json
import logging
import shutil
import socket
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import coincurve
import rlp  # type: ignore[import-untyped]
from eth_abi import decode, encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import function_signature_to_4byte_selector, keccak
from web3 import HTTPProvider, Web3
from web3.contract import Contract
from web3.types import RPCEndpoint, RPCResponse

from offchain import rules
from offchain.chain.actions import STATUS
from offchain.chain.anvil import DEFAULT_KEYS, Anvil, start_anvil
from offchain.chain.client import Protocol, _abi_type
from offchain.chain.deploy import DeployConfig, deploy_protocol
from offchain.chain.devnet import dev_signers
from offchain.chain.eip712 import Attestation, Order, PriceRound, Signer, sign_order, sign_price_round
from offchain.chain.indexer import Indexer, ProtocolState
from offchain.chain.merkle import StatusRoot, StatusTree
from offchain.chain.units import TICK, Kind
from offchain.engine.core import EngineCore, TradeRequest, WithdrawRequest
from offchain.engine.liquidation import BidRequest, fetch_auction
from offchain.engine.service import Engine, RoundResult, SignedAttestation, checked_attestation
from offchain.engine.signer import LocalSigner, SignJob
from offchain.errors import ChainError, InputError, PmsimError
from offchain.risk.engine import MarginResult
from offchain.sim.backend import (
    AuctionRecord,
    Bid,
    Deposit,
    Intent,
    ListInstrument,
    Outcome,
    RefreshAuction,
    Settle,
    StartAuction,
    Trade,
    Withdraw,
    accounts_of,
    price_time,
    refusal,
    root_time,
    sim_account,
)
from offchain.sim.scenario import Scenario

log = logging.getLogger(__name__)

#: Seconds between Anvil's genesis and the scenario's start: the deployment's blocks, one a second.
SETUP_SECONDS = 600
#: Gas limit of every simulated transaction (blocks have no gas limit here; unused gas is refunded).
TX_GAS = 8_000_000
GAS_PRICE = 10**9
GAS_BALANCE = 10**24  # wei given to every account (anvil_setBalance)
SPARE_ACCOUNTS = 512  # agent accounts derived beyond the expected ones before an address is refused
MAX_UINT = 2**256 - 1
ZERO_ADDRESS = "0x" + "00" * 20
ROOT_ROLE_KEYS = {"deployer": DEFAULT_KEYS[0], "engine": DEFAULT_KEYS[1], "prices": DEFAULT_KEYS[2],
                  "relayer": DEFAULT_KEYS[3]}  # fmt: skip


def _empty_proof() -> tuple[tuple[Any, ...], bytes]:
    """A ``MarginProof`` with no signatures (a withdrawal of an account without risk needs none)."""
    return (Attestation(ZERO_ADDRESS, 0, STATUS, 0, 0, 0, 0, 0, b"\x00" * 32, 0, 0, 0).as_tuple(), b"")


@dataclass
class _Sender:
    account: LocalAccount
    nonce: int
    key: coincurve.PrivateKey


class _Rpc:
    """Plain JSON-RPC over one keep-alive HTTP connection (``http.client``, ``TCP_NODELAY``): the hot
    path skips web3's middleware and ``requests``' per-request preparation."""

    def __init__(self, url: str, timeout: float = 120.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise InputError("url", f"an http:// node URL, got {url!r}")
        self.url, self.timeout = url, timeout
        self._host, self._port, self._path = parts.hostname, parts.port or 80, parts.path or "/"
        self._conn: http.client.HTTPConnection | None = None
        self._id = 0

    def _post(self, what: str, payload: Any) -> Any:
        """POST ``payload`` as JSON and decode the answer (see :meth:`post_bytes`)."""
        data = self.post_bytes(what, json.dumps(payload).encode())
        try:
            return json.loads(data)
        except ValueError as exc:
            raise ChainError(f"{what}: the node's answer is not JSON ({exc})") from exc

    def post_bytes(self, what: str, body: bytes) -> bytes:
        """POST a JSON-RPC request body; the answer's body. A kept-alive connection the node closed
        meanwhile is reopened once (the request never reached the node); any other failure is a
        :class:`ChainError` (``what`` names the request)."""
        for attempt in range(2):
            reused = self._conn is not None
            conn = self._conn or self._connect()
            try:
                conn.request("POST", self._path, body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                data = response.read()
            except (http.client.HTTPException, OSError) as exc:
                self.close()
                stale = isinstance(exc, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError))
                if reused and stale and attempt == 0:
                    continue
                raise ChainError(f"{what}: the node did not answer ({exc})") from exc
            if response.status != 200:
                raise ChainError(f"{what}: the node answered HTTP {response.status}: {data[:200]!r}")
            return data
        raise AssertionError("unreachable")

    def _connect(self) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
        try:
            conn.connect()
            assert conn.sock is not None
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            conn.close()
            raise ChainError(f"cannot reach the node at {self.url} ({exc})") from exc
        self._conn = conn
        return conn

    def __call__(self, method: str, *params: Any) -> Any:
        self._id += 1
        body = self._post(method, {"jsonrpc": "2.0", "id": self._id, "method": method, "params": list(params)})
        if not isinstance(body, dict):
            raise ChainError(f"{method}: unexpected answer {str(body)[:200]}")
        if "error" in body:
            error = body["error"]
            raise ChainError(f"{method}: {error.get('message', error) if isinstance(error, dict) else error}")
        return body.get("result")

    def batch(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        """Several requests in one JSON-RPC batch (one HTTP round trip); their results in order.

        The node may handle a batch's requests concurrently: only requests whose outcome does not
        depend on their order belong in one batch. Raises :class:`ChainError` naming the first
        request the node refused (the others may have taken effect).
        """
        if not calls:
            return []
        first = self._id + 1
        payload = [{"jsonrpc": "2.0", "id": first + k, "method": m, "params": params}
                   for k, (m, params) in enumerate(calls)]  # fmt: skip
        self._id += len(calls)
        body = self._post(f"{calls[0][0]} (batch of {len(calls)})", payload)
        if not isinstance(body, list):  # a batch the node refused as a whole
            error = body.get("error", body) if isinstance(body, dict) else body
            raise ChainError(f"{calls[0][0]} (batch of {len(calls)}): {error}")
        answers = {a.get("id"): a for a in body if isinstance(a, dict)}
        out = []
        for k, (method, _) in enumerate(calls):
            answer = answers.get(first + k)
            if answer is None:
                raise ChainError(f"{method} (request {k} of a batch of {len(calls)}): no answer")
            if "error" in answer:
                error = answer["error"]
                raise ChainError(f"{method} (request {k} of a batch of {len(calls)}): "
                                 f"{error.get('message', error) if isinstance(error, dict) else error}")  # fmt: skip
            out.append(answer.get("result"))
        return out

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class _Provider(HTTPProvider):
    """web3's HTTP provider over the backend's keep-alive connection (:class:`_Rpc`), so that web3's
    own requests (the deployment, the indexer's head check, view calls) skip ``requests`` too.
    Requests and answers are encoded and decoded by web3 as usual; a transport failure is a
    ``ConnectionError`` (which the indexer retries, as it does web3's own)."""

    def __init__(self, rpc: _Rpc) -> None:
        super().__init__(rpc.url, request_kwargs={"timeout": rpc.timeout})
        self._rpc = rpc

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        body = self.encode_rpc_request(method, params)
        try:
            raw = self._rpc.post_bytes(str(method), body)
        except ChainError as exc:
            raise ConnectionError(str(exc)) from exc
        return self.decode_rpc_response(raw)


@dataclass
class _Tx:
    """One transaction of a round and the intent it belongs to: built with its sender's nonce
    reserved, signed when its block is sent (its gas price depends on its place in the block)."""

    intent: int  # index in the round
    sender: _Sender
    nonce: int
    to: str
    data: bytes
    hash: str = ""
    raw: str = ""


@dataclass
class TxStats:
    """Transactions sent and confirmed, and the wall time spent in :meth:`ChainBackend.apply` and
    :meth:`ChainBackend.begin_step` (building, signing, sending, mining, confirming)."""

    transactions: int = 0
    reverted: int = 0
    blocks: int = 0
    seconds: float = 0.0

    @property
    def per_second(self) -> float:
        return self.transactions / self.seconds if self.seconds > 0 else 0.0


def sign_legacy(key: coincurve.PrivateKey, nonce: int, gas_price: int, gas: int, to: str, data: bytes,
                chain_id: int) -> tuple[bytes, bytes]:  # fmt: skip
    """A signed EIP-155 legacy transaction calling ``to`` with ``data`` (no value): ``(raw, hash)``.

    Notes
    -----
    The signing hash is ``keccak(rlp([nonce, gasPrice, gas, to, 0, data, chainId, 0, 0]))``; the raw
    transaction is ``rlp([nonce, gasPrice, gas, to, 0, data, v, r, s])`` with ``v = recid + 35 + 2·chainId``
    (what eth-account's ``sign_transaction`` produces for the same fields, several times faster).
    """
    dest = bytes.fromhex(to.removeprefix("0x"))
    unsigned = [nonce, gas_price, gas, dest, 0, data]
    sig = key.sign_recoverable(keccak(rlp.encode([*unsigned, chain_id, 0, 0])), hasher=None)
    r, s, recid = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big"), sig[64]
    raw = rlp.encode([*unsigned, recid + 35 + 2 * chain_id, r, s])
    return raw, keccak(raw)


@dataclass
class _Round:
    """What a round will send: transactions in order, and the outcome of intents refused before sending."""

    txs: list[_Tx] = field(default_factory=list)
    refused: dict[int, Outcome] = field(default_factory=dict)


class ChainBackend:
    """A scenario on a fresh Anvil with the real contracts, engine and signatures (module notes).

    Parameters
    ----------
    scenario : Scenario
        Its ``[protocol]`` parameters and risk configuration are deployed; its start time is step 0.
    accounts : int, optional
        Agent accounts ``sim_account(seed, i)`` whose keys are derived up front (default: the scenario's
        populations plus one, the runner's house market maker); an agent account beyond them is derived
        when it first acts. Each account is funded with gas before its first transaction.
    seed : int, optional
        Seed of the account keys (default ``scenario.run.seed``): the run's seed.
    risk_signers, risk_quorum, price_signers, price_quorum : int
        The devnet's signer sets (``dev_signers``), by default two of three each.
    workdir : Path, optional
        Where the engine publishes its rounds (default: a temporary folder removed by :meth:`close`).
    """

    name = "chain"

    def __init__(self, scenario: Scenario, accounts: int | None = None, *, seed: int | None = None,
                 risk_signers: int = 3, risk_quorum: int = 2, price_signers: int = 3, price_quorum: int = 2,
                 workdir: Path | None = None) -> None:  # fmt: skip
        if tuple(scenario.underlyings) != ("BTC", "ETH"):
            raise InputError("market.underlyings", f"the chain backend deploys BTC and ETH, in that order; the "
                             f"scenario has {list(scenario.underlyings)}")  # fmt: skip
        self.scenario = scenario
        self.seed = scenario.run.seed if seed is None else seed
        self.stats = TxStats()
        self._tmp = None if workdir is not None else tempfile.mkdtemp(prefix="pmsim-chain-")
        self.workdir = workdir if workdir is not None else Path(self._tmp or ".")
        self.node: Anvil | None = start_anvil(
            timestamp=scenario.run.start - SETUP_SECONDS,
            extra=("--order", "fees", "--gas-limit", str(10**15),
                   "--base-fee", "0", "--no-priority-fee",
                   # the states of the last blocks stay in memory; older ones are dropped rather than
                   # written to disk one per block (Anvil's default: a cost that grew with the chain)
                   "--max-persisted-states", "0"),
        )  # fmt: skip
        try:
            self._setup(accounts, risk_signers, risk_quorum, price_signers, price_quorum)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ set-up
    def _setup(self, accounts: int | None, risk_n: int, risk_q: int, price_n: int, price_q: int) -> None:
        assert self.node is not None
        self.rpc = _Rpc(self.node.url)
        self.w3 = Web3(_Provider(self.rpc))
        self.rpc("anvil_setBlockTimestampInterval", 1)  # the deployment's blocks: one a second, reproducible
        onchain, liquidation = self.scenario.protocol_params()
        risk, price = dev_signers("risk", risk_n), dev_signers("price", price_n)
        config = self.scenario.risk_config
        cfg = DeployConfig(risk_signers=[s.address for s in risk], price_signers=[s.address for s in price],
                           risk_quorum=risk_q, price_quorum=price_q, params=onchain, liquidation=liquidation,
                           engine_config_hash=config.canonical_hash())  # fmt: skip
        self.deployer = ROOT_ROLE_KEYS["deployer"]
        self.p: Protocol = deploy_protocol(self.w3, self.deployer, cfg, self.node.url)
        self.rpc("anvil_removeBlockTimestampInterval")
        self.rpc("evm_setAutomine", False)
        signers = [LocalSigner(s._key.to_bytes(), self.p.domain("RiskOracle")) for s in risk]
        self._indexer = indexer = Indexer(self.p, confirmations=0, checkpoint=None)
        self.engine = Engine(self.p, EngineCore(config, self.p.deployment), indexer, signers, ROOT_ROLE_KEYS["engine"],
                             self.workdir)  # fmt: skip
        self._price_signers: list[Signer] = list(price)
        self._price_quorum: int | None = None
        self._margins: tuple[str, tuple[list[str], MarginResult]] | None = None
        self._root_margins: tuple[list[str], MarginResult] | None = None
        self._order_signers: dict[str, Signer] = {}
        self._exchange_domain = self.p.domain("Exchange")
        self._abi_cache: dict[tuple[str, str], tuple[bytes, list[str], list[str]]] = {}
        n = accounts if accounts is not None else 1 + sum(pop.count for pop in self.scenario.agents)
        self._keys: dict[str, str] = {}
        self._max_accounts = max(2 * n, n + SPARE_ACCOUNTS)
        self._derive(n)
        self._senders: dict[str, _Sender] = {}
        self._approved: set[tuple[str, str]] = set()
        self._order_nonce = 0
        self.deployment = self.p.deployment
        self.tokens = {sym: t.address for sym, t in self.p.deployment.tokens.items()}
        self.symbols = {addr: sym for sym, addr in self.tokens.items()}
        self.roles = {"insurance_fund": self.p.fund.address, "fee_collector": self.p.deployment.fee_collector}
        self._last_time = int(self.w3.eth.get_block("latest")["timestamp"])
        self._fed = False  # whether the indexer took the latest mined block from _mine
        self._state = self._synced()

    # ------------------------------------------------------------------ Backend
    def begin_step(self, step: int, step_start: int, prices: Sequence[int]) -> None:
        """Post the step's price round (and fix the settlement prices it decides) in one block at
        :func:`price_time`; the engine's status root in the block at :func:`root_time`."""
        t0 = time.perf_counter()
        n = len(self.p.deployment.underlyings)
        ticks = [int(x) for x in prices]
        if len(ticks) != n or any(x <= 0 or x % TICK for x in ticks):
            raise InputError("prices", f"expected {n} positive prices on the tick grid (1e18), got {list(prices)}")
        when = price_time(step_start)
        self._check_time(when)
        latest = self._state.prices.round
        signers = self._price_signers_for(ticks, when)
        sigs = sign_price_round(self.p.domain("PriceFeed"), PriceRound(latest + 1, when, tuple(ticks)), signers)
        txs = [self._tx(0, ROOT_ROLE_KEYS["prices"], self.p.feed, "post", when, ticks, sigs)]
        for underlying, expiry in self._due_settlements(when):
            rnd = self.engine._first_round_at_or_after(expiry, latest) or latest + 1
            txs.append(self._tx(0, ROOT_ROLE_KEYS["prices"], self.p.instruments, "fixSettlement", underlying, expiry,
                                rnd))  # fmt: skip
        statuses = self._mine(when, txs)
        if not all(statuses):
            errors = [self._revert_name(tx.hash) for tx, ok in zip(txs, statuses, strict=True) if not ok]
            raise ChainError(f"step {step}: the price round at {when} was refused: {', '.join(errors)}")
        self._state = self._synced()
        self._post_root(root_time(step_start))
        self._state = self._synced()
        self.stats.seconds += time.perf_counter() - t0

    def _price_signers_for(self, ticks: list[int], when: int) -> list[Signer]:
        """``PriceService._signers_for``' rule: the quorum, or every signer when the feed's own
        ``signersRequired`` says the move needs them (asked of the feed at the latest block)."""
        required = int(self._call(self.p.feed, "signersRequired", when, ticks)[0])
        if self._price_quorum is None:
            self._price_quorum = int(self._call(self.p.feed, "quorum")[0])
        return self._price_signers if required > self._price_quorum else self._price_signers[: self._price_quorum]

    def _post_root(self, when: int) -> None:
        """The engine's round (``Engine.run_round`` without its settlement fixes, already in the price
        block): every account's status leaf on the price block's state, the tree published and its root
        signed by the quorum and posted in one block at ``when``; an empty block when the engine would
        post nothing (no price round, a stale feed, no account)."""
        state, engine = self._state, self.engine
        txs: list[_Tx] = []
        result: tuple[int, StatusRoot, StatusTree, int] | None = None
        self._root_margins = None
        leaves = []
        if state.prices.round and rules.feed_fresh(state.feed_fresh_until, state.timestamp) and state.accounts:
            self._root_margins = engine.core.compute_all(state)  # kept for root_margins()
            leaves = engine.core.status_leaves(state, self._root_margins)
        if leaves:
            tree = StatusTree.build(leaves)
            number = (state.root.round if state.root is not None else 0) + 1
            issued, expiry = engine._window(state)
            root = StatusRoot(number, tree.root, state.prices.round, issued, expiry, state.params_hash)
            sigs = engine._collect(SignJob(state.block, root=root), state)
            engine._publish(number, tree, root, state.block)
            txs.append(self._tx(0, ROOT_ROLE_KEYS["engine"], self.p.oracle, "postRoot", root.as_tuple(), sigs))
            result = (number, root, tree, state.block)
        statuses = self._mine(when, txs)  # signs the transactions: their hashes are known from here
        if not all(statuses):
            raise ChainError(f"the status root at {when} was refused: {self._revert_name(txs[0].hash)}")
        if result is not None:
            engine.latest = RoundResult(*result, txs[0].hash)

    def _call(self, contract: Contract, fn: str, *args: Any) -> tuple[Any, ...]:
        """A view call at the latest block over the plain RPC, decoded (custom errors raised decoded)."""
        data = self._calldata(contract, fn, args)
        try:
            out = self.rpc("eth_call", {"to": contract.address, "data": data}, "latest")
        except ChainError as exc:
            raise ChainError(f"{fn}: {exc}") from None
        types = self._abi_cache[(contract.address, fn)][2]
        return tuple(decode(types, bytes.fromhex(out.removeprefix("0x"))))

    def apply(self, when: int, intents: Sequence[Intent]) -> list[Outcome]:
        """One round: every intent's transactions signed and sent in order, one block at ``when``."""
        t0 = time.perf_counter()
        self._check_time(when)
        seen: set[str] = set()
        for intent in intents:
            twice = seen.intersection(accounts_of(intent))
            if twice:
                raise InputError("intents", f"account {sorted(twice)[0]} appears twice in one round (use schedule())")
            seen.update(accounts_of(intent))
        plan = _Round()
        state = self._state
        for i, intent in enumerate(intents):
            try:
                plan.txs += self._build(i, intent, state, when)
            except PmsimError as exc:
                plan.refused[i] = Outcome(intent, False, refusal(exc), str(exc))
        statuses = self._mine(when, plan.txs)
        failed: dict[int, str] = {}
        for tx, ok in zip(plan.txs, statuses, strict=True):
            if not ok and tx.intent not in failed:
                failed[tx.intent] = self._revert_name(tx.hash)
        outcomes = []
        for i, intent in enumerate(intents):
            if i in plan.refused:
                outcomes.append(plan.refused[i])
            elif i in failed:
                outcomes.append(Outcome(intent, False, failed[i].split("(")[0], failed[i]))
            else:
                outcomes.append(Outcome(intent, True))
        self._state = self._synced()
        self.stats.seconds += time.perf_counter() - t0
        return outcomes

    def _synced(self) -> ProtocolState:
        """The indexer's state after the latest mined block: the indexer's own (live) state when
        :meth:`_mine` fed it the block, else after the engine's refresh (a sync from the node).

        Not a copy: it changes in place when the next block is applied, as the twin's state does.
        Every figure the engine remembers is keyed by the block (``EngineCore``'s market key), and
        :meth:`state` hands out copies. The engine's follower, whose snapshot copied every account
        at every block (most of this backend's Python time at 1,000 accounts, with the garbage
        collections the copies caused), is used only when the indexer was not fed.
        """
        if not self._fed:
            self.engine.refresh()
        self._fed = False
        return self._indexer.state

    def state(self) -> ProtocolState:
        """The protocol's state as the indexer rebuilt it from the chain's events (a copy)."""
        return self._state.copy()

    def margins(self) -> tuple[list[str], MarginResult]:
        """``EngineCore.compute_all`` of the state now (remembered until the next block)."""
        key = self._state.block_hash
        if self._margins is None or self._margins[0] != key:
            self._margins = (key, self.engine.core.compute_all(self._state))
        return self._margins[1]

    def root_margins(self) -> tuple[list[str], MarginResult]:
        """The figures of the step's status root (see ``Backend.root_margins``)."""
        return self._root_margins if self._root_margins is not None else self.margins()

    def auctions(self) -> dict[str, AuctionRecord]:
        """``Liquidator.auctionOf`` of every account the indexer shows frozen (in auction)."""
        out = {}
        for account, acct in sorted(self._state.accounts.items()):
            if not acct.frozen:
                continue
            view = fetch_auction(self.p, account, self._state.block)
            if view.active:
                out[account] = AuctionRecord(account, view.version, view.emergency, view.rules_state(), view.credit,
                                             view.nonce)  # fmt: skip
        return out

    def close(self) -> None:
        """Stop Anvil and remove the temporary folder (idempotent)."""
        rpc = getattr(self, "rpc", None)
        if rpc is not None:
            rpc.close()
        if self.node is not None:
            self.node.stop()
            self.node = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> ChainBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ intents -> transactions
    def _build(self, i: int, intent: Intent, state: ProtocolState, when: int) -> list[_Tx]:
        """The signed transactions of one intent (engine attestations on ``state``); raises the
        engine's refusal as a :class:`PmsimError`."""
        p = self.p
        if isinstance(intent, Deposit):
            token = self._token(intent.token)
            key = self._key(intent.account)
            txs = [self._tx(i, key, p.tokens[intent.token], "mint", intent.account, intent.amount)]
            if (intent.account, intent.token) not in self._approved:
                txs.append(self._tx(i, key, p.tokens[intent.token], "approve", p.vault.address, MAX_UINT))
                self._approved.add((intent.account, intent.token))
            return [*txs, self._tx(i, key, p.vault, "deposit", token, intent.amount, intent.account)]
        if isinstance(intent, Withdraw):
            token = self._token(intent.token)
            acct = state.accounts.get(intent.account)
            risky = acct is not None and (bool(acct.positions) or acct.cash < 0)
            proof = self._attest(state, WithdrawRequest(intent.account, token, intent.amount)).proof() if risky \
                else _empty_proof()  # fmt: skip
            return [self._tx(i, self._key(intent.account), p.vault, "withdraw", token, intent.amount, intent.account,
                             proof)]  # fmt: skip
        if isinstance(intent, Trade):
            return [self._trade(i, intent, state, when)]
        if isinstance(intent, ListInstrument):
            return [self._tx(i, self.deployer, p.instruments, "list", intent.kind, intent.underlying, intent.expiry,
                             intent.strike)]  # fmt: skip
        if isinstance(intent, StartAuction | RefreshAuction):
            latest = self.engine.latest
            try:
                if latest is None:
                    raise InputError("account", "no status root posted yet")
                leaf, path = latest.tree.leaf(intent.account), latest.tree.proof(intent.account)
            except InputError as exc:
                raise NoStatusLeafError(str(exc)) from None
            fn = "start" if isinstance(intent, StartAuction) else "refresh"
            return [self._tx(i, self._key(intent.keeper), p.liquidator, fn, intent.account, leaf.as_tuple(), path)]
        if isinstance(intent, Bid):
            version = fetch_auction(p, intent.account, state.block).version
            req = BidRequest(intent.keeper, intent.account, version, intent.fraction, intent.worst_price)
            signed = self._attest(state, req)
            return [self._tx(i, self._key(intent.keeper), p.liquidator, "bid", intent.account, intent.fraction,
                             intent.worst_price, version, signed.proof())]  # fmt: skip
        if isinstance(intent, Settle):
            return [self._tx(i, ROOT_ROLE_KEYS["relayer"], p.settler, "settleExpired", intent.instrument,
                             list(intent.accounts))]  # fmt: skip
        raise InputError("intent", f"unknown intent {intent!r}")

    def _trade(self, i: int, t: Trade, state: ProtocolState, when: int) -> _Tx:
        if t.size <= 0:
            raise InputError("size", "must be positive")
        maker_delta = -t.size if t.taker_buys else t.size
        fees = {role: Engine._fee(state, d, t.price, role) for role, d in (("maker", maker_delta),
                                                                           ("taker", -maker_delta))}  # fmt: skip
        m_att = self._attest(state, TradeRequest(t.maker, t.instrument, maker_delta, t.price, fees["maker"]))
        t_att = self._attest(state, TradeRequest(t.taker, t.instrument, -maker_delta, t.price, fees["taker"]))
        m_order = self._order(t.maker, t.instrument, not t.taker_buys, t.size, t.price, when, maker=True)
        t_order = self._order(t.taker, t.instrument, t.taker_buys, t.size, t.price, when, maker=False)
        return self._tx(i, ROOT_ROLE_KEYS["relayer"], self.p.exchange, "trade", m_order, t_order, t.size,
                        m_att.proof(), t_att.proof())  # fmt: skip

    def _order(self, account: str, instrument: int, buy: bool, size: int, price: int, when: int,
               *, maker: bool) -> tuple[Any, bytes]:  # fmt: skip
        self._order_nonce += 1
        o = Order.own(account, instrument, buy, size, price, self._order_nonce, when + 3600, maker=maker)
        signer = self._order_signers.get(account)
        if signer is None:
            signer = self._order_signers[account] = Signer(self._key(account))
        return o.as_tuple(), sign_order(self._exchange_domain, o, signer)

    def _attest(self, state: ProtocolState, req: TradeRequest | WithdrawRequest | BidRequest) -> SignedAttestation:
        """The engine's attestation of ``req`` on ``state`` with its quorum of signatures: what
        ``Engine._attest`` serves, on the round's snapshot (raises the engine's refusal)."""
        issued, expiry = self.engine._window(state)
        auction = fetch_auction(self.p, req.account, state.block) if isinstance(req, BidRequest) else None
        att = checked_attestation(self.engine.core, state, req, issued, expiry, auction)
        return SignedAttestation(att, self.engine._collect(SignJob(state.block, att, req), state), state.block)

    # ------------------------------------------------------------------ transactions
    def _calldata(self, contract: Contract, fn: str, args: Sequence[Any]) -> str:
        """``selector || abi.encode(args)`` from the function's ABI entry, looked up once (web3's
        ``encode_abi`` searches and validates the whole ABI on every call: most of a round's cost)."""
        key = (contract.address, fn)
        entry = self._abi_cache.get(key)
        if entry is None:
            abi: list[dict[str, Any]] = [dict(i) for i in contract.abi]
            [item] = [i for i in abi if i.get("type") == "function" and i.get("name") == fn]
            types = [_abi_type(i) for i in item["inputs"]]
            selector = function_signature_to_4byte_selector(f"{fn}({','.join(types)})")
            entry = self._abi_cache[key] = (selector, types, [_abi_type(o) for o in item["outputs"]])
        selector, types, _ = entry
        return "0x" + (selector + encode(types, list(args))).hex()

    def _tx(self, intent: int, key: str, contract: Contract, fn: str, *args: Any) -> _Tx:
        data = bytes.fromhex(self._calldata(contract, fn, args)[2:])
        sender = self._sender(key)
        sender.nonce += 1
        return _Tx(intent, sender, sender.nonce - 1, contract.address, data)

    def _sender(self, key: str) -> _Sender:
        s = self._senders.get(key)
        if s is None:
            account: LocalAccount = Account.from_key(key)
            if key not in ROOT_ROLE_KEYS.values():
                self.rpc("anvil_setBalance", account.address, hex(GAS_BALANCE))
            nonce = int(self.rpc("eth_getTransactionCount", account.address, "latest"), 16)
            s = self._senders[key] = _Sender(account, nonce, coincurve.PrivateKey(bytes(account.key)))
        return s

    def _mine(self, when: int, txs: Sequence[_Tx]) -> list[bool]:
        """Sign ``txs``, send them in one batch, mine them as one block at ``when`` in their order, and
        confirm them with the block's receipts (one more request); each one's success. The indexer is
        handed the block's header and logs (:meth:`Indexer.apply_block`): no further request.

        Notes
        -----
        The node may take a batch's transactions in any order; their order in the block is fixed by
        their gas prices instead: Anvil (``--order fees``) fills a block by decreasing gas price, a
        sender's transactions in nonce order, so transaction ``k`` of ``n`` pays
        ``GAS_PRICE + (n - 1 - k)`` wei per gas (the base fee is zero). The block is checked to hold
        exactly ``txs`` in order.
        """
        n, chain_id = len(txs), self.p.chain_id
        for k, tx in enumerate(txs):
            raw, tx_hash = sign_legacy(tx.sender.key, tx.nonce, GAS_PRICE + n - 1 - k, TX_GAS, tx.to, tx.data, chain_id)
            tx.raw, tx.hash = "0x" + raw.hex(), "0x" + tx_hash.hex()
        try:
            self.rpc.batch([("eth_sendRawTransaction", [tx.raw]) for tx in txs])
        except ChainError:
            self._senders.clear()  # nonces are re-read: nothing of this round is half-counted
            raise
        self.rpc("evm_mine", when)
        self._last_time = when
        block, receipts = self.rpc.batch([("eth_getBlockByNumber", ["latest", False]),
                                          ("eth_getBlockReceipts", ["latest"])])  # fmt: skip
        hashes = [tx.hash for tx in txs]
        if int(block["timestamp"], 16) != when or block["transactions"] != hashes \
                or [r["transactionHash"] for r in receipts] != hashes \
                or any(r["blockHash"] != block["hash"] for r in receipts):  # fmt: skip
            self._senders.clear()
            raise ChainError(f"the block at {when} does not hold the round's {len(txs)} transactions in order")
        self._fed = self._indexer.apply_block(block, [log for r in receipts for log in r["logs"]])
        ok = [int(r["status"], 16) == 1 for r in receipts]
        self.stats.transactions += len(txs)
        self.stats.reverted += ok.count(False)
        self.stats.blocks += 1
        return ok

    def _revert_name(self, tx_hash: str) -> str:
        """The custom error a mined transaction reverted with (its call trace's output, decoded)."""
        trace = self.rpc("debug_traceTransaction", tx_hash, {"tracer": "callTracer"})
        output = trace.get("output") or "0x"
        if output in ("0x", ""):
            return "Revert"
        err = self.p.decoder.decode(output)
        return f"{err.error_name}{err.error_args if err.error_args else ''}"

    def _check_time(self, when: int) -> None:
        if when <= self._last_time:
            raise InputError("when", f"{when} is not after the latest block's time {self._last_time}")

    def _due_settlements(self, now: int) -> list[tuple[int, int]]:
        """The expiries the engine fixes at ``now`` (``Engine.fix_settlements``' selection): expired,
        held by an account, not fixed yet."""
        state = self._state
        held = {iid for acct in state.accounts.values() for iid in acct.positions}
        return sorted({(ins.underlying, ins.expiry) for iid, ins in state.instruments.items()
                       if iid in held and ins.kind != Kind.PERP and 0 < ins.expiry <= now
                       and (ins.underlying, ins.expiry) not in state.settlements})  # fmt: skip

    def _derive(self, n: int) -> None:
        """Derive the keys of agent accounts up to index ``n`` (exclusive)."""
        for i in range(len(self._keys), n):
            address, key = sim_account(self.seed, i)
            self._keys[address] = key

    def _key(self, account: str) -> str:
        """The key of agent account ``account`` (derived further, up to twice the expected accounts
        and at least SPARE_ACCOUNTS more, if needed)."""
        while account not in self._keys and len(self._keys) < self._max_accounts:
            self._derive(min(self._max_accounts, 2 * len(self._keys) + 256))
        key = self._keys.get(account)
        if key is None:
            raise InputError("account", f"{account} is not an agent account sim_account({self.seed}, i) of this run")
        return key

    def _token(self, symbol: str) -> str:
        if symbol not in self.tokens:
            raise InputError("token", f"unknown token {symbol!r} (known: {', '.join(self.tokens)})")
        return self.tokens[symbol]


class NoStatusLeafError(PmsimError):
    """The latest status root holds no leaf of the account (refusal ``NoStatusLeaf``)."""


def throughput(accounts: int = 200, rounds: int = 10, seed: int = 0) -> dict[str, float]:
    """Transactions per second the chain backend sustains: ``accounts`` agents deposit, then ``rounds``
    rounds of ``accounts / 2`` perpetual trades between pairs (each side attested by the engine and
    signed, the trade sent, mined and confirmed, the state indexed). Returns the figures over the
    trading rounds: ``transactions``, ``seconds`` (wall), ``tx_per_s``, and the wall rate of the
    deposit round (three transactions per account: mint, approve, deposit) as ``deposit_tx_per_s``.

    ``scripts/bench_sim.py --chain`` reports the rate of a whole scenario; this is the plain figure::

        .venv/bin/python -c "from offchain.sim.chain_backend import throughput; print(throughput())"
    """
    from offchain.sim.backend import round_time
    from offchain.sim.scenario import scenario_from_mapping

    if accounts < 2 or accounts % 2:
        raise InputError("accounts", f"an even number of at least 2, got {accounts}")
    scenario = scenario_from_mapping({
        "run": {"name": "chain-throughput", "seed": seed, "steps": 1, "step_seconds": 3600},
        "market": {"model": "gbm", "underlyings": ["BTC", "ETH"], "initial_prices": [60_000.0, 3_000.0],
                   "vol": [0.5, 0.6], "correlation": 0.8},
        "risk": {"es": {"method": "none"}},
    })  # fmt: skip
    e18, usdc = 10**18, 10**6
    with ChainBackend(scenario, accounts) as b:
        start = scenario.run.start
        who = [sim_account(b.seed, i)[0] for i in range(accounts)]
        b.begin_step(0, start, [60_000 * e18, 3_000 * e18])
        b.apply(round_time(start, 0), [ListInstrument(0, 0, 0, 0)])
        t0 = time.perf_counter()
        out = b.apply(round_time(start, 1), [Deposit(a, "USDC", 1_000_000 * usdc) for a in who])
        deposit_s = time.perf_counter() - t0
        if not all(o.ok for o in out):
            raise ChainError(f"deposits refused: {[o.error for o in out if not o.ok][:3]}")
        sent, t0 = b.stats.transactions, time.perf_counter()
        for r in range(rounds):
            trades = [Trade(who[i], who[i + 1], 1, e18, 60_000 * e18, r % 2 == 0) for i in range(0, accounts, 2)]
            out = b.apply(round_time(start, 2 + r), trades)
            if not all(o.ok for o in out):
                raise ChainError(f"trades refused: {[o.error for o in out if not o.ok][:3]}")
        seconds = time.perf_counter() - t0
        txs = b.stats.transactions - sent
    return {"transactions": txs, "seconds": round(seconds, 3), "tx_per_s": round(txs / seconds, 1),
            "deposit_tx_per_s": round(3 * accounts / deposit_s, 1)}  # fmt: skip
