"""Layout of the cell lattice's state and bookkeeping, and its readout reduction.

Defines what :class:`~marrow3d.kernels.cells.CellLattice` stores besides the cell codes (flag
bits, cumulative event counters, drug-exposure accumulators), the neighbour directions and
random-stream purposes shared by the cell modules, and :func:`collect_metrics`, one
pass over the grid that turns the state into the flat dict of readouts written every step
(model brief section 6). Every total is an integer (exposure in fixed point), so readouts are
bit-identical for any thread count.
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations as live objects.

from .codes import (
    BLAST,
    CELL_NAMES,
    EMPTY,
    HSC,
    LSC,
    MARROW,
    N_CELL_TYPES,
    NICHE_ENDOSTEAL,
    NICHE_NAMES,
    NICHE_PERIVASCULAR,
    PROGENITOR,
)
from .ti_compat import ti

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
    "collect_metrics",
]

# Cell flags (``/state/flags``, uint8 bits).
LODGED = 1  #: holds the niche slot it sits on: slower cycling, drug protection
MOBILIZED = 2  #: released from a niche; may not lodge until it re-adheres

#: Face-neighbour offsets; direction d and d ^ 1 are opposite.
DIRECTIONS = ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))

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
_NICHE_STATS = ("slots", "functional", "hsc", "lsc", "empty", "free_cell")
_N_NICHE_STATS = len(_NICHE_STATS)

#: Layout of ``CellLattice.readout_buffer``: the quantities counted by one grid pass.
BUFFER_NAMES = (
    tuple(f"count_{CELL_NAMES[t]}" for t in range(N_CELL_TYPES))
    + tuple(f"lodged_{CELL_NAMES[t]}" for t in range(N_CELL_TYPES))
    + tuple(f"mobilized_{CELL_NAMES[t]}" for t in range(N_CELL_TYPES))
    + tuple(f"niche_{NICHE_NAMES[k]}_{s}" for k in _NICHE_KINDS for s in _NICHE_STATS)
)
_B_COUNT = 0
_B_LODGED = N_CELL_TYPES
_B_MOBILIZED = 2 * N_CELL_TYPES
_B_NICHE = 3 * N_CELL_TYPES


@ti.kernel
def _count(lat: ti.template(), tissue: ti.template(), niche: ti.template()):
    # Static buffer indices let Taichi reduce per thread (or block) before one atomic add.
    for I in ti.grouped(lat.cells):
        c = ti.cast(lat.cells[I], ti.i32)
        if tissue[I] != MARROW:
            c = -1  # not a cell site: counted nowhere
        fl = ti.cast(lat.flags[I], ti.i32)
        kind = ti.cast(niche[I], ti.i32)
        for t in ti.static(range(N_CELL_TYPES)):
            if c == t:
                lat.readout_buffer[_B_COUNT + t] += ti.i64(1)
                if (fl & LODGED) != 0:
                    lat.readout_buffer[_B_LODGED + t] += ti.i64(1)
                if (fl & MOBILIZED) != 0:
                    lat.readout_buffer[_B_MOBILIZED + t] += ti.i64(1)
        for ki in ti.static(range(len(_NICHE_KINDS))):
            if kind == _NICHE_KINDS[ki] and c >= 0:
                base = ti.static(_B_NICHE + ki * _N_NICHE_STATS)
                lat.readout_buffer[base + 0] += ti.i64(1)
                if lat.niche_ok[I] != 0:
                    lat.readout_buffer[base + 1] += ti.i64(1)
                if (fl & LODGED) != 0 and c == HSC:
                    lat.readout_buffer[base + 2] += ti.i64(1)
                elif (fl & LODGED) != 0 and c == LSC:
                    lat.readout_buffer[base + 3] += ti.i64(1)
                elif c == EMPTY:
                    lat.readout_buffer[base + 4] += ti.i64(1)
                else:
                    lat.readout_buffer[base + 5] += ti.i64(1)


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
          ``empty``, ``free_cell`` (occupied by an unlodged stem cell);
        * cumulative events ``<counter>_<type>`` (:data:`COUNTER_NAMES`; ``exited_blast`` are
          the blasts egressed to blood, ``killed_drug_lodged_lsc`` lodged LSCs killed by drug);
        * cumulative exposure ``cell_hours_<category>``, ``cytarabine_uM_h_<category>``,
          ``daunorubicin_uM_h_<category>`` over :data:`AUC_CATEGORIES` (sums over cells of
          C dt; divide by ``cell_hours`` for the mean exposure of a cell);
        * ``step_index``.
    """
    lat.readout_buffer.fill(0)
    _count(lat, tissue, niche)
    out: dict[str, float] = {}
    for name, v in zip(BUFFER_NAMES, lat.readout_buffer.to_numpy()):
        # lodged/mobilized apply to stem cells only
        if not name.startswith(("lodged_", "mobilized_")) or name.endswith(("_hsc", "_lsc")):
            out[name] = int(v)
    counters = lat.counters.to_numpy()
    for row, cname in enumerate(COUNTER_NAMES):
        for t in _COUNTER_TYPES[cname]:
            out[f"{cname}_{CELL_NAMES[t]}"] = int(counters[row, t])
    auc = lat.auc.to_numpy()
    for row, rname in enumerate(AUC_ROWS):
        for col, cat in enumerate(AUC_CATEGORIES):
            if col != EMPTY:
                out[f"{rname}_{cat}"] = float(auc[row, col]) / AUC_SCALE
    out["step_index"] = lat.step_index
    return out
