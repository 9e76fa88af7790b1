"""Memory plan of the transport solver: grid hierarchy, array sizes, scalar slots (no Taichi).

Pure Python on purpose: :mod:`marrow3d.resources` sizes a run from this plan before the kernel
compiler is imported, and :class:`marrow3d.transport_solver.MultigridSolver` allocates from the
same plan, so the estimate and the allocations cannot drift apart (``tests/test_memory.py``
checks them against each other).

Padded layout: every solver array of a level of shape ``(nz, ny, nx)`` holds one zero plane
before and after the grid (:func:`padded_size`); voxel ``(z, y, x)`` sits at
``nx*ny + (z*ny + y)*nx + x``. Conductances are 0 on the last plane, row and column, so with
the padding every 7-point stencil read is in bounds and boundary faces contribute exactly 0.
"""

from __future__ import annotations

__all__ = [
    "STAGGER",
    "hierarchy_shapes",
    "padded_size",
    "band_ordering",
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
    "N_SCAL",
    "COARSE_MAX",
    "PART_COLUMNS",
]

#: Extra elements at the end of every padded solver array. Arrays whose byte size is a
#: multiple of 4 KiB (64^3 grids: (64+2)*64*64*4 bytes) all start at the same offset modulo
#: 4 KiB, so a kernel that stores to one and loads from another at the same index suffers
#: 4K aliasing and cache-set conflicts: the CG update loop ran 2.6x slower per voxel at 64^3
#: than at 96^3 (benchmarks/suite.py, 1 thread). 32 unused elements shift each following
#: allocation by 128-256 bytes. Kernels never read them.
STAGGER = 32

#: Coarsening stops at this many cells by default; the coarsest level is solved directly.
COARSE_MAX = 512

# Slots of the float64 scalar register array shared by the solver kernels.
S_FF = 0  #: ||F||^2 of the residual kernel
S_SS = 1  #: ||s_eff||^2 (scale of the relative residual)
S_VM = 2  #: sum of vmax (> 0: the problem is nonlinear)
S_XX = 3  #: ||x||^2 of the iterate (0: a cold start)
S_JJ = 4  #: ||F / diag||^2, the Jacobi-scaled residual (field units squared)
S_RZ = 5  #: r . z of the current CG iteration
S_RZ_OLD = 6  #: r . z of the previous CG iteration
S_PQ = 7  #: p . J p
S_RR = 8  #: ||r||^2 after the CG update
S_FP = 9  #: fingerprint of the active set (see ``kernels.transport.face_conductances``)
N_SCAL = 10

#: Row partials per (z, y) row of the finest grid (the residual kernel reduces 5 columns).
PART_COLUMNS = 5


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


def solver_arrays(shape, itemsize: int = 4, coarse_max: int = COARSE_MAX) -> list[tuple[str, int, int]]:
    """Every array a solver of grid ``shape`` allocates: ``(name, elements, bytes per element)``.

    Sealed-pocket index arrays (sized by the pockets found) and the backward-Euler ``u_old``
    (allocated by the first implicit step) are not included.
    """
    nz, ny, nx = (int(v) for v in shape)
    n = nz * ny * nx
    shapes, _ = hierarchy_shapes(shape, coarse_max)
    out: list[tuple[str, int, int]] = []
    for name in ("D", "a", "vmax", "s"):  # exact length (API) plus a spacer allocation each
        out += [(name, n, itemsize), (f"{name}_spacer", STAGGER, itemsize)]
    fine = padded_size(shapes[0]) + STAGGER
    out += [(name, fine, itemsize) for name in ("r", "z", "p", "q", "dx")]
    out.append(("x64", fine, 8))
    for lev, s in enumerate(shapes):
        size = padded_size(s) + STAGGER
        kinds = ("gz", "gy", "gx", "diag", "inv_diag") if lev == 0 else ("gz", "gy", "gx", "diag", "inv_diag", "b", "e")
        out += [(f"level{lev}.{k}", size, itemsize) for k in kinds]
    c = shapes[-1]
    nc = c[0] * c[1] * c[2]
    _, band = band_ordering(c)
    out += [("band_factor", nc * (band + 1), 8), ("band_work", nc, 8)]
    out += [("row_partials", max(PART_COLUMNS * nz * ny, PART_COLUMNS), 8), ("scalars", N_SCAL, 8)]
    return out


def solver_workspace_bytes(shape, precision: str = "float32", coarse_max: int = COARSE_MAX) -> int:
    """Bytes of every array a solver of grid ``shape`` allocates (no sealed pockets)."""
    if precision not in ("float32", "float64"):
        raise ValueError(f"precision must be float32 or float64, got {precision!r}")
    itemsize = 8 if precision == "float64" else 4
    return sum(count * size for _, count, size in solver_arrays(shape, itemsize, coarse_max))
