"""Spatial readouts of one state: cell-to-vessel distances, niche occupancy, drug exposure.

Pure functions of label and field arrays (C-ordered ``(z, y, x)``); :class:`RunData` feeds
them the arrays of a snapshot or of the final state. Definitions match the time series of
``run.h5`` where both exist (niche counts: ``niche_<kind>_*``; regional drug means:
``<drug>_tissue_uM_mean_*``), so the final-state values equal the last time-series row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..kernels import codes
from ..regions import endosteal_band
from .backends import ArrayBackend

__all__ = [
    "CELL_GROUPS",
    "VESSEL_CLASSES",
    "DISTANCE_QUANTILES",
    "cell_group_masks",
    "region_masks",
    "distance_to_vessels",
    "niche_occupancy",
    "drug_exposure",
]

#: Cell groups reported by the helpers: the four types, then lodged HSCs and lodged LSCs.
CELL_GROUPS = ("hsc", "progenitor", "lsc", "blast", "hsc_lodged", "lsc_lodged")
#: Vessel classes and their tissue labels (``kernels/codes.py``).
VESSEL_CLASSES = {
    "arteriole": (codes.ARTERIOLE,),
    "sinusoid": (codes.SINUSOID, codes.CENTRAL_SINUS),
}
#: Quantiles (percent) reported by :func:`distance_to_vessels`.
DISTANCE_QUANTILES = (10, 25, 50, 75, 90)


def cell_group_masks(tissue: np.ndarray, cells: np.ndarray, lodged: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean masks of :data:`CELL_GROUPS` (cells count on marrow voxels only)."""
    marrow = tissue == codes.MARROW
    lodged = lodged.astype(bool)
    out = {}
    for name in ("hsc", "progenitor", "lsc", "blast"):
        code = {v: k for k, v in codes.CELL_NAMES.items()}[name]
        out[name] = marrow & (cells == code)
    out["hsc_lodged"] = out["hsc"] & lodged
    out["lsc_lodged"] = out["lsc"] & lodged
    return out


def region_masks(tissue: np.ndarray, voxel_um: float, band_um: float) -> dict[str, np.ndarray]:
    """``marrow``, ``endosteal`` (marrow within ``band_um`` of bone) and ``central`` masks.

    The regions of the time series (:func:`marrow3d.regions.endosteal_band`; no bone: no
    endosteal band).
    """
    marrow = tissue == codes.MARROW
    endo = endosteal_band(tissue, voxel_um, band_um)
    return {"marrow": marrow, "endosteal": endo, "central": marrow & ~endo}


def distance_to_vessels(tissue: np.ndarray, cells: np.ndarray, lodged: np.ndarray, voxel_um: float,
                        backend: ArrayBackend, vessel_mask: np.ndarray | None = None) -> pd.DataFrame:
    """Distance of every cell to the nearest vessel voxel of each class.

    Parameters
    ----------
    tissue, cells, lodged : ndarray, shape (nz, ny, nx)
        Tissue labels, cell codes and the lodged flag (0/1).
    voxel_um : float
        Voxel edge length; distances are centre to centre, in um.
    backend : ArrayBackend
        Where the distance transforms run.
    vessel_mask : ndarray of bool, optional
        Restrict the vessels (e.g. to functional ones: integrity at or above the floor).

    Returns
    -------
    pandas.DataFrame
        Index ``(cell, vessel)`` over :data:`CELL_GROUPS` x (``arteriole``, ``sinusoid``);
        columns ``n`` (cells), ``mean_um``, ``p10_um`` ... ``p90_um``. NaN where there is
        no cell of the group or no vessel of the class.
    """
    groups = cell_group_masks(tissue, cells, lodged)
    dists = {}
    for vessel, labels in VESSEL_CLASSES.items():
        target = np.isin(tissue, labels)
        if vessel_mask is not None:
            target &= vessel_mask
        dists[vessel] = backend.distance_to(target, voxel_um)
    rows = []
    nan = float("nan")
    for group in CELL_GROUPS:
        for vessel, dist in dists.items():
            d = dist[groups[group]]
            row = {"cell": group, "vessel": vessel, "n": int(d.size)}
            ok = d.size > 0 and bool(np.all(np.isfinite(d)))
            row["mean_um"] = float(d.mean()) if ok else nan
            qs = np.percentile(d, DISTANCE_QUANTILES) if ok else [nan] * len(DISTANCE_QUANTILES)
            for q, v in zip(DISTANCE_QUANTILES, qs):
                row[f"p{q}_um"] = float(v)
            rows.append(row)
    return pd.DataFrame(rows).set_index(["cell", "vessel"])


def niche_occupancy(tissue: np.ndarray, niche: np.ndarray, cells: np.ndarray, lodged: np.ndarray) -> pd.DataFrame:
    """Niche slots by kind and who holds them.

    Returns
    -------
    pandas.DataFrame
        Index ``endosteal``, ``perivascular``, ``total``; columns ``slots``, ``hsc`` (held by a
        lodged HSC), ``lsc`` (held by a lodged LSC), ``empty``, ``other`` (any other cell on
        the slot: progenitor, blast or an unlodged stem cell), ``hsc_share``, ``lsc_share``.
        The counts are the ``niche_<kind>_slots/hsc/lsc/empty/free_cell`` time series.
    """
    marrow = tissue == codes.MARROW
    lodged = lodged.astype(bool)
    rows = {}
    for kind in (codes.NICHE_ENDOSTEAL, codes.NICHE_PERIVASCULAR):
        slot = marrow & (niche == kind)
        c = cells[slot]
        lo = lodged[slot]
        hsc = int(np.count_nonzero((c == codes.HSC) & lo))
        lsc = int(np.count_nonzero((c == codes.LSC) & lo))
        empty = int(np.count_nonzero(c == codes.EMPTY))
        n = int(c.size)
        rows[codes.NICHE_NAMES[kind]] = {"slots": n, "hsc": hsc, "lsc": lsc, "empty": empty,
                                         "other": n - hsc - lsc - empty}
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.loc["total"] = df.sum(axis=0)
    df = df.astype("int64")
    slots = df["slots"].where(df["slots"] > 0)
    df["hsc_share"] = df["hsc"] / slots
    df["lsc_share"] = df["lsc"] / slots
    return df


def drug_exposure(fields: dict[str, np.ndarray], regions: dict[str, np.ndarray],
                  groups: dict[str, np.ndarray]) -> pd.DataFrame:
    """Mean concentration of each drug field by region and by cell group.

    Parameters
    ----------
    fields : dict
        Drug fields (uM) of one state, by agent name.
    regions : dict
        :func:`region_masks` output.
    groups : dict
        :func:`cell_group_masks` output.

    Returns
    -------
    pandas.DataFrame
        Index ``marrow``, ``endosteal``, ``central``, then :data:`CELL_GROUPS`; columns
        ``kind`` (``region`` or ``cells``), ``n`` (voxels or cells) and ``<agent>_uM`` (mean
        over those voxels, float64; NaN when ``n`` is 0). Regional means equal the
        ``<agent>_tissue_uM_mean[_endosteal|_central]`` time series.
    """
    rows = []
    for kind, masks in (("region", regions), ("cells", groups)):
        for name, mask in masks.items():
            flat = np.flatnonzero(mask.ravel())
            row: dict[str, object] = {"group": name, "kind": kind, "n": int(flat.size)}
            for agent, values in fields.items():
                v = values.ravel()[flat].astype(np.float64)
                row[f"{agent}_uM"] = float(v.mean()) if v.size else float("nan")
            rows.append(row)
    return pd.DataFrame(rows).set_index("group")
