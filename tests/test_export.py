""".vtkhdf, CSV and Parquet export and the xarray view: read back with VTK's own reader,
pyvista, pandas, pyarrow and xarray.

One dosed 6-step run of ``configs/tiny.toml`` (snapshots every 8 h, cytarabine included) is
exported; every time step VTK reads must equal the snapshot it came from, value for value;
pyvista's reader must see the time series; every export must carry units.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from _runs import copy_run

#: Exported VTKHDF array names: units in brackets, labels plain.
VTK_NAMES = {"tissue": "tissue", "niche": "niche", "cells": "cells", "lodged": "lodged",
             "integrity": "integrity [1]", "oxygen": "oxygen [mmHg]", "signal": "signal [su]",
             "cytarabine": "cytarabine [uM]"}


@pytest.fixture(scope="module")
def run_dir(dosed_run) -> Path:
    """The session's dosed run (tests/_runs.py; read only: exports go elsewhere)."""
    return dosed_run[0]


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
        assert root["CellData/oxygen [mmHg]"].shape == (n, nz, ny, nx)
        assert root["CellData/tissue"].shape == (1, nz, ny, nx)
        assert list(root["Steps/CellDataOffsets/oxygen [mmHg]"][()]) == list(range(n))
        assert list(root["Steps/CellDataOffsets/tissue"][()]) == [0] * n
        assert root["CellData/cells"].compression == "gzip" and root["CellData/cells"].shuffle
        assert sorted(root["CellData"]) == sorted(VTK_NAMES.values())
        for name, vname in VTK_NAMES.items():  # units and descriptions as HDF5 attributes too
            ds = root["CellData"][vname]
            assert ds.attrs["units"] == run.array_units(name) and ds.attrs["description"], name
        assert root["CellData/cytarabine [uM]"].attrs["units"] == "uM"
        assert root["CellData/tissue"].attrs["code_bone"] == 1
        assert root["Steps/Values"].attrs["units"] == "h"


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
        assert set(VTK_NAMES.values()) <= set(mesh.cell_data.keys())
        # cell (0, 0, 0) is centred on origin_um (z, y, x)
        assert mesh.cell_centers().points[0] == pytest.approx((ox, oy, oz))
        assert run.n_snapshots == 4
        for k in range(run.n_snapshots):
            step = read_vtkhdf_step(path, k)
            assert step.field_data["Time"][0] == run.snapshot_times_h[k]
            assert np.array_equal(step.cell_data["tissue"], run.tissue.ravel())
            assert np.array_equal(step.cell_data["niche"], run.niche.ravel())
            for name in set(VTK_NAMES) - {"tissue", "niche"}:
                got, want = step.cell_data[VTK_NAMES[name]], run.array(name, k).ravel()
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
            assert np.array_equal(grid.cell_data[name], step.cell_data[VTK_NAMES[name]]), name


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
            assert np.array_equal(last.cell_data[VTK_NAMES[name]], run.array(name, -1).ravel()), name


def test_vtkhdf_of_a_checkpoint(run_dir, tmp_path):
    import pyvista as pv

    from marrow3d.analysis import open_run
    from marrow3d.output.export import export_run

    path = export_run(run_dir / "checkpoint.h5", "vtkhdf", tmp_path / "ckpt.vtkhdf")
    mesh = pv.read(path)
    with open_run(run_dir / "checkpoint.h5") as ckpt:
        assert np.array_equal(mesh.cell_data["lodged"], ckpt.lodged().ravel())
        assert np.array_equal(mesh.cell_data["oxygen [mmHg]"], ckpt.fields()["oxygen"].ravel())
        assert mesh.field_data["Time"][0] == 24.0
    reader = pv.get_reader(path)  # one time step: its time comes from the field data
    assert reader.number_time_points == 1 and reader.time_values == [24.0]


def test_pyvista_reader_sees_the_time_series(run_dir, tmp_path):
    """pyvista.get_reader gives marrow3d's VTKHDF reader (a pyvista TimeReader, registered as a
    pyvista reader plugin); its time values are the snapshot hours and setting one reads that
    snapshot. VTK's pipeline (what ParaView's animation uses) reports the same time steps."""
    import pyvista as pv
    from vtkmodules.vtkCommonExecutionModel import vtkStreamingDemandDrivenPipeline

    from marrow3d.analysis import open_run
    from marrow3d.output.export import export_run

    path = export_run(run_dir, "vtkhdf", tmp_path / "run.vtkhdf")
    reader = pv.get_reader(path)
    assert isinstance(reader, pv.TimeReader), (
        f"pyvista gave {type(reader).__name__}: the installed marrow3d metadata lacks its pyvista reader "
        "entry point; reinstall marrow3d (pip install -e .)")
    with open_run(run_dir) as run:
        times = [float(t) for t in run.snapshot_times_h]
        assert reader.number_time_points == run.n_snapshots == 4
        assert reader.time_values == times == [0.0, 8.0, 16.0, 24.0]
        reader.reader.UpdateInformation()
        info = reader.reader.GetOutputInformation(0)
        assert list(info.Get(vtkStreamingDemandDrivenPipeline.TIME_STEPS())) == times
        for k in (2, 0, 3):
            reader.set_active_time_value(times[k])
            assert reader.active_time_value == times[k]
            mesh = reader.read()
            for name in ("oxygen", "cytarabine", "cells"):
                assert np.array_equal(mesh.cell_data[VTK_NAMES[name]], run.array(name, k).ravel()), (k, name)
        reader.set_active_time_point(1)
        assert reader.active_time_value == 8.0
        assert np.array_equal(reader.read().cell_data["lodged"], run.array("lodged", 1).ravel())
    with pytest.raises(ValueError, match="not one of the file's time values"):
        reader.set_active_time_value(5.0)
    with pytest.raises(IndexError):
        reader.set_active_time_point(4)


def test_cli_export_vtkhdf_default_path(run_dir, tmp_path, restore_logging):
    run_dir = copy_run(run_dir, tmp_path / "run")  # the default path is beside run.h5
    result = _cli("export", run_dir)
    assert result.exit_code == 0, result.output
    assert (run_dir / "run.vtkhdf").is_file() and "run.vtkhdf" in result.stdout


def test_cli_export_csv_round_trips(run_dir, tmp_path, restore_logging):
    from marrow3d.analysis import open_run

    from marrow3d.output.export import read_timeseries_csv, split_unit

    out = tmp_path / "sub" / "ts.csv"
    result = _cli("export", run_dir, "--format", "csv", "--out", out)
    assert result.exit_code == 0, result.output
    header = out.read_text().splitlines()[0].split(",")
    assert header[:2] == ["time_h [h]", "day [d]"]
    assert {"signal_mean [su]", "o2_mean_mmHg [mmHg]", "count_lsc [count]", "leukemic_fraction [1]",
            "plasma_cytarabine_uM [uM]", "cytarabine_uM_h_blast [uM h]", "stage [code]"} <= set(header)
    back, units = read_timeseries_csv(out)
    with open_run(run_dir) as run:
        pd.testing.assert_frame_equal(back, run.timeseries, check_exact=True)
        assert units == {name: split_unit(text)[0] for name, text in run.units.items()}


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
    import json

    import pyarrow.parquet as pq

    from marrow3d.output.export import split_unit

    schema = pq.read_schema(out)
    with open_run(run_dir) as run:
        pd.testing.assert_frame_equal(pd.read_parquet(out), run.timeseries, check_exact=True)
        for name in ["time_h", *run.timeseries.columns]:
            assert schema.field(name).metadata[b"units"].decode() == split_unit(run.units[name])[0], name
        assert json.loads(schema.metadata[b"marrow3d"])["seed"] == run.meta["seed"]
    assert schema.field("signal_mean").metadata == {b"units": b"su"}
    assert schema.field("stage").metadata[b"units"] == b"code"
    assert schema.field("stage").metadata[b"description"].startswith(b"0 pre-leukemic")
    assert schema.field("cytarabine_uM_h_blast").metadata[b"description"] == b"summed over cells"


def test_split_unit():
    from marrow3d.output.export import split_unit

    assert split_unit("mmHg") == ("mmHg", "")
    assert split_unit("uM h (summed over cells)") == ("uM h", "summed over cells")
    assert split_unit("0 pre-leukemic, 1 permissive, 2 self-reinforcing") == (
        "code", "0 pre-leukemic, 1 permissive, 2 self-reinforcing")


def test_cli_export_bad_format(run_dir, restore_logging):
    result = _cli("export", run_dir, "--format", "vtu")
    assert result.exit_code == 2 and "unknown export format 'vtu'" in result.stderr


# ------------------------------------------------------------------ xarray
def test_to_xarray_labels_units_and_values(run_dir):
    """Dims (time, z, y, x); coordinates in hours and um; units as attributes; every value
    equal to the array RunData reads; the final state is the last time point when later."""
    from marrow3d.analysis import open_run

    with open_run(run_dir) as run:
        ds = run.to_xarray()
        nz, ny, nx = run.shape
        assert dict(ds.sizes) == {"time": 4, "z": nz, "y": ny, "x": nx}  # 0, 8, 16 h snapshots + final 24 h
        assert list(ds.time.values) == [0.0, 8.0, 16.0, 24.0] and ds.time.attrs["units"] == "h"
        assert list(ds.day.values) == [0.0, 8 / 24, 16 / 24, 1.0] and list(ds.iteration.values) == [0, 2, 4, 6]
        oz, oy, ox = run.origin_um
        assert ds.x.attrs["units"] == "um" and ds.x.values[1] - ds.x.values[0] == run.voxel_um
        assert (ds.z.values[0], ds.y.values[0], ds.x.values[0]) == (oz, oy, ox)
        assert set(ds.data_vars) == {"oxygen", "signal", "cytarabine", "cells", "lodged", "integrity", "tissue", "niche"}
        assert ds.oxygen.dims == ("time", "z", "y", "x") and ds.tissue.dims == ("z", "y", "x")
        assert ds.oxygen.attrs["units"] == "mmHg" and ds.cytarabine.attrs["units"] == "uM"
        assert ds.signal.attrs["units"] == "su" and ds.integrity.attrs["units"] == "1"
        assert ds.oxygen.attrs["long_name"] and "1 HSC" in ds.cells.attrs["description"]
        assert "bone" in ds.tissue.attrs["description"] and ds.attrs["seed"] == run.meta["seed"]
        for name in ("oxygen", "cytarabine", "cells", "lodged", "integrity"):
            for k, step in enumerate([0, 1, 2, -1]):
                got = ds[name].isel(time=k).values
                want = run.array(name, step)
                assert got.dtype == want.dtype and np.array_equal(got, want), (name, k)
        assert np.array_equal(ds.tissue.values, run.tissue)
        # label-based selection in physical units
        plane = ds.oxygen.sel(time=16.0, z=oz + 3 * run.voxel_um)
        assert np.array_equal(plane.values, run.array("oxygen", 2)[3])
        assert float(ds.cytarabine.sel(time=24.0).max()) > 0


def test_to_xarray_is_lazy(run_dir, monkeypatch):
    """Building the Dataset reads no voxels; a selection reads only what it selects."""
    from marrow3d.analysis import open_run, xarray_view

    reads = []
    original = xarray_view._TimeStack.read

    def counting(self, key):
        out = original(self, key)
        reads.append(out.shape)
        return out

    monkeypatch.setattr(xarray_view._TimeStack, "read", counting)
    with open_run(run_dir) as run:
        ds = run.to_xarray()
        assert reads == []
        row = ds.oxygen.sel(time=8.0).isel(z=5, y=7).values  # one row of one snapshot
        assert reads == [(run.shape[2],)] and np.array_equal(row, run.array("oxygen", 1)[5, 7])
        mean = float(ds.oxygen.mean())  # a reduction reads the variable once
        assert reads[1:] == [(4, *run.shape)]
        assert mean == pytest.approx(np.mean([run.array("oxygen", k) for k in (0, 1, 2, -1)]), rel=1e-6)
    with pytest.raises(Exception, match="closed"):
        ds.oxygen.values


def test_to_xarray_of_a_checkpoint(run_dir):
    from marrow3d.analysis import open_run

    with open_run(run_dir / "checkpoint.h5") as ckpt:
        ds = ckpt.to_xarray()
        assert ds.sizes["time"] == 1 and float(ds.time[0]) == 24.0
        assert np.array_equal(ds.lodged.isel(time=0).values, ckpt.lodged())  # the lodged bit of the flags
        assert np.array_equal(ds.oxygen.isel(time=0).values, ckpt.fields()["oxygen"])
        assert ds.oxygen.attrs["units"] == "mmHg"
