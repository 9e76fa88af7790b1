"""benchmarks/device_check.py in --dry-run mode: the GPU acceptance script works end to end.

The dry run takes the same code paths as the GPU run (backend check, layout and reduction
checks, CPU subprocess cross-check, copy bandwidth, kernel timings, femur run, summary and
JSON) on the CPU at small sizes; the layout check runs the GPU layout on the CPU backend, and
its cross-check compares a 2-thread run with a 1-thread subprocess, which must be bitwise
identical.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_device_check_dry_run(tmp_path):
    out = tmp_path / "device_check.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "device_check.py"), "--dry-run", "--out", str(out)],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,  # 21 s idle, ~300 s at load 10
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "overall: PASS" in proc.stdout
    rec = json.loads(out.read_text())
    assert rec["ok"] and rec["dry_run"]
    assert rec["checks"]["backend"]["arch"] == rec["checks"]["backend_at_end"]["arch"] != "cuda"
    lc = rec["checks"]["layouts"]
    assert lc["ok"] and set(lc["fields"]) == {"oxygen", "drug"}
    for f in lc["fields"].values():  # the GPU layout, forced on the CPU: same bits as in-process
        assert f["repeat_identical"] and f["cpu_voxels_identical"] and 0 < f["cpu_rows_max_over_range"] <= 1e-5
    red = rec["checks"]["reductions"]
    assert red["ok"] and red["repeat_identical"] and red["relative_difference"] <= 1e-12
    assert "sweep_vs_copy" not in rec["checks"]  # a GPU goal: not rated on the CPU
    cc = rec["checks"]["cross_check"]
    assert cc["ok"] and cc["cells"]["identical"]
    assert all(f["identical"] for f in cc["fields"].values())
    assert set(cc["fields"]) == {"oxygen", "signal", "integrity", "cxcl12"}  # CXCL12 is on by default
    assert rec["bandwidth"]["taichi_copy_GBps"] > 0
    sizes = [t["n"] for t in rec["timings"]]
    assert sizes == [32]
    for t in rec["timings"]:
        assert t["sweep"]["s"] > 0 and t["warm_solve"]["s"] > 0 and t["cell_step"]["s"] > 0
        assert t["model_step"]["s"] > 0
    femur = rec["femur"]
    assert "error" not in femur, femur
    assert femur["steps"] >= 1 and femur["s_per_simulated_day"] > 0
    assert femur["extrapolated_28_days_min"] == femur["s_per_simulated_day"] * 28 / 60


def test_device_check_refuses_a_missing_gpu(tmp_path):
    """Without a GPU the real mode must fail loudly, not fall back to the CPU."""
    import shutil

    if shutil.which("nvidia-smi"):
        import pytest

        pytest.skip("a GPU may be present: the real mode is not a failure here")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "device_check.py"), "--out", str(tmp_path / "x.json")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert "FAIL backend" in proc.stdout
    assert not (tmp_path / "x.json").exists()


def test_vulkan_capability_requirements():
    """A Vulkan device without float64, int64 or int64 atomics is refused with what needs them."""
    from marrow3d.backend import VULKAN_REQUIREMENTS, missing_vulkan_capabilities

    assert missing_vulkan_capabilities(lambda name: True) == []
    for lacking in VULKAN_REQUIREMENTS:
        missing = missing_vulkan_capabilities(lambda name, lacking=lacking: name != lacking)
        assert len(missing) == 1 and lacking.removeprefix("spirv_has_") in missing[0]
    assert any("Newton iterate" in m for m in missing_vulkan_capabilities(lambda name: False))


def test_info_reports_a_vulkan_device_that_cannot_run_the_model():
    """`marrow3d info` must not call a Vulkan device available when a run on it is refused."""
    from marrow3d.backend import vulkan_probe_status

    assert vulkan_probe_status(lambda name: True) == "available (vulkan)"
    status = vulkan_probe_status(lambda name: name == "spirv_has_int64")
    assert status == "starts, but cannot run marrow3d (no float64, no atomic_int64)", status


def test_vulkan_device_lacking_float64_is_refused(tmp_path):
    """End to end where a Vulkan driver exists (e.g. Mesa's lavapipe): the device is made to
    report no float64, and initialize('vulkan') must raise BackendError naming it."""
    code = (
        "import marrow3d.backend as b\n"
        "b._device_capability_getter = lambda ti: (lambda name: name != 'spirv_has_float64')\n"
        "try:\n"
        "    b.initialize('vulkan')\n"
        "except b.BackendError as exc:\n"
        "    print('REFUSED', exc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    if "not available here" in proc.stdout + proc.stderr:
        import pytest

        pytest.skip("no Vulkan driver here")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "REFUSED" in proc.stdout and "no float64" in proc.stdout, proc.stdout
