"""Kernels of the benchmarks (a module of its own: kernels need real annotations, so no
``from __future__ import annotations`` here)."""

from marrow3d.kernels.ti_compat import ti

ND1 = ti.types.ndarray(ndim=1)


@ti.kernel
def copy_kernel(src: ND1, dst: ND1, n: ti.i32, gpu: ti.template()):
    """dst = src over n elements: the device copy-bandwidth baseline (one read, one write each).

    ``gpu``: one thread per element (coalesced: the layout of the GPU kernels, and what a GPU
    needs to reach its bandwidth); otherwise rows of 4096 elements per thread with a serial
    inner loop, the way the CPU kernels are written.
    """
    if ti.static(gpu):
        for i in range(n):
            dst[i] = src[i]
    else:
        rows = (n + 4095) // 4096
        for r in range(rows):
            lo = r * 4096
            hi = ti.min(lo + 4096, n)
            for i in range(lo, hi):
                dst[i] = src[i]
