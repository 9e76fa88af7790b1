"""Entry points that assemble a run: backend, anatomy, model, simulation and writers.

``run_simulation`` (``marrow3d run``), ``resume_run`` (``marrow3d resume``) and ``branch_run``
(``marrow3d branch``) are what the CLI and the sweep workers call.
"""

from __future__ import annotations

import datetime as _dt
import logging
from pathlib import Path

from .config import SimulationConfig, config_from_toml_text
from .errors import CheckpointError, ConfigError

__all__ = ["run_simulation", "build_simulation", "default_run_dir", "make_model", "ensure_backend"]

log = logging.getLogger(__name__)


def default_run_dir() -> Path:
    """``runs/<UTC timestamp>`` (unique to the second; a suffix is added on collision)."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / stamp
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{stamp}-{k}")
    return path


def ensure_backend(cfg: SimulationConfig):
    """Initialise Taichi for ``cfg`` unless this process already did; return BackendInfo."""
    from .backend import BackendInfo, initialize
    from .kernels.ti_compat import current_arch_name, is_initialized

    if is_initialized():
        arch = current_arch_name()
        return BackendInfo(requested=cfg.run.backend, arch=arch, threads=cfg.run.threads, precision=cfg.run.precision)
    return initialize(cfg.run.backend, threads=cfg.run.threads, precision=cfg.run.precision)


def _load_diffusivity_map(cfg: SimulationConfig, shape):
    path = cfg.transport.oxygen.diffusivity_map
    if path is None:
        return None
    import numpy as np

    from .anatomy.mask_io import load_array

    arr = load_array(path, what="transport.oxygen.diffusivity_map")
    if arr.shape != tuple(shape):
        raise ConfigError(
            f"transport.oxygen.diffusivity_map {path!r} has shape {arr.shape}; the grid is {tuple(shape)}"
        )
    arr = np.asarray(arr, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"transport.oxygen.diffusivity_map {path!r} holds NaN or Inf")
    if np.any(arr < 0):
        raise ConfigError(f"transport.oxygen.diffusivity_map {path!r} holds negative diffusivities")
    return arr


def make_model(cfg: SimulationConfig, out_dir: Path | None = None):
    """Build the anatomy and the model of ``cfg`` (Taichi must be initialised)."""
    from .anatomy import build_anatomy
    from .model import MarrowModel

    anatomy = build_anatomy(cfg.domain, cfg.anatomy, cfg.run.seed)
    dmap = _load_diffusivity_map(cfg, anatomy.shape)
    return MarrowModel(cfg, anatomy, diagnostics_dir=out_dir, diffusivity_map=dmap)


def build_simulation(model, cfg: SimulationConfig, out_dir: Path, backend_name: str, *, resume: bool = False,
                     stop_time_h: float | None = None, progress=True):
    """A Simulation with the run-file writer and the checkpointer of ``cfg.output``.

    ``progress`` is handed to :class:`~marrow3d.simulation.Simulation`: a reporter
    (:mod:`marrow3d.progress`), True for periodic log lines, False for none.
    """
    from . import __version__
    from .output.checkpointer import Checkpointer
    from .output.run_writer import RunWriter
    from .provenance import provenance
    from .schedules import AnyOf, Never, TimeInterval, WallTimeInterval
    from .simulation import Simulation

    out = cfg.output
    meta = {
        "config_toml": cfg.to_toml(),
        "seed": int(cfg.run.seed),
        "backend": backend_name,
        "marrow3d_version": __version__,
        "anatomy_fingerprint": model.anatomy.fingerprint(),
        **provenance(),
    }
    stop = cfg.run.days * 24.0 if stop_time_h is None else stop_time_h
    sim = Simulation(model, stop_time_h=stop, progress=progress)
    snap = TimeInterval(out.snapshot_every_hours) if out.snapshot_every_hours else Never()
    sim.add_writer("run", RunWriter(out_dir, snap, out.snapshot_fields, meta, out.snapshot_precision,
                                    out.compression_level, resume=resume))
    parts = []
    if out.checkpoint_every_hours:
        parts.append(TimeInterval(out.checkpoint_every_hours))
    if out.checkpoint_every_wall_seconds:
        parts.append(WallTimeInterval(out.checkpoint_every_wall_seconds))
    sched = AnyOf(parts) if parts else Never()
    archive = TimeInterval(out.snapshot_every_hours) if out.checkpoints_archive == "snapshots" else None
    sim.add_writer("checkpoint", Checkpointer(out_dir, sched, keep=out.checkpoints_keep, meta=meta, archive=archive,
                                              archive_initial=archive is not None,
                                              keep_all=out.checkpoints_archive == "all"))
    return sim


def _prepare_new_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {str(out_dir)!r} exists and is not a directory")
    if (out_dir / "run.h5").exists() or (out_dir / "checkpoint.h5").exists():
        raise ConfigError(
            f"{str(out_dir)!r} already holds a run; continue it with `marrow3d resume {out_dir}` or choose another --out"
        )
    out_dir.mkdir(parents=True, exist_ok=True)


def run_simulation(cfg: SimulationConfig, out_dir: Path | None = None, *, progress=True):
    """Run ``cfg`` from t = 0 into ``out_dir`` (default ``runs/<timestamp>``).

    ``progress``: a reporter (:mod:`marrow3d.progress`), True (a log line every 30 s) or False.

    Returns
    -------
    RunResult
        Directory and how the run ended.
    """
    from .resources import check_memory

    out_dir = Path(out_dir) if out_dir is not None else default_run_dir()
    shape = _grid_shape(cfg)
    if cfg.run.backend in ("cpu", "auto"):
        check_memory(shape, cfg.run.precision, "cpu")
    info = ensure_backend(cfg)
    if info.name == "cuda":
        check_memory(shape, cfg.run.precision, "cuda")
    log.debug("backend %s; grid %s", info.name, "x".join(map(str, shape)))
    _prepare_new_dir(out_dir)
    (out_dir / "config.toml").write_text(cfg.to_toml(), encoding="utf-8")
    model = make_model(cfg, out_dir)
    sim = build_simulation(model, cfg, out_dir, info.name, progress=progress)
    status = sim.run()
    return RunResult(out_dir, status, info.name)


def _grid_shape(cfg: SimulationConfig):
    if cfg.domain.kind == "mask":
        from .anatomy.mask_io import mask_shape

        return mask_shape(cfg.domain.mask_path)
    return tuple(cfg.domain.shape_voxels)


class RunResult:
    """Where a run wrote its output and how it ended."""

    def __init__(self, directory: Path, status, backend: str | None = None) -> None:
        self.directory = Path(directory)
        self.status = status
        self.backend = backend

    def __str__(self) -> str:
        s = self.status
        on = f" on {self.backend}" if self.backend else ""
        return (f"{self.directory} ({s.reason}: step {s.iteration}, day {s.time_h / 24:.2f}, "
                f"{s.wall_s:.1f} s wall{on})")

    __repr__ = __str__


def config_of_checkpoint(meta: dict, source: str) -> SimulationConfig:
    """The resolved config stored in a checkpoint's ``/meta``."""
    text = meta.get("config_toml")
    if not text:
        raise ConfigError(f"{source} holds no config_toml")
    return config_from_toml_text(text, f"config stored in {source}")


#: Config keys (dotted prefixes) that ``marrow3d branch`` may change. Everything else
#: (domain, anatomy, seed, cell step, precision, oxygen and signal transport) defines the
#: shared history and must stay as it was.
BRANCHABLE_PREFIXES = (
    "therapy",
    "run.days",
    "run.backend",
    "run.threads",
    "output",
    "cells",
    "vessels",
    "transport.drugs",
    "transport.solver",
    "stages",
)


def _flatten(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def changed_keys(old: SimulationConfig, new: SimulationConfig) -> list[str]:
    """Dotted keys whose values differ between two configs."""
    a = _flatten(old.model_dump(mode="json"))
    b = _flatten(new.model_dump(mode="json"))
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def _anatomy_from_state(state: dict, cfg: SimulationConfig):
    import numpy as np

    from .anatomy import Anatomy

    anat = state["model"]["anatomy"]
    return Anatomy(
        tissue=np.asarray(anat["tissue"], dtype=np.uint8),
        niche=np.asarray(anat["niche"], dtype=np.uint8),
        integrity=np.asarray(state["model"]["vessel_integrity"], dtype=np.float32),
        voxel_um=float(anat["voxel_um"]),
        origin_um=tuple(np.asarray(anat["origin_um"], dtype=np.float64)),
        kind=cfg.domain.kind,
        seed=cfg.run.seed,
        source="checkpoint",
    )


def _model_from_checkpoint(cfg: SimulationConfig, state: dict, out_dir: Path):
    from .model import MarrowModel

    anatomy = _anatomy_from_state(state, cfg)
    dmap = _load_diffusivity_map(cfg, anatomy.shape)
    return MarrowModel(cfg, anatomy, diagnostics_dir=out_dir, diffusivity_map=dmap)


def resume_run(run_dir: Path, days: float | None = None, *, backend: str | None = None,
               threads: int | None = None, progress=True) -> RunResult:
    """Continue the run in ``run_dir`` from its newest checkpoint.

    Parameters
    ----------
    run_dir : Path
        A run directory holding ``checkpoint.h5``.
    days : float, optional
        New total simulated time in days (default: the stored ``run.days``).

    Notes
    -----
    The continuation is bit-identical to a direct run on the same backend: the checkpoint
    holds every field (the solver's warm start), the cell lattice, the Philox step counter,
    the schedules' next actuation times and the accumulated time series; ``run.h5`` is cut
    back to the checkpoint's step before new rows are written.
    """
    from .output.checkpointer import load_checkpoint

    run_dir = Path(run_dir)
    meta, state = load_checkpoint(run_dir)
    cfg = config_of_checkpoint(meta, str(run_dir / "checkpoint.h5"))
    updates = {}
    if days is not None:
        updates["days"] = float(days)
    if backend is not None:
        updates["backend"] = backend
    if threads is not None:
        updates["threads"] = threads
    if updates:
        cfg = _with_overrides(cfg, [f"run.{k}={_lit(v)}" for k, v in updates.items()])
    info = ensure_backend(cfg)
    (run_dir / "config.toml").write_text(cfg.to_toml(), encoding="utf-8")
    model = _model_from_checkpoint(cfg, state, run_dir)
    sim = build_simulation(model, cfg, run_dir, info.name, resume=True, progress=progress)
    sim.restore_prognostic_state(state)
    if model.clock.time_h >= cfg.run.days * 24.0 - 1e-9:
        log.warning("the checkpoint is already at day %.2f >= run.days = %.2f: nothing to do; pass --days",
                    model.clock.time_h / 24, cfg.run.days)
    status = sim.run()
    return RunResult(run_dir, status, info.name)


def branch_run(src_dir: Path, new_dir: Path, overrides: list[str], *, at_day: float | None = None,
               progress=True) -> RunResult:
    """Start a new run in ``new_dir`` from a checkpoint of ``src_dir``, with changes.

    Parameters
    ----------
    src_dir : Path
        The run to branch from.
    new_dir : Path
        The new run's directory.
    overrides : list of str
        ``key=value`` changes; only keys under :data:`BRANCHABLE_PREFIXES` may change, and
        dosing events must not start before the branch point (they would rewrite plasma
        history).
    at_day : float, optional
        Branch from the checkpoint at this simulated day (any kept one, see
        ``output.checkpoints_archive``); default: the newest checkpoint.

    Raises
    ------
    ConfigError
        A change outside the branchable set, or a dose before the branch time.
    CheckpointError
        No checkpoint at ``at_day`` (the message lists the days that have one).
    """
    from .output.checkpointer import LATEST_NAME, checkpoint_at_day, load_checkpoint

    src_dir, new_dir = Path(src_dir), Path(new_dir)
    if at_day is not None:
        if not src_dir.is_dir():
            raise CheckpointError(f"{str(src_dir)!r} is not a run directory (--at-day picks one of its checkpoints)")
        source = checkpoint_at_day(src_dir, at_day)
    else:
        source = src_dir / LATEST_NAME if src_dir.is_dir() else src_dir
    meta, state = load_checkpoint(source)
    old = config_of_checkpoint(meta, str(source))
    cfg = _with_overrides(old, overrides)
    changed = changed_keys(old, cfg)
    bad = [k for k in changed if not any(k == p or k.startswith(p + ".") for p in BRANCHABLE_PREFIXES)]
    if bad:
        raise ConfigError(
            f"branch may not change {', '.join(bad)}: they define the shared history "
            f"(branchable: {', '.join(BRANCHABLE_PREFIXES)})"
        )
    t_branch_h = float(state["model"]["clock"]["iteration"]) * float(state["model"]["clock"]["dt_h"])
    _check_future_doses(old, cfg, t_branch_h)
    info = ensure_backend(cfg)
    _prepare_new_dir(new_dir)
    (new_dir / "config.toml").write_text(cfg.to_toml(), encoding="utf-8")
    model = _model_from_checkpoint(cfg, state, new_dir)
    model.restore_prognostic_state(state["model"])
    sim = build_simulation(model, cfg, new_dir, info.name, progress=progress)
    run_meta = sim.output_writers["run"].meta
    run_meta["branched_from"] = str(src_dir.resolve())
    run_meta["branch_time_h"] = t_branch_h
    run_meta["branch_checkpoint"] = f"checkpoint_{int(state['model']['clock']['iteration']):09d}.h5"
    status = sim.run()
    return RunResult(new_dir, status, info.name)


def _event_start_h(event) -> float:
    for attr in ("start_day", "day"):
        v = getattr(event, attr, None)
        if v is not None:
            return float(v) * 24.0
    days = getattr(event, "days", None)
    return min(days) * 24.0 if days else 0.0


def _check_future_doses(old: SimulationConfig, new: SimulationConfig, t_branch_h: float) -> None:
    old_events = [e.model_dump(mode="json") for e in old.therapy.events]
    for i, e in enumerate(new.therapy.events):
        if e.model_dump(mode="json") in old_events:
            continue
        start = _event_start_h(e)
        if start < t_branch_h - 1e-9:
            raise ConfigError(
                f"therapy.events[{i}] starts at day {start / 24:g}, before the branch point "
                f"(day {t_branch_h / 24:g}); a branch can only add doses from the branch point on"
            )


def _lit(value) -> str:
    if isinstance(value, str):
        return '"' + value + '"'
    return repr(value)


def _with_overrides(cfg: SimulationConfig, overrides: list[str]) -> SimulationConfig:
    from .config import SimulationConfig as _SC
    from .config.loader import apply_overrides, validate_dict

    if not overrides:
        return cfg
    data = apply_overrides(cfg.model_dump(mode="json", exclude_none=True), overrides)
    return validate_dict(_SC, data, "config (with overrides)")  # type: ignore[return-value]
