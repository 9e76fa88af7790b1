"""Niche slots: which marrow voxels may host a stem-cell niche, and how many do.

Shared by the generator and the mask importer, so an imported mask gets its slots by the
same rule as a generated anatomy:

* endosteal (arteriolar) slot: a marrow voxel sharing a face with an arteriole voxel, not
  with a sinusoid-class voxel, within ``endosteal_niche_band_um`` of bone (Kunisaki 2013);
* perivascular slot: a marrow voxel sharing a face with a sinusoid or the central sinus
  (Acar 2015).

The two candidate sets are disjoint, so every slot has one supporting vessel class (its
quality follows that class's integrity), and the share of slots within 10 um of a sinusoid
is ``1 - endosteal_niche_fraction`` (Acar 2015: ~85%).
"""

from __future__ import annotations

import numpy as np

from ..config.anatomy import AnatomyConfig
from ..kernels import codes
from .model import face_neighbours

__all__ = ["niche_candidates", "niche_slot_counts", "place_niche_slots"]


def niche_candidates(
    tissue: np.ndarray, bone_distance_um: np.ndarray, endosteal_band_um: float
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of the voxels that may hold an endosteal or a perivascular slot.

    Parameters
    ----------
    tissue : ndarray of uint8, (z, y, x)
    bone_distance_um : ndarray of float, (z, y, x)
        Distance in um to the nearest bone voxel (``inf`` without bone).
    endosteal_band_um : float
        Largest distance from bone of an endosteal slot, in um.

    Returns
    -------
    endosteal, perivascular : ndarray of bool
        Disjoint candidate masks (a voxel next to both classes is perivascular).
    """
    marrow = tissue == codes.MARROW
    peri = marrow & face_neighbours((tissue == codes.SINUSOID) | (tissue == codes.CENTRAL_SINUS))
    endo = marrow & face_neighbours(tissue == codes.ARTERIOLE)
    endo &= ~peri
    endo &= bone_distance_um <= endosteal_band_um
    return endo, peri


def niche_slot_counts(
    marrow_volume_mm3: float, cfg: AnatomyConfig, n_endo_candidates: int, n_peri_candidates: int
) -> tuple[int, int]:
    """How many endosteal and perivascular slots to place.

    ``round(density x volume)`` slots in all, split by ``endosteal_niche_fraction``
    (rounded, no random rounding: the count must not change with the seed); each kind with
    a positive share gets at least ``min_niche_slots_per_kind``; no kind gets more slots
    than it has candidate voxels.
    """
    total = int(round(cfg.niche_density_per_mm3 * marrow_volume_mm3))
    n_endo = int(round(total * cfg.endosteal_niche_fraction))
    n_peri = total - n_endo
    if cfg.niche_density_per_mm3 > 0:
        if cfg.endosteal_niche_fraction > 0:
            n_endo = max(n_endo, cfg.min_niche_slots_per_kind)
        if cfg.endosteal_niche_fraction < 1:
            n_peri = max(n_peri, cfg.min_niche_slots_per_kind)
    return min(n_endo, n_endo_candidates), min(n_peri, n_peri_candidates)


def place_niche_slots(
    tissue: np.ndarray,
    bone_distance_um: np.ndarray,
    voxel_um: float,
    cfg: AnatomyConfig,
    rng: np.random.Generator,
) -> np.ndarray:
    """Choose the niche slots, uniformly among the candidates of each kind.

    Each kind is drawn from its own (disjoint) candidate set, endosteal first.

    Returns
    -------
    ndarray of uint8, (z, y, x)
        NICHE_NONE, NICHE_ENDOSTEAL or NICHE_PERIVASCULAR per voxel.
    """
    endo, peri = niche_candidates(tissue, bone_distance_um, cfg.endosteal_niche_band_um)
    endo_idx = np.flatnonzero(endo)
    peri_idx = np.flatnonzero(peri)
    del endo, peri
    n_marrow = int(np.count_nonzero(tissue == codes.MARROW))
    marrow_mm3 = n_marrow * (voxel_um * 1e-3) ** 3
    n_endo, n_peri = niche_slot_counts(marrow_mm3, cfg, endo_idx.size, peri_idx.size)
    niche = np.zeros(tissue.shape, dtype=np.uint8)
    flat = niche.reshape(-1)
    if n_endo > 0:
        chosen = np.sort(rng.choice(endo_idx, size=n_endo, replace=False))
        flat[chosen] = codes.NICHE_ENDOSTEAL
    if n_peri > 0:
        chosen = np.sort(rng.choice(peri_idx, size=n_peri, replace=False))
        flat[chosen] = codes.NICHE_PERIVASCULAR
    return niche
