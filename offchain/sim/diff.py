"""Compare two protocol states (the twin's and the chain's) and name the first field that differs.

The differential test (``tests/sim/test_differential.py``) runs one scenario on both backends and
compares them after every round with :func:`diff_states` and :func:`diff_outcomes`; a difference is
reported as one line naming where it happened and the field path, e.g.::

    step 137 round 2: accounts[0xAb12..].positions[3].cost_basis: twin 1234 chain 1235

Contract addresses may differ between the backends, so collateral is compared by token **symbol**
(``collateral[WETH]``), and the insurance fund and the fee collector by **role** (``roles.insurance_fund``),
never by address; agent accounts are the same addresses on both (:func:`offchain.sim.backend.sim_account`).
An account missing on one side compares as an empty account (the indexer creates an account on any
event, the twin may not). Block numbers, block hashes and the status root (its hash depends on the
addresses in it) are not compared.

Compared, in this order: protocol-wide fields (time, prices, loss index, settlements, parameters),
instruments (kind, terms, funding state), the roles, then every account (effective cash, cash, loss
snapshot, deposit credit, risk nonce, frozen, collateral by symbol, positions: size, cost basis,
funding snapshot).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

from offchain.chain.client import Deployment
from offchain.chain.indexer import AccountState, ProtocolState
from offchain.errors import PmsimError
from offchain.risk.engine import MarginResult
from offchain.risk.fixed_point import attested_figures
from offchain.sim.backend import AuctionRecord, Backend, Intent, Outcome

ROLES = ("insurance_fund", "fee_collector")


@dataclass(frozen=True)
class Side:
    """One backend's state with what the comparison needs to map addresses: ``symbols`` (token
    address -> symbol) and ``roles`` (role -> address, see :data:`ROLES`)."""

    name: str
    state: ProtocolState
    symbols: Mapping[str, str]
    roles: Mapping[str, str]


@dataclass(frozen=True)
class Difference:
    """The first difference: the field path and both values."""

    path: str
    left: Any
    right: Any
    left_name: str = "twin"
    right_name: str = "chain"

    def message(self, where: str = "") -> str:
        prefix = f"{where}: " if where else ""
        return f"{prefix}{self.path}: {self.left_name} {_show(self.left)} {self.right_name} {_show(self.right)}"


def _show(v: Any) -> str:
    if isinstance(v, bytes):
        return "0x" + v.hex()
    return repr(v) if isinstance(v, str) else str(v)


def _short(address: str) -> str:
    return address if len(address) < 12 else f"{address[:6]}..{address[-4:]}"


class _Record(dict[str, Any]):
    """A dict of named fields: its keys print as ``.name`` in a path (data keys print as ``[key]``)."""


def _pairs(path: str, a: Any, b: Any) -> Iterator[tuple[str, Any, Any]]:
    """Leaf pairs of two values of the same shape (dataclasses by field, dicts by key, sequences by index)."""
    if is_dataclass(a) and is_dataclass(b) and not isinstance(a, type) and not isinstance(b, type):
        for f in fields(a):
            yield from _pairs(f"{path}.{f.name}", getattr(a, f.name), getattr(b, f.name, None))
    elif isinstance(a, Mapping) and isinstance(b, Mapping):
        named = isinstance(a, _Record)
        for k in (list(a) if named else sorted(set(a) | set(b), key=repr)):
            yield from _pairs(f"{path}.{k}" if named else f"{path}[{k}]", a.get(k), b.get(k))
    elif isinstance(a, list | tuple) and isinstance(b, list | tuple) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from _pairs(f"{path}[{i}]", x, y)
    else:
        yield path, a, b


def _first(pairs: Iterator[tuple[str, Any, Any]], left: str, right: str) -> Difference | None:
    for path, a, b in pairs:
        if a != b:
            return Difference(path.lstrip("."), a, b, left, right)
    return None


def _account_fields(acct: AccountState, loss_index: int, symbols: Mapping[str, str]) -> dict[str, Any]:
    collateral = {symbols.get(t, t): v for t, v in acct.collateral.items() if v != 0}
    positions = {iid: _Record(size=p.size, cost_basis=p.cost_basis, funding_snapshot=p.funding_snapshot)
                 for iid, p in acct.positions.items()}  # fmt: skip
    return _Record(
        effective_cash=acct.effective_cash(loss_index), cash=acct.cash, loss_snapshot=acct.loss_snapshot,
        deposit_credit=acct.deposit_credit, risk_nonce=acct.risk_nonce, frozen=acct.frozen,
        collateral=collateral, positions=positions,
    )


def _protocol_fields(s: ProtocolState, symbols: Mapping[str, str]) -> dict[str, Any]:
    collaterals = {symbols.get(t, t): (c.underlying, c.haircut) for t, c in s.collaterals.items()}
    return _Record(
        timestamp=s.timestamp, prices=s.prices, loss_index=s.loss_index, settlements=s.settlements,
        paused=s.paused, feed_fresh_until=s.feed_fresh_until, params=s.params, liquidation=s.liquidation,
        bands=s.bands, engine_config_hash=s.engine_config_hash, risk_quorum=s.risk_quorum,
        collaterals=collaterals,
    )


def diff_states(left: Side, right: Side) -> Difference | None:
    """The first field in which ``left`` and ``right`` differ (module notes for the order), or None."""
    a, b = left.state, right.state
    names = (left.name, right.name)
    d = _first(_pairs("", _protocol_fields(a, left.symbols), _protocol_fields(b, right.symbols)), *names)
    if d is not None:
        return d
    d = _first(_pairs("instruments", a.instruments, b.instruments), *names)
    if d is not None:
        return d
    empty = AccountState()
    for role in ROLES:
        ra, rb = a.accounts.get(left.roles[role], empty), b.accounts.get(right.roles[role], empty)
        d = _first(_pairs(f"roles.{role}", _account_fields(ra, a.loss_index, left.symbols),
                          _account_fields(rb, b.loss_index, right.symbols)), *names)  # fmt: skip
        if d is not None:
            return d
    skip = {left.roles[r] for r in ROLES} | {right.roles[r] for r in ROLES}
    for address in sorted((set(a.accounts) | set(b.accounts)) - skip):
        fa = _account_fields(a.accounts.get(address, empty), a.loss_index, left.symbols)
        fb = _account_fields(b.accounts.get(address, empty), b.loss_index, right.symbols)
        d = _first(_pairs(f"accounts[{_short(address)}]", fa, fb), *names)
        if d is not None:
            return d
    return None


def diff_outcomes(left: Sequence[Outcome], right: Sequence[Outcome], left_name: str = "twin",
                  right_name: str = "chain") -> Difference | None:  # fmt: skip
    """The first outcome whose intent, success or refusal name differs (details are free text, not
    compared)."""
    if len(left) != len(right):
        return Difference("outcomes.length", len(left), len(right), left_name, right_name)
    for i, (x, y) in enumerate(zip(left, right, strict=True)):
        for name in ("intent", "ok", "error"):
            if getattr(x, name) != getattr(y, name):
                return Difference(f"outcomes[{i}].{name}", getattr(x, name), getattr(y, name), left_name, right_name)
    return None


def diff_mappings(path: str, left: Any, right: Any, left_name: str = "twin",
                  right_name: str = "chain") -> Difference | None:  # fmt: skip
    """The first differing leaf of two values of the same shape (auctions, margins, records)."""
    return _first(_pairs(path, left, right), left_name, right_name)


# ---------------------------------------------------------------------- lockstep
class DivergenceError(PmsimError, AssertionError):
    """Two backends disagreed; the message names where (step, round) and the first field."""

    def __init__(self, where: str, difference: Difference) -> None:
        self.where, self.difference = where, difference
        super().__init__(difference.message(where))


def side(backend: Any, state: ProtocolState | None = None) -> Side:
    """``backend``'s state (default: now) with its token symbols and roles, from its ``deployment``."""
    dep: Deployment = backend.deployment
    roles = {"insurance_fund": dep.contracts["InsuranceFund"], "fee_collector": dep.fee_collector}
    symbols = {t.address: sym for sym, t in dep.tokens.items()}
    return Side(backend.name, backend.state() if state is None else state, symbols, roles)


class Lockstep:
    """A backend that drives two backends with the same calls and checks after every call that they
    agree: outcomes, the whole state (:func:`diff_states`), auctions and every account's attested
    margin figures. It answers with ``right``'s results (the agents decide on them), so a run through
    it is the run of ``right`` checked against ``left`` step by step; the first disagreement raises
    :class:`DivergenceError` naming the step, round and field.

    Parameters
    ----------
    left, right : Backend
        Usually the twin and the chain; each has a ``deployment`` (token symbols and roles).
    margins : bool
        Also compare every account's margin figures, in the contracts' fixed point, after each step's
        price round and root (what the agents decide the step on).
    """

    def __init__(self, left: Backend, right: Backend, *, margins: bool = True) -> None:
        self.left, self.right = left, right
        self.name = right.name
        self.deployment = getattr(right, "deployment", None)
        self.check_margins = margins
        self.step, self.round = -1, 0
        self.checks = 0
        self.outcomes: list[tuple[str, list[Outcome]]] = []  # every round's outcomes (right's), labelled
        self._compare("setup")

    def _where(self) -> str:
        return f"step {self.step} round {self.round}" if self.step >= 0 else "setup"

    def _compare(self, where: str, margins: bool = False) -> None:
        left, right = side(self.left), side(self.right)
        d = diff_states(left, right)
        if d is None:
            a, b = self.left.auctions(), self.right.auctions()
            d = diff_mappings("auctions", {k: (v.version, v.emergency, v.state) for k, v in a.items()},
                              {k: (v.version, v.emergency, v.state) for k, v in b.items()},
                              self.left.name, self.right.name)  # fmt: skip
        if d is None and margins and self.check_margins and right.state.prices.round:
            d = diff_mappings("root margins", _figures(self.left.root_margins()), _figures(self.right.root_margins()),
                              self.left.name, self.right.name)  # fmt: skip
        if d is not None:
            raise DivergenceError(where, d)
        self.checks += 1

    def begin_step(self, step: int, step_start: int, prices: Sequence[int]) -> None:
        self.step, self.round = step, 0
        self.left.begin_step(step, step_start, prices)
        self.right.begin_step(step, step_start, prices)
        self._compare(f"step {step} prices and root", margins=True)

    def apply(self, when: int, intents: Sequence[Intent]) -> list[Outcome]:
        where = self._where()
        a = self.left.apply(when, intents)
        b = self.right.apply(when, intents)
        d = diff_outcomes(a, b, self.left.name, self.right.name)
        if d is not None:
            raise DivergenceError(where, d)
        self.outcomes.append((where, b))
        self._compare(where)
        self.round += 1
        return b

    def state(self) -> ProtocolState:
        return self.right.state()

    def margins(self) -> tuple[list[str], MarginResult]:
        return self.right.margins()

    def root_margins(self) -> tuple[list[str], MarginResult]:
        return self.right.root_margins()

    def auctions(self) -> dict[str, AuctionRecord]:
        return self.right.auctions()

    def close(self) -> None:
        self.left.close()
        self.right.close()


def _figures(margins: tuple[list[str], MarginResult]) -> dict[str, Any]:
    """Every account's (margin equity, mark-to-market equity, IM, MM) as the engine attests them."""
    addresses, result = margins
    out: dict[str, Any] = {}
    for i, a in enumerate(addresses):
        m = result.account(i)
        f = attested_figures(m.margin_equity, m.mtm_equity, m.im, m.mm)
        out[_short(a)] = (f.margin_equity, f.mtm_equity, f.im, f.mm)
    return out
