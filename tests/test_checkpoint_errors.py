"""Damaged checkpoints give a CheckpointError naming the file and the problem; NaN stops a run.

Every damaged file is made from one real checkpoint, that of the session's 4-step
``quick_run`` (tests/_runs.py). ``load_checkpoint`` of each names the file and the problem;
``info`` and ``export`` of the unreadable ones give exit status 2 and one line, and so does the
real console script (subprocesses run in parallel). ``marrow3d resume`` of each damaged
checkpoint is tests/test_faults.py's (its CHECKPOINT_DAMAGE holds every case below, with these
words). A NaN injected into the oxygen field stops the run with ``diagnostic.h5``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.toml"
CLI = [sys.executable, "-m", "marrow3d"]


@pytest.fixture(scope="module")
def good_checkpoint(quick_run) -> Path:
    """A real checkpoint (step 4 of configs/tiny.toml with 3-h steps; read only)."""
    path = quick_run / "checkpoint.h5"
    assert path.exists()
    return path


# ---------------------------------------------------------------------------------- damage
def _truncated(src: Path, dst: Path) -> None:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])


def _random_bytes(src: Path, dst: Path) -> None:
    dst.write_bytes(np.random.default_rng(5).integers(0, 256, 65536, dtype=np.uint8).tobytes())


def _foreign(src: Path, dst: Path) -> None:
    with h5py.File(dst, "w") as h5:
        h5.create_dataset("temperature", data=np.arange(10.0))
        h5.attrs["producer"] = "some other simulator"


def _edit(fn):
    def make(src: Path, dst: Path) -> None:
        shutil.copyfile(src, dst)
        with h5py.File(dst, "a") as h5:
            fn(h5)

    return make


def _wrong_schema(h5) -> None:
    h5["meta"].attrs["schema_version"] = 99


def _missing_dataset(h5) -> None:
    del h5["state/model/cells/cells"]


def _wrong_shape(h5) -> None:
    shape = h5["state/model/fields/oxygen"].shape
    del h5["state/model/fields/oxygen"]
    h5["state/model/fields/oxygen"] = np.zeros((shape[0], shape[1], shape[2] - 1), dtype=np.float32)


def _bit_flip(src: Path, dst: Path) -> None:
    """Corrupt the first stored chunk of the oxygen field (Fletcher-32 must catch it)."""
    shutil.copyfile(src, dst)
    with h5py.File(dst, "r") as h5:
        info = h5["state/model/fields/oxygen"].id.get_chunk_info(0)
    data = bytearray(dst.read_bytes())
    for i in range(info.byte_offset + 8, info.byte_offset + 24):
        data[i] ^= 0xFF
    dst.write_bytes(bytes(data))


#: case -> (how to damage, words the message must hold)
CASES = {
    "truncated": (_truncated, ["cannot be read"]),
    "random_bytes": (_random_bytes, ["not an HDF5 file"]),
    "foreign_hdf5": (_foreign, ["not a marrow3d checkpoint"]),
    "wrong_schema_version": (_edit(_wrong_schema), ["schema_version 99", "reads 1"]),
    "missing_dataset": (_edit(_missing_dataset), ["missing dataset /state/model/cells/cells"]),
    "wrong_shape": (_edit(_wrong_shape), ["/state/model/fields/oxygen", "has shape"]),
    "corrupted_chunk": (_bit_flip, ["cannot be read"]),
}


#: case -> its twin in test_faults.CHECKPOINT_DAMAGE, which `marrow3d resume` is refused with.
RESUMED_IN_TEST_FAULTS = {
    "truncated": "truncated_half", "random_bytes": "random_bytes", "foreign_hdf5": "foreign_hdf5_with_data",
    "wrong_schema_version": "schema_99", "missing_dataset": "cells_dataset_deleted",
    "wrong_shape": "oxygen_wrong_shape", "corrupted_chunk": "oxygen_chunk_corrupted",
}


def test_every_case_is_resumed_through_the_cli_in_test_faults():
    """``resume`` of each damaged checkpoint runs once, in tests/test_faults.py, with these words."""
    from test_faults import CHECKPOINT_DAMAGE

    assert sorted(RESUMED_IN_TEST_FAULTS) == sorted(CASES)
    for case, twin in RESUMED_IN_TEST_FAULTS.items():
        assert set(CASES[case][1]) <= set(CHECKPOINT_DAMAGE[twin][-1]), (case, twin)


#: Cases that no reader can open (``open_run`` also refuses them).
UNREADABLE = ("truncated", "random_bytes", "foreign_hdf5")


def _damaged(good: Path, tmp_path: Path, case: str) -> Path:
    run_dir = tmp_path / case
    run_dir.mkdir()
    CASES[case][0](good, run_dir / "checkpoint.h5")
    return run_dir


@pytest.mark.parametrize("case", sorted(CASES))
def test_load_checkpoint_names_file_and_problem(good_checkpoint, tmp_path, case):
    from marrow3d.errors import CheckpointError
    from marrow3d.output.checkpointer import load_checkpoint

    run_dir = _damaged(good_checkpoint, tmp_path, case)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(run_dir)
    msg = str(info.value)
    assert str(run_dir / "checkpoint.h5") in msg
    for needle in CASES[case][1]:
        assert needle in msg, (needle, msg)
    assert "\n" not in msg


def test_good_checkpoint_loads(good_checkpoint):
    from marrow3d.output.checkpointer import load_checkpoint

    meta, state = load_checkpoint(good_checkpoint)
    assert meta["kind"] == "checkpoint" and meta["iteration"] == 4
    assert state["model"]["fields"]["oxygen"].shape == tuple(state["model"]["anatomy"]["tissue"].shape)


def _one_error_line(res, *needles: str) -> str:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error:"), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def test_cli_info_export_give_one_line(good_checkpoint, tmp_path, restore_logging):
    """``info`` and ``export`` of every unreadable file: exit 2, one line naming it. (``resume``
    of every damaged file: tests/test_faults.py, test_resume_refuses_a_damaged_checkpoint...)"""
    from typer.testing import CliRunner

    from marrow3d.cli.main import app

    for case in UNREADABLE:  # info/export read what they know of other (newer) files
        run_dir = _damaged(good_checkpoint, tmp_path, case)
        path = str(run_dir / "checkpoint.h5")
        commands = [(["info", path], [path]), (["export", path, "--format", "csv"], [path])]
        for args, needles in commands:
            result = CliRunner().invoke(app, args)
            res = subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)
            _one_error_line(res, *needles)


def test_console_script_prints_one_line(good_checkpoint, tmp_path):
    """The real console script (no traceback reaches the terminal); run in parallel."""
    jobs = {}
    for case, command in (("random_bytes", "resume"), ("wrong_shape", "resume"), ("foreign_hdf5", "info")):
        run_dir = _damaged(good_checkpoint, tmp_path, case)
        target = run_dir if command == "resume" else run_dir / "checkpoint.h5"
        jobs[case] = ([*CLI, command, str(target)], [str(run_dir / "checkpoint.h5")])
    procs = {k: subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k, (cmd, _) in jobs.items()}
    for key, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        _one_error_line(subprocess.CompletedProcess(proc.args, proc.returncode, out, err), *jobs[key][1])


# ---------------------------------------------------------------------------------- NaN
def test_nan_stops_run_with_diagnostic_checkpoint(taichi_backend, tmp_path, monkeypatch, restore_logging):
    """NaN in a field: exit status 2 through the CLI, diagnostic.h5 holds the bad state,
    checkpoint.h5 keeps the last good one and run.h5 is marked incomplete."""
    from typer.testing import CliRunner

    from marrow3d.analysis import open_run
    from marrow3d.cli.main import app
    from marrow3d.model import MarrowModel
    from marrow3d.output.checkpointer import load_checkpoint

    original = MarrowModel.time_step

    def poisoned(self):
        original(self)
        if self.clock.iteration == 3:
            a = self.fields["oxygen"].to_numpy()
            a[3, 4, 5] = np.nan
            self.fields["oxygen"].from_numpy(a)

    monkeypatch.setattr(MarrowModel, "time_step", poisoned)
    out = tmp_path / "nan"
    args = ["run", str(TINY), "--days", "1", "--out", str(out), "--set", "run.cell_step_hours=3.0",
            "--set", "output.checkpoint_every_hours=6.0", "--set", "output.checkpoint_every_wall_seconds=1000000.0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    err = result.stderr
    assert "Traceback" not in err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "non-finite" in errors[0] and "oxygen" in errors[0], err

    meta, state = load_checkpoint(out / "diagnostic.h5")
    assert meta["iteration"] == 3
    assert np.isnan(state["model"]["fields"]["oxygen"][3, 4, 5])
    assert np.count_nonzero(~np.isfinite(state["model"]["fields"]["oxygen"])) == 1
    good_meta, good_state = load_checkpoint(out)  # checkpoint.h5 is still the last good state
    assert good_meta["iteration"] == 2 and np.all(np.isfinite(good_state["model"]["fields"]["oxygen"]))
    with open_run(out) as run:
        assert run.complete is False
        assert run.step_iteration(-1) == 3
    with open_run(out / "diagnostic.h5") as diag:
        assert diag.kind == "checkpoint" and np.isnan(diag.fields()["oxygen"][3, 4, 5])
