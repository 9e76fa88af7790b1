"""Time-series panel of one or more runs (``marrow3d plot``), drawn with matplotlib (Agg).

Six panels over simulated days: cell populations (log scale), niche occupancy by kind,
vessel integrity, hypoxic fractions, plasma and marrow drug levels (PK), and the mean drug
exposure of each cell type; a strip at the bottom shows the disease stage of each run. With
one run the panels are also shaded by stage. Several runs are overlaid: each quantity keeps
its colour, each run gets its own line style.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from marrow3d.metrics import STAGE_NAMES

from . import style
from ._gl import RenderError

__all__ = ["plot_runs", "plot_panel"]

_LINESTYLES = ["-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3))]
_POP = [("count_hsc", "HSC", style.CELL_COLORS[1]), ("count_progenitor", "progenitor", style.CELL_COLORS[2]),
        ("count_lsc", "LSC", style.CELL_COLORS[3]), ("count_blast", "blast", style.CELL_COLORS[4])]


def _load(run_dir) -> tuple[str, "object", float]:
    from ._data import open_run

    with open_run(run_dir) as run:
        df = run.timeseries.copy()
        try:
            floor = float(run.config.vessels.integrity_floor)
        except Exception:  # noqa: BLE001 - an older file without the key: the documented default
            floor = 0.2
    if "day" not in df:
        df["day"] = np.asarray(df.index, dtype=float) / 24.0
    return Path(run_dir).name, df, floor


def _col(df, name):
    return df[name].to_numpy(dtype=float) if name in df else None


def _shade_stages(ax, day, stage) -> None:
    if stage is None or len(day) == 0:
        return
    edges = np.flatnonzero(np.diff(stage) != 0) + 1
    starts = np.r_[0, edges]
    ends = np.r_[edges, len(stage) - 1]
    for a, b in zip(starts, ends):
        s = int(stage[a])
        if s > 0:
            ax.axvspan(day[a], day[b], color=style.STAGE_COLORS[s], alpha=0.5, lw=0, zorder=0)


def plot_panel(runs: list[tuple[str, object, float]], *, title: str | None = None):
    """Build the panel figure from ``(name, timeseries DataFrame, integrity floor)`` tuples."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "axes.titleweight": "bold",
                         "axes.spines.top": False, "axes.spines.right": False})
    fig = plt.figure(figsize=(14, 11), dpi=110, layout="constrained")
    gs = fig.add_gridspec(4, 2, height_ratios=[1, 1, 1, 0.12 + 0.06 * len(runs)])
    axes = [fig.add_subplot(gs[i // 2, i % 2]) for i in range(6)]
    strip = fig.add_subplot(gs[3, :])
    ax_pop, ax_niche, ax_vessel, ax_hyp, ax_pk, ax_exp = axes
    single = len(runs) == 1
    any_drug = False
    labelled: set = set()

    def once(ax, label: str):
        """The label the first time a quantity is drawn on ``ax`` (one legend entry per quantity)."""
        key = (id(ax), label)
        if key in labelled:
            return None
        labelled.add(key)
        return label

    for r, (name, df, floor) in enumerate(runs):
        ls = _LINESTYLES[r % len(_LINESTYLES)]
        day = _col(df, "day")
        stage = _col(df, "stage")
        if single:
            for ax in axes:
                _shade_stages(ax, day, stage)
        # populations
        for col, label, color in _POP:
            v = _col(df, col)
            if v is not None:
                ax_pop.plot(day, np.where(v > 0, v, np.nan), ls=ls, color=color, label=once(ax_pop, label))
        # niche occupancy: share of each kind's slots held by lodged HSC / LSC
        for kind in ("endosteal", "perivascular"):
            slots = _col(df, f"niche_{kind}_slots")
            if slots is None:
                continue
            denom = np.where(slots > 0, slots, np.nan)
            for who, color in (("hsc", style.CELL_COLORS[1]), ("lsc", style.CELL_COLORS[3]), ("empty", "#B8A200")):
                v = _col(df, f"niche_{kind}_{who}")
                if v is None:
                    continue
                lw = 2.2 if kind == "endosteal" else 1.1
                ax_niche.plot(day, v / denom, ls=ls, lw=lw, color=color,
                              label=once(ax_niche, f"{kind} {who.upper() if who != 'empty' else 'empty'}"))
        # vessels
        for col, label, color in (("arteriole_mean_integrity", "arteriole mean integrity", style.ARTERIOLE_COLOR),
                                  ("arteriole_fraction_lost", "arterioles lost (fraction)", "#6B6B6B"),
                                  ("sinusoid_mean_integrity", "sinusoid mean integrity", style.SINUSOID_COLOR)):
            v = _col(df, col)
            if v is not None:
                ax_vessel.plot(day, v, ls=ls, color=color, label=once(ax_vessel, label))
        if r == 0:
            ax_vessel.axhline(floor, color="#6B6B6B", lw=0.8, ls=(0, (2, 2)))
            ax_vessel.text(0.01, floor, f" floor {floor:g}", transform=ax_vessel.get_yaxis_transform(),
                           va="bottom", fontsize=8, color="#6B6B6B")
        # hypoxia
        for col, label, color in (("o2_hypoxic_fraction", "marrow", "#3B0F70"),
                                  ("o2_endosteal_hypoxic_fraction", "endosteal band", "#B2182B"),
                                  ("o2_central_hypoxic_fraction", "central marrow", "#FD9F6C"),
                                  ("o2_severe_fraction", "marrow, severe", "#000000")):
            v = _col(df, col)
            if v is not None:
                ax_hyp.plot(day, v, ls=ls, color=color, lw=1.0 if "severe" in label else 1.6,
                            label=once(ax_hyp, label))
        # PK: plasma (thick) and marrow mean (thin)
        for agent, color in (("cytarabine", "#7E03A8"), ("daunorubicin", "#D8576B")):
            plasma = _col(df, f"plasma_{agent}_uM")
            tissue = _col(df, f"{agent}_tissue_uM_mean")
            if plasma is not None and np.nanmax(plasma, initial=0) > 0:
                any_drug = True
                ax_pk.plot(day, plasma, ls=ls, lw=2.0, color=color, label=once(ax_pk, f"{agent}, plasma"))
            if tissue is not None and np.nanmax(tissue, initial=0) > 0:
                ax_pk.plot(day, tissue, ls=ls, lw=1.0, color=color, alpha=0.8,
                           label=once(ax_pk, f"{agent}, marrow mean"))
            # exposure: cumulative uM h / cumulative cell-hours = the time-averaged concentration a
            # cell of the type saw (uM)
            for cat, label, ccol in (("lsc_lodged", "lodged LSC", style.CELL_COLORS[3]),
                                     ("lsc", "LSC", style.CELL_COLORS[3]), ("blast", "blast", style.CELL_COLORS[4]),
                                     ("hsc", "HSC", style.CELL_COLORS[1])):
                auc = _col(df, f"{agent}_uM_h_{cat}")
                ch = _col(df, f"cell_hours_{cat}")
                if auc is None or ch is None or np.nanmax(auc, initial=0) <= 0:
                    continue
                mean = auc / np.where(ch > 0, ch, np.nan)
                ax_exp.plot(day, mean, ls=ls, lw=(2.2 if "lodged" in cat else 1.2) * (1.0 if agent == "cytarabine" else 0.7),
                            color=ccol, alpha=1.0 if agent == "cytarabine" else 0.55,
                            label=once(ax_exp, f"{agent}: {label}"))
        # stage strip
        if stage is not None and len(day) > 1:
            widths = np.diff(day, append=day[-1] + (day[-1] - day[-2]))
            for s in np.unique(stage[np.isfinite(stage)]).astype(int):
                sel = stage == s
                strip.broken_barh(list(zip(day[sel], widths[sel])), (len(runs) - 1 - r - 0.4, 0.8),
                                  color=style.STAGE_COLORS[s] if s else "#EFEFEF", lw=0)
    # cosmetics
    ax_pop.set_yscale("log")
    ax_pop.set_title("Cell populations")
    ax_pop.set_ylabel("cells in the domain")
    ax_niche.set_title("Niche occupancy (share of slots)")
    ax_niche.set_ylabel("fraction of slots (thick: endosteal)")
    ax_niche.set_ylim(-0.02, 1.02)
    ax_vessel.set_title("Vessel integrity")
    ax_vessel.set_ylabel("integrity / fraction")
    ax_vessel.set_ylim(-0.02, 1.05)
    ax_hyp.set_title("Hypoxic fraction (pO2 below threshold)")
    ax_hyp.set_ylabel("fraction of voxels")
    # fractions start at 0; an all-zero series keeps a 0-0.05 axis instead of matplotlib's +-0.04
    hyp_top = max((float(np.nanmax(line.get_ydata(), initial=0.0)) for line in ax_hyp.get_lines()), default=0.0)
    ax_hyp.set_ylim(0.0, max(0.05, 1.05 * hyp_top))
    ax_pk.set_title("Drug levels (thick: plasma, thin: marrow mean)")
    ax_pk.set_ylabel("concentration (µM)")
    ax_exp.set_title("Drug exposure by cell type (time-averaged level seen)")
    ax_exp.set_ylabel("mean concentration seen so far (µM)")
    if any_drug:
        ax_pk.set_ylim(bottom=0.0)
        ax_exp.set_ylim(bottom=0.0)
    else:
        for ax in (ax_pk, ax_exp):
            ax.text(0.5, 0.5, "no cytotoxic therapy in " + ("this run" if single else "these runs"),
                    transform=ax.transAxes, ha="center", va="center", color="#777777")
            ax.set_yticks([])
    for ax in axes:
        ax.set_xlabel("day")
        ax.grid(alpha=0.25, lw=0.6)
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            # beside the axes, never over the curves
            ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
                      handlelength=2.4)
    strip.set_yticks(range(len(runs)), [n for n, _, _ in runs][::-1])
    strip.set_xlabel("day")
    strip.set_title("Disease stage", loc="left")
    strip.spines[["left", "top", "right"]].set_visible(False)
    strip.tick_params(axis="y", length=0)
    # one day axis for every panel (an empty panel would otherwise run 0-1)
    last_day = max((float(np.nanmax(df["day"])) for _, df, _ in runs if len(df)), default=1.0)
    for ax in (*axes, strip):
        ax.set_xlim(-0.02 * last_day, last_day * 1.02)
    stage_handles = [Patch(color=style.STAGE_COLORS[s] if s else "#EFEFEF", label=STAGE_NAMES[s]) for s in (0, 1, 2)]
    if not single:
        stage_handles += [Line2D([], [], color="#333333", ls=_LINESTYLES[i % len(_LINESTYLES)], label=name)
                          for i, (name, _, _) in enumerate(runs)]
    strip.legend(handles=stage_handles, loc="upper center", bbox_to_anchor=(0.5, -0.9 - 0.2 * (len(runs) > 1)),
                 ncol=len(stage_handles), frameon=False, fontsize=9)
    fig.suptitle(title or (f"marrow3d run {runs[0][0]}" if single else f"marrow3d: {len(runs)} runs compared"),
                 fontsize=14, fontweight="bold")
    return fig


def plot_runs(run_dirs, out, *, title: str | None = None, dpi: int = 110) -> Path:
    """Write the time-series panel of ``run_dirs`` to ``out`` (PNG, PDF or SVG)."""
    out = Path(out)
    if out.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise RenderError(f"--out {out}: the panel must end in .png, .pdf or .svg")
    if not run_dirs:
        raise RenderError("give at least one run directory")
    runs = [_load(d) for d in run_dirs]
    for name, df, _ in runs:
        if len(df) == 0:
            raise RenderError(f"run {name} has no time-series rows yet")
    import matplotlib.pyplot as plt

    fig = plot_panel(runs, title=title)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out
