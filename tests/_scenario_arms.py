"""The arms of the small therapy scenarios for one seed, run in a worker process.

``tests/test_scenarios.py`` runs one seed per process: the arms of a 24^3 box are bound by
kernel-launch latency, not arithmetic, so seeds run side by side scale with the cores where
one seed's threads would not. Results do not depend on the thread count, so a worker uses
one thread.

Per seed: one natural history to day 7 forks the vessel-preservation arm; the rest runs to
diagnosis (day 21) and forks 7+3 and 7+3 + CXCR4 antagonist, and the latter forks
clearance + transplant just before its day-30 graft. Paired arms differ only by their therapy
(the same in-memory branching as ``marrow3d branch``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

SMALL = Path(__file__).resolve().parents[1] / "configs" / "scenarios" / "small"
END_DAY = 33  # relapse and re-engraftment are both visible by then
DFO_END_DAY = 28  # the arteriole and endosteal-drug comparisons are made by day 28


def _advance(model, day: float) -> None:
    while model.clock.time_h < day * 24.0 - 1e-9:
        model.time_step()


def run_arms(seed: int, chemo_only: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """Histories of the four therapy arms of one seed (or of 7+3 alone): arm -> metric -> array."""
    from marrow3d.backend import initialize

    backend = os.environ.get("MARROW3D_TEST_BACKEND", "cpu")
    initialize(backend, threads=1 if backend == "cpu" else None)
    from marrow3d.config import load_config
    from marrow3d.output.model_state import capture_model_state, restore_model_state
    from marrow3d.runner import make_model

    def model(scenario: str, parent=None):
        m = make_model(load_config(SMALL / f"{scenario}.toml", [f"run.seed={seed}"]))
        if parent is not None:
            restore_model_state(m, capture_model_state(parent))
        return m

    base = model("natural_history")
    runs = {}
    if not chemo_only:
        _advance(base, 7)
        runs["vessel_preservation"] = model("chemo_7_3_vessel_preservation", base)
        _advance(runs["vessel_preservation"], DFO_END_DAY)
    _advance(base, 21)
    runs["chemo"] = model("chemo_7_3", base)
    _advance(runs["chemo"], END_DAY)
    if chemo_only:
        return {"chemo": {n: np.asarray(v) for n, v in runs["chemo"].history.items()}}
    runs["cxcr4"] = model("chemo_7_3_cxcr4", base)
    _advance(runs["cxcr4"], 30)  # the transplant arm shares everything up to its day-30 graft
    runs["transplant"] = model("clearance_transplant", runs["cxcr4"])
    _advance(runs["cxcr4"], END_DAY)
    _advance(runs["transplant"], END_DAY)
    return {k: {n: np.asarray(v) for n, v in m.history.items()} for k, m in runs.items()}
