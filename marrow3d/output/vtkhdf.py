"""Write a run as a VTKHDF ``ImageData`` time series (``.vtkhdf``), read by ParaView and pyvista.

Layout (VTKHDF 2.x; ParaView >= 5.12 or VTK >= 9.3 for the time series)::

    /VTKHDF                  attrs Version=[2, 1], Type="ImageData" (ASCII),
                                   WholeExtent=[0, nx, 0, ny, 0, nz] (point extent: voxels are cells),
                                   Origin (x, y, z corner of voxel 0, um), Spacing (um), Direction (identity)
    /VTKHDF/CellData/<name [unit]>  (T, nz, ny, nx) per time step; x fastest
    /VTKHDF/CellData/tissue, niche   (1, nz, ny, nx): static, every step points at block 0
    /VTKHDF/Steps            attr NSteps = T; Values = time in hours
    /VTKHDF/Steps/CellDataOffsets/<name [unit]>   int64[T]: the step's block index along axis 0

Units are part of the array names, the one place ParaView (array menus, colour-legend titles)
and pyvista (``cell_data`` keys) show them: ``oxygen [mmHg]``, ``signal [su]``, ``cytarabine
[uM]``, ``integrity [1]``; label arrays (``tissue``, ``niche``, ``cells``, ``lodged``) keep
their names and carry their codes as attributes. Every dataset also has the HDF5 attributes
``units`` and ``description`` (read by h5py, not by VTK). Lengths (origin, spacing) are um and
time values are hours.

The VTK 9.7 reader wants every array of a temporal file four-dimensional with the time block
first (a 3-D ``(T*nz, ny, nx)`` array is refused: "Expecting ndims >= 4"), and reads block
``offset[k]`` for step ``k``; static arrays are therefore stored once with offsets all 0.
A single time step is written as a plain (non-temporal) image instead, arrays ``(nz, ny, nx)``
and its time in ``/VTKHDF/FieldData/Time``: VTK reads a one-step ``Steps`` group as static
and then fails on the 4-D arrays. Verified against ``vtkHDFReader`` by ``tests/test_export.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from ..kernels import codes

__all__ = ["write_vtkhdf", "VTKHDF_VERSION", "read_vtkhdf_step", "vtk_array_name", "ARRAY_DESCRIPTIONS"]

VTKHDF_VERSION = (2, 1)

#: Units that are labels, not quantities: the array keeps its plain name.
_LABEL_UNITS = ("", "code", "flag")
#: What each exported array holds (the ``description`` attribute of its dataset).
ARRAY_DESCRIPTIONS = {
    "tissue": "tissue label per voxel: " + ", ".join(f"{c} {n}" for c, n in codes.TISSUE_NAMES.items()),
    "niche": "niche slot kind per voxel: " + ", ".join(f"{c} {n}" for c, n in codes.NICHE_NAMES.items()),
    "cells": "cell per voxel: 0 empty, 1 HSC, 2 progenitor, 3 LSC, 4 blast",
    "lodged": "1 where a stem cell holds the niche slot it sits on",
    "integrity": "vessel integrity (1 intact, 0 lost; 0 off vessels)",
    "niche_conditioned": "1 where a niche slot is leukemia-conditioned",
    "oxygen": "O2 partial pressure",
    "signal": "remodeling signal secreted by leukemic cells (signal units)",
    "cytarabine": "cytarabine concentration in tissue",
    "daunorubicin": "daunorubicin concentration in tissue",
    "cxcl12": "CXCL12 chemokine concentration (nM)",
}


def vtk_array_name(name: str, unit: str) -> str:
    """The exported array name: ``"oxygen [mmHg]"``, or ``name`` for labels and flags."""
    return name if unit in _LABEL_UNITS else f"{name} [{unit}]"


def _chunks(shape: tuple[int, int, int]) -> tuple[int, int, int, int]:
    return (1, *(min(int(n), 64) for n in shape))


def write_vtkhdf(run, path: str | Path, *, steps: list[int] | None = None, include_final: bool = True,
                 compression_level: int = 3) -> Path:
    """Write the snapshots (and the final state) of ``run`` to a ``.vtkhdf`` file.

    Parameters
    ----------
    run : marrow3d.analysis.RunData
        The open run.
    path : str or Path
        Output file (written to a temporary name, then renamed into place).
    steps : list of int, optional
        Snapshot indices to include (default: all).
    include_final : bool
        Append the final state as the last time step when it is later than the last
        snapshot (or when there are no snapshots).
    compression_level : int
        gzip level (with shuffle: the only filters ParaView reads without plugins); 0 = none.

    Returns
    -------
    Path
        The written file.

    Notes
    -----
    Time-varying arrays are those available at every chosen step (cells, lodged, integrity and
    the snapshotted fields); ``tissue`` and ``niche`` are static. Float16 snapshots are
    written as float32. Time values are simulated hours.
    """
    path = Path(path)
    chosen: list[int | None] = list(range(run.n_snapshots) if steps is None else steps)
    times = [run.step_time_h(k) for k in chosen]
    if include_final and run.has_final_state:
        last_it = run.step_iteration(chosen[-1]) if chosen else -1
        if run.step_iteration(-1) > last_it:
            chosen.append(None)
            times.append(run.step_time_h(-1))
    if not chosen:
        from ..errors import Marrow3DError

        raise Marrow3DError(f"{str(run.path)!r} holds no snapshots and no final state: nothing to export")
    names = [n for n in run.array_names(chosen[0]) if all(n in run.array_names(k) for k in chosen[1:])]

    nz, ny, nx = run.shape
    v = run.voxel_um
    oz, oy, ox = run.origin_um
    opts = ({"compression": "gzip", "compression_opts": int(compression_level), "shuffle": True}
            if compression_level else {})
    n_steps = len(chosen)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as h5:
            root = h5.create_group("VTKHDF")
            root.attrs["Version"] = np.array(VTKHDF_VERSION, dtype=np.int64)
            root.attrs.create("Type", np.bytes_("ImageData"))  # fixed-length ASCII, as VTK expects
            root.attrs["WholeExtent"] = np.array([0, nx, 0, ny, 0, nz], dtype=np.int64)
            root.attrs["Origin"] = np.array([ox - v / 2, oy - v / 2, oz - v / 2], dtype=np.float64)
            root.attrs["Spacing"] = np.array([v, v, v], dtype=np.float64)
            root.attrs["Direction"] = np.eye(3, dtype=np.float64).ravel()
            cell = root.create_group("CellData")
            static = (("tissue", run.tissue), ("niche", run.niche))
            if n_steps == 1:
                # VTK reads a one-step temporal file as static and then rejects 4-D arrays:
                # write a plain image, with its time as field data.
                root.create_group("FieldData").create_dataset("Time", data=np.asarray(times, dtype=np.float64))
                for name, arr in (*static, *((n, run.array(n, chosen[0])) for n in names)):
                    ds = cell.create_dataset(vtk_array_name(name, run.array_units(name)), data=arr,
                                             chunks=_chunks(run.shape)[1:], **opts)
                    _describe(ds, name, run.array_units(name))
            else:
                st = root.create_group("Steps")
                st.attrs["NSteps"] = np.int64(n_steps)
                values = st.create_dataset("Values", data=np.asarray(times, dtype=np.float64))
                values.attrs["units"] = "h"
                offsets = st.create_group("CellDataOffsets")
                for name, arr in static:
                    vname = vtk_array_name(name, run.array_units(name))
                    ds = cell.create_dataset(vname, data=arr[None], chunks=_chunks(run.shape), **opts)
                    _describe(ds, name, run.array_units(name))
                    offsets.create_dataset(vname, data=np.zeros(n_steps, dtype=np.int64))
                for name in names:
                    vname = vtk_array_name(name, run.array_units(name))
                    first = run.array(name, chosen[0])
                    ds = cell.create_dataset(vname, shape=(n_steps, nz, ny, nx), dtype=first.dtype,
                                             chunks=_chunks(run.shape), **opts)
                    _describe(ds, name, run.array_units(name))
                    ds[0] = first
                    for i, k in enumerate(chosen[1:], start=1):
                        ds[i] = run.array(name, k)
                    offsets.create_dataset(vname, data=np.arange(n_steps, dtype=np.int64))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _describe(ds, name: str, unit: str) -> None:
    """``units`` and ``description`` attributes (and label codes) on an exported dataset."""
    ds.attrs["units"] = unit
    ds.attrs["description"] = ARRAY_DESCRIPTIONS.get(name, name)
    labels = {"tissue": codes.TISSUE_NAMES, "niche": codes.NICHE_NAMES}.get(name)
    for code, label in (labels or {}).items():
        ds.attrs[f"code_{label}"] = np.int64(code)


def read_vtkhdf_step(path: str | Path, step: int = 0):
    """Read time step ``step`` of a ``.vtkhdf`` file with VTK's reader, as a pyvista object.

    ``pyvista.read`` returns the first step. This drives ``vtkHDFReader.SetStep`` directly;
    :class:`marrow3d.output.vtkhdf_reader.VTKHDFReader` (what ``pyvista.get_reader`` returns
    with marrow3d installed) does the same with pyvista's time API.
    """
    import pyvista as pv
    from vtkmodules.vtkIOHDF import vtkHDFReader

    reader = vtkHDFReader()
    reader.SetFileName(str(path))
    reader.UpdateInformation()
    n = reader.GetNumberOfSteps()
    if not 0 <= step < max(n, 1):
        raise IndexError(f"step {step} out of range: {str(path)!r} has {n} time steps")
    reader.SetStep(step)
    reader.Update()
    return pv.wrap(reader.GetOutputDataObject(0))
