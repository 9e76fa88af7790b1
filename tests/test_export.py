""".vtkhdf, CSV and Parquet export: read back with VTK's own reader and pandas.

One dosed 6-step run of ``configs/tiny.toml`` (snapshots every 8 h, cytarabine included) is
exported; every time step VTK reads must equal the snapshot it came from, value for value.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from _dosed_run import DOSED, TINY


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, taichi_backend) -> Path:
    from marrow3d.config import load_config
    from marrow3d.runner import run_simulation

    out = tmp_path_factory.mktemp("export") / "run"
    run_simulation(load_config(TINY, DOSED), out, progress=False)
    return out


def _cli(*args):
    from typer.testing import CliRunner

    from marrow3d.cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_vtkhdf_layout(run_dir, tmp_path):
    from marrow3d.analysis import open_run
    from marrow3d.output.export import export_run

    path = export_run(run_dir, "vtkhdf", tmp_path / "run.vtkhdf")
    with open_run(run_dir) as run, h5py.File(path, "r") as h5:
        root = h5["VTKHDF"]
        assert list(root.attrs["Version"]) == [2, 1]
        t = root.attrs.get_id("Type").get_type()
        assert isinstance(t, h5py.h5t.TypeStringID) and not t.is_variable_str()
        assert t.get_cset() == h5py.h5t.CSET_ASCII and root.attrs["Type"] == b"ImageData"
        nz, ny, nx = run.shape
        assert list(root.attrs["WholeExtent"]) == [0, nx, 0, ny, 0, nz]
        assert list(root.attrs["Spacing"]) == [run.voxel_um] * 3
        assert list(root.attrs["Direction"]) == list(np.eye(3).ravel())
        n = run.n_snapshots
        assert root["Steps"].attrs["NSteps"] == n
        assert list(root["Steps/Values"][()]) == list(run.snapshot_times_h)
        assert root["CellData/oxygen"].shape == (n, nz, ny, nx)
        assert root["CellData/tissue"].shape == (1, nz, ny, nx)
        assert list(root["Steps/CellDataOffsets/oxygen"][()]) == list(range(n))
        assert list(root["Steps/CellDataOffsets/tissue"][()]) == [0] * n
        assert root["CellData/cells"].compression == "gzip" and root["CellData/cells"].shuffle


def test_vtkhdf_reads_back_every_step(run_dir, tmp_path):
    import pyvista as pv

    from marrow3d.analysis import open_run
    from marrow3d.output.export import export_run
    from marrow3d.output.vtkhdf import read_vtkhdf_step

    path = export_run(run_dir, "vtkhdf", tmp_path / "run.vtkhdf")
    with open_run(run_dir) as run:
        nz, ny, nx = run.shape
        v = run.voxel_um
        mesh = pv.read(path)
        assert isinstance(mesh, pv.ImageData)
        assert mesh.dimensions == (nx + 1, ny + 1, nz + 1)
        assert mesh.spacing == pytest.approx((v, v, v), abs=0)
        oz, oy, ox = run.origin_um
        assert mesh.origin == pytest.approx((ox - v / 2, oy - v / 2, oz - v / 2), abs=0)
        assert mesh.n_cells == nz * ny * nx
        names = {"tissue", "niche", "cells", "lodged", "integrity", "oxygen", "signal", "cytarabine"}
        assert names <= set(mesh.cell_data.keys())
        # cell (0, 0, 0) is centred on origin_um (z, y, x)
        assert mesh.cell_centers().points[0] == pytest.approx((ox, oy, oz))
        assert run.n_snapshots == 4
        for k in range(run.n_snapshots):
            step = read_vtkhdf_step(path, k)
            assert step.field_data["Time"][0] == run.snapshot_times_h[k]
            assert np.array_equal(step.cell_data["tissue"], run.tissue.ravel())
            assert np.array_equal(step.cell_data["niche"], run.niche.ravel())
            for name in names - {"tissue", "niche"}:
                got, want = step.cell_data[name], run.array(name, k).ravel()
                assert got.dtype == want.dtype and np.array_equal(got, want), (k, name)
        assert run.array("cytarabine", 3).max() > 0  # the dose really is in the exported data
        with pytest.raises(IndexError):
            read_vtkhdf_step(path, run.n_snapshots)


def test_vtkhdf_matches_to_pyvista(run_dir, tmp_path):
    from marrow3d.analysis import open_run
    from marrow3d.output.export import export_run
    from marrow3d.output.vtkhdf import read_vtkhdf_step

    path = export_run(run_dir, "vtkhdf", tmp_path / "run.vtkhdf")
    with open_run(run_dir) as run:
        grid = run.to_pyvista(2)
        step = read_vtkhdf_step(path, 2)
        assert grid.dimensions == step.dimensions and grid.bounds == step.bounds
        for name in grid.cell_data.keys():
            assert np.array_equal(grid.cell_data[name], step.cell_data[name]), name


def test_vtkhdf_appends_the_final_state(run_dir, tmp_path):
    from marrow3d.analysis import open_run
    from marrow3d.output.vtkhdf import read_vtkhdf_step, write_vtkhdf

    with open_run(run_dir) as run:
        path = write_vtkhdf(run, tmp_path / "two.vtkhdf", steps=[0, 1])
        with h5py.File(path, "r") as h5:
            assert h5["VTKHDF/Steps"].attrs["NSteps"] == 3
            assert list(h5["VTKHDF/Steps/Values"][()]) == [0.0, 8.0, 24.0]
        last = read_vtkhdf_step(path, 2)
        for name in ("cells", "lodged", "integrity", "oxygen", "cytarabine"):
            assert np.array_equal(last.cell_data[name], run.array(name, -1).ravel()), name


def test_vtkhdf_of_a_checkpoint(run_dir, tmp_path):
    import pyvista as pv

    from marrow3d.analysis import open_run
    from marrow3d.output.export import export_run

    path = export_run(run_dir / "checkpoint.h5", "vtkhdf", tmp_path / "ckpt.vtkhdf")
    mesh = pv.read(path)
    with open_run(run_dir / "checkpoint.h5") as ckpt:
        assert np.array_equal(mesh.cell_data["lodged"], ckpt.lodged().ravel())
        assert np.array_equal(mesh.cell_data["oxygen"], ckpt.fields()["oxygen"].ravel())
        assert mesh.field_data["Time"][0] == 24.0


def test_cli_export_vtkhdf_default_path(run_dir, restore_logging):
    result = _cli("export", run_dir)
    assert result.exit_code == 0, result.output
    assert (run_dir / "run.vtkhdf").is_file() and "run.vtkhdf" in result.stdout


def test_cli_export_csv_round_trips(run_dir, tmp_path, restore_logging):
    from marrow3d.analysis import open_run

    out = tmp_path / "sub" / "ts.csv"
    result = _cli("export", run_dir, "--format", "csv", "--out", out)
    assert result.exit_code == 0, result.output
    back = pd.read_csv(out, index_col="time_h")
    with open_run(run_dir) as run:
        pd.testing.assert_frame_equal(back, run.timeseries, check_exact=True)


def test_cli_export_parquet(run_dir, tmp_path, restore_logging):
    from marrow3d.analysis import open_run

    out = tmp_path / "ts.parquet"
    result = _cli("export", run_dir, "--format", "parquet", "--out", out)
    import importlib.util

    if importlib.util.find_spec("pyarrow") is None:
        assert result.exit_code == 2
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "pip install pyarrow" in lines[0], result.stderr
        assert not out.exists()
        return
    assert result.exit_code == 0, result.output
    with open_run(run_dir) as run:
        pd.testing.assert_frame_equal(pd.read_parquet(out), run.timeseries, check_exact=True)


def test_cli_export_bad_format(run_dir, restore_logging):
    result = _cli("export", run_dir, "--format", "vtu")
    assert result.exit_code == 2 and "unknown export format 'vtu'" in result.stderr
