"""Coarse solves of the multigrid cycle: the coarsest level and the sealed pockets (kernels).

*Coarsest level*. ``rows`` layout (CPUs): a banded Cholesky factorisation in float64
(dimensions reordered so the band is the product of the two smallest ones,
:func:`kernels.solver_plan.band_ordering`), refactored at every Newton step; pivots of a
singular block (an isolated pocket with no sink at all) are regularised, which keeps the
preconditioner SPD. Both factorisation and solve are serial: cheap for <= 512 cells on a CPU
core, but a GPU would run them on one thread. ``voxels`` layout (GPUs): the hierarchy goes
down to a single cell, solved exactly (``e = b / diag``); coarsening to one cell instead of
512 left the CG iteration counts unchanged (32^3-96^3, O2 and drug fields, measured with the
``rows`` kernels and ``coarse_max = 1``).

*Sealed pockets*. Marrow sealed off by bone (common in segmented masks) shares coarse cells
with marrow it is not connected to, so the hierarchy cannot correct its smooth modes; with a
weak sink each pocket then costs CG about one iteration. Components of at most ``pocket_max``
voxels other than the largest (labelled on the host) are masked out of the cycle
(:func:`mask_pockets`) and solved by a two-level cycle of their own: ``POCKET_SWEEPS``
Gauss-Seidel sweeps, the exact correction of the pocket's constant mode (``1 . J 1`` is the
pocket's total sink: diffusion inside a sealed component has zero row sums), then as many
sweeps in the adjoint order, so the cycle is symmetric. J is block diagonal across
components, so the preconditioner stays symmetric. CPUs (:func:`pocket_solve`): one thread
per pocket, lexicographic sweeps over its voxels in index order. GPUs
(:func:`pocket_solve_batched`): all pockets at once, red-black sweeps with one thread per
pocket voxel of the colour (pockets are disjoint and a colour's voxels do not touch), one
thread per pocket for its two sums, one per voxel for the correction; deterministic.
"""

# No `from __future__ import annotations`: the kernel compiler reads annotations as objects.

from .reductions import live_flag
from .solver_plan import M_BAND, M_KX, M_KY, M_KZ, M_NX, M_NY, M_NZ, M_OFF, META_FIELDS
from .ti_compat import ti
from .transport import ND1, ND1_F64, conductance_sum, neighbor_sum

__all__ = [
    "POCKET_SWEEPS",
    "band_factor",
    "band_solve_loops",
    "point_solve_loop",
    "mask_pockets",
    "pocket_solve",
    "pocket_solve_batched",
]

ND1_I32 = ti.types.ndarray(dtype=ti.i32, ndim=1)

#: Gauss-Seidel sweeps on each side of a pocket's constant-mode correction. Pockets hold few
#: voxels, so this is cheap; 8 reaches the iteration count of the same domain without
#: pockets for pockets of 5^3 voxels (2 sweeps leave about 4 extra CG iterations).
POCKET_SWEEPS = 8


@ti.func
def _level(meta: ti.template(), lev):
    b = lev * META_FIELDS
    return meta[b + M_NZ], meta[b + M_NY], meta[b + M_NX], meta[b + M_OFF]


@ti.func
def _band(meta: ti.template(), lev):
    b = lev * META_FIELDS
    return meta[b + M_KZ], meta[b + M_KY], meta[b + M_KX], meta[b + M_BAND]


@ti.kernel(fastcache=True)
def band_factor(gz: ND1, gy: ND1, gx: ND1, diag: ND1, L: ND1_F64, meta: ND1_I32, scal: ND1_F64, lev: ti.i32,
                gate: ti.i32):
    """Assemble the coarsest matrix (level ``lev``) in band storage and factor it (Cholesky,
    float64, serial). ``gate`` >= 0: only when ``scal[gate]`` != 0.

    Row k (band order ``k = z*kz + y*ky + x*kx``) keeps ``L[k*(band+1) + j] = L_{k, k-j}``.
    """
    live = 1
    if gate >= 0:
        live = ti.cast(scal[gate] != 0, ti.i32)
    nz, ny, nx, o = _level(meta, lev)
    kz, ky, kx, band = _band(meta, lev)
    n = nz * ny * nx
    w = band + 1
    sz = nx * ny
    for i in range(n * w * live):
        L[i] = 0.0
    ti.loop_config(serialize=True)
    for z in range(nz * live):
        for y in range(ny):
            for x in range(nx):
                p = o + sz + (z * ny + y) * nx + x
                k = z * kz + y * ky + x * kx
                d = ti.cast(diag[p], ti.f64)
                L[k * w] = d
                if d > 0:
                    # lower-triangle entries: faces towards the lower neighbour in each dimension
                    if x > 0:
                        L[k * w + kx] = -ti.cast(gx[p - 1], ti.f64)
                    if y > 0:
                        L[k * w + ky] = -ti.cast(gy[p - nx], ti.f64)
                    if z > 0:
                        L[k * w + kz] = -ti.cast(gz[p - sz], ti.f64)
    ti.loop_config(serialize=True)
    for k in range(n * live):
        m_lo = ti.max(0, k - band)
        for j in range(m_lo, k + 1):
            acc = L[k * w + (k - j)]
            for m in range(m_lo, j):
                acc -= L[k * w + (k - m)] * L[j * w + (j - m)]
            if j < k:
                L[k * w + (k - j)] = acc / L[j * w]
            else:
                d0 = L[k * w]
                if d0 <= 0:
                    L[k * w] = 1.0  # inactive cell: identity row (its rhs is 0)
                elif acc <= 1e-10 * d0:
                    L[k * w] = ti.sqrt(d0)  # singular block (no sink): regularise, stay SPD
                else:
                    L[k * w] = ti.sqrt(acc)


@ti.func
def band_solve_loops(L: ti.template(), b: ti.template(), e: ti.template(), diag: ti.template(), tmp: ti.template(),
                     meta: ti.template(), lev, live):
    """Solve level ``lev`` (the coarsest) with its banded Cholesky factor (serial, float64).

    Call at kernel top level; ``live`` = 0 makes it a no-op.
    """
    dt = e.get_type().element_type
    nz, ny, nx, o = _level(meta, lev)
    kz, ky, kx, band = _band(meta, lev)
    n = nz * ny * nx
    w = band + 1
    sz = nx * ny
    ti.loop_config(serialize=True)
    for z in range(nz * live):
        for y in range(ny):
            for x in range(nx):
                tmp[z * kz + y * ky + x * kx] = ti.cast(b[o + sz + (z * ny + y) * nx + x], ti.f64)
    ti.loop_config(serialize=True)
    for k in range(n * live):
        acc = tmp[k]
        for m in range(ti.max(0, k - band), k):
            acc -= L[k * w + (k - m)] * tmp[m]
        tmp[k] = acc / L[k * w]
    ti.loop_config(serialize=True)
    for i in range(n * live):
        k = n - 1 - i
        acc = tmp[k]
        for m in range(k + 1, ti.min(n, k + band + 1)):
            acc -= L[m * w + (m - k)] * tmp[m]
        tmp[k] = acc / L[k * w]
    for z, y, x in ti.ndrange(nz * live, ny, nx):
        p = o + sz + (z * ny + y) * nx + x
        v = ti.cast(0.0, ti.f64)
        if diag[p] > 0:
            v = tmp[z * kz + y * ky + x * kx]
        e[p] = ti.cast(v, dt)


@ti.func
def point_solve_loop(inv_diag: ti.template(), b: ti.template(), e: ti.template(), meta: ti.template(), lev, live):
    """Exact solve of a one-cell level: e = b / diag (0 for an inactive cell). Top level."""
    nz, ny, nx, o = _level(meta, lev)
    sz = nx * ny
    for i in range(nz * ny * nx * live):  # one cell (the voxels layout coarsens to 1 x 1 x 1)
        p = o + sz + i
        e[p] = b[p] * inv_diag[p]


@ti.kernel(fastcache=True)
def mask_pockets(inv_diag: ND1, idx: ND1, nidx: ti.i32):
    """Take pocket voxels out of the multigrid cycle (inv_diag = 0: never smoothed/restricted)."""
    for j in range(nidx):
        inv_diag[idx[j]] = 0.0


# ---------------------------------------------------------------------------------------------
# Sealed pockets
# ---------------------------------------------------------------------------------------------


@ti.func
def _pocket_update(r: ti.template(), z_: ti.template(), diag: ti.template(), gz: ti.template(), gy: ti.template(),
                   gx: ti.template(), i, sy, sz):
    d = diag[i]
    # d = 0: a lone voxel with no sink at all (singular); leave it at 0 like inactive ones
    z_[i] = ti.select(d > 0, (r[i] + neighbor_sum(z_, gz, gy, gx, i, sy, sz)) / ti.max(d, 1e-30), 0.0)


@ti.func
def _pocket_gs(r: ti.template(), z_: ti.template(), diag: ti.template(), gz: ti.template(), gy: ti.template(),
               gx: ti.template(), idx: ti.template(), lo, hi, reverse, sy, sz):
    """One Gauss-Seidel sweep over a pocket's voxels, in list order or reversed."""
    for jj in range(lo, hi):
        j = jj
        if reverse != 0:
            j = hi - 1 - (jj - lo)
        _pocket_update(r, z_, diag, gz, gy, gx, idx[j], sy, sz)


@ti.kernel(fastcache=True)
def pocket_solve(
    r: ND1, z_: ND1, diag: ND1, gz: ND1, gy: ND1, gx: ND1, idx: ND1, off: ND1, scal: ND1_F64, npk: ti.i32,
    sweeps: ti.i32, nz: ti.i32, ny: ti.i32, nx: ti.i32,
):
    """z = M_k^{-1} r on every sealed pocket k (CPUs: one thread per pocket, see the module
    docstring). Voxels in a fixed order: deterministic. Gated by ``scal[C_LIVE]``."""
    dt = z_.get_type().element_type
    live = live_flag(scal)
    sy = nx
    sz = nx * ny
    for k in range(npk * live):
        lo = off[k]
        hi = off[k + 1]
        for j in range(lo, hi):
            z_[idx[j]] = 0.0
        for _ in range(sweeps):
            _pocket_gs(r, z_, diag, gz, gy, gx, idx, lo, hi, 0, sy, sz)
        num = ti.cast(0.0, ti.f64)
        den = ti.cast(0.0, ti.f64)
        for j in range(lo, hi):
            i = idx[j]
            jz = diag[i] * z_[i] - neighbor_sum(z_, gz, gy, gx, i, sy, sz)
            num += ti.cast(r[i] - jz, ti.f64)
            den += ti.cast(diag[i] - conductance_sum(gz, gy, gx, i, sy, sz), ti.f64)
        if den > 0:  # a pocket without any sink is singular: no constant correction
            c = ti.cast(num / den, dt)
            for j in range(lo, hi):
                z_[idx[j]] += c
        for _ in range(sweeps):
            _pocket_gs(r, z_, diag, gz, gy, gx, idx, lo, hi, 1, sy, sz)


@ti.func
def _pocket_colour(r: ti.template(), z_: ti.template(), diag: ti.template(), gz: ti.template(), gy: ti.template(),
                   gx: ti.template(), col: ti.template(), lo, hi, sy, sz):
    """Gauss-Seidel update of every pocket voxel of one colour (``col[lo:hi]``), in parallel."""
    for j in range(lo, hi):
        _pocket_update(r, z_, diag, gz, gy, gx, col[j], sy, sz)


@ti.kernel(fastcache=True)
def pocket_solve_batched(
    r: ND1, z_: ND1, diag: ND1, gz: ND1, gy: ND1, gx: ND1, idx: ND1, off: ND1, pid: ND1, col: ND1,
    corr: ND1_F64, scal: ND1_F64, npk: ti.i32, nred: ti.i32, sweeps: ti.template(),
    nz: ti.i32, ny: ti.i32, nx: ti.i32,
):
    """z = M_k^{-1} r on every sealed pocket k at once (GPUs, see the module docstring).

    ``idx``/``off``: voxels of each pocket (``pid``: the pocket of each entry); ``col``: the
    same voxels, red ones (``col[:nred]``) then black ones. Sweeps (red, black) x ``sweeps``,
    the constant-mode correction, then (black, red) x ``sweeps``: a symmetric operator.
    Gated by ``scal[C_LIVE]``.
    """
    dt = z_.get_type().element_type
    live = live_flag(scal)
    sy = nx
    sz = nx * ny
    nvox = off[npk]
    for j in range(nvox * live):
        z_[idx[j]] = 0.0
    for _ in ti.static(range(sweeps)):
        _pocket_colour(r, z_, diag, gz, gy, gx, col, 0, nred * live, sy, sz)
        _pocket_colour(r, z_, diag, gz, gy, gx, col, nred, nred + (nvox - nred) * live, sy, sz)
    for k in range(npk * live):
        num = ti.cast(0.0, ti.f64)
        den = ti.cast(0.0, ti.f64)
        for j in range(off[k], off[k + 1]):
            i = idx[j]
            jz = diag[i] * z_[i] - neighbor_sum(z_, gz, gy, gx, i, sy, sz)
            num += ti.cast(r[i] - jz, ti.f64)
            den += ti.cast(diag[i] - conductance_sum(gz, gy, gx, i, sy, sz), ti.f64)
        c = ti.cast(0.0, ti.f64)
        if den > 0:  # a pocket without any sink is singular: no constant correction
            c = num / den
        corr[k] = c
    for j in range(nvox * live):
        z_[idx[j]] += ti.cast(corr[pid[j]], dt)
    for _ in ti.static(range(sweeps)):
        _pocket_colour(r, z_, diag, gz, gy, gx, col, nred, nred + (nvox - nred) * live, sy, sz)
        _pocket_colour(r, z_, diag, gz, gy, gx, col, 0, nred * live, sy, sz)
