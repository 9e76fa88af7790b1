"""``RunData``: one ``run.h5``, checkpoint or diagnostic file, opened read-only.

The layout is documented in ``docs/file-format.md``. Files are opened by
:func:`marrow3d.output.h5access.open_for_reading`: never with a lock (a reader cannot block a
run), as a SWMR reader while a live run writes the file (every read refreshes the growing
datasets and trims the time series to the rows all columns have), and through a recovered
view when a killed writer left the file flagged open. A damaged or truncated file gives a
:class:`~marrow3d.errors.CheckpointError` naming the file and the dataset, never a hang or a
raw HDF5 error.
"""

from __future__ import annotations

import functools
import logging
import operator
from functools import cached_property
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from ..errors import CheckpointError, Marrow3DError
from ..output.h5access import open_for_reading
from ..output.integrity import IntegrityProblem, verify_record
from ..output.runfile import SCHEMA_VERSION
from . import spatial
from .backends import ArrayBackend, get_backend

__all__ = ["open_run", "RunData", "RunDataError", "resolve_run_file", "FIELD_NAMES", "LODGED_FLAG"]

log = logging.getLogger(__name__)

#: Continuous fields a file may hold (``/snapshots/<name>``, ``/state/fields/<name>``).
FIELD_NAMES = ("oxygen", "signal", "cytarabine", "daunorubicin", "cxcl12")
DRUG_NAMES = ("cytarabine", "daunorubicin")
#: The lodged bit of ``/state/model/cells/flags`` in checkpoints (``kernels/cells_metrics.LODGED``).
LODGED_FLAG = 1
#: Per-voxel arrays other than the fields: name -> path under ``/state`` of run.h5.
_LATTICE_STATE = {"cells": "cells", "lodged": "lodged", "integrity": "vessel_integrity",
                  "niche_conditioned": "niche_conditioned"}  # the last only with cells.niche_conditioning on
#: Units of the per-voxel arrays as docs/file-format.md states them (used where a file's
#: datasets carry no ``units`` attribute: checkpoints, and tissue/niche everywhere).
ARRAY_UNITS = {"tissue": "code", "niche": "code", "cells": "code", "lodged": "flag", "integrity": "1",
               "niche_conditioned": "flag", "oxygen": "mmHg", "signal": "su", "cytarabine": "uM", "daunorubicin": "uM", "cxcl12": "nM"}


class RunDataError(Marrow3DError, LookupError):
    """The file does not hold the requested data (e.g. a snapshot taken without ``cells``)."""


def resolve_run_file(path: str | Path) -> Path:
    """The HDF5 file of ``path``: a run directory's ``run.h5`` (else its ``checkpoint.h5``)."""
    p = Path(path)
    if p.is_dir():
        for name in ("run.h5", "checkpoint.h5"):
            if (p / name).is_file():
                return p / name
        raise CheckpointError(f"{str(p)!r} holds no run.h5 or checkpoint.h5")
    if not p.exists():
        raise CheckpointError(f"{str(p)!r} does not exist")
    return p


#: What h5py raises on damaged data or metadata (a failed checksum, a missing object, a bad
#: chunk): turned into one CheckpointError line by :func:`_guarded`.
_H5_ERRORS = (OSError, RuntimeError, KeyError, ValueError)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def _guarded(func):
    """Run a reading method; HDF5 errors of a damaged file become one CheckpointError line."""

    @functools.wraps(func)
    def wrapper(self, *args, **kwargs):
        try:
            return func(self, *args, **kwargs)
        except Marrow3DError:
            raise
        except _H5_ERRORS as exc:
            if self._h5 is None or not self._h5.id.valid:
                raise RunDataError(f"{str(self.path)!r} is closed") from None
            raise CheckpointError(
                f"{str(self.path)!r} is damaged: {func.__name__} failed: {_one_line(exc)}"
            ) from None

    return wrapper


def _guarded_property(func):
    return property(_guarded(func), doc=func.__doc__)


def _guarded_cached(func):
    prop = cached_property(_guarded(func))
    prop.__doc__ = func.__doc__
    return prop


def open_run(path: str | Path, xp: str = "numpy") -> "RunData":
    """Open a run directory, ``run.h5``, checkpoint or diagnostic file for reading.

    Parameters
    ----------
    path : str or Path
        A run directory (reads ``run.h5``, or ``checkpoint.h5`` when there is no run file) or
        an HDF5 file written by marrow3d.
    xp : {"numpy", "cupy"}
        Where the heavy parts of the analysis helpers (distance transforms) run. ``"cupy"``
        needs cupy; the results are the same as with numpy.

    Returns
    -------
    RunData
        A context manager; close it (or use ``with``) to release the file.

    Raises
    ------
    CheckpointError
        Missing, truncated or foreign file (the message names the file and the problem).
    Marrow3DError
        ``xp="cupy"`` without cupy installed.
    """
    return RunData(path, xp=xp)


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value


class RunData:
    """Read access to one marrow3d output file (see :func:`open_run`).

    Attributes
    ----------
    path : Path
        The HDF5 file.
    kind : str
        ``"run"`` (a ``run.h5``) or ``"checkpoint"`` (a checkpoint or ``diagnostic.h5``).
    swmr : bool
        Whether the file was opened in SWMR read mode (a live run is writing it).
    access : str
        ``"plain"``, ``"swmr"`` or ``"recovered"`` (a file a killed writer left flagged open,
        read through a view that clears the flag; see :mod:`marrow3d.output.h5access`).
    """

    _h5: h5py.File | None = None

    def __init__(self, path: str | Path, xp: str | ArrayBackend = "numpy") -> None:
        self._backend = get_backend(xp)
        self.path = resolve_run_file(path)
        self._h5, self.access = open_for_reading(self.path)
        self.swmr = self.access == "swmr"
        try:
            self.kind = _guarded(RunData._identify)(self)
        except BaseException:
            self._h5.close()
            raise
        self._region_cache: dict[float, dict[str, np.ndarray]] = {}

    # ------------------------------------------------------------------ file handling
    def _identify(self) -> str:
        h5, p = self._h5, str(self.path)
        if "meta" not in h5:
            raise CheckpointError(f"{p!r} is an HDF5 file but not a marrow3d run or checkpoint (no /meta group)")
        attrs = h5["meta"].attrs
        if attrs.get("kind") == "checkpoint":
            kind = "checkpoint"
            needed = ("state/model/anatomy/tissue", "state/model/anatomy/niche")
        else:
            kind = "run"
            needed = ("anatomy/tissue", "anatomy/niche", "timeseries")
        if "schema_version" not in attrs:
            raise CheckpointError(f"{p!r} is an HDF5 file but not a marrow3d run or checkpoint (no schema_version)")
        version = int(attrs["schema_version"])
        if version > SCHEMA_VERSION:
            log.warning("%s has schema_version %d (this marrow3d writes %d): reading the datasets it knows",
                        p, version, SCHEMA_VERSION)
        for path in needed:
            if path not in h5:
                raise CheckpointError(f"{p!r} is not a complete marrow3d {kind} file: /{path} is missing")
        grp = h5["state/model/anatomy" if kind == "checkpoint" else "anatomy"]
        grid = grp["tissue"].shape
        if len(grid) != 3 or min(grid) < 1:
            raise CheckpointError(f"{p!r}: {grp.name}/tissue has shape {grid}; a (z, y, x) grid is needed")
        if grp["niche"].shape != grid:
            raise CheckpointError(f"{p!r}: {grp.name}/niche has shape {grp['niche'].shape}, the grid is {grid}")
        voxel = grp.attrs.get("voxel_um")
        if voxel is None or not np.isfinite(float(voxel)) or float(voxel) <= 0:
            raise CheckpointError(f"{p!r}: {grp.name}@voxel_um is {voxel!r}; a positive voxel size in um is needed")
        try:
            verify_record(h5)  # a checkpoint's covers the file, run.h5's its /meta and /anatomy
        except IntegrityProblem as exc:
            raise CheckpointError(f"{p!r} is damaged: {exc}") from None
        return kind

    def close(self) -> None:
        """Release the file (idempotent)."""
        if self._h5 is not None and self._h5.id.valid:
            self._h5.close()

    def __enter__(self) -> "RunData":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        nz, ny, nx = self.shape
        return (f"RunData({str(self.path)!r}, {self.kind}, {nz}x{ny}x{nx} voxels of {self.voxel_um:g} um, "
                f"{self.n_snapshots} snapshots, t = {self.time_h / 24:.2f} d)")

    def _read(self, path: str, index=()) -> np.ndarray:
        """Dataset ``path`` (or ``[index]`` of it); damage is an error naming the dataset."""
        try:
            ds = self._h5[path]
            if self.swmr:
                ds.refresh()
            return ds[index]
        except _H5_ERRORS as exc:
            raise CheckpointError(f"{str(self.path)!r}: dataset /{path.lstrip('/')} cannot be read "
                                  f"(damaged or truncated file): {_one_line(exc)}") from None

    def _check_grid(self, name: str, shape: tuple[int, ...]) -> None:
        if tuple(shape) != self.shape:
            raise CheckpointError(f"{str(self.path)!r}: {name} has shape {tuple(shape)}; the grid is {self.shape}")

    # ------------------------------------------------------------------ metadata and grid
    @_guarded_cached
    def meta(self) -> dict[str, Any]:
        """Attributes of ``/meta`` (config TOML, seed, backend, versions, ...)."""
        return {k: _decode(v) for k, v in self._h5["meta"].attrs.items()}

    @_guarded_cached
    def config(self):
        """The resolved :class:`~marrow3d.config.SimulationConfig` stored with the run."""
        from ..config import config_from_toml_text

        text = self.meta.get("config_toml")
        if not text:
            raise RunDataError(f"{str(self.path)!r} holds no config_toml in /meta")
        return config_from_toml_text(text, f"config stored in {self.path}")

    @_guarded_cached
    def _anatomy_group(self) -> h5py.Group:
        return self._h5["state/model/anatomy" if self.kind == "checkpoint" else "anatomy"]

    @_guarded_cached
    def voxel_um(self) -> float:
        """Voxel edge length in um."""
        return float(self._anatomy_group.attrs["voxel_um"])

    @_guarded_cached
    def origin_um(self) -> tuple[float, float, float]:
        """Position (z, y, x) in um of the centre of voxel (0, 0, 0)."""
        grp = self._anatomy_group
        origin = grp["origin_um"][()] if "origin_um" in grp else grp.attrs.get("origin_um", (0.0, 0.0, 0.0))
        return tuple(float(v) for v in np.asarray(origin, dtype=np.float64))  # type: ignore[return-value]

    @_guarded_cached
    def tissue(self) -> np.ndarray:
        """Tissue labels (uint8, ``kernels/codes.py``), shape (nz, ny, nx)."""
        return np.asarray(self._read(f"{self._anatomy_group.name}/tissue"), dtype=np.uint8)

    @_guarded_cached
    def niche(self) -> np.ndarray:
        """Niche slot kinds (uint8: 0 none, 1 endosteal, 2 perivascular)."""
        return np.asarray(self._read(f"{self._anatomy_group.name}/niche"), dtype=np.uint8)

    @_guarded_property
    def shape(self) -> tuple[int, int, int]:
        """Grid shape (nz, ny, nx)."""
        return tuple(int(n) for n in self._anatomy_group["tissue"].shape)  # type: ignore[return-value]

    @_guarded_property
    def has_final_state(self) -> bool:
        """Whether the file holds a final state (always for a checkpoint; run.h5 once finished)."""
        return self.kind == "checkpoint" or "state" in self._h5

    @_guarded_property
    def complete(self) -> bool | None:
        """``/state@complete`` of run.h5 (False after a NaN stop); None while running."""
        if self.kind == "checkpoint":
            return True
        if "state" not in self._h5:
            return None
        return bool(self._h5["state"].attrs.get("complete", True))

    @_guarded_property
    def time_h(self) -> float:
        """Simulated time of the final state (of the last time-series row while running)."""
        if self.kind == "checkpoint" and "time_h" in self.meta:
            return float(self.meta["time_h"])
        if self.kind == "run" and "state" in self._h5:
            return float(self._h5["state"].attrs["time_h"])
        ts = self._ts_group()
        t = self._read_ts(ts)["time_h"]
        return float(t[-1]) if t.size else 0.0

    # ------------------------------------------------------------------ time series
    def _ts_group(self) -> h5py.Group:
        return self._h5["state/model/history" if self.kind == "checkpoint" else "timeseries"]

    def _read_ts(self, grp: h5py.Group) -> dict[str, np.ndarray]:
        cols = {name: np.asarray(self._read(f"{grp.name}/{name}"), dtype=np.float64) for name in grp}
        n = min((v.shape[0] for v in cols.values()), default=0)
        return {k: v[:n] for k, v in cols.items()}

    @_guarded_property
    def timeseries(self) -> pd.DataFrame:
        """Every metric per step, indexed by ``time_h``, with a ``day`` column first.

        Read afresh each time (a running simulation appends rows); a row is included once
        every column holds it.
        """
        cols = self._read_ts(self._ts_group())
        time_h = cols.pop("time_h", None)
        if time_h is None:
            raise RunDataError(f"{str(self.path)!r} has no time_h time series")
        df = pd.DataFrame(cols, index=pd.Index(time_h, name="time_h"))
        df.insert(0, "day", time_h / 24.0)
        return df

    @_guarded_property
    def units(self) -> dict[str, str]:
        """Units of the time-series columns (run.h5 only; empty for checkpoints)."""
        if self.kind == "checkpoint":
            return {}
        out = {name: _decode(ds.attrs.get("units", "")) for name, ds in self._h5["timeseries"].items()}
        out["day"] = "d"
        return out

    # ------------------------------------------------------------------ snapshots
    def _snapshot_names(self) -> list[str]:
        if self.kind == "checkpoint" or "snapshots" not in self._h5:
            return []
        return [n for n in self._h5["snapshots"] if n not in ("time_h", "iteration")]

    @_guarded_property
    def n_snapshots(self) -> int:
        """Number of complete snapshots (every snapshot dataset holds them)."""
        if self.kind == "checkpoint" or "snapshots" not in self._h5:
            return 0
        snaps = self._h5["snapshots"]
        lengths = []
        for name in snaps:
            ds = snaps[name]
            if self.swmr:
                ds.refresh()
            lengths.append(ds.shape[0])
        return min(lengths, default=0)

    @_guarded_property
    def snapshot_times_h(self) -> np.ndarray:
        """Simulated time [h] of each snapshot."""
        n = self.n_snapshots
        if n == 0:
            return np.zeros(0, dtype=np.float64)
        return np.asarray(self._read("snapshots/time_h")[:n], dtype=np.float64)

    @_guarded_property
    def snapshot_iterations(self) -> np.ndarray:
        """Iteration (step count) of each snapshot."""
        n = self.n_snapshots
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        return np.asarray(self._read("snapshots/iteration")[:n], dtype=np.int64)

    def _locate(self, step: int | None) -> int | None:
        """Snapshot index of ``step``, or None for the final state."""
        if step is None or operator.index(step) == -1:
            if self.has_final_state:
                return None
            n = self.n_snapshots
            if n == 0:
                raise RunDataError(f"{str(self.path)!r} holds no final state yet and no snapshots")
            log.info("%s has no final state yet (the run is still going or was killed): using snapshot %d",
                     self.path, n - 1)
            return n - 1
        k = operator.index(step)
        n = self.n_snapshots
        if not 0 <= k < n:
            what = f"holds {n} snapshots (0..{n - 1})" if n else "holds no snapshots"
            raise IndexError(f"step {k} out of range: {str(self.path)!r} {what}; step=-1 is the final state")
        return k

    @_guarded
    def step_time_h(self, step: int | None = -1) -> float:
        """Simulated time [h] of a snapshot index, or of the final state (``-1``/None)."""
        k = self._locate(step)
        return self.time_h if k is None else float(self.snapshot_times_h[k])

    @_guarded
    def step_iteration(self, step: int | None = -1) -> int:
        """Iteration of a snapshot index, or of the final state (``-1``/None)."""
        k = self._locate(step)
        if k is not None:
            return int(self.snapshot_iterations[k])
        if self.kind == "checkpoint":
            return int(self.meta.get("iteration", 0))
        return int(self._h5["state"].attrs["iteration"])

    # ------------------------------------------------------------------ per-voxel arrays
    def _state_path(self, name: str) -> str | None:
        if self.kind == "checkpoint":
            path = {"cells": "state/model/cells/cells", "lodged": "state/model/cells/flags",
                    "integrity": "state/model/vessel_integrity",
                    "niche_conditioned": "state/model/cells/niche_conditioned"}.get(name, f"state/model/fields/{name}")
        else:
            path = "state/" + _LATTICE_STATE.get(name, f"fields/{name}")
        return path if path in self._h5 else None

    @_guarded
    def array_names(self, step: int | None = -1) -> list[str]:
        """Per-voxel arrays (besides tissue and niche) available at ``step``."""
        k = self._locate(step)
        names = [*_LATTICE_STATE, *FIELD_NAMES]
        if k is None:
            return [n for n in names if self._state_path(n) is not None]
        present = set(self._snapshot_names())
        return [n for n in names if n in present]

    @_guarded
    def array(self, name: str, step: int | None = -1) -> np.ndarray:
        """One per-voxel array (``cells``, ``lodged``, ``integrity`` or a field) at ``step``.

        ``step`` is a snapshot index (0 .. n_snapshots-1) or ``-1``/None for the final state.
        Float16 snapshots are returned as float32 (exactly the stored values).
        """
        k = self._locate(step)
        if k is None:
            path = self._state_path(name)
            if path is None:
                raise RunDataError(f"{str(self.path)!r} has no {name!r} in its final state")
            self._check_grid(f"/{path}", self._h5[path].shape)
            arr = self._read(path)
            if self.kind == "checkpoint" and name == "lodged":
                arr = (arr & LODGED_FLAG).astype(np.uint8)
        else:
            if name not in self._snapshot_names():
                raise RunDataError(
                    f"{str(self.path)!r} snapshots hold no {name!r} (output.snapshot_fields = "
                    f"{self._snapshot_names()})"
                )
            self._check_grid(f"/snapshots/{name} (one snapshot)", self._h5[f"snapshots/{name}"].shape[1:])
            arr = self._read(f"snapshots/{name}", k)
        if arr.dtype == np.float16:
            arr = arr.astype(np.float32)
        return arr

    @_guarded
    def array_units(self, name: str) -> str:
        """Unit of a per-voxel array (``mmHg``, ``su``, ``uM``, ``1``; ``code``/``flag`` for labels).

        Read from the dataset's ``units`` attribute when the file has one, else the unit
        docs/file-format.md gives the array.
        """
        for path in (f"snapshots/{name}", self._state_path(name)):
            if path and self.kind == "run" and path in self._h5:
                unit = self._h5[path].attrs.get("units")
                if unit is not None:
                    return _decode(unit)
        if name not in ARRAY_UNITS:
            raise RunDataError(f"no per-voxel array {name!r} (known: {', '.join(ARRAY_UNITS)})")
        return ARRAY_UNITS[name]

    @_guarded
    def fields(self, step: int | None = -1) -> dict[str, np.ndarray]:
        """Continuous fields at ``step``: ``oxygen`` [mmHg], ``signal`` [su], drugs [uM].

        Drug fields are present only where the run dosed (and snapshotted) them.
        """
        names = [n for n in self.array_names(step) if n in FIELD_NAMES]
        return {n: self.array(n, step) for n in names}

    def cells(self, step: int | None = -1) -> np.ndarray:
        """Cell codes (uint8: 0 empty, 1 HSC, 2 progenitor, 3 LSC, 4 blast)."""
        return self.array("cells", step)

    def lodged(self, step: int | None = -1) -> np.ndarray:
        """1 where a stem cell holds the niche slot it sits on (uint8)."""
        return self.array("lodged", step)

    def integrity(self, step: int | None = -1) -> np.ndarray:
        """Vessel integrity in [0, 1] (float32; 0 off vessels)."""
        return self.array("integrity", step)

    # ------------------------------------------------------------------ pyvista
    @_guarded
    def to_pyvista(self, step: int | None = -1):
        """The grid at ``step`` as ``pyvista.ImageData`` with voxels as cell data.

        Spacing and origin are in um; the origin is the corner of voxel (0, 0, 0), so cell
        centres sit at ``origin_um`` + index x voxel. Arrays: ``tissue``, ``niche`` and every
        array available at the step (``cells``, ``lodged``, ``integrity``, fields); field data
        ``time_h``.
        """
        import pyvista as pv

        nz, ny, nx = self.shape
        v = self.voxel_um
        oz, oy, ox = self.origin_um
        grid = pv.ImageData(dimensions=(nx + 1, ny + 1, nz + 1), spacing=(v, v, v),
                            origin=(ox - v / 2, oy - v / 2, oz - v / 2))
        grid.cell_data["tissue"] = self.tissue.ravel()
        grid.cell_data["niche"] = self.niche.ravel()
        for name in self.array_names(step):
            grid.cell_data[name] = np.ascontiguousarray(self.array(name, step)).ravel()
        grid.field_data["time_h"] = np.array([self.step_time_h(step)])
        return grid

    # ------------------------------------------------------------------ xarray
    def to_xarray(self, *, include_final: bool = True):
        """The per-voxel arrays as an :class:`xarray.Dataset`, read lazily from the file.

        Dimensions ``(time, z, y, x)``: every snapshot, and the final state as the last time
        point when it is later (``include_final``); a checkpoint gives one time point.
        Coordinates ``time`` [h] (with ``day`` [d] and ``iteration``), ``z``, ``y``, ``x``
        [um, voxel centres]. Variables: the fields, ``cells``, ``lodged``, ``integrity``
        (those present at every time point) and the static ``tissue``, ``niche``; each has
        ``units``, ``long_name`` and ``description`` attributes. Values are read from the HDF5
        file only when used (``ds.oxygen.sel(time=24).values`` reads one snapshot); the
        Dataset has its own file handle, released by ``ds.close()``.

        Examples
        --------
        >>> with open_run("runs/tiny") as run, run.to_xarray() as ds:       # doctest: +SKIP
        ...     ds.oxygen.sel(time=24.0).mean(dim=("y", "x"))            # pO2 by depth, mmHg
        """
        from .xarray_view import run_to_xarray

        return run_to_xarray(self, include_final=include_final)

    # ------------------------------------------------------------------ analysis helpers
    @_guarded
    def distance_to_vessels(self, step: int | None = -1, *, functional_only: bool = False) -> pd.DataFrame:
        """Distance [um] of each cell group to the nearest vessel of each class.

        Parameters
        ----------
        step : int or None
            Snapshot index, or ``-1``/None for the final state.
        functional_only : bool
            Count only vessel voxels whose integrity is at or above ``vessels.integrity_floor``.

        Returns
        -------
        pandas.DataFrame
            See :func:`marrow3d.analysis.spatial.distance_to_vessels`.
        """
        mask = None
        if functional_only:
            mask = self.integrity(step) >= np.float32(self.config.vessels.integrity_floor)
        return spatial.distance_to_vessels(self.tissue, self.cells(step), self.lodged(step), self.voxel_um,
                                           self._backend, mask)

    @_guarded
    def niche_occupancy(self, step: int | None = -1) -> pd.DataFrame:
        """Niche slots by kind held by lodged HSCs, lodged LSCs, other cells or nobody."""
        return spatial.niche_occupancy(self.tissue, self.niche, self.cells(step), self.lodged(step))

    @_guarded
    def regions(self, band_um: float | None = None) -> dict[str, np.ndarray]:
        """``marrow``/``endosteal``/``central`` masks (band: ``stages.endosteal_band_um``)."""
        band = float(self.config.stages.endosteal_band_um if band_um is None else band_um)
        if band not in self._region_cache:
            self._region_cache[band] = spatial.region_masks(self.tissue, self.voxel_um, band)
        return self._region_cache[band]

    @_guarded
    def drug_exposure(self, step: int | None = -1, *, band_um: float | None = None) -> pd.DataFrame:
        """Mean drug concentration [uM] by region and by cell group (lodged LSCs included).

        Regions: the endosteal band (marrow within ``stages.endosteal_band_um`` of bone, or
        ``band_um``) and the central marrow. Drugs not dosed (or not snapshotted) at the step
        have no column.
        """
        drugs = {k: v for k, v in self.fields(step).items() if k in DRUG_NAMES}
        groups = spatial.cell_group_masks(self.tissue, self.cells(step), self.lodged(step))
        return spatial.drug_exposure(drugs, self.regions(band_um), groups)

    @_guarded
    def state_digest(self) -> str | None:
        """SHA-256 of the final ``/state`` (see :func:`marrow3d.analysis.digest.state_digest`).

        None for a checkpoint or a run that has not written its final state yet.
        """
        from .digest import state_digest

        if self.kind != "run" or "state" not in self._h5:
            return None
        return state_digest(self._h5["state"])

    @_guarded
    def summary_table(self):
        """A rich Table: file, metadata, grid, simulated days and the last key metrics."""
        from .summary import summary_table

        return summary_table(self)
