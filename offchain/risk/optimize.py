r"""Margin optimiser: the cheapest trades that bring an account's IM down to a target.

The engine's IM is a convex, piecewise-linear function of the positions, so "minimise trading
cost subject to IM ≤ target" is a linear programme over the scenario P&L the engine has already
priced (``MarginEngine.pnl``), solved by SciPy's HiGHS.

Linear programme
----------------
Positions :math:`p = q + t^+ - t^-` over the account's instruments and the candidates
(:math:`q` held, :math:`t^\pm \ge 0` bought and sold), per-unit trading cost :math:`c`:

.. math::

    \min\ & c^\top (t^+ + t^-) \\
    \text{s.t. }\ & G \ge w_s\,(-P_s^\top p)\ \forall s \in \text{grid},\quad G \ge 0
        & \text{(joint grid loss)}\\
    & G_u \ge w_s\,(-P_{s,u}^\top p_u),\ G_u \ge 0,\quad G \ge (1 - c_{max}) \textstyle\sum_u G_u
        & \text{(offset cap)}\\
    & \mathrm{ES} \ge \zeta + \tfrac1\beta \textstyle\sum_j v_j,\ v_j \ge -P_j^\top p - \zeta,\ v_j \ge 0
        & \text{(Rockafellar–Uryasev)}\\
    & \text{core} \ge G,\ \text{core} \ge \mathrm{ES},\ \text{core} \ge \textstyle\sum_k m_k s_k,\
        s_k \ge -p_k,\ s_k \ge 0 & \text{(short-option minimum)}\\
    & e_k \ge |p_k| - \theta_k,\ e_k \ge 0,\quad \text{core} + \textstyle\sum_k u_k e_k \le \text{target}
        & \text{(concentration)}\\
    & \ell_k \le p_k \le h_k & \text{(position limits)}

with :math:`\beta = N(1 - \text{es\_level})` for :math:`N` tail scenarios. At the optimum every
auxiliary variable is tight where it matters, so the programme's IM is exactly the engine's rule
:math:`\max(G, \mathrm{ES}, \mathrm{SOM}) + \text{concentration}`; the result is re-checked
through :meth:`MarginEngine.what_if_trade` all the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog

from offchain._typing import Float64Array, Int64Array
from offchain.errors import InputError
from offchain.risk.accounts import AccountState
from offchain.risk.config import tail_count
from offchain.risk.engine import AccountMargin, MarginEngine
from offchain.risk.rules import position_rules


@dataclass(frozen=True)
class Candidate:
    """An instrument the optimiser may trade: engine row, cost per unit traded, position limits.

    ``lower``/``upper`` bound the *resulting* position (units of underlying).
    """

    row: int
    cost_per_unit: float
    lower: float
    upper: float


@dataclass(frozen=True)
class Optimisation:
    """The optimiser's answer.

    Attributes
    ----------
    feasible : bool
        Whether some trades within the limits reach the target.
    rows : ndarray of int
        Engine row of each candidate, in the order given.
    trades : ndarray
        Size traded per candidate (+ buy, − sell), in the order given.
    cost : float
        Trading cost of those trades.
    im_before, im_lp : float
        IM now, and IM after the trades according to the programme.
    after : AccountMargin or None
        The engine's own figures after the trades (fees paid, premiums at mark).
    message : str
        The solver's status message.
    """

    feasible: bool
    rows: Int64Array
    trades: Float64Array
    cost: float
    im_before: float
    im_lp: float
    after: AccountMargin | None
    message: str


def optimise_margin(
    engine: MarginEngine, state: AccountState, candidates: list[Candidate], target_im: float
) -> Optimisation:
    """Cheapest trades of ``candidates`` bringing ``state``'s IM to at most ``target_im``.

    Raises
    ------
    InputError
        A non-finite or negative target, no candidate, a candidate row out of range or listed
        twice, an expired candidate, a negative cost or ``lower > upper``; the field names it.
    """
    n_ins = len(engine.instruments)
    if not np.isfinite(target_im) or target_im < 0.0:
        raise InputError("target_im", f"must be a finite number >= 0, got {target_im!r}")
    cand_rows = np.array([c.row for c in candidates], dtype=np.int64)
    if not candidates:
        raise InputError("candidates", "no instrument to trade")
    if cand_rows.min() < 0 or cand_rows.max() >= n_ins or np.unique(cand_rows).size != cand_rows.size:
        raise InputError("candidates", "rows must be distinct instruments of the engine")
    for i, c in enumerate(candidates):
        if engine.valuation.expired[c.row]:
            raise InputError(f"candidates[{i}]", "instrument has expired")
        if not (np.isfinite(c.cost_per_unit) and c.cost_per_unit >= 0.0) or not c.lower <= c.upper:
            raise InputError(f"candidates[{i}]", "cost must be >= 0 and lower <= upper")
    before = engine.account(state)
    rows = np.union1d(state.rows, cand_rows)
    q = np.zeros(rows.size)
    q[np.searchsorted(rows, state.rows)] = state.sizes
    at = np.searchsorted(rows, cand_rows)
    solution = _solve(engine, rows, q, at, candidates, target_im)
    if solution is None:
        return Optimisation(False, cand_rows, np.zeros(len(candidates)), 0.0, before.im, before.im, None,
                            "infeasible: no trades within the limits reach the target")  # fmt: skip
    trades, im_lp, message = solution
    trades = np.where(np.abs(trades) < 1e-9, 0.0, trades)
    after_state = state
    cost = 0.0
    for c, size in zip(candidates, trades, strict=True):
        if size == 0.0:
            continue
        fee = abs(size) * c.cost_per_unit
        cost += fee
        price = max(float(engine.valuation.mark[c.row]), 1e-12)
        ins_id = int(engine.instruments.instrument_id[c.row])
        after_state = engine.what_if_trade(after_state, ins_id, float(size), price, fee).state
    return Optimisation(True, cand_rows, trades, cost, before.im, im_lp, engine.account(after_state), message)


def _solve(
    engine: MarginEngine, rows: Int64Array, q: Float64Array, at: Int64Array, candidates: list[Candidate],
    target: float,
) -> tuple[Float64Array, float, str] | None:  # fmt: skip
    cfg = engine.config
    n_grid = engine.grid.size
    pnl = engine.pnl[rows]  # (R, scenarios)
    grid, tail = pnl[:, :n_grid], pnl[:, n_grid:]
    w = engine.grid.weight
    under = engine.instruments.underlying[rows]
    n_u = len(cfg.underlyings)
    r, k, n_tail = rows.size, len(candidates), tail.shape[1]
    rules = position_rules(engine.instruments, engine.valuation, cfg)
    som = rules.short_option_min[rows]
    thr, unit = rules.concentration_threshold[rows], rules.concentration_unit[rows]
    # variable layout
    tp, tm = 0, k
    g, gu, zeta, v = 2 * k, 2 * k + 1, 2 * k + 1 + n_u, 2 * k + 2 + n_u
    es, core, s, e = v + n_tail, v + n_tail + 1, v + n_tail + 2, v + n_tail + 2 + r
    n_var = e + r
    d = sp.csr_matrix((np.ones(k), (at, np.arange(k))), shape=(r, k))  # candidate -> position row
    blocks: list[sp.spmatrix] = []
    rhs: list[Float64Array] = []

    def add(coef_pos: sp.spmatrix | Float64Array, extra: sp.spmatrix, const: Float64Array) -> None:
        """Rows ``coef_pos · p + extra · x <= const`` with ``p = q + D(t+ - t-)``."""
        cp = sp.csr_matrix(coef_pos) @ d
        block = sp.hstack([cp, -cp, sp.csr_matrix((cp.shape[0], n_var - 2 * k))]) + extra
        blocks.append(sp.csr_matrix(block))
        rhs.append(const - sp.csr_matrix(coef_pos) @ q)

    def unit_cols(n: int, col: int | Int64Array) -> sp.spmatrix:
        cols = np.broadcast_to(np.asarray(col), (n,))
        return sp.csr_matrix((np.full(n, -1.0), (np.arange(n), cols)), shape=(n, n_var))

    # joint grid: -w_s P_s.p - G <= 0
    add(-(grid * w).T, unit_cols(n_grid, g), np.zeros(n_grid))
    # per underlying: -w_s P_{s,u}.p_u - G_u <= 0
    for u in range(n_u):
        mask = (under == u).astype(np.float64)
        add(-(grid * w).T * mask, unit_cols(n_grid, gu + u), np.zeros(n_grid))
    # (1 - c) sum G_u - G <= 0
    cap = np.zeros((1, n_var))
    cap[0, gu : gu + n_u] = 1.0 - cfg.grid.max_offset_credit
    cap[0, g] = -1.0
    blocks.append(sp.csr_matrix(cap))
    rhs.append(np.zeros(1))
    if n_tail:
        # -P_j.p - zeta - v_j <= 0
        extra = unit_cols(n_tail, zeta) + unit_cols(n_tail, v + np.arange(n_tail))
        add(-tail.T, extra, np.zeros(n_tail))
        # zeta + sum v / beta - ES <= 0
        beta = tail_count(n_tail, cfg.es.es_level)
        row = np.zeros((1, n_var))
        row[0, zeta], row[0, v : v + n_tail], row[0, es] = 1.0, 1.0 / beta, -1.0
        blocks.append(sp.csr_matrix(row))
        rhs.append(np.zeros(1))
    # core >= G, core >= ES, core >= sum m s
    for col in (g, es):
        row = np.zeros((1, n_var))
        row[0, col], row[0, core] = 1.0, -1.0
        blocks.append(sp.csr_matrix(row))
        rhs.append(np.zeros(1))
    row = np.zeros((1, n_var))
    row[0, s : s + r], row[0, core] = som, -1.0
    blocks.append(sp.csr_matrix(row))
    rhs.append(np.zeros(1))
    eye = sp.identity(r, format="csr")
    add(-eye, unit_cols(r, s + np.arange(r)), np.zeros(r))  # -p - s <= 0
    add(eye, unit_cols(r, e + np.arange(r)), thr)  # p - e <= thr
    add(-eye, unit_cols(r, e + np.arange(r)), thr)  # -p - e <= thr
    row = np.zeros((1, n_var))
    row[0, core], row[0, e : e + r] = 1.0, unit
    blocks.append(sp.csr_matrix(row))
    rhs.append(np.array([target]))
    # position limits on candidates
    lower = np.array([c.lower for c in candidates])
    upper = np.array([c.upper for c in candidates])
    sel = sp.csr_matrix((np.ones(k), (np.arange(k), at)), shape=(k, r))
    add(sel, sp.csr_matrix((k, n_var)), upper)
    add(-sel, sp.csr_matrix((k, n_var)), -lower)
    cost = np.zeros(n_var)
    unit_cost = np.array([c.cost_per_unit for c in candidates]) + 1e-9  # ties: the smaller trade
    cost[tp : tp + k], cost[tm : tm + k] = unit_cost, unit_cost
    bounds: list[tuple[float | None, float | None]] = [(0.0, None)] * n_var
    bounds[zeta] = (None, None)
    res = linprog(cost, A_ub=sp.vstack(blocks, format="csr"), b_ub=np.concatenate(rhs), bounds=bounds,
                  method="highs")  # fmt: skip
    if res.status != 0:
        return None
    x = res.x
    im = float(x[core] + unit @ x[e : e + r])
    return x[tp : tp + k] - x[tm : tm + k], im, str(res.message)
