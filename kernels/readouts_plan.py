"""The host side of the device readouts (``kernels.readouts``): specs, table layout, sizes.

Pure Python and numpy, no kernel compiler: the memory estimate (``marrow3d.resources``) and
the tests import it without initialising a backend. What each constant means is explained in
``kernels/readouts.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .codes import REGION_CENTRAL, REGION_ENDOSTEAL

__all__ = [
    "region_mask",
    "MARROW",
    "SumSpec",
    "CountSpec",
    "OrderSpec",
    "VALUE",
    "EXCHANGE_FACTOR",
    "PAIRWISE_BLOCK",
    "GPU_PARTIALS",
    "RADIX_BITS",
    "MAX_SUMS",
    "MAX_CHANNELS",
    "MAX_COUNTS",
    "MAX_RANKS",
    "pairwise_tasks",
    "pairwise_sum_reference",
    "scratch_shape",
    "readout_device_bytes",
]


def region_mask(*codes: int) -> int:
    """Bit mask of a set of region codes."""
    return sum(1 << int(c) for c in set(codes))


#: All marrow (endosteal and central).
MARROW = region_mask(REGION_ENDOSTEAL, REGION_CENTRAL)

#: numpy's pairwise-summation block (``PW_BLOCKSIZE``): ranges up to this size are leaves.
PAIRWISE_BLOCK = 128
#: Partial sums of the GPU layout's strided first level (a multiple of 128).
GPU_PARTIALS = 1 << 14
#: Bits resolved per radix-selection pass (2048-bin histograms).
RADIX_BITS = 11
_BINS = 1 << RADIX_BITS
#: Private histograms of the CPU layout's first selection pass (blocks of rows).
_CPU_BLOCKS = 64
#: Depth of the pairwise replay stack (numpy's tree over 2^31 values is 25 deep).
_STACK = 40
#: Most sums, channels per sum (values summed over the same voxels and tree), counts and
#: order statistics of one field.
MAX_SUMS = 4
MAX_CHANNELS = 2
MAX_COUNTS = 8
MAX_RANKS = 8

VALUE = 0  #: channel kind: the field value (float64)
EXCHANGE_FACTOR = 1  #: channel kind: ``I (1 + leak (1 - I))`` where ``I >= floor``, else 0


@dataclass(frozen=True)
class SumSpec:
    """A float64 sum over a region set, of one or two channels of the same voxels.

    ``channels`` holds ``(kind, floor, leak)`` triples: kind :data:`VALUE` (floor and leak
    unused) or :data:`EXCHANGE_FACTOR`.
    """

    region: int
    channels: tuple = ((VALUE, 0.0, 0.0),)


@dataclass(frozen=True)
class CountSpec:
    """The number of voxels of a region set whose value (as float64) is below ``below``."""

    region: int
    below: float


@dataclass(frozen=True)
class OrderSpec:
    """The ``ranks``-th smallest values (0-based) over a region set."""

    region: int
    ranks: tuple


# ----------------------------------------------------------------------------- host helpers
def _split(n: int) -> int:
    n2 = n // 2
    return n2 - n2 % 8


def pairwise_sum_reference(values) -> float:
    """numpy's pairwise summation of a float64 sequence, in plain Python (for the tests)."""
    a = [float(v) for v in values]

    def rec(lo: int, n: int) -> float:
        if n < 8:
            s = 0.0
            for i in range(n):
                s += a[lo + i]
            return s
        if n <= PAIRWISE_BLOCK:
            r = a[lo:lo + 8]
            i = 8
            while i < n - n % 8:
                for j in range(8):
                    r[j] += a[lo + i + j]
                i += 8
            s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
            while i < n:
                s += a[lo + i]
                i += 1
            return s
        n2 = _split(n)
        return rec(lo, n2) + rec(lo + n2, n - n2)

    return rec(0, len(a))


def pairwise_tasks(n: int, task_max: int) -> list[tuple[int, int]]:
    """Cut numpy's pairwise tree over ``n`` values into subtrees of at most ``task_max``.

    Returns ``(first, count)`` of each subtree, in order. ``task_max >= 128``.
    """
    out: list[tuple[int, int]] = []
    stack = [(0, n)]
    while stack:
        lo, m = stack.pop()
        if m <= task_max:
            if m:
                out.append((lo, m))
            continue
        n2 = _split(m)
        stack.append((lo + n2, m - n2))
        stack.append((lo, n2))
    return out


def _members_at(region: np.ndarray, mask: int, ranks: np.ndarray) -> np.ndarray:
    """Flat indices of the ``ranks``-th members (C order) of a region set, memory-bounded."""
    nz, ny, nx = region.shape
    codes = [c for c in range(8) if mask >> c & 1]
    rows = np.empty(nz * ny, dtype=np.int64)
    slab = max(1, (1 << 22) // max(1, ny * nx))
    for z0 in range(0, nz, slab):
        sub = np.isin(region[z0:z0 + slab], codes)
        rows[z0 * ny:(z0 + sub.shape[0]) * ny] = sub.reshape(-1, nx).sum(axis=1)
    cum = np.cumsum(rows)
    out = np.empty(len(ranks), dtype=np.int64)
    for i, k in enumerate(ranks):
        row = int(np.searchsorted(cum, k, side="right"))
        before = int(cum[row - 1]) if row else 0
        z, y = divmod(row, ny)
        xs = np.flatnonzero(np.isin(region[z, y], codes))
        out[i] = row * nx + int(xs[k - before])
    return out


def _count_members(region: np.ndarray, mask: int) -> int:
    codes = [c for c in range(8) if mask >> c & 1]
    return int(sum(np.count_nonzero(np.isin(region[z0:z0 + 64], codes)) for z0 in range(0, region.shape[0], 64)))


# ----------------------------------------------------------------------------- table layout
# itab (int32): a header, then the tasks, trees, counts and rank slots.
_H_TASKS, _H_SUMS, _H_COUNTS, _H_RANKS, _H_ORDER_MASK, _H_SCAN_MASK = 0, 1, 2, 3, 4, 5
_H_TASK_OFF, _H_TREE_OFF, _H_COUNT_OFF, _H_RANK_OFF, _H_FTASK_OFF, _H_FPART_OFF, _H_FPART2_OFF = 6, 7, 8, 9, 10, 11, 12
_H_ORDER_BASE, _H_ORDER_SIZE = 13, 14
_HEADER = 16
_TASK_W = 4  # start (GPU layout: flat voxel; CPU layout: segment position), end (flat, inclusive), size, sum
_TREE_W = 9  # root size, cut, first task, region mask, channels, kind 0, kind 1, slot 0, slot 1
_COUNT_W = 4  # region mask, slot, segment start, segment size (CPU layout)
# ftab (float64): per sum (floor, leak) of each channel; count thresholds; task sums; GPU partials
_F_PARAMS = 0
_F_BELOW = MAX_SUMS * 2 * MAX_CHANNELS
_F_TASKS = _F_BELOW + MAX_COUNTS
# ktab (int64): key range and bits left, then per rank target: rank, prefix, rank left, slot; counts
_K_LO, _K_HI, _K_BITS = 0, 1, 2
_K_RANK, _K_PREFIX, _K_LEFT, _K_SLOT, _K_COUNT = 8, 16, 24, 32, 40
_K_SIZE = 48
_KEY_MAX = 0x7FFFFFFFFFFFFFFF

def _segment_masks(sums, counts, order) -> list[int]:
    """The distinct region sets a field's readouts read, in first-use order."""
    masks: list[int] = []
    for m in [x.region for x in sums] + [x.region for x in counts] + ([order.region] if order else []):
        if m not in masks:
            masks.append(m)
    return masks


def scratch_shape(region_host: np.ndarray, specs, gpu: bool) -> tuple[int, ...]:
    """Shape of the scratch array that serves every reduction of ``specs``.

    ``specs``: ``(sums, counts, order)`` of each field. GPU layout: the grid (each field is
    copied whole). CPU layout: the longest total of a field's gathered region sets.
    """
    if gpu:
        return tuple(int(n) for n in region_host.shape)
    longest = 0
    for sums, counts, order in specs:
        longest = max(longest, sum(_count_members(region_host, m) for m in _segment_masks(sums, counts, order)))
    return (max(longest, 1),)


def readout_device_bytes(shape, float_bytes: int, *, gpu: bool, fields: int) -> int:
    """Upper bound of the device bytes of a model's readouts (``marrow3d.metrics``).

    Region codes (1 byte per voxel); the scratch array (GPU layout: one field; CPU layout:
    at most two fields' worth of gathered regions); per reduction of ``fields`` its
    histograms, GPU partial sums and per-row offsets (up to 3 region sets); the result slots.
    """
    nz, ny, nx = (int(v) for v in shape)
    n = nz * ny * nx
    scratch = n * float_bytes if gpu else 2 * n * float_bytes
    hist = 4 * _BINS * (MAX_RANKS + (0 if gpu else _CPU_BLOCKS))
    partials = 8 * MAX_SUMS * MAX_CHANNELS * (GPU_PARTIALS + GPU_PARTIALS // PAIRWISE_BLOCK) if gpu else 0
    rows = 0 if gpu else 4 * 3 * nz * ny
    return n + scratch + fields * (hist + partials + rows) + 8 * 512
