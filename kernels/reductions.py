"""Deterministic reductions of the solver kernels (float64, fixed summation order).

Every norm and dot product of the transport solver is summed in float64 in a fixed order,
never with floating-point atomics, so results are bitwise reproducible run to run for a given
grid, backend and thread count: a loop over (z, y) rows accumulates one float64 partial per
row, and :func:`finish_sum` adds the row partials serially in row order.
"""

# No `from __future__ import annotations`: the kernel compiler reads annotations as objects.

from .ti_compat import ti

__all__ = ["finish_sum"]


@ti.func
def finish_sum(part: ti.template(), nrows, ncols: ti.template(), scal: ti.template(), slot: ti.template()):
    """Serial, fixed-order sum of the per-row partials (deterministic float64 reduction).

    ``part`` holds ``ncols`` interleaved partials per row; column k goes to ``scal[slot+k]``.
    Must be called at kernel top level, after the parallel loop that filled ``part``.
    """
    ti.loop_config(serialize=True)
    for k in range(ncols):
        tot = ti.cast(0.0, ti.f64)
        for row in range(nrows):
            tot += part[ncols * row + k]
        scal[slot + k] = tot
