"""Layout of the cell lattice's state and bookkeeping, and its readout reduction.

Defines what :class:`~marrow3d.kernels.cells.CellLattice` stores besides the cell codes (flag
bits, cumulative event counters, drug-exposure accumulators), the neighbour directions and
random-stream purposes shared by the cell modules, and the readout kernel: one pass over the
grid that counts cells and niche slots, then writes every readout (:data:`READOUT_NAMES`:
counts, cumulative events, exposures) as float64 into a result field, so the whole set
reaches the host in one transfer with the other readouts (``marrow3d.metrics``). Every total
is an integer (exposure in fixed point) and converts exactly, so readouts are bit-identical
for any thread count.

Adding a cell readout: count it in ``_count_voxel`` into a new ``BUFFER_NAMES`` entry (or a new
counter row); :data:`READOUT_LAYOUT` picks it up and the time series gets the column.
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations as live objects.

from .codes import (
    BLAST,
    CELL_NAMES,
    EMPTY,
    FACE_DIRECTIONS,
    HSC,
    LSC,
    MARROW,
    N_CELL_TYPES,
    NICHE_ENDOSTEAL,
    NICHE_NAMES,
    NICHE_PERIVASCULAR,
    PROGENITOR,
)
from .ti_compat import is_gpu_arch, ti

__all__ = [
    "LODGED",
    "MOBILIZED",
    "DIRECTIONS",
    "PURPOSES",
    "COUNTER_NAMES",
    "COUNTER_ROW",
    "AUC_CATEGORIES",
    "AUC_ROWS",
    "AUC_SCALE",
    "CAT_HSC_LODGED",
    "CAT_LSC_LODGED",
    "BUFFER_NAMES",
    "READOUT_LAYOUT",
    "READOUT_NAMES",
    "write_readouts",
    "collect_metrics",
]

# Cell flags (``/state/flags``, uint8 bits).
LODGED = 1  #: holds the niche slot it sits on: slower cycling, drug protection
MOBILIZED = 2  #: released from a niche; may not lodge until it re-adheres

#: Face-neighbour offsets; direction d and d ^ 1 are opposite (``codes.FACE_DIRECTIONS``).
DIRECTIONS = FACE_DIRECTIONS

#: Philox ``purpose`` counter word of each rule: rules never share a random stream.
PURPOSES = {"events": 1, "division": 2, "walk": 3, "init": 4, "seed_lsc": 5, "homing": 6}

#: Cumulative event counters (rows of ``CellLattice.counters``, columns = cell type).
COUNTER_NAMES = (
    "died",  # all causes
    "killed_drug",
    "killed_drug_lodged",
    "killed_hypoxia",
    "exited",  # mature progenitors leaving via sinusoids; blasts egressing to blood
    "released",  # lodged stem cells released from their niche
    "displaced",  # cells removed by a dividing competitor (HSC by LSC, progenitor by leukemic)
    "divisions",  # by the mother's type
    "homed",  # transplanted cells placed on niche slots
)
COUNTER_ROW = {name: i for i, name in enumerate(COUNTER_NAMES)}

#: Cell types each counter is reported for (the other combinations cannot happen).
_COUNTER_TYPES = {
    "died": (HSC, PROGENITOR, LSC, BLAST),
    "killed_drug": (HSC, PROGENITOR, LSC, BLAST),
    "killed_drug_lodged": (HSC, LSC),
    "killed_hypoxia": (HSC, PROGENITOR, LSC, BLAST),
    "exited": (PROGENITOR, BLAST),
    "released": (HSC, LSC),
    "displaced": (HSC, PROGENITOR),
    "divisions": (HSC, PROGENITOR, LSC, BLAST),
    "homed": (HSC,),
}

#: Drug-exposure categories (columns of ``CellLattice.auc``): the cell types, then lodged
#: HSCs and lodged LSCs (subsets of their type).
AUC_CATEGORIES = tuple(CELL_NAMES[c] for c in range(N_CELL_TYPES)) + ("hsc_lodged", "lsc_lodged")
CAT_HSC_LODGED = N_CELL_TYPES
CAT_LSC_LODGED = N_CELL_TYPES + 1
#: Rows of ``CellLattice.auc``: sums over cells and steps of dt, C_ara dt, C_dnr dt.
AUC_ROWS = ("cell_hours", "cytarabine_uM_h", "daunorubicin_uM_h")
#: Fixed-point scale of the exposure sums (units of 2**-20 h or uM h). Integer atomics are
#: order-independent; the largest total before int64 overflow is 8.8e12 uM h x cells.
AUC_SCALE = 2**20

_NICHE_KINDS = (NICHE_ENDOSTEAL, NICHE_PERIVASCULAR)
_NICHE_STATS = ("slots", "functional", "hsc", "lsc", "empty", "free_cell", "conditioned", "conditioned_lsc")
_N_NICHE_STATS = len(_NICHE_STATS)

#: Layout of ``CellLattice.readout_buffer``: the quantities counted by one grid pass.
BUFFER_NAMES = (
    tuple(f"count_{CELL_NAMES[t]}" for t in range(N_CELL_TYPES))
    + tuple(f"lodged_{CELL_NAMES[t]}" for t in range(N_CELL_TYPES))
    + tuple(f"mobilized_{CELL_NAMES[t]}" for t in range(N_CELL_TYPES))
    + tuple(f"niche_{NICHE_NAMES[k]}_{s}" for k in _NICHE_KINDS for s in _NICHE_STATS)
)
def _readout_layout() -> tuple[tuple[str, int, int, int], ...]:
    """(name, source, i, j) of every lattice readout; source 0: ``readout_buffer[i]``,
    1: ``counters[i, j]``, 2: ``auc[i, j] / AUC_SCALE``."""
    rows = []
    for i, name in enumerate(BUFFER_NAMES):
        # lodged/mobilized apply to stem cells only
        if not name.startswith(("lodged_", "mobilized_")) or name.endswith(("_hsc", "_lsc")):
            rows.append((name, 0, i, 0))
    for row, cname in enumerate(COUNTER_NAMES):
        for t in _COUNTER_TYPES[cname]:
            rows.append((f"{cname}_{CELL_NAMES[t]}", 1, row, t))
    for row, rname in enumerate(AUC_ROWS):
        for col, cat in enumerate(AUC_CATEGORIES):
            if col != EMPTY:
                rows.append((f"{rname}_{cat}", 2, row, col))
    return tuple(rows)


#: Every readout of the lattice in slot order: (name, source, i, j) (see ``_readout_layout``).
READOUT_LAYOUT = _readout_layout()
#: The readout names in slot order (the keys of :func:`collect_metrics` but ``step_index``).
READOUT_NAMES = tuple(r[0] for r in READOUT_LAYOUT)
_LAYOUT_CODES = tuple(r[1:] for r in READOUT_LAYOUT)

_B_COUNT = 0
_B_LODGED = N_CELL_TYPES
_B_MOBILIZED = 2 * N_CELL_TYPES
_B_NICHE = 3 * N_CELL_TYPES


@ti.func
def _count_voxel(lat: ti.template(), tissue: ti.template(), niche: ti.template(), I, acc):
    """Add voxel ``I`` to the local tally ``acc`` (one entry per ``BUFFER_NAMES``)."""
    c = ti.cast(lat.cells[I], ti.i32)
    if tissue[I] != MARROW:
        c = -1  # not a cell site: counted nowhere
    fl = ti.cast(lat.flags[I], ti.i32)
    kind = ti.cast(niche[I], ti.i32)
    for t in ti.static(range(N_CELL_TYPES)):
        if c == t:
            acc[_B_COUNT + t] += 1
            if (fl & LODGED) != 0:
                acc[_B_LODGED + t] += 1
            if (fl & MOBILIZED) != 0:
                acc[_B_MOBILIZED + t] += 1
    for ki in ti.static(range(len(_NICHE_KINDS))):
        if kind == _NICHE_KINDS[ki] and c >= 0:
            base = ti.static(_B_NICHE + ki * _N_NICHE_STATS)
            acc[base + 0] += 1
            if lat.niche_ok[I] != 0:
                acc[base + 1] += 1
            if (fl & LODGED) != 0 and c == HSC:
                acc[base + 2] += 1
            elif (fl & LODGED) != 0 and c == LSC:
                acc[base + 3] += 1
            elif c == EMPTY:
                acc[base + 4] += 1
            else:
                acc[base + 5] += 1
            if lat.niche_cond[I] != 0:  # leukemia-conditioned (kernels.niche_conditioning)
                acc[base + 6] += 1
                if (fl & LODGED) != 0 and c == LSC:
                    acc[base + 7] += 1
    return acc


@ti.func
def _count_pass(lat: ti.template(), tissue: ti.template(), niche: ti.template(), gpu: ti.template()):
    """Count into ``lat.readout_buffer`` (zeroed). The tallies are kept in registers (static
    indices) and added with integer atomics once per row (CPU layout: one thread per row of
    x; an atomic per voxel inside a branch is not reduced by the compiler) or once per voxel
    (GPU layout: one thread per voxel, x fastest)."""
    nz, ny, nx = ti.static(lat.shape)
    nrow = ti.static(ny * nx if gpu else ny)
    for zr in range(nz * nrow):
        acc = ti.Vector([0] * ti.static(len(BUFFER_NAMES)), dt=ti.i64)
        z = zr // nrow
        if ti.static(gpu):
            y = (zr % nrow) // nx
            acc = _count_voxel(lat, tissue, niche, ti.Vector([z, y, zr % nx]), acc)
        else:
            y = zr % nrow
            for x in range(nx):
                acc = _count_voxel(lat, tissue, niche, ti.Vector([z, y, x]), acc)
        for i in ti.static(range(len(BUFFER_NAMES))):
            if acc[i] != 0:
                ti.atomic_add(lat.readout_buffer[i], acc[i])


@ti.kernel
def _readout(lat: ti.template(), tissue: ti.template(), niche: ti.template(),
             out: ti.types.ndarray(dtype=ti.f64, ndim=1), offset: ti.i32, gpu: ti.template()):
    for _ in range(1):
        for i in range(ti.static(len(BUFFER_NAMES))):
            lat.readout_buffer[i] = 0
    _count_pass(lat, tissue, niche, gpu)
    for _ in range(1):
        src = ti.Vector([c[0] for c in _LAYOUT_CODES], dt=ti.i32)
        ii = ti.Vector([c[1] for c in _LAYOUT_CODES], dt=ti.i32)
        jj = ti.Vector([c[2] for c in _LAYOUT_CODES], dt=ti.i32)
        for k in range(ti.static(len(_LAYOUT_CODES))):
            if src[k] == 0:
                out[offset + k] = ti.cast(lat.readout_buffer[ii[k]], ti.f64)
            elif src[k] == 1:
                out[offset + k] = ti.cast(lat.counters[ii[k], jj[k]], ti.f64)
            else:
                # float(auc) / AUC_SCALE on the host: the same rounding, an exact division
                out[offset + k] = ti.cast(lat.auc[ii[k], jj[k]], ti.f64) / ti.static(float(AUC_SCALE))


def write_readouts(lat, tissue, niche, out, offset: int, gpu: bool | None = None) -> None:
    """Count and write every lattice readout into ``out[offset : offset + len(READOUT_NAMES)]``
    (a float64 ti.ndarray; one launch, nothing read back). ``gpu``: the GPU layout (default:
    when the backend is a GPU)."""
    _readout(lat, tissue, niche, out, int(offset), int(is_gpu_arch() if gpu is None else gpu))


def collect_metrics(lat, tissue, niche) -> dict[str, float]:
    """Readouts of a :class:`~marrow3d.kernels.cells.CellLattice`, as a flat dict.

    Parameters
    ----------
    lat : CellLattice
    tissue, niche : ti.field of uint8
        Tissue codes and niche kinds (the lattice's shape).

    Returns
    -------
    dict
        * ``count_<type>``: cells by type (``count_empty``: empty marrow voxels);
        * ``lodged_hsc``, ``lodged_lsc``, ``mobilized_hsc``, ``mobilized_lsc``;
        * ``niche_<kind>_<stat>`` for kinds ``endosteal``/``perivascular`` and stats
          ``slots``, ``functional`` (working now), ``hsc``/``lsc`` (held by a lodged cell),
          ``empty``, ``free_cell`` (occupied by an unlodged stem cell), ``conditioned``
          (leukemia-conditioned slots), ``conditioned_lsc`` (those held by a lodged LSC);
        * cumulative events ``<counter>_<type>`` (:data:`COUNTER_NAMES`; ``exited_blast`` are
          the blasts egressed to blood, ``killed_drug_lodged_lsc`` lodged LSCs killed by drug);
        * cumulative exposure ``cell_hours_<category>``, ``cytarabine_uM_h_<category>``,
          ``daunorubicin_uM_h_<category>`` over :data:`AUC_CATEGORIES` (sums over cells of
          C dt; divide by ``cell_hours`` for the mean exposure of a cell);
        * ``step_index``.

        Counts and events are ints, exposures floats.
    """
    write_readouts(lat, tissue, niche, lat.readout_values, 0)
    values = lat.readout_values.to_numpy()
    out: dict[str, float] = {}
    for (name, src, _, _), v in zip(READOUT_LAYOUT, values):
        out[name] = float(v) if src == 2 else int(v)
    out["step_index"] = lat.step_index
    return out
