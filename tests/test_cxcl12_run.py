"""A tiny run with the CXCL12 field on: written to /state and snapshots, resumed bit for bit, rendered.

``configs/tiny.toml`` (32^3) for 4 steps of 3 h with checkpoints every 6 h; the continuation
of the 6-h run to 12 h must reproduce the direct 12-h run's files exactly (the field is part
of the checkpoint and warm-starts the next solve).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from test_checkpoint_restart import _CKPT_SKIP, _RUN_SKIP, _assert_same_file

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.toml"
OVERRIDES = [
    "transport.cxcl12.enabled=true",
    "run.cell_step_hours=3.0",
    "output.snapshot_every_hours=6.0",
    "output.checkpoint_every_hours=6.0",
    "output.checkpoint_every_wall_seconds=1000000.0",
    'output.snapshot_fields=["oxygen","cxcl12","cells"]',
]


def _config(days: float):
    from marrow3d.config import load_config

    return load_config(TINY, [*OVERRIDES, f"run.days={days!r}"])


@pytest.fixture(scope="module")
def runs(tmp_path_factory, taichi_backend):
    from marrow3d.runner import resume_run, run_simulation

    base = tmp_path_factory.mktemp("cxcl12")
    direct, part, cont = base / "direct", base / "part", base / "cont"
    run_simulation(_config(0.5), direct, progress=False)
    run_simulation(_config(0.25), part, progress=False)
    shutil.copytree(part, cont)
    result = resume_run(cont, 0.5, progress=False)
    assert result.status.reason == "finished"
    return {"direct": direct, "cont": cont}


def test_field_is_in_state_snapshots_and_checkpoint(runs):
    from marrow3d.analysis import open_run
    from marrow3d.output.checkpointer import load_checkpoint

    with h5py.File(runs["direct"] / "run.h5", "r") as h5:
        c = h5["state/fields/cxcl12"][()]
        assert h5["state/fields/cxcl12"].attrs["units"] == "nM"
        tissue = h5["anatomy/tissue"][()]
        assert h5["snapshots/cxcl12"].shape[0] == 3  # t = 0, 6, 12 h
    assert np.isfinite(c).all() and c.min() >= 0.0
    marrow = tissue == 0
    assert 0.05 < c[marrow].mean() < 10.0  # bounded by the 10 nM source level
    assert (c[(tissue == 1)] == 0).all()  # bone carries no field
    with open_run(runs["direct"]) as run:  # the reader (checksums verified)
        np.testing.assert_array_equal(run.array("cxcl12"), c)
        assert run.array_units("cxcl12") == "nM"
    _, state = load_checkpoint(runs["direct"] / "checkpoint.h5")
    assert "cxcl12" in state["model"]["fields"]


def test_resume_with_the_field_is_bit_for_bit(runs):
    _assert_same_file(runs["direct"] / "run.h5", runs["cont"] / "run.h5", _RUN_SKIP | {"/meta@config_toml"})
    _assert_same_file(runs["direct"] / "checkpoint.h5", runs["cont"] / "checkpoint.h5", _CKPT_SKIP)


def test_render_show_cxcl12(gl, runs, tmp_path):
    """``marrow3d render --show cxcl12`` draws the field (a picture of the requested size)."""
    from PIL import Image

    import typer
    from typer.testing import CliRunner

    from marrow3d.cli.viz_cmd import register
    from test_viz import not_background

    app = typer.Typer()
    register(app)
    out = tmp_path / "cxcl12.png"
    args = ["render", str(runs["direct"]), "--show", "cxcl12", "--out", str(out), "--size", "300x200"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape == (200, 300, 3) and not_background(img) > 0.05
