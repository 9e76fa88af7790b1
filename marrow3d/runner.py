"""Entry points that assemble a run: backend, anatomy, model, simulation and writers.

``run_simulation`` (``marrow3d run``), ``resume_run`` (``marrow3d resume``) and ``branch_run``
(``marrow3d branch``) are what the CLI and the sweep workers call.
"""

from __future__ import annotations

import datetime as _dt
import logging
from pathlib import Path

from .config import SimulationConfig, config_from_toml_text
from .errors import ConfigError

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
                     stop_time_h: float | None = None, progress: bool = True):
    """A Simulation with the run-file writer and the checkpointer of ``cfg.output``."""
    from . import __version__
    from .output.checkpointer import Checkpointer
    from .output.run_writer import RunWriter
    from .schedules import AnyOf, Never, TimeInterval, WallTimeInterval
    from .simulation import Simulation

    out = cfg.output
    meta = {
        "config_toml": cfg.to_toml(),
        "seed": int(cfg.run.seed),
        "backend": backend_name,
        "marrow3d_version": __version__,
        "anatomy_fingerprint": model.anatomy.fingerprint(),
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
    sim.add_writer("checkpoint", Checkpointer(out_dir, sched, keep=out.checkpoints_keep, meta=meta))
    return sim


def _prepare_new_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {str(out_dir)!r} exists and is not a directory")
    if (out_dir / "run.h5").exists() or (out_dir / "checkpoint.h5").exists():
        raise ConfigError(
            f"{str(out_dir)!r} already holds a run; continue it with `marrow3d resume {out_dir}` or choose another --out"
        )
    out_dir.mkdir(parents=True, exist_ok=True)


def run_simulation(cfg: SimulationConfig, out_dir: Path | None = None, *, progress: bool = True):
    """Run ``cfg`` from t = 0 into ``out_dir`` (default ``runs/<timestamp>``).

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
    log.info("backend %s; grid %s", info.name, "x".join(map(str, shape)))
    _prepare_new_dir(out_dir)
    (out_dir / "config.toml").write_text(cfg.to_toml(), encoding="utf-8")
    model = make_model(cfg, out_dir)
    sim = build_simulation(model, cfg, out_dir, info.name, progress=progress)
    status = sim.run()
    return RunResult(out_dir, status)


def _grid_shape(cfg: SimulationConfig):
    if cfg.domain.kind == "mask":
        from .anatomy.mask_io import mask_shape

        return mask_shape(cfg.domain.mask_path)
    return tuple(cfg.domain.shape_voxels)


class RunResult:
    """Where a run wrote its output and how it ended."""

    def __init__(self, directory: Path, status) -> None:
        self.directory = Path(directory)
        self.status = status

    def __str__(self) -> str:
        s = self.status
        return (f"{self.directory} ({s.reason}: step {s.iteration}, day {s.time_h / 24:.2f}, "
                f"{s.wall_s:.1f} s wall)")

    __repr__ = __str__


def config_of_checkpoint(meta: dict, source: str) -> SimulationConfig:
    """The resolved config stored in a checkpoint's ``/meta``."""
    text = meta.get("config_toml")
    if not text:
        raise ConfigError(f"{source} holds no config_toml")
    return config_from_toml_text(text, f"config stored in {source}")
