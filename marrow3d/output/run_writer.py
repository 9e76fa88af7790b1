"""``DIR/run.h5``: metadata, anatomy, snapshots, time series and the final state.

All datasets are created when the run starts; the file then switches to SWMR mode so a viewer
can read the growing time series while the run writes it. On resume the file is cut back to
the checkpoint's step (time series rows and snapshots after it are dropped) so a resumed run
produces the same file as a direct one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .runfile import write_anatomy, write_meta

__all__ = ["RunWriter", "RUN_FILE_NAME"]

log = logging.getLogger(__name__)

RUN_FILE_NAME = "run.h5"
_TS_CHUNK = 1024
#: /meta attributes rewritten when a run ends (after a resume they describe the last leg).
_LAST_LEG_KEYS = ("kernel_compiler", "git_commit", "python_version", "numpy_version", "scipy_version",
                  "h5py_version", "pydantic_version", "hdf5_version", "host", "platform", "command_line")


class RunWriter:
    """Output writer for ``run.h5``.

    Parameters
    ----------
    directory : Path
        Run directory.
    snapshot_schedule : schedule
        When to snapshot fields.
    snapshot_fields : list of str
        Names understood by ``model.snapshot_arrays``.
    meta : dict
        ``config_toml``, ``seed``, ``backend`` and extra attributes for ``/meta``.
    precision : str
        Storage dtype of float snapshots (``float32`` or ``float16``).
    compression_level : int
        gzip level of snapshots (0 = none).
    """

    def __init__(self, directory: Path, snapshot_schedule, snapshot_fields: list[str], meta: dict[str, Any],
                 precision: str = "float32", compression_level: int = 3, resume: bool = False) -> None:
        self.directory = Path(directory)
        self.path = self.directory / RUN_FILE_NAME
        self.schedule = snapshot_schedule
        self.snapshot_fields = list(snapshot_fields)
        self.meta = dict(meta)
        self.precision = np.dtype(precision)
        self.compression_level = compression_level
        self.resume = resume
        self._h5: h5py.File | None = None
        self._ts_written = 0

    # ------------------------------------------------------------------ helpers
    def _opts(self) -> dict[str, Any]:
        if not self.compression_level:
            return {}
        return {"compression": "gzip", "compression_opts": self.compression_level, "shuffle": True}

    def _chunks(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        # about 1 MiB of float32 per chunk, one snapshot per chunk along time
        zyx = tuple(min(s, 64) for s in shape)
        return (1, *zyx)

    def _create(self, model) -> None:
        meta = self.meta
        h5 = h5py.File(self.path, "w", libver="latest")
        write_meta(h5, config_toml=meta["config_toml"], seed=meta["seed"], backend=meta["backend"],
                   extra={k: v for k, v in meta.items() if k not in ("config_toml", "seed", "backend")})
        write_anatomy(h5, model.anatomy, self.compression_level)
        shape = model.anatomy.shape
        ts = h5.create_group("timeseries")
        for name, unit in model.metric_units().items():
            ds = ts.create_dataset(name, shape=(0,), maxshape=(None,), dtype="f8", chunks=(_TS_CHUNK,))
            ds.attrs["units"] = unit
        snaps = h5.create_group("snapshots")
        snaps.create_dataset("time_h", shape=(0,), maxshape=(None,), dtype="f8", chunks=(64,))
        snaps.create_dataset("iteration", shape=(0,), maxshape=(None,), dtype="i8", chunks=(64,))
        for name in self.snapshot_fields:
            if not model.has_array(name):
                continue
            dtype = model.array_dtype(name)
            store = self.precision if np.issubdtype(dtype, np.floating) else dtype
            ds = snaps.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), dtype=store,
                                      chunks=self._chunks(shape), **self._opts())
            ds.attrs["units"] = model.array_units(name)
        self._h5 = h5

    def _reopen_for_resume(self, model) -> None:
        if not self.path.exists():
            self._create(model)
            return
        try:
            h5 = h5py.File(self.path, "a", libver="latest")
        except OSError as exc:
            if "already open for write" not in str(exc):
                raise
            # A writer killed in SWMR mode leaves the superblock flagged "open for write";
            # HDF5 then refuses read-write opens (h5clear would be needed). SWMR readers still
            # see a consistent file: copy it into a fresh one and continue from that.
            log.warning("%s was left open by a killed run: recovering it through a SWMR read", self.path)
            _recover_swmr_file(self.path)
            h5 = h5py.File(self.path, "a", libver="latest")
        it = model.clock.iteration
        n = len(model.history_time())
        for name in h5["timeseries"]:
            h5["timeseries"][name].resize((n,))
        snaps = h5["snapshots"]
        keep = int(np.count_nonzero(snaps["iteration"][()] <= it))
        for name in snaps:
            ds = snaps[name]
            ds.resize((keep, *ds.shape[1:]))
        self._h5 = h5
        self._ts_written = 0  # rewrite the whole series from the checkpoint's history
        self._flush_timeseries(model)

    # ------------------------------------------------------------------ writer protocol
    def initialize(self, simulation) -> None:
        model = simulation.model
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.resume:
            self._reopen_for_resume(model)
        else:
            self._create(model)
            self._flush_timeseries(model)
            if self.snapshot_fields and not isinstance(self.schedule, type(None)):
                self._snapshot(model)
        self._h5.swmr_mode = True

    def _flush_timeseries(self, model) -> None:
        history = model.history_arrays()
        n = len(next(iter(history.values()))) if history else 0
        if n <= self._ts_written and self._ts_written:
            return
        ts = self._h5["timeseries"]
        for name, values in history.items():
            ds = ts[name]
            ds.resize((n,))
            ds[self._ts_written:n] = values[self._ts_written:n]
            ds.flush()
        self._ts_written = n

    def _snapshot(self, model) -> None:
        snaps = self._h5["snapshots"]
        k = snaps["time_h"].shape[0]
        for name in ("time_h", "iteration"):
            snaps[name].resize((k + 1,))
        snaps["time_h"][k] = model.clock.time_h
        snaps["iteration"][k] = model.clock.iteration
        for name in self.snapshot_fields:
            if name not in snaps:
                continue
            ds = snaps[name]
            ds.resize((k + 1, *ds.shape[1:]))
            ds[k] = model.get_array(name).astype(ds.dtype, copy=False)
            ds.flush()
        snaps["time_h"].flush()
        snaps["iteration"].flush()

    def write(self, simulation) -> None:
        model = simulation.model
        self._flush_timeseries(model)
        self._snapshot(model)

    def finalize(self, simulation, ok: bool = True) -> None:
        if self._h5 is None:
            return
        model = simulation.model
        try:
            self._flush_timeseries(model)
        finally:
            self._h5.close()
            self._h5 = None
        # SWMR forbids new objects and attribute changes: the final state goes in after it.
        with h5py.File(self.path, "a") as h5:
            if "state" in h5:
                del h5["state"]
            state = h5.create_group("state")
            shape = model.anatomy.shape
            for path, (dtype, units) in model.final_state_spec().items():
                ds = state.create_dataset(path, data=model.get_array(path).astype(dtype, copy=False),
                                          chunks=self._chunks(shape)[1:], **self._opts())
                ds.attrs["units"] = units
            state.attrs["iteration"] = np.int64(model.clock.iteration)
            state.attrs["time_h"] = float(model.clock.time_h)
            state.attrs["complete"] = bool(ok)
            # A resumed run may have extended run.days, or run with another marrow3d, on another
            # host: /meta describes the leg that ran last.
            for key in ("config_toml", "marrow3d_version", *_LAST_LEG_KEYS):
                if key in self.meta:
                    h5["meta"].attrs[key] = self.meta[key]

    def prognostic_state(self) -> dict:
        return {"schedule": self.schedule.prognostic_state()}

    def restore_prognostic_state(self, state: dict) -> None:
        self.schedule.restore_prognostic_state(state["schedule"])


def _recover_swmr_file(path: Path) -> None:
    """Rewrite ``path`` (left flagged by a killed SWMR writer) from a SWMR read of it."""
    import os

    tmp = path.with_name(f".{path.name}.recover-{os.getpid()}")
    try:
        with h5py.File(path, "r", swmr=True) as src, h5py.File(tmp, "w", libver="latest") as dst:
            for key, value in src.attrs.items():
                dst.attrs[key] = value
            for name in src:
                src.copy(src[name], dst, name=name)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
