"""Range and consistency checks of a checkpoint's content, before anything is built from it.

Checksums (:mod:`marrow3d.output.integrity`) say a checkpoint is the file that was written;
these checks say its content is a state marrow3d can continue from: the config text
validates, the clock, the metadata and the time series agree with each other and with the
config, labels and cell codes are known codes on the voxels that may carry them, and
fields and vessel integrity are finite and in range. Each problem is one line naming the
dataset or attribute. Datasets this module does not know are covered by the checksums only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import CheckpointError, ConfigError
from ..kernels import codes

__all__ = ["check_checkpoint_state", "SCHEDULE_KINDS"]

#: ``kind`` of a schedule's saved state (``marrow3d.schedules``).
SCHEDULE_KINDS = ("time", "wall", "iteration", "never", "any")
#: Cell flag bits (``kernels/cells_metrics``): LODGED | MOBILIZED.
_FLAG_BITS = 0x3


class _Checker:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, what: str, problem: str) -> None:
        raise CheckpointError(f"checkpoint {self.source!r}: {what} {problem}")

    def get(self, tree: dict, path: str) -> Any:
        node: Any = tree
        for part in path.split("/"):
            if not isinstance(node, dict) or part not in node:
                self.fail(f"/state/{path}", "is missing")
            node = node[part]
        return node

    def integer(self, what: str, value: Any, minimum: int = 0) -> int:
        arr = np.asarray(value)
        if arr.shape != () or arr.dtype.kind not in "iub":
            self.fail(what, f"is {value!r}; an integer is needed")
        v = int(arr)
        if v < minimum:
            self.fail(what, f"is {v}; it must be >= {minimum}")
        return v

    def number(self, what: str, value: Any) -> float:
        arr = np.asarray(value)
        if arr.shape != () or arr.dtype.kind not in "iuf":
            self.fail(what, f"is {value!r}; a number is needed")
        v = float(arr)
        if not math.isfinite(v):
            self.fail(what, f"is {v}; a finite number is needed")
        return v

    def array(self, what: str, value: Any, *, ndim: int | None = None, shape: tuple | None = None,
              kinds: str = "iuf") -> np.ndarray:
        arr = np.asarray(value)
        if arr.dtype.kind not in kinds:
            self.fail(what, f"has dtype {arr.dtype}")
        if ndim is not None and arr.ndim != ndim:
            self.fail(what, f"has shape {arr.shape}; {ndim} dimension(s) expected")
        if shape is not None and arr.shape != tuple(shape):
            self.fail(what, f"has shape {arr.shape}, expected {tuple(shape)}")
        return arr

    def codes(self, what: str, arr: np.ndarray, allowed: int, names: dict[int, str]) -> None:
        bad = (arr < 0) | (arr >= allowed) if arr.dtype.kind == "i" else arr >= allowed
        if np.any(bad):
            values, counts = np.unique(arr[bad], return_counts=True)
            shown = ", ".join(f"{int(v)} ({int(c)} voxels)" for v, c in zip(values[:5], counts[:5]))
            known = ", ".join(f"{k} {n}" for k, n in names.items())
            self.fail(what, f"holds unknown codes {shown}; known: {known}")

    def finite_range(self, what: str, arr: np.ndarray, lo: float | None = None, hi: float | None = None) -> None:
        if arr.dtype.kind != "f":
            self.fail(what, f"has dtype {arr.dtype}; a float array is needed")
        bad = ~np.isfinite(arr)
        if np.any(bad):
            self.fail(what, f"holds {int(np.count_nonzero(bad))} NaN/Inf values")
        if lo is not None and arr.size and float(arr.min()) < lo:
            self.fail(what, f"holds {float(arr.min())!r}, below {lo}")
        if hi is not None and arr.size and float(arr.max()) > hi:
            self.fail(what, f"holds {float(arr.max())!r}, above {hi}")


def check_checkpoint_state(meta: dict[str, Any], state: dict[str, Any], source: str, *,
                           diagnostic: bool = False):
    """Check a loaded checkpoint; return its validated :class:`~marrow3d.config.SimulationConfig`.

    Parameters
    ----------
    meta, state : dict
        ``/meta`` attributes and the ``/state`` tree as read by ``read_tree``.
    source : str
        The file, for messages.
    diagnostic : bool
        A ``diagnostic.h5`` (the state at a NaN stop): non-finite fields are expected there.

    Raises
    ------
    CheckpointError
        The first problem, naming the dataset or attribute.
    """
    from ..config import config_from_toml_text

    c = _Checker(source)
    text = meta.get("config_toml")
    if not isinstance(text, str) or not text.strip():
        c.fail("/meta@config_toml", "is missing or empty")
    try:
        cfg = config_from_toml_text(text, f"the config stored in {source}")
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint {source!r}: /meta@config_toml does not validate: {exc}") from None
    dt = float(cfg.run.cell_step_hours)

    # clock and metadata ------------------------------------------------------------
    it = c.integer("/meta@iteration", meta.get("iteration"))
    clock = c.get(state, "model/clock")
    if not isinstance(clock, dict):
        c.fail("/state/model/clock", "is not a group")
    if "iteration" not in clock or "dt_h" not in clock:
        c.fail("/state/model/clock", "lacks its iteration or dt_h attribute")
    if c.integer("/state/model/clock@iteration", clock["iteration"]) != it:
        c.fail("/state/model/clock@iteration", f"is {int(clock['iteration'])} but /meta@iteration is {it}")
    if c.number("/state/model/clock@dt_h", clock["dt_h"]) != dt:
        c.fail("/state/model/clock@dt_h", f"is {float(clock['dt_h'])!r} h but run.cell_step_hours is {dt!r}")
    time_h = c.number("/meta@time_h", meta.get("time_h"))
    if abs(time_h - it * dt) > 1e-9 * max(1.0, abs(it * dt)):
        c.fail("/meta@time_h", f"is {time_h!r} but iteration {it} x {dt!r} h is {it * dt!r}")
    if "seed" in meta and c.integer("/meta@seed", meta["seed"]) != cfg.run.seed:
        c.fail("/meta@seed", f"is {int(meta['seed'])} but the stored config's run.seed is {cfg.run.seed}")

    # anatomy ------------------------------------------------------------------------
    tissue = c.array("/state/model/anatomy/tissue", c.get(state, "model/anatomy/tissue"), ndim=3, kinds="iu")
    grid = tissue.shape
    if min(grid) < 1:
        c.fail("/state/model/anatomy/tissue", f"has shape {grid}")
    c.codes("/state/model/anatomy/tissue", tissue, codes.N_TISSUE, codes.TISSUE_NAMES)
    niche = c.array("/state/model/anatomy/niche", c.get(state, "model/anatomy/niche"), shape=grid, kinds="iu")
    c.codes("/state/model/anatomy/niche", niche, len(codes.NICHE_NAMES), codes.NICHE_NAMES)
    marrow = tissue == codes.MARROW
    if np.any((niche != codes.NICHE_NONE) & ~marrow):
        c.fail("/state/model/anatomy/niche", "has niche slots on voxels that are not marrow")
    if "integrity" in c.get(state, "model/anatomy"):  # the initial integrity; older checkpoints lack it
        initial = c.array("/state/model/anatomy/integrity", c.get(state, "model/anatomy/integrity"), shape=grid,
                          kinds="f")
        c.finite_range("/state/model/anatomy/integrity", initial, 0.0, 1.0)
    voxel = c.number("/state/model/anatomy@voxel_um", c.get(state, "model/anatomy/voxel_um"))
    if voxel <= 0 or abs(voxel - cfg.domain.voxel_um) > 1e-9 * voxel:
        c.fail("/state/model/anatomy@voxel_um", f"is {voxel!r} but domain.voxel_um is {cfg.domain.voxel_um!r}")
    origin = c.array("/state/model/anatomy/origin_um", c.get(state, "model/anatomy/origin_um"), shape=(3,), kinds="f")
    c.finite_range("/state/model/anatomy/origin_um", origin)

    # cells --------------------------------------------------------------------------
    cells = c.array("/state/model/cells/cells", c.get(state, "model/cells/cells"), shape=grid, kinds="iu")
    c.codes("/state/model/cells/cells", cells, codes.N_CELL_TYPES, codes.CELL_NAMES)
    if np.any((cells != codes.EMPTY) & ~marrow):
        n = int(np.count_nonzero((cells != codes.EMPTY) & ~marrow))
        c.fail("/state/model/cells/cells", f"has {n} cells on voxels that are not marrow")
    flags = c.array("/state/model/cells/flags", c.get(state, "model/cells/flags"), shape=grid, kinds="iu")
    if np.any(flags.astype(np.int64) & ~_FLAG_BITS):
        c.fail("/state/model/cells/flags", f"holds bits other than LODGED (1) and MOBILIZED (2)")
    c.array("/state/model/cells/generation", c.get(state, "model/cells/generation"), shape=grid, kinds="iu")
    cells_tree = state.get("model", {}).get("cells", {}) if isinstance(state.get("model"), dict) else {}
    if isinstance(cells_tree, dict) and "niche_conditioned" in cells_tree:  # absent in older checkpoints
        cond = c.array("/state/model/cells/niche_conditioned", cells_tree["niche_conditioned"], shape=grid, kinds="iu")
        if np.any((cond != 0) & (cond != 1)):
            c.fail("/state/model/cells/niche_conditioned", "holds values other than 0 and 1")
        if np.any((cond != 0) & (niche == codes.NICHE_NONE)):
            c.fail("/state/model/cells/niche_conditioned", "marks voxels that are not niche slots")
    if isinstance(cells_tree, dict) and "niche_timer" in cells_tree:
        timer = c.array("/state/model/cells/niche_timer", cells_tree["niche_timer"], shape=grid, kinds="iu")
        if timer.size and (int(timer.min()) < 0 or int(timer.max()) > 65535):
            c.fail("/state/model/cells/niche_timer", "holds values outside 0..65535 (uint16 cell steps)")
    for name in ("counters", "auc"):
        arr = c.array(f"/state/model/cells/{name}", c.get(state, f"model/cells/{name}"), ndim=2, kinds="iu")
        if arr.size and int(arr.min()) < 0:
            c.fail(f"/state/model/cells/{name}", f"holds a negative count ({int(arr.min())})")
    c.integer("/state/model/cells/step_index", c.get(state, "model/cells/step_index"))
    if c.integer("/state/model/cells/seed", c.get(state, "model/cells/seed")) != cfg.run.seed:
        c.fail("/state/model/cells/seed", f"is {int(state['model']['cells']['seed'])} but run.seed is {cfg.run.seed}")

    # vessels and fields ---------------------------------------------------------------
    integrity = c.array("/state/model/vessel_integrity", c.get(state, "model/vessel_integrity"), shape=grid, kinds="f")
    if not diagnostic:
        c.finite_range("/state/model/vessel_integrity", integrity, 0.0, 1.0)
    fields = c.get(state, "model/fields")
    if not isinstance(fields, dict):
        c.fail("/state/model/fields", "is not a group")
    for name in ("oxygen", "signal"):
        if name not in fields:
            c.fail(f"/state/model/fields/{name}", "is missing")
    for name, arr in fields.items():
        arr = c.array(f"/state/model/fields/{name}", arr, shape=grid, kinds="f")
        if not diagnostic:
            c.finite_range(f"/state/model/fields/{name}", arr)
    for group, kind in (("drug_active", "b"), ("solve_iterations", "iu")):
        for name, value in (state["model"].get(group) or {}).items():
            if kind == "b":
                if np.asarray(value).dtype.kind != "b":
                    c.fail(f"/state/model/{group}@{name}", f"is {value!r}; true or false is needed")
            else:
                c.integer(f"/state/model/{group}@{name}", value)

    # time series --------------------------------------------------------------------
    history = c.get(state, "model/history")
    if not isinstance(history, dict) or "time_h" not in history:
        c.fail("/state/model/history/time_h", "is missing")
    for name, col in history.items():
        arr = c.array(f"/state/model/history/{name}", col, shape=(it + 1,), kinds="iuf")
        if name == "time_h" and not np.allclose(arr, np.arange(it + 1) * dt, rtol=1e-12, atol=1e-9):
            c.fail("/state/model/history/time_h", f"is not the step times 0, {dt:g}, ... {it * dt:g} h")

    # schedules of writers and callbacks -------------------------------------------------
    for group in ("writers", "callbacks"):
        for name, sub in (state.get(group) or {}).items():
            if not isinstance(sub, dict) or not isinstance(sub.get("schedule"), dict):
                c.fail(f"/state/{group}/{name}", "has no schedule group")
            _check_schedule(c, f"/state/{group}/{name}/schedule", sub["schedule"])
    return cfg


def _check_schedule(c: _Checker, what: str, sched: dict) -> None:
    kind = sched.get("kind")
    if kind not in SCHEDULE_KINDS:
        c.fail(f"{what}@kind", f"is {kind!r}; known: {', '.join(SCHEDULE_KINDS)}")
    for key, value in sched.items():
        if key == "kind":
            continue
        if isinstance(value, dict):
            _check_schedule(c, f"{what}/{key}", value)
        else:
            c.number(f"{what}@{key}", value)
