"""Steady and implicit solves of the transport operator: Newton + multigrid-preconditioned CG.

The problem is the one of :mod:`kernels.transport` (``F(u) = 0``, or one backward Euler step
of ``du/dt = F(u)``). :class:`MultigridSolver` owns the whole grid hierarchy (dense Taichi
ndarrays, allocated once) and the finest-level coefficient arrays ``D, a, vmax, s``, which
:func:`kernels.transport.assemble_coefficients` fills. One solver serves every field of a
grid: assemble a field's coefficients, solve, move on to the next field.

Algorithm
---------
*Outer*: Newton on the Michaelis-Menten term (a linear problem takes one Newton step plus
one refinement step). The Newton iterate is kept in float64 while everything else is in the
working dtype: this is mixed-precision iterative refinement, and it is what lets a float32
solve reach a relative residual of 1e-6. (The residual of a float32-*rounded* field cannot go
below about ``eps32 ||A|| ||u|| / ||s||``, which is ~1e-6 for O2-like problems; it is
reported separately as ``SolveInfo.field_relative_residual``.) Steps that would make ``u``
negative are clamped at 0 (the exact solution is >= 0, and Newton on this concave
nonlinearity rises monotonically from below, so clamping never stalls it). Inexact Newton:
the inner tolerance follows Eisenstat-Walker (choice 2), never tighter than what the final
tolerance needs. From a zero field the first step linearises Michaelis-Menten as saturated
(rate vmax, slope 0) instead of its tangent at 0 (slope vmax/km, which allows only a tiny
step): that lands on the zero-order solution wherever u >> km, and Newton takes over.

*Inner*: conjugate gradients on the Newton system ``J du = F`` (J is symmetric positive
definite on the active voxels: an M-matrix with positive diagonal shifts), preconditioned by
one multigrid cycle (default: F-cycle, 2 pre- and 2 post-smoothing sweeps; V and W cycles
are available):

- smoother: red-black Gauss-Seidel, (red, black) before coarse correction and (black, red)
  after, so each cycle is a symmetric operator as CG requires. After the black half-sweep
  the black residuals are exactly 0, so only red residuals are restricted; the coarse
  correction is added to red cells only, because the next (black) half-sweep reads only
  those and the red half-sweep after it overwrites them;
- coarsening: cell-centred 2x2x2 aggregation; a dimension of size n becomes ceil(n/2), the
  last coarse cell of an odd dimension holding one fine cell, and dimensions of size 1 stay
  (thin domains semi-coarsen). Coarsening stops at <= ``coarse_max`` cells;
- restriction: sum of the children's residuals; prolongation: piecewise-constant injection;
- coarse operator by *conductance aggregation*: the coarse face between coarse cells I and J
  has conductance ``2/(w_I + w_J) * sum(fine face conductances crossing it)``, w being the
  widths (1 or 2 fine cells) along the face normal. The sum is the parallel combination of
  the fine faces; the factor is the series correction for the longer centre-to-centre
  distance (exact for uniform D: 4 faces x D h^2/h at distance 2h -> 2 D h). Plain Galerkin
  aggregation (factor 1) makes the coarse diffusion twice too stiff and the cycle
  convergence level-dependent. Linear sinks (a, Newton term) of the children add up, as in
  Galerkin. Inactive voxels (D = 0) drop out naturally (zero conductances);
- coarsest level: a banded Cholesky factorisation in float64 (dimensions reordered so the
  band is the product of the two smallest ones), refactored at every Newton step. Pivots of a
  singular block (an isolated pocket with no sink at all) are regularised, which keeps the
  preconditioner SPD.

Sealed pockets: marrow sealed off by bone (common in segmented masks) shares coarse cells
with marrow it is not connected to, so the hierarchy cannot correct its smooth modes; with a
weak sink each pocket then costs CG about one iteration (21 instead of 8 at 256^3 on a
noise-trabecula test domain). The active set is labelled on the host (scipy, only when a
fingerprint of ``D > 0`` changes); components of at most ``pocket_max`` voxels other than the
largest are masked out of the cycle and solved by a two-level cycle of their own
(``POCKET_SWEEPS`` Gauss-Seidel sweeps, exact constant-mode correction, sweeps in reverse).
J is block diagonal across components, so the preconditioner stays symmetric.

All reductions accumulate in float64, per row then in a fixed order: results are bitwise
reproducible for a given grid, backend and thread count.

Launches: a visit of a level is two kernels (``_presmooth_restrict``, ``_prolong_postsmooth``)
and a CG iteration after the cycle one (``_cg_step``): their top-level loops run in order with
the arithmetic of the one-loop kernels, so results are bitwise those of separate launches, at
a fifth of the Python launch overhead (~60 us per launch with 6-8 ndarray arguments).

Measured (2-core CPU, float32, tol 1e-6; ``python -m benchmarks`` and
``python -m benchmarks.transport``, see docs/benchmarks.md): CG iterations 5-8 for O2 and 6-8
for a linear drug field from 32^3 to 256^3; at 128^3 a cold O2 solve 0.36-0.6 s and a warm
re-solve 0.21-0.37 s (machine load 1.2-1.9).
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations as objects.

import math
from dataclasses import dataclass, field

import numpy as np

from .ti_compat import ti
from .transport import (
    ND1,
    ND1_F64,
    conductance_sum,
    face_conductances,
    finish_sum,
    neighbor_sum,
    padded_size,
    residual_jacobian,
)

__all__ = ["SolveInfo", "MultigridSolver", "hierarchy_shapes"]

ND3 = ti.types.ndarray(ndim=3)

# Scalar register slots (float64 ndarray shared by the kernels; 0 and 1 are transport's).
S_FF, S_SS, S_VM, S_XX = 0, 1, 2, 3
S_RZ, S_RZ_OLD, S_PQ, S_RR = 4, 5, 6, 7
S_FP = 8  # fingerprint of the active set (see transport.face_conductances)
N_SCAL = 10

#: Gauss-Seidel sweeps on each side of a pocket's constant-mode correction. Pockets hold few
#: voxels, so this is cheap; 8 reaches the iteration count of the same domain without
#: pockets for pockets of 5^3 voxels (2 sweeps leave about 4 extra CG iterations).
POCKET_SWEEPS = 8


@dataclass
class SolveInfo:
    """Outcome of one solve.

    Attributes
    ----------
    converged : bool
        True when ``relative_residual <= tol``. False means the field must not be trusted.
    iterations : int
        Conjugate-gradient iterations (= V-cycles), summed over Newton steps.
    newton_iterations : int
        Newton (outer) steps taken.
    residual_history : list of float
        Relative residual before the first and after each Newton step.
    relative_residual : float
        ``||F(u)||_2 / ||s_eff||_2`` of the float64 iterate, over active voxels; ``s_eff = s``
        (plus ``u_old/dt`` for a backward Euler step). Dimensionless.
    field_relative_residual : float
        The same for the field as stored in its own dtype (float32 rounding adds ~1e-6 for
        O2-like problems; equal to ``relative_residual`` in float64; NaN when the solve was
        called with ``field_residual=False``).
    scale : float
        ``||s_eff||_2`` [u/min]. When it is 0 the answer is ``u = 0``, returned at once.
    message : str
        Why the solve stopped.
    """

    converged: bool
    iterations: int
    newton_iterations: int
    residual_history: list = field(default_factory=list)
    relative_residual: float = math.inf
    field_relative_residual: float = math.inf
    scale: float = 0.0
    message: str = ""


def hierarchy_shapes(shape, coarse_max: int = 512):
    """Grid shapes of the multigrid levels, finest first, and the coarsening factors.

    Returns
    -------
    shapes : list of tuple
    factors : list of tuple
        ``factors[l]`` (1 or 2 per dimension) maps level l to l + 1.
    """
    shapes = [tuple(int(n) for n in shape)]
    factors = []
    while int(np.prod(shapes[-1])) > coarse_max and max(shapes[-1]) > 1:
        f = tuple(2 if n > 1 else 1 for n in shapes[-1])
        factors.append(f)
        shapes.append(tuple((n + k - 1) // k for n, k in zip(shapes[-1], f)))
    return shapes, factors


# ---------------------------------------------------------------------------------------------
# Multigrid kernels (flat padded 1-D ndarrays, see transport.padded_size; compiled once per
# dtype and shared by every level and every solver)
# ---------------------------------------------------------------------------------------------


@ti.func
def _gs_half_sweep(
    b: ti.template(), inv_diag: ti.template(), gz: ti.template(), gy: ti.template(), gx: ti.template(),
    e: ti.template(), color, nz, ny, nx, zero: ti.template(),
):
    """Gauss-Seidel half-sweep on one colour: e_p = (b_p + sum g e_q) / diag_p.

    ``zero`` (compile-time): the first half-sweep from a zero guess, e = b / diag (no
    neighbours read). Inactive cells have inv_diag = 0 and stay 0; no branch in the loop.
    A parallel loop: call at kernel top level.
    """
    sy = nx
    sz = nx * ny
    for z, y in ti.ndrange(nz, ny):
        x0 = (z + y + color) & 1
        base = sz + (z * ny + y) * nx + x0
        for h in range((nx - x0 + 1) // 2):
            p = base + 2 * h
            if ti.static(zero):
                e[p] = b[p] * inv_diag[p]
            else:
                e[p] = (b[p] + neighbor_sum(e, gz, gy, gx, p, sy, sz)) * inv_diag[p]


@ti.func
def _prolong_loop(e: ti.template(), ec: ti.template(), color, nz, ny, nx, cny, cnx, shz, shy, shx):
    """e += ec[parent] (piecewise-constant prolongation) on one colour only (top level)."""
    sz = nx * ny
    csz = cnx * cny
    for z, y in ti.ndrange(nz, ny):
        x0 = (z + y + color) & 1
        base = sz + (z * ny + y) * nx
        cbase = csz + ((z >> shz) * cny + (y >> shy)) * cnx
        for h in range((nx - x0 + 1) // 2):
            x = x0 + 2 * h
            e[base + x] += ec[cbase + (x >> shx)]


@ti.func
def _restrict_loop(
    b: ti.template(), diag: ti.template(), inv_diag: ti.template(), gz: ti.template(), gy: ti.template(),
    gx: ti.template(), e: ti.template(), bc: ti.template(), color,
    nz, ny, nx, cnz, cny, cnx, fz, fy, shx,
):
    """bc = sum over the children of the fine residual b - A e, cells of ``color`` only (top level).

    One thread owns each coarse row and walks its fine rows in order: no atomics.
    """
    sy = nx
    sz = nx * ny
    csz = cnx * cny
    for cz, cy in ti.ndrange(cnz, cny):
        cbase = csz + (cz * cny + cy) * cnx
        for cx in range(cnx):
            bc[cbase + cx] = 0.0
        for kz in range(fz):
            z = cz * fz + kz
            for ky in range(fy):
                y = cy * fy + ky
                if z < nz and y < ny:
                    x0 = (z + y + color) & 1
                    base = sz + (z * ny + y) * nx
                    for h in range((nx - x0 + 1) // 2):
                        x = x0 + 2 * h
                        p = base + x
                        res = b[p] + neighbor_sum(e, gz, gy, gx, p, sy, sz) - diag[p] * e[p]
                        # cells outside the cycle (inactive, or in a sealed pocket) carry none
                        res = ti.select(inv_diag[p] > 0, res, 0.0)
                        c = cbase + (x >> shx)
                        bc[c] = bc[c] + res  # plain load/store: this thread owns the row


@ti.kernel
def _smooth(
    b: ND1, inv_diag: ND1, gz: ND1, gy: ND1, gx: ND1, e: ND1, color: ti.i32, nz: ti.i32, ny: ti.i32, nx: ti.i32
):
    """Gauss-Seidel half-sweep on one colour: e_p = (b_p + sum g e_q) / diag_p.

    Inactive cells have inv_diag = 0 and stay 0; no branch in the loop.
    """
    _gs_half_sweep(b, inv_diag, gz, gy, gx, e, color, nz, ny, nx, False)


# The two kernels one visit of a level launches (instead of 2 x sweeps + 2 one-loop kernels).
# A Taichi kernel runs its top-level loops one after the other, each in parallel, so the
# arithmetic and its order are exactly those of separate one-loop kernels; only the Python
# launch overhead (about 60 us per launch with 6-8 ndarray arguments on the CPU, i.e. most of
# the time of a level below 32^3) is paid once instead of 5 times.


@ti.kernel
def _presmooth_restrict(
    b: ND1, diag: ND1, inv_diag: ND1, gz: ND1, gy: ND1, gx: ND1, e: ND1, bc: ND1,
    nz: ti.i32, ny: ti.i32, nx: ti.i32, cnz: ti.i32, cny: ti.i32, cnx: ti.i32,
    fz: ti.i32, fy: ti.i32, shx: ti.i32, zero_guess: ti.template(), sweeps: ti.template(),
):
    """Pre-smoothing ``sweeps`` x (red, black), then restriction of the red residuals to bc."""
    _gs_half_sweep(b, inv_diag, gz, gy, gx, e, 0, nz, ny, nx, zero_guess)
    _gs_half_sweep(b, inv_diag, gz, gy, gx, e, 1, nz, ny, nx, False)
    for _ in ti.static(range(sweeps - 1)):
        _gs_half_sweep(b, inv_diag, gz, gy, gx, e, 0, nz, ny, nx, False)
        _gs_half_sweep(b, inv_diag, gz, gy, gx, e, 1, nz, ny, nx, False)
    # black residuals are 0 after the black half-sweep: restrict the red ones only
    _restrict_loop(b, diag, inv_diag, gz, gy, gx, e, bc, 0, nz, ny, nx, cnz, cny, cnx, fz, fy, shx)


@ti.kernel
def _prolong_postsmooth(
    b: ND1, inv_diag: ND1, gz: ND1, gy: ND1, gx: ND1, e: ND1, ec: ND1,
    nz: ti.i32, ny: ti.i32, nx: ti.i32, cny: ti.i32, cnx: ti.i32, shz: ti.i32, shy: ti.i32, shx: ti.i32,
    sweeps: ti.template(),
):
    """Coarse correction of the red cells, then post-smoothing ``sweeps`` x (black, red)."""
    # the black half-sweep reads red cells only: correct those, then sweep black, red
    _prolong_loop(e, ec, 0, nz, ny, nx, cny, cnx, shz, shy, shx)
    for _ in ti.static(range(sweeps)):
        _gs_half_sweep(b, inv_diag, gz, gy, gx, e, 1, nz, ny, nx, False)
        _gs_half_sweep(b, inv_diag, gz, gy, gx, e, 0, nz, ny, nx, False)


@ti.kernel
def _coarsen_conductances(
    gzf: ND1, gyf: ND1, gxf: ND1, gzc: ND1, gyc: ND1, gxc: ND1,
    nz: ti.i32, ny: ti.i32, nx: ti.i32, cnz: ti.i32, cny: ti.i32, cnx: ti.i32,
    fz: ti.i32, fy: ti.i32, fx: ti.i32, dt: ti.template(),
):
    """Coarse face conductances by aggregation (see the module docstring).

    Face I -> I+1 along x: ``2/(w_I + w_{I+1})`` times the sum of the fine x-faces between the
    last fine column of I and the first of I+1, over the children in y and z.
    """
    sz = nx * ny
    csz = cnx * cny
    for cz, cy in ti.ndrange(cnz, cny):
        for cx in range(cnx):
            cp = csz + (cz * cny + cy) * cnx + cx
            z0 = cz * fz
            y0 = cy * fy
            x0 = cx * fx
            wz = ti.min(fz, nz - z0)
            wy = ti.min(fy, ny - y0)
            wx = ti.min(fx, nx - x0)
            gx_ = ti.cast(0.0, dt)
            gy_ = ti.cast(0.0, dt)
            gz_ = ti.cast(0.0, dt)
            if cx < cnx - 1:
                x = x0 + wx - 1
                wn = ti.min(fx, nx - (x0 + fx))
                for kz in range(wz):
                    for ky in range(wy):
                        gx_ += gxf[sz + ((z0 + kz) * ny + y0 + ky) * nx + x]
                gx_ *= 2.0 / (wx + wn)
            if cy < cny - 1:
                y = y0 + wy - 1
                wn = ti.min(fy, ny - (y0 + fy))
                for kz in range(wz):
                    for kx in range(wx):
                        gy_ += gyf[sz + ((z0 + kz) * ny + y) * nx + x0 + kx]
                gy_ *= 2.0 / (wy + wn)
            if cz < cnz - 1:
                z = z0 + wz - 1
                wn = ti.min(fz, nz - (z0 + fz))
                for ky in range(wy):
                    for kx in range(wx):
                        gz_ += gzf[sz + (z * ny + y0 + ky) * nx + x0 + kx]
                gz_ *= 2.0 / (wz + wn)
            gxc[cp] = gx_
            gyc[cp] = gy_
            gzc[cp] = gz_


@ti.kernel
def _coarsen_diag(
    diag: ND1, inv_diag: ND1, gz: ND1, gy: ND1, gx: ND1, diagc: ND1, inv_diagc: ND1, gzc: ND1, gyc: ND1, gxc: ND1,
    nz: ti.i32, ny: ti.i32, nx: ti.i32, cnz: ti.i32, cny: ti.i32, cnx: ti.i32,
    fz: ti.i32, fy: ti.i32, fx: ti.i32, dt: ti.template(),
):
    """Coarse diagonal = coarse conductance sum + the children's linear sinks (diag - sum g)."""
    sy = nx
    sz = nx * ny
    csz = cnx * cny
    for cz, cy in ti.ndrange(cnz, cny):
        for cx in range(cnx):
            cp = csz + (cz * cny + cy) * cnx + cx
            sink = ti.cast(0.0, ti.f64)
            for kz in range(fz):
                z = cz * fz + kz
                for ky in range(fy):
                    y = cy * fy + ky
                    for kx in range(fx):
                        x = cx * fx + kx
                        if z < nz and y < ny and x < nx:
                            p = sz + (z * ny + y) * nx + x
                            if inv_diag[p] > 0:  # cells in the cycle only (not pockets)
                                sink += ti.cast(diag[p] - conductance_sum(gz, gy, gx, p, sy, sz), ti.f64)
            gsum = ti.cast(conductance_sum(gzc, gyc, gxc, cp, cnx, csz), ti.f64)
            d = ti.cast(0.0, ti.f64)
            idg = ti.cast(0.0, ti.f64)
            if gsum > 0 or sink > 0:
                d = gsum + ti.max(sink, 0.0)  # rounding must not turn a sink negative
                idg = 1.0 / d
            diagc[cp] = ti.cast(d, dt)
            inv_diagc[cp] = ti.cast(idg, dt)


@ti.kernel
def _band_factor(
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
def _band_solve(
    L: ND1_F64, b: ND1, e: ND1, diag: ND1, tmp: ND1_F64,
    nz: ti.i32, ny: ti.i32, nx: ti.i32, kz: ti.i32, ky: ti.i32, kx: ti.i32, band: ti.i32, dt: ti.template(),
):
    """Solve the coarsest system with the banded Cholesky factor (serial, float64)."""
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
def _mask_pockets(inv_diag: ND1, idx: ND1, nidx: ti.i32):
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
def _pocket_solve(
    r: ND1, z_: ND1, diag: ND1, gz: ND1, gy: ND1, gx: ND1, idx: ND1, off: ND1, npk: ti.i32,
    sweeps: ti.i32, nz: ti.i32, ny: ti.i32, nx: ti.i32, dt: ti.template(),
):
    """z = M_k^{-1} r on every sealed pocket k: a symmetric two-level cycle of its own.

    ``sweeps`` forward Gauss-Seidel sweeps, the exact correction of the pocket's constant mode
    (``1 . J 1`` is the pocket's total sink: diffusion inside a sealed component has zero row
    sums), then as many backward sweeps: the adjoint order, so the cycle is symmetric. A
    pocket shares coarse cells with marrow it is not connected to, so the main multigrid
    cycle cannot resolve its smooth modes; pockets are therefore masked out of it. One thread
    per pocket, voxels in a fixed order: deterministic.
    """
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


# ---------------------------------------------------------------------------------------------
# CG and Newton kernels (padded arrays; loops over the interior only)
# ---------------------------------------------------------------------------------------------


@ti.kernel
def _cg_step(
    r: ND1, z_: ND1, p_: ND1, q: ND1, dx: ND1, diag: ND1, gz: ND1, gy: ND1, gx: ND1,
    part: ND1_F64, scal: ND1_F64, first: ti.i32, nz: ti.i32, ny: ti.i32, nx: ti.i32, dt: ti.template(),
):
    """One preconditioned CG iteration after the cycle (z = M^-1 r), in one launch.

    Four consecutive top-level loops (bitwise the same result as four separate kernels):
    rz = r.z; p = z + beta p; q = J p, pq = p.q; dx += alpha p, r -= alpha q, rr = r.r.
    """
    sy = nx
    sz = nx * ny
    for z, y in ti.ndrange(nz, ny):
        acc = ti.cast(0.0, ti.f64)
        base = sz + (z * ny + y) * nx
        for x in range(nx):
            acc += ti.cast(r[base + x], ti.f64) * ti.cast(z_[base + x], ti.f64)
        part[z * ny + y] = acc
    ti.loop_config(serialize=True)
    for _ in range(1):
        scal[S_RZ_OLD] = scal[S_RZ]
    finish_sum(part, nz * ny, 1, scal, S_RZ)
    b64 = ti.cast(0.0, ti.f64)
    if first == 0 and scal[S_RZ_OLD] != 0:
        b64 = scal[S_RZ] / scal[S_RZ_OLD]
    beta = ti.cast(b64, dt)
    for i in range(sz, sz + nz * sz):
        p_[i] = z_[i] + beta * p_[i]
    for z, y in ti.ndrange(nz, ny):
        dot = ti.cast(0.0, ti.f64)
        base = sz + (z * ny + y) * nx
        for x in range(nx):
            i = base + x
            qi = diag[i] * p_[i] - neighbor_sum(p_, gz, gy, gx, i, sy, sz)
            q[i] = qi
            dot += ti.cast(p_[i], ti.f64) * ti.cast(qi, ti.f64)
        part[z * ny + y] = dot
    finish_sum(part, nz * ny, 1, scal, S_PQ)
    a64 = ti.cast(0.0, ti.f64)
    if scal[S_PQ] > 0:  # a non-positive curvature means breakdown: take no step
        a64 = scal[S_RZ] / scal[S_PQ]
    alpha = ti.cast(a64, dt)
    for z, y in ti.ndrange(nz, ny):
        acc = ti.cast(0.0, ti.f64)
        base = sz + (z * ny + y) * nx
        for x in range(nx):
            i = base + x
            dx[i] += alpha * p_[i]
            ri = r[i] - alpha * q[i]
            r[i] = ri
            acc += ti.cast(ri, ti.f64) * ti.cast(ri, ti.f64)
        part[z * ny + y] = acc
    finish_sum(part, nz * ny, 1, scal, S_RR)


@ti.kernel
def _newton_update(x64: ND1_F64, dx: ND1, D: ND1, n: ti.i32, pad: ti.i32):
    """x = max(x + dx, 0) on active voxels: the exact solution is >= 0."""
    for i in range(n):
        v = ti.cast(0.0, ti.f64)
        if D[i] > 0:
            v = ti.max(x64[i + pad] + ti.cast(dx[i + pad], ti.f64), 0.0)
        x64[i + pad] = v


@ti.kernel
def _round_iterate(x64: ND1_F64, lo: ti.i32, hi: ti.i32, dt: ti.template()):
    """Replace the iterate by its value rounded to the field dtype (what will be stored)."""
    for i in range(lo, hi):
        x64[i] = ti.cast(ti.cast(x64[i], dt), ti.f64)


@ti.kernel
def _load_from_field(u: ti.template(), x64: ND1_F64, D: ND1):
    nz, ny, nx = u.shape
    for z, y in ti.ndrange(nz, ny):
        for x in range(nx):
            p = (z * ny + y) * nx + x
            v = ti.cast(0.0, ti.f64)
            if D[p] > 0:
                v = ti.max(ti.cast(u[z, y, x], ti.f64), 0.0)
            x64[p + nx * ny] = v


@ti.kernel
def _load_from_array(u: ND3, x64: ND1_F64, D: ND1):
    nz, ny, nx = u.shape[0], u.shape[1], u.shape[2]
    for z, y in ti.ndrange(nz, ny):
        for x in range(nx):
            p = (z * ny + y) * nx + x
            v = ti.cast(0.0, ti.f64)
            if D[p] > 0:
                v = ti.max(ti.cast(u[z, y, x], ti.f64), 0.0)
            x64[p + nx * ny] = v


@ti.kernel
def _copy_unpad(src: ND1_F64, dst: ND1, n: ti.i32, pad: ti.i32, dt: ti.template()):
    for i in range(n):
        dst[i] = ti.cast(src[i + pad], dt)


@ti.kernel
def _store_to_field(x64: ND1_F64, u: ti.template()):
    nz, ny, nx = u.shape
    for z, y in ti.ndrange(nz, ny):
        for x in range(nx):
            u[z, y, x] = ti.cast(x64[nx * ny + (z * ny + y) * nx + x], u.dtype)


@ti.kernel
def _store_to_array(x64: ND1_F64, u: ND3, dt: ti.template()):
    nz, ny, nx = u.shape[0], u.shape[1], u.shape[2]
    for z, y in ti.ndrange(nz, ny):
        for x in range(nx):
            u[z, y, x] = ti.cast(x64[nx * ny + (z * ny + y) * nx + x], dt)


# ---------------------------------------------------------------------------------------------
# The solver
# ---------------------------------------------------------------------------------------------


def _dtype_of(u):
    """Taichi float type of a numpy array or Taichi ndarray."""
    dt = u.dtype
    if isinstance(dt, np.dtype) or (isinstance(dt, type) and issubclass(dt, np.generic)):
        dt = np.dtype(dt)
        if dt == np.float32:
            return ti.f32
        if dt == np.float64:
            return ti.f64
        raise TypeError(f"u must be float32 or float64, got {dt}")
    return dt


#: Extra elements at the end of every padded solver array. Arrays whose byte size is a
#: multiple of 4 KiB (64^3 grids: (64+2)*64*64*4 bytes) all start at the same offset modulo
#: 4 KiB, so a kernel that stores to one and loads from another at the same index suffers
#: 4K aliasing and cache-set conflicts: the CG update loop ran 2.6x slower per voxel at 64^3 than
#: at 96^3 (benchmarks/suite.py, 1 thread). 32 unused elements shift each following
#: allocation by 128-256 bytes. Kernels never read them.
_STAGGER = 32


def _alloc(dtype, size: int, keep: list | None = None):
    """A zero-filled Taichi ndarray of ``size`` elements (+ ``_STAGGER`` unused ones).

    With ``keep`` the array has exactly ``size`` elements (public arrays whose length is part
    of the API) and a small spacer allocation, appended to ``keep``, staggers the next one.
    """
    if keep is None:
        arr = ti.ndarray(dtype, shape=size + _STAGGER)
    else:
        arr = ti.ndarray(dtype, shape=size)
        keep.append(ti.ndarray(dtype, shape=_STAGGER))
    arr.fill(0)
    return arr


class _Level:
    """Arrays of one multigrid level (flat, padded C order)."""

    def __init__(self, shape, dtype, factor, b=None, e=None):
        self.shape = shape
        self.n = int(np.prod(shape))
        self.pad = shape[1] * shape[2]
        self.size = padded_size(shape)
        self.factor = factor  # to the next coarser level, or None
        # zero-filled: the padding planes must hold zeros (read by every stencil)
        mk = lambda: _alloc(dtype, self.size)  # noqa: E731
        self.gz, self.gy, self.gx, self.diag, self.inv_diag = mk(), mk(), mk(), mk(), mk()
        self.b = b if b is not None else mk()
        self.e = e if e is not None else mk()


@ti.data_oriented
class MultigridSolver:
    """Newton + multigrid-preconditioned CG solver of the transport operator on one grid.

    Parameters
    ----------
    shape : tuple of 3 int
        Grid shape (nz, ny, nx); any sizes (not only powers of two).
    voxel_um : float
        Voxel edge h [um].
    dtype : Taichi float type
        ``ti.f32`` (default) or ``ti.f64``: the type of every field. Norms and dot products
        always accumulate in float64, and the Newton iterate is float64.
    coarse_max : int
        Coarsening stops at this many cells; that level is solved directly.
    smoothing_sweeps : int
        Red-black Gauss-Seidel sweeps before and after each coarse correction (default 2).
    cycle : {"F", "V", "W"}
        Multigrid cycle used as the CG preconditioner (default "F": the V-cycle's cost with
        the W-cycle's level-independence on these problems).
    pocket_max : int
        Active components (marrow sealed off by bone) of at most this many voxels, other than
        the largest, are solved on their own (two-level cycle per pocket) instead of by the
        grid hierarchy, which cannot represent them. Larger sealed regions own most of their
        coarse cells and stay in the hierarchy.
    field_residual : bool
        Default of :meth:`solve`'s ``field_residual``: whether every solve also reports the
        residual of the float32-rounded field (one more residual pass). The model turns it off.

    Attributes
    ----------
    D, a, vmax, s : Taichi ndarrays, 1-D of length nz*ny*nx (C order), dtype ``dtype``
        Finest-level coefficients: diffusivity [um^2/min], linear sink [1/min], Michaelis-
        Menten maximal rate [u/min], source [u/min]. Write them with
        :func:`kernels.transport.assemble_coefficients` or :meth:`set_coefficients`.
    levels : list
        The hierarchy (shapes in ``[lev.shape for lev in levels]``).

    Notes
    -----
    Memory: about 17 words per voxel on the finest grid (coefficients, conductances, CG
    vectors, a float64 iterate) plus 1/7 of that for the coarse levels. Kernels take flat
    ndarrays, so they compile once per process and dtype, whatever the grid.
    """

    def __init__(
        self, shape, voxel_um: float, dtype=ti.f32, *,
        coarse_max: int = 512, smoothing_sweeps: int = 2, cycle: str = "F", pocket_max: int = 1000,
        field_residual: bool = True,
    ):
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"shape must be 3 positive sizes, got {shape}")
        if not voxel_um > 0:
            raise ValueError(f"voxel_um must be > 0, got {voxel_um}")
        if dtype not in (ti.f32, ti.f64):
            raise ValueError("dtype must be ti.f32 or ti.f64")
        if smoothing_sweeps < 1:
            raise ValueError("smoothing_sweeps must be >= 1")
        if cycle not in ("V", "W", "F"):
            raise ValueError(f"cycle must be 'V', 'W' or 'F', got {cycle!r}")
        self.cycle = cycle
        self.field_residual = bool(field_residual)
        self.shape = tuple(int(n) for n in shape)
        self.n = int(np.prod(self.shape))
        self.voxel_um = float(voxel_um)
        self.dtype = dtype
        self.smoothing_sweeps = int(smoothing_sweeps)
        self._pad = self.shape[1] * self.shape[2]
        size = padded_size(self.shape)
        self._spacers: list = []  # see _alloc: staggers the exact-length coefficient arrays
        self.D, self.a, self.vmax, self.s = (_alloc(dtype, self.n, self._spacers) for _ in range(4))
        # CG vectors (padded); r is the finest multigrid right-hand side and z its result
        self.r, self.z, self.p, self.q, self.dx = (_alloc(dtype, size) for _ in range(5))
        self.x64 = _alloc(ti.f64, size)
        self._uold = None  # allocated by the first backward Euler step
        shapes, factors = hierarchy_shapes(self.shape, coarse_max)
        self.levels = [_Level(shapes[0], dtype, factors[0] if factors else None, b=self.r, e=self.z)]
        for i in range(1, len(shapes)):
            self.levels.append(_Level(shapes[i], dtype, factors[i] if i < len(factors) else None))
        # coarsest level: band ordering with the largest dimension slowest
        c = self.levels[-1].shape
        order = sorted(range(3), key=lambda d: c[d])  # smallest first
        strides = [0, 0, 0]
        strides[order[0]] = 1
        strides[order[1]] = c[order[0]]
        strides[order[2]] = c[order[0]] * c[order[1]]
        self._band_strides = tuple(strides)
        self._band = max(1, max(strides[d] for d in range(3) if c[d] > 1) if max(c) > 1 else 1)
        nc = self.levels[-1].n
        self._L = ti.ndarray(ti.f64, shape=nc * (self._band + 1))
        self._btmp = ti.ndarray(ti.f64, shape=nc)
        self._part = ti.ndarray(ti.f64, shape=max(4 * self.shape[0] * self.shape[1], 4))
        self._scal = ti.ndarray(ti.f64, shape=N_SCAL)
        self._scal.fill(0)
        self._nonlinear = False
        self._cold = False
        self._active_fingerprint = None  # forces the pocket search on the first solve
        self.pocket_max = int(pocket_max)
        self._n_pockets = 0
        self._pocket_idx = self._pocket_off = None

    def __repr__(self) -> str:
        lv = " -> ".join("x".join(map(str, lev.shape)) for lev in self.levels)
        return f"MultigridSolver({lv}, h={self.voxel_um} um, {self.dtype}, band={self._band})"

    # ----------------------------------------------------------------------------- coefficients

    def set_coefficients(self, D=None, a=None, vmax=None, s=None) -> None:
        """Copy numpy arrays of shape ``shape`` into the finest-level coefficients.

        D [um^2/min], a [1/min], vmax [u/min], s [u/min]; all must be finite and >= 0.
        """
        np_dt = np.float32 if self.dtype == ti.f32 else np.float64
        for name, val in (("D", D), ("a", a), ("vmax", vmax), ("s", s)):
            if val is None:
                continue
            arr = np.asarray(val)
            if arr.shape != self.shape:
                raise ValueError(f"{name} has shape {arr.shape}, expected {self.shape}")
            if not np.all(np.isfinite(arr)) or np.any(arr < 0):
                raise ValueError(f"{name} must be finite and >= 0")
            getattr(self, name).from_numpy(np.ascontiguousarray(arr, dtype=np_dt).ravel())

    def coefficients(self) -> dict:
        """The finest-level coefficients as numpy arrays of shape ``shape``."""
        return {k: getattr(self, k).to_numpy().reshape(self.shape) for k in ("D", "a", "vmax", "s")}

    def residual(self, u, km: float) -> np.ndarray:
        """The steady residual F(u) [u/min] as a float64 numpy array (0 on inactive voxels).

        Evaluated by the same kernel the solver uses (float64 arithmetic on ``u``).
        """
        self._load(u)
        self._prepare_operator()
        self._residual(km, 0.0)
        # r holds F rounded to dtype; recompute nothing: for float64 solvers it is exact
        r = self.r.to_numpy()[self._pad : self._pad + self.n]
        return r.astype(np.float64).reshape(self.shape)

    # ---------------------------------------------------------------------------------- helpers

    def _prepare_operator(self) -> None:
        """Conductances of every level from D (once per solve: D may change between solves)."""
        nz, ny, nx = self.shape
        l0 = self.levels[0]
        face_conductances(
            self.D, l0.gz, l0.gy, l0.gx, self._part, self._scal, S_FP, nz, ny, nx, 1.0 / self.voxel_um**2, self.dtype
        )
        for f, c in zip(self.levels[:-1], self.levels[1:]):
            _coarsen_conductances(f.gz, f.gy, f.gx, c.gz, c.gy, c.gx, *f.shape, *c.shape, *f.factor, self.dtype)
        fingerprint = float(self._scalars()[S_FP])
        if fingerprint != self._active_fingerprint:
            self._find_pockets()
            self._active_fingerprint = fingerprint

    def _find_pockets(self) -> None:
        """Index the sealed pockets: active components other than the largest, of at most
        ``pocket_max`` voxels, each solved by :func:`_pocket_solve` instead of the cycle.

        Host-side labelling (scipy, 6-connected), redone only when the active set changes.
        Voxel indices are grouped by pocket in increasing order, so the pocket sums are taken
        in a fixed order (deterministic).
        """
        from scipy import ndimage

        active = self.D.to_numpy().reshape(self.shape) > 0
        labels, count = ndimage.label(active)
        self._n_pockets = 0
        if count <= 1:
            return
        flat = labels.ravel()
        sizes = np.bincount(flat)
        sizes[0] = 0
        main = int(np.argmax(sizes))
        small = sizes <= self.pocket_max
        small[0] = small[main] = False
        vox = np.nonzero(small[flat])[0]
        if vox.size == 0:
            return
        lab = flat[vox]
        order = np.argsort(lab, kind="stable")
        vox, lab = vox[order], lab[order]
        _, starts = np.unique(lab, return_index=True)
        offsets = np.append(starts, vox.size).astype(np.int32)
        self._pocket_idx = ti.ndarray(ti.i32, shape=vox.size)
        self._pocket_idx.from_numpy((vox + self._pad).astype(np.int32))
        self._pocket_off = ti.ndarray(ti.i32, shape=offsets.size)
        self._pocket_off.from_numpy(offsets)
        self._n_pockets = int(offsets.size - 1)

    def _prepare_coarse(self) -> None:
        """Coarse diagonals from the current finest Newton diagonal; refactor the coarsest."""
        if self._n_pockets:
            _mask_pockets(self.levels[0].inv_diag, self._pocket_idx, int(self._pocket_idx.shape[0]))
        for f, c in zip(self.levels[:-1], self.levels[1:]):
            _coarsen_diag(
                f.diag, f.inv_diag, f.gz, f.gy, f.gx, c.diag, c.inv_diag, c.gz, c.gy, c.gx,
                *f.shape, *c.shape, *f.factor, self.dtype,
            )
        lc = self.levels[-1]
        _band_factor(lc.diag, lc.gz, lc.gy, lc.gx, self._L, *lc.shape, *self._band_strides, self._band)

    def _cycle(self, level: int = 0, kind: str = "V", zero_guess: bool = True) -> None:
        """Improve e towards A^{-1} b on ``level`` by one multigrid cycle (e = 0 first if asked).

        Pre-smoothing sweeps (red, black), post-smoothing (black, red): each cycle is its own
        adjoint, so the preconditioner is symmetric as CG needs. ``kind`` "V" visits the
        coarser level once, "W" twice, "F" once as F then once as V.
        """
        lev = self.levels[level]
        dt = self.dtype
        if level == len(self.levels) - 1:
            if zero_guess:  # a second visit would find e already exact
                _band_solve(
                    self._L, lev.b, lev.e, lev.diag, self._btmp, *lev.shape, *self._band_strides, self._band, dt
                )
            return
        g = (lev.gz, lev.gy, lev.gx)
        nxt = self.levels[level + 1]
        fz, fy, fx = lev.factor
        sweeps = self.smoothing_sweeps
        _presmooth_restrict(
            lev.b, lev.diag, lev.inv_diag, *g, lev.e, nxt.b, *lev.shape, *nxt.shape, fz, fy, fx - 1,
            bool(zero_guess), sweeps,
        )
        if kind == "V":
            self._cycle(level + 1, "V", True)
        elif kind == "W":
            self._cycle(level + 1, "W", True)
            self._cycle(level + 1, "W", False)
        else:
            self._cycle(level + 1, "F", True)
            self._cycle(level + 1, "V", False)
        _prolong_postsmooth(
            lev.b, lev.inv_diag, *g, lev.e, nxt.e, *lev.shape, nxt.shape[1], nxt.shape[2], fz - 1, fy - 1, fx - 1,
            sweeps,
        )

    def _scalars(self) -> np.ndarray:
        return self._scal.to_numpy()

    def _residual(self, km: float, inv_dt: float, zero_order: bool = False) -> tuple[float, float]:
        """Residual at the iterate into r (and the Newton diagonal); returns (||F||, ||s_eff||)."""
        l0 = self.levels[0]
        uold = self._uold if inv_dt != 0 else self.s
        residual_jacobian(
            self.x64, uold, self.D, self.a, self.vmax, self.s, l0.gz, l0.gy, l0.gx, float(km), float(inv_dt),
            int(zero_order), self.r, l0.diag, l0.inv_diag, self._part, self._scal, *self.shape, self.dtype,
        )
        sc = self._scalars()
        self._nonlinear = bool(sc[S_VM] > 0)
        self._cold = bool(sc[S_XX] == 0)
        return math.sqrt(max(sc[S_FF], 0.0)), math.sqrt(max(sc[S_SS], 0.0))

    def _pcg(self, target: float, max_it: int) -> tuple[int, float]:
        """CG on J dx = r (r holds F) until ||r|| <= target; returns (iterations, ||r||)."""
        l0 = self.levels[0]
        shp = self.shape
        self.dx.fill(0)
        rnorm = math.inf
        it = 0
        while it < max_it:
            self._cycle(0, self.cycle, True)
            if self._n_pockets:
                _pocket_solve(
                    self.r, self.z, l0.diag, l0.gz, l0.gy, l0.gx, self._pocket_idx, self._pocket_off,
                    self._n_pockets, POCKET_SWEEPS, *shp, self.dtype,
                )
            _cg_step(
                self.r, self.z, self.p, self.q, self.dx, l0.diag, l0.gz, l0.gy, l0.gx, self._part, self._scal,
                1 if it == 0 else 0, *shp, self.dtype,
            )
            it += 1
            sc = self._scalars()
            rnorm = math.sqrt(max(sc[S_RR], 0.0))
            if not (sc[S_PQ] > 0 and math.isfinite(rnorm)) or rnorm <= target:
                break
        return it, rnorm

    def _load(self, u) -> None:
        if tuple(u.shape) != self.shape:
            raise ValueError(f"u has shape {tuple(u.shape)}, expected {self.shape}")
        if isinstance(u, ti.Field):
            _load_from_field(u, self.x64, self.D)
        else:
            _load_from_array(u, self.x64, self.D)

    def _store(self, u) -> None:
        if isinstance(u, ti.Field):
            _store_to_field(self.x64, u)
        else:
            _store_to_array(self.x64, u, _dtype_of(u))

    # ------------------------------------------------------------------------------------ solve

    def solve(
        self, u, km: float, tol: float = 1e-6, max_iterations: int = 200, max_newton: int = 50, *,
        field_residual: bool | None = None,
    ) -> SolveInfo:
        """Solve the steady problem F(u) = 0 in place, warm-started from ``u``.

        Parameters
        ----------
        u : 3-D Taichi field, Taichi ndarray or numpy array, shape ``shape``, float
            Initial guess on entry (negative values are clamped to 0), solution on return
            (inactive voxels set to 0) [u].
        km : float
            Michaelis-Menten constant [u], > 0 (unused when every vmax is 0).
        tol : float
            Target relative residual ``||F||_2 / ||s||_2`` (dimensionless).
        max_iterations : int
            Cap on the total number of CG iterations (V-cycles).
        max_newton : int
            Cap on the number of Newton steps.
        field_residual : bool, optional
            Also evaluate ``SolveInfo.field_relative_residual`` (the residual of the field as
            stored, in float32: one more residual pass). False leaves it NaN. Default: the
            solver's ``field_residual`` attribute (constructor argument).

        Returns
        -------
        SolveInfo
            ``converged=False`` (with the residual reached) when a cap was hit, the residual
            stagnated or became non-finite; ``u`` then holds the last iterate.
        """
        return self._solve(u, km, 0.0, tol, max_iterations, max_newton, field_residual=field_residual)

    def backward_euler_step(
        self, u, km: float, dt_min: float, tol: float = 1e-6, max_iterations: int = 200, max_newton: int = 50, *,
        field_residual: bool | None = None,
    ) -> SolveInfo:
        """One implicit Euler step of du/dt = F(u) over ``dt_min`` minutes, in place.

        Solves ``F(u) - (u - u_old)/dt = 0``: the steady solver with ``a + 1/dt`` and
        ``s + u_old/dt`` (the coefficient arrays are left untouched). Parameters as
        :meth:`solve`; the relative residual is scaled by ``||s + u_old/dt||``.
        """
        if not dt_min > 0:
            raise ValueError(f"dt_min must be > 0, got {dt_min}")
        if self._uold is None:
            self._uold = ti.ndarray(self.dtype, shape=self.n)
        self._load(u)
        _copy_unpad(self.x64, self._uold, self.n, self._pad, self.dtype)
        return self._solve(u, km, 1.0 / dt_min, tol, max_iterations, max_newton, loaded=True,
                           field_residual=field_residual)

    def _solve(self, u, km, inv_dt, tol, max_iterations, max_newton, loaded=False, field_residual=None) -> SolveInfo:
        if field_residual is None:
            field_residual = self.field_residual
        if not tol > 0:
            raise ValueError(f"tol must be > 0, got {tol}")
        if not loaded:
            self._load(u)
        self._prepare_operator()
        info = SolveInfo(converged=False, iterations=0, newton_iterations=0)
        rho_prev = eta_prev = None
        stalled = 0
        coarse_ready = False  # coarse levels built from the current Newton diagonal
        while True:
            rho, scale = self._residual(km, inv_dt)
            first = info.newton_iterations == 0
            if first:
                info.scale = scale
                if scale == 0.0:
                    # no source anywhere: u = 0 solves the problem (exactly, for every km)
                    self.x64.fill(0)
                    self._store(u)
                    info.converged = True
                    info.relative_residual = info.field_relative_residual = 0.0
                    info.residual_history = [0.0]
                    info.message = "no source: u = 0"
                    return info
                if self._nonlinear and not km > 0:
                    raise ValueError(f"km must be > 0 when vmax > 0, got {km}")
            rel = rho / scale
            info.residual_history.append(rel)
            info.relative_residual = rel
            if not math.isfinite(rel):
                info.message = "residual is not finite"
                break
            if rel <= tol:
                info.converged = True
                info.message = "converged"
                break
            if info.newton_iterations >= max_newton:
                info.message = f"Newton step cap ({max_newton}) reached"
                break
            if info.iterations >= max_iterations:
                info.message = f"iteration cap ({max_iterations}) reached"
                break
            if rho_prev is not None and rho > 0.95 * rho_prev:
                stalled += 1
                if stalled >= 5:
                    info.message = "residual stagnated (floating-point floor or inconsistent problem)"
                    break
            else:
                stalled = 0
            # inexact Newton: Eisenstat-Walker choice 2, never tighter than the goal needs
            need = 0.5 * tol * scale / rho
            if rho_prev is None:
                eta = 0.1
            else:
                eta = 0.9 * (rho / rho_prev) ** 2
                if eta_prev is not None and 0.9 * eta_prev**2 > 0.1:
                    eta = max(eta, 0.9 * eta_prev**2)
                eta = min(eta, 0.1)
            eta = max(eta, need) if self._nonlinear else need
            if first and self._nonlinear and self._cold:
                # From u = 0 the Michaelis-Menten tangent (slope vmax/km) permits only a tiny
                # step; linearising it as saturated instead lands near the solution wherever
                # u >> km (negative values, where u < km, are clamped and Newton takes over).
                self._residual(km, inv_dt, zero_order=True)
                eta = 0.1
            if self._nonlinear or not coarse_ready:
                self._prepare_coarse()
                coarse_ready = True
            elif self._n_pockets:
                # Linear problem: the Newton diagonal, hence every coarse level and the
                # coarsest factor, is what the last step built (bitwise); only the finest
                # inv_diag was rewritten by the residual kernel: mask the pockets again.
                _mask_pockets(self.levels[0].inv_diag, self._pocket_idx, int(self._pocket_idx.shape[0]))
            its, _ = self._pcg(eta * rho, max_iterations - info.iterations)
            info.iterations += its
            _newton_update(self.x64, self.dx, self.D, self.n, self._pad)
            info.newton_iterations += 1
            rho_prev, eta_prev = rho, eta
        _round_iterate(self.x64, self._pad, self._pad + self.n, self.dtype)
        self._store(u)
        if self.dtype == ti.f64:
            info.field_relative_residual = info.relative_residual
        elif not field_residual:
            info.field_relative_residual = math.nan
        else:
            rho_f, _ = self._residual(km, inv_dt)
            info.field_relative_residual = rho_f / scale
        return info
