"""Per-step readouts reduced on the device: a few bytes come back instead of whole fields.

A :class:`FieldReduction` computes every readout of one field and writes them into slots of a
float64 result array that the caller reads back once per step (one transfer for everything):

* **regional sums** (the means of the time series are these over the region's voxel count):
  float64 sums of the field, or of a function of it (the vessel exchange factor), over a set
  of region codes;
* **counts** of region voxels whose value is below a threshold (hypoxic fractions, lost
  vessels), exact integers;
* **order statistics** (the k-th smallest values over a region: percentiles, min and max),
  exact.

Region codes (:data:`REGION_ENDOSTEAL` ...) are one byte per voxel on the device, written once
per model from the anatomy (:mod:`marrow3d.regions`); a region set is a bit mask of codes.

Two launches per field: a copy of the field into a scratch array shared by every reduction of
the model (the only kernel that takes the field itself, so the only one compiled again for each
new model: a few lines), then the reduction kernel, which takes nothing but ndarrays and
integer layout codes and reads what to compute from small tables: it is compiled once per
process (per dtype and layout) and kept in the kernel cache.

Every result is deterministic: the same bits for any thread count, and run to run on a GPU.
Integer totals use integer atomics (order-free); floating-point totals are never accumulated
with atomics. Each kernel has a CPU and a GPU layout, chosen at compile time (``gpu``):

* **Sums, CPU layout: numpy's order, bitwise.** ``np.add.reduce`` of a contiguous float64
  vector is a fixed pairwise tree (blocks of at most 128 summed with 8 interleaved
  accumulators, larger ranges split at ``n/2`` rounded down to a multiple of 8;
  :func:`pairwise_sum_reference`). The region's voxels, in C order, are that vector. The
  tree is cut into tasks of at most ``task_max`` voxels (:func:`pairwise_tasks`); each task
  is summed by one thread, streaming its flat range and replaying numpy's tree on it, and one
  thread combines the task sums in the order of the tree above the cut. So the sums, and the
  means, are bit-identical to ``values[region].astype(np.float64).mean()``, as the numpy
  readouts always were.
* **Sums, GPU layout: a fixed strided tree.** Thread ``p`` of :data:`GPU_PARTIALS` sums the
  voxels ``p, p + P, p + 2P, ...`` (flat index; coalesced, consecutive threads read
  consecutive voxels), blocks of 128 partials are summed in order, then the blocks in order.
  Deterministic and within a few float64 ulps of numpy's order, but not bitwise equal to it.
* **Order statistics: exact radix selection.** Each value maps to an integer key with the
  same order (the float bits, negative values flipped). Over the region: the minimum and
  maximum key (integer reductions), then passes of :data:`RADIX_BITS` bits below the highest
  bit of ``max - min``: a histogram of the next bits of every key that still matches a
  target's prefix, and a scan of it that fixes the next bits of each target rank. After
  ``ceil(bits / 11)`` passes (3 for float32, 6 for float64) every target's key, hence value,
  is exact. The first pass counts every region voxel: per block of rows into private
  histograms (CPU) or with integer atomics per voxel (GPU); later passes touch the few
  voxels left in the targets' bins.
* **Counts**: one pass per kernel, integer atomics with fixed indices (reduced per thread by
  the compiler).

The specs, the table layout and the sizes are host-side Python in :mod:`.readouts_plan`
(importable without a kernel compiler); ``readouts_plan.pairwise_sum_reference`` and
:mod:`.readouts_reference` are the independent implementations the tests compare with.
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations as live objects.

import numpy as np

from .codes import REGION_ARTERIOLE, REGION_CENTRAL, REGION_ENDOSTEAL, REGION_OTHER, REGION_SINUSOID
from .readouts_plan import (  # noqa: F401 - re-exported
    region_mask,
    MARROW,
    PAIRWISE_BLOCK,
    GPU_PARTIALS,
    RADIX_BITS,
    _BINS,
    _CPU_BLOCKS,
    _STACK,
    MAX_SUMS,
    MAX_CHANNELS,
    MAX_COUNTS,
    MAX_RANKS,
    VALUE,
    EXCHANGE_FACTOR,
    SumSpec,
    CountSpec,
    OrderSpec,
    pairwise_sum_reference,
    pairwise_tasks,
    _count_members,
    _HEADER,
    _TASK_W,
    _TREE_W,
    _COUNT_W,
    _F_PARAMS,
    _F_BELOW,
    _F_TASKS,
    _K_SIZE,
    _KEY_MAX,
    _segment_masks,
    scratch_shape,
    _H_COUNTS,
    _H_COUNT_OFF,
    _H_FPART2_OFF,
    _H_FPART_OFF,
    _H_FTASK_OFF,
    _H_ORDER_BASE,
    _H_ORDER_MASK,
    _H_ORDER_SIZE,
    _H_RANKS,
    _H_RANK_OFF,
    _H_SCAN_MASK,
    _H_SUMS,
    _H_TASKS,
    _H_TASK_OFF,
    _H_TREE_OFF,
    _K_BITS,
    _K_COUNT,
    _K_HI,
    _K_LEFT,
    _K_LO,
    _K_PREFIX,
    _K_RANK,
    _K_SLOT,
)
from .ti_compat import ti
from .transport import exchange_rate

__all__ = [
    "REGION_OTHER",
    "REGION_ENDOSTEAL",
    "REGION_CENTRAL",
    "REGION_ARTERIOLE",
    "REGION_SINUSOID",
    "MARROW",
    "region_mask",
    "SumSpec",
    "CountSpec",
    "OrderSpec",
    "VALUE",
    "EXCHANGE_FACTOR",
    "FieldReduction",
    "NonFiniteCounter",
    "count_nonfinite",
    "pairwise_tasks",
    "scratch_shape",
    "pairwise_sum_reference",
    "PAIRWISE_BLOCK",
    "GPU_PARTIALS",
    "RADIX_BITS",
]



ND1_I32 = ti.types.ndarray(dtype=ti.i32, ndim=1)
ND1_I64 = ti.types.ndarray(dtype=ti.i64, ndim=1)
ND1_F64 = ti.types.ndarray(dtype=ti.f64, ndim=1)
ND2_I32 = ti.types.ndarray(dtype=ti.i32, ndim=2)
ND3_U8 = ti.types.ndarray(dtype=ti.u8, ndim=3)
ND3 = ti.types.ndarray(ndim=3)  # float32 or float64: instantiated per dtype


# ----------------------------------------------------------------------------- device helpers
@ti.func
def _order_key(v, is64: ti.template()):
    """Signed integer with the order of the float ``v`` (float bits, negatives flipped)."""
    key = ti.i64(0)
    if ti.static(is64):
        b = ti.bit_cast(ti.cast(v, ti.f64), ti.i64)
        key = b
        if b < 0:
            key = b ^ ti.i64(_KEY_MAX)
    else:
        b = ti.bit_cast(ti.cast(v, ti.f32), ti.i32)
        k32 = b
        if b < 0:
            k32 = b ^ ti.i32(0x7FFFFFFF)
        key = ti.cast(k32, ti.i64)
    return key


@ti.func
def _key_value(key, is64: ti.template()):
    """Inverse of :func:`_order_key`, as float64 (exact)."""
    out = ti.f64(0.0)
    if ti.static(is64):
        b = key
        if key < 0:
            b = key ^ ti.i64(_KEY_MAX)
        out = ti.bit_cast(b, ti.f64)
    else:
        k32 = ti.cast(key, ti.i32)
        b = k32
        if k32 < 0:
            b = k32 ^ ti.i32(0x7FFFFFFF)
        out = ti.cast(ti.bit_cast(b, ti.f32), ti.f64)
    return out


@ti.func
def _digit(offset, bits, w, shift):
    """This pass's digit of a key's offset from the minimum key (unsigned: a float64 offset may
    pass 2^63), and the bits above it (the prefix a target must have), as int64 bits."""
    d = ti.cast(offset, ti.u64)
    high = ti.u64(0)
    if bits < 64:
        high = d >> ti.cast(bits, ti.u64)
    j = ti.cast((d >> ti.cast(shift, ti.u64)) & ((ti.u64(1) << ti.cast(w, ti.u64)) - ti.u64(1)), ti.i32)
    return j, ti.cast(high, ti.i64)


@ti.func
def _channel_value(v, kind, floor, leak):
    """A channel's value for the float64 field value ``v``."""
    out = v
    if kind == EXCHANGE_FACTOR:
        # The exchange law's one kernel copy with E0 = 1: 1 * v is v exactly, so this is
        # numpy's np.where(v >= floor, v * (1.0 + leak * (1.0 - v)), 0.0), the same operations.
        out = exchange_rate(1.0, v, leak, floor)
    return out


@ti.func
def _scan_counts(values: ND3, region: ND3_U8, itab: ND1_I32, ftab: ND1_F64, ktab: ND1_I64, out: ND1_F64,
                 is64: ti.template(), ncount: ti.template()):
    """GPU layout: counts below thresholds and the key range of the order-statistics region,
    one thread per voxel (x fastest), integer atomics."""
    nz, ny, nx = values.shape[0], values.shape[1], values.shape[2]
    for _ in range(1):
        for c in range(MAX_COUNTS):
            ktab[_K_COUNT + c] = 0
        ktab[_K_LO] = ti.i64(_KEY_MAX)
        ktab[_K_HI] = -ti.i64(_KEY_MAX) - 1
    for z, y, x in ti.ndrange(nz, ny, nx):
        bit = 1 << ti.cast(region[z, y, x], ti.i32)
        if (bit & itab[_H_SCAN_MASK]) != 0:
            v = ti.cast(values[z, y, x], ti.f64)
            for c in ti.static(range(ncount)):
                if (bit & itab[itab[_H_COUNT_OFF] + _COUNT_W * c]) != 0 and v < ftab[_F_BELOW + c]:
                    ti.atomic_add(ktab[_K_COUNT + c], ti.i64(1))
            if (bit & itab[_H_ORDER_MASK]) != 0:
                key = _order_key(values[z, y, x], is64)
                ti.atomic_min(ktab[_K_LO], key)
                ti.atomic_max(ktab[_K_HI], key)
    for _ in range(1):
        for c in range(itab[_H_COUNTS]):
            out[itab[itab[_H_COUNT_OFF] + _COUNT_W * c + 1]] = ti.cast(ktab[_K_COUNT + c], ti.f64)
        b = 0
        if itab[_H_RANKS] > 0:
            span = ti.cast(ktab[_K_HI] - ktab[_K_LO], ti.u64)  # unsigned: a float64 span may pass 2^63
            while b < 64 and (span >> ti.cast(b, ti.u64)) > 0:
                b += 1
        ktab[_K_BITS] = b
        for t in range(MAX_RANKS):
            ktab[_K_PREFIX + t] = 0
            ktab[_K_LEFT + t] = ktab[_K_RANK + t]
            ktab[_K_SLOT + t] = 0


@ti.func
def _histogram(values: ND3, region: ND3_U8, itab: ND1_I32, ktab: ND1_I64, hist: ND2_I32, is64: ti.template(),
               nrank: ti.template()):
    """GPU layout: a radix pass, one thread per voxel (x fastest): the keys that match a
    target's prefix add to its histogram of the next RADIX_BITS bits (integer atomics)."""
    nz, ny, nx = values.shape[0], values.shape[1], values.shape[2]
    for t, j in ti.ndrange(MAX_RANKS, _BINS):
        hist[t, j] = 0
    for z, y, x in ti.ndrange(nz, ny, nx):
        bits = ti.cast(ktab[_K_BITS], ti.i32)
        if bits > 0 and ((1 << ti.cast(region[z, y, x], ti.i32)) & itab[_H_ORDER_MASK]) != 0:
            w = ti.min(bits, RADIX_BITS)
            j, high = _digit(_order_key(values[z, y, x], is64) - ktab[_K_LO], bits, w, bits - w)
            for t in ti.static(range(nrank)):
                if ktab[_K_SLOT + t] == t and ktab[_K_PREFIX + t] == high:
                    ti.atomic_add(hist[t, j], 1)


@ti.func
def _select_target(t, ktab: ND1_I64, hist: ND2_I32, bits):
    slot = ti.cast(ktab[_K_SLOT + t], ti.i32)
    left = ktab[_K_LEFT + t]
    j = 0
    acc = ti.i64(0)
    while j < _BINS - 1 and acc + hist[slot, j] <= left:
        acc += hist[slot, j]
        j += 1
    ktab[_K_LEFT + t] = left - acc
    ktab[_K_PREFIX + t] = (ktab[_K_PREFIX + t] << ti.min(bits, RADIX_BITS)) | j


@ti.func
def _share_slots(itab: ND1_I32, ktab: ND1_I64):
    """Targets with equal prefixes share the histogram of the first of them."""
    for t in range(itab[_H_RANKS]):
        slot = t
        for u in range(t):
            if slot == t and ktab[_K_PREFIX + u] == ktab[_K_PREFIX + t]:
                slot = u
        ktab[_K_SLOT + t] = slot


@ti.func
def _select(itab: ND1_I32, ktab: ND1_I64, hist: ND2_I32, gpu: ti.template()):
    """Fix the next bits of every target from its histogram (GPU: one thread per target;
    CPU: one task that also clears the histograms for the next pass)."""
    if ti.static(gpu):
        for t in range(MAX_RANKS):
            bits = ti.cast(ktab[_K_BITS], ti.i32)
            if t < itab[_H_RANKS] and bits > 0:
                _select_target(t, ktab, hist, bits)
        for _ in range(1):
            bits = ti.cast(ktab[_K_BITS], ti.i32)
            _share_slots(itab, ktab)
            ktab[_K_BITS] = bits - ti.min(bits, RADIX_BITS)
    else:
        for _ in range(1):
            bits = ti.cast(ktab[_K_BITS], ti.i32)
            if bits > 0:
                for t in range(itab[_H_RANKS]):
                    _select_target(t, ktab, hist, bits)
                _share_slots(itab, ktab)
                for t in range(itab[_H_RANKS]):
                    for j in range(_BINS):
                        hist[t, j] = 0
            ktab[_K_BITS] = bits - ti.min(bits, RADIX_BITS)


@ti.func
def _select_finish(itab: ND1_I32, ktab: ND1_I64, out: ND1_F64, is64: ti.template()):
    for _ in range(1):
        for t in range(itab[_H_RANKS]):
            out[itab[itab[_H_RANK_OFF] + t]] = _key_value(ktab[_K_LO] + ktab[_K_PREFIX + t], is64)


@ti.func
def _combine(itab: ND1_I32, ftab: ND1_F64, out: ND1_F64):
    """CPU layout: sum the task totals along numpy's tree above the cut (one thread)."""
    for _ in range(1):
        for s in range(itab[_H_SUMS]):
            tree = itab[_H_TREE_OFF] + _TREE_W * s
            n = itab[tree]
            cut = itab[tree + 1]
            t = itab[tree + 2]
            sn = ti.Vector([0] * _STACK, dt=ti.i32)
            sstate = ti.Vector([0] * _STACK, dt=ti.i32)
            ssum = ti.Matrix([[0.0] * _STACK for _ in range(MAX_CHANNELS)], dt=ti.f64)
            result = ti.Vector([0.0] * MAX_CHANNELS, dt=ti.f64)
            if n > 0:
                sp = 0
                cur = n
                done = 0
                while done == 0:
                    while cur > cut:
                        n2 = cur // 2
                        n2 -= n2 % 8
                        sn[sp] = cur - n2
                        sstate[sp] = 0
                        sp += 1
                        cur = n2
                    leaf = ti.Vector([0.0] * MAX_CHANNELS, dt=ti.f64)
                    for c in ti.static(range(MAX_CHANNELS)):
                        leaf[c] = ftab[itab[_H_FTASK_OFF] + MAX_CHANNELS * t + c]
                    t += 1
                    climbing = 1
                    while climbing == 1:
                        if sp == 0:
                            result = leaf
                            climbing = 0
                            done = 1
                        elif sstate[sp - 1] == 0:
                            for c in ti.static(range(MAX_CHANNELS)):
                                ssum[c, sp - 1] = leaf[c]
                            sstate[sp - 1] = 1
                            cur = sn[sp - 1]
                            climbing = 0
                        else:
                            for c in ti.static(range(MAX_CHANNELS)):
                                leaf[c] = ssum[c, sp - 1] + leaf[c]
                            sp -= 1
            out[itab[tree + 7]] = result[0]
            if itab[tree + 4] > 1:
                out[itab[tree + 8]] = result[1]


@ti.func
def _strided_sums(values: ND3, region: ND3_U8, itab: ND1_I32, ftab: ND1_F64, out: ND1_F64):
    """GPU layout: strided partials, then blocks of 128 partials in order, then the blocks."""
    ny, nx = values.shape[1], values.shape[2]
    n = ti.cast(values.shape[0], ti.i64) * ny * nx
    for p in range(GPU_PARTIALS):
        n_sums = itab[_H_SUMS]
        masks = ti.Vector([0] * MAX_SUMS, dt=ti.i32)
        nchs = ti.Vector([0] * MAX_SUMS, dt=ti.i32)
        kinds = ti.Matrix([[0] * MAX_CHANNELS for _ in range(MAX_SUMS)], dt=ti.i32)
        floors = ti.Matrix([[0.0] * MAX_CHANNELS for _ in range(MAX_SUMS)], dt=ti.f64)
        leaks = ti.Matrix([[0.0] * MAX_CHANNELS for _ in range(MAX_SUMS)], dt=ti.f64)
        for s in range(n_sums):
            tree = itab[_H_TREE_OFF] + _TREE_W * s
            masks[s] = itab[tree + 3]
            nchs[s] = itab[tree + 4]
            for c in ti.static(range(MAX_CHANNELS)):
                kinds[s, c] = itab[tree + 5 + c]
                floors[s, c] = ftab[_F_PARAMS + 4 * s + 2 * c]
                leaks[s, c] = ftab[_F_PARAMS + 4 * s + 2 * c + 1]
        acc = ti.Matrix([[0.0] * MAX_CHANNELS for _ in range(MAX_SUMS)], dt=ti.f64)
        i = ti.cast(p, ti.i64)
        while i < n:
            z = ti.cast(i // (ny * nx), ti.i32)
            y = ti.cast((i // nx) % ny, ti.i32)
            x = ti.cast(i % nx, ti.i32)
            bit = 1 << ti.cast(region[z, y, x], ti.i32)
            v = ti.cast(values[z, y, x], ti.f64)
            for s in range(n_sums):
                if (bit & masks[s]) != 0:
                    for c in ti.static(range(MAX_CHANNELS)):
                        if c < nchs[s]:
                            acc[s, c] += _channel_value(v, kinds[s, c], floors[s, c], leaks[s, c])
            i += GPU_PARTIALS
        for s in range(n_sums):
            for c in ti.static(range(MAX_CHANNELS)):
                ftab[itab[_H_FPART_OFF] + (MAX_CHANNELS * s + c) * GPU_PARTIALS + p] = acc[s, c]
    for k, g in ti.ndrange(MAX_SUMS * MAX_CHANNELS, GPU_PARTIALS // PAIRWISE_BLOCK):
        if k < MAX_CHANNELS * itab[_H_SUMS]:
            acc = ti.f64(0.0)
            for j in range(PAIRWISE_BLOCK):
                acc += ftab[itab[_H_FPART_OFF] + k * GPU_PARTIALS + g * PAIRWISE_BLOCK + j]
            ftab[itab[_H_FPART2_OFF] + k * (GPU_PARTIALS // PAIRWISE_BLOCK) + g] = acc
    for k in range(MAX_SUMS * MAX_CHANNELS):
        s = k // MAX_CHANNELS
        c = k % MAX_CHANNELS
        if s < itab[_H_SUMS]:
            tree = itab[_H_TREE_OFF] + _TREE_W * s
            if c < itab[tree + 4]:
                acc = ti.f64(0.0)
                for g in range(GPU_PARTIALS // PAIRWISE_BLOCK):
                    acc += ftab[itab[_H_FPART2_OFF] + k * (GPU_PARTIALS // PAIRWISE_BLOCK) + g]
                out[itab[tree + 7 + c]] = acc


# ----------------------------------------------------------------------------- CPU layout: segments
# The CPU layout first gathers the voxels of each region set of a field, in C order, into
# consecutive segments of a 1-D scratch array (one pass over the grid, one thread per row;
# each row's first position in each segment is precomputed). Every reduction then runs over
# contiguous values, split in _CPU_BLOCKS chunks per task, and numpy's pairwise tree is
# replayed directly on the segment, exactly as numpy sums a gathered array.


@ti.kernel
def _gather(src: ti.template(), region: ND3_U8, rowstart: ND2_I32, masks: ND1_I32, seg: ti.types.ndarray(ndim=1),
            nseg: ti.template()):
    ny, nx = region.shape[1], region.shape[2]
    for z, y in ti.ndrange(region.shape[0], ny):
        row = z * ny + y
        pos = ti.Vector([rowstart[k, row] for k in ti.static(range(nseg))], dt=ti.i32)
        m = ti.Vector([masks[k] for k in ti.static(range(nseg))], dt=ti.i32)
        for x in range(nx):
            bit = 1 << ti.cast(region[z, y, x], ti.i32)
            for k in ti.static(range(nseg)):
                if (bit & m[k]) != 0:
                    seg[pos[k]] = src[z, y, x]
                    pos[k] += 1


@ti.func
def _chunk(base, size, blk):
    return base + size * blk // _CPU_BLOCKS, base + size * (blk + 1) // _CPU_BLOCKS


@ti.func
def _seg_scan(seg: ti.template(), itab: ND1_I32, ftab: ND1_F64, ktab: ND1_I64, out: ND1_F64,
              is64: ti.template(), ncount: ti.template(), nrank: ti.template()):
    """Counts below thresholds over their segments; the key range of the order segment."""
    for _ in range(1):
        for c in range(MAX_COUNTS):
            ktab[_K_COUNT + c] = 0
        ktab[_K_LO] = ti.i64(_KEY_MAX)
        ktab[_K_HI] = -ti.i64(_KEY_MAX) - 1
    ti.loop_config(block_dim=1)
    for blk in range(_CPU_BLOCKS):
        coff = itab[_H_COUNT_OFF]
        for c in ti.static(range(ncount)):
            a, b = _chunk(itab[coff + _COUNT_W * c + 2], itab[coff + _COUNT_W * c + 3], blk)
            below = ftab[_F_BELOW + c]
            k = ti.i64(0)
            for i in range(a, b):
                if ti.cast(seg[i], ti.f64) < below:
                    k += 1
            if k != 0:
                ti.atomic_add(ktab[_K_COUNT + c], k)
        if ti.static(nrank > 0):
            a, b = _chunk(itab[_H_ORDER_BASE], itab[_H_ORDER_SIZE], blk)
            lo = ti.i64(_KEY_MAX)
            hi = -ti.i64(_KEY_MAX) - 1
            for i in range(a, b):
                key = _order_key(seg[i], is64)
                lo = ti.min(lo, key)
                hi = ti.max(hi, key)
            if lo <= hi:
                ti.atomic_min(ktab[_K_LO], lo)
                ti.atomic_max(ktab[_K_HI], hi)
    for _ in range(1):
        for c in range(itab[_H_COUNTS]):
            out[itab[itab[_H_COUNT_OFF] + _COUNT_W * c + 1]] = ti.cast(ktab[_K_COUNT + c], ti.f64)
        b = 0
        if itab[_H_RANKS] > 0:
            span = ti.cast(ktab[_K_HI] - ktab[_K_LO], ti.u64)  # unsigned: a float64 span may pass 2^63
            while b < 64 and (span >> ti.cast(b, ti.u64)) > 0:
                b += 1
        ktab[_K_BITS] = b
        for t in range(MAX_RANKS):
            ktab[_K_PREFIX + t] = 0
            ktab[_K_LEFT + t] = ktab[_K_RANK + t]
            ktab[_K_SLOT + t] = 0


@ti.func
def _seg_histogram(seg: ti.template(), itab: ND1_I32, ktab: ND1_I64, hist: ND2_I32, first: ti.template(),
                   is64: ti.template(), nrank: ti.template()):
    """A radix pass over the order segment: the first counts every key into private
    histograms per chunk (plain increments, summed per bin after); the others add only the
    keys that still match a target's prefix (integer atomics)."""
    ti.loop_config(block_dim=1)
    for blk in range(_CPU_BLOCKS):
        bits = ti.cast(ktab[_K_BITS], ti.i32)
        a, b = _chunk(itab[_H_ORDER_BASE], itab[_H_ORDER_SIZE], blk)
        key_lo = ktab[_K_LO]
        if ti.static(first):
            for j in range(_BINS):
                hist[MAX_RANKS + blk, j] = 0
            if bits > 0:
                shift = bits - ti.min(bits, RADIX_BITS)
                for i in range(a, b):
                    j = ti.cast(ti.cast(_order_key(seg[i], is64) - key_lo, ti.u64) >> ti.cast(shift, ti.u64), ti.i32)
                    hist[MAX_RANKS + blk, j] = hist[MAX_RANKS + blk, j] + 1
        else:
            if bits > 0:
                w = ti.min(bits, RADIX_BITS)
                shift = bits - w
                prefixes = ti.Vector([ktab[_K_PREFIX + t] for t in ti.static(range(nrank))], dt=ti.i64)
                own = ti.Vector([ti.cast(ktab[_K_SLOT + t] == t, ti.i32) for t in ti.static(range(nrank))], dt=ti.i32)
                for i in range(a, b):
                    j, high = _digit(_order_key(seg[i], is64) - key_lo, bits, w, shift)
                    for t in ti.static(range(nrank)):
                        if own[t] == 1 and prefixes[t] == high:
                            ti.atomic_add(hist[t, j], 1)
    if ti.static(first):
        for j in range(_BINS):
            acc = 0
            for blk in range(_CPU_BLOCKS):
                acc += hist[MAX_RANKS + blk, j]
            hist[0, j] = acc


@ti.func
def _seg_leaf(seg: ti.template(), p, cur, kind, floor, leak):
    """numpy's pairwise leaf over ``seg[p : p + cur]`` (``cur <= 128``), of one channel."""
    s = ti.f64(0.0)
    if cur < 8:
        for i in range(cur):
            s += _channel_value(ti.cast(seg[p + i], ti.f64), kind, floor, leak)
    else:
        r = ti.Vector([_channel_value(ti.cast(seg[p + j], ti.f64), kind, floor, leak) for j in ti.static(range(8))],
                      dt=ti.f64)
        m = cur - cur % 8
        i = 8
        while i < m:
            for j in ti.static(range(8)):
                r[j] += _channel_value(ti.cast(seg[p + i + j], ti.f64), kind, floor, leak)
            i += 8
        s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
        while i < cur:
            s += _channel_value(ti.cast(seg[p + i], ti.f64), kind, floor, leak)
            i += 1
    return s


@ti.func
def _seg_task_sums(seg: ti.template(), itab: ND1_I32, ftab: ND1_F64):
    """Replay numpy's pairwise tree over every task's part of its segment (one thread per task)."""
    ti.loop_config(block_dim=1)
    for t in range(itab[_H_TASKS]):
        base = itab[_H_TASK_OFF] + _TASK_W * t
        s = itab[base + 3]
        tree = itab[_H_TREE_OFF] + _TREE_W * s
        nch = itab[tree + 4]
        kinds = ti.Vector([itab[tree + 5], itab[tree + 6]], dt=ti.i32)
        floors = ti.Vector([ftab[_F_PARAMS + 4 * s], ftab[_F_PARAMS + 4 * s + 2]], dt=ti.f64)
        leaks = ti.Vector([ftab[_F_PARAMS + 4 * s + 1], ftab[_F_PARAMS + 4 * s + 3]], dt=ti.f64)
        sn = ti.Vector([0] * _STACK, dt=ti.i32)
        sstate = ti.Vector([0] * _STACK, dt=ti.i32)
        ssum = ti.Matrix([[0.0] * _STACK for _ in range(MAX_CHANNELS)], dt=ti.f64)
        result = ti.Vector([0.0] * MAX_CHANNELS, dt=ti.f64)
        p = itab[base]
        sp = 0
        cur = itab[base + 2]
        done = 0
        while done == 0:
            while cur > PAIRWISE_BLOCK:
                n2 = cur // 2
                n2 -= n2 % 8
                sn[sp] = cur - n2
                sstate[sp] = 0
                sp += 1
                cur = n2
            leaf = ti.Vector([_seg_leaf(seg, p, cur, kinds[0], floors[0], leaks[0]), 0.0], dt=ti.f64)
            if nch > 1:
                leaf[1] = _seg_leaf(seg, p, cur, kinds[1], floors[1], leaks[1])
            p += cur
            climbing = 1
            while climbing == 1:
                if sp == 0:
                    result = leaf
                    climbing = 0
                    done = 1
                elif sstate[sp - 1] == 0:
                    for c in ti.static(range(MAX_CHANNELS)):
                        ssum[c, sp - 1] = leaf[c]
                    sstate[sp - 1] = 1
                    cur = sn[sp - 1]
                    climbing = 0
                else:
                    for c in ti.static(range(MAX_CHANNELS)):
                        leaf[c] = ssum[c, sp - 1] + leaf[c]
                    sp -= 1
        for c in ti.static(range(MAX_CHANNELS)):
            ftab[itab[_H_FTASK_OFF] + MAX_CHANNELS * t + c] = result[c]


@ti.kernel(fastcache=True)
def _reduce_segments(seg: ti.types.ndarray(ndim=1), itab: ND1_I32, ftab: ND1_F64, ktab: ND1_I64, hist: ND2_I32,
                     out: ND1_F64, is64: ti.template(), ncount: ti.template(), nrank: ti.template(),
                     sums: ti.template()):
    # A CPU task costs ~45 us to start (serial ones ~8 us): few tasks, and what a field does
    # not need is not compiled in.
    if ti.static(ncount > 0 or nrank > 0):
        _seg_scan(seg, itab, ftab, ktab, out, is64, ncount, nrank)
    if ti.static(nrank > 0):
        for p in ti.static(range(-(-(65 if is64 else 33) // RADIX_BITS))):
            _seg_histogram(seg, itab, ktab, hist, p == 0, is64, nrank)
            _select(itab, ktab, hist, False)
        _select_finish(itab, ktab, out, is64)
    if ti.static(sums):
        _seg_task_sums(seg, itab, ftab)
        _combine(itab, ftab, out)



@ti.kernel(fastcache=True)
def _reduce_grid(values: ND3, region: ND3_U8, itab: ND1_I32, ftab: ND1_F64, ktab: ND1_I64, hist: ND2_I32,
                 out: ND1_F64, is64: ti.template(), ncount: ti.template(), nrank: ti.template(),
                 sums: ti.template()):
    """GPU layout: every readout of a field copied whole into ``values``."""
    if ti.static(ncount > 0 or nrank > 0):
        _scan_counts(values, region, itab, ftab, ktab, out, is64, ncount)
    if ti.static(nrank > 0):
        for p in ti.static(range(-(-(65 if is64 else 33) // RADIX_BITS))):
            _histogram(values, region, itab, ktab, hist, is64, nrank)
            _select(itab, ktab, hist, True)
        _select_finish(itab, ktab, out, is64)
    if ti.static(sums):
        _strided_sums(values, region, itab, ftab, out)


@ti.kernel
def _copy_field(src: ti.template(), dst: ND3):
    for z, y, x in src:
        dst[z, y, x] = src[z, y, x]


class FieldReduction:
    """Every readout of one field, reduced on the device (two launches, nothing read back).

    Parameters
    ----------
    region : ti.ndarray of uint8, shape (nz, ny, nx)
        Region codes on the device.
    region_host : ndarray of uint8
        The same codes on the host (read once, to lay out the tables).
    out : ti.ndarray of float64
        Result array shared by the reductions; this one writes its slots (see below).
    offset : int
        First slot of this reduction in ``out``.
    scratch : ti.ndarray of float
        Shared by every reduction of a model (:func:`scratch_shape`; float32 or float64, at
        least the fields' precision). GPU layout: the field is copied into it; CPU layout: its
        region sets are gathered into consecutive segments of it.
    sums, counts : sequence of SumSpec, CountSpec
        At most :data:`MAX_SUMS` sums of 1-2 channels and :data:`MAX_COUNTS` counts.
    order : OrderSpec, optional
        At most :data:`MAX_RANKS` ranks, all below the region's voxel count.
    gpu : bool
        Use the GPU layout (also valid on the CPU: the tests force it there).
    task_max : int, optional
        Largest sum task of the CPU layout (default: about 1/64 of the region, at least 4096).

    Notes
    -----
    Slots from ``offset`` on: each sum's channel totals; each count; each order statistic
    (:attr:`sum_slots`, :attr:`count_slots`, :attr:`order_slots`). ``sum_sizes[i]`` is the
    voxel count of sum ``i`` (a mean is ``total / size``; an empty region sums to 0).
    """

    def __init__(self, region, region_host: np.ndarray, out, offset: int, scratch, *, sums=(), counts=(),
                 order: OrderSpec | None = None, gpu: bool = False, task_max: int | None = None) -> None:
        self.region = region
        self.out = out
        self.scratch = scratch
        self.offset = int(offset)
        self.shape = tuple(int(n) for n in region_host.shape)
        self.sums = tuple(sums)
        self.counts = tuple(counts)
        self.order = order
        self.gpu = bool(gpu)
        self.is64 = scratch.dtype == ti.f64
        if len(self.sums) > MAX_SUMS or any(not 1 <= len(s.channels) <= MAX_CHANNELS for s in self.sums):
            raise ValueError(f"at most {MAX_SUMS} sums of 1 to {MAX_CHANNELS} channels")
        if len(self.counts) > MAX_COUNTS:
            raise ValueError(f"at most {MAX_COUNTS} counts")
        if order is not None and not 1 <= len(order.ranks) <= MAX_RANKS:
            raise ValueError(f"1 to {MAX_RANKS} order statistics per field")
        n_ch = sum(len(s.channels) for s in self.sums)
        self.sum_slots = tuple(self.offset + k for k in range(n_ch))
        self.count_slots = tuple(self.offset + n_ch + k for k in range(len(self.counts)))
        first_rank = self.offset + n_ch + len(self.counts)
        self.order_slots = tuple(first_rank + k for k in range(len(order.ranks) if order else 0))
        self.width = n_ch + len(self.counts) + len(self.order_slots)
        if self.offset + self.width > out.shape[0]:
            raise ValueError("the result array is too small for this reduction")
        self.sum_sizes = tuple(_count_members(region_host, s.region) for s in self.sums)
        self.order_size = _count_members(region_host, order.region) if order else 0
        if order is not None and any(not 0 <= k < self.order_size for k in order.ranks):
            raise ValueError(f"order statistics {order.ranks} of {self.order_size} values")
        self._segments(region_host)
        self._tables(region_host, task_max)

    def _segments(self, region_host: np.ndarray) -> None:
        """CPU layout: each region set's segment of the scratch and each row's first position."""
        self.seg_masks = _segment_masks(self.sums, self.counts, self.order) if not self.gpu else []
        self.seg_base: dict[int, int] = {}
        self.seg_size: dict[int, int] = {}
        nz, ny, nx = self.shape
        # the GPU layout gathers nothing: a 1 x 1 placeholder, not a row table per field
        starts = np.zeros((max(len(self.seg_masks), 1), nz * ny if self.seg_masks else 1), dtype=np.int64)
        base = 0
        for k, m in enumerate(self.seg_masks):
            codes = [c for c in range(8) if m >> c & 1]
            rows = np.empty(nz * ny, dtype=np.int64)
            slab = max(1, (1 << 22) // max(1, ny * nx))
            for z0 in range(0, nz, slab):
                sub = np.isin(region_host[z0:z0 + slab], codes)
                rows[z0 * ny:(z0 + sub.shape[0]) * ny] = sub.reshape(-1, nx).sum(axis=1)
            starts[k] = base + np.cumsum(rows) - rows
            self.seg_base[m], self.seg_size[m] = base, int(rows.sum())
            base += self.seg_size[m]
        if not self.gpu and base > int(np.prod(self.scratch.shape)):
            raise ValueError("the scratch array is too small for this field's region sets")
        self.rowstart = ti.ndarray(ti.i32, shape=starts.shape)
        self.rowstart.from_numpy(starts.astype(np.int32))
        self.masks_nd = ti.ndarray(ti.i32, shape=max(len(self.seg_masks), 1))
        self.masks_nd.from_numpy(np.asarray(self.seg_masks or [0], dtype=np.int32))

    def _tables(self, region_host: np.ndarray, task_max: int | None) -> None:
        tasks, trees, fparams = [], [], np.zeros(_F_TASKS)
        slot = iter(self.sum_slots)
        for i, (s, n) in enumerate(zip(self.sums, self.sum_sizes)):
            cut = max(PAIRWISE_BLOCK, task_max or max(4096, -(-n // 64)))
            cuts = pairwise_tasks(n, cut) if not self.gpu else []
            kinds = [c[0] for c in s.channels] + [VALUE] * (MAX_CHANNELS - len(s.channels))
            slots = [next(slot) for _ in s.channels] + [0] * (MAX_CHANNELS - len(s.channels))
            trees.append([n, cut, len(tasks), s.region, len(s.channels), *kinds, *slots])
            for c, (_, floor, leak) in enumerate(s.channels):
                fparams[_F_PARAMS + 4 * i + 2 * c] = float(floor)
                fparams[_F_PARAMS + 4 * i + 2 * c + 1] = float(leak)
            base = self.seg_base.get(s.region, 0)
            tasks += [[base + lo, 0, c, i] for lo, c in cuts]
        for c, spec in enumerate(self.counts):
            fparams[_F_BELOW + c] = float(spec.below)
        self.n_tasks = len(tasks)
        scan_mask = self.order.region if self.order else 0
        for c in self.counts:
            scan_mask |= c.region
        task_off = _HEADER
        tree_off = task_off + _TASK_W * len(tasks)
        count_off = tree_off + _TREE_W * len(trees)
        rank_off = count_off + _COUNT_W * len(self.counts)
        ftask_off = _F_TASKS
        fpart_off = ftask_off + MAX_CHANNELS * len(tasks)
        fpart2_off = fpart_off + (MAX_SUMS * MAX_CHANNELS * GPU_PARTIALS if self.gpu else 0)
        fsize = fpart2_off + (MAX_SUMS * MAX_CHANNELS * GPU_PARTIALS // PAIRWISE_BLOCK if self.gpu else 0)
        header = [0] * _HEADER
        header[_H_TASKS], header[_H_SUMS], header[_H_COUNTS] = len(tasks), len(trees), len(self.counts)
        header[_H_RANKS] = len(self.order_slots)
        header[_H_ORDER_MASK] = self.order.region if self.order else 0
        header[_H_SCAN_MASK] = scan_mask
        header[_H_TASK_OFF], header[_H_TREE_OFF], header[_H_COUNT_OFF], header[_H_RANK_OFF] = (
            task_off, tree_off, count_off, rank_off)
        header[_H_FTASK_OFF], header[_H_FPART_OFF], header[_H_FPART2_OFF] = ftask_off, fpart_off, fpart2_off
        if self.order:
            header[_H_ORDER_BASE] = self.seg_base.get(self.order.region, 0)
            header[_H_ORDER_SIZE] = self.seg_size.get(self.order.region, 0)
        ints = header + [v for row in tasks for v in row] + [v for row in trees for v in row]
        for c, spec in enumerate(self.counts):
            ints += [spec.region, self.count_slots[c], self.seg_base.get(spec.region, 0),
                     self.seg_size.get(spec.region, 0)]
        ints += list(self.order_slots)
        self.itab = ti.ndarray(ti.i32, shape=len(ints))
        self.itab.from_numpy(np.asarray(ints, dtype=np.int32))
        self.ftab = ti.ndarray(ti.f64, shape=fsize)
        f = np.zeros(fsize)
        f[:_F_TASKS] = fparams
        self.ftab.from_numpy(f)
        k = np.zeros(_K_SIZE, dtype=np.int64)
        if self.order:
            k[_K_RANK:_K_RANK + len(self.order.ranks)] = self.order.ranks
        self.ktab = ti.ndarray(ti.i64, shape=_K_SIZE)
        self.ktab.from_numpy(k)
        rows = MAX_RANKS + (_CPU_BLOCKS if not self.gpu else 0)
        self.hist = ti.ndarray(ti.i32, shape=(rows, _BINS))

    def nbytes(self) -> int:
        """Device bytes of this reduction's tables and histograms (the scratch is shared)."""
        return (4 * self.itab.shape[0] + 8 * self.ftab.shape[0] + 8 * _K_SIZE + 4 * self.hist.shape[0] * _BINS
                + 4 * int(np.prod(self.rowstart.shape)) + 4 * self.masks_nd.shape[0])

    def launch(self, values) -> None:
        """Reduce the field ``values`` (a ti.field of the grid's shape) into this reduction's
        slots of ``out``: two launches (the copy or gather, then the reduction)."""
        ncount, nrank = len(self.counts), len(self.order_slots)
        if self.gpu:
            _copy_field(values, self.scratch)
            _reduce_grid(self.scratch, self.region, self.itab, self.ftab, self.ktab, self.hist, self.out,
                         int(self.is64), ncount, nrank, int(bool(self.sums)))
        else:
            _gather(values, self.region, self.rowstart, self.masks_nd, self.scratch, len(self.seg_masks))
            _reduce_segments(self.scratch, self.itab, self.ftab, self.ktab, self.hist, self.out, int(self.is64),
                             ncount, nrank, int(bool(self.sums)))


@ti.data_oriented
class NonFiniteCounter:
    """The number of NaN or infinite values over several float fields: one launch, 8 bytes back."""

    def __init__(self, fields) -> None:
        self.fields = tuple(fields)

    @ti.kernel
    def _count(self) -> ti.i64:
        n = ti.i64(0)
        for k in ti.static(range(len(self.fields))):
            for I in ti.grouped(self.fields[k]):
                if ti.math.isnan(self.fields[k][I]) or ti.math.isinf(self.fields[k][I]):
                    n += 1
        return n

    def count(self) -> int:
        return int(self._count())


@ti.kernel
def _nonfinite(f: ti.template()) -> ti.i64:
    n = ti.i64(0)
    for I in ti.grouped(f):
        if ti.math.isnan(f[I]) or ti.math.isinf(f[I]):
            n += 1
    return n


def count_nonfinite(field) -> int:
    """Number of NaN or infinite values of one float field (one launch, 8 bytes back)."""
    return int(_nonfinite(field))
