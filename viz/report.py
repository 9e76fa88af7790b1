"""One self-contained report that puts several runs side by side (``marrow3d compare``).

The report folder holds ``report.md`` with its PNGs next to it, ``report.html`` (the same
content in one file, every figure embedded as a base64 PNG) and ``endpoints.csv``:

* a table of the runs (grid, days, seed, therapy, branch point);
* endpoint tables, one row per run (:mod:`marrow3d.analysis.endpoints`: burden nadir, blast
  log reduction, relapse, niche shares, vessel loss, hypoxia, drug delivery to the
  endosteum and to lodged LSCs during therapy);
* the time-series panel of ``marrow3d plot`` with the runs overlaid, a leukemic-burden
  figure with each run's therapy window and nadir, and (when given) the adjunct drugs;
* matched renders: for each chosen day (default: the start, the first snapshot on therapy and
  the end), every run's marrow as vessels (``--show vessels``),
  niche holders (``niches``), an oxygen slice and a drug slice, with one colour scale per
  quantity across all runs (pO2 0-40 mmHg; the drug from 0 to the highest marrow level in
  the pictures drawn, rounded up by less than 25%, so the slices use the colour map: marrow
  levels stay below plasma, and a scale up to the plasma peak left them flat).

A branched run (``marrow3d branch``) has snapshots from its branch point on only; days before
it are drawn from the run it was branched from, when that folder still exists.

Examples
--------
>>> from marrow3d.viz.report import make_compare_report                     # doctest: +SKIP
>>> make_compare_report(["runs/arm73", "runs/arm73_dfo"], "report", labels=["7+3", "7+3+DFO"])
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from marrow3d.errors import Marrow3DError

__all__ = ["CompareError", "CompareResult", "make_compare_report", "parse_days", "parse_labels", "VIEWS",
           "DEFAULT_DAYS", "DEFAULT_SIZE"]

log = logging.getLogger(__name__)

#: Views rendered for each (run, day): key, column title.
VIEWS = (("vessels", "Vessels"), ("niches", "Niche holders"), ("oxygen", "Oxygen (slice)"), ("drug", "Drug (slice)"))
#: ``--days`` when not given.
DEFAULT_DAYS = ("start", "therapy", "end")
DEFAULT_SIZE = (640, 480)
_DAY_WORDS = ("start", "therapy", "end")
#: a chosen day more than this far (d) from the snapshot drawn is noted under the renders
_NOTE_DAYS = 0.25


class CompareError(Marrow3DError, ValueError):
    """Bad input to ``marrow3d compare`` (run folders, labels, days, output folder)."""


@dataclass
class CompareResult:
    """What :func:`make_compare_report` wrote."""

    out_dir: Path
    markdown: Path
    html: Path
    csv: Path
    images: list[Path] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.markdown} and {self.html} ({len(self.images)} PNGs)"


@dataclass
class _Run:
    label: str
    slug: str
    path: Path
    df: object  # pandas DataFrame
    floor: float
    final_day: float
    endpoints: dict
    meta: dict
    config: object
    shape: tuple
    voxel_um: float
    n_snapshots: int
    plasma_peak: dict


# ---------------------------------------------------------------------------- arguments
def parse_labels(text: str | Sequence[str] | None, n: int) -> list[str] | None:
    """``"A,B"`` (or a list) -> labels, checked against the number of runs."""
    if text is None:
        return None
    items = [s.strip() for s in (text.split(",") if isinstance(text, str) else text)]
    if len(items) != n:
        raise CompareError(f"--labels gives {len(items)} label(s) for {n} run(s): give one per run, comma-separated")
    if any(not s for s in items):
        raise CompareError("--labels: a label is empty")
    dup = sorted({s for s in items if items.count(s) > 1})
    if dup:
        raise CompareError(f"--labels: {', '.join(map(repr, dup))} given more than once; labels must differ")
    return items


def parse_days(text: str | Sequence | None) -> list[str | float]:
    """``"start,therapy,end,14"`` -> tokens (``start``/``therapy``/``end`` or a day >= 0)."""
    if text is None:
        return list(DEFAULT_DAYS)
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[str | float] = []
    for raw in items:
        if isinstance(raw, (int, float)):
            tok: str | float = float(raw)
        else:
            s = str(raw).strip().lower()
            if not s:
                raise CompareError(f"bad --days {text!r}: an empty entry (expected e.g. 0,14,21 or start,therapy,end)")
            if s in _DAY_WORDS:
                tok = s
            else:
                try:
                    tok = float(s)
                except ValueError:
                    raise CompareError(f"bad --days entry {raw!r}: expected a day number or start, therapy, "
                                       "end") from None
        if isinstance(tok, float) and not (math.isfinite(tok) and tok >= 0):
            raise CompareError(f"bad --days entry {raw!r}: days are finite numbers >= 0")
        out.append(tok)
    if not out:
        raise CompareError("--days is empty")
    return out


def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return s or "run"


def _default_labels(paths: list[Path]) -> list[str]:
    names = [p.resolve().name or str(p) for p in paths]
    if len(set(names)) == len(names):
        return names
    names = ["/".join(p.resolve().parts[-2:]) for p in paths]
    if len(set(names)) == len(names):
        return names
    return [f"{n} ({i + 1})" for i, n in enumerate(names)]


# ---------------------------------------------------------------------------- loading
def _load_run(path: Path, label: str, slug: str) -> _Run:
    from marrow3d.analysis import open_run
    from marrow3d.analysis.endpoints import compare_endpoints

    if not path.exists():
        raise CompareError(f"run folder {str(path)!r} does not exist")
    if path.is_dir() and not (path / "run.h5").is_file():
        raise CompareError(f"{str(path)!r} holds no run.h5 (give the folders of finished or running runs)")
    with open_run(path) as run:
        if run.kind != "run":
            raise CompareError(f"{str(run.path)!r} is a checkpoint; compare reads run files (run.h5)")
        df = run.timeseries
        if len(df) == 0:
            raise CompareError(f"run {label!r} ({path}) has no time-series rows yet")
        try:
            cfg = run.config
            floor = float(cfg.vessels.integrity_floor)
        except Marrow3DError:
            cfg, floor = None, 0.2
        peaks = {}
        for drug in ("cytarabine", "daunorubicin", "plerixafor", "deferoxamine"):
            col = f"plasma_{drug}_uM"
            peaks[drug] = float(np.nanmax(df[col].to_numpy(dtype=float), initial=0.0)) if col in df else 0.0
        return _Run(label=label, slug=slug, path=path.resolve() if path.is_dir() else path.resolve().parent, df=df,
                    floor=floor, final_day=float(df["day"].iloc[-1]), endpoints=compare_endpoints(df),
                    meta=dict(run.meta), config=cfg, shape=tuple(run.shape), voxel_um=float(run.voxel_um),
                    n_snapshots=int(run.n_snapshots), plasma_peak=peaks)


def _resolve_days(tokens: list[str | float], runs: list[_Run], explicit: bool) -> list[tuple[float | None, str]]:
    """(day, heading) pairs in increasing order; day None (last) is the end of each run, when
    the runs end on different days."""
    ends = [r.final_day for r in runs]
    same_end = max(ends) - min(ends) <= 1e-6
    each_end = False
    starts = [r.endpoints["therapy_start_day"] for r in runs if math.isfinite(r.endpoints["therapy_start_day"])]
    out: dict[float, list[str]] = {}
    for tok in tokens:
        if tok == "start":
            day, word = min(float(r.df["day"].iloc[0]) for r in runs), "start"
        elif tok == "end":
            if not same_end:
                each_end = True
                continue
            day, word = ends[0], "end"
        elif tok == "therapy":
            if not starts:
                if explicit:
                    raise CompareError("--days therapy: no run has cytotoxic therapy "
                                       "(no plasma cytarabine or daunorubicin)")
                continue
            day, word = _on_therapy_day(runs, min(starts)), "on therapy"
        else:
            day, word = float(tok), ""
            for r in runs:
                if day > r.final_day + 1e-6:
                    raise CompareError(f"--days {day:g} is after the end of run {r.label!r} (day {r.final_day:g})")
        key = round(day, 6)
        out.setdefault(key, [])
        if word and word not in out[key]:
            out[key].append(word)
    days: list[tuple[float | None, str]] = [(d, ", ".join(w)) for d, w in sorted(out.items())]
    if each_end:
        days.append((None, "end of each run"))
    return days


def _on_therapy_day(runs: list[_Run], start: float) -> float:
    """The first snapshot (or final state) at or after ``start`` of the first run treated then:
    the marrow with drug on board, for the ``therapy`` day of the renders."""
    from marrow3d.analysis import open_run

    treated = [r for r in runs if math.isfinite(r.endpoints["therapy_start_day"])]
    first = min(treated, key=lambda r: r.endpoints["therapy_start_day"])
    with open_run(first.path) as run:
        times = [float(t) / 24.0 for t in run.snapshot_times_h]
        if run.has_final_state:
            times.append(run.time_h / 24.0)
    later = [t for t in times if t >= start - 1e-9]
    return min(later) if later else start


@dataclass
class _Located:
    path: Path  # run folder the picture is drawn from
    step: int  # snapshot index or -1 (final state)
    day: float  # simulated day of that snapshot
    note: str = ""


def _locate(path: Path, day: float, depth: int = 0) -> _Located:
    """The snapshot (or final state) of ``path`` nearest to ``day``; earlier than a branch's
    first snapshot: the run it was branched from."""
    from marrow3d.analysis import open_run

    with open_run(path) as run:
        cands = [(float(t) / 24.0, k) for k, t in enumerate(run.snapshot_times_h)]
        if run.has_final_state:
            cands.append((run.time_h / 24.0, -1))
        parent = run.meta.get("branched_from")
        branch_day = float(run.meta.get("branch_time_h", 0.0)) / 24.0
    if not cands:
        raise CompareError(f"run {str(path)!r} holds neither snapshots nor a final state to draw")
    first = min(t for t, _ in cands)
    note = ""
    if day < first - 1e-6 and parent:
        ppath = Path(parent)
        if (ppath / "run.h5").is_file() and depth < 16:
            loc = _locate(ppath, day, depth + 1)
            if not loc.note:
                loc.note = f"drawn from {ppath.name}, the run it was branched from at day {branch_day:g}"
            return loc
        note = (f"day {day:g} is before the branch point (day {branch_day:g}) and the parent run "
                f"{str(ppath)!r} is gone: nearest snapshot shown")
    t, step = min(cands, key=lambda c: (abs(c[0] - day), c[1] == -1))
    if not note and abs(t - day) > _NOTE_DAYS:
        note = f"nearest snapshot: day {t:g}"
    return _Located(path=path, step=step, day=t, note=note)


def _locate_end(r: _Run) -> _Located:
    """The final state of a run (its last snapshot while it is still running)."""
    from marrow3d.analysis import open_run

    with open_run(r.path) as run:
        if run.has_final_state:
            return _Located(path=r.path, step=-1, day=run.time_h / 24.0)
        n = run.n_snapshots
        if n == 0:
            raise CompareError(f"run {r.label!r} holds neither snapshots nor a final state to draw")
        return _Located(path=r.path, step=n - 1, day=float(run.snapshot_times_h[-1]) / 24.0,
                        note="the run has no final state yet: its last snapshot")


def _slice_axis(run) -> str:
    """The axis whose middle plane cuts most across the bone-marrow interface.

    Score: marrow voxels of the plane next to bone within the plane, per voxel of the plane
    (a femur segment gets its cross-section, a box with a bone slab a plane across the slab).
    """
    from scipy import ndimage

    from marrow3d.kernels import codes

    tissue = run.tissue
    best, best_score = "y", -1.0
    for axis in ("y", "x", "z"):
        ax = {"z": 0, "y": 1, "x": 2}[axis]
        plane = np.take(tissue, tissue.shape[ax] // 2, axis=ax)
        bone = plane == codes.BONE
        edge = ndimage.binary_dilation(bone) & (plane == codes.MARROW)
        score = float(np.count_nonzero(edge)) / max(plane.size, 1)
        if score > best_score + 1e-12:
            best, best_score = axis, score
    return best


# ---------------------------------------------------------------------------- figures
def _save_fig(fig, path: Path, dpi: int = 100) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _burden_figure(runs: list[_Run], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4.2), dpi=100, layout="constrained")
    for i, r in enumerate(runs):
        color = f"C{i % 10}"
        # later runs thinner and on top, so identical curves still show every colour
        lw = max(3.2 - 0.8 * i, 1.0)
        df = r.df
        day = df["day"].to_numpy(dtype=float)
        burden = df["count_lsc"].to_numpy(dtype=float) + df["count_blast"].to_numpy(dtype=float)
        ax.plot(day, np.where(burden > 0, burden, np.nan), color=color, lw=lw, label=f"{r.label}: LSC + blast")
        blast = df["count_blast"].to_numpy(dtype=float)
        ax.plot(day, np.where(blast > 0, blast, np.nan), color=color, lw=lw * 0.5, ls="--",
                label=f"{r.label}: blasts")
        ep = r.endpoints
        if math.isfinite(ep["therapy_start_day"]):
            ax.axvspan(ep["therapy_start_day"], ep["therapy_end_day"], color=color, alpha=0.08, lw=0)
            ax.axvline(ep["therapy_start_day"], color=color, lw=0.8, ls=":")
            if math.isfinite(ep["min_burden"]) and ep["min_burden"] > 0:
                ax.plot([ep["min_burden_day"]], [ep["min_burden"]], "v", color=color, ms=8)
    ax.set_yscale("log")
    ax.set_xlabel("day")
    ax.set_ylabel("cells in the domain")
    ax.set_title("Leukemic burden (shaded: therapy window of each run; triangle: nadir from therapy start)",
                 fontsize=11, loc="left")
    ax.grid(alpha=0.25, lw=0.6)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=8, frameon=False, ncol=2 if len(runs) > 2 else 1, loc="best")
    return _save_fig(fig, path)


def _adjunct_figure(runs: list[_Run], path: Path) -> Path | None:
    """Plasma levels and effects of plerixafor / deferoxamine, when any run gives them."""
    agents = [a for a in ("plerixafor", "deferoxamine") if any(r.plasma_peak.get(a, 0) > 0 for r in runs)]
    if not agents:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .plots import _LINESTYLES

    effect = {"plerixafor": ("niche_release_multiplier", "niche-release multiplier"),
              "deferoxamine": ("dfo_protection", "vessel-loss protection (fraction)")}
    colors = {"plerixafor": "#0072B2", "deferoxamine": "#E69F00"}
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), dpi=100, layout="constrained")
    for i, r in enumerate(runs):
        ls = _LINESTYLES[i % len(_LINESTYLES)]
        day = r.df["day"].to_numpy(dtype=float)
        for a in agents:
            col = f"plasma_{a}_uM"
            if col in r.df:
                axes[0].plot(day, r.df[col].to_numpy(dtype=float), ls=ls, color=colors[a], label=f"{r.label}: {a}")
            ecol, elabel = effect[a]
            if ecol in r.df:
                axes[1].plot(day, r.df[ecol].to_numpy(dtype=float), ls=ls, color=colors[a],
                             label=f"{r.label}: {elabel}")
    axes[0].set_title("Adjunct drugs: plasma", fontsize=11, loc="left")
    axes[0].set_ylabel("concentration (µM)")
    axes[1].set_title("Adjunct drugs: effect", fontsize=11, loc="left")
    for ax in axes:
        ax.set_xlabel("day")
        ax.grid(alpha=0.25, lw=0.6)
        ax.spines[["top", "right"]].set_visible(False)
        ax.legend(fontsize=8, frameon=False)
    return _save_fig(fig, path)


def _placeholder(path: Path, size: tuple[int, int], lines: list[str]) -> Path:
    """A white tile with a grey explanation, where a view cannot be drawn."""
    import textwrap

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] / 100, size[1] / 100), dpi=100)
    FigureCanvasAgg(fig)
    fig.patch.set_facecolor("white")
    text = "\n".join(textwrap.fill(s, 48) for s in lines)
    fig.text(0.5, 0.5, text, ha="center", va="center", color="#707070", fontsize=11)
    fig.savefig(path, dpi=100, facecolor="white")
    return path


# ---------------------------------------------------------------------------- renders
def _render_tiles(runs: list[_Run], days: list[tuple[float, str]], out_dir: Path, size: tuple[int, int],
                  progress: Callable[[int, int, str], None] | None) -> tuple[list, str | None, dict, float]:
    """Render every (day, run, view); returns (rows per day, drug, colour limits, the highest
    marrow drug level drawn [uM])."""
    from PIL import Image

    from marrow3d.analysis import open_run

    from . import style
    from ._data import run_info
    from ._gl import RenderError
    from .render import (default_camera, downsample_image, draw, frame_for, make_plotter, resolve_show,
                         supersampling)
    from .scene import SliceSpec

    drug = next((d for d in ("cytarabine", "daunorubicin") if any(r.plasma_peak.get(d, 0) > 0 for r in runs)), None)
    views = [v for v in VIEWS if v[0] != "drug" or drug is not None]
    clims: dict[str, tuple[float, float]] = {"oxygen": style.field_scale("oxygen").clim}
    located = {(i, k): _locate_end(r) if day is None else _locate(r.path, day)
               for i, (day, _h) in enumerate(days) for k, r in enumerate(runs)}
    drug_max = 0.0
    if drug is not None:
        drug_max = _marrow_max(drug, located.values())
        top = drug_max if drug_max > 0 else max(r.plasma_peak.get(drug, 0.0) for r in runs)
        clims[drug] = (0.0, style.nice_ceil(top, fine=True))
    total = len(days) * len(runs) * len(views)
    done = 0
    ss = supersampling(size, max((r.shape for r in runs), key=max))
    big = (size[0] * ss, size[1] * ss)
    axis_cache: dict[Path, str] = {}
    plotter = make_plotter(big)
    rows_by_day = []
    try:
        for i, (day, heading) in enumerate(days):
            rows = []
            for k, r in enumerate(runs):
                loc = located[(i, k)]
                tiles = []
                with open_run(loc.path) as run:
                    info = run_info(run, r.label)
                    if loc.path not in axis_cache:
                        axis_cache[loc.path] = _slice_axis(run)
                    spec = SliceSpec(axis_cache[loc.path], None)
                    names = set(run.array_names(loc.step))
                    for key, _title in views:
                        show = drug if key == "drug" else key
                        target = out_dir / f"render_{_day_tag(day)}_{r.slug}_{key}.png"
                        done += 1
                        if progress is not None:
                            progress(done, total, f"day {loc.day:g}, {r.label}, {key}")
                        need = {"vessels": ["integrity"], "niches": ["cells", "lodged", "integrity"],
                                "oxygen": ["oxygen", "integrity"]}.get(key, [drug, "integrity"])
                        missing = [n for n in need if n not in names]
                        if missing:
                            tiles.append(_placeholder(target, size, [f"{r.label}, day {loc.day:g}",
                                                                     *_why_missing(r, loc, missing, drug)]))
                            continue
                        slices = [spec] if key in ("oxygen", "drug") else []
                        camera = default_camera(None, slices)
                        try:
                            mode, dname = resolve_show(show, info)
                            frame = frame_for(run, info, loc.step, mode, dname)
                            plotter.clear()
                            draw(plotter, frame, info, mode, dname, slices=slices, size=big, camera=camera,
                                 clim=clims.get(show))
                            plotter.render()
                            img = downsample_image(np.asarray(plotter.screenshot(return_img=True)), size)
                        except RenderError as exc:
                            tiles.append(_placeholder(target, size, [f"{r.label}, day {loc.day:g}", str(exc)]))
                            continue
                        Image.fromarray(img).save(target)
                        tiles.append(target)
                rows.append((r, loc, tiles))
            rows_by_day.append((day, heading, rows))
    finally:
        plotter.close()
    return rows_by_day, drug, clims, drug_max


def _marrow_max(drug: str, located) -> float:
    """Highest ``drug`` level [uM] in marrow voxels over the (run, snapshot) pairs to be drawn."""
    from marrow3d.analysis import open_run
    from marrow3d.kernels import codes

    top = 0.0
    for path, step in sorted({(loc.path, loc.step) for loc in located}, key=str):
        with open_run(path) as run:
            if drug not in run.array_names(step):
                continue
            values = run.array(drug, step)[run.tissue == codes.MARROW]
            if values.size:
                top = max(top, float(np.nanmax(values)))
    return top


def _why_missing(r: _Run, loc: _Located, missing: list[str], drug: str | None) -> list[str]:
    """Lines explaining a view that cannot be drawn."""
    where = "final state" if loc.step == -1 else f"snapshot at day {loc.day:g}"
    if missing == [drug]:
        if r.plasma_peak.get(drug, 0.0) <= 0:
            return [f"{drug} is not given in this run"]
        start = r.endpoints["therapy_start_day"]
        if math.isfinite(start) and loc.day < start - 1e-9:
            return [f"before the first dose (day {start:.2f}): no {drug} in the marrow yet"]
    listed = ", ".join(f'"{n}"' for n in missing)
    return [f"no {' or '.join(missing)} data in the {where}", f"(add {listed} to output.snapshot_fields to draw it)"]


def _day_tag(day: float | None) -> str:
    if day is None:
        return "end"
    return "day" + f"{day:g}".replace(".", "p").replace("-", "m")


# ---------------------------------------------------------------------------- document
class _Img:
    def __init__(self, path: Path, alt: str, width: int | None = None) -> None:
        self.path, self.alt, self.width = Path(path), alt, width


class _Doc:
    """Blocks rendered to Markdown and to self-contained HTML."""

    def __init__(self) -> None:
        self.blocks: list[tuple] = []

    def heading(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def bullets(self, items: list[str]) -> None:
        self.blocks.append(("ul", items))

    def table(self, header: list[str], rows: list[list], *, cls: str = "", left: int = 1) -> None:
        self.blocks.append(("table", header, rows, cls, left))

    def image(self, img: _Img) -> None:
        self.blocks.append(("img", img))

    # Markdown ---------------------------------------------------------------
    @staticmethod
    def _md_cell(c) -> str:
        if isinstance(c, _Img):
            return f"![{c.alt}]({c.path.name})"
        return str(c).replace("|", "\\|").replace("\n", " ")

    def markdown(self) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append("#" * b[1] + " " + b[2])
            elif b[0] == "p":
                out.append(b[1])
            elif b[0] == "ul":
                out.append("\n".join(f"* {s}" for s in b[1]))
            elif b[0] == "img":
                out.append(f"![{b[1].alt}]({b[1].path.name})")
            elif b[0] == "table":
                _, header, rows, _cls, left = b
                lines = ["| " + " | ".join(self._md_cell(h) for h in header) + " |",
                         "|" + "|".join(":---" if i < left else "---:" for i in range(len(header))) + "|"]
                lines += ["| " + " | ".join(self._md_cell(c) for c in row) + " |" for row in rows]
                out.append("\n".join(lines))
        return "\n\n".join(out) + "\n"

    # HTML -------------------------------------------------------------------
    @staticmethod
    def _inline(text: str) -> str:
        """Escape, then `code` spans and **bold**."""
        s = html.escape(text, quote=False)
        s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
        return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)

    @staticmethod
    def _img_tag(img: _Img) -> str:
        data = base64.b64encode(img.path.read_bytes()).decode("ascii")
        width = f' width="{img.width}"' if img.width else ""
        return f'<img src="data:image/png;base64,{data}" alt="{html.escape(img.alt)}"{width}>'

    def html(self, title: str) -> str:
        body = []
        for b in self.blocks:
            if b[0] == "h":
                body.append(f"<h{b[1]}>{self._inline(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                body.append(f"<p>{self._inline(b[1])}</p>")
            elif b[0] == "ul":
                body.append("<ul>" + "".join(f"<li>{self._inline(s)}</li>" for s in b[1]) + "</ul>")
            elif b[0] == "img":
                body.append(f'<figure>{self._img_tag(b[1])}</figure>')
            elif b[0] == "table":
                _, header, rows, cls, left = b

                def cell(tag, c, i):
                    align = ' class="l"' if i < left else ""
                    inner = self._img_tag(c) if isinstance(c, _Img) else self._inline(str(c))
                    return f"<{tag}{align}>{inner}</{tag}>"

                head = "<tr>" + "".join(cell("th", h, i) for i, h in enumerate(header)) + "</tr>"
                trs = "".join("<tr>" + "".join(cell("td", c, i) for i, c in enumerate(row)) + "</tr>" for row in rows)
                klass = f' class="{cls}"' if cls else ""
                body.append(f'<div class="wrap"><table{klass}><thead>{head}</thead><tbody>{trs}</tbody></table></div>')
        css = ("body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;color:#202020;max-width:1500px;"
               "margin:0 auto;padding:1em 2em;line-height:1.4}h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;"
               "padding-bottom:.2em;margin-top:1.6em}table{border-collapse:collapse;margin:.6em 0;font-size:.92em}"
               "th,td{border:1px solid #d0d0d0;padding:3px 8px;text-align:right;vertical-align:middle}"
               "th{background:#f4f4f4}.l{text-align:left}.wrap{overflow-x:auto}figure{margin:.6em 0}"
               "figure img{max-width:100%}table.renders td{padding:2px}table.renders img{width:320px;display:block}"
               "code{background:#f4f4f4;padding:0 .25em;border-radius:3px}")
        return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                f"<title>{html.escape(title)}</title>\n<style>{css}</style>\n</head>\n<body>\n"
                + "\n".join(body) + "\n</body>\n</html>\n")


# ---------------------------------------------------------------------------- tables
def _fmt(value, kind: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    v = float(value)
    if kind == "int":
        return f"{v:,.0f}"
    if kind == "day":
        return f"{v:.2f}".rstrip("0").rstrip(".")
    if kind == "f2":
        return f"{v:.2f}"
    if kind == "f3":
        return f"{v:.3f}"
    if kind == "g3":
        return f"{v:.3g}"
    return str(value)


#: Endpoint tables (one row per run): title, columns (key, header, format), explanation.
ENDPOINT_TABLES = (
    ("Leukemic burden", (
        ("final_lsc", "final LSCs", "int"),
        ("final_blast", "final blasts", "int"),
        ("therapy_start_day", "therapy start (day)", "day"),
        ("min_burden", "min LSC+blast", "int"),
        ("min_burden_day", "day of min", "day"),
        ("blast_at_therapy_start", "blasts at therapy start", "int"),
        ("min_blast", "min blasts", "int"),
        ("log10_blast_reduction", "log10 blast reduction", "f2"),
        ("final_burden", "final LSC+blast", "int"),
        ("relapse_fold", "relapse: final / min", "f2"),
        ("relapse_day", "relapse day (> 10x nadir)", "day"),
    ), "Therapy starts on the first row with plasma cytarabine or daunorubicin above zero. Minima are "
       "taken from that day on (over the whole run when untreated). The log10 reduction floors counts at one "
       "cell; relapse compares the burden at the end with its minimum."),
    ("Niches, vessels and oxygen at the end", (
        ("final_hsc_niche_share", "HSC niche share", "f3"),
        ("final_lsc_niche_share", "LSC niche share", "f3"),
        ("arteriole_mean_integrity", "arteriole mean integrity", "f3"),
        ("arteriole_fraction_lost", "arterioles lost (fraction)", "f3"),
        ("final_hypoxic_fraction", "hypoxic fraction, marrow", "f3"),
        ("final_endosteal_hypoxic_fraction", "hypoxic fraction, endosteal", "f3"),
    ), "Shares are of all niche slots, held by a lodged HSC or LSC. Arterioles are lost below the integrity "
       "floor. Hypoxic: pO2 below the threshold of `stages`; endosteal: marrow within "
       "`stages.endosteal_band_um` of bone."),
    ("Drug delivery during therapy", (
        ("therapy_end_day", "window end (day)", "day"),
        ("endosteal_cytarabine_uM", "endosteal cytarabine (µM)", "g3"),
        ("endosteal_daunorubicin_uM", "endosteal daunorubicin (µM)", "g3"),
        ("lsc_lodged_cytarabine_uM", "lodged-LSC cytarabine (µM)", "g3"),
        ("blast_cytarabine_uM", "blast cytarabine (µM)", "g3"),
        ("lsc_to_blast_cytarabine", "lodged LSC / blast, cytarabine", "f3"),
        ("lsc_to_blast_daunorubicin", "lodged LSC / blast, daunorubicin", "f3"),
    ), "The therapy window runs from therapy start until every cytotoxic plasma level is below 1% of its "
       "peak (or the run ends). Endosteal levels: the mean of the endosteal-band marrow concentration "
       "over the window. Cell exposure: Δ(`cytarabine_uM_h_<cells>`) / Δ(`cell_hours_<cells>`) over the window, "
       "the time-averaged concentration such a cell saw (cells that outlive a bolus average lower). "
       "Lodged LSC / blast: the two levels compared step by step, at the same time, then averaged over "
       "the lodged-LSC hours; below 1 means lodged LSCs sat where less drug reached than where blasts were."),
)


def _therapy_text(cfg) -> str:
    if cfg is None:
        return "?"
    events = [e.model_dump(mode="json", exclude_none=True) for e in cfg.therapy.events]
    if not events:
        return "none"
    parts = []
    for e in events:
        agent = e.get("agent", "?")
        if agent == "hsc_transplant":
            parts.append(f"HSC transplant day {e.get('day', 0):g} ({e.get('cells', 0)} cells)")
            continue
        kind = e.get("kind", "")
        if kind == "infusion":
            dur = e.get("duration_days") or (e.get("duration_h", 0) / 24.0)
            when = f"days {e['start_day']:g}–{e['start_day'] + dur:g}"
        elif kind == "bolus":
            days = e.get("days") or [e.get("day")]
            when = "day" + ("s " if len(days) > 1 else " ") + ", ".join(f"{d:g}" for d in days if d is not None)
        elif kind == "repeated":
            when = f"{e['count']} doses every {e['interval_h']:g} h from day {e['start_day']:g}"
        else:
            when = ""
        dose = next(((k, v) for k, v in e.items() if k.startswith("dose_")), None)
        dtext = ""
        if dose is not None:
            unit = dose[0][len("dose_"):].replace("_per_", "/").replace("m2", "m²")
            dtext = f" {dose[1]:g} {unit}"
        parts.append(f"{agent} {kind} {when}{dtext}".strip())
    return "; ".join(parts)


# ---------------------------------------------------------------------------- main entry
def make_compare_report(run_dirs: Sequence[str | Path], out_dir: str | Path, *, days: str | Sequence | None = None,
                        labels: str | Sequence[str] | None = None, title: str | None = None,
                        size: str | tuple[int, int] = DEFAULT_SIZE, renders: bool = True,
                        progress: Callable[[int, int, str], None] | None = None) -> CompareResult:
    """Write the comparison report of ``run_dirs`` into ``out_dir``.

    Parameters
    ----------
    run_dirs : list of paths
        Run folders (holding ``run.h5``), in the order of the report.
    out_dir : path
        Report folder (created): ``report.md``, ``report.html``, ``endpoints.csv`` and PNGs.
    days : str or list, optional
        Days to render: numbers and the words ``start``, ``therapy`` (the first snapshot at or
        after the earliest therapy start of any run, so the drug is on board) and ``end`` (the
        final state of each run); default all three words. Each run is drawn at its snapshot
        nearest to the day.
    labels : str or list, optional
        One label per run (default the folder names).
    title : str, optional
        Report title.
    size : "WxH" or (w, h)
        Size of each render in pixels (default 640x480).
    renders : bool
        Draw the 3D renders (needs off-screen OpenGL); without, the report has tables and plots.
    progress : callable, optional
        ``progress(done, total, what)`` after each render.

    Raises
    ------
    CompareError
        Bad input (the message is one line).
    """
    from .render import parse_size

    paths = [Path(p) for p in run_dirs]
    if not paths:
        raise CompareError("give at least one run folder to compare")
    size = parse_size(size)
    names = parse_labels(labels, len(paths)) or _default_labels(paths)
    explicit_days = days is not None
    tokens = parse_days(days)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise CompareError(f"--out {str(out)!r} exists and is not a folder")
    slugs: list[str] = []
    for n in names:
        s = _slug(n)
        while s in slugs:
            s += "_"
        slugs.append(s)
    runs = [_load_run(p, n, s) for p, n, s in zip(paths, names, slugs)]
    day_list = _resolve_days(tokens, runs, explicit_days) if renders else []
    if renders:
        from ._gl import RenderError, require_offscreen

        try:
            require_offscreen()
        except RenderError as exc:
            raise CompareError(f"{exc} (or leave the 3D pictures out with --no-renders)") from None
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CompareError(f"cannot create --out {str(out)!r}: {exc.strerror or exc}") from None
    try:
        return _write_report(runs, out, day_list, title, size, renders, progress)
    except OSError as exc:
        raise CompareError(f"cannot write the report into {str(out)!r}: {exc.strerror or exc}") from None


def _write_report(runs: list[_Run], out: Path, day_list, title, size, renders, progress) -> CompareResult:
    import pandas as pd

    from marrow3d import __version__
    from marrow3d.analysis.endpoints import ENDPOINT_COLUMNS

    from .plots import plot_panel

    images: list[Path] = []
    title = title or "marrow3d: " + " vs ".join(r.label for r in runs)

    # endpoints.csv
    table = pd.DataFrame([r.endpoints for r in runs], columns=list(ENDPOINT_COLUMNS),
                         index=pd.Index([r.label for r in runs], name="run"))
    table.insert(0, "run_dir", [str(r.path) for r in runs])
    csv_path = out / "endpoints.csv"
    table.to_csv(csv_path)

    # time-series figures
    fig = plot_panel([(r.label, r.df, r.floor) for r in runs], title=title)
    images.append(_save_fig(fig, out / "timeseries.png"))
    images.append(_burden_figure(runs, out / "burden.png"))
    adj = _adjunct_figure(runs, out / "adjuncts.png")
    if adj is not None:
        images.append(adj)

    rows_by_day, drug, clims, drug_max = ([], None, {}, 0.0)
    if renders and day_list:
        rows_by_day, drug, clims, drug_max = _render_tiles(runs, day_list, out, size, progress)
        for _day, _heading, rows in rows_by_day:
            for _r, _loc, tiles in rows:
                images += tiles

    doc = _Doc()
    doc.heading(1, title)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    doc.para(f"Written by `marrow3d compare` (marrow3d {__version__}) on {stamp}. "
             f"Endpoints of every run are also in `endpoints.csv`.")
    doc.heading(2, "Runs")
    run_rows = []
    for r in runs:
        nz, ny, nx = r.shape
        seed = r.meta.get("seed", "?")
        parent = r.meta.get("branched_from")
        if parent:
            pname = next((o.label for o in runs if str(o.path) == str(Path(parent))), Path(parent).name)
            branch = f"{pname} at day {float(r.meta.get('branch_time_h', 0)) / 24:g}"
        else:
            branch = "–"
        run_rows.append([r.label, str(r.path), f"{nx} x {ny} x {nz} x {r.voxel_um:g} µm", _fmt(r.final_day, "day"),
                         str(seed), branch, _therapy_text(r.config)])
    doc.table(["run", "folder", "grid (x y z)", "days", "seed", "branched from", "therapy"], run_rows, left=7)

    doc.heading(2, "Endpoints")
    for heading, cols, note in ENDPOINT_TABLES:
        doc.heading(3, heading)
        doc.table(["run"] + [c[1] for c in cols],
                  [[r.label] + [_fmt(r.endpoints.get(c[0]), c[2]) for c in cols] for r in runs])
        doc.para(note)

    doc.heading(2, "Time series")
    doc.para("Runs are overlaid, one line style per run (legend under the stage strip); each quantity keeps "
             "its colour. The strip at the bottom shows each run's disease stage.")
    doc.image(_Img(out / "timeseries.png", "time series of all runs"))
    doc.image(_Img(out / "burden.png", "leukemic burden"))
    if adj is not None:
        doc.image(_Img(adj, "adjunct drugs"))

    if renders:
        doc.heading(2, "The marrow, matched by day")
        scales = [f"pO2 {clims['oxygen'][0]:g}–{clims['oxygen'][1]:g} mmHg"]
        if drug is not None:
            basis = (f"the highest marrow level in the pictures, {drug_max:.3g} µM, rounded up" if drug_max > 0
                     else "the largest plasma peak of any run: no marrow level in the pictures")
            scales.append(f"{drug} {clims[drug][0]:g}–{clims[drug][1]:g} µM ({basis})")
        views = [v for v in VIEWS if v[0] != "drug" or drug is not None]
        doc.para("Vessels: arterioles red, sinusoids blue, lost vessels grey. Niche holders: HSC green, LSC "
                 "orange, other cells grey, empty yellow (cubes endosteal, spheres perivascular). Slices: the "
                 "middle plane cutting most across the bone-marrow interface. Colour scales are the same in "
                 "every picture: "
                 + "; ".join(scales) + ".")
        for day, heading, rows in rows_by_day:
            if day is None:
                doc.heading(3, "End of each run (" + ", ".join(f"{r.label}: day {loc.day:g}" for r, loc, _ in rows)
                            + ")")
            else:
                doc.heading(3, f"Day {day:g}" + (f" ({heading})" if heading else ""))
            header = ["run"] + [(f"{drug.capitalize()} (slice)" if k == "drug" else t) for k, t in views]
            trows = []
            notes = []
            for r, loc, tiles in rows:
                trows.append([r.label] + [_Img(p, f"{r.label} {k} day {loc.day:g}")
                                          for p, (k, _t) in zip(tiles, views)])
                if loc.note:
                    notes.append(f"{r.label}: {loc.note}.")
            doc.table(header, trows, cls="renders", left=len(header))
            if notes:
                doc.bullets(notes)
    else:
        doc.para("Renders were not requested (`--no-renders`).")

    md_path = out / "report.md"
    md_path.write_text(doc.markdown(), encoding="utf-8")
    html_path = out / "report.html"
    html_path.write_text(doc.html(title), encoding="utf-8")
    return CompareResult(out_dir=out, markdown=md_path, html=html_path, csv=csv_path, images=images)
