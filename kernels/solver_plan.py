"""Memory plan of the transport solver: layouts, grid hierarchy, array sizes, slots (no Taichi).

Pure Python on purpose: :mod:`marrow3d.resources` sizes a run from this plan before the kernel
compiler is imported, and :class:`marrow3d.transport_solver.MultigridSolver` allocates from the
same plan, so the estimate and the allocations cannot drift apart (``tests/test_memory.py``
checks them against each other).

Padded layout: every level of shape ``(nz, ny, nx)`` holds one zero plane before and after the
grid (:func:`padded_size`); voxel ``(z, y, x)`` sits at ``off + nx*ny + (z*ny + y)*nx + x``,
``off`` being the level's offset in the *pools*: one array per kind (conductances ``gz, gy,
gx``, ``diag``, ``inv_diag``, right-hand side ``b``, correction ``e``) holding every level,
the finest at offset 0. Pools let a single kernel visit several levels (the small ones, see
:data:`SMALL_LEVEL_CELLS`) with a handful of arguments. Conductances are 0 on the last plane,
row and column, so with the padding every 7-point stencil read is in bounds and boundary
faces contribute exactly 0.

Kernel layouts (a compile-time choice, the ``gpu`` template argument of every stencil,
transfer, coarsening and reduction kernel):

``rows`` (CPUs)
    one thread per (z, y) row with a serial x loop: LLVM strength-reduces the indexing and the
    boundary tests (about 2.5x faster than a flat loop on a CPU); reductions keep one float64
    partial per row, summed serially in row order. The coarsest level (<= :data:`COARSE_MAX`
    cells) is solved by a banded Cholesky factorisation.
``voxels`` (GPUs)
    one thread per voxel (per voxel of the colour for the red-black smoother, per coarse cell
    for transfers and coarsening), x fastest, so a warp reads consecutive addresses; the
    arithmetic of every voxel is the same as in ``rows``, so smoothing, transfers and
    coarsening give identical bits. Reductions run over :data:`LANES` lanes (lane t takes
    voxels t, t + LANES, ...; consecutive lanes read consecutive voxels) whose float64
    partials a fixed tree sums (:mod:`kernels.reductions`): the shape depends on the grid
    only, so two runs give identical bits, but the order differs from ``rows``. The
    hierarchy coarsens down to one cell, solved exactly (``e = b / diag``): a serial band
    solve would run on one GPU thread.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "STAGGER",
    "LAYOUTS",
    "LANES",
    "TREE",
    "SMALL_LEVEL_CELLS",
    "COARSE_MAX",
    "PART_COLUMNS",
    "META_FIELDS",
    "hierarchy_shapes",
    "padded_size",
    "band_ordering",
    "SolverPlan",
    "make_plan",
    "solver_arrays",
    "solver_workspace_bytes",
    "S_FF",
    "S_SS",
    "S_VM",
    "S_XX",
    "S_JJ",
    "S_RZ",
    "S_RZ_OLD",
    "S_PQ",
    "S_RR",
    "S_FP",
    "S_FP2",
    "C_LIVE",
    "C_IT",
    "C_TARGET",
    "C_MAXIT",
    "N_SCAL",
    "HISTORY",
]

#: Extra elements at the end of every solver array. Arrays whose byte size is a multiple of
#: 4 KiB (64^3 grids: (64+2)*64*64*4 bytes) all start at the same offset modulo 4 KiB, so a
#: kernel that stores to one and loads from another at the same index suffers 4K aliasing
#: and cache-set conflicts: the CG update loop ran 2.6x slower per voxel at 64^3 than at
#: 96^3 (benchmarks/suite.py, 1 thread). 32 unused elements shift each following allocation
#: by 128-256 bytes. Kernels never read them.
STAGGER = 32

#: Kernel layouts: ``rows`` for CPUs, ``voxels`` for GPUs (see the module docstring).
LAYOUTS = ("rows", "voxels")

#: Reduction lanes of the ``voxels`` layout (enough threads to keep a large GPU's memory
#: system busy: an H200 holds 132 x 2048 resident threads).
LANES = 2**18
#: Second level of the ``voxels`` reduction tree: TREE threads sum the lane partials
#: (strided), then one thread sums their TREE results in order.
TREE = 256

#: Levels of at most this many cells are visited by one kernel launch per cycle
#: (:func:`kernels.multigrid.cycle_levels`): below 32^3 a level's work is smaller than the
#: cost of launching its two kernels.
SMALL_LEVEL_CELLS = 32**3

#: Coarsening stops at this many cells in the ``rows`` layout (banded Cholesky below).
COARSE_MAX = 512

#: Columns of reduction partials the solver kernels need at most (the residual kernel's 5).
PART_COLUMNS = 5

#: int32 fields per level in the solver's level table (``meta``), see :class:`SolverPlan`.
META_FIELDS = 16
M_NZ, M_NY, M_NX, M_OFF = 0, 1, 2, 3  # level shape, offset in the pools
M_FZ, M_FY, M_FX = 4, 5, 6  # coarsening factor to the next level (1 or 2 each)
M_KZ, M_KY, M_KX, M_BAND = 7, 8, 9, 10  # band ordering (coarsest level, rows layout)

# Slots of the float64 register array shared by the solver kernels.
S_FF = 0  #: ||F||^2 of the residual kernel
S_SS = 1  #: ||s_eff||^2 (scale of the relative residual)
S_VM = 2  #: sum of vmax (> 0: the problem is nonlinear)
S_XX = 3  #: ||x||^2 of the iterate (0: a cold start)
S_JJ = 4  #: ||F / diag||^2, the Jacobi-scaled residual (field units squared)
S_RZ = 5  #: r . z of the current CG iteration
S_RZ_OLD = 6  #: r . z of the previous CG iteration
S_PQ = 7  #: p . J p
S_RR = 8  #: ||r||^2 after the CG update
S_FP = 9  #: fingerprint of the active set, first hash (exact integer)
S_FP2 = 10  #: fingerprint of the active set, second hash (exact integer)
C_LIVE = 11  #: 1 while the current CG solve runs; 0 turns later launched iterations into no-ops
C_IT = 12  #: CG iterations done in the current CG solve
C_TARGET = 13  #: ||r|| at which the current CG solve stops
C_MAXIT = 14  #: iteration cap of the current CG solve
# Newton control on the device (kernels.krylov.newton_decide and friends)
N_PHASE = 15  #: PHASE_CG while a Newton step's CG runs, PHASE_UPDATE after, PHASE_DONE at the end
N_MSG = 16  #: why the solve stopped (MSG_* code), 0 while it runs
N_NEWTON = 17  #: Newton steps taken
N_ITERS = 18  #: CG iterations summed over Newton steps
N_RHO_PREV = 19  #: effective residual norm that started the previous Newton step
N_ETA_PREV = 20  #: forcing term of the previous Newton step
N_STALLED = 21  #: consecutive steps with less than 5% residual reduction
N_NONLINEAR = 22  #: 1 when some vmax > 0
N_COARSE_READY = 23  #: coarse levels built from the current Newton diagonal (linear problems)
G_COARSE = 24  #: gate: rebuild the coarse levels before the next CG solve
G_FRESH = 25  #: gate: start the next CG solve
G_UPDATE = 26  #: gate: the Newton update and the residual after it are due
N_ETA = 27  #: forcing term of the current Newton step
N_RHO_EFF = 28  #: effective residual norm that started the current Newton step
N_TARGET = 29  #: CG target of the next CG solve
N_MAXIT = 30  #: CG iteration cap of the next CG solve
N_REL = 31  #: ||F|| / ||s_eff|| at the last residual evaluation
N_SCALED = 32  #: ||F / diag|| / ||x|| at the last residual evaluation
N_SCAL = 40

PHASE_CG, PHASE_DONE = 1, 2
MSG_CONVERGED, MSG_NOT_FINITE, MSG_NEWTON_CAP, MSG_ITERATION_CAP, MSG_STAGNATED = 1, 2, 3, 4, 5

#: The register array holds, after the N_SCAL registers, the residual history of the solve
#: (Newton steps + 1 entries), so one read returns both; room for this many entries (the
#: array grows when a solve allows more Newton steps).
HISTORY = 64


def hierarchy_shapes(shape, coarse_max: int = COARSE_MAX):
    """Grid shapes of the multigrid levels, finest first, and the coarsening factors.

    A dimension of size n becomes ceil(n/2); dimensions of size 1 stay (thin domains
    semi-coarsen). Coarsening stops at <= ``coarse_max`` cells.

    Returns
    -------
    shapes : list of tuple
    factors : list of tuple
        ``factors[l]`` (1 or 2 per dimension) maps level l to l + 1.
    """
    shapes = [tuple(int(n) for n in shape)]
    factors = []
    while shapes[-1][0] * shapes[-1][1] * shapes[-1][2] > coarse_max and max(shapes[-1]) > 1:
        f = tuple(2 if n > 1 else 1 for n in shapes[-1])
        factors.append(f)
        shapes.append(tuple((n + k - 1) // k for n, k in zip(shapes[-1], f)))
    return shapes, factors


def padded_size(shape) -> int:
    """Length of a padded solver array for grid ``shape``: one zero plane before and after."""
    nz, ny, nx = shape
    return (nz + 2) * ny * nx


def band_ordering(shape) -> tuple[tuple[int, int, int], int]:
    """Band ordering of the coarsest level: strides (z, y, x) and the half bandwidth.

    The largest dimension runs slowest, so the band is the product of the two smallest.
    """
    order = sorted(range(3), key=lambda d: shape[d])  # smallest first
    strides = [0, 0, 0]
    strides[order[0]] = 1
    strides[order[1]] = shape[order[0]]
    strides[order[2]] = shape[order[0]] * shape[order[1]]
    band = max(1, max(strides[d] for d in range(3) if shape[d] > 1) if max(shape) > 1 else 1)
    return (strides[0], strides[1], strides[2]), band


@dataclass(frozen=True)
class SolverPlan:
    """Levels, pool offsets and array sizes of a solver for one grid and layout.

    Attributes
    ----------
    shape : tuple
        Finest grid (nz, ny, nx).
    layout : str
        ``rows`` or ``voxels``.
    shapes, factors : list
        :func:`hierarchy_shapes` of the grid (down to ``coarse_max`` cells, 1 for ``voxels``).
    offsets : list of int
        Offset of each level in the pools (0 for the finest).
    pool_size : int
        Elements of each pool array (levels + :data:`STAGGER`).
    small : int
        First level visited by the fused small-level kernel (levels ``small..`` have at
        most :data:`SMALL_LEVEL_CELLS` cells; ``len(shapes) - 1`` when only the coarsest
        does).
    band_strides, band : tuple, int
        Band ordering of the coarsest level (``rows`` layout; unused by ``voxels``).
    part_size : int
        float64 reduction partials: 5 per (z, y) row (``rows``) or per lane plus the tree.
    """

    shape: tuple
    layout: str
    coarse_max: int
    shapes: list
    factors: list
    offsets: list
    pool_size: int
    small: int
    band_strides: tuple
    band: int
    part_size: int

    @property
    def n(self) -> int:
        return self.shape[0] * self.shape[1] * self.shape[2]

    @property
    def levels(self) -> int:
        return len(self.shapes)

    def meta(self) -> list[int]:
        """The int32 level table the kernels read (:data:`META_FIELDS` per level)."""
        out = []
        for lev, s in enumerate(self.shapes):
            row = [0] * META_FIELDS
            row[M_NZ], row[M_NY], row[M_NX] = s
            row[M_OFF] = self.offsets[lev]
            f = self.factors[lev] if lev < len(self.factors) else (1, 1, 1)
            row[M_FZ], row[M_FY], row[M_FX] = f
            if lev == len(self.shapes) - 1:
                (row[M_KZ], row[M_KY], row[M_KX]), row[M_BAND] = self.band_strides, self.band
            out += row
        return out

    def arrays(self, itemsize: int = 4) -> list[tuple[str, int, int]]:
        """Every array the solver allocates: ``(name, elements, bytes per element)``.

        Sealed-pocket index arrays (sized by the pockets found) and the backward-Euler
        ``u_old`` (allocated by the first implicit step) are not included.
        """
        n = self.n
        fine = padded_size(self.shape) + STAGGER
        out: list[tuple[str, int, int]] = []
        for name in ("D", "a", "vmax", "s"):  # exact length (API) plus a spacer allocation each
            out += [(name, n, itemsize), (f"{name}_spacer", STAGGER, itemsize)]
        out += [(name, fine, itemsize) for name in ("p", "q", "dx")]
        out.append(("x64", fine, 8))
        # pools: b is the CG residual r and e the preconditioned residual z on the finest level
        out += [(f"pool_{k}", self.pool_size, itemsize) for k in ("gz", "gy", "gx", "diag", "inv_diag", "b", "e")]
        if self.layout == "rows":
            c = self.shapes[-1]
            nc = c[0] * c[1] * c[2]
            out += [("band_factor", nc * (self.band + 1), 8), ("band_work", nc, 8)]
        out += [("partials", self.part_size, 8), ("registers", N_SCAL + HISTORY, 8)]
        out.append(("level_table", self.levels * META_FIELDS, 4))
        return out

    def workspace_bytes(self, itemsize: int = 4) -> int:
        return sum(count * size for _, count, size in self.arrays(itemsize))


def make_plan(shape, layout: str = "rows", coarse_max: int | None = None) -> SolverPlan:
    """The :class:`SolverPlan` of grid ``shape`` in ``layout``.

    ``coarse_max`` (``rows`` only; default :data:`COARSE_MAX`) sets where coarsening stops;
    the ``voxels`` layout always coarsens to one cell.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    shape = tuple(int(v) for v in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be 3 positive sizes, got {shape}")
    if layout == "voxels":
        coarse_max = 1
    elif coarse_max is None:
        coarse_max = COARSE_MAX
    shapes, factors = hierarchy_shapes(shape, coarse_max)
    offsets, total = [], 0
    for s in shapes:
        offsets.append(total)
        total += padded_size(s)
    small = len(shapes) - 1
    while small > 0 and shapes[small - 1][0] * shapes[small - 1][1] * shapes[small - 1][2] <= SMALL_LEVEL_CELLS:
        small -= 1
    band_strides, band = band_ordering(shapes[-1])
    nz, ny, nx = shape
    if layout == "rows":
        part = max(PART_COLUMNS * nz * ny, PART_COLUMNS)
    else:
        part = PART_COLUMNS * (min(nz * ny * nx, LANES) + TREE)
    return SolverPlan(shape, layout, coarse_max, shapes, factors, offsets, total + STAGGER, small, band_strides,
                      band, part)


def solver_arrays(shape, itemsize: int = 4, coarse_max: int | None = None,
                  layout: str = "rows") -> list[tuple[str, int, int]]:
    """Every array a solver of grid ``shape`` allocates (see :meth:`SolverPlan.arrays`)."""
    return make_plan(shape, layout, coarse_max).arrays(itemsize)


def solver_workspace_bytes(shape, precision: str = "float32", layout: str = "rows") -> int:
    """Bytes of every array a solver of grid ``shape`` allocates (no sealed pockets)."""
    if precision not in ("float32", "float64"):
        raise ValueError(f"precision must be float32 or float64, got {precision!r}")
    return make_plan(shape, layout).workspace_bytes(8 if precision == "float64" else 4)
