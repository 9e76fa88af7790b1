"""The tutorial script (examples/tutorial.py) runs end to end at tiny size, and its page's
commands exist.

``--tiny``: a 16^3 box, natural history to day 1, two arms branched there to day 2; then
``marrow3d compare``, ``marrow3d render``, a plain pyvista picture and the analysis.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "tutorial.py"
PAGE = ROOT / "docs" / "tutorial.md"


def test_tutorial_runs_at_tiny_size(gl, tmp_path):
    from PIL import Image

    out = tmp_path / "tutorial"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--backend", "cpu", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    text = proc.stdout
    for step in ("1. natural history to day 1", "2. arm 7+3", "$ marrow3d compare", "$ marrow3d render",
                 "4. pyvista", "5. leukemic burden", "niche slots at the end", "distance to the nearest vessel",
                 "xarray: {'time':", "done:"):
        assert step in text, step
    # the runs: one shared history, two arms branched from it
    for name in ("natural_history", "arm_7+3", "arm_7+3_dfo"):
        assert (out / name / "run.h5").is_file(), name
    report = out / "report"
    assert (report / "report.md").is_file() and (report / "endpoints.csv").is_file()
    assert "data:image/png;base64," in (report / "report.html").read_text(encoding="utf-8")
    table = pd.read_csv(report / "endpoints.csv", index_col="run")
    assert list(table.index) == ["7+3", "7+3+DFO"]
    assert table["therapy_start_day"].between(1.0, 1.1).all()
    # the pictures are not blank
    for png in (out / "oxygen_end.png", out / "pyvista_leukemic_cells.png", report / "timeseries.png"):
        img = np.asarray(Image.open(png).convert("RGB"))
        assert np.mean(np.any(img < 235, axis=-1)) > 0.02, png
    dist = pd.read_csv(out / "distance_to_vessels.csv")
    assert {"cell", "vessel", "n", "mean_um"} <= set(dist.columns)


def test_tutorial_page_commands_exist():
    from marrow3d.cli.main import app

    names = {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands}
    names |= {g.name for g in app.registered_groups}
    used = set(re.findall(r"^\s*(?:\$ )?marrow3d ([a-z-]+)", PAGE.read_text(encoding="utf-8"), flags=re.M))
    assert {"run", "branch", "compare", "render"} <= used
    assert used <= names, used - names
    assert "examples/tutorial.py" in PAGE.read_text(encoding="utf-8")
