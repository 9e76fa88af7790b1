"""Reference implementation of the transport operator (numpy/scipy only, no Taichi).

This module is the test oracle of :mod:`kernels.transport` and the multigrid solver: it
builds the *same* discrete operator as a ``scipy.sparse`` matrix and solves it directly. It is
written for clarity, not speed (fine up to about 40^3 voxels).

The discrete problem (cell-centred voxels of edge ``h`` um, arrays C-ordered ``(z, y, x)``,
no-flux domain boundary). For every *active* voxel p (``D_p > 0``)::

    F_p(u) = sum_{q in 6 nbrs} g_pq (u_q - u_p) - a_p u_p - vmax_p u_p / (km + u_p) + s_p = 0

    g_pq = 2 D_p D_q / (D_p + D_q) / h^2     [1/min]   (harmonic mean; 0 if either D is 0)

Voxels with ``D = 0`` (bone, outside) are *inactive*: their ``u`` is held at 0, they carry no
flux and take no part in the residual (``F_p = 0`` there by definition).

Units: D [um^2/min], a [1/min] (decay + linear uptake + vessel exchange E), vmax [u/min]
(Michaelis-Menten maximal consumption), km [u], s [u/min] (E u_blood + secretion), where
[u] is the field's unit (mmHg for O2, uM for drugs, su for the remodeling signal).

The coefficient tables (:class:`CoefficientTables`) live here because they are plain numpy
data shared by this reference and the Taichi kernels; :mod:`kernels.transport` re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .codes import (
    CLASS_NONE,
    MARROW,
    N_CELL_TYPES,
    N_TISSUE,
    VESSEL_CLASS_OF_TISSUE,
)

__all__ = [
    "CoefficientTables",
    "CLASS_OF_TISSUE",
    "exchange_rate",
    "assemble_coefficients",
    "face_conductances",
    "operator_matrix",
    "residual",
    "solve_steady",
    "backward_euler_step",
    "balance_totals",
]

#: Vessel class of each tissue code, as an array indexed by tissue code.
CLASS_OF_TISSUE = np.array([VESSEL_CLASS_OF_TISSUE[t] for t in range(N_TISSUE)], dtype=np.int32)
N_CLASSES = 3  # CLASS_NONE, CLASS_ARTERIOLE, CLASS_SINUSOID


def _per_class(values, name: str) -> np.ndarray:
    """Accept a per-class table of length 2 (arteriole, sinusoid) or 3 (indexed by class code)."""
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size == N_CLASSES - 1:
        arr = np.concatenate([[0.0], arr])
    if arr.size != N_CLASSES:
        raise ValueError(f"{name} needs 2 (arteriole, sinusoid) or 3 (by class code) values, got {arr.size}")
    arr = arr.copy()
    arr[CLASS_NONE] = 0.0  # non-vessels never exchange, whatever the caller put there
    return arr


def _table(values, n: int, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size != n:
        raise ValueError(f"{name} needs {n} values, got {arr.size}")
    return arr.copy()


@dataclass
class CoefficientTables:
    """Per-label and per-type tables from which every transport field's coefficients are built.

    One instance describes one field (oxygen, a drug, the remodeling signal). Tables indexed by
    tissue code have ``N_TISSUE`` (6) entries, by cell code ``N_CELL_TYPES`` (5) entries, by
    vessel class 3 entries (``CLASS_NONE``, ``CLASS_ARTERIOLE``, ``CLASS_SINUSOID``; a length-2
    table is read as (arteriole, sinusoid)).

    Attributes
    ----------
    diffusivity_by_tissue : array of 6 float
        D [um^2/min] of each tissue label; 0 makes a label inactive (no flux, u = 0).
    decay_by_tissue : array of 6 float
        Linear decay rate [1/min] of each tissue label.
    uptake_by_cell : array of 5 float
        Linear uptake [1/min] by the cell in a marrow voxel (EMPTY usually 0).
    vmax_by_cell : array of 5 float
        Michaelis-Menten maximal consumption [u/min] by the cell in a marrow voxel.
    secretion_by_cell : array of 5 float
        Secretion [u/min] by the cell in a marrow voxel.
    exchange_by_class : array of 3 float
        Exchange rate E0 [1/min] of a healthy vessel voxel, by vessel class.
    leak_by_class : array of 3 float
        Dimensionless permeability gain as integrity falls, by vessel class.
    blood_by_class : array of 3 float
        Blood-side concentration u_blood [u], by vessel class.
    integrity_floor : float
        Vessels with integrity below this exchange nothing (dimensionless, in [0, 1]).

    Notes
    -----
    Exchange of a vessel voxel p of class c with integrity I (``I >= integrity_floor``)::

        E_p = exchange_by_class[c] * I * (1 + leak_by_class[c] * (1 - I))     [1/min]

    (perfusion falls with integrity, permeability rises as the vessel leaks). Then
    ``a = decay[tissue] + E + uptake[cell]``, ``vmax = vmax[cell]``, ``s = E u_blood[c] +
    secretion[cell]``, the cell terms counting only in marrow voxels.
    """

    diffusivity_by_tissue: np.ndarray
    decay_by_tissue: np.ndarray = field(default_factory=lambda: np.zeros(N_TISSUE))
    uptake_by_cell: np.ndarray = field(default_factory=lambda: np.zeros(N_CELL_TYPES))
    vmax_by_cell: np.ndarray = field(default_factory=lambda: np.zeros(N_CELL_TYPES))
    secretion_by_cell: np.ndarray = field(default_factory=lambda: np.zeros(N_CELL_TYPES))
    exchange_by_class: np.ndarray = field(default_factory=lambda: np.zeros(N_CLASSES))
    leak_by_class: np.ndarray = field(default_factory=lambda: np.zeros(N_CLASSES))
    blood_by_class: np.ndarray = field(default_factory=lambda: np.zeros(N_CLASSES))
    integrity_floor: float = 0.0

    def __post_init__(self) -> None:
        self.diffusivity_by_tissue = _table(self.diffusivity_by_tissue, N_TISSUE, "diffusivity_by_tissue")
        self.decay_by_tissue = _table(self.decay_by_tissue, N_TISSUE, "decay_by_tissue")
        self.uptake_by_cell = _table(self.uptake_by_cell, N_CELL_TYPES, "uptake_by_cell")
        self.vmax_by_cell = _table(self.vmax_by_cell, N_CELL_TYPES, "vmax_by_cell")
        self.secretion_by_cell = _table(self.secretion_by_cell, N_CELL_TYPES, "secretion_by_cell")
        self.exchange_by_class = _per_class(self.exchange_by_class, "exchange_by_class")
        self.leak_by_class = _per_class(self.leak_by_class, "leak_by_class")
        self.blood_by_class = _per_class(self.blood_by_class, "blood_by_class")
        self.integrity_floor = float(self.integrity_floor)
        for name in (
            "diffusivity_by_tissue",
            "decay_by_tissue",
            "uptake_by_cell",
            "vmax_by_cell",
            "secretion_by_cell",
            "exchange_by_class",
            "blood_by_class",
        ):
            arr = getattr(self, name)
            # Negative rates would break the M-matrix structure (and u >= 0) the solver relies on.
            if not np.all(np.isfinite(arr)) or np.any(arr < 0):
                raise ValueError(f"{name} must be finite and >= 0, got {arr}")
        if not np.all(np.isfinite(self.leak_by_class)) or np.any(self.leak_by_class < -1):
            raise ValueError(f"leak_by_class must be >= -1 (E must stay >= 0), got {self.leak_by_class}")


def exchange_rate(tissue: np.ndarray, integrity: np.ndarray, tables: CoefficientTables) -> np.ndarray:
    """Vessel exchange rate E [1/min] of every voxel (0 for non-vessels and failed vessels).

    Parameters
    ----------
    tissue : ndarray of uint8, shape (nz, ny, nx)
        Tissue codes.
    integrity : ndarray of float, shape (nz, ny, nx)
        Vessel integrity in [0, 1] (ignored for non-vessel voxels).
    tables : CoefficientTables

    Returns
    -------
    ndarray of float64
    """
    cls = CLASS_OF_TISSUE[tissue]
    integ = integrity.astype(np.float64)
    e = tables.exchange_by_class[cls] * integ * (1.0 + tables.leak_by_class[cls] * (1.0 - integ))
    ok = (cls != CLASS_NONE) & (integ >= tables.integrity_floor)
    return np.where(ok, e, 0.0)


def assemble_coefficients(
    tissue: np.ndarray,
    cells: np.ndarray,
    integrity: np.ndarray,
    tables: CoefficientTables,
    diffusivity_override: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-voxel coefficients (D, a, vmax, s) from the compact model state (float64).

    Mirrors :func:`kernels.transport.assemble_coefficients` term for term.

    Parameters
    ----------
    tissue, cells : ndarray of uint8, shape (nz, ny, nx)
        Tissue and cell codes (:mod:`kernels.codes`).
    integrity : ndarray of float, shape (nz, ny, nx)
        Vessel integrity in [0, 1].
    tables : CoefficientTables
    diffusivity_override : ndarray, optional
        Per-voxel D [um^2/min] replacing ``tables.diffusivity_by_tissue``.

    Returns
    -------
    D, a, vmax, s : ndarray of float64
        Diffusivity [um^2/min], linear sink [1/min], MM maximal rate [u/min], source [u/min].
    """
    tissue = np.asarray(tissue)
    cells = np.asarray(cells)
    marrow = tissue == MARROW
    cell = np.where(marrow, cells, 0)  # cells outside marrow are ignored
    cell_on = marrow.astype(np.float64)
    if diffusivity_override is None:
        D = tables.diffusivity_by_tissue[tissue]
    else:
        D = np.asarray(diffusivity_override, dtype=np.float64).copy()
    E = exchange_rate(tissue, integrity, tables)
    cls = CLASS_OF_TISSUE[tissue]
    a = tables.decay_by_tissue[tissue] + E + cell_on * tables.uptake_by_cell[cell]
    vmax = cell_on * tables.vmax_by_cell[cell]
    s = E * tables.blood_by_class[cls] + cell_on * tables.secretion_by_cell[cell]
    return D, a, vmax, s


def face_conductances(D: np.ndarray, voxel_um: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Face conductances g [1/min] along z, y and x (harmonic mean of D over h^2).

    Returns
    -------
    gz, gy, gx : ndarray of float64
        Shapes (nz-1, ny, nx), (nz, ny-1, nx), (nz, ny, nx-1); face k joins voxels k and k+1.
    """
    D = np.asarray(D, dtype=np.float64)
    inv_h2 = 1.0 / (voxel_um * voxel_um)
    out = []
    for axis in range(3):
        n = D.shape[axis]
        d1 = np.take(D, np.arange(n - 1), axis=axis)
        d2 = np.take(D, np.arange(1, n), axis=axis)
        prod = d1 * d2
        with np.errstate(invalid="ignore", divide="ignore"):
            g = np.where(prod > 0, 2.0 * prod / (d1 + d2), 0.0) * inv_h2
        out.append(g)
    return tuple(out)


def operator_matrix(D: np.ndarray, a: np.ndarray, voxel_um: float) -> sp.csr_matrix:
    """Sparse matrix of the linear part, ``A u = -sum g (u_q - u_p) + a u`` (positive form).

    Inactive voxels (D = 0) get identity rows and columns decoupled from the rest, so the
    solution of ``A u = 0`` holds them at 0.

    Returns
    -------
    scipy.sparse.csr_matrix, shape (N, N), N = nz*ny*nx in C order
    """
    shape = D.shape
    n = D.size
    idx = np.arange(n).reshape(shape)
    active = (np.asarray(D) > 0).ravel()
    rows, cols, vals = [], [], []
    diag = np.where(active, np.asarray(a, dtype=np.float64).ravel(), 1.0)
    for axis, g in enumerate(face_conductances(D, voxel_um)):
        m = shape[axis]
        i1 = np.take(idx, np.arange(m - 1), axis=axis).ravel()
        i2 = np.take(idx, np.arange(1, m), axis=axis).ravel()
        gv = g.ravel()
        keep = gv > 0
        i1, i2, gv = i1[keep], i2[keep], gv[keep]
        rows += [i1, i2]
        cols += [i2, i1]
        vals += [-gv, -gv]
        np.add.at(diag, i1, gv)
        np.add.at(diag, i2, gv)
    rows.append(np.arange(n))
    cols.append(np.arange(n))
    vals.append(diag)
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )


def residual(
    u: np.ndarray,
    D: np.ndarray,
    a: np.ndarray,
    vmax: np.ndarray,
    s: np.ndarray,
    km: float,
    voxel_um: float,
) -> np.ndarray:
    """Nonlinear residual F(u) [u/min] of the steady problem (0 on inactive voxels).

    Computed in float64 whatever the input dtype.
    """
    u = np.asarray(u, dtype=np.float64)
    active = np.asarray(D) > 0
    f = np.zeros_like(u)
    for axis, g in enumerate(face_conductances(D, voxel_um)):
        m = u.shape[axis]
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis] = slice(0, m - 1)
        hi[axis] = slice(1, m)
        flux = g * (u[tuple(hi)] - u[tuple(lo)])  # flux into the low voxel
        f[tuple(lo)] += flux
        f[tuple(hi)] -= flux
    f += -np.asarray(a, np.float64) * u + np.asarray(s, np.float64)
    vmax = np.asarray(vmax, np.float64)
    f -= vmax * u / (km + u) if km > 0 else vmax * (u > 0)
    return np.where(active, f, 0.0)


def _newton(A, D, a, vmax, s, km, voxel_um, u0, tol, max_newton):
    active = (np.asarray(D) > 0).ravel()
    rhs_scale = np.linalg.norm(np.where(active, np.asarray(s, np.float64).ravel(), 0.0))
    b = np.where(active, np.asarray(s, np.float64).ravel(), 0.0)
    vm = np.where(active, np.asarray(vmax, np.float64).ravel(), 0.0)
    if not np.any(vm > 0):
        return spla.spsolve(A.tocsc(), b).reshape(D.shape)
    u = np.zeros(D.size) if u0 is None else np.where(active, np.asarray(u0, np.float64).ravel(), 0.0)
    for _ in range(max_newton):
        F = b - A @ u - vm * u / (km + u)
        J = A + sp.diags(vm * km / (km + u) ** 2)
        # Both tests: ||F|| / ||s|| alone is fooled when a few rows with huge coefficients
        # dominate ||s|| (see marrow3d.transport_solver.SolveInfo.scaled_residual).
        diag = J.diagonal()
        scaled = np.linalg.norm(np.where(diag > 0, F / np.where(diag > 0, diag, 1.0), 0.0))
        if rhs_scale == 0 or (np.linalg.norm(F) <= tol * rhs_scale and scaled <= tol * np.linalg.norm(u)):
            return u.reshape(D.shape)
        u = np.maximum(u + spla.spsolve(J.tocsc(), F), 0.0)
    raise RuntimeError("reference Newton did not converge")


def solve_steady(
    D: np.ndarray,
    a: np.ndarray,
    vmax: np.ndarray,
    s: np.ndarray,
    km: float,
    voxel_um: float,
    u0: np.ndarray | None = None,
    tol: float = 1e-13,
    max_newton: int = 100,
) -> np.ndarray:
    """Steady solution of F(u) = 0 by a sparse direct solve (Newton with direct solves for MM).

    Parameters
    ----------
    D, a, vmax, s : ndarray, shape (nz, ny, nx)
        Coefficients (units in the module docstring).
    km : float
        Michaelis-Menten constant [u] (> 0 when any vmax > 0).
    voxel_um : float
        Voxel edge h [um].
    u0 : ndarray, optional
        Newton starting point (default 0, from which Newton rises monotonically).
    tol : float
        Newton stops once ||F||_2 <= tol ||s||_2 and ||F / diag(J)||_2 <= tol ||u||_2 (over
        active voxels).

    Returns
    -------
    ndarray of float64, shape (nz, ny, nx)

    Raises
    ------
    RuntimeError
        Newton did not converge in ``max_newton`` iterations.
    """
    A = operator_matrix(D, a, voxel_um)
    return _newton(A, np.asarray(D), a, vmax, s, km, voxel_um, u0, tol, max_newton)


def backward_euler_step(
    u_old: np.ndarray,
    D: np.ndarray,
    a: np.ndarray,
    vmax: np.ndarray,
    s: np.ndarray,
    km: float,
    voxel_um: float,
    dt_min: float,
    tol: float = 1e-13,
) -> np.ndarray:
    """One implicit Euler step of du/dt = F(u) over ``dt_min`` minutes.

    Solves ``F(u) - (u - u_old)/dt = 0``, i.e. the steady problem with ``a + 1/dt`` and
    ``s + u_old/dt``. Inactive voxels stay at 0.
    """
    active = np.asarray(D) > 0
    u_old = np.where(active, np.asarray(u_old, np.float64), 0.0)
    return solve_steady(
        D, np.asarray(a, np.float64) + 1.0 / dt_min, vmax, np.asarray(s, np.float64) + u_old / dt_min,
        km, voxel_um, u0=u_old, tol=tol,
    )


def balance_totals(
    u: np.ndarray,
    tissue: np.ndarray,
    cells: np.ndarray,
    integrity: np.ndarray,
    tables: CoefficientTables,
    km: float,
    voxel_um: float,
    diffusivity_override: np.ndarray | None = None,
) -> dict[str, float]:
    """Domain totals [u um^3/min] of each source and sink term, over active voxels.

    Returns
    -------
    dict with keys
        ``exchange`` = sum E (u_blood - u) V (net vessel supply), ``secretion`` = sum secr V,
        ``uptake`` = sum (uptake u + vmax u/(km+u)) V, ``decay`` = sum decay u V,
        with V = h^3 the voxel volume [um^3]. At steady state ``exchange + secretion =
        uptake + decay`` (no-flux boundary).
    """
    D, _, _, _ = assemble_coefficients(tissue, cells, integrity, tables, diffusivity_override)
    active = D > 0
    u = np.where(active, np.asarray(u, np.float64), 0.0)
    vol = float(voxel_um) ** 3
    marrow = (tissue == MARROW) & active
    cell = np.where(marrow, cells, 0)
    E = np.where(active, exchange_rate(tissue, integrity, tables), 0.0)
    ub = tables.blood_by_class[CLASS_OF_TISSUE[tissue]]
    lin = np.where(marrow, tables.uptake_by_cell[cell], 0.0)
    vm = np.where(marrow, tables.vmax_by_cell[cell], 0.0)
    mm = vm * u / (km + u) if km > 0 else vm * (u > 0)
    return {
        "exchange": float(np.sum(E * (ub - u)) * vol),
        "secretion": float(np.sum(np.where(marrow, tables.secretion_by_cell[cell], 0.0)) * vol),
        "uptake": float(np.sum(lin * u + mm) * vol),
        "decay": float(np.sum(np.where(active, tables.decay_by_tissue[tissue], 0.0) * u) * vol),
    }


# ---------------------------------------------------------------------------------------------
# Synthetic test problems (shared by the tests and benchmarks/transport.py)
# ---------------------------------------------------------------------------------------------


def oxygen_tables(**overrides) -> CoefficientTables:
    """O2-like tables with the defaults of docs/model.md section 7 (mmHg, um, min).

    D = 1.2e5 um^2/min in marrow and vessels, 0 in bone/outside; Michaelis-Menten uptake at
    full packing of 230 mmHg/min for a progenitor (5 amol/s per cell), blast x2, HSC x0.3,
    LSC x0.4; vessel exchange 400 /min, leak 1 (arteriole) / 3 (sinusoid); blood pO2 32 / 16
    mmHg; integrity floor 0.1. Use with km = 1 mmHg.
    """
    kw = dict(
        diffusivity_by_tissue=[1.2e5, 0.0, 1.2e5, 1.2e5, 1.2e5, 0.0],
        vmax_by_cell=[0.0, 69.0, 230.0, 92.0, 460.0],
        exchange_by_class=[400.0, 400.0],
        leak_by_class=[1.0, 3.0],
        blood_by_class=[32.0, 16.0],
        integrity_floor=0.1,
    )
    kw.update(overrides)
    return CoefficientTables(**kw)


def synthetic_marrow(shape, seed: int = 0, bone_fraction: float = 0.12, damaged_fraction: float = 0.2):
    """A seeded marrow-like voxel state for tests and benchmarks (not a model of anatomy).

    Trabecular bone as thresholded smooth noise concentrated towards the z = 0 end, a
    sinusoid network of straight 1-voxel channels along the three axes (spacing about 8
    voxels, as 80 um at 10 um voxels), arterioles running next to bone, a cell in 70% of
    marrow voxels, and a fraction of vessel voxels with reduced integrity.

    Returns
    -------
    tissue, cells : ndarray of uint8
    integrity : ndarray of float32
    """
    from scipy.ndimage import binary_dilation, gaussian_filter

    from .codes import ARTERIOLE, BONE, SINUSOID

    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    tissue = np.zeros(shape, np.uint8)  # MARROW
    noise = gaussian_filter(rng.standard_normal(shape), sigma=2.0, mode="wrap")
    ramp = np.linspace(1.0, -1.0, nz)[:, None, None]  # more bone near z = 0
    field_ = noise / (noise.std() + 1e-12) + 1.5 * ramp
    thr = np.quantile(field_, 1.0 - bone_fraction)
    bone = field_ > thr
    tissue[bone] = BONE
    spacing = 8
    sinus = np.zeros(shape, bool)
    for axis in range(3):
        others = [d for d in range(3) if d != axis]
        n0, n1 = shape[others[0]], shape[others[1]]
        off0, off1 = rng.integers(0, spacing, 2)
        for i0 in range(off0 % max(n0, 1), n0, spacing):
            for i1 in range(off1 % max(n1, 1), n1, spacing):
                idx = [slice(None)] * 3
                idx[others[0]] = i0
                idx[others[1]] = i1
                sinus[tuple(idx)] = True
    sinus &= ~bone
    tissue[sinus] = SINUSOID
    # arterioles: marrow voxels touching bone, thinned to about a third
    near_bone = binary_dilation(bone) & ~bone & ~sinus
    art = near_bone & (rng.random(shape) < 0.35)
    tissue[art] = ARTERIOLE
    marrow = tissue == MARROW
    cells = np.zeros(shape, np.uint8)
    occupied = marrow & (rng.random(shape) < 0.7)
    cells[occupied] = rng.choice([1, 2, 3, 4], size=int(occupied.sum()), p=[0.02, 0.78, 0.02, 0.18])
    integrity = np.zeros(shape, np.float32)
    vessel = (tissue == SINUSOID) | (tissue == ARTERIOLE)
    integrity[vessel] = 1.0
    damaged = vessel & (rng.random(shape) < damaged_fraction)
    integrity[damaged] = rng.uniform(0.0, 1.0, int(damaged.sum())).astype(np.float32)
    return tissue, cells, integrity
