"""What a simulation backend is: the intents agents send, the outcomes they get, and the protocol.

A run (``offchain/sim/runner.py``) drives one :class:`Backend` through the steps of a scenario. Two
backends implement it and must agree to the unit (the differential test):

* the **twin** (``offchain/sim/twin.py``) applies every intent to an in-memory
  :class:`~offchain.chain.indexer.ProtocolState` with the one Python home of the contract rules
  (:mod:`offchain.rules`, through :mod:`offchain.sim.ledger`) and the risk engine's
  :class:`~offchain.engine.core.EngineCore`, no chain;
* the **chain** backend (``offchain/sim/chain_backend.py``) sends the same intents to the real contracts
  on Anvil, attested by the real engine, and reads the state back with the project's indexer.

Time is the scenario's: step ``k`` starts at ``start + k * step_seconds``. The step's price round is
posted at :func:`price_time`, the engine's status root at :func:`root_time`, and the agents' intents
go in *rounds*, round ``r`` at :func:`round_time` (one block on the chain, every transaction of it with
that timestamp, in the order given). An account appears at most once per round (an attestation is
bound to the account's risk nonce, so a second action of the same account in one block would be
stale): :func:`schedule` splits a list of intents into such rounds, keeping their order.

Amounts are the contracts' integers: quote and token amounts in token units, sizes and prices 1e18,
fractions WAD. An intent the protocol refuses has an :class:`Outcome` with ``ok = False`` and the
name of the refusal: the contract's custom error (``Vault_InsufficientCash``) or the engine's refusal
(``InsufficientMargin``, ``PriceOutOfBand``); both backends must name the same one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol as TypingProtocol

from eth_account import Account
from eth_utils import keccak

from offchain import rules
from offchain.chain.indexer import ProtocolState
from offchain.risk.engine import MarginResult

#: Seconds after a step's start at which its price round is posted, then its status root.
PRICE_OFFSET = 0
ROOT_OFFSET = 1
#: Round ``r`` of a step is mined ``FIRST_ROUND_OFFSET + r`` seconds after the step's start.
FIRST_ROUND_OFFSET = 2


def price_time(step_start: int) -> int:
    return step_start + PRICE_OFFSET


def root_time(step_start: int) -> int:
    return step_start + ROOT_OFFSET


def round_time(step_start: int, r: int) -> int:
    return step_start + FIRST_ROUND_OFFSET + r


# ----------------------------------------------------------------------------- intents
@dataclass(frozen=True)
class Deposit:
    """``account`` deposits ``amount`` of ``token`` (a symbol: ``USDC``, ``WBTC``, ``WETH``), minted to it first."""

    account: str
    token: str
    amount: int


@dataclass(frozen=True)
class Withdraw:
    """``account`` withdraws ``amount`` of ``token`` (attested by the engine when the account has positions)."""

    account: str
    token: str
    amount: int


@dataclass(frozen=True)
class Trade:
    """A fill of ``size`` (> 0, 1e18) of ``instrument`` at ``price`` (1e18, a multiple of TICK).

    ``maker`` and ``taker`` sign orders (``Order.isMaker`` set accordingly); ``taker_buys`` says which
    side buys. Each side is attested by the engine (IM after the trade, or the reducing rule).
    """

    maker: str
    taker: str
    instrument: int
    size: int
    price: int
    taker_buys: bool


@dataclass(frozen=True)
class ListInstrument:
    """The protocol lists an instrument (``Instruments.list``): ids are given in listing order."""

    kind: int
    underlying: int
    expiry: int
    strike: int


@dataclass(frozen=True)
class StartAuction:
    """``keeper`` starts a liquidation auction of ``account`` (proof: the latest status root's leaf)."""

    keeper: str
    account: str


@dataclass(frozen=True)
class RefreshAuction:
    """``keeper`` refreshes ``account``'s auction with the account's leaf of the latest status root
    (``Liquidator.refresh``). A frozen account may still make a fill that lowers its IM; that moves its
    risk nonce under the auction's snapshot, and every bid is refused (``Liquidator_StaleSnapshot``)
    until the snapshot is refreshed at the new nonce."""

    keeper: str
    account: str


@dataclass(frozen=True)
class Bid:
    """``keeper`` takes ``fraction`` (WAD) of ``account``'s auction, refusing a price below ``worst_price``."""

    keeper: str
    account: str
    fraction: int
    worst_price: int


@dataclass(frozen=True)
class Settle:
    """Anyone settles ``instrument`` (expired, settlement price fixed) for ``accounts``."""

    instrument: int
    accounts: tuple[str, ...]


Intent = Deposit | Withdraw | Trade | ListInstrument | StartAuction | RefreshAuction | Bid | Settle


def accounts_of(intent: Intent) -> tuple[str, ...]:
    """The accounts whose risk nonce or balances ``intent`` touches (at most once per round each)."""
    if isinstance(intent, Trade):
        return (intent.maker, intent.taker)
    if isinstance(intent, StartAuction | RefreshAuction | Bid):
        return (intent.keeper, intent.account)
    if isinstance(intent, Settle):
        return intent.accounts
    if isinstance(intent, ListInstrument):
        return ()
    return (intent.account,)


def schedule(intents: Iterable[Intent]) -> list[list[Intent]]:
    """Split ``intents`` into rounds in which no account appears twice, keeping their order.

    Intent ``i`` goes into the first round after the last round holding one of its accounts, so the
    order of any two intents sharing an account is kept, and the rounds are as few as that allows.
    """
    rounds: list[list[Intent]] = []
    last: dict[str, int] = {}
    for intent in intents:
        accts = accounts_of(intent)
        r = 1 + max((last.get(a, -1) for a in accts), default=-1) if accts else 0
        while len(rounds) <= r:
            rounds.append([])
        rounds[r].append(intent)
        for a in accts:
            last[a] = r
    return rounds


@dataclass(frozen=True)
class Outcome:
    """What became of one intent: ``ok``, or the name of the refusal (``error``) and a detail."""

    intent: Intent
    ok: bool
    error: str = ""
    detail: str = ""


@dataclass(frozen=True)
class AuctionRecord:
    """An active auction as ``Liquidator.auctionOf`` gives it: its version and the rules' state."""

    account: str
    version: int
    emergency: bool
    state: rules.AuctionState
    credit: int = 0  # the account's deposit credit at the snapshot (a bid credits deposits made since)
    nonce: int = 0  # the account's risk nonce at the snapshot (a bid needs it unchanged: else refresh first)

    def stale(self, state: ProtocolState) -> bool:
        """Whether the account's risk nonce moved under the snapshot (``Liquidator_StaleSnapshot``): no bid
        lands until the auction is refreshed (:class:`RefreshAuction`)."""
        acct = state.accounts.get(self.account)
        return acct is not None and acct.risk_nonce != self.nonce


def sim_account(seed: int, index: int) -> tuple[str, str]:
    """The address and private key of agent account ``index`` of a run with ``seed`` (deterministic).

    Both backends name accounts by these addresses; the chain backend funds them with gas on Anvil.
    """
    key = keccak(b"pmsim-sim-account" + seed.to_bytes(8, "big") + index.to_bytes(8, "big"))
    acct = Account.from_key(key)
    return str(acct.address), "0x" + key.hex()


# ----------------------------------------------------------------------------- backend
class Backend(TypingProtocol):
    """One way of running a scenario: the twin or the chain. See the module docstring."""

    name: str

    def begin_step(self, step: int, step_start: int, prices: Sequence[int]) -> None:
        """Post the step's price round (one 1e18 price per underlying) at :func:`price_time`, fix
        due settlement prices, and publish the engine's status root at :func:`root_time`."""
        ...

    def apply(self, when: int, intents: Sequence[Intent]) -> list[Outcome]:
        """Apply one round (no account twice) at time ``when``, in order; one outcome per intent."""
        ...

    def state(self) -> ProtocolState:
        """The protocol's state now (the twin's own; the chain's rebuilt by the indexer)."""
        ...

    def margins(self) -> tuple[list[str], MarginResult]:
        """Every account's margin figures now: ``EngineCore.compute_all(self.state())``."""
        ...

    def root_margins(self) -> tuple[list[str], MarginResult]:
        """The figures the step's status root was built from (``EngineCore.compute_all`` of the price
        block's state: what its leaves say, unrounded), or :meth:`margins` when the step posted no root.
        What the agents decide a step on."""
        ...

    def auctions(self) -> dict[str, AuctionRecord]:
        """Every account with an active liquidation auction (``Liquidator.auctionOf``)."""
        ...

    def close(self) -> None:
        """Release what the backend holds (Anvil, the engine); idempotent."""
        ...


def refusal(exc: Exception) -> str:
    """The name an :class:`Outcome` gives a refusal: the contract's custom error for a revert
    (``ContractRevertError.error_name``), else the exception's class name without ``Error``
    (``InsufficientMarginError`` → ``InsufficientMargin``, ``FeedStaleError`` → ``FeedStale``)."""
    name = getattr(exc, "error_name", None)
    if isinstance(name, str) and name:
        return name
    return type(exc).__name__.removesuffix("Error")
