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

All reductions accumulate in float64 in an order fixed by the grid (:mod:`kernels.reductions`):
results are bitwise reproducible for a given grid, layout and backend, whatever the thread
count.

Control on the device: the host takes the first Newton decision (it reads the first residual
anyway: a zero source, a missing km, the active-set fingerprint). From then on the CG stopping
test (:func:`kernels.krylov.cg_step`) and the Newton decisions (:func:`kernels.krylov.newton_decide`:
stopping tests, Eisenstat-Walker forcing term, stagnation) run on the device in the same
float64 operations, and every kernel reads gates in the register array, so launches that come
too early or too late do nothing. The host launches rounds of ``check_every`` CG iterations
plus the end of a Newton step and reads the registers once per round: about 1 + (Newton steps)
reads per solve instead of one per CG iteration and Newton step (5 instead of 14 per model
step of the 24^3 box with ``check_every = 4``), with results bitwise those of a host-side
loop (the pinned CPU digests did not change).

Launches: a visit of a large level is two kernels, all levels of at most 32^3 cells one kernel
per cycle, and a CG iteration after the cycle one more (``cg_step``): their top-level loops run
in order with the arithmetic of one-loop kernels, so results are bitwise those of separate
launches.

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
    G_COARSE,
    G_UPDATE,
    HISTORY,
    MSG_CONVERGED,
    MSG_ITERATION_CAP,
    MSG_NEWTON_CAP,
    MSG_NOT_FINITE,
    MSG_STAGNATED,
    N_ITERS,
    N_MSG,
    N_NEWTON,
    N_PHASE,
    N_REL,
    N_SCALED,
    PHASE_DONE,
    LAYOUTS,
    META_FIELDS,
    N_SCAL,
    S_FF,
    S_FP,
    S_FP2,
    S_JJ,
    S_SS,
    S_VM,
    S_XX,
    STAGGER,
    hierarchy_shapes,
    make_plan,
    padded_size,
)
from .kernels.ti_compat import is_gpu_arch, ti

__all__ = ["SolveInfo", "MultigridSolver", "hierarchy_shapes", "MAX_FUSED_LEVELS"]

#: At most this many of the smallest levels are visited by one launch of
#: ``kernels.multigrid.cycle_levels``: its code grows with the visits it unrolls (an F-cycle
#: over 6 levels is 21 visits, about 200 loops and 20 s of compilation on a CPU, once per
#: depth thanks to the kernel cache).
MAX_FUSED_LEVELS = 6


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


def _alloc(dtype, size: int, keep: list | None = None):
    """A zero-filled ndarray of ``size`` elements (+ ``STAGGER`` unused ones, see
    :mod:`kernels.solver_plan`).

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
    """One multigrid level: its shape, its offset in the pools and the pool arrays.

    Attributes ``gz, gy, gx, diag, inv_diag, b, e`` are the *pools* (shared by all levels);
    this level's cell (z, y, x) sits at ``offset + nx*ny + (z*ny + y)*nx + x`` in them.
    """

    def __init__(self, shape, offset: int, factor, pools: dict):
        self.shape = shape
        self.n = int(np.prod(shape))
        self.pad = shape[1] * shape[2]
        self.size = padded_size(shape)
        self.offset = offset
        self.factor = factor  # to the next coarser level, or None
        for k, arr in pools.items():
            setattr(self, k, arr)

    def view(self, name: str) -> np.ndarray:
        """This level's interior values of pool ``name`` as a (nz, ny, nx) numpy array (a copy)."""
        arr = getattr(self, name).to_numpy()
        lo = self.offset + self.pad
        return arr[lo : lo + self.n].reshape(self.shape)


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
        ``rows`` layout: coarsening stops at this many cells; that level is solved by a
        banded Cholesky factorisation. The ``voxels`` layout coarsens to one cell.
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
    layout : {"rows", "voxels"}, optional
        Kernel layout (:mod:`kernels.solver_plan`): ``rows`` (one thread per (z, y) row,
        banded coarsest solve) for CPUs, ``voxels`` (one thread per voxel, x fastest,
        lane-tree reductions, hierarchy down to one cell) for GPUs. Default: ``voxels`` on a
        GPU backend, else ``rows``. Passing ``voxels`` on the CPU runs the GPU code paths there
        (tests cross-check the two layouts that way); it is a compile-time choice per kernel,
        not global state.
    check_every : int, optional
        CG iterations per round of launches between two reads of the device registers
        (default 4; see :meth:`_newton_rounds`). Iterations launched after CG converged do
        nothing, so results and iteration counts do not depend on it; at most
        ``check_every - 1`` such iterations are launched per Newton step.

    Attributes
    ----------
    D, a, vmax, s : ndarrays, 1-D of length nz*ny*nx (C order), dtype ``dtype``
        Finest-level coefficients: diffusivity [um^2/min], linear sink [1/min], Michaelis-
        Menten maximal rate [u/min], source [u/min]. Write them with
        :func:`kernels.transport.assemble_coefficients` or :meth:`set_coefficients`.
    levels : list
        The hierarchy (shapes in ``[lev.shape for lev in levels]``).
    plan : kernels.solver_plan.SolverPlan
        Layout, levels, pool offsets and every array size.
    gpu_layout : bool
        True for the ``voxels`` layout (the ``gpu`` argument of every kernel).

    Notes
    -----
    Memory: about 17 words per voxel on the finest grid (coefficients, conductances, CG
    vectors, a float64 iterate) plus 1/7 of that for the coarse levels
    (:func:`kernels.solver_plan.solver_workspace_bytes`). Kernels take flat ndarrays, so they
    compile once per process, dtype and layout, whatever the grid.
    """

    def __init__(
        self, shape, voxel_um: float, dtype=ti.f32, *,
        coarse_max: int = COARSE_MAX, smoothing_sweeps: int = 2, cycle: str = "F", pocket_max: int = 1000,
        field_residual: bool = True, layout: str | None = None, check_every: int | None = None,
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
        if layout is None:
            layout = "voxels" if is_gpu_arch() else "rows"
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if check_every is None:
            check_every = 4
        if int(check_every) < 1:
            raise ValueError(f"check_every must be >= 1, got {check_every}")
        self.cycle = cycle
        self.field_residual = bool(field_residual)
        self.shape = tuple(int(n) for n in shape)
        self.n = int(np.prod(self.shape))
        self.voxel_um = float(voxel_um)
        self.dtype = dtype
        self.smoothing_sweeps = int(smoothing_sweeps)
        self.check_every = int(check_every)
        self.plan = make_plan(self.shape, layout, coarse_max)
        self.gpu_layout = layout == "voxels"
        self._pad = self.shape[1] * self.shape[2]
        size = padded_size(self.shape)
        self._spacers: list = []  # see _alloc: staggers the exact-length coefficient arrays
        self.D, self.a, self.vmax, self.s = (_alloc(dtype, self.n, self._spacers) for _ in range(4))
        self.p, self.q, self.dx = (_alloc(dtype, size) for _ in range(3))
        self.x64 = _alloc(ti.f64, size)
        self._uold = None  # allocated by the first backward Euler step
        # pools of every level (zero-filled: the padding planes must hold zeros, read by every
        # stencil); the finest level's b and e are CG's residual r and preconditioned residual z
        pools = {k: _alloc(dtype, self.plan.pool_size - STAGGER)
                 for k in ("gz", "gy", "gx", "diag", "inv_diag", "b", "e")}
        self._pools = pools
        self.r, self.z = pools["b"], pools["e"]
        plan = self.plan
        self.levels = [
            _Level(s, plan.offsets[i], plan.factors[i] if i < len(plan.factors) else None, pools)
            for i, s in enumerate(plan.shapes)
        ]
        self._meta = ti.ndarray(ti.i32, shape=plan.levels * META_FIELDS)
        self._meta.from_numpy(np.array(plan.meta(), dtype=np.int32))
        if not self.gpu_layout:
            c = self.levels[-1]
            self._L = ti.ndarray(ti.f64, shape=c.n * (plan.band + 1))
            self._btmp = ti.ndarray(ti.f64, shape=c.n)
        self._part = ti.ndarray(ti.f64, shape=plan.part_size)
        self._scal = ti.ndarray(ti.f64, shape=N_SCAL + HISTORY)  # registers, then the history
        self._scal.fill(0)
        self._last_scalars = np.zeros(N_SCAL + HISTORY)
        # The levels from plan.small down are visited by one launch per cycle, unrolled at
        # compile time: at most MAX_FUSED_LEVELS of them (F: k(k+1)/2 visits of k levels; W:
        # 2^k - 1, so at most 4 levels), the ones above are visited level by level.
        most = MAX_FUSED_LEVELS if cycle != "W" else 4
        self._fused_from = max(plan.small, plan.levels - most)
        self._nonlinear = False
        self._cold = False
        self._active_fingerprint = None  # forces the pocket search on the first solve
        self.pocket_max = int(pocket_max)
        self._n_pockets = 0
        self._pocket_idx = self._pocket_off = None

    def __repr__(self) -> str:
        lv = " -> ".join("x".join(map(str, lev.shape)) for lev in self.levels)
        return f"MultigridSolver({lv}, h={self.voxel_um} um, {self.dtype}, layout={self.plan.layout})"

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

    def sweep(self, level: int = 0) -> None:
        """One red-black Gauss-Seidel sweep (both colours) on ``level`` with the current
        operator and right-hand side: the smoother's unit of work, for benchmarks."""
        gz, gy, gx, inv_diag, b, e = self._pool_args("gz", "gy", "gx", "inv_diag", "b", "e")
        for color in (0, 1):
            mg.smooth(gz, gy, gx, inv_diag, b, e, self._meta, level, color, self.gpu_layout)

    # ---------------------------------------------------------------------------------- helpers

    def _pool_args(self, *names):
        return tuple(self._pools[k] for k in names)

    def _prepare_operator(self) -> None:
        """Conductances of every level from D (once per solve: D may change between solves).

        The active-set fingerprint it leaves in the registers is read with the solve's first
        residual (:meth:`_check_pockets`), not on its own.
        """
        nz, ny, nx = self.shape
        gz, gy, gx = self._pool_args("gz", "gy", "gx")
        T.face_conductances(self.D, gz, gy, gx, self._part, self._scal, nz, ny, nx, 1.0 / self.voxel_um**2,
                            self.gpu_layout)
        for lev in range(len(self.levels) - 1):
            mg.coarsen_conductances(gz, gy, gx, self._meta, lev, self.gpu_layout)

    def _check_pockets(self) -> None:
        """Relabel the sealed pockets when the fingerprint of the last read changed."""
        sc = self._last_scalars
        fingerprint = (float(sc[S_FP]), float(sc[S_FP2]))
        if fingerprint != self._active_fingerprint:
            self._find_pockets()
            self._active_fingerprint = fingerprint

    def _find_pockets(self) -> None:
        """Index the sealed pockets: active components other than the largest, of at most
        ``pocket_max`` voxels, each solved by its own two-level cycle instead of the hierarchy
        (:mod:`kernels.coarse_solve`).

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
        self._pocket_idx = self._i32_array((vox + self._pad).astype(np.int32))
        self._pocket_off = self._i32_array(offsets)
        self._n_pockets = int(offsets.size - 1)
        if self.gpu_layout:
            # the batched (red-black) pocket kernel: pocket of each entry; red voxels, then black
            pid = np.repeat(np.arange(self._n_pockets, dtype=np.int32), np.diff(offsets))
            nz, ny, nx = self.shape
            z, rem = np.divmod(vox, ny * nx)
            y, x = np.divmod(rem, nx)
            red = (z + y + x) % 2 == 0
            self._pocket_pid = self._i32_array(pid)
            self._pocket_col = self._i32_array(np.concatenate([vox[red], vox[~red]]).astype(np.int32) + self._pad)
            self._pocket_nred = int(np.count_nonzero(red))
            self._pocket_corr = ti.ndarray(ti.f64, shape=self._n_pockets)

    @staticmethod
    def _i32_array(values: np.ndarray):
        arr = ti.ndarray(ti.i32, shape=max(int(values.size), 1))
        if values.size:
            arr.from_numpy(np.ascontiguousarray(values, dtype=np.int32))
        return arr

    def _prepare_coarse(self) -> None:
        """Coarse diagonals from the current finest Newton diagonal; refactor the coarsest."""
        gz, gy, gx, diag, inv_diag = self._pool_args("gz", "gy", "gx", "diag", "inv_diag")
        if self._n_pockets:
            cs.mask_pockets(inv_diag, self._pocket_idx, int(self._pocket_idx.shape[0]))
        for lev in range(len(self.levels) - 1):
            mg.coarsen_diag(gz, gy, gx, diag, inv_diag, self._meta, self._scal, lev, -1, self.gpu_layout)
        if not self.gpu_layout:
            cs.band_factor(gz, gy, gx, diag, self._L, self._meta, self._scal, len(self.levels) - 1, -1)

    def _cycle(self, level: int = 0, kind: str = "V", zero_guess: bool = True) -> None:
        """Improve e towards A^{-1} b on ``level`` by one multigrid cycle (e = 0 first if asked).

        Pre-smoothing sweeps (red, black), post-smoothing (black, red): each cycle is its own
        adjoint, so the preconditioner is symmetric as CG needs. ``kind`` "V" visits the
        coarser level once, "W" twice, "F" once as F then once as V. From the first small
        level down, the rest of the cycle is one launch of ``cycle_levels``.
        """
        pools = self._pool_args("gz", "gy", "gx", "diag", "inv_diag", "b", "e")
        last = len(self.levels) - 1
        if level >= self._fused_from:
            if level < last or zero_guess:  # a second visit of the coarsest finds e exact
                L, btmp = (self._part, self._part) if self.gpu_layout else (self._L, self._btmp)
                mg.cycle_levels(*pools, self._meta, L, btmp, self._scal, level, last - level, mg.CYCLE_CODES[kind],
                                bool(zero_guess), self.smoothing_sweeps, self.gpu_layout)
            return
        gz, gy, gx, diag, inv_diag, b, e = pools
        sweeps = self.smoothing_sweeps
        mg.presmooth_restrict(gz, gy, gx, diag, inv_diag, b, e, self._meta, self._scal, level, bool(zero_guess),
                              sweeps, self.gpu_layout)
        if kind == "V":
            self._cycle(level + 1, "V", True)
        elif kind == "W":
            self._cycle(level + 1, "W", True)
            self._cycle(level + 1, "W", False)
        else:
            self._cycle(level + 1, "F", True)
            self._cycle(level + 1, "V", False)
        mg.prolong_postsmooth(gz, gy, gx, inv_diag, b, e, self._meta, self._scal, level, sweeps, self.gpu_layout)

    def _scalars(self) -> np.ndarray:
        return self._scal.to_numpy()

    def _residual(self, km: float, inv_dt: float, zero_order: bool = False, read: bool = True):
        """Residual at the iterate into r (and the Newton diagonal).

        Returns ``(||F||, ||s_eff||, ||F / diag|| / ||x||)`` (the last 0 when x = 0), read
        from the device; nothing (and no read) with ``read=False``.
        """
        gz, gy, gx, diag, inv_diag = self._pool_args("gz", "gy", "gx", "diag", "inv_diag")
        uold = self._uold if inv_dt != 0 else self.s
        T.residual_jacobian(
            self.x64, uold, self.D, self.a, self.vmax, self.s, gz, gy, gx, float(km), float(inv_dt),
            int(zero_order), self.r, diag, inv_diag, self._part, self._scal, *self.shape, -1, self.gpu_layout,
        )
        if not read:
            return None
        sc = self._scalars()
        self._last_scalars = sc
        self._nonlinear = bool(sc[S_VM] > 0)
        self._cold = bool(sc[S_XX] == 0)
        xnorm = math.sqrt(max(sc[S_XX], 0.0))
        scaled = math.sqrt(max(sc[S_JJ], 0.0)) / xnorm if xnorm > 0 else 0.0
        return math.sqrt(max(sc[S_FF], 0.0)), math.sqrt(max(sc[S_SS], 0.0)), scaled

    def _pocket_solve(self) -> None:
        gz, gy, gx, diag = self._pool_args("gz", "gy", "gx", "diag")
        if self.gpu_layout:
            cs.pocket_solve_batched(
                self.r, self.z, diag, gz, gy, gx, self._pocket_idx, self._pocket_off, self._pocket_pid,
                self._pocket_col, self._pocket_corr, self._scal, self._n_pockets, self._pocket_nred,
                cs.POCKET_SWEEPS, *self.shape,
            )
        else:
            cs.pocket_solve(
                self.r, self.z, diag, gz, gy, gx, self._pocket_idx, self._pocket_off, self._scal, self._n_pockets,
                cs.POCKET_SWEEPS, *self.shape,
            )

    def _cg_iteration(self) -> None:
        """One preconditioned CG iteration (a no-op once the device flag says CG is done)."""
        gz, gy, gx, diag = self._pool_args("gz", "gy", "gx", "diag")
        self._cycle(0, self.cycle, True)
        if self._n_pockets:
            self._pocket_solve()
        kr.cg_step(self.r, self.z, self.p, self.q, self.dx, diag, gz, gy, gx, self._part, self._scal, *self.shape,
                   self.gpu_layout)

    def _load(self, u) -> None:
        if tuple(u.shape) != self.shape:
            raise ValueError(f"u has shape {tuple(u.shape)}, expected {self.shape}")
        if isinstance(u, ti.Field):
            kr.load_from_field(u, self.x64, self.D, self.gpu_layout)
        else:
            kr.load_from_array(u, self.x64, self.D, self.gpu_layout)

    def _store(self, u) -> None:
        if isinstance(u, ti.Field):
            kr.store_to_field(self.x64, u, self.gpu_layout)
        else:
            kr.store_to_array(self.x64, u, self.gpu_layout)

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
        rho, scale, scaled = self._residual(km, inv_dt)  # the solve's first read
        self._check_pockets()
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
        if self._first_step(info, km, inv_dt, rho, scale, scaled, tol, max_iterations, max_newton):
            self._newton_rounds(info, km, inv_dt, tol, max_iterations, max_newton)
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

    def _first_step(self, info, km, inv_dt, rho, scale, scaled, tol, max_iterations, max_newton) -> bool:
        """The first Newton decision, on the host; returns False when the solve is over.

        ``kernels.krylov.newton_decide`` takes every later decision on the device, in the same
        float64 operations (results bitwise those of a host loop).
        """
        # ||F|| / ||s|| alone accepts a wrong field when a few rows with huge coefficients
        # (a large vessel exchange E: their source E u_blood) dominate ||s||: the
        # Jacobi-scaled residual ||F / diag|| / ||x|| is blind to row scaling and guards
        # it. Every decision reads the larger of the two (as a residual norm: in well-scaled
        # problems that is rho itself, bit for bit).
        info.relative_residual = rho / scale
        info.scaled_residual = scaled
        rho_eff = scaled * scale if scaled * scale > rho else rho
        rel = rho_eff / scale
        info.residual_history.append(rel)
        if not (math.isfinite(rel) and math.isfinite(scaled)):
            info.message = "residual is not finite"
            return False
        if rel <= tol:
            info.converged = True
            info.message = "converged"
            return False
        if max_newton <= 0:
            info.message = f"Newton step cap ({max_newton}) reached"
            return False
        if max_iterations <= 0:
            info.message = f"iteration cap ({max_iterations}) reached"
            return False
        # inexact Newton: Eisenstat-Walker choice 2 (from the second step on, on the device),
        # never tighter than the goal needs
        need = 0.5 * tol * scale / rho_eff
        eta = max(0.1, need) if self._nonlinear else need
        if self._nonlinear and self._cold:
            # From u = 0 the Michaelis-Menten tangent (slope vmax/km) permits only a tiny
            # step; linearising it as saturated instead lands near the solution wherever
            # u >> km (negative values, where u < km, are clamped and Newton takes over).
            self._residual(km, inv_dt, zero_order=True, read=False)
            eta = 0.1
        self._prepare_coarse()
        kr.cg_begin(self.dx, self._scal, float(eta * rho), float(max_iterations))
        self._ensure_history(max_newton)
        kr.newton_begin(self._scal, float(rel), float(rho_eff), float(eta), int(self._nonlinear))
        return True

    def _ensure_history(self, max_newton: int) -> None:
        """Grow the register array when a solve may take more Newton steps than its history holds."""
        if self._scal.shape[0] < N_SCAL + max_newton + 2:
            grown = ti.ndarray(ti.f64, shape=N_SCAL + max_newton + 2)
            values = np.zeros(grown.shape[0])
            values[: self._scal.shape[0]] = self._scal.to_numpy()
            grown.from_numpy(values)
            self._scal = grown

    def _newton_rounds(self, info, km, inv_dt, tol, max_iterations, max_newton) -> None:
        """Newton steps 2, 3, ... with every decision on the device (``kernels.krylov``).

        A round launches ``check_every`` CG iterations, then the end of the Newton step
        (update, residual, decision), the coarse rebuild and the next CG start, each a no-op
        unless its gate in the registers is open; the host reads the registers once per
        round. Idle launches: at most ``check_every - 1`` CG iterations per Newton step, and
        the gated kernels of rounds in which a CG solve continues.
        """
        gz, gy, gx, diag, inv_diag = self._pool_args("gz", "gy", "gx", "diag", "inv_diag")
        uold = self._uold if inv_dt != 0 else self.s
        last = len(self.levels) - 1
        rounds = 0
        cap = max_iterations + max_newton + 2  # every round ends a CG iteration or a Newton step
        while True:
            for _ in range(self.check_every):
                self._cg_iteration()
            kr.newton_finish(self.x64, self.dx, self.D, self._scal, self.n, self._pad)
            T.residual_jacobian(
                self.x64, uold, self.D, self.a, self.vmax, self.s, gz, gy, gx, float(km), float(inv_dt), 0,
                self.r, diag, inv_diag, self._part, self._scal, *self.shape, G_UPDATE, self.gpu_layout,
            )
            kr.newton_decide(self._scal, float(tol), float(max_newton), float(max_iterations))
            if self._n_pockets:  # the residual rewrote inv_diag: take the pockets out again
                cs.mask_pockets(inv_diag, self._pocket_idx, int(self._pocket_idx.shape[0]))
            for lev in range(last):
                mg.coarsen_diag(gz, gy, gx, diag, inv_diag, self._meta, self._scal, lev, G_COARSE, self.gpu_layout)
            if not self.gpu_layout:
                cs.band_factor(gz, gy, gx, diag, self._L, self._meta, self._scal, last, G_COARSE)
            kr.cg_resume(self.dx, self._scal)
            sc = self._scalars()
            rounds += 1
            if sc[N_PHASE] == PHASE_DONE:
                break
            if rounds > cap:  # pragma: no cover - the device caps make this unreachable
                raise RuntimeError("transport solver: the device-side Newton control did not stop")
        steps = int(sc[N_NEWTON])
        info.newton_iterations = steps
        info.iterations = int(sc[N_ITERS])
        info.relative_residual = float(sc[N_REL])
        info.scaled_residual = float(sc[N_SCALED])
        info.residual_history += [float(v) for v in sc[N_SCAL + 1 : N_SCAL + steps + 1]]
        code = int(sc[N_MSG])
        info.converged = code == MSG_CONVERGED
        info.message = {
            MSG_CONVERGED: "converged",
            MSG_NOT_FINITE: "residual is not finite",
            MSG_NEWTON_CAP: f"Newton step cap ({max_newton}) reached",
            MSG_ITERATION_CAP: f"iteration cap ({max_iterations}) reached",
            MSG_STAGNATED: "residual stagnated (floating-point floor or inconsistent problem)",
        }[code]
