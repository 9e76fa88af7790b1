"""Tiny runs that several test modules read: each is made once per session (conftest.py
registers the fixtures below).

Every run here is read only: a test that writes into a run directory (a damaged file, a
resume, an export beside run.h5) copies it to its own ``tmp_path`` first (:func:`copy_run`).
A model build costs seconds (the kernels are traced for each new model), so a run shared by
N modules saves N - 1 of them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from _dosed_run import DOSED, TINY

#: 4 steps of 3 h; snapshots and checkpoints every 6 h (t = 0, steps 2 and 4): the fault tests'
#: material (tests/test_faults.py) and the real checkpoint that tests/test_checkpoint_errors.py damages.
QUICK = ["run.days=0.5", "run.cell_step_hours=3.0", "output.snapshot_every_hours=6.0",
         "output.checkpoint_every_hours=6.0", "output.checkpoint_every_wall_seconds=1000000.0"]


def copy_run(src: Path, dst: Path) -> Path:
    """A private copy of a shared run directory, for a test that writes into it."""
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory, taichi_backend) -> Path:
    """A finished tiny run: run.h5, checkpoint.h5 (step 4) and checkpoint_000000002.h5."""
    from marrow3d.config import load_config
    from marrow3d.runner import run_simulation

    out = tmp_path_factory.mktemp("quick") / "good"
    run_simulation(load_config(TINY, QUICK), out, progress=False)
    return out


@pytest.fixture(scope="session")
def dosed_run(tmp_path_factory, taichi_backend):
    """The dosed 6-step run of tests/_dosed_run.py: (run directory, its config). Read by the
    analysis, export and reproducibility-pin tests."""
    from marrow3d.config import load_config
    from marrow3d.runner import run_simulation

    cfg = load_config(TINY, DOSED)
    out = tmp_path_factory.mktemp("dosed") / "run"
    run_simulation(cfg, out, progress=False)
    return out, cfg
