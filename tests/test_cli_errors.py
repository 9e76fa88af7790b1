"""Bad input gets one line naming the problem, exit status 2 and no traceback.

Most cases run in-process through typer's CliRunner; a few run the real console script in a
subprocess to prove no traceback reaches the terminal.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from marrow3d.cli.main import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, text: str, name: str = "bad.toml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def _assert_clean_error(result, *needles: str) -> None:
    out = result.output if hasattr(result, "output") else result.stderr
    assert result.exit_code == 2, out
    assert "Traceback" not in out
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, out
    assert lines[0].startswith("error:"), out
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


CONFIG_CASES = {
    "typo_key": ("[run]\ndayz = 3\n", ["run.dayz", "did you mean 'run.days'"]),
    "unknown_section": ("[trasport]\n", ["trasport", "transport"]),
    "negative_diffusivity": ("[transport.oxygen]\ndiffusivity_um2_per_min = -5.0\n",
                             ["transport.oxygen.diffusivity_um2_per_min", "-5.0", "greater than 0"]),
    "zero_voxel": ("[domain]\nvoxel_um = 0\n", ["domain.voxel_um", "0"]),
    "negative_voxel": ("[domain]\nvoxel_um = -10\n", ["domain.voxel_um", "-10"]),
    "wrong_type": ('[run]\ndays = "ten"\n', ["run.days", "'ten'"]),
    "bad_backend": ('[run]\nbackend = "tpu"\n', ["run.backend", "'tpu'", "cpu"]),
    "two_dims": ("[domain]\nshape_voxels = [32, 32]\n", ["domain.shape_voxels"]),
    "bad_toml": ("[run\ndays = 3\n", ["not valid TOML"]),
    "mask_without_path": ('[domain]\nkind = "mask"\n', ["mask_path"]),
    "severe_above_hypoxic": ("[transport.oxygen]\nsevere_hypoxic_mmHg = 20.0\n", ["severe_hypoxic_mmHg"]),
    "unknown_agent": ('[[therapy.events]]\nagent = "aspirin"\nkind = "bolus"\nday = 1\ndose_mg_per_m2 = 10\n',
                      ["aspirin"]),
    "negative_dose": ('[[therapy.events]]\nagent = "cytarabine"\nkind = "bolus"\nday = 1\ndose_mg_per_m2 = -10\n',
                      ["dose_mg_per_m2"]),
    "negative_seed": ("[run]\nseed = -1\n", ["run.seed", "-1"]),
    "zero_step": ("[run]\ncell_step_hours = 0\n", ["run.cell_step_hours"]),
    "negative_km": ("[transport.oxygen]\nkm_mmHg = -1.0\n", ["transport.oxygen.km_mmHg"]),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_malformed_config_gives_one_line(tmp_path, case):
    text, needles = CONFIG_CASES[case]
    result = runner.invoke(app, ["config", "validate", str(_write(tmp_path, text))])
    _assert_clean_error(result, *needles)


def test_missing_config_file(tmp_path):
    result = runner.invoke(app, ["config", "show", str(tmp_path / "nope.toml")])
    _assert_clean_error(result, "nope.toml", "does not exist")


def test_config_path_is_directory(tmp_path):
    result = runner.invoke(app, ["config", "show", str(tmp_path)])
    _assert_clean_error(result, "directory")


@pytest.mark.parametrize(
    "override, needles",
    [
        ("run.days", ["section.key=value"]),
        ("run.days.x=1", ["run.days is a value"]),
        ("domain.voxel_um=-1", ["domain.voxel_um"]),
    ],
)
def test_malformed_override(override, needles):
    result = runner.invoke(app, ["config", "show", "--set", override])
    _assert_clean_error(result, *needles)


def test_grid_too_large_for_the_device_is_refused_before_work(tmp_path):
    # 1.7e9 voxels: fits int32 indexing but not this machine's memory (or any 2-core CI box)
    result = runner.invoke(app, ["run", "--out", str(tmp_path / "r"), "--backend", "cpu",
                                 "--set", "domain.shape_voxels=[1200, 1200, 1200]"])
    _assert_clean_error(result, "domain.shape_voxels", "GiB")
    assert not (tmp_path / "r").exists()


def test_grid_over_int32_indexing_is_refused():
    result = runner.invoke(app, ["config", "show", "--set", "domain.shape_voxels=[2000, 2000, 2000]"])
    _assert_clean_error(result, "domain.shape_voxels")


MASK_CASES = {
    "unknown_labels": (lambda: np.full((8, 8, 8), 9, dtype=np.uint8), "npy", ["9"]),
    "float_dtype": (lambda: np.zeros((8, 8, 8), dtype=np.float32), "npy", ["float32"]),
    "two_dimensional": (lambda: np.zeros((8, 8), dtype=np.uint8), "npy", ["(8, 8)"]),
    "missing_dataset": (lambda: np.zeros((8, 8, 8), dtype=np.uint8), "h5", ["/nothere"]),
}


@pytest.mark.parametrize("case", sorted(MASK_CASES))
def test_malformed_mask_gives_one_line(tmp_path, case):
    make, fmt, needles = MASK_CASES[case]
    arr = make()
    if fmt == "npy":
        path = tmp_path / "mask.npy"
        np.save(path, arr)
        spec = str(path)
    else:
        import h5py

        path = tmp_path / "mask.h5"
        with h5py.File(path, "w") as h5:
            h5["labels"] = arr
        spec = f"{path}:/nothere"
    result = runner.invoke(app, ["anatomy", "stats", "--set", 'domain.kind="mask"', "--set", f'domain.mask_path="{spec}"'])
    _assert_clean_error(result, *needles)


def test_missing_mask_file(tmp_path):
    spec = tmp_path / "gone.npy"
    result = runner.invoke(app, ["anatomy", "stats", "--set", 'domain.kind="mask"', "--set", f'domain.mask_path="{spec}"'])
    _assert_clean_error(result, "gone.npy", "does not exist")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "marrow3d", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_console_script_prints_no_traceback(tmp_path):
    bad = _write(tmp_path, "[transport.oxygen]\ndiffusivity_um2_per_min = -1.0\n")
    proc = _cli("run", str(bad), "--out", str(tmp_path / "r"), cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error:")
    assert "transport.oxygen.diffusivity_um2_per_min" in proc.stderr


def test_cuda_requested_without_gpu_is_an_error_not_a_fallback(tmp_path):
    import shutil

    if shutil.which("nvidia-smi"):
        pytest.skip("an NVIDIA GPU is present: the no-GPU error path cannot be exercised here")
    proc = _cli("run", str(ROOT / "configs/tiny.toml"), "--backend", "cuda", "--out", str(tmp_path / "r"),
                cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "'cuda' was requested but is not available" in proc.stderr
    assert not (tmp_path / "r" / "run.h5").exists()


def test_config_validate_reads_the_mask(tmp_path):
    """A mask config is sized from its file (issue 16 item 14), and a missing or malformed mask
    is invalid, not 'valid'."""
    slab = np.zeros((1, 1, 23), np.uint8)
    slab[..., 0] = slab[..., -1] = 3
    np.save(tmp_path / "slab.npy", slab)
    np.save(tmp_path / "flat.npy", np.zeros((8, 8), np.uint8))
    base = ["config", "validate", str(ROOT / "configs" / "tiny.toml"), "--set", 'domain.kind="mask"']
    ok = runner.invoke(app, [*base, "--set", f'domain.mask_path="{tmp_path / "slab.npy"}"'])
    assert ok.exit_code == 0 and "1x1x23 = 23 voxels" in ok.stdout, ok.output
    for name, needles in (("nothere.npy", ["nothere.npy", "does not exist"]),
                          ("flat.npy", ["flat.npy", "2 dimension(s)"])):
        result = runner.invoke(app, [*base, "--set", f'domain.mask_path="{tmp_path / name}"'])
        _assert_clean_error(result, *needles)
