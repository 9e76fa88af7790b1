"""End-to-end CLI runs on the tiny config (subprocesses, like a user at a terminal)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from marrow3d.cli.main import app

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.toml"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "marrow3d", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("tiny")
    proc = _cli("run", str(TINY), "--days", "0.5", "--out", str(tmp / "run"), cwd=tmp)
    (tmp / "stderr.txt").write_text(proc.stderr)
    (tmp / "stdout.txt").write_text(proc.stdout)
    return tmp / "run"


def test_run_is_quiet_by_default(tiny_run):
    """Off a terminal: progress log lines with an ETA on stderr, one 'done' line on stdout and
    nothing else (no compiler banner, warnings or backend chatter; those come with -v)."""
    err = (tiny_run.parent / "stderr.txt").read_text().splitlines()
    assert err and all(" INFO marrow3d.progress: day " in line and " ETA " in line for line in err), err
    assert len(err) <= 3  # the first step, maybe one periodic line, the last step
    out = (tiny_run.parent / "stdout.txt").read_text().splitlines()
    assert len(out) == 1 and out[0].startswith("done: ") and "on cpu" in out[0]


def test_run_writes_the_output_contract(tiny_run):
    with h5py.File(tiny_run / "run.h5", "r") as h5:
        meta = h5["meta"].attrs
        for key in ("schema_version", "marrow3d_version", "config_toml", "seed", "backend", "created"):
            assert key in meta, key
        assert meta["backend"] == "cpu"
        tissue = h5["anatomy/tissue"]
        assert tissue.dtype == np.uint8 and tissue.shape == (32, 32, 32)
        assert tissue.attrs["voxel_um"] == 10.0 and len(tissue.attrs["origin_um"]) == 3
        assert tissue.attrs["code_bone"] == 1
        assert h5["anatomy/niche"].dtype == np.uint8
        assert set(np.unique(h5["anatomy/niche"][()])) <= {0, 1, 2}
        assert h5["state/vessel_integrity"].dtype == np.float32
        assert h5["state/fields/oxygen"].attrs["units"] == "mmHg"
        assert h5["state/cells"].dtype == np.uint8
        t = h5["timeseries/time_h"][()]
        assert t[0] == 0.0 and t[-1] == 12.0 and len(t) == 13
    assert (tiny_run / "config.toml").exists()
    assert (tiny_run / "checkpoint.h5").exists()


def test_meta_records_provenance(tiny_run):
    """/meta of run.h5 and of the checkpoint name the software, the source commit, host and command."""
    import platform
    import socket

    import scipy

    from marrow3d.kernels.ti_compat import library_version

    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    for name in ("run.h5", "checkpoint.h5"):
        with h5py.File(tiny_run / name, "r") as h5:
            meta = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in h5["meta"].attrs.items()}
        assert meta["kernel_compiler"] == f"quadrants {library_version()}", name
        assert meta["numpy_version"] == np.__version__ and meta["scipy_version"] == scipy.__version__
        assert meta["h5py_version"] == h5py.__version__ and meta["hdf5_version"] == h5py.version.hdf5_version
        assert meta["python_version"] == platform.python_version()
        assert meta["host"] == socket.gethostname()
        assert meta["command_line"].endswith(f"run {TINY} --days 0.5 --out {tiny_run}"), meta["command_line"]
        if head.returncode == 0:  # tests run from a checkout
            assert meta["git_commit"].removesuffix("-dirty") == head.stdout.strip()


def test_version_option():
    from marrow3d import __version__
    from marrow3d.kernels.ti_compat import library_version

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.startswith(f"marrow3d {__version__} (quadrants {library_version()}")


def test_config_show_round_trip_gives_identical_anatomy(tiny_run, tmp_path):
    shown = _cli("config", "show", str(TINY), "--set", "run.days=0.5", cwd=tmp_path).stdout
    cfg = tmp_path / "x.toml"
    cfg.write_text(shown)
    _cli("run", str(cfg), "--out", str(tmp_path / "again"), cwd=tmp_path)
    with h5py.File(tiny_run / "run.h5", "r") as a, h5py.File(tmp_path / "again" / "run.h5", "r") as b:
        for name in ("anatomy/tissue", "anatomy/niche", "state/cells", "state/fields/oxygen", "state/vessel_integrity"):
            assert a[name][()].tobytes() == b[name][()].tobytes(), name
        for name in a["timeseries"]:
            np.testing.assert_array_equal(a["timeseries"][name][()], b["timeseries"][name][()], err_msg=name)


def test_another_seed_gives_another_anatomy(tiny_run, tmp_path):
    _cli("run", str(TINY), "--days", "0", "--seed", "2", "--out", str(tmp_path / "s2"), cwd=tmp_path)
    with h5py.File(tiny_run / "run.h5", "r") as a, h5py.File(tmp_path / "s2" / "run.h5", "r") as b:
        assert not np.array_equal(a["anatomy/tissue"][()], b["anatomy/tissue"][()])
        assert b["meta"].attrs["seed"] == 2


def test_run_refuses_to_overwrite_a_run(tiny_run):
    result = CliRunner().invoke(app, ["run", str(TINY), "--out", str(tiny_run)])
    assert result.exit_code == 2
    assert "already holds a run" in result.output


@pytest.mark.parametrize(
    "command",
    [["run"], ["resume"], ["branch"], ["info"], ["config", "show"], ["config", "validate"], ["anatomy", "stats"]],
)
def test_every_command_has_help_with_an_example(command):
    result = CliRunner().invoke(app, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Example" in result.output
