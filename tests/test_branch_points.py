"""Checkpoint keep policy and ``marrow3d branch --at-day`` on short runs of ``configs/tiny.toml``.

A half-day run with a snapshot every 3 h archives a checkpoint with each snapshot (t = 0
included). Branching from day 0.125 without changes must reproduce the source run's final
state bit for bit (same config and seed: the checkpoint holds everything).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.toml"
SHORT = ["run.days=0.5", "output.snapshot_every_hours=3", "output.checkpoint_every_hours=6",
         "output.checkpoint_every_wall_seconds=1000000"]


def _run(out: Path, *overrides: str) -> Path:
    from marrow3d.config import load_config
    from marrow3d.runner import run_simulation

    run_simulation(load_config(TINY, [*SHORT, *overrides]), out, progress=False)
    return out


@pytest.fixture(scope="module")
def archived(tmp_path_factory, taichi_backend) -> Path:
    return _run(tmp_path_factory.mktemp("branch") / "src", 'output.checkpoints_archive="snapshots"')


def _cli(*args):
    from typer.testing import CliRunner

    from marrow3d.cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_snapshot_archive_keeps_a_checkpoint_per_snapshot(archived):
    from marrow3d.analysis import open_run
    from marrow3d.output.checkpointer import list_checkpoints

    found = list_checkpoints(archived)
    with open_run(archived) as run:
        assert [c.time_h for c in found] == list(run.snapshot_times_h) == [0.0, 3.0, 6.0, 9.0, 12.0]
    assert all(c.archived for c in found)
    assert [c.path.name for c in found] == [f"checkpoint_{i:09d}.h5" for i in (0, 3, 6, 9, 12)]


def test_branch_at_day_continues_bit_for_bit(archived, tmp_path, restore_logging):
    new = tmp_path / "arm"
    result = _cli("branch", archived, new, "--at-day", "0.125")
    assert result.exit_code == 0, result.output
    with h5py.File(archived / "run.h5", "r") as a, h5py.File(new / "run.h5", "r") as b:
        assert b["meta"].attrs["branch_time_h"] == 3.0
        assert b["meta"].attrs["branch_checkpoint"] == "checkpoint_000000003.h5"
        names = []
        a["state"].visit(lambda n: names.append(n) if isinstance(a["state"][n], h5py.Dataset) else None)
        assert "fields/oxygen" in names and "cells" in names
        for name in names:
            assert np.array_equal(a["state"][name][()], b["state"][name][()]), name
        for name in a["timeseries"]:
            np.testing.assert_array_equal(a["timeseries"][name][()], b["timeseries"][name][()], err_msg=name)


def test_branch_at_a_day_without_checkpoint_is_one_line(archived, tmp_path, restore_logging):
    result = _cli("branch", archived, tmp_path / "x", "--at-day", "0.2")
    assert result.exit_code == 2
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "no checkpoint at day 0.2" in lines[0]
    assert "days: 0, 0.125, 0.25, 0.375, 0.5" in lines[0].replace("\n", "")
    assert not (tmp_path / "x").exists()


def test_rolling_and_keep_all_policies(tmp_path, taichi_backend):
    from marrow3d.output.checkpointer import list_checkpoints

    quick = ["run.days=0.25", "output.checkpoint_every_hours=2", "output.checkpoints_keep=2"]
    rolling = _run(tmp_path / "rolling", *quick)
    assert [(c.time_h, c.archived) for c in list_checkpoints(rolling)] == [(4.0, False), (6.0, False)]
    kept = _run(tmp_path / "all", *quick, 'output.checkpoints_archive="all"')
    # every run checkpoints its starting state (so a kill at any time can be resumed)
    assert [(c.time_h, c.archived) for c in list_checkpoints(kept)] == [(0.0, True), (2.0, True), (4.0, True),
                                                                       (6.0, True)]


def test_archive_of_snapshots_needs_snapshots():
    from pydantic import ValidationError

    from marrow3d.config.output import OutputConfig

    with pytest.raises(ValidationError, match="needs snapshot_every_hours"):
        OutputConfig(snapshot_every_hours=None, checkpoints_archive="snapshots")
