"""Steady and implicit solves of the transport operator: Newton + multigrid-preconditioned CG.

The host-side control of the solver; its kernels live in :mod:`marrow3d.kernels.transport`
(operator, residual), :mod:`~marrow3d.kernels.multigrid` (smoothing, transfers, coarsening),
:mod:`~marrow3d.kernels.coarse_solve` (coarsest level, sealed pockets),
:mod:`~marrow3d.kernels.krylov` (CG and Newton updates) and
:mod:`~marrow3d.kernels.reductions`; its memory plan in :mod:`~marrow3d.kernels.solver_plan`.

The problem is the one of :mod:`marrow3d.kernels.transport` (``F(u) = 0``, or one backward
Euler step of ``du/dt = F(u)``). :class:`MultigridSolver` owns the whole grid hierarchy (dense
ndarrays, allocated once) and the finest-level coefficient arrays ``D, a, vmax, s``, which
:func:`marrow3d.kernels.transport.assemble_coefficients` fills. One solver serves every field
of a grid: assemble a field's coefficients, solve, move on to the next field.

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
are available; :mod:`marrow3d.kernels.multigrid` describes the smoother, the transfers and the
coarse operators, :mod:`marrow3d.kernels.coarse_solve` the coarsest level and the pockets).

Sealed pockets: the active set is labelled on the host (scipy, only when a fingerprint of
``D > 0`` changes); components of at most ``pocket_max`` voxels other than the largest are
masked out of the cycle and solved by a two-level cycle of their own.

All reductions accumulate in float64, per row then in a fixed order: results are bitwise
reproducible for a given grid, backend and thread count.

Launches: a visit of a level is two kernels and a CG iteration after the cycle one
(``cg_step``): their top-level loops run in order with the arithmetic of the one-loop kernels,
so results are bitwise those of separate launches, at a fifth of the Python launch overhead.

Measured (2-core CPU, float32, tol 1e-6; ``python -m benchmarks`` and
``python -m benchmarks.transport``, see docs/benchmarks.md): CG iterations 5-8 for O2 and 6-8
for a linear drug field from 32^3 to 256^3; at 128^3 a cold O2 solve 0.36-0.6 s and a warm
re-solve 0.21-0.37 s (machine load 1.2-1.9).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .kernels import coarse_solve as cs
from .kernels import krylov as kr
from .kernels import multigrid as mg
from .kernels import transport as T
from .kernels.solver_plan import (
    COARSE_MAX,
    PART_COLUMNS,
    S_FF,
    S_FP,
    S_JJ,
    S_PQ,
    S_RR,
    S_SS,
    S_VM,
    S_XX,
    N_SCAL,
    STAGGER,
    band_ordering,
    hierarchy_shapes,
    padded_size,
)
from .kernels.ti_compat import ti

__all__ = ["SolveInfo", "MultigridSolver", "hierarchy_shapes"]


@dataclass
class SolveInfo:
    """Outcome of one solve.

    Attributes
    ----------
    converged : bool
        True when both ``relative_residual <= tol`` and ``scaled_residual <= tol``. False
        means the field must not be trusted.
    iterations : int
        Conjugate-gradient iterations (= V-cycles), summed over Newton steps.
    newton_iterations : int
        Newton (outer) steps taken.
    residual_history : list of float
        ``max(relative_residual, scaled_residual)`` before the first and after each Newton
        step.
    relative_residual : float
        ``||F(u)||_2 / ||s_eff||_2`` of the float64 iterate, over active voxels; ``s_eff = s``
        (plus ``u_old/dt`` for a backward Euler step). Dimensionless.
    scaled_residual : float
        ``||F(u) / diag||_2 / ||u||_2`` over active voxels, diag being the Jacobian diagonal:
        the correction each voxel would still make on its own, relative to the field
        (dimensionless; 0 when u = 0). It does not change when rows are rescaled, so a few
        voxels with huge coefficients (a vessel exchange of 1e8 /min) cannot make it look
        small, as they can ``relative_residual``, whose scale ``||s_eff||`` they dominate.
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
    scaled_residual: float = math.inf
    field_relative_residual: float = math.inf
    scale: float = 0.0
    message: str = ""


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


def _alloc(dtype, size: int, keep: list | None = None):
    """A zero-filled Taichi ndarray of ``size`` elements (+ ``STAGGER`` unused ones, see :mod:`kernels.solver_plan`).

    With ``keep`` the array has exactly ``size`` elements (public arrays whose length is part
    of the API) and a small spacer allocation, appended to ``keep``, staggers the next one.
    """
    if keep is None:
        arr = ti.ndarray(dtype, shape=size + STAGGER)
    else:
        arr = ti.ndarray(dtype, shape=size)
        keep.append(ti.ndarray(dtype, shape=STAGGER))
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
        coarse_max: int = COARSE_MAX, smoothing_sweeps: int = 2, cycle: str = "F", pocket_max: int = 1000,
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
        self._band_strides, self._band = band_ordering(self.levels[-1].shape)
        nc = self.levels[-1].n
        self._L = ti.ndarray(ti.f64, shape=nc * (self._band + 1))
        self._btmp = ti.ndarray(ti.f64, shape=nc)
        self._part = ti.ndarray(ti.f64, shape=max(PART_COLUMNS * self.shape[0] * self.shape[1], PART_COLUMNS))
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
        T.face_conductances(
            self.D, l0.gz, l0.gy, l0.gx, self._part, self._scal, S_FP, nz, ny, nx, 1.0 / self.voxel_um**2
        )
        for f, c in zip(self.levels[:-1], self.levels[1:]):
            mg.coarsen_conductances(f.gz, f.gy, f.gx, c.gz, c.gy, c.gx, *f.shape, *c.shape, *f.factor)
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
            cs.mask_pockets(self.levels[0].inv_diag, self._pocket_idx, int(self._pocket_idx.shape[0]))
        for f, c in zip(self.levels[:-1], self.levels[1:]):
            mg.coarsen_diag(
                f.diag, f.inv_diag, f.gz, f.gy, f.gx, c.diag, c.inv_diag, c.gz, c.gy, c.gx,
                *f.shape, *c.shape, *f.factor,
            )
        lc = self.levels[-1]
        cs.band_factor(lc.diag, lc.gz, lc.gy, lc.gx, self._L, *lc.shape, *self._band_strides, self._band)

    def _cycle(self, level: int = 0, kind: str = "V", zero_guess: bool = True) -> None:
        """Improve e towards A^{-1} b on ``level`` by one multigrid cycle (e = 0 first if asked).

        Pre-smoothing sweeps (red, black), post-smoothing (black, red): each cycle is its own
        adjoint, so the preconditioner is symmetric as CG needs. ``kind`` "V" visits the
        coarser level once, "W" twice, "F" once as F then once as V.
        """
        lev = self.levels[level]
        if level == len(self.levels) - 1:
            if zero_guess:  # a second visit would find e already exact
                cs.band_solve(
                    self._L, lev.b, lev.e, lev.diag, self._btmp, *lev.shape, *self._band_strides, self._band
                )
            return
        g = (lev.gz, lev.gy, lev.gx)
        nxt = self.levels[level + 1]
        fz, fy, fx = lev.factor
        sweeps = self.smoothing_sweeps
        mg.presmooth_restrict(
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
        mg.prolong_postsmooth(
            lev.b, lev.inv_diag, *g, lev.e, nxt.e, *lev.shape, nxt.shape[1], nxt.shape[2], fz - 1, fy - 1, fx - 1,
            sweeps,
        )

    def _scalars(self) -> np.ndarray:
        return self._scal.to_numpy()

    def _residual(self, km: float, inv_dt: float, zero_order: bool = False) -> tuple[float, float, float]:
        """Residual at the iterate into r (and the Newton diagonal).

        Returns ``(||F||, ||s_eff||, ||F / diag|| / ||x||)``; the last is 0 when x = 0.
        """
        l0 = self.levels[0]
        uold = self._uold if inv_dt != 0 else self.s
        T.residual_jacobian(
            self.x64, uold, self.D, self.a, self.vmax, self.s, l0.gz, l0.gy, l0.gx, float(km), float(inv_dt),
            int(zero_order), self.r, l0.diag, l0.inv_diag, self._part, self._scal, *self.shape,
        )
        sc = self._scalars()
        self._nonlinear = bool(sc[S_VM] > 0)
        self._cold = bool(sc[S_XX] == 0)
        xnorm = math.sqrt(max(sc[S_XX], 0.0))
        scaled = math.sqrt(max(sc[S_JJ], 0.0)) / xnorm if xnorm > 0 else 0.0
        return math.sqrt(max(sc[S_FF], 0.0)), math.sqrt(max(sc[S_SS], 0.0)), scaled

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
                cs.pocket_solve(
                    self.r, self.z, l0.diag, l0.gz, l0.gy, l0.gx, self._pocket_idx, self._pocket_off,
                    self._n_pockets, cs.POCKET_SWEEPS, *shp,
                )
            kr.cg_step(
                self.r, self.z, self.p, self.q, self.dx, l0.diag, l0.gz, l0.gy, l0.gx, self._part, self._scal,
                1 if it == 0 else 0, *shp,
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
            kr.load_from_field(u, self.x64, self.D)
        else:
            kr.load_from_array(u, self.x64, self.D)

    def _store(self, u) -> None:
        if isinstance(u, ti.Field):
            kr.store_to_field(self.x64, u)
        else:
            kr.store_to_array(self.x64, u)

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
            Target of both the relative residual ``||F||_2 / ||s||_2`` and the Jacobi-scaled
            residual ``||F / diag||_2 / ||u||_2`` (dimensionless; see :class:`SolveInfo`).
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
        kr.copy_unpad(self.x64, self._uold, self.n, self._pad)
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
            rho, scale, scaled = self._residual(km, inv_dt)
            first = info.newton_iterations == 0
            if first:
                info.scale = scale
                if scale == 0.0:
                    # no source anywhere: u = 0 solves the problem (exactly, for every km)
                    self.x64.fill(0)
                    self._store(u)
                    info.converged = True
                    info.relative_residual = info.field_relative_residual = info.scaled_residual = 0.0
                    info.residual_history = [0.0]
                    info.message = "no source: u = 0"
                    return info
                if self._nonlinear and not km > 0:
                    raise ValueError(f"km must be > 0 when vmax > 0, got {km}")
            # ||F|| / ||s|| alone accepts a wrong field when a few rows with huge coefficients
            # (a large vessel exchange E: their source E u_blood) dominate ||s||: the
            # Jacobi-scaled residual ||F / diag|| / ||x|| is blind to row scaling and guards
            # it. Every decision below reads the larger of the two (as a residual norm: in
            # well-scaled problems that is rho itself, bit for bit, so nothing changes there).
            info.relative_residual = rho / scale
            info.scaled_residual = scaled
            if scaled * scale > rho:
                rho_eff = scaled * scale
            else:
                rho_eff = rho
            rel = rho_eff / scale
            info.residual_history.append(rel)
            if not (math.isfinite(rel) and math.isfinite(scaled)):
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
            if rho_prev is not None and rho_eff > 0.95 * rho_prev:
                stalled += 1
                if stalled >= 5:
                    info.message = "residual stagnated (floating-point floor or inconsistent problem)"
                    break
            else:
                stalled = 0
            # inexact Newton: Eisenstat-Walker choice 2, never tighter than the goal needs
            need = 0.5 * tol * scale / rho_eff
            if rho_prev is None:
                eta = 0.1
            else:
                eta = 0.9 * (rho_eff / rho_prev) ** 2
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
                cs.mask_pockets(self.levels[0].inv_diag, self._pocket_idx, int(self._pocket_idx.shape[0]))
            # CG reduces the unscaled residual it works on by the factor eta
            its, _ = self._pcg(eta * rho, max_iterations - info.iterations)
            info.iterations += its
            kr.newton_update(self.x64, self.dx, self.D, self.n, self._pad)
            info.newton_iterations += 1
            rho_prev, eta_prev = rho_eff, eta
        kr.round_iterate(self.x64, self.D, self._pad, self._pad + self.n)
        self._store(u)
        if self.dtype == ti.f64:
            info.field_relative_residual = info.relative_residual
        elif not field_residual:
            info.field_relative_residual = math.nan
        else:
            rho_f, _, _ = self._residual(km, inv_dt)
            info.field_relative_residual = rho_f / scale
        return info
