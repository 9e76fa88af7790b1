"""The metric regions: endosteal band, central marrow, arterioles and sinusoids.

One definition, used by the per-step readouts (:mod:`marrow3d.metrics`) and by the analysis of
saved runs (:mod:`marrow3d.analysis.spatial`):

* **endosteal**: marrow voxels whose centre lies within ``band_um`` of the centre of a bone
  voxel (Euclidean, voxel centres, isotropic voxels of ``voxel_um``);
* **central**: the other marrow voxels;
* **arteriole**: arteriole voxels; **sinusoid**: sinusoid and central-sinus voxels.

The band is computed exactly in integers: a marrow voxel is endosteal when the squared offset
``dz^2 + dy^2 + dx^2`` to its nearest bone voxel times ``voxel_um^2`` is at most
``band_um^2``. The squared distance, capped just above the band, is a separable minimum
(along x, then y, then z), computed slab by slab along z: memory stays bounded (int32 work
arrays of one slab, :data:`SLAB_VOXELS` voxels) and the cost is about ``3 (2 r + 1)`` array
passes for a band of ``r = band_um / voxel_um`` voxels. It selects exactly the voxels that a
Euclidean distance transform (``scipy.ndimage.distance_transform_edt(~bone, sampling=
voxel_um) <= band_um``, float64, 8 bytes per voxel) selects whenever ``voxel_um`` and
``band_um`` are integers (the usual case in um; tested), since the square root of an exact
integer is correctly rounded.
"""

from __future__ import annotations

import math

import numpy as np

from .kernels import codes
from .kernels.codes import REGION_ARTERIOLE, REGION_CENTRAL, REGION_ENDOSTEAL, REGION_OTHER, REGION_SINUSOID

__all__ = ["SLAB_VOXELS", "endosteal_band", "region_codes", "REGION_NAMES"]

#: Voxels per z-slab of the band computation (bounds its memory: ~4 int32 arrays of this size).
SLAB_VOXELS = 1 << 22

#: Region code (``kernels.codes.REGION_*``) -> name.
REGION_NAMES = {REGION_OTHER: "other", REGION_ENDOSTEAL: "endosteal", REGION_CENTRAL: "central",
                REGION_ARTERIOLE: "arteriole", REGION_SINUSOID: "sinusoid"}


def _band_limits(voxel_um: float, band_um: float) -> tuple[int, int]:
    """(r, k): largest offset per axis and largest squared offset inside the band."""
    v2, b2 = float(voxel_um) ** 2, float(band_um) ** 2
    r = int(math.floor(band_um / voxel_um)) if band_um >= 0 else -1
    while r >= 0 and r * r * v2 > b2:
        r -= 1
    while (r + 1) ** 2 * v2 <= b2:
        r += 1
    k = r * r * 3
    while k >= 0 and k * v2 > b2:
        k -= 1
    return r, k


def _min_plus(g: np.ndarray, axis: int, r: int, cap: int) -> np.ndarray:
    """``min over |d| <= r of (d^2 + g shifted by d along axis)``, capped at ``cap``."""
    out = g.copy()
    n = g.shape[axis]
    for d in range(1, min(r, n - 1) + 1):
        d2 = d * d
        if d2 >= cap:
            break
        lo = [slice(None)] * g.ndim
        hi = [slice(None)] * g.ndim
        lo[axis], hi[axis] = slice(0, n - d), slice(d, n)
        lo, hi = tuple(lo), tuple(hi)
        np.minimum(out[lo], g[hi] + d2, out=out[lo])  # neighbour d ahead
        np.minimum(out[hi], g[lo] + d2, out=out[hi])  # neighbour d behind
    np.minimum(out, cap, out=out)
    return out


def endosteal_band(tissue: np.ndarray, voxel_um: float, band_um: float) -> np.ndarray:
    """Boolean mask of the marrow voxels within ``band_um`` of bone (see the module notes).

    Parameters
    ----------
    tissue : ndarray of uint8, shape (nz, ny, nx)
        Tissue codes (``kernels.codes``).
    voxel_um : float
        Voxel edge length [um].
    band_um : float
        Band width [um].

    Returns
    -------
    ndarray of bool
        False everywhere when the grid holds no bone.
    """
    tissue = np.asarray(tissue)
    nz, ny, nx = tissue.shape
    out = np.zeros(tissue.shape, dtype=bool)
    r, k = _band_limits(voxel_um, band_um)
    if r < 0 or not np.any(tissue == codes.BONE):
        return out
    cap = k + 1
    slab = max(1, SLAB_VOXELS // max(1, ny * nx))
    for z0 in range(0, nz, slab):
        z1 = min(nz, z0 + slab)
        a0, a1 = max(0, z0 - r), min(nz, z1 + r)  # halo for the z pass
        bone = tissue[a0:a1] == codes.BONE
        g = np.where(bone, 0, cap).astype(np.int32)
        g = _min_plus(g, 2, r, cap)
        g = _min_plus(g, 1, r, cap)
        g = _min_plus(g, 0, r, cap)
        out[z0:z1] = (g[z0 - a0:z1 - a0] <= k) & (tissue[z0:z1] == codes.MARROW)
    return out


def region_codes(tissue: np.ndarray, voxel_um: float, band_um: float) -> np.ndarray:
    """Per-voxel region code (uint8, ``kernels.codes.REGION_*``) of a tissue array."""
    tissue = np.asarray(tissue)
    out = np.full(tissue.shape, REGION_OTHER, dtype=np.uint8)
    out[tissue == codes.MARROW] = REGION_CENTRAL
    out[endosteal_band(tissue, voxel_um, band_um)] = REGION_ENDOSTEAL
    out[tissue == codes.ARTERIOLE] = REGION_ARTERIOLE
    out[(tissue == codes.SINUSOID) | (tissue == codes.CENTRAL_SINUS)] = REGION_SINUSOID
    return out
