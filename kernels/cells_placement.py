"""Placing cells on a :class:`~marrow3d.kernels.cells.CellLattice`: initial populations, homing.

Every choice is a Philox draw keyed by the run seed, so placement is reproducible and does not
depend on threads. Choosing exactly N voxels among candidates ranks them by a 31-bit Philox key
(ties broken by voxel index) on the host: rare events (start, a transplant day), so one copy of
a u32 field to the host is cheaper than a device-side selection.
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations as live objects.

import numpy as np

from .cells_metrics import COUNTER_ROW, LODGED, PURPOSES
from .cells_params import SP
from .codes import EMPTY, HSC, LSC, MARROW, NICHE_NONE, PROGENITOR
from .niche_conditioning import OK_HSC
from .philox import philox_counter, uniform4
from .ti_compat import ti

__all__ = ["seed_initial", "home_hsc"]

_NOT_CANDIDATE = 0xFFFFFFFF
_MODE_HOMING = 0  # free working niche slot
_MODE_SEED_LSC = 1  # non-niche marrow voxel, empty or holding a progenitor


@ti.kernel
def _seed(
    lat: ti.template(),
    tissue: ti.template(),
    niche: ti.template(),
    hsc_fraction: ti.f32,
    progenitor_density: ti.f32,
    k0: ti.u32,
    k1: ti.u32,
):
    max_gen = lat.sparams[ti.static(SP["progenitor_max_generation"])]
    for I in ti.grouped(lat.cells):
        if tissue[I] == MARROW:
            u = uniform4(k0, k1, lat.linear_index(I), 0, ti.static(PURPOSES["init"]), 0)
            if niche[I] != NICHE_NONE:
                if (ti.cast(lat.niche_ok[I], ti.i32) & OK_HSC) != 0 and u[0] < hsc_fraction:
                    lat.cells[I] = ti.u8(HSC)
                    lat.flags[I] = ti.u8(LODGED)
            elif u[1] < progenitor_density:
                lat.cells[I] = ti.u8(PROGENITOR)
                lat.generation[I] = ti.cast(ti.min(u[2] * (max_gen + 1.0), max_gen), ti.u8)


@ti.kernel
def _candidate_keys(
    lat: ti.template(),
    tissue: ti.template(),
    niche: ti.template(),
    mode: ti.i32,
    k0: ti.u32,
    k1: ti.u32,
    step_no: ti.u32,
    purpose: ti.u32,
):
    # Candidates get a 31-bit key, others 0xFFFFFFFF: the two never collide. The lattice's
    # claim workspace holds the keys (it is free between steps).
    for I in ti.grouped(lat.cells):
        key = ti.u32(_NOT_CANDIDATE)
        if tissue[I] == MARROW:
            c = ti.cast(lat.cells[I], ti.i32)
            cand = False
            if mode == _MODE_HOMING:
                # a conditioned slot takes no HSC (niche_conditioning)
                cand = c == EMPTY and niche[I] != NICHE_NONE and (ti.cast(lat.niche_ok[I], ti.i32) & OK_HSC) != 0
            else:
                cand = niche[I] == NICHE_NONE and (c == EMPTY or c == PROGENITOR)
            if cand:
                w = philox_counter(k0, k1, lat.linear_index(I), step_no, purpose, 0)
                key = w[0] >> ti.u32(1)
        lat.claim[I] = key


@ti.kernel
def _place(
    lat: ti.template(),
    indices: ti.types.ndarray(dtype=ti.i64, ndim=1),
    cell_type: ti.i32,
    flags: ti.i32,
):
    for q in range(indices.shape[0]):
        lin = indices[q]
        n1, n2 = ti.static(lat.shape[1], lat.shape[2])
        I = ti.Vector([lin // (n1 * n2), (lin // n2) % n1, lin % n2], dt=ti.i32)
        lat.cells[I] = ti.cast(cell_type, ti.u8)
        lat.flags[I] = ti.cast(flags, ti.u8)
        lat.generation[I] = ti.u8(0)


def _place_by_key(lat, tissue, niche, cell_type: int, count: int, mode: int, purpose: str) -> int:
    """Place ``count`` cells on the candidates with the smallest keys; return how many."""
    if count <= 0:
        return 0
    k0, k1 = lat.key
    _candidate_keys(lat, tissue, niche, mode, k0, k1, lat.step_index & 0xFFFFFFFF, PURPOSES[purpose])
    keys = lat.claim.to_numpy().ravel()
    lat.claim.fill(0)
    cand = np.flatnonzero(keys != np.uint32(_NOT_CANDIDATE))
    chosen = cand[np.lexsort((cand, keys[cand]))[:count]].astype(np.int64)
    if chosen.size:
        _place(lat, chosen, cell_type, LODGED if mode == _MODE_HOMING else 0)
    return int(chosen.size)


def seed_initial(
    lat,
    tissue,
    niche,
    integrity,
    *,
    integrity_floor: float,
    hsc_niche_fraction: float,
    progenitor_density: float,
    lsc_count: int,
) -> None:
    """Clear the lattice and place the initial populations.

    Parameters
    ----------
    lat : CellLattice
    tissue, niche, integrity : ti.field
        Tissue codes, niche kinds, vessel integrity (see ``CellLattice``).
    integrity_floor : float
        Vessel integrity under which a niche slot does not work.
    hsc_niche_fraction : float
        Probability that a working niche slot holds a lodged HSC.
    progenitor_density : float
        Probability that a non-niche marrow voxel holds a progenitor (generation uniform in
        0..max generation, so mature cells are present from the start).
    lsc_count : int
        Free LSCs placed on non-niche marrow voxels (empty or replacing a progenitor).
    """
    if not (0.0 <= hsc_niche_fraction <= 1.0 and 0.0 <= progenitor_density <= 1.0):
        raise ValueError("hsc_niche_fraction and progenitor_density must be in [0, 1]")
    lat.clear()
    lat.update_niches(tissue, niche, integrity, integrity_floor)
    k0, k1 = lat.key
    _seed(lat, tissue, niche, hsc_niche_fraction, progenitor_density, k0, k1)
    _place_by_key(lat, tissue, niche, LSC, int(lsc_count), _MODE_SEED_LSC, "seed_lsc")


def home_hsc(lat, count: int, tissue, niche, integrity, *, integrity_floor: float) -> int:
    """Place up to ``count`` transplanted HSCs, lodged, on free niche slots working for HSCs
    (never on a leukemia-conditioned slot).

    The slots are drawn uniformly (Philox key of voxel, current step, purpose ``homing``);
    cells that find no free slot do not engraft.

    Returns
    -------
    int
        Number of HSCs placed (also added to the ``homed`` counter).
    """
    lat.update_niches(tissue, niche, integrity, integrity_floor)
    placed = _place_by_key(lat, tissue, niche, HSC, int(count), _MODE_HOMING, "homing")
    if placed:
        lat.counters[COUNTER_ROW["homed"], HSC] += placed
    return placed
