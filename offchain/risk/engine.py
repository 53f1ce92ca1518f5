r"""The margin engine: every account at once, one account fast, and what-if checks.

A :class:`MarginEngine` is built once per price round: it values every listed instrument, prices
each one once per scenario into the instrument × scenario P&L matrix and evaluates the
per-position rules. :meth:`MarginEngine.compute` then runs the compiled kernel
(:mod:`offchain.risk.kernel`) over the sparse book; :meth:`MarginEngine.account` runs the same
kernel code on one account in microseconds.

Margin rule (one rule, all parameters in :class:`~offchain.risk.config.RiskConfig`)
-----------------------------------------------------------------------------------
.. math::

    G &= \max\bigl(G_{joint},\ (1 - c_{max}) \textstyle\sum_u G_u\bigr)
        \quad\text{(grid loss, offset capped)}\\
    \text{credit} &= \textstyle\sum_u G_u - G \\
    \text{core} &= \max(G, \mathrm{ES}) \\
    \text{SOM add-on} &= \max(0,\ \mathrm{SOM} - \text{core}) \\
    \mathrm{IM} &= \text{core} + \text{SOM add-on} + \text{concentration} \\
    \mathrm{MM} &= \text{mm\_factor} \times \mathrm{IM}

with :math:`G_{joint}` the worst weighted loss over the joint grid, :math:`G_u` the same for the
account's positions on underlying :math:`u` alone, ES from the configured tail method (VaR is
reported only), SOM the short-option minimum and the concentration charge from
:mod:`offchain.risk.rules`. Equities:

.. math::

    E_{margin} &= \text{cash} + \textstyle\sum_c n_c p_c (1 - h_c)
        + \sum_k q_k\,\text{mark}_k - \text{cost\_basis} - \text{funding\_owed}\\
    E_{mtm} &= \text{the same with } h_c = 0

where linear marks are index prices (so ``Σ q mark − cost_basis`` is their unrealised P&L) and
option marks are their values.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any

import numpy as np

from offchain._typing import Float64Array, Int64Array
from offchain.errors import InputError, PricingError, SettlementMissingError
from offchain.models.black76 import Greeks
from offchain.risk.accounts import AccountBook, AccountState
from offchain.risk.config import RiskConfig, TailMethod, tail_count
from offchain.risk.instruments import InstrumentTable, Kind
from offchain.risk.kernel import margin_all, margin_one
from offchain.risk.market import MarketState
from offchain.risk.pricing import Valuation, instrument_greeks, scenario_pnl, value_instruments
from offchain.risk.rules import position_rules
from offchain.risk.scenarios import ScenarioBlock, build_grid, build_tail, describe, tail_key


@dataclass(frozen=True, eq=False)
class MarginResult:
    r"""Margin figures of every account, one array each (USD unless stated).

    Attributes
    ----------
    im, mm : ndarray
        Initial and maintenance margin.
    margin_equity, mtm_equity : ndarray
        Equity with and without collateral haircuts.
    grid_loss : ndarray
        Grid loss after the offset cap (the :math:`G` of the rule).
    es, var : ndarray
        Expected Shortfall and VaR of the tail scenarios (0 if ``es.method = "none"``).
    short_option_addon, concentration_addon : ndarray
        The two add-ons.
    worst_scenario : ndarray of int
        Index of the joint grid scenario with the worst weighted loss.
    standard_margin : ndarray
        Position-by-position standard margin, for comparison.
    standalone_grid_loss : ndarray
        :math:`\sum_u G_u`, the grid loss without cross-underlying offsets.
    offset_credit : ndarray
        Cross-underlying credit, ``standalone_grid_loss - grid_loss`` (>= 0).
    """

    im: Float64Array
    mm: Float64Array
    margin_equity: Float64Array
    mtm_equity: Float64Array
    grid_loss: Float64Array
    es: Float64Array
    var: Float64Array
    short_option_addon: Float64Array
    concentration_addon: Float64Array
    worst_scenario: Int64Array
    standard_margin: Float64Array
    standalone_grid_loss: Float64Array
    offset_credit: Float64Array

    def account(self, a: int) -> AccountMargin:
        """The figures of account ``a`` as plain Python numbers."""
        values = {f.name: getattr(self, f.name)[a].item() for f in fields(self)}
        return AccountMargin(**values)


@dataclass(frozen=True)
class AccountMargin:
    """One account's figures (same names and meaning as :class:`MarginResult`)."""

    im: float
    mm: float
    margin_equity: float
    mtm_equity: float
    grid_loss: float
    es: float
    var: float
    short_option_addon: float
    concentration_addon: float
    worst_scenario: int
    standard_margin: float
    standalone_grid_loss: float
    offset_credit: float


@dataclass(frozen=True)
class WhatIf:
    """A proposed action's post-action account state and its margin figures."""

    state: AccountState
    margin: AccountMargin


def _tail_parameters(n_tail: int, config: RiskConfig) -> tuple[Int64Array, Float64Array]:
    if n_tail == 0:
        return np.zeros(3, dtype=np.int64), np.ones(2)
    beta = tail_count(n_tail, config.es.es_level)
    j_es = math.floor(beta)
    j_var = math.floor(tail_count(n_tail, config.es.var_level))
    ti = np.array([max(j_es, j_var) + 1, j_es, j_var], dtype=np.int64)
    return ti, np.array([beta - j_es, beta])


class MarginEngine:
    """Margin of every account for one (configuration, instruments, market) round.

    Parameters
    ----------
    config : RiskConfig
    instruments : InstrumentTable
    market : MarketState
    tail_method : {"historical", "monte_carlo", "none"}, optional
        ES/VaR scenarios; defaults to ``config.es.method``.

    Raises
    ------
    InputError
        Instruments on an unknown underlying, or a market for a different set of underlyings.
    """

    def __init__(
        self,
        config: RiskConfig,
        instruments: InstrumentTable,
        market: MarketState,
        tail_method: TailMethod | None = None,
        *,
        previous: MarginEngine | None = None,
    ) -> None:
        n_under = len(config.underlyings)
        if market.spot.size != n_under:
            raise InputError("market.spot", f"needs {n_under} prices ({', '.join(config.symbols)})")
        if len(instruments) and int(instruments.underlying.max()) >= n_under:
            row = int(np.argmax(instruments.underlying >= n_under))
            raise InputError(f"instruments.underlying[{row}]", "no such underlying")
        self.config = config
        self.instruments = instruments
        self.market = market
        self.valuation: Valuation = value_instruments(instruments, market, config)
        method = tail_method or config.es.method
        self._tail_key = tail_key(config, market, method)
        self.grid: ScenarioBlock
        self.tail: ScenarioBlock | None
        if previous is not None and previous.config is config and previous._tail_key == self._tail_key:
            self.grid, self.tail = previous.grid, previous.tail
        else:
            self.grid = build_grid(config)
            self.tail = build_tail(config, market, method)
            previous = None
        self.pnl = _finite_readonly("scenario P&L", self._price_scenarios(previous), instruments)
        self._unit = _finite_readonly("position rules", self._unit_matrix(), instruments)
        n_tail = self.tail.size if self.tail is not None else 0
        self._ti, self._tf = _tail_parameters(n_tail, config)
        self._collateral_prices = self._collateral_price_vector()

    # ----------------------------------------------------------------------- set-up

    @cached_property
    def _kernel_args(
        self,
    ) -> tuple[Float64Array, Int64Array, int, Float64Array, Float64Array, Int64Array, Float64Array]:
        """The kernel's per-round inputs, shared by the batch and the single-account paths."""
        return (self.pnl, self.instruments.underlying, len(self.config.underlyings), self._unit, self.grid.weight,
                self._ti, self._tf)  # fmt: skip

    def _price_scenarios(self, previous: MarginEngine | None = None) -> Float64Array:
        """The instrument × scenario P&L matrix; with ``previous`` (an engine of the same configuration
        and scenario blocks), its rows of perpetuals are taken as they are when the instruments and the
        index prices are the same: a perpetual's row depends only on those (``S (m - 1)``), so a new
        block of the same price round (time moved on) reprices its dated instruments only."""
        blocks = [self.grid] + ([self.tail] if self.tail is not None else [])
        pnl = np.empty((len(self.instruments), sum(b.size for b in blocks)))
        only = None
        if previous is not None and self.instruments.same_as(previous.instruments) and np.array_equal(
            self.market.spot, previous.market.spot
        ):
            keep = self.instruments.kind == Kind.PERP
            pnl[keep] = previous.pnl[keep]
            only = ~keep
        start = 0
        for block in blocks:
            part = scenario_pnl(self.instruments, self.valuation, self.market, self.config, block, only=only)
            if only is None:
                pnl[:, start : start + block.size] = part
            else:
                pnl[only, start : start + block.size] = part[only]
            start += block.size
        return pnl

    def _unit_matrix(self) -> Float64Array:
        rules = position_rules(self.instruments, self.valuation, self.config)
        columns = (
            self.valuation.mark,
            rules.standard_long,
            rules.standard_short,
            rules.short_option_min,
            rules.concentration_threshold,
            rules.concentration_unit,
        )
        return np.ascontiguousarray(np.column_stack(columns)).reshape(len(self.instruments), 6)

    def _collateral_price_vector(self) -> tuple[Float64Array, Float64Array]:
        symbols = self.config.symbols
        prices = np.array(
            [
                1.0 if c.underlying == "" else float(self.market.spot[symbols.index(c.underlying)])
                for c in self.config.collateral
            ]
        )
        haircut = np.array([c.haircut for c in self.config.collateral])
        return prices, prices * (1.0 - haircut)

    # ----------------------------------------------------------------------- checks

    def _check_settled(self, rows: Int64Array) -> None:
        if not self.valuation.unsettled.any():
            return
        held = rows[self.valuation.unsettled[rows]]
        if held.size:
            r = int(held[0])
            u, expiry = int(self.instruments.underlying[r]), int(self.instruments.expiry[r])
            raise SettlementMissingError(
                f"market.settlements[{u},{expiry}]",
                f"instrument {int(self.instruments.instrument_id[r])} expired at {expiry} and has no settlement price",
            )

    def _check_collateral_width(self, width: int) -> None:
        expected = len(self.config.collateral)
        if width != expected:
            raise InputError("collateral", f"needs {expected} columns (one per collateral token)")

    # ----------------------------------------------------------------------- compute

    def compute(self, book: AccountBook) -> MarginResult:
        r"""Margin figures of every account of ``book``.

        Parameters
        ----------
        book : AccountBook
            Accounts × instruments positions (columns in this engine's instrument order) and
            balances; collateral columns in ``config.collateral`` order.

        Returns
        -------
        MarginResult
            One array per figure, indexed like the book's rows.

        Raises
        ------
        InputError
            Book shaped for other instruments or collateral tokens.
        SettlementMissingError
            An account holds an expired instrument without a settlement price.

        Notes
        -----
        Scan risk over the joint grid with weights :math:`w_s`, then the module's rule:

        .. math::

            G_{joint} = \max\Bigl(0,\ \max_s w_s \cdot -\sum_k q_k P_{i_k s}\Bigr), \qquad
            G_u = \max\Bigl(0,\ \max_s w_s \cdot -\sum_{k: u(i_k) = u} q_k P_{i_k s}\Bigr),

        :math:`\mathrm{IM} = \max(\max(G_{joint}, (1-c)\sum_u G_u),\ \mathrm{ES}) +` add-ons,
        ES and VaR from the tail scenarios (see :mod:`offchain.risk.kernel`).
        """
        if book.positions.shape[1] != len(self.instruments):
            raise InputError("positions", f"needs {len(self.instruments)} instrument columns")
        self._check_collateral_width(book.collateral.shape[1])
        self._check_settled(book.positions.indices)
        n = book.n_accounts
        raw = np.empty((n, 8))
        worst = np.empty(n, dtype=np.int64)
        csr = book.positions
        margin_all(csr.indptr, csr.indices, csr.data, *self._kernel_args, raw, worst)
        return self._result(raw, worst, book.cash, book.cost_basis, book.funding_owed, book.collateral)

    def account(self, state: AccountState) -> AccountMargin:
        """One account's figures, in microseconds: the batch kernel's own routine on one row.

        Returns exactly (bit for bit) what :meth:`compute` returns for the same account.

        Raises
        ------
        InputError
            Rows outside this engine's instruments or a collateral vector of the wrong length.
        SettlementMissingError
            The account holds an expired instrument without a settlement price.
        """
        if state.rows.size and (int(state.rows[0]) < 0 or int(state.rows[-1]) >= len(self.instruments)):
            raise InputError("positions", "instrument row out of range")
        self._check_collateral_width(state.collateral.size)
        self._check_settled(state.rows)
        raw = np.empty(8)
        worst = margin_one(state.rows, state.sizes, *self._kernel_args, raw)
        return self._result_one(raw.tolist(), int(worst), state)

    def _result_one(self, raw: list[float], worst: int, state: AccountState) -> AccountMargin:
        """:meth:`_result` for one account in plain floats: the same operations in the same order
        (IEEE doubles either way), so the same bits, without numpy's per-call overhead."""
        prices, haircut_prices = self._collateral_prices
        coll = coll_haircut = 0.0
        for t, amount in enumerate(state.collateral.tolist()):
            coll = coll + amount * float(prices[t])
            coll_haircut = coll_haircut + amount * float(haircut_prices[t])
        values = _figures(raw, worst, state.cash, coll, coll_haircut, state.cost_basis, state.funding_owed,
                          self.config, max)  # fmt: skip
        for name, value in values.items():  # every figure but the int worst_scenario is a float here
            if not math.isfinite(value):
                raise PricingError(f"{name}[0]: non-finite margin figure")
        return AccountMargin(**values)

    def _result(
        self,
        raw: Float64Array,
        worst: Int64Array,
        cash: Float64Array,
        cost_basis: Float64Array,
        funding_owed: Float64Array,
        collateral: Float64Array,
    ) -> MarginResult:
        prices, haircut_prices = self._collateral_prices
        coll = np.zeros(cash.size)
        coll_haircut = np.zeros(cash.size)
        for t in range(prices.size):
            coll = coll + collateral[:, t] * prices[t]
            coll_haircut = coll_haircut + collateral[:, t] * haircut_prices[t]
        result = MarginResult(**_figures(raw.T, worst, cash, coll, coll_haircut, cost_basis, funding_owed, self.config,
                                         np.maximum))  # fmt: skip
        _check_finite(result)
        return result

    # ----------------------------------------------------------------------- what-if

    def what_if_trade(
        self, state: AccountState, instrument_id: int, size_delta: float, price: float, fee: float
    ) -> WhatIf:
        """Margin after trading ``size_delta`` of ``instrument_id`` at ``price``, paying ``fee``.

        A linear trade adds ``size_delta × price`` to the cost basis; an option trade pays the
        premium ``size_delta × price`` from cash (receives it when selling). ``fee`` (>= 0) is
        paid from cash.
        """
        for name, value in (("size_delta", size_delta), ("price", price), ("fee", fee)):
            if not math.isfinite(value):
                raise InputError(name, f"must be a finite number, got {value!r}")
        if price <= 0.0 or fee < 0.0:
            raise InputError("price" if price <= 0.0 else "fee", "price must be > 0, fee >= 0")
        row = self.instruments.row_of(instrument_id)
        if self.valuation.expired[row]:
            raise InputError("instrument", f"instrument {instrument_id} has expired")
        option = int(self.instruments.kind[row]) >= Kind.CALL
        rows, sizes = _add_position(state, row, size_delta)
        new = AccountState.derived(
            rows,
            sizes,
            state.cash - fee - (size_delta * price if option else 0.0),
            state.cost_basis + (0.0 if option else size_delta * price),
            state.funding_owed,
            state.collateral,
        )
        return WhatIf(new, self.account(new))

    def what_if_withdrawal(self, state: AccountState, token: str, amount: float) -> WhatIf:
        """Margin after withdrawing ``amount`` of ``token`` (the quote asset debits cash).

        Raises
        ------
        InputError
            Unknown token, non-positive amount, or more than the balance (quote withdrawals
            never take cash below zero).
        """
        if not math.isfinite(amount) or amount <= 0.0:
            raise InputError("amount", f"must be a finite number > 0, got {amount!r}")
        cash, collateral = state.cash, state.collateral.copy()
        if token == self.config.quote:
            if amount > cash:
                raise InputError("amount", f"exceeds the cash balance {cash!r}")
            cash -= amount
        else:
            symbols = [c.symbol for c in self.config.collateral]
            if token not in symbols:
                raise InputError("token", f"unknown collateral token {token!r}")
            t = symbols.index(token)
            if amount > collateral[t]:
                raise InputError("amount", f"exceeds the {token} balance {collateral[t]!r}")
            collateral[t] -= amount
        new = AccountState(state.rows, state.sizes, cash, state.cost_basis, state.funding_owed, collateral)
        return WhatIf(new, self.account(new))

    # ----------------------------------------------------------------------- describe

    @cached_property
    def greeks(self) -> Greeks:
        """Per-unit value and Greeks of every instrument at the current market."""
        return instrument_greeks(self.instruments, self.valuation, self.config)

    def describe_scenario(self, index: int) -> str:
        """Human description of grid scenario ``index`` (as in ``worst_scenario``)."""
        return describe(self.grid, index, self.config.symbols)


def _figures(raw: Any, worst: Any, cash: Any, coll: Any, coll_haircut: Any, cost_basis: Any, funding_owed: Any,
             config: RiskConfig, maximum: Callable[[Any, Any], Any]) -> dict[str, Any]:  # fmt: skip
    """The margin rule on the kernel's fields, written once for the batch (arrays, ``np.maximum``) and
    the single-account path (floats, ``max``): the same operations in the same order, so the same bits."""
    joint, standalone, es, var, som, concentration, standard, mark = raw  # kernel.FIELDS
    positions = mark - cost_basis - funding_owed
    grid_loss = maximum(joint, (1.0 - config.grid.max_offset_credit) * standalone)
    core = maximum(grid_loss, es)
    som_addon = maximum(som - core, 0.0)
    im = core + som_addon + concentration
    return {
        "im": im,
        "mm": config.mm_factor * im,
        "margin_equity": cash + coll_haircut + positions,
        "mtm_equity": cash + coll + positions,
        "grid_loss": grid_loss,
        "es": es,
        "var": var,
        "short_option_addon": som_addon,
        "concentration_addon": concentration,
        "worst_scenario": worst,
        "standard_margin": standard,
        "standalone_grid_loss": standalone,
        "offset_credit": maximum(standalone - grid_loss, 0.0),
    }


def _add_position(state: AccountState, row: int, delta: float) -> tuple[Int64Array, Float64Array]:
    at = np.searchsorted(state.rows, row)
    if at < state.rows.size and state.rows[at] == row:
        sizes = state.sizes.copy()
        sizes[at] += delta
        return state.rows.copy(), sizes
    return np.insert(state.rows, at, row), np.insert(state.sizes, at, delta)


def _finite_readonly(what: str, values: Float64Array, instruments: InstrumentTable) -> Float64Array:
    """Freeze a per-instrument matrix after checking it is finite (max-reductions skip NaN)."""
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise PricingError(f"{what}: non-finite value for instrument {instruments.instrument_id[row]} (column {col})")
    values.setflags(write=False)
    return values


def _check_finite(result: MarginResult) -> None:
    for f in fields(result):
        values = getattr(result, f.name)
        if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
            account = int(np.argmax(~np.isfinite(values)))
            raise PricingError(f"{f.name}[{account}]: non-finite margin figure")
