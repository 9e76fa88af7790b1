"""Conjugate-gradient and Newton kernels of the transport solver, and field load/store.

CG runs on the Newton system ``J du = F`` with one multigrid cycle as preconditioner
(:mod:`kernels.multigrid`); the Newton iterate is float64 while everything else is in the
field dtype (mixed-precision iterative refinement). Padded arrays (:mod:`kernels.solver_plan`).
"""

# No `from __future__ import annotations`: the kernel compiler reads annotations as objects.

from .reductions import finish_sum, lane_count, live_flag
from .solver_plan import C_IT, C_LIVE, C_MAXIT, C_TARGET, S_PQ, S_RR, S_RZ, S_RZ_OLD
from .ti_compat import ti
from .transport import ND1, ND1_F64, neighbor_sum

__all__ = [
    "cg_begin",
    "cg_step",
    "newton_update",
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


@ti.kernel(fastcache=True)
def newton_update(x64: ND1_F64, dx: ND1, D: ND1, n: ti.i32, pad: ti.i32):
    """x = max(x + dx, 0) on active voxels: the exact solution is >= 0."""
    for i in range(n):
        v = ti.cast(0.0, ti.f64)
        if D[i] > 0:
            v = ti.max(x64[i + pad] + ti.cast(dx[i + pad], ti.f64), 0.0)
        x64[i + pad] = v


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
