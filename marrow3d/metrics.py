"""Readouts computed every step from the model state (numpy, deterministic).

Everything here is summed in numpy (pairwise summation, one thread), so the time series are
bit-identical for any Taichi thread count. The cell lattice's own counters come from integer
kernels and are exact too.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .kernels import codes

__all__ = ["RegionMasks", "oxygen_metrics", "integrity_metrics", "field_region_means", "disease_stage", "STAGE_NAMES"]

STAGE_NAMES = {0: "pre-leukemic", 1: "permissive", 2: "self-reinforcing"}


class RegionMasks:
    """Flat indices of the marrow regions used by the metrics.

    ``endosteal``: marrow voxels within ``band_um`` of bone; ``central``: the other marrow
    voxels. Arteriole and sinusoid-class vessel voxels are kept as flat index arrays too.
    """

    def __init__(self, tissue: np.ndarray, voxel_um: float, band_um: float) -> None:
        flat = tissue.ravel()
        marrow = tissue == codes.MARROW
        bone = tissue == codes.BONE
        if bone.any():
            dist = ndimage.distance_transform_edt(~bone, sampling=voxel_um)
            endo = marrow & (dist <= band_um)
        else:
            endo = np.zeros_like(marrow)
        self.marrow = np.flatnonzero(marrow.ravel())
        self.endosteal = np.flatnonzero(endo.ravel())
        self.central = np.flatnonzero((marrow & ~endo).ravel())
        self.arteriole = np.flatnonzero(flat == codes.ARTERIOLE)
        self.sinusoid = np.flatnonzero((flat == codes.SINUSOID) | (flat == codes.CENTRAL_SINUS))
        self.arteriole_endosteal = self.arteriole  # arterioles are generated near bone


def _stats(values: np.ndarray, prefix: str, hypoxic: float, severe: float) -> dict[str, float]:
    if values.size == 0:
        nan = float("nan")
        return {f"{prefix}_mean_mmHg": nan, f"{prefix}_hypoxic_fraction": nan, f"{prefix}_severe_fraction": nan}
    v = values.astype(np.float64)
    return {
        f"{prefix}_mean_mmHg": float(v.mean()),
        f"{prefix}_hypoxic_fraction": float(np.count_nonzero(v < hypoxic)) / v.size,
        f"{prefix}_severe_fraction": float(np.count_nonzero(v < severe)) / v.size,
    }


def oxygen_metrics(oxygen: np.ndarray, regions: RegionMasks, hypoxic: float, severe: float) -> dict[str, float]:
    """pO2 mean, quantiles, hypoxic (< ``hypoxic``) and severe (< ``severe``) fractions by region."""
    flat = oxygen.ravel()
    marrow = flat[regions.marrow].astype(np.float64)
    out: dict[str, float] = {}
    if marrow.size:
        q = np.percentile(marrow, [5, 50, 95])
        out.update(o2_min_mmHg=float(marrow.min()), o2_p05_mmHg=float(q[0]), o2_p50_mmHg=float(q[1]),
                   o2_p95_mmHg=float(q[2]), o2_max_mmHg=float(marrow.max()))
    out.update(_stats(marrow, "o2", hypoxic, severe))
    out.update(_stats(flat[regions.endosteal], "o2_endosteal", hypoxic, severe))
    out.update(_stats(flat[regions.central], "o2_central", hypoxic, severe))
    return out


def integrity_metrics(integrity: np.ndarray, regions: RegionMasks, floor: float, leak: np.ndarray) -> dict[str, float]:
    """Vessel integrity by class: mean, fraction lost (below the floor), mean exchange factor.

    The exchange factor ``I (1 + leak (1 - I))`` (0 below the floor) is what multiplies a
    vessel's healthy exchange rate: it shows when sinusoid exchange starts to change.
    """
    flat = integrity.ravel()
    out: dict[str, float] = {}
    for name, idx, lk in (("arteriole", regions.arteriole, leak[1]), ("sinusoid", regions.sinusoid, leak[2])):
        v = flat[idx].astype(np.float64)
        if v.size == 0:
            out.update({f"{name}_mean_integrity": float("nan"), f"{name}_fraction_lost": float("nan"),
                        f"{name}_exchange_factor": float("nan")})
            continue
        factor = np.where(v >= floor, v * (1.0 + lk * (1.0 - v)), 0.0)
        out[f"{name}_mean_integrity"] = float(v.mean())
        out[f"{name}_fraction_lost"] = float(np.count_nonzero(v < floor)) / v.size
        out[f"{name}_exchange_factor"] = float(factor.mean())
    return out


def field_region_means(values: np.ndarray, regions: RegionMasks, prefix: str) -> dict[str, float]:
    """Mean of a field over the marrow, the endosteal band and the central marrow."""
    flat = values.ravel()
    out = {}
    for name, idx in (("", regions.marrow), ("_endosteal", regions.endosteal), ("_central", regions.central)):
        out[f"{prefix}_mean{name}"] = float(flat[idx].astype(np.float64).mean()) if idx.size else float("nan")
    return out


def disease_stage(leukemic_fraction: float, arteriole_integrity: float, stages) -> int:
    """Stage code (0 pre-leukemic, 1 permissive, 2 self-reinforcing) from current readouts."""
    if leukemic_fraction >= stages.reinforcing_leukemic_fraction and arteriole_integrity <= stages.reinforcing_arteriole_integrity:
        return 2
    if leukemic_fraction >= stages.permissive_leukemic_fraction:
        return 1
    return 0
