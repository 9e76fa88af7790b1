"""Transport coefficients and the discrete reaction-diffusion operator (Taichi kernels).

Every transport field (oxygen, each drug, the remodeling signal) obeys the same discrete
steady problem on cell-centred voxels of edge ``h`` um (arrays C-ordered ``(z, y, x)``,
no-flux domain boundary). For every active voxel p (``D_p > 0``)::

    F_p(u) = sum_{q in 6 nbrs} g_pq (u_q - u_p) - a_p u_p - vmax_p u_p / (km + u_p) + s_p = 0
    g_pq = 2 D_p D_q / (D_p + D_q) / h^2      [1/min]

Inactive voxels (``D = 0``: bone, outside) hold ``u = 0`` and are not part of the residual.
See :mod:`kernels.transport_reference` for the same operator in scipy (the test oracle).

This module holds

* the coefficient *assembly* from the compact model state (tissue, cells, vessel integrity)
  and a small packed table per field (:class:`CoefficientTables`), so all fields share one
  kernel;
* the operator pieces used by the solver's kernels: face conductances, the nonlinear
  residual with its Newton diagonal, and the linearised operator applied to a vector;

Array conventions: coefficient arrays (``D, a, vmax, s``) are 1-D Taichi ndarrays of length
``nz*ny*nx`` in C order (voxel ``(z, y, x)`` at ``(z*ny + y)*nx + x``); the solver's internal
arrays (conductances, diagonals, iterates) are *padded* with one zero plane before and after
(:func:`kernels.solver_plan.padded_size`). 1-D ndarrays with explicit index arithmetic compile once per process
for every grid and level and run as fast as dense fields on the CPU (3-D ndarrays with
runtime strides were 3x slower in our measurements; dense fields recompile every kernel for
every new field, about 0.1 s each). Model-state inputs may be 3-D Taichi fields or 3-D numpy
arrays / Taichi ndarrays.

Layouts (the ``gpu`` template argument, a compile-time choice; :mod:`kernels.solver_plan`):
on a CPU loops run in parallel over ``(z, y)`` rows with a serial inner ``x`` loop (LLVM then
strength-reduces the indexing and the boundary tests, about 2.5x faster than a flat 3-D loop
there); on a GPU one thread takes one voxel, x fastest, so neighbouring threads read
neighbouring addresses. Every voxel's arithmetic is the same in both, so the arrays written
are bitwise identical. Reductions accumulate float64 partials per row or per lane and sum
them in a fixed order (:mod:`kernels.reductions`): reproducible run to run, no
floating-point atomics.
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations as objects.

import numpy as np

from .codes import MARROW, N_CELL_TYPES, N_TISSUE, VESSEL_CLASS_OF_TISSUE
from .reductions import finish_sum, lane_count, voxel_hash
from .solver_plan import S_FF, S_FP
from .ti_compat import is_gpu_arch, ti
from .transport_reference import CoefficientTables

__all__ = [
    "CoefficientTables",
    "TABLE_SIZE",
    "pack_tables",
    "upload_tables",
    "assemble_coefficients",
    "exchange_rate",
    "face_conductances",
    "residual_jacobian",
    "apply_operator",
    "neighbor_sum",
    "conductance_sum",
    "ND1",
    "ND1_F64",
]

# Offsets of each table in the packed float64 table array (see ``pack_tables``).
T_D = 0
T_DECAY = T_D + N_TISSUE
T_UPTAKE = T_DECAY + N_TISSUE
T_VMAX = T_UPTAKE + N_CELL_TYPES
T_SECRETION = T_VMAX + N_CELL_TYPES
T_EXCHANGE = T_SECRETION + N_CELL_TYPES
T_LEAK = T_EXCHANGE + 3
T_BLOOD = T_LEAK + 3
T_FLOOR = T_BLOOD + 3
TABLE_SIZE = T_FLOOR + 1

ND1 = ti.types.ndarray(ndim=1)  # any dtype: instantiated per dtype, shared by every grid
ND1_F64 = ti.types.ndarray(dtype=ti.f64, ndim=1)
ND3 = ti.types.ndarray(ndim=3)


def pack_tables(tables: CoefficientTables) -> np.ndarray:
    """Pack a :class:`CoefficientTables` into the float64 array the kernels read.

    Returns
    -------
    ndarray of float64, shape (TABLE_SIZE,)
    """
    return np.concatenate(
        [
            tables.diffusivity_by_tissue,
            tables.decay_by_tissue,
            tables.uptake_by_cell,
            tables.vmax_by_cell,
            tables.secretion_by_cell,
            tables.exchange_by_class,
            tables.leak_by_class,
            tables.blood_by_class,
            [tables.integrity_floor],
        ]
    ).astype(np.float64)


def upload_tables(tables: CoefficientTables, out=None):
    """Copy the packed tables to a Taichi float64 ndarray (allocated if ``out`` is None).

    A few dozen numbers: cheap to redo every cell step when u_blood follows a PK curve.
    """
    if out is None:
        out = ti.ndarray(ti.f64, shape=TABLE_SIZE)
    out.from_numpy(pack_tables(tables))
    return out


# ---------------------------------------------------------------------------------------------
# Assembly
# ---------------------------------------------------------------------------------------------


@ti.func
def _vessel_class(t):
    """Vessel class code of tissue code ``t`` (unrolled: the map is a compile-time constant)."""
    c = 0
    for k in ti.static(range(N_TISSUE)):
        # select, not `if`: a Python constant assigned inside a runtime `if` is not stored
        c = ti.select(t == k, VESSEL_CLASS_OF_TISSUE[k], c)
    return c


@ti.func
def exchange_rate(e0, integ, leak, floor):
    """Vessel exchange rate [1/min] of a vessel voxel: ``E0 I (1 + leak (1 - I))`` for an
    integrity ``I >= floor``, else 0.

    Perfusion falls with integrity (factor I); permeability rises as the vessel leaks. With
    ``e0 = 1`` it is the exchange factor ``E / E0`` (exactly: 1 * I = I), which the device-side
    readouts (:mod:`kernels.readouts`) take from here: the one copy of the law in kernels
    (:func:`kernels.transport_reference.exchange_rate` is the independent numpy oracle).
    """
    e = ti.cast(0.0, ti.f64)
    if integ >= floor:
        e = e0 * integ * (1.0 + leak * (1.0 - integ))
    return e


@ti.func
def _exchange(t, integ, tab: ti.template()):
    """Vessel exchange rate E [1/min] of a voxel with tissue code t and integrity integ."""
    cls = _vessel_class(t)
    e = ti.cast(0.0, ti.f64)
    if cls != 0:
        e = exchange_rate(tab[T_EXCHANGE + cls], integ, tab[T_LEAK + cls], tab[T_FLOOR])
    return e


@ti.func
def _voxel_coefficients(t_raw, c_raw, integ_raw, tab: ti.template()):
    """(D, a, vmax, s) in float64 for one voxel, term by term as the numpy reference."""
    # Codes are validated upstream; clamping keeps a bad code from reading past the table.
    t = ti.min(ti.cast(t_raw, ti.i32), N_TISSUE - 1)
    c = ti.min(ti.cast(c_raw, ti.i32), N_CELL_TYPES - 1)
    integ = ti.cast(integ_raw, ti.f64)
    e = _exchange(t, integ, tab)
    cls = _vessel_class(t)
    d = tab[T_D + t]
    a = tab[T_DECAY + t] + e
    vm = ti.cast(0.0, ti.f64)
    s = e * tab[T_BLOOD + cls]
    if t == MARROW:  # cell terms only in marrow voxels
        a += tab[T_UPTAKE + c]
        vm = tab[T_VMAX + c]
        s += tab[T_SECRETION + c]
    return d, a, vm, s


@ti.func
def _assemble_voxel(tissue: ti.template(), cells: ti.template(), integrity: ti.template(), override: ti.template(),
                    use_override: ti.template(), tab: ti.template(), D: ti.template(), a: ti.template(),
                    vmax: ti.template(), s: ti.template(), z, y, x, p):
    dt = D.get_type().element_type
    d, aa, vm, ss = _voxel_coefficients(tissue[z, y, x], cells[z, y, x], integrity[z, y, x], tab)
    if ti.static(use_override):
        d = ti.cast(override[z, y, x], ti.f64)
    D[p] = ti.cast(d, dt)
    a[p] = ti.cast(aa, dt)
    vmax[p] = ti.cast(vm, dt)
    s[p] = ti.cast(ss, dt)


@ti.func
def _assemble_loop(tissue: ti.template(), cells: ti.template(), integrity: ti.template(), override: ti.template(),
                   use_override: ti.template(), tab: ti.template(), D: ti.template(), a: ti.template(),
                   vmax: ti.template(), s: ti.template(), nz, ny, nx, gpu: ti.template()):
    if ti.static(gpu):  # one thread per voxel, x fastest
        for z, y, x in ti.ndrange(nz, ny, nx):
            _assemble_voxel(tissue, cells, integrity, override, use_override, tab, D, a, vmax, s, z, y, x,
                            (z * ny + y) * nx + x)
    else:  # one thread per (z, y) row
        for z, y in ti.ndrange(nz, ny):
            for x in range(nx):
                _assemble_voxel(tissue, cells, integrity, override, use_override, tab, D, a, vmax, s, z, y, x,
                                (z * ny + y) * nx + x)


@ti.kernel
def _assemble_fields(
    tissue: ti.template(), cells: ti.template(), integrity: ti.template(), override: ti.template(),
    use_override: ti.template(), tab: ND1_F64, D: ND1, a: ND1, vmax: ND1, s: ND1, gpu: ti.template(),
):
    nz, ny, nx = tissue.shape
    _assemble_loop(tissue, cells, integrity, override, use_override, tab, D, a, vmax, s, nz, ny, nx, gpu)


@ti.kernel(fastcache=True)
def _assemble_arrays(
    tissue: ND3, cells: ND3, integrity: ND3, override: ND3, use_override: ti.template(), tab: ND1_F64,
    D: ND1, a: ND1, vmax: ND1, s: ND1, gpu: ti.template(),
):
    nz, ny, nx = tissue.shape[0], tissue.shape[1], tissue.shape[2]
    _assemble_loop(tissue, cells, integrity, override, use_override, tab, D, a, vmax, s, nz, ny, nx, gpu)


def _is_field(obj) -> bool:
    return isinstance(obj, ti.Field)


def _check_shape(name, arr, shape):
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(arr.shape)}, expected {tuple(shape)}")


def assemble_coefficients(tissue, cells, integrity, tables, D, a, vmax, s, diffusivity_override=None, *,
                          gpu: bool | None = None):
    """Write the per-voxel coefficients of one field from the compact model state.

    ``a = decay[tissue] + E + uptake[cell]``, ``vmax = vmax[cell]``,
    ``s = E u_blood[class] + secretion[cell]`` (cell terms only in marrow voxels) and
    ``D = diffusivity[tissue]`` or the override, with the vessel exchange
    ``E = exchange[class] I (1 + leak[class] (1 - I))`` for vessels with ``I >= floor``.

    Parameters
    ----------
    tissue, cells : 3-D Taichi fields, or 3-D numpy arrays / Taichi ndarrays, of uint8
        Tissue and cell codes (:mod:`kernels.codes`), shape (nz, ny, nx).
    integrity : same kind, float
        Vessel integrity in [0, 1] (read only in vessel voxels).
    tables : CoefficientTables or a Taichi float64 ndarray from :func:`upload_tables`
        The field's per-label / per-type tables.
    D, a, vmax, s : 1-D Taichi ndarrays of length nz*ny*nx (C order), e.g. a solver's
        ``MultigridSolver.D`` etc. Outputs: D [um^2/min], a [1/min], vmax [u/min], s [u/min].
    diffusivity_override : same kind as tissue, optional
        Per-voxel D [um^2/min] replacing the per-tissue table (e.g. an imaging-derived map).
    gpu : bool, optional
        Kernel layout: one thread per voxel (True) or per (z, y) row (False); the result is
        the same. Default: the layout of the initialised backend (:func:`kernels.ti_compat.is_gpu_arch`).
    """
    shape = tuple(tissue.shape)
    for name, arr in (("cells", cells), ("integrity", integrity)):
        _check_shape(name, arr, shape)
    n = int(np.prod(shape))
    for name, arr in (("D", D), ("a", a), ("vmax", vmax), ("s", s)):
        if tuple(arr.shape) != (n,):
            raise ValueError(f"{name} must be a 1-D ndarray of length {n}, got shape {tuple(arr.shape)}")
    tab = upload_tables(tables) if isinstance(tables, CoefficientTables) else tables
    gpu = is_gpu_arch() if gpu is None else bool(gpu)
    use = diffusivity_override is not None
    if use:
        _check_shape("diffusivity_override", diffusivity_override, shape)
    over = diffusivity_override if use else integrity  # placeholder, never read
    if _is_field(tissue):
        if not (_is_field(cells) and _is_field(integrity) and _is_field(over)):
            raise TypeError("tissue, cells, integrity and the override must all be fields or all arrays")
        _assemble_fields(tissue, cells, integrity, over, use, tab, D, a, vmax, s, gpu)
    else:
        arrs = [np.ascontiguousarray(v) if isinstance(v, np.ndarray) else v for v in (tissue, cells, integrity, over)]
        _assemble_arrays(*arrs, use, tab, D, a, vmax, s, gpu)


# ---------------------------------------------------------------------------------------------
# Operator (solver arrays: padded layout, see ``kernels.solver_plan.padded_size``)
# ---------------------------------------------------------------------------------------------


@ti.func
def neighbor_sum(v: ti.template(), gz: ti.template(), gy: ti.template(), gx: ti.template(), p, sy, sz):
    """sum_q g_pq v_q over the 6 face neighbours of p (padded layout; no-flux boundary).

    ``gx[p]`` is the conductance of the face between p and p + x (0 past the last column),
    likewise gy (stride ``sy`` = nx) and gz (stride ``sz`` = nx ny).
    """
    return (
        gx[p - 1] * v[p - 1]
        + gx[p] * v[p + 1]
        + gy[p - sy] * v[p - sy]
        + gy[p] * v[p + sy]
        + gz[p - sz] * v[p - sz]
        + gz[p] * v[p + sz]
    )


@ti.func
def conductance_sum(gz: ti.template(), gy: ti.template(), gx: ti.template(), p, sy, sz):
    """Sum of the 6 face conductances of voxel p (padded layout)."""
    return gx[p - 1] + gx[p] + gy[p - sy] + gy[p] + gz[p - sz] + gz[p]


@ti.func
def _harmonic(d1, d2, inv_h2):
    g = ti.cast(0.0, ti.f64)
    if d1 > 0 and d2 > 0:
        g = 2.0 * d1 * d2 / (d1 + d2) * inv_h2
    return g


@ti.func
def _face_voxel(D: ti.template(), gz: ti.template(), gy: ti.template(), gx: ti.template(), z, y, x, nz, ny, nx,
                inv_h2):
    """Faces of voxel (z, y, x) towards +x, +y, +z; returns its two fingerprint hashes (0 if inactive)."""
    dt = gx.get_type().element_type
    sy = nx
    sz = nx * ny
    p = (z * ny + y) * nx + x
    d = ti.cast(D[p], ti.f64)
    h0 = ti.cast(0.0, ti.f64)
    h1 = ti.cast(0.0, ti.f64)
    if d > 0:
        h0 = voxel_hash(p, 0)
        h1 = voxel_hash(p, 1)
    g0 = ti.cast(0.0, ti.f64)
    g1 = ti.cast(0.0, ti.f64)
    g2 = ti.cast(0.0, ti.f64)
    if x < nx - 1:
        g0 = _harmonic(d, ti.cast(D[p + 1], ti.f64), inv_h2)
    if y < ny - 1:
        g1 = _harmonic(d, ti.cast(D[p + sy], ti.f64), inv_h2)
    if z < nz - 1:
        g2 = _harmonic(d, ti.cast(D[p + sz], ti.f64), inv_h2)
    gx[p + sz] = ti.cast(g0, dt)
    gy[p + sz] = ti.cast(g1, dt)
    gz[p + sz] = ti.cast(g2, dt)
    return h0, h1


@ti.kernel(fastcache=True)
def face_conductances(
    D: ND1, gz: ND1, gy: ND1, gx: ND1, part: ND1_F64, scal: ND1_F64,
    nz: ti.i32, ny: ti.i32, nx: ti.i32, inv_h2: ti.f64, gpu: ti.template(),
):
    """Face conductances g = harmonic mean of D / h^2 [1/min] into padded arrays (offset 0).

    ``g*[p]`` is the face p -> p + e; the face past the last plane in each direction is 0
    (no-flux boundary), as is any face touching a voxel with D = 0. Computed in float64 and
    rounded once to the array dtype. ``D`` is unpadded.

    Also writes ``scal[S_FP]`` and ``scal[S_FP2]``, a fingerprint of the active set
    (``D > 0``): two sums of 20-bit hashes of the active voxels' indices, exact integers
    (the same in both layouts), so the solver notices when the connectivity changed.
    """
    if ti.static(gpu):
        n = nz * ny * nx
        nl = lane_count(n)
        for t in range(nl):
            f0 = ti.cast(0.0, ti.f64)
            f1 = ti.cast(0.0, ti.f64)
            for j in range((n - t + nl - 1) // nl):
                i = t + j * nl
                x = i % nx
                y = (i // nx) % ny
                z = i // (nx * ny)
                h0, h1 = _face_voxel(D, gz, gy, gx, z, y, x, nz, ny, nx, inv_h2)
                f0 += h0
                f1 += h1
            part[2 * t] = f0
            part[2 * t + 1] = f1
        finish_sum(part, nl, 2, scal, S_FP, True, 1)
    else:
        for z, y in ti.ndrange(nz, ny):
            f0 = ti.cast(0.0, ti.f64)
            f1 = ti.cast(0.0, ti.f64)
            for x in range(nx):
                h0, h1 = _face_voxel(D, gz, gy, gx, z, y, x, nz, ny, nx, inv_h2)
                f0 += h0
                f1 += h1
            part[2 * (z * ny + y)] = f0
            part[2 * (z * ny + y) + 1] = f1
        finish_sum(part, nz * ny, 2, scal, S_FP, False, 1)


@ti.func
def _residual_voxel(
    x64: ti.template(), uold: ti.template(), D: ti.template(), a: ti.template(), vmax: ti.template(),
    s: ti.template(), gz: ti.template(), gy: ti.template(), gx: ti.template(), km, inv_dt, zero_order,
    r: ti.template(), diag: ti.template(), inv_diag: ti.template(), p, sy, sz,
):
    """F, the Newton diagonal and its inverse at voxel p (unpadded index) into r, diag, inv_diag.

    Returns the voxel's contributions to ||F||^2, ||s_eff||^2, sum vmax, ||x||^2 and
    ||F/diag||^2 (all 0 for an inactive voxel).
    """
    dt = r.get_type().element_type
    pp = p + sz
    f = ti.cast(0.0, ti.f64)
    dg = ti.cast(0.0, ti.f64)
    idg = ti.cast(0.0, ti.f64)
    c_ff = ti.cast(0.0, ti.f64)
    c_ss = ti.cast(0.0, ti.f64)
    c_vs = ti.cast(0.0, ti.f64)
    c_xx = ti.cast(0.0, ti.f64)
    c_jj = ti.cast(0.0, ti.f64)
    if D[p] > 0:
        up = x64[pp]
        src = ti.cast(s[p], ti.f64)
        if inv_dt != 0:
            src += inv_dt * ti.cast(uold[p], ti.f64)
        flux = neighbor_sum(x64, gz, gy, gx, pp, sy, sz)
        gsum = ti.cast(conductance_sum(gz, gy, gx, pp, sy, sz), ti.f64)
        lin = ti.cast(a[p], ti.f64) + inv_dt
        vm = ti.cast(vmax[p], ti.f64)
        inv_den = 1.0 / (km + up)  # one division serves the rate and its slope
        mm = vm * up * inv_den
        dmm = vm * km * inv_den * inv_den
        if zero_order != 0:
            mm = vm
            dmm = 0.0
        f = flux - gsum * up - lin * up - mm + src
        dg = gsum + lin + dmm
        if dg > 0:  # 0 only for an isolated voxel with no sink: left out like D = 0
            idg = 1.0 / dg
        c_ff = f * f
        c_ss = src * src
        c_vs = vm
        c_xx = up * up
        jf = f * idg
        c_jj = jf * jf
    r[pp] = ti.cast(f, dt)
    diag[pp] = ti.cast(dg, dt)
    inv_diag[pp] = ti.cast(idg, dt)
    return c_ff, c_ss, c_vs, c_xx, c_jj


@ti.kernel(fastcache=True)
def residual_jacobian(
    x64: ND1_F64, uold: ND1, D: ND1, a: ND1, vmax: ND1, s: ND1, gz: ND1, gy: ND1, gx: ND1,
    km: ti.f64, inv_dt: ti.f64, zero_order: ti.i32, r: ND1, diag: ND1, inv_diag: ND1,
    part: ND1_F64, scal: ND1_F64, nz: ti.i32, ny: ti.i32, nx: ti.i32, gate: ti.i32, gpu: ti.template(),
):
    """Nonlinear residual and Newton diagonal at the float64 iterate ``x64``.

    For active voxels (D > 0), in float64::

        F = sum g (x_q - x_p) - (a + 1/dt) x - vmax x/(km + x) + s + uold/dt
        diag = sum g + a + 1/dt + vmax km/(km + x)^2          (Jacobian diagonal of -F)

    ``r`` receives F, ``diag`` the diagonal and ``inv_diag`` its inverse (rounded to their
    dtype; the same bits in both layouts); inactive voxels get 0 in all three.
    ``scal[S_FF] = ||F||^2``, ``scal[S_SS] = ||s + uold/dt||^2``, ``scal[S_VM] = sum vmax``,
    ``scal[S_XX] = ||x||^2`` and ``scal[S_JJ] = ||F / diag||^2`` (the Jacobi-scaled residual,
    in field units; voxels with diag = 0 left out), float64 in a fixed order (see
    :mod:`kernels.reductions`). ``inv_dt = 0`` gives the steady problem (``uold`` unread).
    ``zero_order = 1`` linearises the Michaelis-Menten term as saturated (``vmax``, slope 0):
    the solver's first step from a zero field, where the true tangent (slope vmax/km) would
    allow only a tiny step. ``x64, g*, r, diag, inv_diag`` are padded (offset 0); ``uold, D,
    a, vmax, s`` are not. ``gate`` >= 0: run only when ``scal[gate]`` is not 0 (the Newton
    control on the device); -1: always.
    """
    live = 1
    if gate >= 0:
        live = ti.cast(scal[gate] != 0, ti.i32)
    sy = nx
    sz = nx * ny
    if ti.static(gpu):
        n = nz * ny * nx
        nl = lane_count(n)
        for t in range(nl * live):
            ff = ti.cast(0.0, ti.f64)
            ss = ti.cast(0.0, ti.f64)
            vs = ti.cast(0.0, ti.f64)
            xx = ti.cast(0.0, ti.f64)
            jj = ti.cast(0.0, ti.f64)
            for j in range((n - t + nl - 1) // nl):
                c0, c1, c2, c3, c4 = _residual_voxel(x64, uold, D, a, vmax, s, gz, gy, gx, km, inv_dt, zero_order,
                                                     r, diag, inv_diag, t + j * nl, sy, sz)
                ff += c0
                ss += c1
                vs += c2
                xx += c3
                jj += c4
            part[5 * t] = ff
            part[5 * t + 1] = ss
            part[5 * t + 2] = vs
            part[5 * t + 3] = xx
            part[5 * t + 4] = jj
        finish_sum(part, nl, 5, scal, S_FF, True, live)
    else:
        for z, y in ti.ndrange(nz * live, ny):
            ff = ti.cast(0.0, ti.f64)
            ss = ti.cast(0.0, ti.f64)
            vs = ti.cast(0.0, ti.f64)
            xx = ti.cast(0.0, ti.f64)
            jj = ti.cast(0.0, ti.f64)
            for x in range(nx):
                c0, c1, c2, c3, c4 = _residual_voxel(x64, uold, D, a, vmax, s, gz, gy, gx, km, inv_dt, zero_order,
                                                     r, diag, inv_diag, (z * ny + y) * nx + x, sy, sz)
                ff += c0
                ss += c1
                vs += c2
                xx += c3
                jj += c4
            row = z * ny + y
            part[5 * row] = ff
            part[5 * row + 1] = ss
            part[5 * row + 2] = vs
            part[5 * row + 3] = xx
            part[5 * row + 4] = jj
        finish_sum(part, nz * ny, 5, scal, S_FF, False, live)


@ti.kernel(fastcache=True)
def apply_operator(
    v: ND1, out: ND1, diag: ND1, gz: ND1, gy: ND1, gx: ND1,
    part: ND1_F64, scal: ND1_F64, slot: ti.i32, nz: ti.i32, ny: ti.i32, nx: ti.i32, gpu: ti.template(),
):
    """``out = J v = diag v - sum g v_q`` (the linearised operator); ``scal[slot] = v . out``.

    Padded arrays (offset 0). Inactive voxels (diag = 0, all their conductances 0) give 0 with
    no branch. Arithmetic in the dtype of ``v``; the dot product accumulates in float64.
    """
    sy = nx
    sz = nx * ny
    if ti.static(gpu):
        n = nz * ny * nx
        nl = lane_count(n)
        for t in range(nl):
            dot = ti.cast(0.0, ti.f64)
            for j in range((n - t + nl - 1) // nl):
                p = sz + t + j * nl
                q = diag[p] * v[p] - neighbor_sum(v, gz, gy, gx, p, sy, sz)
                out[p] = q
                dot += ti.cast(v[p], ti.f64) * ti.cast(q, ti.f64)
            part[t] = dot
        finish_sum(part, nl, 1, scal, slot, True, 1)
    else:
        for z, y in ti.ndrange(nz, ny):
            dot = ti.cast(0.0, ti.f64)
            base = sz + (z * ny + y) * nx
            for x in range(nx):
                p = base + x
                q = diag[p] * v[p] - neighbor_sum(v, gz, gy, gx, p, sy, sz)
                out[p] = q
                dot += ti.cast(v[p], ti.f64) * ti.cast(q, ti.f64)
            part[z * ny + y] = dot
        finish_sum(part, nz * ny, 1, scal, slot, False, 1)
