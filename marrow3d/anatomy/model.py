"""The :class:`Anatomy` container: tissue labels, niche slots and vessel integrity."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ..kernels import codes

__all__ = ["Anatomy", "face_neighbours"]

# The six face neighbours (dz, dy, dx) in a fixed order: the support of a niche slot is the
# first neighbour of the right class in this order, so it is deterministic.
_FACE_OFFSETS = ((-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1))


def face_neighbours(mask: np.ndarray) -> np.ndarray:
    """Voxels that share a face with a voxel of ``mask`` (the 6-neighbourhood dilation).

    Parameters
    ----------
    mask : ndarray of bool, shape (z, y, x)

    Returns
    -------
    ndarray of bool
        ``True`` where at least one face neighbour is in ``mask`` (the mask itself is not
        included unless a neighbour is in it too). Nothing wraps around the domain edges.
    """
    out = np.zeros_like(mask, dtype=bool)
    # Slicing instead of ndimage.binary_dilation: six ORs of views, no temporaries of
    # structuring-element size, ~5x faster on 33M voxels.
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    out[:, :, 1:] |= mask[:, :, :-1]
    out[:, :, :-1] |= mask[:, :, 1:]
    return out


@dataclass(eq=False)
class Anatomy:
    """A labelled marrow volume on a regular grid of cubic voxels.

    Arrays are indexed ``(z, y, x)`` and C-ordered; the label codes are those of
    :mod:`marrow3d.kernels.codes`.

    Attributes
    ----------
    tissue : ndarray of uint8
        Tissue label per voxel (MARROW, BONE, ARTERIOLE, SINUSOID, CENTRAL_SINUS, OUTSIDE).
    niche : ndarray of uint8
        Niche slot kind per voxel (NICHE_NONE, NICHE_ENDOSTEAL, NICHE_PERIVASCULAR); only
        marrow voxels carry slots.
    integrity : ndarray of float32
        Vessel integrity in [0, 1]: 1 on every vessel voxel of a fresh anatomy, 0 elsewhere.
    voxel_um : float
        Voxel edge length in um.
    origin_um : tuple of float
        Position (z, y, x) in um of the centre of voxel (0, 0, 0).
    kind : str
        How it was made: ``"box"``, ``"femur"`` or ``"mask"``.
    seed : int or None
        Seed the generator (or the niche placement of a mask) used.
    source : str or None
        The mask path specification for imported anatomies.
    """

    tissue: np.ndarray
    niche: np.ndarray
    integrity: np.ndarray
    voxel_um: float
    origin_um: tuple[float, float, float] = (0.0, 0.0, 0.0)
    kind: str = "box"
    seed: int | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        if self.tissue.ndim != 3:
            raise ValueError(f"tissue must be 3-D (z, y, x), got shape {self.tissue.shape}")
        for name, arr, dtype in (
            ("tissue", self.tissue, np.uint8),
            ("niche", self.niche, np.uint8),
            ("integrity", self.integrity, np.float32),
        ):
            if arr.dtype != dtype:
                raise ValueError(f"{name} must be {np.dtype(dtype).name}, got {arr.dtype}")
            if arr.shape != self.tissue.shape:
                raise ValueError(f"{name} has shape {arr.shape}, tissue has {self.tissue.shape}")
        if not self.voxel_um > 0:
            raise ValueError(f"voxel_um must be > 0, got {self.voxel_um}")
        self.voxel_um = float(self.voxel_um)
        self.origin_um = tuple(float(v) for v in self.origin_um)  # type: ignore[assignment]

    # --- geometry -------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        """Grid shape (z, y, x) in voxels."""
        return tuple(int(n) for n in self.tissue.shape)  # type: ignore[return-value]

    @property
    def n_voxels(self) -> int:
        """Number of voxels."""
        return int(self.tissue.size)

    @property
    def voxel_volume_mm3(self) -> float:
        """Volume of one voxel in mm^3."""
        return (self.voxel_um * 1e-3) ** 3

    @property
    def extent_um(self) -> tuple[float, float, float]:
        """Edge lengths (z, y, x) of the domain in um."""
        return tuple(n * self.voxel_um for n in self.shape)  # type: ignore[return-value]

    # --- masks ----------------------------------------------------------------------------
    @property
    def marrow_mask(self) -> np.ndarray:
        """Boolean mask of marrow voxels (the hematopoietic space that holds cells)."""
        return self.tissue == codes.MARROW

    @property
    def bone_mask(self) -> np.ndarray:
        """Boolean mask of bone voxels."""
        return self.tissue == codes.BONE

    @property
    def vessel_mask(self) -> np.ndarray:
        """Boolean mask of vessel voxels of any class."""
        return np.isin(self.tissue, codes.VESSEL_LABELS)

    @property
    def sinusoid_class_mask(self) -> np.ndarray:
        """Boolean mask of sinusoid-class voxels (sinusoids and the central sinus)."""
        return (self.tissue == codes.SINUSOID) | (self.tissue == codes.CENTRAL_SINUS)

    @property
    def cavity_mask(self) -> np.ndarray:
        """Boolean mask of the marrow cavity: marrow plus vessels (not bone, not outside)."""
        return (self.tissue != codes.BONE) & (self.tissue != codes.OUTSIDE)

    # --- counts ---------------------------------------------------------------------------
    @property
    def tissue_counts(self) -> dict[str, int]:
        """Voxel count per tissue label name (every label listed, zeros included)."""
        bins = np.bincount(self.tissue.ravel(), minlength=codes.N_TISSUE)
        return {name: int(bins[code]) for code, name in codes.TISSUE_NAMES.items()}

    @property
    def niche_counts(self) -> dict[str, int]:
        """Number of niche slots per kind (``endosteal``, ``perivascular``)."""
        bins = np.bincount(self.niche.ravel(), minlength=len(codes.NICHE_NAMES))
        return {codes.NICHE_NAMES[k]: int(bins[k]) for k in (codes.NICHE_ENDOSTEAL, codes.NICHE_PERIVASCULAR)}

    @property
    def marrow_volume_mm3(self) -> float:
        """Volume of the marrow-label voxels in mm^3 (the space niche densities refer to)."""
        return self.tissue_counts["marrow"] * self.voxel_volume_mm3

    def niche_indices(self, kind: int | None = None) -> np.ndarray:
        """Flat (C-order) indices of niche slots, ascending.

        Parameters
        ----------
        kind : int, optional
            ``codes.NICHE_ENDOSTEAL`` or ``codes.NICHE_PERIVASCULAR``; all slots when omitted.
        """
        flat = self.niche.ravel()
        if kind is None:
            return np.flatnonzero(flat != codes.NICHE_NONE)
        return np.flatnonzero(flat == kind)

    def niche_support(self) -> tuple[np.ndarray, np.ndarray]:
        """The vessel voxel that supports each niche slot.

        A slot works only while its vessel is intact (niche quality = integrity of that
        voxel). The support is the first face neighbour, in the fixed order -z, +z, -y, +y,
        -x, +x, of the slot's class: an arteriole for endosteal slots, a sinusoid-class voxel
        for perivascular ones.

        Returns
        -------
        slots, vessels : ndarray of int64
            Flat indices of the slots (ascending) and of their supporting vessel voxels.
            A slot with no supporting neighbour (possible only in hand-made anatomies) maps
            to -1.
        """
        slots = self.niche_indices()
        kinds = self.niche.ravel()[slots]
        zyx = np.stack(np.unravel_index(slots, self.shape), axis=1)
        tissue_flat = self.tissue.ravel()
        support = np.full(slots.shape, -1, dtype=np.int64)
        shape = np.array(self.shape)
        for off in _FACE_OFFSETS:
            nb = zyx + np.array(off)
            inside = np.all((nb >= 0) & (nb < shape), axis=1)
            nb_flat = np.where(
                inside, np.ravel_multi_index(tuple(np.clip(nb, 0, shape - 1).T), self.shape), 0
            )
            label = tissue_flat[nb_flat]
            ok_endo = (kinds == codes.NICHE_ENDOSTEAL) & (label == codes.ARTERIOLE)
            ok_peri = (kinds == codes.NICHE_PERIVASCULAR) & (
                (label == codes.SINUSOID) | (label == codes.CENTRAL_SINUS)
            )
            take = inside & (support < 0) & (ok_endo | ok_peri)
            support[take] = nb_flat[take]
        return slots, support

    # --- identity -------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """SHA-256 (hex) of the three arrays, shape and voxel size: equal iff byte-identical.

        ``integrity`` is the anatomy's own, as built (initial), never the model's evolving
        vessel integrity: checkpoints store it (``/state/model/anatomy/integrity``) so a
        resumed or branched run rebuilds the same anatomy and fingerprint.
        """
        h = hashlib.sha256()
        h.update(np.asarray(self.shape, dtype=np.int64).tobytes())
        h.update(np.float64(self.voxel_um).tobytes())
        for arr in (self.tissue, self.niche, self.integrity):
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()

    def copy(self) -> Anatomy:
        """A deep copy (arrays copied)."""
        return Anatomy(
            self.tissue.copy(),
            self.niche.copy(),
            self.integrity.copy(),
            self.voxel_um,
            self.origin_um,
            self.kind,
            self.seed,
            self.source,
        )

    def __repr__(self) -> str:
        counts = self.tissue_counts
        n = max(self.n_voxels, 1)
        lines = [
            f"Anatomy({self.kind}, shape={self.shape} voxels, voxel={self.voxel_um:g} um, seed={self.seed})"
        ]
        for name, c in counts.items():
            lines.append(f"├── {name:<14} {c:>12d} voxels ({100.0 * c / n:5.2f}%)")
        nc = self.niche_counts
        lines.append(f"└── niche slots    endosteal={nc['endosteal']} perivascular={nc['perivascular']}")
        return "\n".join(lines)
