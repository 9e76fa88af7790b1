"""Bone layout of generated domains: the box and the femur-like cylinder segment.

This module places bone, the outside and the central sinus, and measures the distance from
every voxel to the nearest bone voxel (which places arterioles and endosteal niches). The
vessel networks are grown afterwards by :mod:`marrow3d.anatomy.vessels`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.special import erfinv

from ..config.anatomy import AnatomyConfig
from ..errors import ConfigError
from ..kernels import codes

__all__ = ["BoneLayout", "box_layout", "femur_layout", "smooth_noise", "bone_distance_um"]

#: Generated domains need a few voxels of marrow on every axis to hold vessels and niches.
MIN_AXIS_VOXELS = 8


@dataclass
class BoneLayout:
    """Bone-level geometry of a generated domain, before vessels are grown.

    Attributes
    ----------
    tissue : ndarray of uint8, (z, y, x)
        MARROW, BONE, OUTSIDE and CENTRAL_SINUS labels.
    bone_distance_um : ndarray of float32, (z, y, x)
        Distance in um from each voxel centre to the nearest bone voxel centre (0 on bone).
        Exact up to ``exact_up_to_um``; beyond it, an upper bound (only the bands below that
        distance use it).
    exact_up_to_um : float
        See above (``inf`` when exact everywhere).
    sinus_roots : ndarray of float64, (n, 3)
        Voxel coordinates where sinusoid growth starts.
    sinus_root_dirs : ndarray of float64, (n, 3)
        Initial growth directions (unit vectors) of those roots.
    """

    tissue: np.ndarray
    bone_distance_um: np.ndarray
    exact_up_to_um: float
    sinus_roots: np.ndarray
    sinus_root_dirs: np.ndarray


def bone_distance_um(bone: np.ndarray, voxel_um: float) -> np.ndarray:
    """Euclidean distance in um from each voxel centre to the nearest bone voxel centre.

    Parameters
    ----------
    bone : ndarray of bool, (z, y, x)
    voxel_um : float
        Voxel edge in um.

    Returns
    -------
    ndarray of float32
        0 on bone; ``inf`` everywhere when there is no bone at all (scipy's transform is
        undefined without a background voxel).
    """
    if not bone.any():
        return np.full(bone.shape, np.inf, dtype=np.float32)
    return ndi.distance_transform_edt(~bone, sampling=voxel_um).astype(np.float32)


def smooth_noise(shape: tuple[int, ...], sigma_vox: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-filtered white noise with unit variance (float32).

    For wide kernels the noise is filtered on a coarser grid and interpolated up: the filter
    cost grows with sigma, and a field smooth on the scale of sigma loses nothing by
    trilinear interpolation from a grid of spacing sigma / 2.

    Parameters
    ----------
    shape : tuple of int
        Output shape.
    sigma_vox : float
        Gaussian standard deviation in voxels (the correlation scale of the field).
    rng : numpy.random.Generator
    """
    factor = max(1, int(sigma_vox // 2)) if sigma_vox > 4 else 1
    coarse = tuple(int(math.ceil(n / factor)) + 2 for n in shape)
    field = rng.standard_normal(coarse, dtype=np.float32)
    field = ndi.gaussian_filter(field, sigma_vox / factor, mode="wrap")
    if factor > 1:
        field = ndi.zoom(field, factor, order=1, prefilter=False, grid_mode=False)
    field = np.ascontiguousarray(field[tuple(slice(0, n) for n in shape)])
    std = float(field.std())
    if std > 0:
        field /= std
    field -= np.float32(field.mean())
    return field


def _check_axes(shape: tuple[int, int, int], kind: str) -> None:
    if min(shape) < MIN_AXIS_VOXELS:
        raise ConfigError(
            f"domain.shape_voxels {tuple(shape)} is too small for a generated {kind}: "
            f"every axis needs at least {MIN_AXIS_VOXELS} voxels"
        )


def _random_points(mask: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct voxel coordinates drawn uniformly from ``mask`` (fewer if it is small)."""
    flat = np.flatnonzero(mask)
    if flat.size == 0 or n <= 0:
        return np.zeros((0, 3))
    pick = np.sort(rng.choice(flat, size=min(n, flat.size), replace=False))
    return np.stack(np.unravel_index(pick, mask.shape), axis=1).astype(np.float64)


def random_unit_vectors(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` directions uniform on the sphere (rows of an (n, 3) float64 array)."""
    v = rng.standard_normal((n, 3))
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    norm[norm == 0] = 1.0
    return v / norm


def _scattered_root_count(marrow: np.ndarray, voxel_um: float) -> int:
    # One root per (250 um)^3 of marrow: enough independent starts that the network does
    # not radiate from a few points, few enough that branching, not seeding, shapes it.
    return max(2, int(round(np.count_nonzero(marrow) * voxel_um**3 / 250.0**3)))


def box_layout(
    shape: tuple[int, int, int], voxel_um: float, cfg: AnatomyConfig, rng: np.random.Generator
) -> BoneLayout:
    """A block of marrow with a bone slab on the low-z face.

    The slab's surface is an endosteum: arterioles and endosteal niches gather near it, and
    sinusoids fill the block, so even a 32^3 box holds both vessel classes and niche kinds.
    """
    _check_axes(shape, "box")
    nz = shape[0]
    t = max(1, int(round(cfg.box_bone_thickness_um / voxel_um)))
    if t > nz - MIN_AXIS_VOXELS // 2:
        raise ConfigError(
            f"anatomy.box_bone_thickness_um = {cfg.box_bone_thickness_um} um is {t} voxels, which "
            f"leaves fewer than {MIN_AXIS_VOXELS // 2} marrow voxels along z (shape {tuple(shape)})"
        )
    tissue = np.full(shape, codes.MARROW, dtype=np.uint8)
    tissue[:t] = codes.BONE
    # The nearest bone voxel of a marrow voxel is straight below it: distance is exact and
    # analytic, so no distance transform is needed.
    dz = np.maximum(np.arange(nz, dtype=np.float32) - (t - 1), 0.0) * np.float32(voxel_um)
    dist = np.empty(shape, dtype=np.float32)
    dist[...] = dz[:, None, None]
    marrow = tissue == codes.MARROW
    roots = _random_points(marrow, _scattered_root_count(marrow, voxel_um), rng)
    return BoneLayout(tissue, dist, math.inf, roots, random_unit_vectors(len(roots), rng))


def femur_layout(
    shape: tuple[int, int, int],
    voxel_um: float,
    cfg: AnatomyConfig,
    rng: np.random.Generator,
    exact_band_um: float,
) -> BoneLayout:
    """A femur-like cylinder segment along z.

    Cross-section (y, x): marrow cavity of radius ``marrow_radius_fraction`` x half the
    smaller side, a cortical shell of ``cortical_thickness_um`` around it, OUTSIDE beyond.
    A central sinus runs along the axis. Trabecular plates fill the first
    ``trabecular_length_fraction`` of z (the metaphyseal end), fading out toward the
    diaphysis; they are the band ``|n| < t(z)`` around the zero surface of a smooth
    Gaussian field ``n``, a connected sponge whose volume fraction is ``erf(t / sqrt 2)``.

    Parameters
    ----------
    exact_band_um : float
        Bone distances up to this value must be exact (the widest band that uses them).
    """
    _check_axes(shape, "femur")
    nz, ny, nx = shape
    half_um = 0.5 * min(ny, nx) * voxel_um
    r_marrow = cfg.marrow_radius_fraction * half_um
    r_outer = r_marrow + cfg.cortical_thickness_um
    if r_outer > half_um + 1e-9:
        raise ConfigError(
            f"femur marrow radius {r_marrow:g} um + anatomy.cortical_thickness_um "
            f"{cfg.cortical_thickness_um:g} um exceeds the half-width {half_um:g} um of a "
            f"{ny}x{nx}-voxel cross-section; lower anatomy.marrow_radius_fraction or the "
            f"cortical thickness, or widen the domain"
        )
    if r_marrow < 3 * voxel_um:
        raise ConfigError(f"femur marrow radius {r_marrow:g} um is under 3 voxels; widen the domain")
    if cfg.central_sinus_radius_um > 0.5 * r_marrow:
        raise ConfigError(
            f"anatomy.central_sinus_radius_um = {cfg.central_sinus_radius_um:g} um exceeds half the "
            f"marrow radius ({r_marrow:g} um)"
        )

    cy, cx = (ny - 1) / 2.0, (nx - 1) / 2.0
    yy = (np.arange(ny) - cy)[:, None] * voxel_um
    xx = (np.arange(nx) - cx)[None, :] * voxel_um
    r2d = np.sqrt(yy**2 + xx**2)
    section = np.full((ny, nx), codes.MARROW, dtype=np.uint8)
    section[r2d > r_marrow] = codes.BONE
    section[r2d > r_outer] = codes.OUTSIDE
    sinus2d = r2d <= cfg.central_sinus_radius_um
    tissue = np.empty(shape, dtype=np.uint8)
    tissue[...] = section[None]

    # Trabeculae (metaphysis, low z).
    z_end = int(round(cfg.trabecular_length_fraction * nz))
    if z_end > 0 and cfg.trabecular_bone_volume_fraction > 0:
        f_peak = cfg.trabecular_bone_volume_fraction
        # Plates of thickness T at volume fraction f around a random surface of area density
        # S_v sit 2 T / f apart along a line (stereology: P_L = S_v / 2); Gaussian-filtered
        # noise with std s has zero crossings every pi sqrt(2) s along a line (Rice).
        spacing_um = 2.0 * cfg.trabecular_thickness_um / f_peak
        sigma_vox = spacing_um / (math.pi * math.sqrt(2.0)) / voxel_um
        # Only the cavity's bounding square needs noise.
        iy = np.flatnonzero((np.abs(np.arange(ny) - cy) * voxel_um) <= r_marrow + voxel_um)
        ix = np.flatnonzero((np.abs(np.arange(nx) - cx) * voxel_um) <= r_marrow + voxel_um)
        ys, xs = slice(iy[0], iy[-1] + 1), slice(ix[0], ix[-1] + 1)
        noise = smooth_noise((z_end, ys.stop - ys.start, xs.stop - xs.start), sigma_vox, rng)
        z = np.arange(z_end, dtype=np.float64)
        # Full density over the first half of the region, then a linear fade to zero.
        frac = f_peak * np.clip(2.0 * (1.0 - (z + 0.5) / z_end), 0.0, 1.0)
        thr = (np.sqrt(2.0) * erfinv(frac)).astype(np.float32)
        trab = np.abs(noise) < thr[:, None, None]
        cavity = (section[ys, xs] == codes.MARROW) & ~sinus2d[ys, xs]
        trab &= cavity[None]
        sub = tissue[:z_end, ys, xs]
        sub[trab] = codes.BONE
    tissue[:, sinus2d] = codes.CENTRAL_SINUS

    # Bone distance: the cortex is a prism along z, so its distance is a 2-D transform of
    # the cross-section broadcast along z; trabeculae add a 3-D transform of the slab that
    # contains them plus the widest band (the only distances used beyond the cortex term).
    cortex_d = ndi.distance_transform_edt(section != codes.BONE, sampling=voxel_um).astype(np.float32)
    dist = np.empty(shape, dtype=np.float32)
    dist[...] = cortex_d[None]
    if z_end > 0:
        z_slab = min(nz, z_end + int(math.ceil(exact_band_um / voxel_um)) + 2)
        slab = tissue[:z_slab] == codes.BONE
        dist[:z_slab] = np.minimum(dist[:z_slab], bone_distance_um(slab, voxel_um))
        exact = math.inf if z_slab == nz else (z_slab - z_end) * voxel_um
    else:
        exact = math.inf

    # Sinusoids drain radially into the central sinus: roots sit on its surface, pointing
    # out. More roots scattered through the marrow reach the pockets between trabeculae,
    # which tips from the axis rarely enter.
    n_roots = max(4, int(round(nz * voxel_um / 40.0)))
    zr = rng.uniform(-0.5, nz - 0.5, n_roots)
    ang = rng.uniform(0.0, 2.0 * math.pi, n_roots)
    rr = (cfg.central_sinus_radius_um + voxel_um) / voxel_um
    dirs = np.stack([np.zeros(n_roots), np.sin(ang), np.cos(ang)], axis=1)
    roots = np.stack([zr, cy + rr * dirs[:, 1], cx + rr * dirs[:, 2]], axis=1)
    marrow = tissue == codes.MARROW
    extra = _random_points(marrow, _scattered_root_count(marrow, voxel_um), rng)
    roots = np.concatenate([roots, extra])
    dirs = np.concatenate([dirs, random_unit_vectors(len(extra), rng)])
    return BoneLayout(tissue, dist, exact, roots, dirs)
