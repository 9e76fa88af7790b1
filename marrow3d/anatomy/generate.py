"""Seeded generation of a marrow anatomy: bone, sinusoids, arterioles and niche slots."""

from __future__ import annotations

import numpy as np

from ..config.anatomy import AnatomyConfig, DomainConfig
from ..errors import ConfigError
from ..kernels import codes
from .geometry import BoneLayout, box_layout, femur_layout, random_unit_vectors
from .model import Anatomy
from .niches import place_niche_slots
from .vessels import WalkParams, grow_network, tube

__all__ = ["generate_anatomy", "build_anatomy"]

# Independent random streams, one per stage (numpy SeedSequence.spawn): changing, say, the
# niche density redraws the niche slots but leaves bone and vessels byte-identical.
_STREAMS = ("bone", "sinusoids", "arterioles", "niches")

# Steering of sinusoid tips toward vessel-poor blocks (see vessels._BlockDensity). Measured
# on a 64^3 box at equal length density: the 95th percentile of the marrow-to-sinusoid
# distance fell from 104 um (no steering) to 46 um at 0.3 per step; 0.6 and 1.0 did worse
# (tips bunch up along the gradient).
_AVOIDANCE = 0.3


def _max_tips(target_steps: float) -> int:
    # A few hundred steps at full tip count: Python overhead stays small, and the network
    # has time to branch and fuse rather than being laid down by a single sweep of tips.
    return int(np.clip(target_steps / 300.0, 8, 8192))


def _grow_sinusoids(
    layout: BoneLayout, voxel_um: float, cfg: AnatomyConfig, rng: np.random.Generator
) -> np.ndarray:
    allowed = layout.tissue == codes.MARROW
    if cfg.sinusoid_bone_clearance_um > 0:
        # Type-L sinusoids stay off the endosteum, which arterioles / type-H vessels supply.
        allowed &= layout.bone_distance_um > cfg.sinusoid_bone_clearance_um
    n_allowed = int(np.count_nonzero(allowed))
    # Length density L_v = 1 / spacing^2; in voxel units: voxels x (voxel / spacing)^2.
    target = n_allowed * (voxel_um / cfg.sinusoid_spacing_um) ** 2
    params = WalkParams(
        target_length_vox=target,
        persistence_vox=cfg.sinusoid_persistence_length_um / voxel_um,
        branch_length_vox=cfg.sinusoid_branch_length_um / voxel_um,
        max_tips=_max_tips(target / 0.5),
        block_vox=max(2, int(round(cfg.sinusoid_spacing_um / voxel_um))),
        avoidance=_AVOIDANCE,
    )
    # The bone-distance guide (no alignment) only lets tips bounce off bone instead of
    # dying there, so sinusoids also fill the pockets between trabeculae.
    centre = grow_network(
        allowed, layout.sinus_roots, layout.sinus_root_dirs, params, rng, guide=layout.bone_distance_um
    )
    return tube(centre, cfg.sinusoid_radius_um / voxel_um) & allowed


def _grow_arterioles(
    layout: BoneLayout, voxel_um: float, cfg: AnatomyConfig, rng: np.random.Generator
) -> np.ndarray:
    marrow = layout.tissue == codes.MARROW
    allowed = marrow & (layout.bone_distance_um <= cfg.arteriole_band_um)
    n_allowed = int(np.count_nonzero(allowed))
    target = n_allowed * (voxel_um / cfg.arteriole_spacing_um) ** 2
    params = WalkParams(
        target_length_vox=target,
        persistence_vox=cfg.arteriole_persistence_length_um / voxel_um,
        # Arterioles branch about once per persistence length (assumption).
        branch_length_vox=cfg.arteriole_persistence_length_um / voxel_um,
        max_tips=_max_tips(target / 0.5),
        alignment=cfg.arteriole_surface_alignment,
    )
    # One root per (300 um)^3 of band: roots spread along the whole endosteum.
    n_roots = max(2, int(round(n_allowed * voxel_um**3 / 300.0**3)))
    flat = np.flatnonzero(allowed)
    if flat.size == 0:
        return np.zeros_like(allowed)
    pick = np.sort(rng.choice(flat, size=min(n_roots, flat.size), replace=False))
    roots = np.stack(np.unravel_index(pick, allowed.shape), axis=1).astype(np.float64)
    centre = grow_network(
        allowed, roots, random_unit_vectors(len(roots), rng), params, rng, guide=layout.bone_distance_um
    )
    # Tubes may widen into the marrow outside the band but never into bone or the sinus.
    return tube(centre, cfg.arteriole_radius_um / voxel_um) & marrow


def generate_anatomy(domain: DomainConfig, anatomy: AnatomyConfig | None = None, seed: int = 0) -> Anatomy:
    """Generate a seeded marrow anatomy (or import a mask, for ``domain.kind == "mask"``).

    Stages, each with its own random stream derived from ``seed``:

    1. bone: a bone slab on the low-z face (box), or cortical shell, trabeculae near z = 0
       and central sinus along the axis (femur);
    2. sinusoids: a branching, anastomosing random-walk network through the marrow, at
       centreline length density ``1 / sinusoid_spacing_um^2``, widened to
       ``sinusoid_radius_um``, no voxel of it within ``sinusoid_bone_clearance_um`` of bone
       (in the femur it sprouts radially from the central sinus);
    3. arterioles: a random-walk tree confined to the ``arteriole_band_um`` band along the
       bone surfaces and steered parallel to them, widened to ``arteriole_radius_um``;
       arteriole voxels take precedence over sinusoid voxels where they cross;
    4. niche slots of both kinds (:mod:`marrow3d.anatomy.niches`).

    Parameters
    ----------
    domain : DomainConfig
        Grid, voxel size and geometry kind.
    anatomy : AnatomyConfig, optional
        Generator parameters (defaults when omitted).
    seed : int
        Non-negative seed. The same seed gives byte-identical arrays with the same numpy
        and scipy on the same platform (the walk rounds float positions to voxels, so a
        last-bit difference in another build's SIMD arithmetic could move a voxel); another
        seed gives another anatomy. Record ``Anatomy.fingerprint()`` with a run, or store
        the arrays, to pin the exact anatomy.

    Returns
    -------
    Anatomy
        Integrity is 1.0 on every vessel voxel and 0 elsewhere.

    Raises
    ------
    ConfigError
        Geometry that does not fit the grid (shell wider than the cross-section, a box
        that is all bone, axes under 8 voxels), or a negative seed.
    MaskError
        ``kind == "mask"`` and the mask cannot be used.
    """
    cfg = anatomy if anatomy is not None else AnatomyConfig()
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"anatomy seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    if domain.kind == "mask":
        from .mask_io import anatomy_from_mask, load_mask

        # The file decides the shape; domain.shape_voxels is ignored for masks.
        labels = load_mask(domain.mask_path)  # type: ignore[arg-type]
        return anatomy_from_mask(
            labels,
            voxel_um=domain.voxel_um,
            origin_um=domain.origin_um,
            anatomy=cfg,
            seed=seed,
            source=domain.mask_path,
        )

    rngs = dict(
        zip(_STREAMS, (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(len(_STREAMS))))
    )
    shape = tuple(int(n) for n in domain.shape_voxels)
    vox = float(domain.voxel_um)
    if domain.kind == "box":
        layout = box_layout(shape, vox, cfg, rngs["bone"])
    else:
        band = max(cfg.arteriole_band_um, cfg.endosteal_niche_band_um, cfg.sinusoid_bone_clearance_um)
        layout = femur_layout(shape, vox, cfg, rngs["bone"], exact_band_um=band)

    sinus = _grow_sinusoids(layout, vox, cfg, rngs["sinusoids"])
    arteriole = _grow_arterioles(layout, vox, cfg, rngs["arterioles"])
    tissue = layout.tissue
    tissue[sinus] = codes.SINUSOID
    tissue[arteriole] = codes.ARTERIOLE
    del sinus, arteriole

    niche = place_niche_slots(tissue, layout.bone_distance_um, vox, cfg, rngs["niches"])
    integrity = np.isin(tissue, codes.VESSEL_LABELS).astype(np.float32)
    return Anatomy(
        tissue=tissue,
        niche=niche,
        integrity=integrity,
        voxel_um=vox,
        origin_um=tuple(domain.origin_um),
        kind=domain.kind,
        seed=seed,
    )


def build_anatomy(domain: DomainConfig, anatomy: AnatomyConfig | None = None, seed: int = 0) -> Anatomy:
    """The anatomy a run uses: generated, or imported for ``domain.kind == "mask"``.

    Same as :func:`generate_anatomy` (which dispatches on ``domain.kind``); the name reads
    better at call sites that also handle masks.
    """
    return generate_anatomy(domain, anatomy, seed)
