"""Vessel networks grown as persistent, branching random walks, then widened into tubes.

Why a walk and not thresholded noise: a walk gives tubes of a set radius and a set length
density, branch points, and (because a tip that runs into the network fuses with it and
stops) loops, i.e. a connected mesh like the marrow sinusoidal network. Every tip moves at
once, so the Python loop runs over steps (a few hundred), never over voxels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .geometry import random_unit_vectors

__all__ = ["WalkParams", "grow_network", "tube", "ball_offsets"]

#: Network points drawn per sprout; the one in the sparsest block is used.
_TOURNAMENT = 8


@dataclass(frozen=True)
class WalkParams:
    """Parameters of :func:`grow_network` (lengths in voxels).

    Attributes
    ----------
    target_length_vox : float
        Stop once the tips have walked this centreline length.
    persistence_vox : float
        Persistence length: direction noise per step has std ``sqrt(step / persistence)``.
    branch_length_vox : float
        Mean length between branch points while the tip count grows.
    max_tips : int
        Tips walking at once (sets the number of steps, ``~ target / (max_tips x step)``).
    step_vox : float
        Step length; half a voxel keeps the rasterised centreline free of gaps.
    grace_steps : int
        A new branch ignores the network for this many steps, so it does not fuse at once
        with the vessel it sprouted from.
    alignment : float
        With a guide field: fraction of the step's component along the guide's gradient
        removed each step (1 = the walk follows the guide's level sets).
    retries : int
        Fresh random directions a blocked tip tries before it dies.
    block_vox : int
        Edge of the coarse blocks in which the walk measures its own local density.
    avoidance : float
        Strength of the steering of tips toward blocks poorer in vessels (0 = none). Also
        biases where branches sprout: from network points in poorly vascularised blocks.
    max_iterations : int or None
        Safety cap on steps (default: 20 x the steps the target needs + 1000).
    """

    target_length_vox: float
    persistence_vox: float
    branch_length_vox: float
    max_tips: int
    step_vox: float = 0.5
    grace_steps: int = 4
    alignment: float = 0.0
    retries: int = 2
    block_vox: int = 6
    avoidance: float = 0.0
    max_iterations: int | None = None


def _unit_gradient(guide_flat: np.ndarray, cur: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Unit central-difference gradient of the guide at flat voxel indices (0 where flat)."""
    zyx = np.stack(np.unravel_index(cur, shape), axis=1)
    g = np.empty((cur.size, 3))
    strides = (shape[1] * shape[2], shape[2], 1)
    for a in range(3):
        up = np.where(zyx[:, a] + 1 < shape[a], cur + strides[a], cur)
        dn = np.where(zyx[:, a] > 0, cur - strides[a], cur)
        g[:, a] = guide_flat[up].astype(np.float64) - guide_flat[dn]
    norm = np.linalg.norm(g, axis=1, keepdims=True)
    good = np.isfinite(norm) & (norm > 0)
    return np.where(good, g / np.where(good, norm, 1.0), 0.0)


def _retry(bad, d2, pos, direction, new, flat, ok, step, shape, allowed_flat) -> None:
    """Try direction ``d2`` for the blocked tips ``bad``; update those for which it works."""
    new2 = pos[bad] + step * d2
    flat2, ok2 = _locate(new2, shape, allowed_flat)
    good = bad[ok2]
    direction[good], new[good], flat[good], ok[good] = d2[ok2], new2[ok2], flat2[ok2], True


def _locate(pos: np.ndarray, shape: tuple[int, int, int], allowed_flat: np.ndarray):
    """Voxel (flat index) of each position and whether it may be entered."""
    vox = np.rint(pos).astype(np.int64)
    inside = np.all((vox >= 0) & (vox < np.asarray(shape)), axis=1)
    vox = np.clip(vox, 0, np.asarray(shape) - 1)
    flat = np.ravel_multi_index((vox[:, 0], vox[:, 1], vox[:, 2]), shape)
    return flat, inside & allowed_flat[flat]


class _BlockDensity:
    """Network voxels per allowed voxel in coarse blocks, updated as the network grows.

    Sprouting tips in tissue follow VEGF gradients toward poorly vascularised (hypoxic)
    tissue; this is the cheap stand-in: tips steer down the block-density gradient and
    branches sprout preferentially in sparse blocks, which evens out the coverage a plain
    random walk leaves clumped.
    """

    def __init__(self, allowed: np.ndarray, block: int) -> None:
        self.shape = allowed.shape
        self.block = max(1, int(block))
        b = self.block
        self.cshape = tuple(-(-n // b) for n in allowed.shape)
        pad = [(0, c * b - n) for c, n in zip(self.cshape, allowed.shape)]
        cz, cy, cx = self.cshape

        def block_sum(a: np.ndarray) -> np.ndarray:
            a = np.pad(a, pad)
            return a.reshape(cz, b, cy, b, cx, b).sum(axis=(1, 3, 5), dtype=np.int64).ravel()

        self.n_allowed = block_sum(allowed).astype(np.float64)
        self.count = np.zeros(self.n_allowed.size, dtype=np.float64)
        self.total_allowed = max(float(self.n_allowed.sum()), 1.0)
        self.cstrides = (cy * cx, cx, 1)
        self._has = self.n_allowed > 0
        self._cached: tuple[np.ndarray, float] | None = None

    def _block_of(self, flat: np.ndarray) -> np.ndarray:
        z, y, x = np.unravel_index(flat, self.shape)
        b = self.block
        return ((z // b) * self.cstrides[0] + (y // b) * self.cstrides[1] + x // b).astype(np.int64)

    def add(self, flat: np.ndarray) -> None:
        """Count new network voxels (flat indices) into their blocks."""
        if flat.size:
            self.count += np.bincount(self._block_of(flat), minlength=self.count.size)
        self._cached = None

    def _rho(self) -> tuple[np.ndarray, float]:
        if self._cached is None:
            mean = self.count.sum() / self.total_allowed
            # Network voxels per *allowed* voxel, so a block that is half bone is judged by
            # its marrow; blocks without allowed voxels read as the mean: neutral, so tips
            # are not drawn into bone because it holds no vessels.
            rho = np.full(self.count.shape, mean)
            rho[self._has] = self.count[self._has] / self.n_allowed[self._has]
            self._cached = (rho, mean)
        return self._cached

    def downhill(self, flat: np.ndarray) -> np.ndarray:
        """Unit vectors down the density gradient at the blocks of ``flat`` (0 where flat)."""
        rho, _ = self._rho()
        blk = self._block_of(flat)
        cz, cy, cx = self.cshape
        bz, rem = np.divmod(blk, self.cstrides[0])
        by, bx = np.divmod(rem, self.cstrides[1])
        g = np.empty((blk.size, 3))
        for a, (bi, n) in enumerate(((bz, cz), (by, cy), (bx, cx))):
            s = self.cstrides[a]
            up = np.where(bi + 1 < n, blk + s, blk)
            dn = np.where(bi > 0, blk - s, blk)
            g[:, a] = rho[dn] - rho[up]
        norm = np.linalg.norm(g, axis=1, keepdims=True)
        return np.where(norm > 0, g / np.where(norm > 0, norm, 1.0), 0.0)

    def relative(self, flat: np.ndarray) -> np.ndarray:
        """Block density at ``flat`` relative to the mean (0 = empty block)."""
        rho, mean = self._rho()
        return rho[self._block_of(flat)] / mean if mean > 0 else np.zeros(flat.size)


def grow_network(
    allowed: np.ndarray,
    roots: np.ndarray,
    root_dirs: np.ndarray,
    params: WalkParams,
    rng: np.random.Generator,
    guide: np.ndarray | None = None,
) -> np.ndarray:
    """Grow a branching vessel centreline network inside ``allowed``.

    Each tip takes steps of ``step_vox`` in a direction that diffuses on the sphere. A tip
    dies when its step leaves ``allowed`` (with a guide: after one reflection off the
    guide's level set also fails) or when it enters a voxel of the network that it did not
    just come from (anastomosis: the step is kept, so the tubes join). Dead tips, and new
    branches at rate ``step / branch_length``, sprout from uniformly chosen network points
    at right angles to the vessel there, until ``max_tips`` walk at once.

    Parameters
    ----------
    allowed : ndarray of bool, (z, y, x)
        Where the centreline may run.
    roots : ndarray, (n, 3)
        Start positions in voxel coordinates (those outside ``allowed`` are dropped).
    root_dirs : ndarray, (n, 3)
        Initial directions.
    params : WalkParams
    rng : numpy.random.Generator
        The only source of randomness: same generator state, same network.
    guide : ndarray of float, (z, y, x), optional
        Field whose level sets the walk follows (the distance from bone, for arterioles).

    Returns
    -------
    ndarray of bool, (z, y, x)
        The centreline voxels.
    """
    shape = tuple(int(n) for n in allowed.shape)
    allowed_flat = np.ascontiguousarray(allowed).ravel()
    guide_flat = None if guide is None else np.ascontiguousarray(guide).ravel()
    occupied = np.zeros(allowed_flat.size, dtype=bool)

    roots = np.asarray(roots, dtype=np.float64).reshape(-1, 3)
    dirs0 = np.asarray(root_dirs, dtype=np.float64).reshape(-1, 3)
    if roots.shape[0] == 0:
        return occupied.reshape(shape)
    flat0, ok0 = _locate(roots, shape, allowed_flat)
    roots, dirs0, flat0 = roots[ok0], dirs0[ok0], flat0[ok0]
    if roots.shape[0] == 0 or params.target_length_vox <= 0:
        return occupied.reshape(shape)
    roots, dirs0, flat0 = roots[: params.max_tips], dirs0[: params.max_tips], flat0[: params.max_tips]
    dirs0 = dirs0 / np.maximum(np.linalg.norm(dirs0, axis=1, keepdims=True), 1e-12)

    step = params.step_vox
    sigma = min(1.0, math.sqrt(step / params.persistence_vox))
    p_branch = min(1.0, step / params.branch_length_vox)
    n_steps_needed = params.target_length_vox / step
    max_it = params.max_iterations or int(20 * n_steps_needed / params.max_tips) + 1000

    # Network points (flat voxel, direction) from which branches sprout; grown by doubling.
    cap = int(n_steps_needed) + 2 * params.max_tips + roots.shape[0] + 16
    pts_flat = np.empty(cap, dtype=np.int64)
    pts_dir = np.empty((cap, 3), dtype=np.float32)
    n_pts = roots.shape[0]
    pts_flat[:n_pts] = flat0
    pts_dir[:n_pts] = dirs0
    occupied[flat0] = True

    density = _BlockDensity(allowed, params.block_vox)
    density.add(flat0)

    pos, direction, cur = roots.copy(), dirs0.copy(), flat0.copy()
    age = np.zeros(roots.shape[0], dtype=np.int64)
    walked = 0.0
    it = 0
    while walked < params.target_length_vox and it < max_it:
        it += 1
        w = pos.shape[0]
        if w:
            direction = direction + sigma * rng.standard_normal((w, 3))
            if params.avoidance > 0:
                direction += params.avoidance * density.downhill(cur)
            g = None
            if guide_flat is not None:
                g = _unit_gradient(guide_flat, cur, shape)
                if params.alignment > 0:
                    direction -= params.alignment * np.sum(direction * g, axis=1, keepdims=True) * g
            norm = np.linalg.norm(direction, axis=1, keepdims=True)
            degenerate = norm[:, 0] < 1e-9
            if degenerate.any():
                direction[degenerate] = random_unit_vectors(int(degenerate.sum()), rng)
                norm[degenerate] = 1.0
            direction /= norm
            new = pos + step * direction
            flat, ok = _locate(new, shape, allowed_flat)
            if g is not None and not ok.all():
                # Bounce off the band edge or the bone surface: mirror the component along
                # the guide gradient and try once more.
                bad = np.flatnonzero(~ok)
                d2 = direction[bad] - 2.0 * np.sum(direction[bad] * g[bad], axis=1, keepdims=True) * g[bad]
                _retry(bad, d2, pos, direction, new, flat, ok, step, shape, allowed_flat)
            for _ in range(params.retries):
                # A blocked tip probes a fresh direction, as a sprout turns at an obstacle
                # (bone, the domain face, the central sinus) instead of stopping there.
                if ok.all():
                    break
                bad = np.flatnonzero(~ok)
                _retry(
                    bad,
                    random_unit_vectors(bad.size, rng),
                    pos,
                    direction,
                    new,
                    flat,
                    ok,
                    step,
                    shape,
                    allowed_flat,
                )
            moved = ok & (flat != cur)
            hit = moved & occupied[flat] & (age >= params.grace_steps)
            mflat = flat[moved]
            occupied[mflat] = True
            density.add(mflat)
            m = mflat.size
            if n_pts + m > cap:
                cap = 2 * (n_pts + m)
                pts_flat = np.resize(pts_flat, cap)
                pts_dir = np.resize(pts_dir, (cap, 3))
            pts_flat[n_pts : n_pts + m] = mflat
            pts_dir[n_pts : n_pts + m] = direction[moved]
            n_pts += m
            walked += step * int(ok.sum())
            pos[ok], cur[ok] = new[ok], flat[ok]
            age += 1
            alive = ok & ~hit
            pos, direction, cur, age = pos[alive], direction[alive], cur[alive], age[alive]
            n_dead = w - pos.shape[0]
        else:
            n_dead = 0
        # Replace dead tips and branch (binomial: each tip sprouts with p_branch per step).
        n_new = min(params.max_tips - pos.shape[0], n_dead + int(rng.binomial(pos.shape[0], p_branch)))
        if n_new > 0:
            if params.avoidance > 0:
                # Sprout where the network is sparse: of a few uniformly drawn network
                # points, the one in the emptiest block wins (a tournament: a fixed number
                # of draws, so the stream, and the result, stay deterministic).
                cand = rng.integers(0, n_pts, (n_new, _TOURNAMENT))
                rho = density.relative(pts_flat[cand.ravel()]).reshape(cand.shape)
                j = cand[np.arange(n_new), np.argmin(rho, axis=1)]
            else:
                j = rng.integers(0, n_pts, n_new)
            src = pts_flat[j]
            parent = pts_dir[j].astype(np.float64)
            d = rng.standard_normal((n_new, 3))
            d -= np.sum(d * parent, axis=1, keepdims=True) * parent
            nd = np.linalg.norm(d, axis=1, keepdims=True)
            d = np.where(nd > 1e-9, d / np.where(nd > 1e-9, nd, 1.0), random_unit_vectors(n_new, rng))
            p_new = np.stack(np.unravel_index(src, shape), axis=1).astype(np.float64)
            pos = np.concatenate([pos, p_new])
            direction = np.concatenate([direction, d])
            cur = np.concatenate([cur, src])
            age = np.concatenate([age, np.zeros(n_new, dtype=np.int64)])
    return occupied.reshape(shape)


def ball_offsets(radius_vox: float) -> np.ndarray:
    """Integer offsets (dz, dy, dx) within ``radius_vox`` of the origin (origin included).

    A small tolerance keeps offsets that sit exactly on the radius (a 10-um tube at 10-um
    voxels includes the 6 face neighbours).
    """
    r = int(math.floor(radius_vox + 1e-6))
    ax = np.arange(-r, r + 1)
    o = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), axis=-1).reshape(-1, 3)
    return o[np.sum(o * o, axis=1) <= radius_vox**2 + 1e-6]


def tube(centreline: np.ndarray, radius_vox: float) -> np.ndarray:
    """Voxels whose centre lies within ``radius_vox`` of a centreline voxel centre.

    The same set as thresholding a distance transform of the centreline, but computed as a
    union of shifted copies (one per ball offset): exact, and much cheaper than a full
    distance transform for the thin radii of marrow vessels.
    """
    out = centreline.copy()
    for dz, dy, dx in ball_offsets(radius_vox):
        if dz == dy == dx == 0:
            continue
        dst = tuple(slice(max(d, 0), n + min(d, 0)) for d, n in zip((dz, dy, dx), out.shape))
        src = tuple(slice(max(-d, 0), n + min(-d, 0)) for d, n in zip((dz, dy, dx), out.shape))
        out[dst] |= centreline[src]
    return out
