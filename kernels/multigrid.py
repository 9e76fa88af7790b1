"""Multigrid smoothing, grid transfers and coarsening of the transport operator (kernels).

The transport solver (:class:`marrow3d.transport_solver.MultigridSolver`) preconditions CG
with one multigrid cycle; this module holds the kernels of a level visit, of a whole cycle
over the small levels, and of building the coarse operators. Every level lives in the pooled
arrays of :mod:`kernels.solver_plan` (``gz, gy, gx, diag, inv_diag, b, e``, the finest at
offset 0) and is described by a row of the int32 level table ``meta``; kernels therefore
compile once per dtype and layout and serve every level and every solver.

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
  Galerkin. Inactive voxels (D = 0) drop out naturally (zero conductances);
- coarsest level: a banded Cholesky solve (``rows`` layout, :mod:`kernels.coarse_solve`) or,
  in the ``voxels`` layout, a single cell solved exactly.

Layouts (``gpu`` template argument, :mod:`kernels.solver_plan`): a half-sweep and a
prolongation run one thread per (z, y) row over the row's cells of one colour (CPUs) or one
thread per cell of the colour, x fastest (GPUs); a restriction and the coarsening kernels one
thread per coarse row or per coarse cell, each walking its children in the same order. Every
cell's arithmetic is the same in both, so the two layouts give identical bits.

Launches: a visit of a large level is two kernels (:func:`presmooth_restrict`,
:func:`prolong_postsmooth`); all levels of at most
:data:`kernels.solver_plan.SMALL_LEVEL_CELLS` cells are visited by one launch of
:func:`cycle_levels`, which unrolls the cycle over them at compile time. A kernel runs its
top-level loops one after the other, each in parallel, so the arithmetic and its order are
exactly those of separate one-loop kernels; only the launch overhead (tens of microseconds,
most of the time of a level below 32^3) is paid once. Iteration kernels read the register
``C_LIVE`` and multiply their loop ranges by it: an iteration launched after CG converged does
nothing (:mod:`kernels.krylov`).
"""

# No `from __future__ import annotations`: the kernel compiler reads annotations as objects.

from .coarse_solve import band_solve_loops, point_solve_loop
from .reductions import live_flag
from .solver_plan import M_FX, M_FY, M_FZ, M_NX, M_NY, M_NZ, M_OFF, META_FIELDS, hierarchy_shapes
from .ti_compat import ti
from .transport import ND1, ND1_F64, conductance_sum, neighbor_sum

__all__ = [
    "hierarchy_shapes",
    "CYCLE_CODES",
    "smooth",
    "presmooth_restrict",
    "prolong_postsmooth",
    "cycle_levels",
    "coarsen_conductances",
    "coarsen_diag",
]

ND1_I32 = ti.types.ndarray(dtype=ti.i32, ndim=1)

#: Compile-time codes of the cycle kinds.
CYCLE_CODES = {"V": 0, "W": 1, "F": 2}


@ti.func
def _dims(meta: ti.template(), lev):
    """(nz, ny, nx, offset) of level ``lev`` from the level table."""
    b = lev * META_FIELDS
    return meta[b + M_NZ], meta[b + M_NY], meta[b + M_NX], meta[b + M_OFF]


@ti.func
def _factors(meta: ti.template(), lev):
    """Coarsening factors (fz, fy, fx) from level ``lev`` to the next."""
    b = lev * META_FIELDS
    return meta[b + M_FZ], meta[b + M_FY], meta[b + M_FX]


# ---------------------------------------------------------------------------------------------
# Loops of a level visit (call at kernel top level; ``o`` / ``co``: offsets in the pools)
# ---------------------------------------------------------------------------------------------


@ti.func
def _gs_update(b: ti.template(), inv_diag: ti.template(), gz: ti.template(), gy: ti.template(), gx: ti.template(),
               e: ti.template(), p, sy, sz, zero: ti.template()):
    if ti.static(zero):
        e[p] = b[p] * inv_diag[p]
    else:
        e[p] = (b[p] + neighbor_sum(e, gz, gy, gx, p, sy, sz)) * inv_diag[p]


@ti.func
def _gs_half_sweep(
    b: ti.template(), inv_diag: ti.template(), gz: ti.template(), gy: ti.template(), gx: ti.template(),
    e: ti.template(), o, color, nz, ny, nx, live, zero: ti.template(), gpu: ti.template(),
):
    """Gauss-Seidel half-sweep on one colour: e_p = (b_p + sum g e_q) / diag_p.

    ``zero`` (compile-time): the first half-sweep from a zero guess, e = b / diag (no
    neighbours read). Inactive cells have inv_diag = 0 and stay 0; no branch in the loop.
    """
    sy = nx
    sz = nx * ny
    if ti.static(gpu):
        hx = (nx + 1) // 2
        for t in range(nz * ny * hx * live):
            row = t // hx
            z = row // ny
            x = 2 * (t - row * hx) + ((z + row - z * ny + color) & 1)
            if x < nx:
                _gs_update(b, inv_diag, gz, gy, gx, e, o + sz + row * nx + x, sy, sz, zero)
    else:
        for z, y in ti.ndrange(nz * live, ny):
            x0 = (z + y + color) & 1
            base = o + sz + (z * ny + y) * nx + x0
            for h in range((nx - x0 + 1) // 2):
                _gs_update(b, inv_diag, gz, gy, gx, e, base + 2 * h, sy, sz, zero)


@ti.func
def _prolong_loop(e: ti.template(), o, co, color, nz, ny, nx, cny, cnx, shz, shy, shx, live, gpu: ti.template()):
    """e += e_coarse[parent] (piecewise-constant prolongation) on one colour only."""
    sz = nx * ny
    csz = cnx * cny
    if ti.static(gpu):
        hx = (nx + 1) // 2
        for t in range(nz * ny * hx * live):
            row = t // hx
            z = row // ny
            y = row - z * ny
            x = 2 * (t - row * hx) + ((z + y + color) & 1)
            if x < nx:
                e[o + sz + row * nx + x] += e[co + csz + ((z >> shz) * cny + (y >> shy)) * cnx + (x >> shx)]
    else:
        for z, y in ti.ndrange(nz * live, ny):
            x0 = (z + y + color) & 1
            base = o + sz + (z * ny + y) * nx
            cbase = co + csz + ((z >> shz) * cny + (y >> shy)) * cnx
            for h in range((nx - x0 + 1) // 2):
                x = x0 + 2 * h
                e[base + x] += e[cbase + (x >> shx)]


@ti.func
def _child_residual(b: ti.template(), diag: ti.template(), inv_diag: ti.template(), gz: ti.template(),
                    gy: ti.template(), gx: ti.template(), e: ti.template(), p, sy, sz):
    res = b[p] + neighbor_sum(e, gz, gy, gx, p, sy, sz) - diag[p] * e[p]
    # cells outside the cycle (inactive, or in a sealed pocket) carry none
    return ti.select(inv_diag[p] > 0, res, 0.0)


@ti.func
def _restrict_loop(
    b: ti.template(), diag: ti.template(), inv_diag: ti.template(), gz: ti.template(), gy: ti.template(),
    gx: ti.template(), e: ti.template(), o, co, color, nz, ny, nx, cnz, cny, cnx, fz, fy, fx, live,
    gpu: ti.template(),
):
    """b_coarse = sum over the children of the fine residual b - A e, cells of ``color`` only.

    One thread owns each coarse row (CPUs) or coarse cell (GPUs) and adds its children in the
    order (z, y, x): no atomics, and the same sums in both layouts.
    """
    sy = nx
    sz = nx * ny
    csz = cnx * cny
    shx = fx - 1
    if ti.static(gpu):
        dt = b.get_type().element_type
        for t in range(cnz * cny * cnx * live):
            crow = t // cnx
            cx = t - crow * cnx
            cz = crow // cny
            cy = crow - cz * cny
            acc = ti.cast(0.0, dt)
            for kz in range(fz):
                z = cz * fz + kz
                for ky in range(fy):
                    y = cy * fy + ky
                    if z < nz and y < ny:
                        for kx in range(fx):
                            x = (cx << shx) + kx
                            if x < nx and ((x + z + y + color) & 1) == 0:
                                acc = acc + _child_residual(b, diag, inv_diag, gz, gy, gx, e,
                                                            o + sz + (z * ny + y) * nx + x, sy, sz)
            b[co + csz + crow * cnx + cx] = acc
    else:
        for cz, cy in ti.ndrange(cnz * live, cny):
            cbase = co + csz + (cz * cny + cy) * cnx
            for cx in range(cnx):
                b[cbase + cx] = 0.0
            for kz in range(fz):
                z = cz * fz + kz
                for ky in range(fy):
                    y = cy * fy + ky
                    if z < nz and y < ny:
                        x0 = (z + y + color) & 1
                        base = o + sz + (z * ny + y) * nx
                        for h in range((nx - x0 + 1) // 2):
                            x = x0 + 2 * h
                            c = cbase + (x >> shx)
                            # plain load/store: this thread owns the coarse row
                            b[c] = b[c] + _child_residual(b, diag, inv_diag, gz, gy, gx, e, base + x, sy, sz)


@ti.func
def _pre_visit(gz: ti.template(), gy: ti.template(), gx: ti.template(), diag: ti.template(),
               inv_diag: ti.template(), b: ti.template(), e: ti.template(), meta: ti.template(), lev, live,
               zero: ti.template(), sweeps: ti.template(), gpu: ti.template()):
    """Pre-smoothing ``sweeps`` x (red, black), then restriction of the red residuals."""
    nz, ny, nx, o = _dims(meta, lev)
    cnz, cny, cnx, co = _dims(meta, lev + 1)
    fz, fy, fx = _factors(meta, lev)
    _gs_half_sweep(b, inv_diag, gz, gy, gx, e, o, 0, nz, ny, nx, live, zero, gpu)
    _gs_half_sweep(b, inv_diag, gz, gy, gx, e, o, 1, nz, ny, nx, live, False, gpu)
    for _ in ti.static(range(sweeps - 1)):
        _gs_half_sweep(b, inv_diag, gz, gy, gx, e, o, 0, nz, ny, nx, live, False, gpu)
        _gs_half_sweep(b, inv_diag, gz, gy, gx, e, o, 1, nz, ny, nx, live, False, gpu)
    # black residuals are 0 after the black half-sweep: restrict the red ones only
    _restrict_loop(b, diag, inv_diag, gz, gy, gx, e, o, co, 0, nz, ny, nx, cnz, cny, cnx, fz, fy, fx, live, gpu)


@ti.func
def _post_visit(gz: ti.template(), gy: ti.template(), gx: ti.template(), inv_diag: ti.template(),
                b: ti.template(), e: ti.template(), meta: ti.template(), lev, live, sweeps: ti.template(),
                gpu: ti.template()):
    """Coarse correction of the red cells, then post-smoothing ``sweeps`` x (black, red)."""
    nz, ny, nx, o = _dims(meta, lev)
    cnz, cny, cnx, co = _dims(meta, lev + 1)
    fz, fy, fx = _factors(meta, lev)
    # the black half-sweep reads red cells only: correct those, then sweep black, red
    _prolong_loop(e, o, co, 0, nz, ny, nx, cny, cnx, fz - 1, fy - 1, fx - 1, live, gpu)
    for _ in ti.static(range(sweeps)):
        _gs_half_sweep(b, inv_diag, gz, gy, gx, e, o, 1, nz, ny, nx, live, False, gpu)
        _gs_half_sweep(b, inv_diag, gz, gy, gx, e, o, 0, nz, ny, nx, live, False, gpu)


@ti.func
def _visit(gz: ti.template(), gy: ti.template(), gx: ti.template(), diag: ti.template(), inv_diag: ti.template(),
           b: ti.template(), e: ti.template(), meta: ti.template(), L: ti.template(), btmp: ti.template(), live,
           first, k: ti.template(), depth: ti.template(), kind: ti.template(), zero: ti.template(),
           sweeps: ti.template(), gpu: ti.template()):
    """One cycle of ``kind`` from level ``first + k`` down to ``first + depth`` (the coarsest),
    unrolled at compile time (``k``, ``depth`` static; ``first`` a runtime level index)."""
    lev = first + k
    if ti.static(k == depth):
        if ti.static(zero):  # a second visit would find e already exact
            if ti.static(gpu):
                point_solve_loop(inv_diag, b, e, meta, lev, live)
            else:
                band_solve_loops(L, b, e, diag, btmp, meta, lev, live)
    else:
        _pre_visit(gz, gy, gx, diag, inv_diag, b, e, meta, lev, live, zero, sweeps, gpu)
        if ti.static(kind == CYCLE_CODES["V"]):
            _visit(gz, gy, gx, diag, inv_diag, b, e, meta, L, btmp, live, first, k + 1, depth, kind, True, sweeps,
                   gpu)
        elif ti.static(kind == CYCLE_CODES["W"]):
            _visit(gz, gy, gx, diag, inv_diag, b, e, meta, L, btmp, live, first, k + 1, depth, kind, True, sweeps,
                   gpu)
            _visit(gz, gy, gx, diag, inv_diag, b, e, meta, L, btmp, live, first, k + 1, depth, kind, False, sweeps,
                   gpu)
        else:
            _visit(gz, gy, gx, diag, inv_diag, b, e, meta, L, btmp, live, first, k + 1, depth, kind, True, sweeps,
                   gpu)
            _visit(gz, gy, gx, diag, inv_diag, b, e, meta, L, btmp, live, first, k + 1, depth, CYCLE_CODES["V"],
                   False, sweeps, gpu)
        _post_visit(gz, gy, gx, inv_diag, b, e, meta, lev, live, sweeps, gpu)


# ---------------------------------------------------------------------------------------------
# Kernels of the cycle
# ---------------------------------------------------------------------------------------------


@ti.kernel(fastcache=True)
def smooth(gz: ND1, gy: ND1, gx: ND1, inv_diag: ND1, b: ND1, e: ND1, meta: ND1_I32, lev: ti.i32, color: ti.i32,
           gpu: ti.template()):
    """One Gauss-Seidel half-sweep of colour ``color`` on level ``lev`` (benchmarks)."""
    nz, ny, nx, o = _dims(meta, lev)
    _gs_half_sweep(b, inv_diag, gz, gy, gx, e, o, color, nz, ny, nx, 1, False, gpu)


@ti.kernel(fastcache=True)
def presmooth_restrict(
    gz: ND1, gy: ND1, gx: ND1, diag: ND1, inv_diag: ND1, b: ND1, e: ND1, meta: ND1_I32, scal: ND1_F64,
    lev: ti.i32, zero_guess: ti.template(), sweeps: ti.template(), gpu: ti.template(),
):
    """Pre-smoothing ``sweeps`` x (red, black) on level ``lev``, restriction of the red residuals."""
    live = live_flag(scal)
    _pre_visit(gz, gy, gx, diag, inv_diag, b, e, meta, lev, live, zero_guess, sweeps, gpu)


@ti.kernel(fastcache=True)
def prolong_postsmooth(
    gz: ND1, gy: ND1, gx: ND1, inv_diag: ND1, b: ND1, e: ND1, meta: ND1_I32, scal: ND1_F64,
    lev: ti.i32, sweeps: ti.template(), gpu: ti.template(),
):
    """Coarse correction of the red cells of level ``lev``, post-smoothing (black, red) x ``sweeps``."""
    live = live_flag(scal)
    _post_visit(gz, gy, gx, inv_diag, b, e, meta, lev, live, sweeps, gpu)


@ti.kernel(fastcache=True)
def cycle_levels(
    gz: ND1, gy: ND1, gx: ND1, diag: ND1, inv_diag: ND1, b: ND1, e: ND1, meta: ND1_I32,
    L: ND1_F64, btmp: ND1_F64, scal: ND1_F64, first: ti.i32,
    depth: ti.template(), kind: ti.template(), zero_guess: ti.template(), sweeps: ti.template(),
    gpu: ti.template(),
):
    """A whole cycle of ``kind`` (:data:`CYCLE_CODES`) over levels ``first..first + depth`` in
    one launch.

    Level ``first + depth`` is the coarsest: band solve (``L``, ``btmp``; CPUs) or exact
    one-cell solve (GPUs, where ``L`` and ``btmp`` are not read); ``depth = 0`` is the
    coarsest solve alone. The kernel is compiled once per depth (and kind, sweeps, layout,
    dtype), whatever the grid.
    """
    live = live_flag(scal)
    _visit(gz, gy, gx, diag, inv_diag, b, e, meta, L, btmp, live, first, 0, depth, kind, zero_guess, sweeps, gpu)


# ---------------------------------------------------------------------------------------------
# Coarse operators (once per solve / Newton step, not gated)
# ---------------------------------------------------------------------------------------------


@ti.func
def _coarse_faces(gz: ti.template(), gy: ti.template(), gx: ti.template(), cz, cy, cx, nz, ny, nx, o,
                  cnz, cny, cnx, co, fz, fy, fx):
    """Aggregated conductances of coarse cell (cz, cy, cx) towards +x, +y, +z (array dtype)."""
    dt = gx.get_type().element_type
    sz = nx * ny
    csz = cnx * cny
    cp = co + csz + (cz * cny + cy) * cnx + cx
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
                gx_ += gx[o + sz + ((z0 + kz) * ny + y0 + ky) * nx + x]
        gx_ *= 2.0 / (wx + wn)
    if cy < cny - 1:
        y = y0 + wy - 1
        wn = ti.min(fy, ny - (y0 + fy))
        for kz in range(wz):
            for kx in range(wx):
                gy_ += gy[o + sz + ((z0 + kz) * ny + y) * nx + x0 + kx]
        gy_ *= 2.0 / (wy + wn)
    if cz < cnz - 1:
        z = z0 + wz - 1
        wn = ti.min(fz, nz - (z0 + fz))
        for ky in range(wy):
            for kx in range(wx):
                gz_ += gz[o + sz + (z * ny + y0 + ky) * nx + x0 + kx]
        gz_ *= 2.0 / (wz + wn)
    gx[cp] = gx_
    gy[cp] = gy_
    gz[cp] = gz_


@ti.kernel(fastcache=True)
def coarsen_conductances(gz: ND1, gy: ND1, gx: ND1, meta: ND1_I32, lev: ti.i32, gpu: ti.template()):
    """Conductances of level ``lev + 1`` by aggregation of level ``lev`` (module docstring).

    Face I -> I+1 along x: ``2/(w_I + w_{I+1})`` times the sum of the fine x-faces between the
    last fine column of I and the first of I+1, over the children in y and z; summed in the
    array dtype.
    """
    nz, ny, nx, o = _dims(meta, lev)
    cnz, cny, cnx, co = _dims(meta, lev + 1)
    fz, fy, fx = _factors(meta, lev)
    if ti.static(gpu):
        for t in range(cnz * cny * cnx):
            crow = t // cnx
            cz = crow // cny
            _coarse_faces(gz, gy, gx, cz, crow - cz * cny, t - crow * cnx, nz, ny, nx, o, cnz, cny, cnx, co,
                          fz, fy, fx)
    else:
        for cz, cy in ti.ndrange(cnz, cny):
            for cx in range(cnx):
                _coarse_faces(gz, gy, gx, cz, cy, cx, nz, ny, nx, o, cnz, cny, cnx, co, fz, fy, fx)


@ti.func
def _coarse_diag(diag: ti.template(), inv_diag: ti.template(), gz: ti.template(), gy: ti.template(),
                 gx: ti.template(), cz, cy, cx, nz, ny, nx, o, cny, cnx, co, fz, fy, fx):
    dt = diag.get_type().element_type
    sy = nx
    sz = nx * ny
    csz = cnx * cny
    cp = co + csz + (cz * cny + cy) * cnx + cx
    sink = ti.cast(0.0, ti.f64)
    for kz in range(fz):
        z = cz * fz + kz
        for ky in range(fy):
            y = cy * fy + ky
            for kx in range(fx):
                x = cx * fx + kx
                if z < nz and y < ny and x < nx:
                    p = o + sz + (z * ny + y) * nx + x
                    if inv_diag[p] > 0:  # cells in the cycle only (not pockets)
                        sink += ti.cast(diag[p] - conductance_sum(gz, gy, gx, p, sy, sz), ti.f64)
    gsum = ti.cast(conductance_sum(gz, gy, gx, cp, cnx, csz), ti.f64)
    d = ti.cast(0.0, ti.f64)
    idg = ti.cast(0.0, ti.f64)
    if gsum > 0 or sink > 0:
        d = gsum + ti.max(sink, 0.0)  # rounding must not turn a sink negative
        idg = 1.0 / d
    diag[cp] = ti.cast(d, dt)
    inv_diag[cp] = ti.cast(idg, dt)


@ti.kernel(fastcache=True)
def coarsen_diag(gz: ND1, gy: ND1, gx: ND1, diag: ND1, inv_diag: ND1, meta: ND1_I32, scal: ND1_F64, lev: ti.i32,
                 gate: ti.i32, gpu: ti.template()):
    """Diagonal of level ``lev + 1``: its conductance sum + the children's linear sinks
    (diag - sum g of each child in the cycle). ``gate`` >= 0: only when ``scal[gate]`` != 0."""
    live = 1
    if gate >= 0:
        live = ti.cast(scal[gate] != 0, ti.i32)
    nz, ny, nx, o = _dims(meta, lev)
    cnz, cny, cnx, co = _dims(meta, lev + 1)
    fz, fy, fx = _factors(meta, lev)
    if ti.static(gpu):
        for t in range(cnz * cny * cnx * live):
            crow = t // cnx
            cz = crow // cny
            _coarse_diag(diag, inv_diag, gz, gy, gx, cz, crow - cz * cny, t - crow * cnx, nz, ny, nx, o, cny, cnx,
                         co, fz, fy, fx)
    else:
        for cz, cy in ti.ndrange(cnz * live, cny):
            for cx in range(cnx):
                _coarse_diag(diag, inv_diag, gz, gy, gx, cz, cy, cx, nz, ny, nx, o, cny, cnx, co, fz, fy, fx)
