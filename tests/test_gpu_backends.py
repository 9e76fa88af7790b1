"""Cross-check of the GPU kernel layout on a real GPU backend against the CPU (marked ``gpu``).

A subprocess (``ti.init`` is process-global) initialises the backend, solves an O2-like and a
drug-like problem on a synthetic 24^3 marrow twice in the GPU layout and takes ``v . Jv`` by the
lane tree twice; this process does the same with the GPU layout forced on the CPU backend.
Required: two device runs bitwise identical; device and CPU within 1e-6 of the field's range
(the same arithmetic: identical bits are expected and reported, but CUDA flushes denormals);
the dot product within 1e-12 of numpy's float64 sum.

CUDA runs when the backend starts (skipped otherwise). Vulkan (e.g. Mesa's software lavapipe,
where the GPU layout gave the very same bits as on the CPU) only with
``MARROW3D_TEST_VULKAN=1``: its first compilation takes minutes on a CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

ROOT = Path(__file__).resolve().parents[1]
N = 24

DEVICE_SCRIPT = """
import json, sys
import numpy as np
sys.path.insert(0, {root!r})
from marrow3d.backend import initialize
from marrow3d.errors import BackendError
try:
    initialize({backend!r})
except BackendError as exc:
    print("UNAVAILABLE", exc)
    sys.exit(0)
from benchmarks.device_check import layout_solves, reduction_check
first, second = layout_solves({n}, "voxels"), layout_solves({n}, "voxels")
np.savez({out!r}, **{{f"first/{{k}}": v for k, v in first.items()}}, **{{f"second/{{k}}": v for k, v in second.items()}})
print("REDUCTION", json.dumps(reduction_check({n})))
"""


def _device_run(backend: str, tmp_path: Path):
    out = tmp_path / f"{backend}.npz"
    code = DEVICE_SCRIPT.format(root=str(ROOT), backend=backend, n=N, out=str(out))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800, cwd=tmp_path)
    if "UNAVAILABLE" in proc.stdout:
        pytest.skip(f"no {backend} here: {proc.stdout.strip()[:200]}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    red = json.loads(proc.stdout.split("REDUCTION", 1)[1].strip().splitlines()[0])
    with np.load(out) as z:
        return {k: z[k] for k in z.files}, red


@pytest.mark.parametrize("backend", ["cuda", "vulkan"])
def test_gpu_layout_on_a_gpu_backend_matches_the_cpu(taichi_backend, tmp_path, backend):
    if backend == "vulkan" and os.environ.get("MARROW3D_TEST_VULKAN") != "1":
        pytest.skip("set MARROW3D_TEST_VULKAN=1 to cross-check on Vulkan (slow to compile on a CPU)")
    sys.path.insert(0, str(ROOT))
    from benchmarks.device_check import layout_solves

    dev, red = _device_run(backend, tmp_path)
    cpu = layout_solves(N, "voxels")
    for name in ("oxygen", "drug"):
        a, b = dev[f"first/{name}"], dev[f"second/{name}"]
        assert np.array_equal(a, b), f"{backend}: two runs of {name} differ"
        span = float(np.abs(cpu[name]).max())
        diff = float(np.abs(a.astype(np.float64) - cpu[name]).max()) / span
        assert diff <= 1e-6, (backend, name, diff)
        print(f"{backend} {name}: {'identical to the CPU' if diff == 0 else f'{diff:.1e} of the range from the CPU'}")
    assert red["repeat_identical"] and red["relative_difference"] <= 1e-12, red
