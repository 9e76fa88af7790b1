"""Multigrid smoothing, grid transfers and coarsening of the transport operator (kernels).

The transport solver (:class:`marrow3d.transport_solver.MultigridSolver`) preconditions CG
with one multigrid cycle; this module holds the kernels of a level visit and of building the
coarse operators. Every kernel takes flat padded 1-D ndarrays (:mod:`kernels.solver_plan`), so
it compiles once per dtype and serves every level and every solver.

- smoother: red-black Gauss-Seidel, (red, black) before coarse correction and (black, red)
  after, so each cycle is a symmetric operator as CG requires. After the black half-sweep
  the black residuals are exactly 0, so only red residuals are restricted; the coarse
  correction is added to red cells only, because the next (black) half-sweep reads only
  those and the red half-sweep after it overwrites them;
- coarsening: cell-centred 2x2x2 aggregation (:func:`kernels.solver_plan.hierarchy_shapes`);
  a dimension of size n becomes ceil(n/2), the last coarse cell of an odd dimension holding
  one fine cell, and dimensions of size 1 stay (thin domains semi-coarsen);
- restriction: sum of the children's residuals; prolongation: piecewise-constant injection;
- coarse operator by *conductance aggregation*: the coarse face between coarse cells I and J
  has conductance ``2/(w_I + w_J) * sum(fine face conductances crossing it)``, w being the
  widths (1 or 2 fine cells) along the face normal. The sum is the parallel combination of
  the fine faces; the factor is the series correction for the longer centre-to-centre
  distance (exact for uniform D: 4 faces x D h^2/h at distance 2h -> 2 D h). Plain Galerkin
  aggregation (factor 1) makes the coarse diffusion twice too stiff and the cycle
  convergence level-dependent. Linear sinks (a, Newton term) of the children add up, as in
  Galerkin. Inactive voxels (D = 0) drop out naturally (zero conductances).

Launches: a visit of a level is two kernels (:func:`presmooth_restrict`,
:func:`prolong_postsmooth`). A kernel runs its top-level loops one after the other, each in
parallel, so the arithmetic and its order are exactly those of separate one-loop kernels; only
the Python launch overhead (about 60 us per launch with 6-8 ndarray arguments on the CPU, i.e.
most of the time of a level below 32^3) is paid once instead of 5 times.
"""

# No `from __future__ import annotations`: the kernel compiler reads annotations as objects.

from .solver_plan import hierarchy_shapes
from .ti_compat import ti
from .transport import ND1, conductance_sum, neighbor_sum

__all__ = [
    "hierarchy_shapes",
    "smooth",
    "presmooth_restrict",
    "prolong_postsmooth",
    "coarsen_conductances",
    "coarsen_diag",
]


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
def smooth(
    b: ND1, inv_diag: ND1, gz: ND1, gy: ND1, gx: ND1, e: ND1, color: ti.i32, nz: ti.i32, ny: ti.i32, nx: ti.i32
):
    """Gauss-Seidel half-sweep on one colour: e_p = (b_p + sum g e_q) / diag_p.

    Inactive cells have inv_diag = 0 and stay 0; no branch in the loop.
    """
    _gs_half_sweep(b, inv_diag, gz, gy, gx, e, color, nz, ny, nx, False)


@ti.kernel
def presmooth_restrict(
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
def prolong_postsmooth(
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
def coarsen_conductances(
    gzf: ND1, gyf: ND1, gxf: ND1, gzc: ND1, gyc: ND1, gxc: ND1,
    nz: ti.i32, ny: ti.i32, nx: ti.i32, cnz: ti.i32, cny: ti.i32, cnx: ti.i32,
    fz: ti.i32, fy: ti.i32, fx: ti.i32,
):
    """Coarse face conductances by aggregation (see the module docstring).

    Face I -> I+1 along x: ``2/(w_I + w_{I+1})`` times the sum of the fine x-faces between the
    last fine column of I and the first of I+1, over the children in y and z; summed in the
    array dtype.
    """
    dt = gxc.get_type().element_type
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
def coarsen_diag(
    diag: ND1, inv_diag: ND1, gz: ND1, gy: ND1, gx: ND1, diagc: ND1, inv_diagc: ND1, gzc: ND1, gyc: ND1, gxc: ND1,
    nz: ti.i32, ny: ti.i32, nx: ti.i32, cnz: ti.i32, cny: ti.i32, cnx: ti.i32,
    fz: ti.i32, fy: ti.i32, fx: ti.i32,
):
    """Coarse diagonal = coarse conductance sum + the children's linear sinks (diag - sum g)."""
    dt = diagc.get_type().element_type
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
