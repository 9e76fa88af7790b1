"""Conjugate-gradient and Newton kernels of the transport solver, and field load/store.

CG runs on the Newton system ``J du = F`` with one multigrid cycle as preconditioner
(:mod:`kernels.multigrid`); the Newton iterate is float64 while everything else is in the
field dtype (mixed-precision iterative refinement). Padded arrays (:mod:`kernels.solver_plan`).
"""

# No `from __future__ import annotations`: the kernel compiler reads annotations as objects.

from .reductions import finish_sum
from .solver_plan import S_PQ, S_RR, S_RZ, S_RZ_OLD
from .ti_compat import ti
from .transport import ND1, ND1_F64, neighbor_sum

__all__ = [
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


@ti.kernel
def cg_step(
    r: ND1, z_: ND1, p_: ND1, q: ND1, dx: ND1, diag: ND1, gz: ND1, gy: ND1, gx: ND1,
    part: ND1_F64, scal: ND1_F64, first: ti.i32, nz: ti.i32, ny: ti.i32, nx: ti.i32,
):
    """One preconditioned CG iteration after the cycle (z = M^-1 r), in one launch.

    Four consecutive top-level loops (bitwise the same result as four separate kernels):
    rz = r.z; p = z + beta p; q = J p, pq = p.q; dx += alpha p, r -= alpha q, rr = r.r.
    """
    dt = p_.get_type().element_type
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
def newton_update(x64: ND1_F64, dx: ND1, D: ND1, n: ti.i32, pad: ti.i32):
    """x = max(x + dx, 0) on active voxels: the exact solution is >= 0."""
    for i in range(n):
        v = ti.cast(0.0, ti.f64)
        if D[i] > 0:
            v = ti.max(x64[i + pad] + ti.cast(dx[i + pad], ti.f64), 0.0)
        x64[i + pad] = v


@ti.kernel
def round_iterate(x64: ND1_F64, like: ND1, lo: ti.i32, hi: ti.i32):
    """Replace the iterate by its value rounded to the field dtype (that of ``like``)."""
    dt = like.get_type().element_type
    for i in range(lo, hi):
        x64[i] = ti.cast(ti.cast(x64[i], dt), ti.f64)


@ti.kernel
def load_from_field(u: ti.template(), x64: ND1_F64, D: ND1):
    nz, ny, nx = u.shape
    for z, y in ti.ndrange(nz, ny):
        for x in range(nx):
            p = (z * ny + y) * nx + x
            v = ti.cast(0.0, ti.f64)
            if D[p] > 0:
                v = ti.max(ti.cast(u[z, y, x], ti.f64), 0.0)
            x64[p + nx * ny] = v


@ti.kernel
def load_from_array(u: ND3, x64: ND1_F64, D: ND1):
    nz, ny, nx = u.shape[0], u.shape[1], u.shape[2]
    for z, y in ti.ndrange(nz, ny):
        for x in range(nx):
            p = (z * ny + y) * nx + x
            v = ti.cast(0.0, ti.f64)
            if D[p] > 0:
                v = ti.max(ti.cast(u[z, y, x], ti.f64), 0.0)
            x64[p + nx * ny] = v


@ti.kernel
def copy_unpad(src: ND1_F64, dst: ND1, n: ti.i32, pad: ti.i32):
    """dst[i] = src[i + pad] rounded to the dtype of dst."""
    dt = dst.get_type().element_type
    for i in range(n):
        dst[i] = ti.cast(src[i + pad], dt)


@ti.kernel
def store_to_field(x64: ND1_F64, u: ti.template()):
    nz, ny, nx = u.shape
    for z, y in ti.ndrange(nz, ny):
        for x in range(nx):
            u[z, y, x] = ti.cast(x64[nx * ny + (z * ny + y) * nx + x], u.dtype)


@ti.kernel
def store_to_array(x64: ND1_F64, u: ND3):
    dt = u.get_type().element_type
    nz, ny, nx = u.shape[0], u.shape[1], u.shape[2]
    for z, y in ti.ndrange(nz, ny):
        for x in range(nx):
            u[z, y, x] = ti.cast(x64[nx * ny + (z * ny + y) * nx + x], dt)
