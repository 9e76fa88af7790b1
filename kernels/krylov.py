"""Conjugate-gradient and Newton kernels of the transport solver, and field load/store.

CG runs on the Newton system ``J du = F`` with one multigrid cycle as preconditioner
(:mod:`kernels.multigrid`); the Newton iterate is float64 while everything else is in the
field dtype (mixed-precision iterative refinement). Padded arrays (:mod:`kernels.solver_plan`).
"""

# No `from __future__ import annotations`: the kernel compiler reads annotations as objects.

from .reductions import finish_sum, lane_count, live_flag
from .solver_plan import (
    C_IT,
    C_LIVE,
    C_MAXIT,
    C_TARGET,
    G_COARSE,
    G_FRESH,
    G_UPDATE,
    MSG_CONVERGED,
    MSG_ITERATION_CAP,
    MSG_NEWTON_CAP,
    MSG_NOT_FINITE,
    MSG_STAGNATED,
    N_COARSE_READY,
    N_ETA,
    N_ETA_PREV,
    N_ITERS,
    N_MAXIT,
    N_MSG,
    N_NEWTON,
    N_NONLINEAR,
    N_PHASE,
    N_REL,
    N_RHO_EFF,
    N_RHO_PREV,
    N_SCAL,
    N_SCALED,
    N_STALLED,
    N_TARGET,
    PHASE_CG,
    PHASE_DONE,
    S_FF,
    S_JJ,
    S_PQ,
    S_RR,
    S_RZ,
    S_RZ_OLD,
    S_SS,
    S_XX,
)
from .ti_compat import ti
from .transport import ND1, ND1_F64, neighbor_sum

__all__ = [
    "cg_begin",
    "cg_step",
    "newton_begin",
    "newton_finish",
    "newton_decide",
    "cg_resume",
    "round_iterate",
    "load_from_field",
    "load_from_array",
    "copy_unpad",
    "store_to_field",
    "store_to_array",
]

ND3 = ti.types.ndarray(ndim=3)


@ti.kernel(fastcache=True)
def cg_begin(dx: ND1, scal: ND1_F64, target: ti.f64, max_it: ti.f64):
    """Start a CG solve: dx = 0, iteration count 0, stop at ||r|| <= target or max_it iterations."""
    for i in range(dx.shape[0]):
        dx[i] = 0.0
    scal[C_LIVE] = 1.0
    scal[C_IT] = 0.0
    scal[C_TARGET] = target
    scal[C_MAXIT] = max_it


@ti.func
def _dot_loop(u: ti.template(), v: ti.template(), part: ti.template(), nz, ny, nx, live, gpu: ti.template()):
    """Partials of u . v over the interior (float64 products and sums)."""
    sz = nx * ny
    if ti.static(gpu):
        n = nz * ny * nx
        nl = lane_count(n)
        for t in range(nl * live):
            acc = ti.cast(0.0, ti.f64)
            for j in range((n - t + nl - 1) // nl):
                i = sz + t + j * nl
                acc += ti.cast(u[i], ti.f64) * ti.cast(v[i], ti.f64)
            part[t] = acc
    else:
        for z, y in ti.ndrange(nz * live, ny):
            acc = ti.cast(0.0, ti.f64)
            base = sz + (z * ny + y) * nx
            for x in range(nx):
                acc += ti.cast(u[base + x], ti.f64) * ti.cast(v[base + x], ti.f64)
            part[z * ny + y] = acc


@ti.func
def _apply_q(p_: ti.template(), q: ti.template(), diag: ti.template(), gz: ti.template(), gy: ti.template(),
             gx: ti.template(), i, sy, sz):
    qi = diag[i] * p_[i] - neighbor_sum(p_, gz, gy, gx, i, sy, sz)
    q[i] = qi
    return ti.cast(p_[i], ti.f64) * ti.cast(qi, ti.f64)


@ti.func
def _update(r: ti.template(), p_: ti.template(), q: ti.template(), dx: ti.template(), alpha, i):
    dx[i] += alpha * p_[i]
    ri = r[i] - alpha * q[i]
    r[i] = ri
    return ti.cast(ri, ti.f64) * ti.cast(ri, ti.f64)


@ti.kernel(fastcache=True)
def cg_step(
    r: ND1, z_: ND1, p_: ND1, q: ND1, dx: ND1, diag: ND1, gz: ND1, gy: ND1, gx: ND1,
    part: ND1_F64, scal: ND1_F64, nz: ti.i32, ny: ti.i32, nx: ti.i32, gpu: ti.template(),
):
    """One preconditioned CG iteration after the cycle (z = M^-1 r), in one launch.

    Four consecutive top-level loops (bitwise the same result as four separate kernels):
    rz = r.z; p = z + beta p; q = J p, pq = p.q; dx += alpha p, r -= alpha q, rr = r.r.
    Then the stopping test on the device: the iteration count goes up, and ``scal[C_LIVE]``
    drops to 0 when ||r|| <= ``scal[C_TARGET]``, the iteration cap is reached, the curvature
    p.Jp is not positive (breakdown) or ||r|| is not finite: every kernel of an iteration
    launched later reads it and does nothing. The first iteration (count 0) takes beta = 0.
    """
    dt = p_.get_type().element_type
    live = live_flag(scal)
    first = scal[C_IT] == 0
    sy = nx
    sz = nx * ny
    nparts = nz * ny
    if ti.static(gpu):
        nparts = lane_count(nz * ny * nx)
    _dot_loop(r, z_, part, nz, ny, nx, live, gpu)
    ti.loop_config(serialize=True)
    for _ in range(live):
        scal[S_RZ_OLD] = scal[S_RZ]
    finish_sum(part, nparts, 1, scal, S_RZ, gpu, live)
    b64 = ti.cast(0.0, ti.f64)
    if not first and scal[S_RZ_OLD] != 0:
        b64 = scal[S_RZ] / scal[S_RZ_OLD]
    beta = ti.cast(b64, dt)
    for i in range(sz, sz + nz * sz * live):
        p_[i] = z_[i] + beta * p_[i]
    if ti.static(gpu):
        n = nz * ny * nx
        nl = lane_count(n)
        for t in range(nl * live):
            dot = ti.cast(0.0, ti.f64)
            for j in range((n - t + nl - 1) // nl):
                dot += _apply_q(p_, q, diag, gz, gy, gx, sz + t + j * nl, sy, sz)
            part[t] = dot
    else:
        for z, y in ti.ndrange(nz * live, ny):
            dot = ti.cast(0.0, ti.f64)
            base = sz + (z * ny + y) * nx
            for x in range(nx):
                dot += _apply_q(p_, q, diag, gz, gy, gx, base + x, sy, sz)
            part[z * ny + y] = dot
    finish_sum(part, nparts, 1, scal, S_PQ, gpu, live)
    a64 = ti.cast(0.0, ti.f64)
    if scal[S_PQ] > 0:  # a non-positive curvature means breakdown: take no step
        a64 = scal[S_RZ] / scal[S_PQ]
    alpha = ti.cast(a64, dt)
    if ti.static(gpu):
        n = nz * ny * nx
        nl = lane_count(n)
        for t in range(nl * live):
            acc = ti.cast(0.0, ti.f64)
            for j in range((n - t + nl - 1) // nl):
                acc += _update(r, p_, q, dx, alpha, sz + t + j * nl)
            part[t] = acc
    else:
        for z, y in ti.ndrange(nz * live, ny):
            acc = ti.cast(0.0, ti.f64)
            base = sz + (z * ny + y) * nx
            for x in range(nx):
                acc += _update(r, p_, q, dx, alpha, base + x)
            part[z * ny + y] = acc
    finish_sum(part, nparts, 1, scal, S_RR, gpu, live)
    ti.loop_config(serialize=True)
    for _ in range(live):
        it = scal[C_IT] + 1.0
        scal[C_IT] = it
        rn = ti.sqrt(ti.max(scal[S_RR], 0.0))
        bad = not (scal[S_PQ] > 0) or ti.math.isnan(rn) or ti.math.isinf(rn)
        if bad or rn <= scal[C_TARGET] or it >= scal[C_MAXIT]:
            scal[C_LIVE] = 0.0


# ---------------------------------------------------------------------------------------------
# Newton control on the device. The host takes the first Newton step (it reads the residual
# anyway to see a zero source or a missing km), then launches rounds of [CG iterations,
# newton_finish, residual, newton_decide, coarse rebuild, cg_resume], each gated by the
# registers, and reads them once per round. The decisions are those of
# marrow3d.transport_solver.MultigridSolver._first_step in the same float64 operations, so
# the iterates are bitwise those of a host-side Newton loop.
# ---------------------------------------------------------------------------------------------


@ti.func
def _py_max(a, b):
    """Python's ``max(a, b)``: ``a`` unless ``b > a`` (so a NaN ``a`` wins, as on the host)."""
    r = a
    if b > a:
        r = b
    return r


@ti.func
def _py_min(a, b):
    """Python's ``min(a, b)``: ``a`` unless ``b < a``."""
    r = a
    if b < a:
        r = b
    return r


@ti.func
def _finite(v):
    return not (ti.math.isnan(v) or ti.math.isinf(v))


@ti.kernel(fastcache=True)
def newton_begin(scal: ND1_F64, rel0: ti.f64, rho_eff: ti.f64, eta: ti.f64, nonlinear: ti.i32):
    """Registers after the host's first Newton decision (its CG solve is under way); the
    residual history follows the registers (``scal[N_SCAL + k]`` after k Newton steps)."""
    for k in range(N_PHASE, N_SCAL):
        scal[k] = 0.0
    scal[N_SCAL] = rel0
    scal[N_PHASE] = PHASE_CG
    scal[N_RHO_EFF] = rho_eff
    scal[N_ETA] = eta
    scal[N_NONLINEAR] = ti.cast(nonlinear, ti.f64)
    scal[N_COARSE_READY] = 1.0


@ti.kernel(fastcache=True)
def newton_finish(x64: ND1_F64, dx: ND1, D: ND1, scal: ND1_F64, n: ti.i32, pad: ti.i32):
    """After a Newton step's CG solve: count it, x = max(x + dx, 0) on active voxels (the exact
    solution is >= 0), and open the gate of the residual and decision that follow. No-op
    while the CG solve runs or after the solve ended."""
    go = ti.cast(scal[N_PHASE] == PHASE_CG and scal[C_LIVE] == 0, ti.i32)
    ti.loop_config(serialize=True)
    for _ in range(go):
        scal[N_ITERS] = scal[N_ITERS] + scal[C_IT]
        scal[N_NEWTON] = scal[N_NEWTON] + 1.0
        scal[N_RHO_PREV] = scal[N_RHO_EFF]
        scal[N_ETA_PREV] = scal[N_ETA]
        scal[N_PHASE] = 0.0
        scal[G_UPDATE] = 1.0
    for i in range(n * go):
        v = ti.cast(0.0, ti.f64)
        if D[i] > 0:
            v = ti.max(x64[i + pad] + ti.cast(dx[i + pad], ti.f64), 0.0)
        x64[i + pad] = v


@ti.kernel(fastcache=True)
def newton_decide(scal: ND1_F64, tol: ti.f64, max_newton: ti.f64, max_iterations: ti.f64):
    """The Newton decision after the residual of a new iterate (gated by ``G_UPDATE``).

    Stops (``N_PHASE = PHASE_DONE``, ``N_MSG``) on a non-finite residual, convergence (both
    the relative and the Jacobi-scaled residual <= tol), the Newton or CG caps or 5 steps of
    stagnation; otherwise sets the next step's Eisenstat-Walker forcing term (choice 2, never
    tighter than tol needs), its CG target and cap, and the gates of the coarse rebuild
    (nonlinear problems) and of the CG start.
    """
    ti.loop_config(serialize=True)
    for _ in range(ti.cast(scal[G_UPDATE] != 0, ti.i32)):
        scal[G_UPDATE] = 0.0
        rho = ti.sqrt(_py_max(scal[S_FF], 0.0))
        scale = ti.sqrt(_py_max(scal[S_SS], 0.0))
        xnorm = ti.sqrt(_py_max(scal[S_XX], 0.0))
        scaled = ti.cast(0.0, ti.f64)
        if xnorm > 0:
            scaled = ti.sqrt(_py_max(scal[S_JJ], 0.0)) / xnorm
        rho_eff = rho
        if scaled * scale > rho:
            rho_eff = scaled * scale
        rel = rho_eff / scale
        scal[N_SCAL + ti.cast(scal[N_NEWTON], ti.i32)] = rel
        scal[N_REL] = rho / scale
        scal[N_SCALED] = scaled
        msg = 0
        if not (_finite(rel) and _finite(scaled)):
            msg = MSG_NOT_FINITE
        elif rel <= tol:
            msg = MSG_CONVERGED
        elif scal[N_NEWTON] >= max_newton:
            msg = MSG_NEWTON_CAP
        elif scal[N_ITERS] >= max_iterations:
            msg = MSG_ITERATION_CAP
        elif rho_eff > 0.95 * scal[N_RHO_PREV]:
            scal[N_STALLED] = scal[N_STALLED] + 1.0
            if scal[N_STALLED] >= 5:
                msg = MSG_STAGNATED
        else:
            scal[N_STALLED] = 0.0
        if msg != 0:
            scal[N_MSG] = ti.cast(msg, ti.f64)
            scal[N_PHASE] = PHASE_DONE
        else:
            need = 0.5 * tol * scale / rho_eff
            ratio = rho_eff / scal[N_RHO_PREV]
            eta = 0.9 * (ratio * ratio)
            eta_prev = scal[N_ETA_PREV]
            floor = 0.9 * (eta_prev * eta_prev)
            if floor > 0.1:
                eta = _py_max(eta, floor)
            eta = _py_min(eta, 0.1)
            if scal[N_NONLINEAR] != 0:
                eta = _py_max(eta, need)
            else:
                eta = need
            scal[N_ETA] = eta
            scal[N_RHO_EFF] = rho_eff
            scal[N_TARGET] = eta * rho  # CG reduces the unscaled residual it works on by eta
            scal[N_MAXIT] = max_iterations - scal[N_ITERS]
            scal[G_COARSE] = ti.cast(scal[N_NONLINEAR] != 0 or scal[N_COARSE_READY] == 0, ti.f64)
            scal[N_COARSE_READY] = 1.0
            scal[G_FRESH] = 1.0
            scal[N_PHASE] = PHASE_CG


@ti.kernel(fastcache=True)
def cg_resume(dx: ND1, scal: ND1_F64):
    """Start the CG solve that ``newton_decide`` set up (gated by ``G_FRESH``)."""
    go = ti.cast(scal[G_FRESH] != 0, ti.i32)
    for i in range(dx.shape[0] * go):
        dx[i] = 0.0
    ti.loop_config(serialize=True)
    for _ in range(go):
        scal[C_LIVE] = 1.0
        scal[C_IT] = 0.0
        scal[C_TARGET] = scal[N_TARGET]
        scal[C_MAXIT] = scal[N_MAXIT]
        scal[G_FRESH] = 0.0
        scal[G_COARSE] = 0.0


@ti.kernel(fastcache=True)
def round_iterate(x64: ND1_F64, like: ND1, lo: ti.i32, hi: ti.i32):
    """Replace the iterate by its value rounded to the field dtype (that of ``like``)."""
    dt = like.get_type().element_type
    for i in range(lo, hi):
        x64[i] = ti.cast(ti.cast(x64[i], dt), ti.f64)


@ti.func
def _load_loop(u: ti.template(), x64: ti.template(), D: ti.template(), nz, ny, nx, gpu: ti.template()):
    """x64 = max(u, 0) on active voxels, 0 elsewhere (padded x64)."""
    if ti.static(gpu):  # one thread per voxel, x fastest
        for z, y, x in ti.ndrange(nz, ny, nx):
            _load_voxel(u, x64, D, z, y, x, nz, ny, nx)
    else:
        for z, y in ti.ndrange(nz, ny):
            for x in range(nx):
                _load_voxel(u, x64, D, z, y, x, nz, ny, nx)


@ti.func
def _load_voxel(u: ti.template(), x64: ti.template(), D: ti.template(), z, y, x, nz, ny, nx):
    p = (z * ny + y) * nx + x
    v = ti.cast(0.0, ti.f64)
    if D[p] > 0:
        v = ti.max(ti.cast(u[z, y, x], ti.f64), 0.0)
    x64[p + nx * ny] = v


@ti.kernel(fastcache=True)
def load_from_field(u: ti.template(), x64: ND1_F64, D: ND1, gpu: ti.template()):
    nz, ny, nx = u.shape
    _load_loop(u, x64, D, nz, ny, nx, gpu)


@ti.kernel(fastcache=True)
def load_from_array(u: ND3, x64: ND1_F64, D: ND1, gpu: ti.template()):
    _load_loop(u, x64, D, u.shape[0], u.shape[1], u.shape[2], gpu)


@ti.kernel(fastcache=True)
def copy_unpad(src: ND1_F64, dst: ND1, n: ti.i32, pad: ti.i32):
    """dst[i] = src[i + pad] rounded to the dtype of dst."""
    dt = dst.get_type().element_type
    for i in range(n):
        dst[i] = ti.cast(src[i + pad], dt)


@ti.func
def _store_loop(x64: ti.template(), u: ti.template(), nz, ny, nx, gpu: ti.template()):
    """u = x64 (interior) rounded to the dtype of u."""
    if ti.static(gpu):  # one thread per voxel, x fastest
        for z, y, x in ti.ndrange(nz, ny, nx):
            u[z, y, x] = ti.cast(x64[nx * ny + (z * ny + y) * nx + x], u.get_type().element_type)
    else:
        for z, y in ti.ndrange(nz, ny):
            for x in range(nx):
                u[z, y, x] = ti.cast(x64[nx * ny + (z * ny + y) * nx + x], u.get_type().element_type)


@ti.func
def _store_field_loop(x64: ti.template(), u: ti.template(), nz, ny, nx, gpu: ti.template()):
    if ti.static(gpu):
        for z, y, x in ti.ndrange(nz, ny, nx):
            u[z, y, x] = ti.cast(x64[nx * ny + (z * ny + y) * nx + x], u.dtype)
    else:
        for z, y in ti.ndrange(nz, ny):
            for x in range(nx):
                u[z, y, x] = ti.cast(x64[nx * ny + (z * ny + y) * nx + x], u.dtype)


@ti.kernel(fastcache=True)
def store_to_field(x64: ND1_F64, u: ti.template(), gpu: ti.template()):
    nz, ny, nx = u.shape
    _store_field_loop(x64, u, nz, ny, nx, gpu)


@ti.kernel(fastcache=True)
def store_to_array(x64: ND1_F64, u: ND3, gpu: ti.template()):
    _store_loop(x64, u, u.shape[0], u.shape[1], u.shape[2], gpu)
