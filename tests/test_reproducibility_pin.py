"""The CPU results are pinned bit for bit across changes of the kernel compiler and kernels.

The digests below were recorded on main at f501b06, with Taichi 1.7.4 (the last upstream
Taichi release) on x86-64, before the kernels moved to quadrants: ``marrow3d run`` of
``configs/tiny.toml`` (2 days, 48 steps) and of the dosed one-day variant of
``tests/_dosed_run.py``. The move to quadrants, GPU layouts chosen at compile time and
device-side readouts must all leave the CPU arithmetic exactly as it was; a change that alters
these digests changes the model's numbers and has to say so (and re-pin with a reason).
Those two run with every switch added later turned off; the third digest pins the current
default model (``configs/tiny.toml`` as it is, 2 days), recorded when the defaults changed.
"""

from __future__ import annotations

import platform

import pytest

from _dosed_run import DOSED, TINY
from marrow3d.analysis import open_run
from marrow3d.config import load_config
from marrow3d.runner import run_simulation

#: /state digests (marrow3d.analysis.digest.state_digest) recorded with Taichi 1.7.4.
PINNED = {
    "plain": "e4d8e463d4b0461843fcfe7812111ea13053d62ca0f94fccd10b5eb64d21a43f",
    "dosed": "de2e6c76ff78fc231d03b1efef52b22364a4cfaa183d5f1c4f85a3788bd9b2d1",
    # The default model since the recalibration with CXCL12, both niche mechanisms and blast
    # maturation on (docs/model.md 9.8), recorded with quadrants 1.3.3 at that change: a later
    # change that alters it changes the default model's numbers and must say so.
    "defaults": "a61f1ba265dcb32b54582d4bf8be7328100d86c862e5f43026d4a205ba0ce233",
}
#: Mechanisms added after the pins stay off here (and the LSC cycle at its old default), so the
#: switches' "off" is checked to be bit for bit the model they were added to.
_PIN_OFF = ["cells.niche_dependence.enabled=false", "cells.niche_conditioning.enabled=false",
            "transport.cxcl12.enabled=false", "cells.blast_maturation.enabled=false",
            "cells.division.lsc_fraction_of_blast_rate=0.5"]
OVERRIDES = {"plain": _PIN_OFF, "dosed": [*DOSED, *_PIN_OFF], "defaults": []}

pytestmark = pytest.mark.skipif(
    platform.machine() not in ("x86_64", "AMD64"),
    reason="digests were recorded on x86-64 (libm and code generation may differ elsewhere)",
)


@pytest.mark.parametrize("case", sorted(PINNED))
def test_tiny_run_state_is_bitwise_pinned(taichi_backend, dosed_run, tmp_path, case):
    cfg = load_config(TINY, OVERRIDES[case])
    run_dir = tmp_path / case
    if case == "dosed" and cfg == dosed_run[1]:
        # the session's dosed run (tests/_runs.py) is this run while the mechanisms added
        # after the pins are off by default: the same configuration, so the same state
        run_dir = dosed_run[0]
    else:
        run_simulation(cfg, run_dir, progress=False)
    with open_run(run_dir) as run:
        assert run.complete
        assert run.state_digest() == PINNED[case]
