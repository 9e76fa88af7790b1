"""Plain numpy implementation of the per-step readouts: the reference of ``kernels.readouts``.

These are the readouts as marrow3d computed them on the host before they moved to the device
(``kernels.readouts.FieldReduction``, assembled by ``marrow3d.metrics.MetricsRecorder``): a
Euclidean distance transform for the endosteal band (scipy), fancy-index gathers and numpy's
own float64 sums, ``np.percentile``'s interpolation. The tests compare the device readouts
with these (sums and counts bitwise on the CPU layout, percentiles bitwise); the numpy
baseline benchmark times them.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from . import codes

__all__ = ["RegionMasks", "percentiles", "oxygen_metrics", "integrity_metrics", "field_region_means"]


class RegionMasks:
    """Flat indices of the metric regions, from a Euclidean distance transform.

    ``marrow`` (int32 flat indices, C order), ``marrow_is_endosteal`` (marrow voxels within
    ``band_um`` of bone, by ``scipy.ndimage.distance_transform_edt`` in float64), and the
    arteriole and sinusoid-class (sinusoid, central sinus) voxels.
    """

    def __init__(self, tissue: np.ndarray, voxel_um: float, band_um: float) -> None:
        flat = tissue.ravel()
        marrow = tissue == codes.MARROW
        bone = tissue == codes.BONE
        if bone.any():
            dist = ndimage.distance_transform_edt(~bone, sampling=voxel_um)
            endo = marrow & (dist <= band_um)
            del dist
        else:
            endo = np.zeros_like(marrow)
        idx_t = np.int32 if flat.size < 2**31 else np.int64
        self.marrow = np.flatnonzero(marrow.ravel()).astype(idx_t)
        self.marrow_is_endosteal = endo.ravel()[self.marrow]
        self.arteriole = np.flatnonzero(flat == codes.ARTERIOLE).astype(idx_t)
        self.sinusoid = np.flatnonzero((flat == codes.SINUSOID) | (flat == codes.CENTRAL_SINUS)).astype(idx_t)

    def split(self, marrow_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(endosteal, central) parts of values gathered over ``marrow`` (index order kept)."""
        return marrow_values[self.marrow_is_endosteal], marrow_values[~self.marrow_is_endosteal]


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


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """numpy's own interpolation formula of ``np.percentile`` (method "linear"), verbatim."""
    diff_b_a = np.subtract(b, a)
    out = np.asanyarray(np.add(a, diff_b_a * t))
    np.subtract(b, diff_b_a * (1 - t), out=out, where=t >= 0.5, casting="unsafe", dtype=out.dtype)
    return out


def percentiles(values: np.ndarray, q) -> tuple[np.ndarray, float, float]:
    """``(np.percentile(values.astype(float64), q), min, max)``, bitwise, at lower cost.

    Selects the order statistics on the array's own dtype (float32 fields: half the bytes
    of the float64 copy ``np.percentile`` would partition; the cast is exact and monotone, so
    the selected values are the same) and interpolates in float64 with numpy's formula
    (method "linear"). Min and max come from the same partition. ``values`` is overwritten
    (partitioned in place); it must hold no NaN and at least one value.
    """
    n = values.size
    qf = np.true_divide(np.asarray(q, dtype=np.float64), 100)
    virtual = (n - 1) * qf
    prev = np.floor(virtual)
    nxt = prev + 1
    above = virtual >= n - 1
    prev[above] = -1
    nxt[above] = -1
    below = virtual < 0
    prev[below] = 0
    nxt[below] = 0
    prev = prev.astype(np.intp)
    nxt = nxt.astype(np.intp)
    kth = np.unique(np.concatenate(([0, n - 1], np.where(prev < 0, n + prev, prev), np.where(nxt < 0, n + nxt, nxt))))
    values.partition(kth)
    a = values[prev].astype(np.float64)
    b = values[nxt].astype(np.float64)
    gamma = np.asanyarray(virtual - prev, dtype=np.float64)  # as numpy's _get_gamma
    return _lerp(a, b, gamma), float(values[0]), float(values[n - 1])


def oxygen_metrics(oxygen: np.ndarray, regions: RegionMasks, hypoxic: float, severe: float) -> dict[str, float]:
    """pO2 mean, quantiles, hypoxic (< ``hypoxic``) and severe (< ``severe``) fractions by region."""
    flat = oxygen.ravel()
    marrow = flat[regions.marrow]
    out: dict[str, float] = {}
    endo, central = regions.split(marrow)
    if marrow.size:
        q, lo, hi = percentiles(marrow.copy(), [5, 50, 95])
        out.update(o2_min_mmHg=lo, o2_p05_mmHg=float(q[0]), o2_p50_mmHg=float(q[1]),
                   o2_p95_mmHg=float(q[2]), o2_max_mmHg=hi)
    out.update(_stats(marrow, "o2", hypoxic, severe))
    out.update(_stats(endo, "o2_endosteal", hypoxic, severe))
    out.update(_stats(central, "o2_central", hypoxic, severe))
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
    marrow = values.ravel()[regions.marrow]
    out = {}
    for name, v in (("", marrow), *zip(("_endosteal", "_central"), regions.split(marrow))):
        out[f"{prefix}_mean{name}"] = float(v.astype(np.float64).mean()) if v.size else float("nan")
    return out
