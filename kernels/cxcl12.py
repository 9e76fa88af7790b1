"""CXCL12 field coefficients and CXCR4 chemotaxis (Taichi kernels and functions).

The CXCL12 field (nM) obeys the same discrete steady operator as every transport field
(:mod:`kernels.transport`) with no Michaelis-Menten term::

    sum_q g_pq (c_q - c_p) - k c_p + s_p = 0        (active voxels, D_p > 0)

with first-order decay ``k`` [1/min] in every active voxel and a perivascular source in marrow
voxels only::

    s_p = max over face neighbours J of p that are vessels with I_J >= floor of
          k * level[class(J)] * I_J                                            [nM/min]

Stromal CXCL12-abundant reticular (CAR) cells sit on the abluminal side of sinusoids
(Sugiyama 2006) and perivascular stromal cells around arterioles also express Cxcl12
(Ding & Morrison 2013); the marrow voxel next to a vessel stands for them. Their output is
scaled by the integrity of the vessel they sit on (a lost vessel takes its stroma with it).
The source is written as ``k * level`` so that ``level`` [nM] is the concentration a region
made only of such voxels would reach (a normalised secretion a test can check exactly).

The functions :func:`receptor_occupancy` and :func:`pick_weighted` are the chemotaxis rule of
:meth:`kernels.cells.CellLattice._walk_claim` (docs/model.md 2.10).

Layouts: as in :mod:`kernels.transport`, the assembly runs one thread per ``(z, y)`` row with a
serial ``x`` loop on a CPU and one thread per voxel (x fastest) on a GPU, chosen at compile
time by the ``gpu`` template argument; every voxel's arithmetic is the same in both, so the
arrays written are bitwise identical.
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations as objects.

from dataclasses import dataclass

import numpy as np

from .codes import MARROW, N_TISSUE, VESSEL_CLASS_OF_TISSUE
from .ti_compat import is_gpu_arch, ti

__all__ = [
    "Cxcl12Tables",
    "TABLE_SIZE",
    "pack_tables",
    "upload_tables",
    "assemble_cxcl12",
    "receptor_occupancy",
    "chemotaxis_weight",
    "pick_weighted",
]

N_CLASSES = 3  # CLASS_NONE, CLASS_ARTERIOLE, CLASS_SINUSOID
T_D = 0
T_DECAY = T_D + N_TISSUE
T_LEVEL = T_DECAY + N_TISSUE
T_FLOOR = T_LEVEL + N_CLASSES
TABLE_SIZE = T_FLOOR + 1

ND1 = ti.types.ndarray(ndim=1)
ND1_F64 = ti.types.ndarray(dtype=ti.f64, ndim=1)
ND3 = ti.types.ndarray(ndim=3)


@dataclass
class Cxcl12Tables:
    """Per-tissue and per-vessel-class tables of the CXCL12 field.

    Attributes
    ----------
    diffusivity_by_tissue : ndarray (N_TISSUE,)
        D [um^2/min]; 0 marks a no-flux voxel (bone, outside).
    decay_by_tissue : ndarray (N_TISSUE,)
        First-order decay k [1/min].
    level_by_class : ndarray (3,)
        Source level [nM] of stroma on an intact vessel of each class (index 0, no vessel, is 0).
    integrity_floor : float
        Vessels below this integrity support no stroma.
    """

    diffusivity_by_tissue: np.ndarray
    decay_by_tissue: np.ndarray
    level_by_class: np.ndarray
    integrity_floor: float = 0.0

    def __post_init__(self) -> None:
        self.diffusivity_by_tissue = np.asarray(self.diffusivity_by_tissue, dtype=np.float64).reshape(N_TISSUE)
        self.decay_by_tissue = np.asarray(self.decay_by_tissue, dtype=np.float64).reshape(N_TISSUE)
        lev = np.asarray(self.level_by_class, dtype=np.float64).reshape(N_CLASSES).copy()
        lev[0] = 0.0  # a non-vessel supports no stroma, whatever the caller put there
        self.level_by_class = lev
        for name in ("diffusivity_by_tissue", "decay_by_tissue", "level_by_class"):
            arr = getattr(self, name)
            if not np.all(np.isfinite(arr)) or np.any(arr < 0):
                raise ValueError(f"{name} must be finite and >= 0, got {arr}")


def pack_tables(tables: Cxcl12Tables) -> np.ndarray:
    """The float64 array the kernel reads: D, decay, level, floor."""
    return np.concatenate([tables.diffusivity_by_tissue, tables.decay_by_tissue, tables.level_by_class,
                           [tables.integrity_floor]]).astype(np.float64)


def upload_tables(tables: Cxcl12Tables, out=None):
    """Copy the packed tables to a Taichi float64 ndarray (allocated if ``out`` is None)."""
    if out is None:
        out = ti.ndarray(ti.f64, shape=TABLE_SIZE)
    out.from_numpy(pack_tables(tables))
    return out


@ti.func
def _class_of(t):
    c = 0
    for k in ti.static(range(N_TISSUE)):
        c = ti.select(t == k, VESSEL_CLASS_OF_TISSUE[k], c)
    return c


@ti.func
def _stroma(tissue: ti.template(), integrity: ti.template(), tab: ti.template(), z, y, x, nz, ny, nx):
    """Largest ``level[class] * I`` over the vessel face neighbours with I >= floor (0 if none)."""
    best = ti.cast(0.0, ti.f64)
    for o in ti.static(((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))):
        zz = z + o[0]
        yy = y + o[1]
        xx = x + o[2]
        if 0 <= zz < nz and 0 <= yy < ny and 0 <= xx < nx:
            t = ti.min(ti.cast(tissue[zz, yy, xx], ti.i32), N_TISSUE - 1)
            cls = _class_of(t)
            if cls != 0:
                integ = ti.cast(integrity[zz, yy, xx], ti.f64)
                if integ >= tab[T_FLOOR]:
                    best = ti.max(best, tab[T_LEVEL + cls] * integ)
    return best


@ti.func
def _voxel(tissue: ti.template(), integrity: ti.template(), tab: ti.template(), D: ti.template(),
           a: ti.template(), vmax: ti.template(), s: ti.template(), z, y, x, nz, ny, nx):
    dt = D.get_type().element_type
    p = (z * ny + y) * nx + x
    t = ti.min(ti.cast(tissue[z, y, x], ti.i32), N_TISSUE - 1)
    k = tab[T_DECAY + t]
    src = ti.cast(0.0, ti.f64)
    if t == MARROW:
        src = k * _stroma(tissue, integrity, tab, z, y, x, nz, ny, nx)
    D[p] = ti.cast(tab[T_D + t], dt)
    a[p] = ti.cast(k, dt)
    vmax[p] = ti.cast(0.0, dt)
    s[p] = ti.cast(src, dt)


@ti.func
def _loop(tissue: ti.template(), integrity: ti.template(), tab: ti.template(), D: ti.template(), a: ti.template(),
          vmax: ti.template(), s: ti.template(), nz, ny, nx, gpu: ti.template()):
    if ti.static(gpu):  # one thread per voxel, x fastest
        for z, y, x in ti.ndrange(nz, ny, nx):
            _voxel(tissue, integrity, tab, D, a, vmax, s, z, y, x, nz, ny, nx)
    else:  # one thread per (z, y) row
        for z, y in ti.ndrange(nz, ny):
            for x in range(nx):
                _voxel(tissue, integrity, tab, D, a, vmax, s, z, y, x, nz, ny, nx)


@ti.kernel
def _assemble_fields(tissue: ti.template(), integrity: ti.template(), tab: ND1_F64, D: ND1, a: ND1, vmax: ND1,
                     s: ND1, gpu: ti.template()):
    nz, ny, nx = tissue.shape
    _loop(tissue, integrity, tab, D, a, vmax, s, nz, ny, nx, gpu)


@ti.kernel(fastcache=True)
def _assemble_arrays(tissue: ND3, integrity: ND3, tab: ND1_F64, D: ND1, a: ND1, vmax: ND1, s: ND1,
                     gpu: ti.template()):
    nz, ny, nx = tissue.shape[0], tissue.shape[1], tissue.shape[2]
    _loop(tissue, integrity, tab, D, a, vmax, s, nz, ny, nx, gpu)


def assemble_cxcl12(tissue, integrity, tables, D, a, vmax, s, *, gpu: bool | None = None) -> None:
    """Write the CXCL12 coefficients (D, a = k, vmax = 0, s) from tissue and vessel integrity.

    Parameters
    ----------
    tissue : 3-D Taichi field, or 3-D numpy array / Taichi ndarray, of uint8
        Tissue codes (:mod:`kernels.codes`), shape (nz, ny, nx).
    integrity : same kind, float
        Vessel integrity in [0, 1].
    tables : Cxcl12Tables or a Taichi float64 ndarray from :func:`upload_tables`
    D, a, vmax, s : 1-D Taichi ndarrays of length nz*ny*nx (C order), e.g. a solver's.
        Outputs: D [um^2/min], a [1/min], vmax [nM/min] (0), s [nM/min].
    gpu : bool, optional
        Kernel layout (the result is the same); default: that of the initialised backend.
    """
    shape = tuple(tissue.shape)
    if tuple(integrity.shape) != shape:
        raise ValueError(f"integrity has shape {tuple(integrity.shape)}, expected {shape}")
    n = int(np.prod(shape))
    for name, arr in (("D", D), ("a", a), ("vmax", vmax), ("s", s)):
        if tuple(arr.shape) != (n,):
            raise ValueError(f"{name} must be a 1-D ndarray of length {n}, got shape {tuple(arr.shape)}")
    tab = upload_tables(tables) if isinstance(tables, Cxcl12Tables) else tables
    gpu = is_gpu_arch() if gpu is None else bool(gpu)
    if isinstance(tissue, ti.Field):
        if not isinstance(integrity, ti.Field):
            raise TypeError("tissue and integrity must both be fields or both arrays")
        _assemble_fields(tissue, integrity, tab, D, a, vmax, s, gpu)
    else:
        arrs = [np.ascontiguousarray(v) if isinstance(v, np.ndarray) else v for v in (tissue, integrity)]
        _assemble_arrays(*arrs, tab, D, a, vmax, s, gpu)


# ---------------------------------------------------------------------------------------------
# Chemotaxis (used by kernels.cells)
# ---------------------------------------------------------------------------------------------


@ti.func
def receptor_occupancy(c, kd):
    """CXCR4 occupancy by CXCL12, ``c / (c + Kd)`` in [0, 1) (c clamped at 0), float32."""
    cc = ti.max(ti.cast(c, ti.f32), 0.0)
    return cc / (cc + kd)


@ti.func
def chemotaxis_weight(chi, c_here, c_there, kd):
    """Direction weight ``exp(chi (rho(c_there) - rho(c_here)))``, rho the receptor occupancy.

    ``chi`` already carries the antagonist factor (1 - f). The exponent is within [-chi, chi].
    """
    return ti.exp(chi * (receptor_occupancy(c_there, kd) - receptor_occupancy(c_here, kd)))


@ti.func
def pick_weighted(mask, w, u):
    """A direction among the set bits of ``mask`` with probability ``w[d] / sum w``.

    ``w`` is a 6-vector of positive float32 weights, ``u`` a uniform in [0, 1). Deterministic:
    the cumulative sum runs over d = 0..5 in order; rounding at the top falls to the last set
    bit, so a set bit is always returned (-1 only for an empty mask).
    """
    total = ti.cast(0.0, ti.f32)
    for d in ti.static(range(6)):
        if (mask >> d) & 1:
            total += w[d]
    target = u * total
    cum = ti.cast(0.0, ti.f32)
    chosen = -1
    last = -1
    for d in ti.static(range(6)):
        if (mask >> d) & 1:
            cum += w[d]
            last = d
            if chosen < 0 and target < cum:
                chosen = d
    if chosen < 0:
        chosen = last
    return chosen
