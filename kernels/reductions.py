"""Deterministic reductions of the solver kernels (float64, fixed shape, no atomics).

Every norm and dot product of the transport solver is summed in float64 in an order fixed by
the grid alone, never with floating-point atomics, so two runs give identical bits on any
backend and thread count. The kernel that produces the values fills ``part`` with partials;
:func:`finish_sum`, called at kernel top level right after that loop, turns them into totals
in the register array ``scal``:

* ``rows`` layout (CPUs): one partial per (z, y) row, interleaved by column
  (``part[ncols * row + k]``), summed serially in row order (:func:`finish_rows`);
* ``voxels`` layout (GPUs): one partial per lane (lane t sums voxels t, t + L, t + 2L, ... in
  order, L = min(n, :data:`kernels.solver_plan.LANES`)), same interleaving; then
  :data:`~kernels.solver_plan.TREE` threads each sum every TREE-th lane partial, in order, and
  one thread sums their results in order (:func:`finish_tree`). Three fixed levels: the shape
  depends on n only, not on the GPU, its scheduling or its thread count.

The active-set fingerprint is an exact integer: a sum of 20-bit voxel hashes, which float64
holds exactly (at most 2^31 voxels: < 2^51), so it is the same whatever the summation order
and layout.
"""

# No `from __future__ import annotations`: the kernel compiler reads annotations as objects.

from .solver_plan import C_LIVE, LANES, TREE
from .ti_compat import ti

__all__ = ["finish_sum", "finish_rows", "finish_tree", "lane_count", "voxel_hash", "live_flag"]


@ti.func
def live_flag(scal: ti.template()):
    """1 while the current CG solve runs, else 0 (``scal[C_LIVE]``): kernels of an iteration
    launched after convergence multiply their loop ranges by it and do nothing."""
    return ti.cast(scal[C_LIVE] != 0, ti.i32)


@ti.func
def lane_count(n):
    """Number of reduction lanes for n voxels in the ``voxels`` layout."""
    return ti.min(n, LANES)


@ti.func
def finish_rows(part: ti.template(), nrows, ncols: ti.template(), scal: ti.template(), slot: ti.template(), live):
    """Serial, fixed-order sum of per-row partials: column k goes to ``scal[slot + k]``."""
    ti.loop_config(serialize=True)
    for k in range(ncols * live):
        tot = ti.cast(0.0, ti.f64)
        for row in range(nrows):
            tot += part[ncols * row + k]
        scal[slot + k] = tot


@ti.func
def finish_tree(part: ti.template(), nlanes, ncols: ti.template(), scal: ti.template(), slot: ti.template(), live):
    """Fixed-shape tree over ``nlanes`` lane partials: TREE strided sums, then one in order.

    The TREE intermediate sums are stored after the lane partials (``part`` needs
    ``ncols * (nlanes + TREE)`` entries).
    """
    base = ncols * nlanes
    for q in range(ncols * TREE * live):
        k = q // TREE
        t = q - k * TREE
        acc = ti.cast(0.0, ti.f64)
        for j in range(ti.max(0, (nlanes - t + TREE - 1) // TREE)):
            acc += part[ncols * (t + j * TREE) + k]
        part[base + q] = acc
    ti.loop_config(serialize=True)
    for k in range(ncols * live):
        tot = ti.cast(0.0, ti.f64)
        for t in range(TREE):
            tot += part[base + k * TREE + t]
        scal[slot + k] = tot


@ti.func
def finish_sum(part: ti.template(), nparts, ncols: ti.template(), scal: ti.template(), slot: ti.template(),
               gpu: ti.template(), live):
    """Totals of ``ncols`` interleaved partial columns into ``scal[slot:slot + ncols]``.

    ``nparts`` is the number of rows (``gpu`` False) or lanes (``gpu`` True); ``live`` = 0
    skips it (a CG iteration launched after convergence). Call at kernel top level, after
    the parallel loop that filled ``part``.
    """
    if ti.static(gpu):
        finish_tree(part, nparts, ncols, scal, slot, live)
    else:
        finish_rows(part, nparts, ncols, scal, slot, live)


@ti.func
def voxel_hash(p, salt: ti.template()):
    """A 20-bit hash of the voxel index p as a float64 (exact), for set fingerprints.

    Multiplicative hashing (Knuth) with an odd 32-bit multiplier picked by ``salt`` (0 or 1),
    a xor-shift to mix the high bits down, and the top 20 bits kept.
    """
    mult = ti.static(2654435761 if salt == 0 else 2246822519)
    h = ti.cast(p + 1, ti.u32) * ti.u32(mult)
    h ^= h >> ti.u32(15)
    h = h * ti.u32(2654435769)
    return ti.cast(h >> ti.u32(12), ti.f64)
