"""Coarse solves of the multigrid cycle: the coarsest level and the sealed pockets (kernels).

*Coarsest level*: a banded Cholesky factorisation in float64 (dimensions reordered so the band
is the product of the two smallest ones, :func:`kernels.solver_plan.band_ordering`),
refactored at every Newton step. Pivots of a singular block (an isolated pocket with no sink
at all) are regularised, which keeps the preconditioner SPD.

*Sealed pockets*: marrow sealed off by bone (common in segmented masks) shares coarse cells
with marrow it is not connected to, so the hierarchy cannot correct its smooth modes; with a
weak sink each pocket then costs CG about one iteration. Components of at most ``pocket_max``
voxels other than the largest (labelled on the host) are masked out of the cycle
(:func:`mask_pockets`) and solved by a two-level cycle of their own (:func:`pocket_solve`).
J is block diagonal across components, so the preconditioner stays symmetric.
"""

# No `from __future__ import annotations`: the kernel compiler reads annotations as objects.

from .ti_compat import ti
from .transport import ND1, ND1_F64, conductance_sum, neighbor_sum

__all__ = ["POCKET_SWEEPS", "band_factor", "band_solve", "mask_pockets", "pocket_solve"]

#: Gauss-Seidel sweeps on each side of a pocket's constant-mode correction. Pockets hold few
#: voxels, so this is cheap; 8 reaches the iteration count of the same domain without
#: pockets for pockets of 5^3 voxels (2 sweeps leave about 4 extra CG iterations).
POCKET_SWEEPS = 8


@ti.kernel
def band_factor(
    diag: ND1, gz: ND1, gy: ND1, gx: ND1, L: ND1_F64,
    nz: ti.i32, ny: ti.i32, nx: ti.i32, kz: ti.i32, ky: ti.i32, kx: ti.i32, band: ti.i32,
):
    """Assemble the coarsest matrix in band storage and factor it (Cholesky, float64, serial).

    Row k (band order ``k = z*kz + y*ky + x*kx``) keeps ``L[k*(band+1) + j] = L_{k, k-j}``.
    """
    n = nz * ny * nx
    w = band + 1
    sz = nx * ny
    for i in range(n * w):
        L[i] = 0.0
    ti.loop_config(serialize=True)
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                p = sz + (z * ny + y) * nx + x
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
    for k in range(n):
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


@ti.kernel
def band_solve(
    L: ND1_F64, b: ND1, e: ND1, diag: ND1, tmp: ND1_F64,
    nz: ti.i32, ny: ti.i32, nx: ti.i32, kz: ti.i32, ky: ti.i32, kx: ti.i32, band: ti.i32,
):
    """Solve the coarsest system with the banded Cholesky factor (serial, float64)."""
    dt = e.get_type().element_type
    n = nz * ny * nx
    w = band + 1
    sz = nx * ny
    ti.loop_config(serialize=True)
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                tmp[z * kz + y * ky + x * kx] = ti.cast(b[sz + (z * ny + y) * nx + x], ti.f64)
    ti.loop_config(serialize=True)
    for k in range(n):
        acc = tmp[k]
        for m in range(ti.max(0, k - band), k):
            acc -= L[k * w + (k - m)] * tmp[m]
        tmp[k] = acc / L[k * w]
    ti.loop_config(serialize=True)
    for i in range(n):
        k = n - 1 - i
        acc = tmp[k]
        for m in range(k + 1, ti.min(n, k + band + 1)):
            acc -= L[m * w + (m - k)] * tmp[m]
        tmp[k] = acc / L[k * w]
    for z, y, x in ti.ndrange(nz, ny, nx):
        p = sz + (z * ny + y) * nx + x
        v = ti.cast(0.0, ti.f64)
        if diag[p] > 0:
            v = tmp[z * kz + y * ky + x * kx]
        e[p] = ti.cast(v, dt)


@ti.kernel
def mask_pockets(inv_diag: ND1, idx: ND1, nidx: ti.i32):
    """Take pocket voxels out of the multigrid cycle (inv_diag = 0: never smoothed/restricted)."""
    for j in range(nidx):
        inv_diag[idx[j]] = 0.0


@ti.func
def _pocket_gs(r: ti.template(), z_: ti.template(), diag: ti.template(), gz: ti.template(), gy: ti.template(),
               gx: ti.template(), idx: ti.template(), lo, hi, reverse, sy, sz):
    """One Gauss-Seidel sweep over a pocket's voxels, in list order or reversed."""
    for jj in range(lo, hi):
        j = jj
        if reverse != 0:
            j = hi - 1 - (jj - lo)
        i = idx[j]
        d = diag[i]
        # d = 0: a lone voxel with no sink at all (singular); leave it at 0 like inactive ones
        z_[i] = ti.select(d > 0, (r[i] + neighbor_sum(z_, gz, gy, gx, i, sy, sz)) / ti.max(d, 1e-30), 0.0)


@ti.kernel
def pocket_solve(
    r: ND1, z_: ND1, diag: ND1, gz: ND1, gy: ND1, gx: ND1, idx: ND1, off: ND1, npk: ti.i32,
    sweeps: ti.i32, nz: ti.i32, ny: ti.i32, nx: ti.i32,
):
    """z = M_k^{-1} r on every sealed pocket k: a symmetric two-level cycle of its own.

    ``sweeps`` forward Gauss-Seidel sweeps, the exact correction of the pocket's constant mode
    (``1 . J 1`` is the pocket's total sink: diffusion inside a sealed component has zero row
    sums), then as many backward sweeps: the adjoint order, so the cycle is symmetric. A
    pocket shares coarse cells with marrow it is not connected to, so the main multigrid
    cycle cannot resolve its smooth modes; pockets are therefore masked out of it. One thread
    per pocket, voxels in a fixed order: deterministic.
    """
    dt = z_.get_type().element_type
    sy = nx
    sz = nx * ny
    for k in range(npk):
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
