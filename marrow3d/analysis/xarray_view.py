"""A run's per-voxel arrays as an :class:`xarray.Dataset`, read lazily from the HDF5 file.

Dimensions ``(time, z, y, x)``; coordinates ``time`` (simulated hours), ``day`` and
``iteration`` along time, ``z``, ``y``, ``x`` (voxel centres in um). Variables: every array
present at all the chosen time points (``oxygen``, ``signal``, drugs, ``cells``, ``lodged``,
``integrity``) and the static ``tissue`` and ``niche`` ``(z, y, x)``; each carries ``units``,
``long_name`` and ``description`` attributes. Nothing is read until values are used
(indexing, ``.values``, ``.load()``, a computation): a selection such as
``ds.oxygen.sel(time=24).isel(z=10)`` reads one plane of one snapshot from the file.

The Dataset reads through the run's open file: use it while the
:class:`~marrow3d.analysis.RunData` is open (inside ``with open_run(...)``), or ``.load()``
what you need before closing the run. (A second handle on the same file in one process is
not safe with HDF5's shared file objects, so none is opened.)
"""

from __future__ import annotations

import threading

import h5py
import numpy as np

__all__ = ["run_to_xarray", "VARIABLE_ATTRS"]

#: ``long_name`` and ``description`` of each variable (units come from the file).
VARIABLE_ATTRS = {
    "oxygen": ("O2 partial pressure", "quasi-steady O2 partial pressure in tissue and vessels"),
    "signal": ("remodeling signal", "cytokine field secreted by leukemic cells, in signal units"),
    "cytarabine": ("cytarabine concentration", "cytarabine in tissue"),
    "daunorubicin": ("daunorubicin concentration", "daunorubicin in tissue"),
    "cxcl12": ("CXCL12 concentration", "chemokine secreted by perivascular stroma, in tissue and vessels"),
    "cells": ("cell type", "0 empty, 1 HSC, 2 progenitor, 3 LSC, 4 blast"),
    "lodged": ("lodged stem cell", "1 where a stem cell holds the niche slot it sits on"),
    "integrity": ("vessel integrity", "1 intact, 0 lost; 0 off vessels"),
    "niche_conditioned": ("leukemia-conditioned niche slot", "1 where a niche slot is leukemia-conditioned"),
    "tissue": ("tissue label", ""),
    "niche": ("niche slot kind", ""),
}


class _TimeStack:
    """Lazy ``(time, z, y, x)`` array: time point k is a snapshot row or the final-state dataset.

    Reads go through ``_lock``: one h5py file handle is not safe for concurrent reads (dask
    threads). Datasets are looked up per read and not held: HDF5 (1.14) crashes when a
    dataset of a checkpoint is refreshed while another handle on it is open.
    """

    def __init__(self, h5: h5py.File, sources: list[tuple[str, int | None]], dtype, shape3, lock, swmr: bool,
                 final_transform=None) -> None:
        self.h5 = h5
        self.sources = sources
        self._final_transform = final_transform
        self.dtype = np.dtype(dtype)
        self.shape = (len(sources), *shape3)
        self._lock = lock
        self._swmr = swmr

    def read(self, key: tuple) -> np.ndarray:
        """Basic indexing (ints and slices over the 4 axes)."""
        t_key, rest = key[0], tuple(key[1:])
        times = range(self.shape[0])[t_key]
        blocks = []
        with self._lock:
            _check_open(self.h5)
            for k in ([times] if isinstance(times, int) else times):
                path, row = self.sources[k]
                block = _read(self.h5, path, (row, *rest) if row is not None else rest, self._swmr)
                if row is None and self._final_transform is not None:
                    block = self._final_transform(block)
                blocks.append(block.astype(self.dtype, copy=False))
        if isinstance(times, int):
            return blocks[0]
        if not blocks:
            probe = np.zeros(self.shape[1:], dtype=self.dtype)[rest]
            return np.zeros((0, *probe.shape), dtype=self.dtype)
        return np.stack(blocks)


class _Static:
    """Lazy ``(z, y, x)`` array of one dataset (looked up per read, see :class:`_TimeStack`)."""

    def __init__(self, h5: h5py.File, path: str, lock) -> None:
        self.h5 = h5
        self.path = path
        ds = h5[path]
        self.dtype = ds.dtype
        self.shape = ds.shape
        self._lock = lock

    def read(self, key: tuple) -> np.ndarray:
        with self._lock:
            _check_open(self.h5)
            return _read(self.h5, self.path, key, False)


def _read(h5: h5py.File, path: str, key: tuple, swmr: bool) -> np.ndarray:
    """``h5[path][key]``; a damaged dataset is one CheckpointError naming file and dataset."""
    from ..errors import CheckpointError

    try:
        ds = h5[path]
        if swmr:  # run.h5 grows while its run writes
            ds.refresh()
        return np.asarray(ds[key])
    except (OSError, RuntimeError, KeyError, ValueError) as exc:
        raise CheckpointError(f"{h5.filename!r}: dataset /{path.lstrip('/')} cannot be read (damaged or "
                              f"truncated file): {' '.join(str(exc).split())[:300]}") from None


def _check_open(h5: h5py.File) -> None:
    if not h5.id.valid:
        from .rundata import RunDataError

        raise RunDataError("the run this Dataset reads from is closed: use the Dataset inside "
                           "`with open_run(...)`, or .load() it before the run closes")


def _backend_array(source):
    """Wrap a ``read(key)`` source as an xarray lazily indexed array (basic indexing)."""
    from xarray.backends import BackendArray
    from xarray.core import indexing

    class _Array(BackendArray):
        def __init__(self) -> None:
            self.shape = source.shape
            self.dtype = source.dtype

        def __getitem__(self, key):
            return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.BASIC,
                                                      lambda k: source.read(tuple(k)))

    return indexing.LazilyIndexedArray(_Array())


def run_to_xarray(run, *, include_final: bool = True):
    """The per-voxel arrays of ``run`` (:class:`~marrow3d.analysis.RunData`) as a lazy Dataset.

    Parameters
    ----------
    run : RunData
        The open run; the Dataset reads through its file handle.
    include_final : bool
        Add the final state as the last time point when it is later than the last snapshot
        (or when there are no snapshots: a checkpoint is one time point).

    Returns
    -------
    xarray.Dataset
        Valid while ``run`` is open.
    """
    import xarray as xr

    from .rundata import LODGED_FLAG

    h5, swmr = run._h5, run.swmr
    chosen: list[int | None] = list(range(run.n_snapshots))
    if include_final and run.has_final_state and (not chosen or run.step_iteration(-1) > run.step_iteration(chosen[-1])):
        chosen.append(None)
    names = [n for n in (run.array_names(chosen[0]) if chosen else [])
             if all(n in run.array_names(k) for k in chosen[1:])]
    shape = run.shape
    lock = threading.Lock()
    times = np.array([run.step_time_h(-1 if k is None else k) for k in chosen], dtype=np.float64)
    iters = np.array([run.step_iteration(-1 if k is None else k) for k in chosen], dtype=np.int64)
    nz, ny, nx = shape
    v = run.voxel_um
    oz, oy, ox = run.origin_um
    coords = {
        "time": ("time", times, {"units": "h", "long_name": "simulated time", "standard_name": "time"}),
        "day": ("time", times / 24.0, {"units": "d", "long_name": "simulated time"}),
        "iteration": ("time", iters, {"units": "1", "long_name": "cell steps since t = 0"}),
        "z": ("z", oz + v * np.arange(nz), {"units": "um", "long_name": "z of the voxel centre"}),
        "y": ("y", oy + v * np.arange(ny), {"units": "um", "long_name": "y of the voxel centre"}),
        "x": ("x", ox + v * np.arange(nx), {"units": "um", "long_name": "x of the voxel centre"}),
    }
    data_vars = {}
    for name in names:
        sources = [(_state_path(run, name), None) if k is None else (f"snapshots/{name}", k) for k in chosen]
        dtype = h5[sources[0][0]].dtype
        dtype = np.float32 if dtype == np.float16 else dtype
        # a checkpoint keeps the lodged bit among the cell flags
        flags = run.kind == "checkpoint" and name == "lodged"
        transform = (lambda a: (a & LODGED_FLAG).astype(np.uint8)) if flags else None
        stack = _TimeStack(h5, sources, dtype, shape, lock, swmr and run.kind == "run", transform)
        data_vars[name] = (("time", "z", "y", "x"), _backend_array(stack), _attrs(run, name))
    anatomy = "state/model/anatomy" if run.kind == "checkpoint" else "anatomy"
    for name in ("tissue", "niche"):
        data_vars[name] = (("z", "y", "x"), _backend_array(_Static(h5, f"{anatomy}/{name}", lock)),
                           _attrs(run, name))
    meta = run.meta
    attrs = {"source": str(run.path), "kind": run.kind, "voxel_um": float(v),
             "marrow3d_version": str(meta.get("marrow3d_version", "")), "seed": int(meta.get("seed", -1)),
             "backend": str(meta.get("backend", ""))}
    for key in ("git_commit", "kernel_compiler", "config_toml"):
        if meta.get(key):
            attrs[key] = str(meta[key])
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _state_path(run, name: str) -> str:
    path = run._state_path(name)
    if path is None:  # pragma: no cover - array_names() listed it
        raise KeyError(name)
    return path


def _attrs(run, name: str) -> dict[str, str]:
    from ..kernels import codes

    long_name, description = VARIABLE_ATTRS.get(name, (name, ""))
    if name == "tissue":
        description = ", ".join(f"{c} {n}" for c, n in codes.TISSUE_NAMES.items())
    elif name == "niche":
        description = ", ".join(f"{c} {n}" for c, n in codes.NICHE_NAMES.items())
    out = {"units": run.array_units(name), "long_name": long_name}
    if description:
        out["description"] = description
    return out
