r"""The compiled margin kernel: every account's scenario P&L, reduced on the spot.

For account :math:`a` with positions :math:`(i_k, q_k)` (its CSR row, ascending instrument
order) and the instrument × scenario P&L matrix :math:`P` (row-major, grid scenarios first, then
tail scenarios), the kernel forms

.. math::

    \mathrm{PnL}_{a,u,s} = \sum_{k:\,u(i_k) = u} q_k P_{i_k, s} \quad (\text{grid}), \qquad
    \mathrm{PnL}_{a,s} = \sum_k q_k P_{i_k, s} \quad (\text{tail}),

and reduces them to the account's figures (see :data:`FIELDS`): the joint grid loss
:math:`\max(0, \max_s w_s \cdot -\sum_u \mathrm{PnL}_{a,u,s})` and its scenario, the sum of
per-underlying standalone grid losses, Expected Shortfall and VaR of the tail losses
(:func:`_finish_tail`), and the position sums (mark value, standard margin, add-on bases).

Memory: the tail block of :math:`P` (thousands of scenarios) does not fit in cache, so accounts
are processed in groups of :data:`GROUP` and the tail in column blocks of :data:`BLOCK`: a group
reads each block of :math:`P` once while it sits in the core's L2 cache, and each account keeps
only a bounded heap of its largest losses between blocks.

Determinism: every account is computed by one thread; each scenario's P&L is summed over the
account's positions in CSR order (underlyings in index order for the joint grid P&L); losses
enter the heap in scenario order; no reduction spans accounts. ``fastmath`` is off, so LLVM
neither reassociates nor fuses multiply-adds. Results are therefore bit-identical for any
thread count, and :func:`margin_one` (the same group routine on a one-account book) returns
exactly what :func:`margin_all` returns for that account.
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
#: Accounts per group and tail scenarios per block (see the module notes).
GROUP = 256
BLOCK = 128


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
def _push_losses(acc: Float64Array, width: int, heap: Float64Array, n: int, cap: int) -> int:
    """Keep the ``cap`` largest of the losses ``-acc[:width]`` in the min-heap ``heap[:n]``."""
    for s in range(width):
        x = -acc[s]
        if n < cap:
            heap[n] = x
            _sift_up(heap, n)
            n += 1
        elif x > heap[0]:
            heap[0] = x
            _sift_down(heap, 0, n)
    return n


@_jit
def _finish_tail(heap: Float64Array, n: int, ti: Int64Array, tf: Float64Array) -> tuple[float, float]:
    r"""Expected Shortfall and VaR from the heap of the largest losses (historical estimators).

    ``ti = (cap, j_es, j_var)``, ``tf = (frac_es, beta_es)`` with :math:`\beta = n(1-\alpha)`,
    :math:`j = \lfloor\beta\rfloor`, ``frac = β - j``. With losses sorted descending
    :math:`L_{(1)} \ge L_{(2)} \ge \dots`:

    .. math::

        \mathrm{VaR}_\alpha = L_{(j+1)}, \qquad
        \mathrm{ES}_\alpha = \frac{1}{\beta}\Bigl(\sum_{i=1}^{j} L_{(i)}
            + (\beta - j)\, L_{(j+1)}\Bigr)

    (Acerbi & Tasche 2002); ES is at least :math:`L_{(j+1)}`, as it must be, also after rounding.
    """
    j_es, j_var = ti[1], ti[2]
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
    sums: Float64Array,
) -> None:
    """Accumulate the account's grid P&L per underlying and its position sums."""
    n_grid = accg.shape[1]
    accg[:, :] = 0.0
    sums[:] = 0.0
    for k in range(lo, hi):
        i = indices[k]
        q = data[k]
        row = pnl[i, :n_grid]
        g = accg[under[i]]
        for s in range(n_grid):
            g[s] += q * row[s]
        size = abs(q)
        sums[0] += q * unit[i, 0]
        sums[1] += size * (unit[i, 1] if q > 0.0 else unit[i, 2])
        if q < 0.0:
            sums[2] += size * unit[i, 3]
        excess = size - unit[i, 4]
        if excess > 0.0:
            sums[3] += excess * unit[i, 5]


@_jit
def _tail_block(
    lo: int, hi: int, indices: Int64Array, data: Float64Array, pnl: Float64Array, col0: int, acc: Float64Array
) -> None:
    """``acc[s] = Σ_k q_k P[i_k, col0 + s]`` over the account's positions, for one block."""
    width = acc.size
    acc[:] = 0.0
    for k in range(lo, hi):
        q = data[k]
        row = pnl[indices[k], col0 : col0 + width]  # a sliced view vectorises; row[col0 + s] does not
        for s in range(width):
            acc[s] += q * row[s]


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
def _group(
    first: int,
    last: int,
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
    """Accounts ``first..last-1``: grid and sums one by one, then the tail block by block."""
    n_grid = weights.size
    n_tail = pnl.shape[1] - n_grid
    cap = ti[0]
    accg = np.empty((n_under, n_grid))
    buf = np.empty(n_grid)
    sums = np.empty(4)
    for a in range(first, last):
        _positions(indptr[a], indptr[a + 1], indices, data, pnl, under, unit, accg, sums)
        joint, standalone, worst[a] = _grid(accg, weights, buf)
        row = out[a]
        row[0], row[1], row[2], row[3] = joint, standalone, 0.0, 0.0
        row[4], row[5], row[6], row[7] = sums[2], sums[3], sums[1], sums[0]
    if n_tail == 0:
        return
    heaps = np.empty((last - first, cap))
    counts = np.zeros(last - first, dtype=np.int64)
    acc = np.empty(BLOCK)
    for col in range(n_grid, n_grid + n_tail, BLOCK):
        width = min(BLOCK, n_grid + n_tail - col)
        block = acc[:width]
        for a in range(first, last):
            _tail_block(indptr[a], indptr[a + 1], indices, data, pnl, col, block)
            counts[a - first] = _push_losses(block, width, heaps[a - first], counts[a - first], cap)
    for a in range(first, last):
        out[a, 2], out[a, 3] = _finish_tail(heaps[a - first], counts[a - first], ti, tf)


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
    """Fill ``out[a] = FIELDS`` and ``worst[a]`` for every account (CSR rows), groups in parallel."""
    n_acc = indptr.size - 1
    for g in nb.prange((n_acc + GROUP - 1) // GROUP):
        first = g * GROUP
        _group(
            first,
            min(first + GROUP, n_acc),
            indptr,
            indices,
            data,
            pnl,
            under,
            n_under,
            unit,
            weights,
            ti,
            tf,
            out,
            worst,
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
    indptr = np.array([0, indices.size], dtype=np.int64)
    worst = np.zeros(1, dtype=np.int64)
    _group(0, 1, indptr, indices, data, pnl, under, n_under, unit, weights, ti, tf, out.reshape(1, -1), worst)
    return int(worst[0])
