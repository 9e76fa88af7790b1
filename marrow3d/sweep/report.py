"""A figure of a sweep's endpoints against its varied parameters (matplotlib, Agg: no display).

One panel per (endpoint, varied parameter): every finished member is a dot coloured by its
seed, and the mean over seeds at each parameter value is a black line (a black bar per arm on
a categorical axis). Numeric parameters
are numeric axes; labelled points (``[vary] lists`` names) and non-numeric values (e.g. a
list of therapy events) form one categorical ``arm`` axis. Endpoints that no member has (a
relapse day in an untreated sweep) are listed under the title instead of plotted.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .summary import ENDPOINTS, load_summary

__all__ = ["make_report", "REPORT_ENDPOINTS"]

#: Endpoints plotted, with axis labels.
REPORT_ENDPOINTS = {
    "final_lsc": "final LSC count",
    "final_blast": "final blast count",
    "min_burden": "min LSC+blast",
    "min_burden_day": "day of min burden (d)",
    "relapse_day": "relapse day (d)",
    "final_hsc_niche_share": "final HSC niche share",
    "arteriole_loss": "arteriole loss (1 - integrity)",
    "final_hypoxic_fraction": "final hypoxic fraction",
    "lsc_lodged_cytarabine_uM": "lodged-LSC cytarabine (uM)",
}

_FIXED = {"member_id", "label", "seed", "status", "error", "wall_s", "run_dir", *ENDPOINTS}


def _varied_keys(sweep_dir: Path, columns) -> list[str]:
    plan = sweep_dir / "sweep.json"
    if plan.exists():
        keys = json.loads(plan.read_text(encoding="utf-8")).get("varied_keys", [])
        return [k for k in keys if k in columns]
    return [c for c in columns if c not in _FIXED]


def _axes_variables(df, keys: list[str]) -> list[tuple[str, np.ndarray, list[str] | None]]:
    """(name, x values, category names or None for numeric) for every x axis."""
    out = []
    categorical = False
    for key in keys:
        col = df[key]
        if col.dtype.kind in "fiu":
            out.append((key, col.to_numpy(dtype=float), None))
        else:
            categorical = True
    if "label" in df.columns and df["label"].notna().any():
        categorical = True
    if categorical:
        if "label" in df.columns and df["label"].notna().all():
            arm = df["label"].astype(str).to_numpy()
        else:
            arm = np.array([str(m).rsplit("_s", 1)[0] for m in df["member_id"]])
        names = list(dict.fromkeys(arm))
        out.append(("arm", np.array([names.index(a) for a in arm], dtype=float), names))
    if not out:
        out.append(("seed", df["seed"].to_numpy(dtype=float), None))
    return out


def make_report(sweep_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw the endpoints of the sweep in ``sweep_dir`` into ``out`` (default ``DIR/report.png``).

    Returns
    -------
    Path
        The image written (format from the suffix: .png, .pdf, .svg).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sweep_dir = Path(sweep_dir)
    out = Path(out) if out is not None else sweep_dir / "report.png"
    df = load_summary(sweep_dir)
    n_all = len(df)
    done = df[df["status"] == "done"].reset_index(drop=True)
    keys = _varied_keys(sweep_dir, df.columns)
    xvars = _axes_variables(done, keys) if len(done) else []
    endpoints = [e for e in REPORT_ENDPOINTS if e in done.columns and done[e].notna().any()]
    missing = [e for e in REPORT_ENDPOINTS if e not in endpoints]

    nx = max(1, len(xvars))
    panels = [(e, xv) for e in endpoints for xv in xvars]
    ncols = min(3, max(1, len(panels))) if nx == 1 else nx
    nrows = max(1, math.ceil(len(panels) / ncols))
    fig = Figure(figsize=(3.6 * ncols, 2.7 * nrows + 0.8), constrained_layout=True)
    FigureCanvasAgg(fig)
    name = ""
    plan_file = sweep_dir / "sweep.json"
    if plan_file.exists():
        name = json.loads(plan_file.read_text(encoding="utf-8")).get("name") or ""
    title = f"{name + ': ' if name else ''}{n_all} members, {len(done)} done, {n_all - len(done)} not done"
    if missing:
        title += f"\nno data: {', '.join(missing)}"
    fig.suptitle(title, fontsize=10)
    if not panels:
        ax = fig.add_subplot(1, 1, 1)
        ax.axis("off")
        ax.text(0.5, 0.5, "no finished members to plot", ha="center", va="center")
    seeds = sorted(done["seed"].dropna().unique()) if len(done) else []
    palette = [f"C{i % 10}" for i in range(len(seeds))]
    rng = np.random.default_rng(0)
    for i, (endpoint, (xname, x, cats)) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        y = done[endpoint].to_numpy(dtype=float)
        jitter = rng.uniform(-0.12, 0.12, size=len(x)) if cats is not None else 0.0
        for k, s in enumerate(seeds):
            sel = (done["seed"] == s).to_numpy()
            ax.scatter((x + jitter)[sel], y[sel], s=14, color=palette[k], alpha=0.8, zorder=3,
                       label=f"seed {int(s)}" if i == 0 else None)
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.any():
            ux = np.unique(x[ok])
            means = [np.nanmean(y[ok & (x == v)]) for v in ux]
            # Means: a line along a numeric axis, a bar mark per arm on a categorical one.
            ax.plot(ux, means, "_" if cats is not None else "-", color="black", ms=16, mew=1.5, lw=1,
                    alpha=0.7, zorder=2, label="mean over seeds" if i == 0 else None)
            # every endpoint is a count, day, share or fraction: the axis starts at 0 (a dot on 0
            # stays whole), and an all-zero endpoint keeps a 0-1 axis (matplotlib: 0 +- 0.04)
            top = float(np.nanmax(y[ok]))
            if float(np.nanmin(y[ok])) >= 0:
                top = top * 1.08 if top > 0 else 1.0
                ax.set_ylim(-0.03 * top, top)
        if cats is not None:
            ax.set_xlim(-0.5, len(cats) - 0.5)
            ax.set_xticks(range(len(cats)))
            ax.set_xticklabels(cats, rotation=30 if max(len(c) for c in cats) > 6 else 0, ha="right", fontsize=7)
        ax.set_xlabel(xname, fontsize=8)
        ax.set_ylabel(REPORT_ENDPOINTS[endpoint], fontsize=8)
        ax.tick_params(labelsize=7)
    if panels and len(seeds) <= 10:
        fig.legend(loc="outside lower center", ncols=min(len(seeds) + 1, 6), fontsize=7, frameon=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out
