"""Memory per voxel: the estimate of marrow3d.resources against the real allocations.

The model is built, then every Taichi field and ndarray reachable from it (model, transport
solver and its levels, cell lattice, field solvers) is found by walking attributes, and its
bytes are summed; the prognostic state is summed from the model's checkpoint tree
(``capture_model_state``). The
estimate used to refuse grids before any work must equal those sums.
"""

from __future__ import annotations

import numpy as np
import pytest

from marrow3d.config import load_config
from marrow3d.errors import ConfigError
from marrow3d.resources import (
    SMALL_TABLES_BYTES,
    check_memory,
    estimate_memory,
    readout_bytes,
    state_bytes_per_voxel,
)

DRUG_EVENTS = {
    0: [],
    1: ['{agent="cytarabine", kind="infusion", start_day=0, duration_days=1, dose_mg_per_m2_per_day=100}'],
    2: ['{agent="cytarabine", kind="infusion", start_day=0, duration_days=1, dose_mg_per_m2_per_day=100}',
        '{agent="daunorubicin", kind="bolus", day=0, dose_mg_per_m2=60}'],
}


def _itemsize(dtype) -> int:
    from marrow3d.kernels.ti_compat import ti

    return np.dtype(ti.lang.util.to_numpy_type(dtype)).itemsize


def taichi_allocations(root) -> dict[int, tuple[str, int]]:
    """Every Taichi field / ndarray reachable from ``root``: id -> (path, bytes)."""
    from marrow3d.kernels.cells import CellLattice
    from marrow3d.kernels.readouts import FieldReduction
    from marrow3d.transport_solver import MultigridSolver, _Level
    from marrow3d.kernels.ti_compat import ti
    from marrow3d.metrics import MetricsRecorder
    from marrow3d.model import MarrowModel
    from marrow3d.transport import FieldSolver

    walk_types = (MarrowModel, MultigridSolver, _Level, CellLattice, FieldSolver, MetricsRecorder, FieldReduction)
    found: dict[int, tuple[str, int]] = {}
    seen: set[int] = set()

    def visit(obj, path):
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, ti.Ndarray) or isinstance(obj, ti.Field):
            found[id(obj)] = (path, int(np.prod(obj.shape)) * _itemsize(obj.dtype))
        elif isinstance(obj, dict):
            for k, v in obj.items():
                visit(v, f"{path}[{k!r}]")
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                visit(v, f"{path}[{i}]")
        elif isinstance(obj, walk_types):
            for k, v in vars(obj).items():
                visit(v, f"{path}.{k}")

    visit(root, "model")
    return found


def _model(shape, drugs: int, precision: str = "float32", cxcl12: bool = False):
    from marrow3d.runner import make_model

    sets = [f"domain.shape_voxels={list(shape)}", f'run.precision="{precision}"', "run.backend=\"cpu\"",
            f"transport.cxcl12.enabled={str(cxcl12).lower()}"]
    if DRUG_EVENTS[drugs]:
        sets.append("therapy.events=[" + ", ".join(DRUG_EVENTS[drugs]) + "]")
    return make_model(load_config(None, sets))


def _state_arrays_bytes(state: dict, shape) -> int:
    total = 0
    for v in state.values():
        if isinstance(v, dict):
            total += _state_arrays_bytes(v, shape)
        elif isinstance(v, np.ndarray) and v.shape == tuple(shape):
            total += v.nbytes
    return total


@pytest.mark.parametrize(
    "shape, drugs, precision",
    [((16, 16, 16), 0, "float32"), ((13, 21, 30), 1, "float32"), ((24, 20, 18), 2, "float32"),
     ((12, 10, 9), 2, "float64")],
)
def test_estimate_equals_the_real_allocations(taichi_backend, shape, drugs, precision):
    _check_allocations(_model(shape, drugs, precision), shape, drugs, precision, gpu=False)


def test_estimate_counts_the_cxcl12_field(taichi_backend):
    shape = (13, 21, 30)
    _check_allocations(_model(shape, 1, cxcl12=True), shape, 1, "float32", gpu=False, cxcl12=True)
    n = 13 * 21 * 30
    assert (estimate_memory(shape, drugs=1, cxcl12=True).state_bytes
            - estimate_memory(shape, drugs=1).state_bytes) == 4 * n


def test_gpu_layout_estimate_equals_the_real_allocations(taichi_backend, monkeypatch):
    """``estimate_memory(gpu=True)`` sizes what a run on a GPU allocates: the solver's
    ``voxels`` plan (coarsened to one cell, 2^18 reduction lanes, no band factor) and the
    readouts' GPU scratch, here forced on the CPU backend as a GPU backend chooses them."""
    import marrow3d.transport_solver
    from marrow3d.kernels import ti_compat

    monkeypatch.setattr(marrow3d.transport_solver, "is_gpu_arch", lambda: True)
    monkeypatch.setattr(ti_compat, "is_gpu_arch", lambda: True)
    shape = (13, 21, 30)
    model = _model(shape, 1)
    assert model.solver.plan.layout == "voxels" and model.metrics.gpu_layout
    _check_allocations(model, shape, 1, "float32", gpu=True)
    # the two layouts differ in size (the lanes' partials, the levels), so the flag matters
    assert estimate_memory(shape, drugs=1, gpu=True).workspace_bytes != \
        estimate_memory(shape, drugs=1, gpu=False).workspace_bytes


def _check_allocations(model, shape, drugs: int, precision: str, *, gpu: bool, cxcl12: bool = False) -> None:
    assert len(model.drugs) == drugs
    assert ("cxcl12" in model.fields) == cxcl12
    n = int(np.prod(shape))
    est = estimate_memory(shape, precision, drugs=drugs, gpu=gpu, cxcl12=cxcl12)

    # prognostic state: the per-voxel arrays a checkpoint holds
    from marrow3d.output.model_state import capture_model_state

    captured = capture_model_state(model)
    # the anatomy's initial integrity rides along for resume (the host copy, counted in
    # host_bytes below), the evolving one is device state
    state = _state_arrays_bytes(captured, shape) - captured["anatomy"]["integrity"].nbytes
    assert state == est.state_bytes == n * state_bytes_per_voxel(precision, drugs, cxcl12)

    # device: every Taichi allocation reachable from the model
    allocs = taichi_allocations(model)
    on_device_state = {id(model.tissue), id(model.niche), id(model.integrity), id(model.cells.cells),
                       id(model.cells.flags), id(model.cells.generation), id(model.cells.niche_cond),
                       id(model.cells.niche_timer), *(id(f) for f in model.fields.values())}
    assert on_device_state <= set(allocs)
    assert sum(allocs[i][1] for i in on_device_state) == est.state_bytes
    pockets = sum(b for p, b in allocs.values() if "_pocket" in p)
    assert pockets == 0  # generated box anatomies have one connected marrow space
    work = {i: v for i, v in allocs.items() if i not in on_device_state}
    # readouts (region codes, scratch, tables): within their bound, exactly what nbytes() says
    readouts = sum(b for p, b in work.values() if p.startswith("model.metrics."))
    assert readouts == model.metrics.nbytes()
    assert n < readouts <= readout_bytes(shape, precision, gpu=gpu, fields=3 + drugs)
    work = {i: v for i, v in work.items() if not v[0].startswith("model.metrics.")}
    # fixed-size tables: cell parameters, counters, exposure sums, readout buffers, and each
    # field's packed coefficient table
    tables = ("model.cells.auc", "model.cells.counters", "model.cells.readout_buffer",
              "model.cells.readout_values", "model.cells.sparams", "model.cells.tparams", "model.cells.pbound")
    small = sum(b for p, b in work.values() if p in tables or p.endswith("._packed"))
    assert small <= SMALL_TABLES_BYTES, sorted(work.values())
    sized = sum(b for _, b in work.values()) - small
    expected = est.workspace_bytes - SMALL_TABLES_BYTES - readout_bytes(shape, precision, gpu=gpu, fields=3 + drugs)
    assert sized == expected, sorted(work.values())

    # host: the anatomy copy stays within the bound
    anat = model.anatomy
    host = anat.tissue.nbytes + anat.niche.nbytes + np.asarray(anat.integrity, np.float32).nbytes
    assert host <= est.host_bytes


def test_state_per_voxel_is_at_most_32_bytes():
    # float32 (the default), both drugs dosed: the largest state a run can have
    assert state_bytes_per_voxel("float32", drugs=2) == 28 <= 32
    assert state_bytes_per_voxel("float32", drugs=0) == 20
    per = estimate_memory((128, 128, 128), "float32", drugs=2).per_voxel()
    assert per["state"] == 28
    # GPU layout at 512^3: solver ~68, lattice 6, readouts ~5 (see marrow3d.resources); at
    # 128^3 its fixed-size reduction lanes (~16 MB) add ~8 per voxel
    per = estimate_memory((512, 512, 512), "float32", drugs=2, gpu=True).per_voxel()
    assert 75 < per["workspace"] < 85


def test_grids_that_do_not_fit_are_refused_before_any_work():
    with pytest.raises(ConfigError, match="shape_voxels"):
        check_memory((1200, 1100, 1100), "float32", "cpu")  # ~150 GB
    with pytest.raises(ConfigError, match="2\\^31"):
        check_memory((2048, 1024, 1024), "float32", "cpu")
    est = check_memory((32, 32, 32), "float32", "cpu")
    assert est.voxels == 32**3
