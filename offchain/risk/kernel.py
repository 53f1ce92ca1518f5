r"""The compiled margin kernel: one pass over every account's positions.

For account :math:`a` with positions :math:`(i_k, q_k)` (its CSR row, ascending instrument
order) and the instrument × scenario P&L matrix :math:`P` (row-major, grid scenarios first, then
tail scenarios), the kernel forms

.. math::

    \mathrm{PnL}_{a,u,s} = \sum_{k:\,u(i_k) = u} q_k P_{i_k, s} \quad (\text{grid}), \qquad
    \mathrm{PnL}_{a,s} = \sum_k q_k P_{i_k, s} \quad (\text{tail}),

and reduces them on the spot to the account's figures (see :data:`FIELDS`): the joint grid
loss :math:`\max(0, \max_s w_s \cdot -\sum_u \mathrm{PnL}_{a,u,s})` and its scenario, the sum
of per-underlying standalone grid losses, Expected Shortfall and VaR of the tail losses
(:func:`_tail`), and the position sums (mark value, standard margin, add-on bases).

Determinism: every account is computed by one thread, its positions in CSR order, scenarios in
index order, underlyings in index order; no reduction spans accounts. ``fastmath`` is off, so
LLVM neither reassociates nor fuses multiply-adds. Results are therefore bit-identical for any
thread count, and :func:`margin_one` (the single-account fast path, same code) returns exactly
what :func:`margin_all` returns for that account.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from offchain._typing import Float64Array, Int64Array

#: Output columns of the kernel, in order.
FIELDS = ("grid_joint", "standalone", "es", "var", "som_base", "concentration", "standard", "mark")
#: Columns of the per-instrument unit matrix, in order.
UNIT_COLUMNS = ("mark", "standard_long", "standard_short", "som", "conc_threshold", "conc_unit")

_jit = nb.njit(cache=True, fastmath=False, nogil=True)
_CHUNKS = 512


@_jit
def _sift_up(heap: Float64Array, i: int) -> None:
    while i > 0:
        parent = (i - 1) // 2
        if heap[parent] <= heap[i]:
            return
        heap[parent], heap[i] = heap[i], heap[parent]
        i = parent


@_jit
def _sift_down(heap: Float64Array, i: int, n: int) -> None:
    while True:
        child = 2 * i + 1
        if child >= n:
            return
        if child + 1 < n and heap[child + 1] < heap[child]:
            child += 1
        if heap[i] <= heap[child]:
            return
        heap[i], heap[child] = heap[child], heap[i]
        i = child


@_jit
def _tail(acc: Float64Array, heap: Float64Array, ti: Int64Array, tf: Float64Array) -> tuple[float, float]:
    r"""Expected Shortfall and VaR of the losses ``-acc`` (historical-simulation estimators).

    ``ti = (cap, j_es, j_var)``, ``tf = (frac_es, beta_es)`` with :math:`\beta = n(1-\alpha)`,
    :math:`j = \lfloor\beta\rfloor`, ``frac = β - j``. With losses sorted descending
    :math:`L_{(1)} \ge L_{(2)} \ge \dots`:

    .. math::

        \mathrm{VaR}_\alpha = L_{(j+1)}, \qquad
        \mathrm{ES}_\alpha = \frac{1}{\beta}\Bigl(\sum_{i=1}^{j} L_{(i)}
            + (\beta - j)\, L_{(j+1)}\Bigr)

    (Acerbi & Tasche 2002). Only the ``cap = max(j_es, j_var) + 1`` largest losses are kept,
    in a bounded min-heap.
    """
    cap, j_es, j_var = ti[0], ti[1], ti[2]
    n = 0
    for s in range(acc.size):
        x = -acc[s]
        if n < cap:
            heap[n] = x
            _sift_up(heap, n)
            n += 1
        elif x > heap[0]:
            heap[0] = x
            _sift_down(heap, 0, n)
    for end in range(n - 1, 0, -1):  # heap-sort: largest loss ends at index 0
        heap[0], heap[end] = heap[end], heap[0]
        _sift_down(heap, 0, end)
    total = 0.0
    for j in range(j_es):
        total += heap[j]
    es = (total + tf[0] * heap[j_es]) / tf[1]
    return max(es, heap[j_es]), heap[j_var]


@_jit
def _positions(
    lo: int,
    hi: int,
    indices: Int64Array,
    data: Float64Array,
    pnl: Float64Array,
    under: Int64Array,
    unit: Float64Array,
    accg: Float64Array,
    acct: Float64Array,
    sums: Float64Array,
) -> None:
    """Accumulate the account's scenario P&L and its position sums (mark, standard, add-ons)."""
    n_grid = accg.shape[1]
    accg[:, :] = 0.0
    acct[:] = 0.0
    sums[:] = 0.0
    for k in range(lo, hi):
        i = indices[k]
        q = data[k]
        row = pnl[i]
        g = accg[under[i]]
        for s in range(n_grid):
            g[s] += q * row[s]
        for s in range(acct.size):
            acct[s] += q * row[n_grid + s]
        size = abs(q)
        sums[0] += q * unit[i, 0]
        sums[1] += size * (unit[i, 1] if q > 0.0 else unit[i, 2])
        if q < 0.0:
            sums[2] += size * unit[i, 3]
        excess = size - unit[i, 4]
        if excess > 0.0:
            sums[3] += excess * unit[i, 5]


@_jit
def _argmax(buf: Float64Array) -> tuple[float, int]:
    """(max, first index of the max) of ``buf``; four independent lanes, exact tie rule."""
    n = buf.size
    m = n - n % 4
    b0 = b1 = b2 = b3 = -np.inf
    i0, i1, i2, i3 = 0, 1, 2, 3
    for s in range(0, m, 4):
        if buf[s] > b0:
            b0, i0 = buf[s], s
        if buf[s + 1] > b1:
            b1, i1 = buf[s + 1], s + 1
        if buf[s + 2] > b2:
            b2, i2 = buf[s + 2], s + 2
        if buf[s + 3] > b3:
            b3, i3 = buf[s + 3], s + 3
    for s in range(m, n):
        if buf[s] > b0:
            b0, i0 = buf[s], s
    for b, i in ((b1, i1), (b2, i2), (b3, i3)):
        if b > b0 or (b == b0 and i < i0):
            b0, i0 = b, i
    return b0, i0


@_jit
def _max0(buf: Float64Array) -> float:
    """``max(0, max(buf))`` with four independent lanes (max is exact in any order)."""
    b0 = b1 = b2 = b3 = 0.0
    n = buf.size
    m = n - n % 4
    for s in range(0, m, 4):
        b0 = max(b0, buf[s])
        b1 = max(b1, buf[s + 1])
        b2 = max(b2, buf[s + 2])
        b3 = max(b3, buf[s + 3])
    for s in range(m, n):
        b0 = max(b0, buf[s])
    return max(max(b0, b1), max(b2, b3))


@_jit
def _grid(accg: Float64Array, weights: Float64Array, buf: Float64Array) -> tuple[float, float, int]:
    """(joint weighted grid loss >= 0, Σ standalone per-underlying losses, worst scenario).

    The joint P&L of scenario ``s`` is ``((accg[0, s] + accg[1, s]) + ...)``, its weighted
    loss ``weights[s] * -pnl``; the worst scenario is the first index of the largest one.
    """
    n_under, n_grid = accg.shape
    buf[:] = accg[0]
    for u in range(1, n_under):
        row = accg[u]
        for s in range(n_grid):
            buf[s] += row[s]
    for s in range(n_grid):
        buf[s] = weights[s] * -buf[s]
    joint, worst = _argmax(buf)
    standalone = 0.0
    for u in range(n_under):
        row = accg[u]
        for s in range(n_grid):
            buf[s] = weights[s] * -row[s]
        standalone += _max0(buf)
    return max(joint, 0.0), standalone, worst


@_jit
def _account(
    lo: int,
    hi: int,
    indices: Int64Array,
    data: Float64Array,
    pnl: Float64Array,
    under: Int64Array,
    unit: Float64Array,
    weights: Float64Array,
    ti: Int64Array,
    tf: Float64Array,
    scratch: tuple[Float64Array, Float64Array, Float64Array, Float64Array, Float64Array],
    out: Float64Array,
) -> int:
    accg, acct, heap, sums, buf = scratch
    _positions(lo, hi, indices, data, pnl, under, unit, accg, acct, sums)
    joint, standalone, worst = _grid(accg, weights, buf)
    es, var = _tail(acct, heap, ti, tf) if acct.size > 0 else (0.0, 0.0)
    out[0] = joint
    out[1] = standalone
    out[2] = es
    out[3] = var
    out[4] = sums[2]
    out[5] = sums[3]
    out[6] = sums[1]
    out[7] = sums[0]
    return worst


@_jit
def _scratch(
    n_under: int, n_grid: int, n_tail: int, cap: int
) -> tuple[Float64Array, Float64Array, Float64Array, Float64Array, Float64Array]:
    accg = np.empty((n_under, n_grid))
    return accg, np.empty(n_tail), np.empty(max(cap, 1)), np.empty(4), np.empty(n_grid)


@nb.njit(cache=True, fastmath=False, nogil=True, parallel=True)
def margin_all(
    indptr: Int64Array,
    indices: Int64Array,
    data: Float64Array,
    pnl: Float64Array,
    under: Int64Array,
    n_under: int,
    unit: Float64Array,
    weights: Float64Array,
    ti: Int64Array,
    tf: Float64Array,
    out: Float64Array,
    worst: Int64Array,
) -> None:
    """Fill ``out[a] = FIELDS`` and ``worst[a]`` for every account (CSR rows), in parallel."""
    n_acc = indptr.size - 1
    n_grid = weights.size
    n_tail = pnl.shape[1] - n_grid
    chunks = min(n_acc, _CHUNKS)
    for c in nb.prange(chunks):
        scratch = _scratch(n_under, n_grid, n_tail, ti[0])
        for a in range(c * n_acc // chunks, (c + 1) * n_acc // chunks):
            worst[a] = _account(
                indptr[a],
                indptr[a + 1],
                indices,
                data,
                pnl,
                under,
                unit,
                weights,
                ti,
                tf,
                scratch,
                out[a],
            )


@_jit
def margin_one(
    indices: Int64Array,
    data: Float64Array,
    pnl: Float64Array,
    under: Int64Array,
    n_under: int,
    unit: Float64Array,
    weights: Float64Array,
    ti: Int64Array,
    tf: Float64Array,
    out: Float64Array,
) -> int:
    """One account (positions ``indices``/``data``): fills ``out`` and returns the worst scenario."""
    n_grid = weights.size
    scratch = _scratch(n_under, n_grid, pnl.shape[1] - n_grid, ti[0])
    return int(_account(0, indices.size, indices, data, pnl, under, unit, weights, ti, tf, scratch, out))
