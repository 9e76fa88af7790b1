"""Device readouts against numpy: sums in numpy's order (bitwise, CPU layout), exact counts
and order statistics, the GPU layout within float64 rounding, the regions against a distance
transform, and a model's whole time-series row against the numpy readouts."""

import numpy as np
import pytest
from scipy import ndimage

from marrow3d.kernels import codes
from marrow3d.kernels import readouts as R


# ------------------------------------------------------------------------------ host side
@pytest.mark.parametrize("n", [1, 7, 8, 9, 127, 128, 129, 136, 1000, 8193])
def test_pairwise_reference_is_numpys_sum(rng, n):
    v = rng.lognormal(1.0, 2.0, n).astype(np.float32).astype(np.float64)
    assert R.pairwise_sum_reference(v) == float(v.sum())


@pytest.mark.parametrize("n, cut", [(5000, 128), (5000, 600), (77777, 4096), (130, 128)])
def test_tasks_cut_numpys_tree(rng, n, cut):
    """Summing the tasks and then combining them along the tree above the cut is numpy's sum."""
    v = rng.normal(0.0, 1.0, n)
    tasks = R.pairwise_tasks(n, cut)
    assert sum(c for _, c in tasks) == n and all(c <= cut for _, c in tasks)
    assert [lo for lo, _ in tasks] == list(np.cumsum([0] + [c for _, c in tasks])[:-1])
    sums = iter([R.pairwise_sum_reference(v[lo:lo + c]) for lo, c in tasks])

    def combine(m):
        if m <= cut:
            return next(sums)
        n2 = m // 2 - (m // 2) % 8
        left = combine(n2)
        return left + combine(m - n2)

    assert combine(n) == float(v.sum())


# ------------------------------------------------------------------------------ device side
SHAPE = (14, 19, 23)


@pytest.fixture(scope="module")
def region_host():
    """Region codes with long runs (like anatomies) and some scatter."""
    rng = np.random.default_rng(7)
    r = np.full(SHAPE, R.REGION_CENTRAL, dtype=np.uint8)
    r[:3] = R.REGION_OTHER  # bone slab
    r[3:6] = R.REGION_ENDOSTEAL
    r[4, ::4, ::3] = R.REGION_ARTERIOLE
    scatter = rng.random(SHAPE) < 0.1
    r[scatter & (r == R.REGION_CENTRAL)] = R.REGION_SINUSOID
    return r


def _values(rng, dtype):
    v = rng.lognormal(2.0, 1.0, SHAPE)
    v[7, 3, :] = 9.5  # ties
    v[8, 2, 2] = -3.25  # negative keys
    v[9, 2, 2] = -0.0
    v[5, 5, 5] = 0.2  # exactly at a floor
    return v.astype(dtype)


SUMS = (R.SumSpec(R.MARROW), R.SumSpec(R.region_mask(R.REGION_ENDOSTEAL)),
        R.SumSpec(R.region_mask(R.REGION_SINUSOID), ((R.VALUE, 0.0, 0.0), (R.EXCHANGE_FACTOR, 0.2, 3.0))),
        R.SumSpec(R.region_mask(R.REGION_OTHER, R.REGION_ARTERIOLE), ((R.EXCHANGE_FACTOR, 0.1, 0.5),)))
COUNTS = (R.CountSpec(R.region_mask(R.REGION_ENDOSTEAL), 10.0), R.CountSpec(R.MARROW, 3.0),
          R.CountSpec(R.region_mask(R.REGION_SINUSOID), 0.2))


def _reference(v, region, sums=SUMS, counts=COUNTS, ranks=()):
    flat = v.ravel().astype(np.float64)
    out = []
    for s in sums:
        x = flat[np.isin(region.ravel(), [c for c in range(8) if s.region >> c & 1])]
        for kind, floor, leak in s.channels:
            out.append(float((x if kind == R.VALUE else np.where(x >= floor, x * (1.0 + leak * (1.0 - x)), 0.0)).sum()))
    for c in counts:
        x = flat[np.isin(region.ravel(), [k for k in range(8) if c.region >> k & 1])]
        out.append(float(np.count_nonzero(x < c.below)))
    marrow = np.sort(v.ravel()[np.isin(region.ravel(), [R.REGION_ENDOSTEAL, R.REGION_CENTRAL])])
    out += [float(marrow[k]) for k in ranks]
    return np.array(out)


def _reduce(region_host, v, gpu, ranks, task_max=None, sums=SUMS, counts=COUNTS):
    from marrow3d.kernels.ti_compat import ti

    dt = ti.f64 if v.dtype == np.float64 else ti.f32
    field = ti.field(dt, shape=SHAPE)
    field.from_numpy(v)
    region = ti.ndarray(ti.u8, shape=SHAPE)
    region.from_numpy(region_host)
    order = R.OrderSpec(R.MARROW, ranks) if ranks else None
    out = ti.ndarray(ti.f64, shape=40)
    scratch = ti.ndarray(dt, shape=R.scratch_shape(region_host, [(sums, counts, order)], gpu))
    red = R.FieldReduction(region, region_host, out, 2, scratch, sums=sums, counts=counts, order=order, gpu=gpu,
                           task_max=task_max)
    red.launch(field)
    first = out.to_numpy()
    red.launch(field)
    again = out.to_numpy()
    assert first.tobytes() == again.tobytes()  # deterministic
    return first[2:2 + red.width], red


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("task_max", [None, 128, 300])
def test_cpu_layout_is_bitwise_numpy(taichi_backend, region_host, rng, dtype, task_max):
    v = _values(rng, dtype)
    n = int(np.count_nonzero(np.isin(region_host, [1, 2])))
    ranks = (0, 1, n // 20, n // 2, n // 2 + 1, n - 2, n - 1)
    got, red = _reduce(region_host, v, False, ranks, task_max)
    assert red.n_tasks >= (1 if task_max is None else 4) and red.sum_sizes[0] == n
    np.testing.assert_array_equal(got, _reference(v, region_host, ranks=ranks))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_layout_within_rounding(taichi_backend, region_host, rng, dtype):
    v = _values(rng, dtype)
    n = int(np.count_nonzero(np.isin(region_host, [1, 2])))
    ranks = (0, 7, n // 3, n - 1)
    got, red = _reduce(region_host, v, True, ranks)
    ref = _reference(v, region_host, ranks=ranks)
    k = len(red.sum_slots)
    np.testing.assert_allclose(got[:k], ref[:k], rtol=1e-14, atol=0)
    np.testing.assert_array_equal(got[k:], ref[k:])  # counts and order statistics are exact


def test_empty_and_single_regions(taichi_backend, rng):
    region_host = np.full(SHAPE, R.REGION_CENTRAL, dtype=np.uint8)
    region_host[2, 3, 4] = R.REGION_ARTERIOLE
    v = _values(rng, np.float32)
    sums = (R.SumSpec(R.region_mask(R.REGION_ENDOSTEAL)), R.SumSpec(R.region_mask(R.REGION_ARTERIOLE)))
    counts = (R.CountSpec(R.region_mask(R.REGION_SINUSOID), 1.0),)
    for gpu in (False, True):
        got, red = _reduce(region_host, v, gpu, (0, 5), sums=sums, counts=counts)
        assert red.sum_sizes == (0, 1)
        assert got[0] == 0.0 and got[1] == float(v[2, 3, 4]) and got[2] == 0.0


def test_bad_specs_are_refused(taichi_backend, region_host):
    from marrow3d.kernels.ti_compat import ti

    region = ti.ndarray(ti.u8, shape=SHAPE)
    out = ti.ndarray(ti.f64, shape=4)
    scratch = ti.ndarray(ti.f32, shape=(2 * int(np.prod(SHAPE)),))
    with pytest.raises(ValueError, match="too small"):
        R.FieldReduction(region, region_host, out, 0, scratch, sums=SUMS)
    with pytest.raises(ValueError, match="order statistics"):
        R.FieldReduction(region, region_host, ti.ndarray(ti.f64, shape=40), 0, scratch,
                         order=R.OrderSpec(R.region_mask(R.REGION_ARTERIOLE), (0, 10**6)))


def test_nonfinite_counts(taichi_backend):
    from marrow3d.kernels.ti_compat import ti

    a = ti.field(ti.f32, shape=(3, 4, 5))
    b = ti.field(ti.f64, shape=(3, 4, 5))
    x = np.zeros((3, 4, 5))
    a.from_numpy(x.astype(np.float32))
    b.from_numpy(x)
    counter = R.NonFiniteCounter([a, b])
    assert counter.count() == 0
    x[0, 1, 2], x[2, 3, 4], x[1, 1, 1] = np.nan, np.inf, -np.inf
    b.from_numpy(x)
    assert counter.count() == 3 and R.count_nonfinite(b) == 3 and R.count_nonfinite(a) == 0


# ------------------------------------------------------------------------------ regions
@pytest.mark.parametrize("voxel_um, band_um", [(10.0, 100.0), (10.0, 35.0), (7.0, 50.0), (1.0, 3.0), (10.0, 5.0)])
def test_band_equals_the_distance_transform(rng, monkeypatch, voxel_um, band_um):
    from marrow3d import regions

    monkeypatch.setattr(regions, "SLAB_VOXELS", 3 * 30 * 31)  # several slabs, each with halos
    tissue = np.full((26, 30, 31), codes.MARROW, dtype=np.uint8)
    tissue[rng.random(tissue.shape) < 0.004] = codes.BONE
    tissue[:2] = codes.BONE
    tissue[rng.random(tissue.shape) < 0.05] = codes.SINUSOID
    bone = tissue == codes.BONE
    ref = (tissue == codes.MARROW) & (ndimage.distance_transform_edt(~bone, sampling=voxel_um) <= band_um)
    np.testing.assert_array_equal(regions.endosteal_band(tissue, voxel_um, band_um), ref)


def test_no_bone_no_band():
    from marrow3d.regions import endosteal_band

    assert not endosteal_band(np.zeros((4, 5, 6), np.uint8), 10.0, 100.0).any()


# ------------------------------------------------------------------------------ the model's row
@pytest.fixture(scope="module")
def dosed_model(taichi_backend):
    from _dosed_run import DOSED, TINY

    from marrow3d.config import load_config
    from marrow3d.runner import make_model

    model = make_model(load_config(TINY, [*DOSED, "cells.initial.lsc_count=30"]))
    for _ in range(3):
        model.time_step()
    return model


def _numpy_row(model) -> dict:
    from marrow3d.kernels import readouts_reference as M

    o2 = model.config.transport.oxygen
    regions = M.RegionMasks(model.anatomy.tissue, model.voxel_um, model.config.stages.endosteal_band_um)
    row = {}
    row.update(M.oxygen_metrics(model.fields["oxygen"].to_numpy(), regions, o2.hypoxic_mmHg, o2.severe_hypoxic_mmHg))
    row.update(M.integrity_metrics(model.integrity.to_numpy(), regions, model.floor, model.leak))
    row.update(M.field_region_means(model.fields["signal"].to_numpy(), regions, "signal"))
    for agent in model.drugs:
        row.update(M.field_region_means(model.fields[agent].to_numpy(), regions, f"{agent}_tissue_uM"))
    return row


def test_model_row_is_bitwise_the_numpy_readouts(dosed_model):
    assert any(dosed_model.drug_active.values())
    row = dosed_model.metrics.row(dosed_model)
    ref = _numpy_row(dosed_model)
    assert set(ref) <= set(row)
    for k, v in ref.items():
        assert np.float64(row[k]).tobytes() == np.float64(v).tobytes(), (k, row[k], v)
    cells = dosed_model.cells.metrics(dosed_model.tissue, dosed_model.niche)
    for k, v in cells.items():
        if k != "step_index":
            assert row[k] == float(v), k


def test_gpu_layout_row_matches(dosed_model):
    from marrow3d.metrics import MetricsRecorder

    gpu = MetricsRecorder(dosed_model, gpu_layout=True).row(dosed_model)
    cpu = dosed_model.metrics.row(dosed_model)
    assert set(gpu) == set(cpu)
    for k in cpu:
        if "_mean" in k or "exchange_factor" in k:
            assert gpu[k] == pytest.approx(cpu[k], rel=1e-13, abs=1e-300), k
        else:  # counts, fractions, percentiles, min/max: exact
            assert gpu[k] == cpu[k] or (np.isnan(gpu[k]) and np.isnan(cpu[k])), k
