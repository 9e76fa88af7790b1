"""From a run directory to what one picture needs, at rendering resolution.

Runs are read through :func:`marrow3d.analysis.open_run` only (``RunData``). Grids larger than
``max_dim`` voxels along an axis are reduced by an integer factor *for rendering*
(block means for fields, "any" for vessel and bone masks, priority for cell types);
the data on disk are never changed, and glyph positions (rare cells, niche slots) keep
full resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from marrow3d.errors import Marrow3DError
from marrow3d.kernels import codes
from marrow3d.metrics import STAGE_NAMES

from ._gl import RenderError

__all__ = ["RunInfo", "Frame", "open_run", "run_info", "load_frame", "check_step", "block_reduce",
           "DRUG_FIELDS", "MAX_RENDER_DIM", "MAX_SURFACE_DIM"]

#: Largest number of voxels along an axis that is rendered (larger grids are block-reduced).
MAX_RENDER_DIM = 256
#: Surfaces (vessels, bone) are extracted on grids of at most this many voxels per axis: the
#: dense sinusoid network of a 256^3 box gives about 8 million triangles at full resolution,
#: which Mesa's software rasteriser cannot draw in seconds.
MAX_SURFACE_DIM = 128
DRUG_FIELDS = ("cytarabine", "daunorubicin")


def open_run(path):
    """Open a run directory (or run.h5) for reading: :func:`marrow3d.analysis.open_run`."""
    from marrow3d.analysis import open_run as _open

    return _open(path)


@dataclass
class RunInfo:
    """Run-wide facts used by every frame (so all frames share colour scales)."""

    name: str
    shape: tuple[int, int, int]
    voxel_um: float
    origin_um: np.ndarray  #: (z, y, x) of the centre of voxel (0, 0, 0)
    snapshot_times_h: np.ndarray
    stage_time_h: np.ndarray
    stage: np.ndarray
    final_time_h: float
    drug_fields: tuple[str, ...]
    drug_peak_uM: dict[str, float]
    integrity_floor: float
    signal_k_su: float

    @property
    def n_snapshots(self) -> int:
        return int(self.snapshot_times_h.size)

    def time_h(self, step: int) -> float:
        return self.final_time_h if step == -1 else float(self.snapshot_times_h[step])

    def stage_at(self, time_h: float) -> int:
        """Disease stage at ``time_h`` (the last time-series row at or before it)."""
        if self.stage.size == 0:
            return 0
        i = int(np.searchsorted(self.stage_time_h, time_h + 1e-9, side="right")) - 1
        return int(self.stage[max(i, 0)])

    def stage_name(self, time_h: float) -> str:
        return STAGE_NAMES.get(self.stage_at(time_h), "?")


def run_info(run, name: str = "") -> RunInfo:
    """Collect :class:`RunInfo` from an open RunData."""
    ts = run.timeseries
    t = np.asarray(ts.index, dtype=float)
    stage = np.asarray(ts["stage"], dtype=float) if "stage" in ts else np.zeros(0)
    keep = np.isfinite(stage)
    cfg = run.config
    drugs = tuple(d for d in DRUG_FIELDS if d in _field_names(run))
    peaks = {}
    for d in DRUG_FIELDS:
        col = f"plasma_{d}_uM"
        peaks[d] = float(np.nanmax(ts[col])) if col in ts and len(ts) else 0.0
    floor = float(getattr(getattr(cfg, "vessels", None), "integrity_floor", 0.2))
    k = float(getattr(getattr(cfg, "vessels", None), "signal_half_saturation_su", 1.0))
    snaps = np.asarray(run.snapshot_times_h, dtype=float)
    return RunInfo(
        name=name, shape=tuple(int(s) for s in run.shape), voxel_um=float(run.voxel_um),
        origin_um=np.asarray(run.origin_um, dtype=float), snapshot_times_h=snaps,
        stage_time_h=t[keep], stage=stage[keep].astype(int),
        final_time_h=_final_time(run, t, snaps),
        drug_fields=drugs, drug_peak_uM=peaks, integrity_floor=floor, signal_k_su=k,
    )


_FIELD_NAMES = ("oxygen", "signal", "cxcl12", *DRUG_FIELDS)


def _field_names(run, step: int = -1) -> tuple[str, ...]:
    """Continuous fields available at ``step`` (listed without reading them)."""
    return tuple(n for n in run.array_names(step) if n in _FIELD_NAMES)


def _final_time(run, t: np.ndarray, snaps: np.ndarray) -> float:
    try:
        return float(run.step_time_h(-1))
    except Marrow3DError:  # neither a final state nor snapshots yet
        return float(t[-1]) if t.size else 0.0


def check_step(info: RunInfo, step: int) -> int:
    """Validate a snapshot index (``-1`` = final state); raise a one-line error otherwise."""
    n = info.n_snapshots
    if step == -1 or 0 <= step < n:
        return step
    if n == 0:
        raise RenderError(f"step {step} does not exist: the run has no snapshots (use --step -1 for the final state)")
    raise RenderError(f"step {step} does not exist: the run has {n} snapshots (0..{n - 1}) and -1 for the final state")


def render_factor(shape, max_dim: int = MAX_RENDER_DIM) -> int:
    """Integer reduction factor so that no rendered axis exceeds ``max_dim``."""
    return max(1, math.ceil(max(shape) / max_dim))


def block_reduce(a: np.ndarray, f: int, how: str = "mean", weights: np.ndarray | None = None) -> np.ndarray:
    """Reduce a (z, y, x) array by ``f`` along each axis (edges padded by repetition).

    ``how``: ``mean``, ``any`` (boolean), ``max``, or ``wmean`` (mean over ``weights``-true voxels;
    0 where a block has none).
    """
    if f == 1:
        return a
    pad = [(0, (-s) % f) for s in a.shape]

    def blocks(x):
        x = np.pad(x, pad, mode="edge")
        nz, ny, nx = (s // f for s in x.shape)
        return x.reshape(nz, f, ny, f, nx, f)

    ax = (1, 3, 5)
    if how == "mean":
        return blocks(a.astype(np.float32)).mean(axis=ax, dtype=np.float32)
    if how == "any":
        return blocks(a).any(axis=ax)
    if how == "max":
        return blocks(a).max(axis=ax)
    if how == "wmean":
        w = blocks(weights.astype(np.float32))
        num = (blocks(a.astype(np.float32)) * w).sum(axis=ax)
        den = w.sum(axis=ax)
        return np.where(den > 0, num / np.maximum(den, 1), 0.0).astype(np.float32)
    raise ValueError(how)


#: Priority of cell codes when blocks are reduced: rarer / more important types win.
_CELL_PRIORITY = np.array([0, 3, 1, 4, 2], dtype=np.uint8)  # empty, HSC, progenitor, LSC, blast
_CELL_FROM_PRIORITY = np.array([codes.EMPTY, codes.PROGENITOR, codes.BLAST, codes.HSC, codes.LSC], dtype=np.uint8)


@dataclass
class Frame:
    """One time point at rendering resolution, in physical coordinates (um).

    Arrays are (z, y, x). ``spacing_um`` and ``origin_xyz_um`` describe the rendered grid
    (origin = centre of its first voxel); ``full_*`` keep full-resolution data for glyphs.
    """

    step: int
    time_h: float
    stage: int
    stage_name: str
    factor: int
    surface_factor: int
    spacing_um: float
    origin_xyz_um: np.ndarray
    full_origin_xyz_um: np.ndarray
    voxel_um: float
    tissue: np.ndarray  # full resolution
    niche: np.ndarray  # full resolution
    fields: dict[str, np.ndarray] = field(default_factory=dict)  # rendered resolution
    cells: np.ndarray | None = None  # full resolution
    lodged: np.ndarray | None = None  # full resolution
    integrity: np.ndarray | None = None  # full resolution

    @property
    def day(self) -> float:
        return self.time_h / 24.0

    def reduce_mask(self, mask: np.ndarray, f: int | None = None) -> np.ndarray:
        return block_reduce(mask, self.factor if f is None else f, "any")

    def grid_origin(self, f: int) -> np.ndarray:
        """xyz centre (um) of the first voxel of the grid reduced by ``f``."""
        return self.full_origin_xyz_um + (f - 1) * self.voxel_um / 2.0

    def reduce_cells(self, cells: np.ndarray) -> np.ndarray:
        if self.factor == 1:
            return cells
        pr = block_reduce(_CELL_PRIORITY[cells], self.factor, "max")
        return _CELL_FROM_PRIORITY[pr]

    def voxel_centres(self, idx: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
        """(n, 3) xyz positions in um of full-resolution voxels given as (z, y, x) indices."""
        z, y, x = idx
        return np.column_stack([x, y, z]).astype(np.float64) * self.voxel_um + self.full_origin_xyz_um


def load_frame(run, info: RunInfo, step: int, *, fields: tuple[str, ...] = (), cells: bool = False,
               integrity: bool = False, max_dim: int | None = None) -> Frame:
    """Read what a picture of ``step`` needs; fields are block-reduced for rendering."""
    check_step(info, step)
    f = render_factor(info.shape, MAX_RENDER_DIM if max_dim is None else max_dim)
    vox = info.voxel_um
    origin_xyz = info.origin_um[::-1].astype(float)
    # the centre of rendered voxel 0 is the centre of its f^3 block
    r_origin = origin_xyz + (f - 1) * vox / 2.0
    t = info.time_h(step)
    fs = max(f, render_factor(info.shape, MAX_SURFACE_DIM))
    frame = Frame(step=step, time_h=t, stage=info.stage_at(t), stage_name=info.stage_name(t), factor=f, surface_factor=fs,
                  spacing_um=vox * f, origin_xyz_um=r_origin, full_origin_xyz_um=origin_xyz, voxel_um=vox,
                  tissue=np.asarray(run.tissue), niche=np.asarray(run.niche))
    try:
        if fields:
            avail = _field_names(run, step)
            for name in fields:
                if name not in avail:
                    where = "the final state" if step == -1 else f"snapshot {step}"
                    raise RenderError(f"{where} has no {name!r} field (present: {', '.join(avail) or 'none'})")
                frame.fields[name] = block_reduce(np.asarray(run.array(name, step), dtype=np.float32), f, "mean")
        if cells:
            frame.cells = np.asarray(run.cells(step))
            frame.lodged = np.asarray(run.lodged(step))
        if integrity:
            frame.integrity = np.asarray(run.integrity(step), dtype=np.float32)
    except (KeyError, IndexError) as exc:
        raise RenderError(f"cannot read step {step}: {exc.args[0] if exc.args else exc}") from None
    except Marrow3DError:
        raise
    return frame
