"""Taichi kernels of the benchmarks (a module of its own: kernels need real annotations, so no
``from __future__ import annotations`` here)."""

from marrow3d.kernels.ti_compat import ti

ND1 = ti.types.ndarray(ndim=1)


@ti.kernel
def copy_kernel(src: ND1, dst: ND1, n: ti.i32):
    """dst = src over n elements: the device copy-bandwidth baseline (one read, one write each).

    Written like the solver's kernels: rows of 4096 elements in parallel, a serial inner loop.
    """
    rows = (n + 4095) // 4096
    for r in range(rows):
        lo = r * 4096
        hi = ti.min(lo + 4096, n)
        for i in range(lo, hi):
            dst[i] = src[i]
