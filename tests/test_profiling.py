"""The step profiler counts what it claims to: launches, syncs and bytes, by phase."""

# No `from __future__ import annotations`: the kernels below need live annotations.
import numpy as np
import pytest

from marrow3d.kernels.ti_compat import ti
from marrow3d.profiling import NULL_PROBE, StepProfiler


def test_counts_each_transfer_once_and_attributes_phases(taichi_backend):
    f = ti.field(ti.f32, shape=(4, 5, 6))
    nd = ti.ndarray(ti.f64, shape=7)

    @ti.kernel
    def scale(x: ti.template(), k: ti.f32):
        for I in ti.grouped(x):
            x[I] *= k

    @ti.kernel
    def total(x: ti.template()) -> ti.f32:
        s = 0.0
        for I in ti.grouped(x):
            s += x[I]
        return s

    @ti.kernel
    def copy_in(a: ti.types.ndarray(dtype=ti.f64, ndim=1), out: ti.types.ndarray(dtype=ti.f64, ndim=1)):
        for i in a:
            out[i] = a[i]

    data = np.arange(120, dtype=np.float32).reshape(4, 5, 6)
    original_call = type(scale).__call__ if hasattr(scale, "__call__") else None
    with StepProfiler() as prof:
        with prof.phase("a"):
            f.from_numpy(data)          # 1 launch, 1 sync, 480 B to device
            scale(f, 2.0)               # 1 launch
            back = f.to_numpy()         # 1 launch, 1 sync, 480 B to host
        with prof.phase("b"):
            assert total(f) == pytest.approx(2 * data.sum())  # 1 launch, 1 sync, 8 B back
            host = np.arange(7, dtype=np.float64)
            copy_in(host, nd)           # numpy argument: 1 launch, 1 sync, 56 B each way
            nd.fill(1.0)                # 1 launch
            _ = f[1, 2, 3]              # scalar read: 1 launch, 1 sync, 8 B
            ti.sync()                   # explicit sync, no launch
        f.fill(0)                       # outside any phase: "other"
        prof.step_done()
    np.testing.assert_array_equal(back, 2 * data)
    a, b, other = (prof.steps[0]["phases"][k] for k in ("a", "b", "other"))
    assert (a.launches, a.syncs, a.bytes_to_device, a.bytes_to_host) == (3, 2, 480, 480)
    assert a.kernels["scale"] == 1
    assert (b.launches, b.syncs, b.bytes_to_device, b.bytes_to_host) == (4, 4, 56, 56 + 8 + 8)
    assert (other.launches, other.syncs) == (1, 0)
    assert not prof.missing_hooks
    # the library is left as it was
    if original_call is not None:
        assert type(scale).__call__ is original_call


def test_unprofiled_runs_use_the_null_probe(taichi_backend):
    with NULL_PROBE.phase("x"):
        pass
    NULL_PROBE.step_done(True)
    assert not NULL_PROBE.active
