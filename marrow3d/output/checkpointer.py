"""Atomic, checksummed HDF5 checkpoints that resume bit-for-bit.

Each checkpoint is written to a temporary file in the run directory, checksummed (every
dataset and attribute: :mod:`marrow3d.output.integrity`), flushed, fsynced and renamed into
place (``os.replace``); then ``checkpoint.h5`` is atomically pointed at it (a hard link swapped
in by rename) and the directory is fsynced. A crash at any moment, or a full disk, leaves the
previous complete checkpoint readable under ``checkpoint.h5``.

Keep policy: the newest ``keep`` checkpoints roll (older ones are deleted once a newer one is
complete); *archived* checkpoints (``/meta@archived``), written on the archive schedule (e.g.
with every snapshot) or all of them, are never deleted. They are the branch points of
``marrow3d branch --at-day`` (:func:`list_checkpoints`, :func:`checkpoint_at_day`).

:func:`load_checkpoint` verifies the checksums, the layout and the content
(:mod:`marrow3d.output.state_checks`) before it returns anything.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import CheckpointError, OutputError
from .h5access import WRITE_OPTIONS, abandon, open_for_reading, write_failure
from .h5tree import read_tree, write_tree
from .integrity import IntegrityProblem, verify_record, write_record
from .runfile import SCHEMA_VERSION, now_iso
from .state_checks import check_checkpoint_state

__all__ = ["Checkpointer", "load_checkpoint", "LATEST_NAME", "REQUIRED_STATE", "CheckpointInfo", "list_checkpoints",
           "checkpoint_at_day"]

log = logging.getLogger(__name__)

LATEST_NAME = "checkpoint.h5"
#: Environment hook for the crash test: seconds to pause mid-write (after the data, before rename).
_PAUSE_ENV = "MARROW3D_TEST_CHECKPOINT_PAUSE_S"
#: Datasets every checkpoint must hold (paths under /state); shapes are checked on restore.
REQUIRED_STATE = (
    "model/anatomy/tissue",
    "model/anatomy/niche",
    "model/cells/cells",
    "model/vessel_integrity",
    "model/fields/oxygen",
    "model/fields/signal",
    "model/cells/flags",
    "model/cells/generation",
    "model/cells/counters",
    "model/cells/auc",
    "model/cells/step_index",
    "model/cells/seed",
    "model/clock",
    "model/history/time_h",
)
#: Per-voxel datasets (paths under /state): each must have the shape of model/anatomy/tissue.
_VOXEL_STATE = ("model/anatomy/niche", "model/cells/cells", "model/cells/flags", "model/cells/generation",
                "model/vessel_integrity")
#: Per-voxel datasets that older checkpoints lack: the anatomy's initial vessel integrity.
_OPTIONAL_VOXEL_STATE = ("model/anatomy/integrity",)


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename inside it is durable (best effort: some filesystems refuse)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _Trigger:
    """The checkpointer's schedule: the regular one, or the archive schedule (whose hits are kept).

    Both are polled every step (so both stay in step); ``archive_hit`` tells the checkpointer
    whether the checkpoint of this step is archived.
    """

    def __init__(self, regular, archive) -> None:
        self.regular = regular
        self.archive = archive
        self.archive_hit = False

    def prime(self, model) -> None:
        for s in (self.regular, self.archive):
            if hasattr(s, "prime"):
                s.prime(model)

    def __call__(self, model) -> bool:
        regular = self.regular(model)
        self.archive_hit = bool(self.archive(model))
        return regular or self.archive_hit


class Checkpointer:
    """An output writer that saves the whole simulation state and picks it up again.

    Parameters
    ----------
    directory : Path
        The run directory.
    schedule : schedule
        When to write (e.g. ``TimeInterval(168)``); a checkpoint is always written at the end.
    keep : int
        Number of newest checkpoint files kept (older ones are deleted after a newer one is
        complete), archived ones apart.
    meta : dict
        Attributes stored in ``/meta`` of each checkpoint (config TOML, seed, backend, versions).
    archive : schedule, optional
        Also write a checkpoint when this schedule acts (e.g. the snapshot schedule), and keep
        those for good. With ``archive_initial`` the state at t = 0 is archived too.
    keep_all : bool
        Keep every checkpoint written (all are archived).
    """

    def __init__(self, directory: Path, schedule, keep: int = 2, meta: dict[str, Any] | None = None,
                 archive=None, *, archive_initial: bool = False, keep_all: bool = False) -> None:
        from ..schedules import Never

        self.directory = Path(directory)
        self.schedule = _Trigger(schedule, archive if archive is not None else Never())
        self.keep = keep
        self.meta = dict(meta or {})
        self.archive_initial = archive_initial
        self.keep_all = keep_all
        self.written: list[Path] = []

    # writer protocol --------------------------------------------------------------
    def initialize(self, simulation) -> None:
        """Clear a killed writer's temporary files and checkpoint the starting state.

        The first checkpoint is written before the first step (unless the run starts from
        this very checkpoint, as a resume does), so a run killed at any later moment can be
        continued with ``marrow3d resume``.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        # Temporary files of a writer that was killed mid-write: never complete, never read.
        for stale in self.directory.glob(".checkpoint*.tmp-*"):
            try:
                stale.unlink()
            except OSError:
                pass
        self.written = [c.path for c in list_checkpoints(self.directory) if not c.archived]
        it = simulation.model.clock.iteration
        if self.archive_initial and it == 0:
            self._write(simulation, self.directory / f"checkpoint_{0:09d}.h5", latest=True, archived=True)
        elif not self._is_latest(it):
            self.write(simulation)

    def _is_latest(self, iteration: int) -> bool:
        latest = self.directory / LATEST_NAME
        target = self.directory / f"checkpoint_{iteration:09d}.h5"
        return latest.exists() and target.exists() and os.path.samefile(latest, target)

    def abort(self) -> None:
        """Another writer failed: write nothing more (the last checkpoint stays the latest)."""

    def write(self, simulation) -> Path:
        it = simulation.model.clock.iteration
        archived = self.keep_all or self.schedule.archive_hit
        return self._write(simulation, self.directory / f"checkpoint_{it:09d}.h5", latest=True, archived=archived)

    def finalize(self, simulation, ok: bool = True) -> None:
        if ok and not self._is_latest(simulation.model.clock.iteration):
            self.write(simulation)

    def write_diagnostic(self, simulation) -> Path:
        """State at a failure (NaN/Inf), for inspection; never becomes ``checkpoint.h5``."""
        return self._write(simulation, self.directory / "diagnostic.h5", latest=False, diagnostic=True)

    def prognostic_state(self) -> dict:
        return {"schedule": self.schedule.regular.prognostic_state(),
                "archive": self.schedule.archive.prognostic_state()}

    def restore_prognostic_state(self, state: dict) -> None:
        self.schedule.regular.restore_prognostic_state(state["schedule"])
        archive = state.get("archive")
        if archive is not None and archive.get("kind") == self.schedule.archive.prognostic_state().get("kind"):
            self.schedule.archive.restore_prognostic_state(archive)
        # else: a checkpoint from before the archive schedule, or a branch that changed the
        # policy: the archive schedule starts from the current time (primed by the loop).

    # atomic write -----------------------------------------------------------------
    def _write(self, simulation, path: Path, latest: bool, archived: bool = False,
               diagnostic: bool = False) -> Path:
        t0 = time.perf_counter()
        state = simulation.prognostic_state()
        clock = simulation.model.clock
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        h5 = None
        try:
            # v110 or later: object headers carry HDF5's own metadata checksums too.
            h5 = h5py.File(tmp, "w", libver="v110", **WRITE_OPTIONS)
            meta = h5.create_group("meta")
            meta.attrs["kind"] = "checkpoint"
            meta.attrs["schema_version"] = SCHEMA_VERSION
            meta.attrs["created"] = now_iso()
            meta.attrs["iteration"] = np.int64(clock.iteration)
            meta.attrs["time_h"] = float(clock.time_h)
            meta.attrs["archived"] = bool(archived)
            if diagnostic:
                meta.attrs["diagnostic"] = True
            for k, v in self.meta.items():
                meta.attrs[k] = v
            written: dict[str, np.ndarray] = {}
            write_tree(h5.create_group("state"), state, written=written)
            h5.flush()
            write_record(h5, arrays=written)  # datasets from memory, attributes as stored
            pause = float(os.environ.get(_PAUSE_ENV, "0") or 0)
            if pause > 0:  # test hook: lets a test kill -9 the process mid-write
                time.sleep(pause)
            h5.close()
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except (OSError, RuntimeError, IntegrityProblem) as exc:
            abandon(h5)
            raise OutputError(
                f"cannot write the checkpoint {str(path)!r} at step {clock.iteration}: {write_failure(exc)}"
            ) from None
        finally:
            if tmp.exists():
                tmp.unlink()
        if latest:
            link_tmp = self.directory / f".{LATEST_NAME}.tmp-{os.getpid()}"
            try:
                if link_tmp.exists():
                    link_tmp.unlink()
                try:
                    os.link(path, link_tmp)
                except OSError:  # filesystems without hard links: copy, still renamed atomically
                    import shutil

                    shutil.copyfile(path, link_tmp)
                os.replace(link_tmp, self.directory / LATEST_NAME)
            except OSError as exc:
                if link_tmp.exists():
                    link_tmp.unlink()
                raise OutputError(
                    f"cannot make {str(path)!r} the latest checkpoint: {write_failure(exc)}"
                ) from None
            fsync_dir(self.directory)
            if archived:
                if path in self.written:
                    self.written.remove(path)
            elif path not in self.written:
                self.written.append(path)
            self._prune()
        log.debug("checkpoint %s written in %.3f s", path.name, time.perf_counter() - t0)
        return path

    def _prune(self) -> None:
        """Delete the oldest rolling checkpoints beyond ``keep`` (archived ones are not in the list).

        The newest checkpoint is never deleted, even when it is archived and ``keep`` rolling
        ones are older: ``keep`` counts rolling files only.
        """
        while len(self.written) > self.keep:
            old = self.written.pop(0)
            try:
                old.unlink()
            except FileNotFoundError:
                pass


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint file in a run directory, from its ``/meta`` (no state is read)."""

    path: Path
    iteration: int
    time_h: float
    archived: bool

    @property
    def day(self) -> float:
        return self.time_h / 24.0


def list_checkpoints(directory: str | Path) -> list[CheckpointInfo]:
    """The readable ``checkpoint_<iteration>.h5`` files of a run directory, oldest first.

    Files that cannot be opened or are not marrow3d checkpoints are left out (``load_checkpoint``
    names their problem when one is asked for).
    """
    out = []
    for path in sorted(Path(directory).glob("checkpoint_*.h5")):
        try:
            with h5py.File(path, "r") as h5:
                attrs = h5["meta"].attrs
                if attrs.get("kind") != "checkpoint":
                    continue
                out.append(CheckpointInfo(path, int(attrs["iteration"]), float(attrs["time_h"]),
                                          bool(attrs.get("archived", False))))
        except (OSError, KeyError, ValueError):
            continue
    return sorted(out, key=lambda c: c.iteration)


def checkpoint_at_day(directory: str | Path, day: float) -> Path:
    """The checkpoint of ``directory`` at simulated day ``day`` (within a millisecond).

    Raises
    ------
    CheckpointError
        No checkpoint at that day; the message lists the days that have one.
    """
    found = list_checkpoints(directory)
    for c in found:
        if abs(c.time_h - 24.0 * float(day)) <= 1e-6:
            return c.path
    days = ", ".join(f"{c.day:g}" for c in found) or "none"
    raise CheckpointError(
        f"{str(directory)!r} has no checkpoint at day {day:g} (checkpoints at days: {days}); "
        f"set output.checkpoints_archive = \"snapshots\" in a run to keep one with every snapshot"
    )


def load_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Open and verify a checkpoint; return ``(meta, state)``.

    Accepts a run directory (reads its ``checkpoint.h5``) or a checkpoint file. Verified, in
    this order: an HDF5 file, ``/meta@kind``, ``schema_version``, the checksum of every
    dataset and attribute, the presence and shapes of the datasets a resume needs, then the
    content (:func:`marrow3d.output.state_checks.check_checkpoint_state`: the config text,
    clock, time series, codes and ranges).

    Raises
    ------
    CheckpointError
        Missing, truncated, corrupted or foreign file, another schema version, a checksum
        mismatch, missing data or out-of-range content; the message names the file and the
        problem.
    """
    p = Path(path)
    if p.is_dir():
        p = p / LATEST_NAME
    if not p.exists():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist")
    if not p.is_file():  # a FIFO would block the read
        raise CheckpointError(f"checkpoint {str(p)!r} is not a regular file")
    if not h5py.is_hdf5(p):
        raise CheckpointError(f"checkpoint {str(p)!r} is not an HDF5 file (truncated or foreign)")
    try:
        h5, _ = open_for_reading(p)
    except CheckpointError as exc:
        raise CheckpointError(f"checkpoint {exc}") from None
    try:
        with h5:
            if "meta" not in h5 or h5["meta"].attrs.get("kind") != "checkpoint":
                raise CheckpointError(f"{str(p)!r} is an HDF5 file but not a marrow3d checkpoint (no /meta kind=checkpoint)")
            meta = read_tree(h5["meta"])
            try:
                version = int(meta.get("schema_version", -1))
            except (TypeError, ValueError):
                version = -1
            if version != SCHEMA_VERSION:
                raise CheckpointError(
                    f"checkpoint {str(p)!r} has schema_version {meta.get('schema_version')}; "
                    f"this marrow3d reads {SCHEMA_VERSION}"
                )
            if "state" not in h5:
                raise CheckpointError(f"checkpoint {str(p)!r} has no /state group")
            for req in REQUIRED_STATE:
                if req not in h5["state"]:
                    raise CheckpointError(f"checkpoint {str(p)!r} is missing dataset /state/{req}")
            grid = h5["state/model/anatomy/tissue"].shape
            voxel = [*_VOXEL_STATE, *(f"model/fields/{k}" for k in h5["state/model/fields"]),
                     *(name for name in _OPTIONAL_VOXEL_STATE if name in h5["state"])]
            for name in voxel:
                shape = h5["state"][name].shape
                if shape != grid:
                    raise CheckpointError(
                        f"checkpoint {str(p)!r}: dataset /state/{name} has shape {shape}, the grid "
                        f"(/state/model/anatomy/tissue) is {grid}"
                    )
            datasets: dict[str, np.ndarray] = {}
            try:
                state = read_tree(h5["state"], datasets=datasets)
                if not verify_record(h5, arrays=datasets):  # checksums of what was just read
                    log.warning("checkpoint %s has no checksums (written by an older marrow3d): content "
                                "checks only", p)
            except (IntegrityProblem, OSError) as exc:
                raise CheckpointError(f"checkpoint {str(p)!r} is damaged: {' '.join(str(exc).split())}") from None
    except CheckpointError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {str(p)!r} cannot be read: {' '.join(str(exc).split())}") from None
    check_checkpoint_state(meta, state, str(p), diagnostic=bool(meta.get("diagnostic", False)))
    return meta, state
