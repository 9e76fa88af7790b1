"""Continuation equals direct, bit for bit; kill -9 during a checkpoint; branches.

One direct 2-day run of ``configs/tiny.toml`` (checkpoints every 12 h) is the reference. A
1-day run resumed to day 2 in-process, and a CLI run killed (SIGKILL) while it writes its
second checkpoint and then continued with ``marrow3d resume`` in a subprocess, must both
reproduce every dataset of its ``run.h5`` and the state of its final checkpoint exactly.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.toml"
#: Overrides shared by every run here (a wall-clock checkpoint must never fire in a test).
OVERRIDES = ["output.checkpoint_every_hours=12.0", "output.checkpoint_every_wall_seconds=1000000.0"]
CLI = [sys.executable, "-m", "marrow3d"]


def _config(days: float, extra: list[str] | None = None):
    from marrow3d.config import load_config

    return load_config(TINY, [*OVERRIDES, *(extra or []), f"run.days={days!r}"])


def _h5_contents(path: Path, skip_attrs: set[str] = frozenset()) -> tuple[dict, dict]:
    """Every dataset (dtype, shape, raw bytes) and every attribute of an HDF5 file."""
    datasets: dict[str, tuple] = {}
    attrs: dict[str, object] = {}

    def attrs_of(name, obj):
        for k, v in obj.attrs.items():
            key = f"{name}@{k}"
            if key not in skip_attrs:
                attrs[key] = v.tolist() if isinstance(v, np.ndarray) else v

    with h5py.File(path, "r") as h5:
        attrs_of("/", h5)

        def visit(name, obj):
            attrs_of("/" + name, obj)
            if isinstance(obj, h5py.Dataset):
                arr = obj[()]
                datasets["/" + name] = (obj.dtype.str, obj.shape, np.asarray(arr).tobytes())

        h5.visititems(visit)
    return datasets, attrs


def _assert_same_file(a: Path, b: Path, skip_attrs: set[str]) -> None:
    da, aa = _h5_contents(a, skip_attrs)
    db, ab = _h5_contents(b, skip_attrs)
    assert sorted(da) == sorted(db), (sorted(set(da) ^ set(db)))
    differ = [k for k in da if da[k] != db[k]]
    assert not differ, f"datasets differ between {a} and {b}: {differ}"
    assert aa == ab, {k: (aa.get(k), ab.get(k)) for k in set(aa) | set(ab) if aa.get(k) != ab.get(k)}


#: Attributes allowed to differ: when the file was made and by which command (run, or resume)
#: legitimately differ, and so does a checkpoint's checksum record, which covers them:
#: _assert_same_record compares it without them.
# provenance, not results: when and how each file was written, and from which commit (a
# commit made while the suite runs must not fail it)
_RUN_SKIP = {"/meta@created", "/meta@command_line", "/meta@integrity", "/meta@integrity_sha256", "/meta@git_commit"}
_CKPT_SKIP = {"/meta@created", "/meta@command_line", "/meta@integrity", "/meta@integrity_sha256", "/meta@git_commit"}


def _assert_same_record(a: Path, b: Path) -> None:
    """Two checkpoints' checksum records agree on every object but the creation time and command."""
    import json

    records = []
    for path in (a, b):
        with h5py.File(path, "r") as h5:
            record = json.loads(h5["meta"].attrs["integrity"])["sha256"]
        for key in ("/meta@created", "/meta@command_line", "/meta@git_commit"):  # provenance, not results
            record.pop(key, None)
        records.append(record)
    assert records[0] == records[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, taichi_backend):
    """``direct`` (2 days), ``part`` (1 day) and ``cont`` (``part`` resumed to day 2)."""
    from marrow3d.runner import resume_run, run_simulation

    base = tmp_path_factory.mktemp("restart")
    direct, part, cont = base / "direct", base / "part", base / "cont"
    run_simulation(_config(2.0), direct, progress=False)
    run_simulation(_config(1.0), part, progress=False)
    shutil.copytree(part, cont)
    result = resume_run(cont, 2.0, progress=False)
    assert result.status.reason == "finished" and result.status.iteration == 48
    return {"direct": direct, "part": part, "cont": cont}


def test_continuation_equals_direct(runs):
    direct, cont = runs["direct"], runs["cont"]
    # run.h5: every dataset identical; /meta@config_toml records run.days of the first leg.
    _assert_same_file(direct / "run.h5", cont / "run.h5", _RUN_SKIP | {"/meta@config_toml"})
    # final checkpoints: the whole state (fields, lattice, Philox counter, schedules, history)
    _assert_same_file(direct / "checkpoint.h5", cont / "checkpoint.h5", _CKPT_SKIP)
    _assert_same_record(direct / "checkpoint.h5", cont / "checkpoint.h5")
    _assert_same_record(direct / "run.h5", cont / "run.h5")
    with h5py.File(cont / "checkpoint.h5", "r") as h5:
        assert int(h5["meta"].attrs["iteration"]) == 48


def test_continuation_cut_back_to_checkpoint(runs):
    """The 1-day run.h5 is cut back to the checkpoint's step, then grows like the direct one."""
    from marrow3d.analysis import open_run

    with open_run(runs["part"]) as part, open_run(runs["cont"]) as cont:
        assert len(part.timeseries) == 25 and len(cont.timeseries) == 49
        assert list(part.snapshot_times_h) == [0.0, 12.0, 24.0]
        assert list(cont.snapshot_times_h) == [0.0, 12.0, 24.0, 36.0, 48.0]


def _wait_for(predicate, proc, timeout_s: float, what: str) -> None:
    t0 = time.monotonic()
    while not predicate():
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"the run ended (status {proc.returncode}) before {what}:\n{out[-3000:]}")
        if time.monotonic() - t0 > timeout_s:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_kill9_during_checkpoint_then_cli_resume_equals_direct(runs, tmp_path):
    """SIGKILL while the second checkpoint is being written; ``marrow3d resume`` then finishes
    the run exactly as the direct run did (and run.h5 was readable through SWMR meanwhile)."""
    from marrow3d.analysis import open_run
    from marrow3d.output.checkpointer import load_checkpoint

    out = tmp_path / "killed"
    env = dict(os.environ, MARROW3D_TEST_CHECKPOINT_PAUSE_S="2.0")
    cmd = [*CLI, "run", str(TINY), "--days", "2", "--out", str(out)]
    for o in OVERRIDES:
        cmd += ["--set", o]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # the checkpoint at 12 h is complete (after the one at t = 0) and the next (24 h) is being written
        _wait_for(lambda: (out / "checkpoint_000000012.h5").exists() and any(out.glob(".checkpoint_*.tmp-*")),
                  proc, 300, "the 24 h checkpoint's temporary file")
        # a viewer can read the growing run.h5 while the run holds it open (SWMR)
        with open_run(out) as live:
            assert live.swmr and live.complete is None
            ts = live.timeseries
            assert len(ts) >= 25 and ts.index[0] == 0.0
            assert live.n_snapshots >= 2
            assert live.fields()["oxygen"].shape == live.shape  # falls back to the newest snapshot
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert any(out.glob(".checkpoint_*.tmp-*"))  # really killed mid-write

    meta, state = load_checkpoint(out)
    assert meta["iteration"] == 12 and state["model"]["clock"]["iteration"] == 12

    res = subprocess.run([*CLI, "resume", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    direct = runs["direct"]
    _assert_same_file(direct / "run.h5", out / "run.h5", _RUN_SKIP)
    _assert_same_file(direct / "checkpoint.h5", out / "checkpoint.h5", _CKPT_SKIP)
    _assert_same_record(direct / "checkpoint.h5", out / "checkpoint.h5")


# ---------------------------------------------------------------------------------- branches
CYTARABINE_AT_DAY_1 = ('therapy.events=[{agent="cytarabine",kind="infusion",start_day=1.0,'
                       'duration_days=0.25,dose_mg_per_m2_per_day=100.0}]')


def test_branch_changes_therapy_and_keeps_the_prefix(runs, tmp_path):
    from marrow3d.analysis import open_run
    from marrow3d.runner import branch_run

    arm = tmp_path / "arm"
    result = branch_run(runs["part"], arm, [CYTARABINE_AT_DAY_1, "run.days=1.25"], progress=False)
    assert result.status.iteration == 30
    with open_run(runs["part"]) as parent, open_run(arm) as child:
        p, c = parent.timeseries, child.timeseries
        assert len(p) == 25 and len(c) == 31
        # the branch's series starts with the parent's, bit for bit (every parent column) ...
        assert set(p.columns) <= set(c.columns)
        assert np.array_equal(c[p.columns].iloc[:25].to_numpy(), p.to_numpy(), equal_nan=True)
        assert np.array_equal(c.index[:25], p.index)
        # ... and the new drug's readouts, unknown to the parent, are NaN before the branch
        added = sorted(set(c.columns) - set(p.columns))
        assert "cytarabine_tissue_uM_mean" in added and "solver_iterations_cytarabine" in added
        assert c[added].iloc[:25].isna().all().all() and c[added].iloc[25:].notna().all().all()
        # and then doses: plasma and marrow cytarabine appear after day 1 only
        assert (c["plasma_cytarabine_uM"].iloc[:25] == 0).all()
        assert (c["plasma_cytarabine_uM"].iloc[25:] > 0).all()
        assert c["cytarabine_tissue_uM_mean"].iloc[-1] > 0
        assert "cytarabine" in child.fields()
        assert child.config.therapy.uses("cytarabine") and not parent.config.therapy.uses("cytarabine")
        assert child.meta["branched_from"] == str(runs["part"].resolve())
        assert child.meta["branch_time_h"] == 24.0
        # the branch's checkpoint resumes like any run's
        assert child.complete is True


@pytest.mark.parametrize("override, key", [
    ("domain.shape_voxels=[16, 16, 16]", "domain.shape_voxels"),
    ("run.seed=7", "run.seed"),
])
def test_branch_refuses_history_keys(runs, tmp_path, override, key):
    from marrow3d.errors import ConfigError
    from marrow3d.runner import branch_run

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        branch_run(runs["part"], tmp_path / "arm", [override], progress=False)
    assert not (tmp_path / "arm").exists()


def test_branch_refusal_through_cli(runs, tmp_path):
    res = subprocess.run([*CLI, "branch", str(runs["part"]), str(tmp_path / "arm"), "--set", "run.seed=7"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "run.seed" in lines[0], res.stderr


# ------------------------------------------------- vessels that changed before the checkpoint
#: 400 LSCs in the tiny box: their signal starts degrading the vessels within hours, so the
#: integrity at the checkpoint differs from the anatomy's initial one (the resume once rebuilt
#: the anatomy from the current integrity and was refused: "records another anatomy").
DEGRADING = ["cells.initial.lsc_count=400", "output.checkpoint_every_hours=2.0"]


@pytest.fixture(scope="module")
def degraded(tmp_path_factory, taichi_backend):
    """``direct`` (4 h), ``part`` (2 h) and ``cont`` (``part`` resumed to 4 h), all with
    vessels degrading from the start; ``old`` is ``part`` written without
    ``/state/model/anatomy/integrity`` (as checkpoints were before it), then resumed to 4 h."""
    from marrow3d.output.integrity import write_record
    from marrow3d.runner import resume_run, run_simulation

    base = tmp_path_factory.mktemp("degraded")
    direct, part, cont, old = (base / n for n in ("direct", "part", "cont", "old"))
    run_simulation(_config(4 / 24, DEGRADING), direct, progress=False)
    run_simulation(_config(2 / 24, DEGRADING), part, progress=False)
    shutil.copytree(part, cont)
    assert resume_run(cont, 4 / 24, progress=False).status.iteration == 4

    # an older checkpoint: no /state/model/anatomy/integrity, and a checksum record without it
    shutil.copytree(part, old)
    with h5py.File(old / "checkpoint.h5", "a") as h5:
        del h5["state/model/anatomy/integrity"]
        write_record(h5)
    assert resume_run(old, 4 / 24, progress=False).status.iteration == 4
    return {"direct": direct, "part": part, "cont": cont, "old": old}


def test_resume_after_vessels_changed_equals_direct(degraded):
    from marrow3d.kernels import codes

    with h5py.File(degraded["part"] / "checkpoint.h5", "r") as h5:
        tissue = h5["state/model/anatomy/tissue"][()]
        initial = h5["state/model/anatomy/integrity"][()]
        current = h5["state/model/vessel_integrity"][()]
    vessel = np.isin(tissue, codes.VESSEL_LABELS)
    assert np.array_equal(initial, vessel.astype(np.float32))  # the anatomy as built
    assert current[vessel].min() < 1.0  # the vessels did degrade before the checkpoint
    direct, cont = degraded["direct"], degraded["cont"]
    _assert_same_file(direct / "run.h5", cont / "run.h5", _RUN_SKIP | {"/meta@config_toml"})
    _assert_same_file(direct / "checkpoint.h5", cont / "checkpoint.h5", _CKPT_SKIP)
    _assert_same_record(direct / "checkpoint.h5", cont / "checkpoint.h5")
    _assert_same_record(direct / "run.h5", cont / "run.h5")


def test_resume_of_a_checkpoint_without_initial_integrity_equals_direct(degraded):
    """Checkpoints written before /state/model/anatomy/integrity: the anatomy's initial
    integrity is rebuilt from its vessel labels, and the resume is still bit for bit."""
    direct, old = degraded["direct"], degraded["old"]
    _assert_same_file(direct / "run.h5", old / "run.h5", _RUN_SKIP | {"/meta@config_toml"})
    _assert_same_file(direct / "checkpoint.h5", old / "checkpoint.h5", _CKPT_SKIP)


def test_new_files_from_a_degraded_checkpoint_record_the_run_anatomy(degraded, tmp_path):
    """A resume that writes a new run.h5 and a branch both record the anatomy fingerprint of
    the run they continue, not one of the degraded vessels."""
    from marrow3d.runner import branch_run, resume_run

    with h5py.File(degraded["direct"] / "run.h5", "r") as h5:
        expected = h5["meta"].attrs["anatomy_fingerprint"]
    fresh = tmp_path / "fresh"
    shutil.copytree(degraded["part"], fresh)
    (fresh / "run.h5").unlink()
    resume_run(fresh, 3 / 24, progress=False)
    arm = tmp_path / "arm"
    branch_run(degraded["part"], arm, ["run.days=0.125"], progress=False)
    for run_dir in (fresh, arm):
        for name in ("run.h5", "checkpoint.h5"):
            with h5py.File(run_dir / name, "r") as h5:
                assert h5["meta"].attrs["anatomy_fingerprint"] == expected, (run_dir, name)


def test_a_checkpoint_of_other_initial_vessels_is_refused(degraded, tmp_path):
    """The initial integrity is part of the anatomy: a checkpoint whose anatomy started with
    other vessels than run.h5 records belongs to another run, and nothing is touched."""
    from marrow3d.errors import CheckpointError
    from marrow3d.output.integrity import write_record
    from marrow3d.runner import resume_run

    other = tmp_path / "other"
    shutil.copytree(degraded["part"], other)
    with h5py.File(other / "checkpoint.h5", "a") as h5:
        ds = h5["state/model/anatomy/integrity"]
        initial = ds[()]
        initial[np.unravel_index(np.argmax(initial), initial.shape)] = 0.5  # one vessel voxel
        ds[...] = initial
        write_record(h5)
    def files():  # the lock file's record of its last holder aside
        return {p.name: p.read_bytes() for p in other.iterdir() if p.is_file() and p.name != ".marrow3d.lock"}

    before = files()
    with pytest.raises(CheckpointError, match="records another anatomy than the checkpoint's"):
        resume_run(other, 4 / 24, progress=False)
    assert files() == before
