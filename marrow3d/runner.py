"""Entry points that assemble a run: backend, anatomy, model, simulation and writers.

``run_simulation`` (``marrow3d run``), ``resume_run`` (``marrow3d resume``) and ``branch_run``
(``marrow3d branch``) are what the CLI and the sweep workers call.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
from pathlib import Path

from .config import SimulationConfig, config_from_toml_text
from .errors import CheckpointError, ConfigError, Marrow3DError, OutputError
from .output.h5access import write_failure

__all__ = ["run_simulation", "resume_run", "branch_run", "build_simulation", "check_inputs", "default_run_dir",
           "make_model", "ensure_backend"]

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


def check_inputs(cfg: SimulationConfig) -> tuple[int, int, int]:
    """Read and check every file ``cfg`` names; return the grid shape ``(nz, ny, nx)``.

    The mask of ``domain.kind = "mask"`` is loaded and validated in full (dtype, rank, labels,
    marrow present) and gives the grid; ``transport.oxygen.diffusivity_map`` is checked
    against that grid. Nothing is written: run, ``config validate`` and sweeps call this
    before they create anything.

    Raises
    ------
    MaskError, ConfigError
        One line naming the config key or file and the problem.
    """
    if cfg.domain.kind == "mask":
        from .anatomy.mask_io import load_mask

        shape = tuple(int(n) for n in load_mask(cfg.domain.mask_path).shape)
    else:
        shape = tuple(int(n) for n in cfg.domain.shape_voxels)
    _load_diffusivity_map(cfg, shape)
    return shape  # type: ignore[return-value]


def _checkpoints_in(directory: Path) -> list[Path]:
    return sorted([*directory.glob("checkpoint_*.h5"), *directory.glob("checkpoint.h5")])


def _check_new_dir(out_dir: Path, flag: str = "--out") -> None:
    """Refuse, writing nothing, a directory that cannot take a new run.

    A directory holding a checkpoint holds a run (continue it with ``resume``); one holding
    ``run.h5`` but no checkpoint is a run stopped while it started, which a new run replaces.
    """
    from .output.runlock import writer_alive

    for node in (out_dir, *out_dir.parents):
        if node.exists():
            if not node.is_dir():
                where = ("exists and is not a directory" if node == out_dir
                         else f"cannot be created: {str(node)!r} is a file, not a directory")
                raise OutputError(f"{flag} {str(out_dir)!r} {where}")
            if not os.access(node, os.W_OK | os.X_OK):
                what = ("is not writable" if node == out_dir
                        else f"cannot be created: {str(node)!r} is not writable")
                raise OutputError(f"{flag} {str(out_dir)!r} {what}")
            break
    if not out_dir.exists():
        _probe_mkdir(out_dir, flag)
    if out_dir.is_dir():
        if writer_alive(out_dir):
            raise OutputError(f"{str(out_dir)!r} is being written by another marrow3d process; wait for it "
                              f"to end, or choose another {flag}")
        if _checkpoints_in(out_dir):
            raise ConfigError(
                f"{str(out_dir)!r} already holds a run; continue it with `marrow3d resume {out_dir}` "
                f"or choose another {flag}"
            )


def _probe_mkdir(out_dir: Path, flag: str) -> None:
    """Create and remove the first missing folder of ``out_dir``: a read-only file system,
    /proc or /sys refuse it here, before any work, rather than after the model is built."""
    missing = out_dir
    while not missing.parent.exists() and missing.parent != missing:
        missing = missing.parent
    if missing.is_symlink():  # a link to nothing: mkdir would fail only after the model is built
        raise OutputError(f"{flag} {str(out_dir)!r} cannot be created: {str(missing)!r} is a symbolic link "
                          f"to {os.readlink(missing)!r}, which does not exist")
    try:
        missing.mkdir()
    except FileExistsError:
        return  # appeared meanwhile: the claim says what is wrong
    except OSError as exc:
        raise OutputError(f"{flag} {str(out_dir)!r} cannot be created: {exc.strerror or exc}") from None
    try:
        missing.rmdir()
    except OSError:
        pass


@contextlib.contextmanager
def _claim_new_dir(out_dir: Path, command: str, flag: str = "--out"):
    """Create ``out_dir`` and hold its writer lock; undo both if the run fails before run.h5 exists."""
    from .output.runlock import LOCK_NAME, RunLock

    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{flag} {str(out_dir)!r} cannot be created: {exc.strerror or exc}") from None
    lock = RunLock(out_dir).acquire(command)
    try:
        if _checkpoints_in(out_dir):  # a run that ended while this one was being prepared
            raise ConfigError(f"{str(out_dir)!r} already holds a run; continue it with "
                              f"`marrow3d resume {out_dir}` or choose another {flag}")
        if (out_dir / "run.h5").exists():
            log.warning("%s holds a run that stopped before its first checkpoint: starting it over", out_dir)
        yield lock
    except BaseException:
        if not (out_dir / "run.h5").exists():  # nothing of the run was written: leave no trace
            for name in ("config.toml", *([LOCK_NAME] if created else [])):
                try:
                    (out_dir / name).unlink()
                except OSError:
                    pass
            if created:
                try:
                    out_dir.rmdir()
                except OSError:
                    pass
        raise
    finally:
        lock.release()


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write {str(path)!r}: {write_failure(exc)}") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def _kept_state(out_dir: Path) -> str:
    """What a failed run leaves to continue from, for the error message."""
    from .output.checkpointer import LATEST_NAME
    from .output.h5access import open_for_reading

    path = out_dir / LATEST_NAME
    try:
        h5, _ = open_for_reading(path)
        with h5:
            it = int(h5["meta"].attrs["iteration"])
            day = float(h5["meta"].attrs["time_h"]) / 24.0
    except (Marrow3DError, OSError, KeyError, ValueError, RuntimeError):
        return f"no checkpoint was kept: start the run again (same --out {out_dir})"
    return (f"{path} (step {it}, day {day:g}) is kept: make room, then continue with "
            f"`marrow3d resume {out_dir}`")


def _run_until_done(sim, out_dir: Path):
    """``sim.run()``; a failed write becomes one line saying what was kept."""
    try:
        return sim.run()
    except OutputError as exc:
        raise OutputError(f"{exc}; the run stopped, {_kept_state(out_dir)}") from None


def run_simulation(cfg: SimulationConfig, out_dir: Path | None = None, *, progress=True, profile: bool = False):
    """Run ``cfg`` from t = 0 into ``out_dir`` (default ``runs/<timestamp>``).

    ``progress``: a reporter (:mod:`marrow3d.progress`), True (a log line every 30 s) or False.
    ``profile``: count kernel launches, host syncs and host<->device bytes and time every
    phase of every step (:class:`marrow3d.profiling.StepProfiler`); the summary is written to
    ``out_dir/profile.json`` and returned as ``RunResult.profile``.

    Everything is checked before the directory is created: the directory itself, the input
    files, memory, the backend, and the model is built. The directory is then held by a
    writer lock (:mod:`marrow3d.output.runlock`) until the run ends.

    Returns
    -------
    RunResult
        Directory and how the run ended.
    """
    from .resources import check_memory

    out_dir = Path(out_dir) if out_dir is not None else default_run_dir()
    _check_new_dir(out_dir)
    shape = check_inputs(cfg)
    if cfg.run.backend in ("cpu", "auto"):
        check_memory(shape, cfg.run.precision, "cpu", cxcl12=cfg.transport.cxcl12.enabled)
    info = ensure_backend(cfg)
    if info.name == "cuda":
        check_memory(shape, cfg.run.precision, "cuda", cxcl12=cfg.transport.cxcl12.enabled)
    log.debug("backend %s; grid %s", info.name, "x".join(map(str, shape)))
    model = make_model(cfg, out_dir)
    with _claim_new_dir(out_dir, "run"):
        _write_text_atomic(out_dir / "config.toml", cfg.to_toml())
        sim = build_simulation(model, cfg, out_dir, info.name, progress=progress)
        if not profile:
            return RunResult(out_dir, _run_until_done(sim, out_dir), info.name)
        return _profiled(sim, out_dir, {"backend": info.name, "grid": list(shape), "threads": info.threads})


def _profiled(sim, out_dir: Path, about: dict) -> "RunResult":
    """Run ``sim`` under a StepProfiler; write ``profile.json`` and attach the summary."""
    from .profiling import NULL_PROBE, StepProfiler

    with StepProfiler() as prof:
        sim.model.probe = sim.probe = prof
        try:
            status = _run_until_done(sim, out_dir)
        finally:
            sim.model.probe = sim.probe = NULL_PROBE
    prof.write_json(out_dir / "profile.json", extra={"run": about})
    result = RunResult(out_dir, status, about.get("backend"))
    result.profile = prof.summary()
    result.profile_table = prof.table()
    return result


class RunResult:
    """Where a run wrote its output and how it ended."""

    def __init__(self, directory: Path, status, backend: str | None = None) -> None:
        self.directory = Path(directory)
        self.status = status
        self.backend = backend
        self.profile: dict | None = None
        self.profile_table: str | None = None

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
    """The run's anatomy as it was built, from a checkpoint's ``/state/model/anatomy``.

    Its integrity is the anatomy's initial one (``model/anatomy/integrity``), not the
    evolving ``model/vessel_integrity`` (model state, restored with the rest), so that
    ``Anatomy.fingerprint()`` matches the one ``run.h5`` records. Checkpoints written before
    that dataset existed lack it: there it is rebuilt as every generated or imported anatomy
    starts, 1 on vessel voxels and 0 elsewhere (``build_anatomy``), which the fingerprint
    check against ``run.h5`` then confirms.
    """
    import numpy as np

    from .anatomy import Anatomy
    from .kernels import codes

    anat = state["model"]["anatomy"]
    tissue = np.asarray(anat["tissue"], dtype=np.uint8)
    if "integrity" in anat:
        integrity = np.asarray(anat["integrity"], dtype=np.float32)
    else:
        integrity = np.isin(tissue, codes.VESSEL_LABELS).astype(np.float32)
    return Anatomy(
        tissue=tissue,
        niche=np.asarray(anat["niche"], dtype=np.uint8),
        integrity=integrity,
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


def _restored(cfg: SimulationConfig, state: dict, out_dir: Path, backend_name: str, source: str, *,
              resume: bool, progress: bool):
    """Model and Simulation restored from a checked checkpoint; what still fails is one line."""
    from .output.model_state import restore_model_state

    try:
        model = _model_from_checkpoint(cfg, state, out_dir)
        sim = build_simulation(model, cfg, out_dir, backend_name, resume=resume, progress=progress)
        if resume:
            sim.restore_prognostic_state(state)
        else:
            restore_model_state(model, state["model"])
    except Marrow3DError:
        raise
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise CheckpointError(f"checkpoint {source!r} cannot be restored: {' '.join(str(exc).split())}") from None
    return model, sim


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

    Everything is verified before anything is written: the run directory's writer lock, the
    checkpoint (checksums and content), the config with its overrides, the restored model,
    and that ``run.h5`` can be read and belongs to this run. A refused resume leaves every
    file as it was; the new ``run.h5`` replaces the old one only once it is complete.
    """
    from .output.checkpointer import LATEST_NAME, load_checkpoint
    from .output.run_writer import check_resumable
    from .output.runlock import RunLock, writer_alive

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        what = "is not a directory" if run_dir.exists() else "does not exist"
        raise CheckpointError(f"run directory {str(run_dir)!r} {what}")
    if writer_alive(run_dir):
        RunLock(run_dir).acquire("resume")  # fails, naming the process that writes the run
    if not (run_dir / LATEST_NAME).exists():
        if (run_dir / "run.h5").exists() or (run_dir / "config.toml").exists():
            raise CheckpointError(
                f"{str(run_dir)!r} holds no checkpoint: the run stopped before its first one; start it again "
                f"with `marrow3d run {run_dir / 'config.toml'} --out {run_dir}` (it replaces what is there)"
            )
        raise CheckpointError(f"{str(run_dir)!r} is not a marrow3d run directory (no checkpoint.h5)")
    with RunLock(run_dir).acquire("resume"):
        source = str(run_dir / LATEST_NAME)
        meta, state = load_checkpoint(run_dir)
        cfg = config_of_checkpoint(meta, source)
        updates = {}
        if days is not None:
            updates["days"] = float(days)
        if backend is not None:
            updates["backend"] = backend
        if threads is not None:
            updates["threads"] = threads
        if updates:
            cfg = _with_overrides(cfg, [f"run.{k}={_lit(v)}" for k, v in updates.items()])
        check_resumable(run_dir / "run.h5", _anatomy_from_state(state, cfg))
        info = ensure_backend(cfg)
        model, sim = _restored(cfg, state, run_dir, info.name, source, resume=True, progress=progress)
        if model.clock.time_h >= cfg.run.days * 24.0 - 1e-9:
            log.warning("the checkpoint is already at day %.2f >= run.days = %.2f: no step to take, only the "
                        "final state is written; pass --days to run longer", model.clock.time_h / 24, cfg.run.days)
        _write_text_atomic(run_dir / "config.toml", cfg.to_toml())
        status = _run_until_done(sim, run_dir)
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

    Like a run, everything is checked and the model restored before ``new_dir`` is created.

    Raises
    ------
    ConfigError
        A change outside the branchable set, or a dose before the branch time.
    CheckpointError
        No checkpoint at ``at_day`` (the message lists the days that have one).
    """
    from .output.checkpointer import LATEST_NAME, checkpoint_at_day, load_checkpoint

    src_dir, new_dir = Path(src_dir), Path(new_dir)
    _check_new_dir(new_dir, "NEW_DIR")
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
    model, sim = _restored(cfg, state, new_dir, info.name, str(source), resume=False, progress=progress)
    run_meta = sim.output_writers["run"].meta
    run_meta["branched_from"] = str(src_dir.resolve())
    run_meta["branch_time_h"] = t_branch_h
    run_meta["branch_checkpoint"] = f"checkpoint_{int(state['model']['clock']['iteration']):09d}.h5"
    with _claim_new_dir(new_dir, "branch", "NEW_DIR"):
        _write_text_atomic(new_dir / "config.toml", cfg.to_toml())
        status = _run_until_done(sim, new_dir)
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
