"""``DIR/run.h5``: metadata, anatomy, snapshots, time series and the final state.

All datasets are created when the run starts, in a temporary file that is renamed to
``run.h5`` once it is in SWMR mode, so a viewer can read the growing time series while the
run writes it. On resume a new file is built the same way from the old one's kept part (the
old file is only read): time-series rows and snapshots after the checkpoint's step are
dropped, so a resumed run produces the same file as a direct one, and a resume that fails
before the rename leaves the old file byte for byte as it was. Every dataset carries a
Fletcher-32 checksum; a failed write (disk full) closes the file without writing more.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import CheckpointError, OutputError
from .checkpointer import fsync_dir
from .h5access import WRITE_OPTIONS, abandon, open_for_reading, write_failure
from .integrity import write_record
from .model_state import ModelArrays
from .runfile import write_anatomy, write_meta

__all__ = ["RunWriter", "RUN_FILE_NAME", "RECORD_SCOPE", "check_resumable"]

#: The part of run.h5 its checksum record (/meta@integrity) covers: what does not grow.
RECORD_SCOPE = ["/meta", "/anatomy"]

log = logging.getLogger(__name__)

RUN_FILE_NAME = "run.h5"
#: Environment hook for the crash tests: seconds to pause in the final /state write (after the
#: datasets, before the file is closed), so a test can kill -9 the process there.
_FINAL_PAUSE_ENV = "MARROW3D_TEST_FINAL_STATE_PAUSE_S"
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
        Array names of :class:`~marrow3d.output.model_state.ModelArrays`.
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
        # Fletcher-32 on every chunk: a damaged chunk is an error on read, never wrong numbers.
        if not self.compression_level:
            return {"fletcher32": True}
        return {"compression": "gzip", "compression_opts": self.compression_level, "shuffle": True,
                "fletcher32": True}

    def _chunks(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        # about 1 MiB of float32 per chunk, one snapshot per chunk along time
        zyx = tuple(min(s, 64) for s in shape)
        return (1, *zyx)

    def _fill_new(self, h5: h5py.File, model) -> None:
        """Meta, anatomy, empty growing datasets, the first time-series rows and snapshot."""
        meta = self.meta
        write_meta(h5, config_toml=meta["config_toml"], seed=meta["seed"], backend=meta["backend"],
                   extra={k: v for k, v in meta.items() if k not in ("config_toml", "seed", "backend")})
        write_anatomy(h5, model.anatomy, self.compression_level)
        shape = model.anatomy.shape
        ts = h5.create_group("timeseries")
        for name, unit in model.metrics.units().items():
            _create_column(ts, name, unit)
        arrays = ModelArrays(model)
        snaps = h5.create_group("snapshots")
        snaps.create_dataset("time_h", shape=(0,), maxshape=(None,), dtype="f8", chunks=(64,), fletcher32=True)
        snaps.create_dataset("iteration", shape=(0,), maxshape=(None,), dtype="i8", chunks=(64,), fletcher32=True)
        for name in self.snapshot_fields:
            if not arrays.has(name):
                continue
            dtype = arrays.dtype(name)
            store = self.precision if np.issubdtype(dtype, np.floating) else dtype
            ds = snaps.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), dtype=store,
                                      chunks=self._chunks(shape), **self._opts())
            ds.attrs["units"] = arrays.units(name)
        self._h5 = h5
        self._flush_timeseries(model)
        if self.snapshot_fields and not isinstance(self.schedule, type(None)):
            self._snapshot(model)

    def _fill_resumed(self, h5: h5py.File, model) -> None:
        """The kept part of the old run.h5 (read-only), cut back to the checkpoint's step."""
        src, _ = open_for_reading(self.path, lock_held=True)
        with src:
            for key, value in src.attrs.items():
                h5.attrs[key] = value
            for name in src:
                if name != "state":  # the final state is written again at the end
                    src.copy(src[name], h5, name=name)
        it = model.clock.iteration
        ts = h5.require_group("timeseries")
        units = model.metrics.units()
        for name in units:
            if name not in ts:  # a readout this marrow3d adds: rewritten from the checkpoint's history
                _create_column(ts, name, units[name])
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
        """Build run.h5 in a temporary file and rename it into place once it is in SWMR mode.

        A new run's file, and a resumed run's file (the old one's kept part, copied: the old
        file is only read), appear under their name complete, so a failure or a kill here
        leaves the directory as it was.
        """
        model = simulation.model
        for stale in self.directory.glob(f".{RUN_FILE_NAME}.tmp-*"):  # a killed writer's, never published
            try:
                stale.unlink()
            except OSError:
                pass
        tmp = self.path.with_name(f".{RUN_FILE_NAME}.tmp-{os.getpid()}")
        h5 = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)  # the runner made it; a library user may not
            h5 = h5py.File(tmp, "w", libver="latest", **WRITE_OPTIONS)
            if self.resume and self.path.exists():
                self._fill_resumed(h5, model)
            else:
                self._fill_new(h5, model)
            write_record(h5, RECORD_SCOPE)
            h5.swmr_mode = True
            os.replace(tmp, self.path)
            fsync_dir(self.directory)
        except (OSError, RuntimeError) as exc:
            abandon(h5)
            self._h5 = None
            raise OutputError(f"cannot write {str(self.path)!r}: {write_failure(exc)}") from None
        finally:
            if tmp.exists():
                tmp.unlink()
        self._h5 = h5

    def _flush_timeseries(self, model) -> None:
        history = model.metrics.history_arrays()
        n = len(next(iter(history.values()))) if history else 0
        if n <= self._ts_written and self._ts_written:
            return
        ts = self._h5["timeseries"]
        # Per-dataset flushes make rows visible to SWMR readers; before SWMR mode they are not
        # needed (and HDF5 2.0 fails them on datasets just copied from another file).
        swmr = self._h5.swmr_mode
        for name, values in history.items():
            ds = ts[name]
            ds.resize((n,))
            ds[self._ts_written:n] = values[self._ts_written:n]
            if swmr:
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
            ds[k] = ModelArrays(model).get(name).astype(ds.dtype, copy=False)
            if self._h5.swmr_mode:
                ds.flush()
        if self._h5.swmr_mode:
            snaps["time_h"].flush()
            snaps["iteration"].flush()

    def write(self, simulation) -> None:
        model = simulation.model
        try:
            self._flush_timeseries(model)
            self._snapshot(model)
        except (OSError, RuntimeError) as exc:
            self._give_up(exc, f"at step {model.clock.iteration}")

    def _give_up(self, exc: BaseException, when: str) -> None:
        abandon(self._h5)
        self._h5 = None
        raise OutputError(f"cannot write {str(self.path)!r} {when}: {write_failure(exc)}") from None

    def abort(self) -> None:
        """Close run.h5 after another writer failed, writing nothing more (no final state)."""
        if self._h5 is None:
            return
        h5, self._h5 = self._h5, None
        try:
            h5.close()
        except (OSError, RuntimeError):
            abandon(h5)

    def finalize(self, simulation, ok: bool = True) -> None:
        if self._h5 is None:
            return
        model = simulation.model
        try:
            self._flush_timeseries(model)
            self._h5.close()
        except (OSError, RuntimeError) as exc:
            self._give_up(exc, "at the end of the run")
        self._h5 = None
        # SWMR forbids new objects and attribute changes: the final state goes in after it.
        h5 = None
        try:
            # No HDF5 lock: readers may hold the file (their locks must not stop this write);
            # the run directory's writer lock keeps other writers out.
            h5 = h5py.File(self.path, "a", locking=False, **WRITE_OPTIONS)
            if "state" in h5:
                del h5["state"]
            state = h5.create_group("state")
            shape = model.anatomy.shape
            arrays = ModelArrays(model)
            for path, (dtype, units) in arrays.final_state_spec().items():
                ds = state.create_dataset(path, data=arrays.get(path).astype(dtype, copy=False),
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
            write_record(h5, RECORD_SCOPE)
            pause = float(os.environ.get(_FINAL_PAUSE_ENV, "0") or 0)
            if pause > 0:  # test hook: lets a test kill -9 the process mid-write
                time.sleep(pause)
            h5.close()
        except (OSError, RuntimeError) as exc:
            abandon(h5)
            raise OutputError(f"cannot write the final state into {str(self.path)!r}: {write_failure(exc)}") from None

    def prognostic_state(self) -> dict:
        return {"schedule": self.schedule.prognostic_state()}

    def restore_prognostic_state(self, state: dict) -> None:
        self.schedule.restore_prognostic_state(state["schedule"])


def _create_column(ts: h5py.Group, name: str, unit: str) -> None:
    ds = ts.create_dataset(name, shape=(0,), maxshape=(None,), dtype="f8", chunks=(_TS_CHUNK,), fletcher32=True)
    ds.attrs["units"] = unit


def check_resumable(path: Path, anatomy) -> None:
    """Check, reading only, that ``run.h5`` can be continued from a checkpoint of ``anatomy``.

    Raises
    ------
    CheckpointError
        The file cannot be read, is not a run file, or belongs to another run (anatomy).
    """
    if not path.exists():
        return  # a resumed run writes a new file (time series from the checkpoint's history)
    fix = f"move {str(path)!r} away to resume with a new run.h5 (time series from the checkpoint, no earlier snapshots)"
    try:
        h5, _ = open_for_reading(path, lock_held=True)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}; {fix}") from None
    try:
        with h5:
            for name in ("meta", "anatomy/tissue", "timeseries", "snapshots/iteration"):
                if name not in h5:
                    raise CheckpointError(f"{str(path)!r} has no /{name}: not a complete run file; {fix}")
            grid = tuple(h5["anatomy/tissue"].shape)
            if grid != tuple(anatomy.shape):
                raise CheckpointError(f"{str(path)!r} has a {grid} grid but the checkpoint's is "
                                      f"{tuple(anatomy.shape)}: it belongs to another run; {fix}")
            stored = h5["meta"].attrs.get("anatomy_fingerprint")
            if stored is not None and stored != anatomy.fingerprint():
                raise CheckpointError(f"{str(path)!r} records another anatomy than the checkpoint's: it "
                                      f"belongs to another run; {fix}")
            h5["snapshots/iteration"][()]
            for name in h5["snapshots"]:
                if h5["snapshots"][name].shape[1:] not in ((), grid):
                    raise CheckpointError(f"{str(path)!r}: /snapshots/{name} has shape "
                                          f"{h5['snapshots'][name].shape}; its snapshots must be {grid}; {fix}")
    except CheckpointError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError) as exc:
        raise CheckpointError(f"{str(path)!r} cannot be read: {' '.join(str(exc).split())}; {fix}") from None
