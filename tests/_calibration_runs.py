"""The tiny natural history of one seed, run in a worker process by ``test_calibration``.

A 32^3 box is bound by kernel-launch latency, not arithmetic: seeds side by side in their own
processes (one thread each; results do not depend on the thread count) use the cores where
one process's threads would not.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DAYS = 30  # takeover lands on days 22-25; day 30 leaves margin and keeps CI short


def natural_history(seed: int) -> dict[str, np.ndarray]:
    """Time series of the tiny natural history of ``seed``: metric -> array."""
    from marrow3d.backend import initialize

    backend = os.environ.get("MARROW3D_TEST_BACKEND", "cpu")
    initialize(backend, threads=1 if backend == "cpu" else None)
    from marrow3d.config import load_config
    from marrow3d.runner import make_model

    cfg = load_config(ROOT / "configs/tiny.toml", [f"run.seed={seed}", f"run.days={DAYS}"])
    model = make_model(cfg)
    for _ in range(int(DAYS * 24 / cfg.run.cell_step_hours)):
        model.time_step()
    return {k: np.asarray(v) for k, v in model.history.items()}
