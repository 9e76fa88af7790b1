"""The ``marrow3d info DIR`` table: metadata, grid, simulated time and the last key metrics."""

from __future__ import annotations

import math

import numpy as np
from rich.table import Table

from ..kernels import codes
from ..metrics import STAGE_NAMES

__all__ = ["summary_table", "KEY_METRICS"]

#: Time-series columns shown by the summary (name, label, format).
KEY_METRICS = (
    ("count_hsc", "HSCs", "{:.0f}"),
    ("count_progenitor", "progenitors", "{:.0f}"),
    ("count_lsc", "LSCs", "{:.0f}"),
    ("count_blast", "blasts", "{:.0f}"),
    ("leukemic_fraction", "leukemic fraction", "{:.3f}"),
    ("hsc_niche_share", "niche slots held by HSCs", "{:.3f}"),
    ("lsc_niche_share", "niche slots held by LSCs", "{:.3f}"),
    ("o2_mean_mmHg", "marrow pO2 mean (mmHg)", "{:.2f}"),
    ("o2_hypoxic_fraction", "hypoxic marrow fraction", "{:.3f}"),
    ("arteriole_mean_integrity", "arteriole integrity", "{:.3f}"),
    ("sinusoid_mean_integrity", "sinusoid integrity", "{:.3f}"),
    ("cytarabine_tissue_uM_mean", "marrow cytarabine (uM)", "{:.4g}"),
    ("daunorubicin_tissue_uM_mean", "marrow daunorubicin (uM)", "{:.4g}"),
)


def _fmt(value: float, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return fmt.format(value)


def summary_table(run) -> Table:
    """A two-column rich Table summarising a :class:`~marrow3d.analysis.RunData`."""
    meta = run.meta
    table = Table(title=f"marrow3d {run.kind}: {run.path}", show_header=True, title_justify="left")
    table.add_column("item", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_row("schema version", str(meta.get("schema_version", "?")))
    table.add_row("written by", f"marrow3d {meta.get('marrow3d_version', '?')} on {meta.get('backend', '?')}")
    software = [str(meta[k]) for k in ("kernel_compiler",) if meta.get(k)]
    software += [f"{k.removesuffix('_version')} {meta[k]}" for k in ("python_version", "numpy_version",
                                                                        "h5py_version") if meta.get(k)]
    if software:
        table.add_row("software", ", ".join(software))
    if meta.get("git_commit"):
        table.add_row("git commit", str(meta["git_commit"]))
    if meta.get("host"):
        table.add_row("host", str(meta["host"]))
    if meta.get("command_line"):
        table.add_row("command", str(meta["command_line"]))
    if meta.get("created"):
        table.add_row("created", str(meta["created"]))
    table.add_row("seed", str(meta.get("seed", "?")))
    if meta.get("branched_from"):
        table.add_row("branched from", f"{meta['branched_from']} at day {float(meta.get('branch_time_h', 0)) / 24:g}"
                      + (f" ({meta['branch_checkpoint']})" if meta.get("branch_checkpoint") else ""))

    nz, ny, nx = run.shape
    v = run.voxel_um
    table.add_row("grid (z, y, x)", f"{nz} x {ny} x {nx} voxels of {v:g} um "
                  f"({nz * v / 1000:.2f} x {ny * v / 1000:.2f} x {nx * v / 1000:.2f} mm)")
    tissue = run.tissue
    counts = np.bincount(tissue.ravel(), minlength=codes.N_TISSUE)
    parts = [f"{codes.TISSUE_NAMES[c]} {counts[c] / tissue.size:.1%}" for c in range(codes.N_TISSUE) if counts[c]]
    table.add_row("tissue", ", ".join(parts))

    ts = run.timeseries
    days_run = float(ts.index[-1]) / 24 if len(ts) else 0.0
    try:
        planned = f" of {run.config.run.days:g}"
    except Exception:  # a file whose config no longer validates still gets a summary
        planned = ""
    if run.kind == "checkpoint":
        status = f"checkpoint at step {run.step_iteration()}"
    elif run.complete is None:
        status = "running, or stopped without a final state"
    else:
        status = "finished" if run.complete else "stopped by an error (see diagnostic.h5)"
    table.add_row("simulated", f"day {days_run:.2f}{planned} ({len(ts)} time-series rows; {status})")
    n = run.n_snapshots
    if n:
        t = run.snapshot_times_h
        table.add_row("snapshots", f"{n} (day {t[0] / 24:g} .. {t[-1] / 24:g}): {', '.join(run.array_names(0))}")
    elif run.kind == "run":
        table.add_row("snapshots", "none")
    if len(ts):
        last = ts.iloc[-1]
        for name, label, fmt in KEY_METRICS:
            if name in ts.columns:
                table.add_row(label, _fmt(float(last[name]), fmt))
        if "stage" in ts.columns:
            stage = int(last["stage"])
            table.add_row("disease stage", STAGE_NAMES.get(stage, str(stage)))
    if run.kind == "run":
        from ..output.checkpointer import list_checkpoints

        found = list_checkpoints(run.path.parent)
        if found:
            days = ", ".join(f"{c.day:g}" + ("" if c.archived else "*") for c in found)
            table.add_row("checkpoints (branch points)", f"day {days}" + (
                "  (* rolling: deleted as newer ones come)" if any(not c.archived for c in found) else ""))
    digest = run.state_digest()
    if digest:
        table.add_row("final state sha256", digest)
    return table
