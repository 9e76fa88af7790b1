"""``marrow3d.analysis.open_run``: values equal the raw HDF5, helpers equal the time series.

One dosed 6-step run of ``configs/tiny.toml`` (snapshots every 8 h, cytarabine infusion) is
read through ``open_run`` and through h5py directly. The spatial helpers are checked against
the run's own time series (niche counts, regional drug means), brute force (distances) and a
numpy-backed stand-in for cupy (the cupy code path, same bits).
"""

from __future__ import annotations

import io
import logging
import sys
import types

import h5py
import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="module")
def dosed(dosed_run):
    """(run directory, config) of the session's dosed run (tests/_runs.py; read only)."""
    return dosed_run


@pytest.fixture
def run(dosed):
    from marrow3d.analysis import open_run

    with open_run(dosed[0]) as r:
        yield r


def _decode(v):
    return v.decode() if isinstance(v, bytes) else (v.item() if isinstance(v, np.generic) else v)


# ---------------------------------------------------------------------------------- raw equality
@pytest.mark.parametrize("which", ["dir", "file"])
def test_open_run_equals_raw_hdf5(dosed, which):
    from marrow3d.analysis import open_run

    out, cfg = dosed
    with open_run(out if which == "dir" else out / "run.h5") as run, h5py.File(out / "run.h5", "r") as h5:
        assert run.kind == "run" and run.path == out / "run.h5" and run.access == "plain" and not run.swmr
        assert run.meta.keys() == h5["meta"].attrs.keys()
        for k, v in h5["meta"].attrs.items():
            assert run.meta[k] == _decode(v), k
        assert run.config.model_dump() == cfg.model_dump()
        assert run.voxel_um == h5["anatomy"].attrs["voxel_um"]
        assert run.origin_um == tuple(h5["anatomy"].attrs["origin_um"])
        assert run.shape == h5["anatomy/tissue"].shape == tuple(cfg.domain.shape_voxels)
        assert np.array_equal(run.tissue, h5["anatomy/tissue"][()])
        assert np.array_equal(run.niche, h5["anatomy/niche"][()])
        # time series: every column, indexed by time_h, with day = time_h / 24
        ts = run.timeseries
        assert ts.index.name == "time_h" and ts.columns[0] == "day"
        assert np.array_equal(ts.index.to_numpy(), h5["timeseries/time_h"][()])
        assert np.array_equal(ts["day"].to_numpy(), h5["timeseries/time_h"][()] / 24)
        assert set(ts.columns) == set(h5["timeseries"]) - {"time_h"} | {"day"}
        for name in h5["timeseries"]:
            if name != "time_h":
                assert np.array_equal(ts[name].to_numpy(), h5["timeseries"][name][()], equal_nan=True), name
        assert run.units["o2_mean_mmHg"] == "mmHg"
        # snapshots and the final state
        assert run.n_snapshots == 4
        assert np.array_equal(run.snapshot_times_h, h5["snapshots/time_h"][()])
        assert list(run.snapshot_times_h) == [0.0, 8.0, 16.0, 24.0]
        for k in range(run.n_snapshots):
            fields = run.fields(k)
            assert sorted(fields) == ["cytarabine", "oxygen", "signal"]  # cxcl12 is not a default snapshot field
            for name, arr in fields.items():
                assert np.array_equal(arr, h5["snapshots"][name][k]), (k, name)
            assert np.array_equal(run.cells(k), h5["snapshots/cells"][k])
            assert np.array_equal(run.lodged(k), h5["snapshots/lodged"][k])
            assert np.array_equal(run.integrity(k), h5["snapshots/integrity"][k])
            assert run.step_time_h(k) == h5["snapshots/time_h"][k]
            assert run.step_iteration(k) == h5["snapshots/iteration"][k]
        for step in (-1, None):
            for name, arr in run.fields(step).items():
                assert np.array_equal(arr, h5["state/fields"][name][()]), name
            assert np.array_equal(run.cells(step), h5["state/cells"][()])
            assert np.array_equal(run.lodged(step), h5["state/lodged"][()])
            assert np.array_equal(run.integrity(step), h5["state/vessel_integrity"][()])
        assert run.time_h == 24.0 and run.step_iteration() == 6 and run.complete is True
        assert run.fields()["cytarabine"].max() > 0


def test_open_checkpoint_equals_raw_hdf5(dosed, run):
    from marrow3d.analysis import open_run
    from marrow3d.analysis.rundata import LODGED_FLAG
    from marrow3d.kernels.cells_metrics import LODGED

    assert LODGED_FLAG == LODGED
    out, cfg = dosed
    with open_run(out / "checkpoint.h5") as ck, h5py.File(out / "checkpoint.h5", "r") as h5:
        assert ck.kind == "checkpoint" and ck.n_snapshots == 0 and len(ck.snapshot_times_h) == 0
        assert ck.meta["iteration"] == 6 and ck.config.model_dump() == cfg.model_dump()
        assert ck.shape == run.shape and ck.voxel_um == run.voxel_um and ck.origin_um == run.origin_um
        assert np.array_equal(ck.tissue, h5["state/model/anatomy/tissue"][()])
        st = h5["state/model"]
        for name, arr in ck.fields().items():
            assert np.array_equal(arr, st["fields"][name][()]), name
        assert sorted(ck.fields()) == ["cxcl12", "cytarabine", "oxygen", "signal"]  # CXCL12 on by default
        assert np.array_equal(ck.cells(), st["cells/cells"][()])
        assert np.array_equal(ck.lodged(), (st["cells/flags"][()] & LODGED).astype(np.uint8))
        assert np.array_equal(ck.integrity(), st["vessel_integrity"][()])
        # the checkpoint's history is the run's time series
        pd.testing.assert_frame_equal(ck.timeseries, run.timeseries, check_exact=True)
        # and its state is the run's final state
        assert np.array_equal(ck.lodged(), run.lodged()) and np.array_equal(ck.cells(), run.cells())
        with pytest.raises(IndexError, match="no snapshots"):
            ck.fields(0)


def test_steps_out_of_range_and_missing_arrays(run):
    from marrow3d.analysis import RunDataError

    with pytest.raises(IndexError, match="0..3"):
        run.cells(4)
    with pytest.raises(IndexError):
        run.fields(-2)
    assert "daunorubicin" not in run.fields(0)
    with pytest.raises(RunDataError, match="daunorubicin"):
        run.array("daunorubicin", 0)


def test_open_run_refuses_what_it_cannot_read(tmp_path):
    from marrow3d.analysis import open_run
    from marrow3d.errors import CheckpointError

    with pytest.raises(CheckpointError, match="does not exist"):
        open_run(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="holds no run.h5 or checkpoint.h5"):
        open_run(tmp_path / "empty")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(CheckpointError, match="not an HDF5 file"):
        open_run(tmp_path / "text.h5")
    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5["x"] = 1
    with pytest.raises(CheckpointError, match="not a marrow3d run"):
        open_run(tmp_path / "other.h5")


# ---------------------------------------------------------------------------------- pyvista
def test_to_pyvista(run):
    import pyvista as pv

    nz, ny, nx = run.shape
    v = run.voxel_um
    for step in (0, 3, -1):
        grid = run.to_pyvista(step)
        assert isinstance(grid, pv.ImageData)
        assert grid.dimensions == (nx + 1, ny + 1, nz + 1) and grid.n_cells == nz * ny * nx
        assert grid.spacing == (v, v, v)
        # the final state also holds what the default snapshots leave out (CXCL12, conditioned slots)
        final = {"cxcl12", "niche_conditioned"} if step == -1 else set()
        assert set(grid.cell_data.keys()) == {"tissue", "niche", "cells", "lodged", "integrity", "oxygen",
                                              "signal", "cytarabine"} | final
        assert np.array_equal(grid.cell_data["oxygen"], run.fields(step)["oxygen"].ravel())
        assert grid.field_data["time_h"][0] == run.step_time_h(step)
    # x fastest: cell (z, y, x) = (1, 2, 3) sits at origin_um + (1, 2, 3) voxels, as (x, y, z)
    grid = run.to_pyvista()
    k = (1 * ny + 2) * nx + 3
    oz, oy, ox = run.origin_um
    assert grid.cell_centers().points[k] == pytest.approx((ox + 3 * v, oy + 2 * v, oz + 1 * v))
    assert grid.cell_data["tissue"][k] == run.tissue[1, 2, 3]


# ---------------------------------------------------------------------------------- helpers
def test_niche_occupancy_matches_timeseries(run):
    ts = run.timeseries
    for step, t in [(k, run.snapshot_times_h[k]) for k in range(run.n_snapshots)] + [(-1, run.time_h)]:
        occ = run.niche_occupancy(step)
        row = ts.loc[t]
        for kind in ("endosteal", "perivascular"):
            for col, metric in (("slots", "slots"), ("hsc", "hsc"), ("lsc", "lsc"), ("empty", "empty"),
                                ("other", "free_cell")):
                assert occ.loc[kind, col] == row[f"niche_{kind}_{metric}"], (step, kind, col)
        total = occ.loc["total"]
        assert total["slots"] == occ["slots"].iloc[:2].sum()
        if total["slots"]:
            assert total["hsc_share"] == pytest.approx(row["hsc_niche_share"])
            assert total["lsc_share"] == pytest.approx(row["lsc_niche_share"])


def test_drug_exposure_matches_timeseries_and_numpy(run):
    from marrow3d.kernels import codes

    df = run.drug_exposure()
    last = run.timeseries.iloc[-1]
    # regional means are exactly the model's own readouts
    for region, suffix in (("marrow", ""), ("endosteal", "_endosteal"), ("central", "_central")):
        assert df.loc[region, "cytarabine_uM"] == last[f"cytarabine_tissue_uM_mean{suffix}"], region
    assert df.loc["endosteal", "n"] + df.loc["central", "n"] == df.loc["marrow", "n"]
    assert df.loc["endosteal", "n"] > 0 and df.loc["central", "n"] > 0
    # cell groups: plain numpy
    cyt = run.fields()["cytarabine"].astype(np.float64)
    cells, lodged = run.cells(), run.lodged().astype(bool)
    marrow = run.tissue == codes.MARROW
    for name, mask in (("progenitor", cells == codes.PROGENITOR), ("lsc", cells == codes.LSC),
                       ("hsc", cells == codes.HSC), ("lsc_lodged", (cells == codes.LSC) & lodged),
                       ("hsc_lodged", (cells == codes.HSC) & lodged)):
        mask &= marrow
        assert df.loc[name, "n"] == mask.sum()
        if mask.any():
            assert df.loc[name, "cytarabine_uM"] == cyt[mask].mean(), name
        else:
            assert np.isnan(df.loc[name, "cytarabine_uM"])
    assert df.loc["lsc", "n"] == last["count_lsc"]
    # an earlier snapshot, and a wider band
    assert run.drug_exposure(0).loc["marrow", "n"] == df.loc["marrow", "n"]
    wide = run.drug_exposure(band_um=200.0)
    assert wide.loc["endosteal", "n"] >= df.loc["endosteal", "n"]


def test_distance_to_vessels_brute_force(run):
    from marrow3d.kernels import codes

    df = run.distance_to_vessels()
    assert list(df.index.get_level_values(0).unique()) == ["hsc", "progenitor", "lsc", "blast",
                                                           "hsc_lodged", "lsc_lodged"]
    v = run.voxel_um
    cells = run.cells()
    for vessel, labels in (("arteriole", (codes.ARTERIOLE,)), ("sinusoid", (codes.SINUSOID, codes.CENTRAL_SINUS))):
        targets = np.argwhere(np.isin(run.tissue, labels)).astype(np.float64)
        for group, code in (("hsc", codes.HSC), ("lsc", codes.LSC)):
            pos = np.argwhere((cells == code) & (run.tissue == codes.MARROW)).astype(np.float64)
            row = df.loc[(group, vessel)]
            assert row["n"] == len(pos)
            if len(pos) == 0:
                assert np.isnan(row["mean_um"])
                continue
            d = np.sqrt(((pos[:, None, :] - targets[None, :, :]) ** 2).sum(-1)).min(1) * v
            assert row["mean_um"] == pytest.approx(d.mean(), rel=1e-12)
            assert row["p50_um"] == pytest.approx(np.percentile(d, 50), rel=1e-12)
            assert row["p90_um"] == pytest.approx(np.percentile(d, 90), rel=1e-12)
    # every vessel is intact after one day: functional-only changes nothing
    pd.testing.assert_frame_equal(run.distance_to_vessels(functional_only=True), df)
    assert df.loc[("progenitor", "sinusoid"), "n"] == run.timeseries["count_progenitor"].iloc[-1]


# ---------------------------------------------------------------------------------- backends
def _numpy_cupy_standin(monkeypatch) -> None:
    """Modules ``cupy`` and ``cupyx.scipy.ndimage`` backed by numpy and scipy (CPU)."""
    from scipy import ndimage

    cp = types.ModuleType("cupy")
    cp.asarray = np.asarray
    cp.asnumpy = np.asarray
    cp.arange = np.arange
    cp.sqrt = np.sqrt
    cp.float64 = np.float64
    cupyx = types.ModuleType("cupyx")
    cupyx_scipy = types.ModuleType("cupyx.scipy")
    ndi = types.ModuleType("cupyx.scipy.ndimage")
    ndi.distance_transform_edt = ndimage.distance_transform_edt
    cupyx.scipy = cupyx_scipy
    cupyx_scipy.ndimage = ndi
    for name, mod in (("cupy", cp), ("cupyx", cupyx), ("cupyx.scipy", cupyx_scipy), ("cupyx.scipy.ndimage", ndi)):
        monkeypatch.setitem(sys.modules, name, mod)


def _helpers(run, step):
    return run.distance_to_vessels(step), run.drug_exposure(step), run.niche_occupancy(step)


def test_cupy_code_path_gives_the_same_bits(dosed, monkeypatch):
    """The cupy path (feature transform + scipy's distance arithmetic) on a numpy stand-in."""
    from marrow3d.analysis import open_run

    _numpy_cupy_standin(monkeypatch)
    with open_run(dosed[0]) as a, open_run(dosed[0], xp="cupy") as b:
        assert b._backend.name == "cupy"
        for step in (0, -1):
            for x, y in zip(_helpers(a, step), _helpers(b, step)):
                pd.testing.assert_frame_equal(x, y, check_exact=True)
        bone = a.tissue == 1
        assert np.array_equal(a._backend.distance_to(bone, 10.0), b._backend.distance_to(bone, 10.0))


def test_cupy_on_gpu_equals_numpy(dosed):
    pytest.importorskip("cupy", reason="cupy is not installed (pip install marrow3d[gpu]); GPU path untested here")
    from marrow3d.analysis import open_run

    try:
        import cupy

        cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # pragma: no cover - needs a GPU
        pytest.skip(f"cupy is installed but no CUDA device is usable: {exc}")
    with open_run(dosed[0]) as a, open_run(dosed[0], xp="cupy") as b:  # pragma: no cover - needs a GPU
        for step in (0, -1):
            for x, y in zip(_helpers(a, step), _helpers(b, step)):
                pd.testing.assert_frame_equal(x, y, check_exact=True)


def test_cupy_missing_is_a_clear_error(dosed, monkeypatch):
    from marrow3d.analysis import open_run
    from marrow3d.errors import Marrow3DError

    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError
    with pytest.raises(Marrow3DError, match=r"xp='cupy' needs the cupy package.*pip install"):
        open_run(dosed[0], xp="cupy")
    with pytest.raises(Marrow3DError, match="numpy, cupy"):
        open_run(dosed[0], xp="jax")


# ---------------------------------------------------------------------------------- summary
def test_info_prints_the_summary(dosed):
    from rich.console import Console
    from typer.testing import CliRunner

    from marrow3d.analysis import open_run
    from marrow3d.cli.main import app

    logger = logging.getLogger("marrow3d")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    try:
        result = CliRunner().invoke(app, ["info", str(dosed[0])], terminal_width=100)
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved
    assert result.exit_code == 0, result.output
    for needle in ("marrow3d run", "32 x 32 x 32 voxels of 10 um", "day 1.00 of 1", "finished", "LSCs",
                   "marrow cytarabine (uM)", "disease stage"):
        assert needle in result.stdout, needle
    with open_run(dosed[0] / "checkpoint.h5") as ck:
        for width in (80, 200):
            console = Console(width=width, record=True, file=io.StringIO())
            console.print(ck.summary_table())
            text = console.export_text()
            assert max(len(line) for line in text.splitlines()) <= width
        assert "checkpoint at step 6" in text and "seed" in text
