"""Lattice cell dynamics: one cell (or none) per marrow voxel, updated in parallel, race-free.

Per voxel the lattice stores the cell type (``codes.EMPTY/HSC/PROGENITOR/LSC/BLAST``), flags
(``LODGED``: holds the niche slot it sits on; ``MOBILIZED``: released from a niche and not yet
able to lodge again) and a generation counter (progenitors; blasts too with blast maturation
on). One :meth:`CellLattice.step` of dt hours runs four phases, each a pass over the grid:

1. **niches** - each niche slot's quality is the largest integrity of a supporting vessel among
   its face neighbours (arterioles for endosteal slots, sinusoid-class vessels for perivascular
   ones, the same rule ``marrow3d.anatomy.niches`` places slots by; any vessel class if none of
   the supporting class is there); it works while quality >= the integrity floor.
   Stem cells on a working slot lodge (unless mobilized); lodged cells on a failed slot unlodge.
   With leukemia-conditioned niches on (:mod:`.niche_conditioning`), the slot's conditioning
   clock advances first, and a conditioned slot works for LSCs only, down to a lower floor.
2. **events** (pointwise) - death (base + severe hypoxia for normal cells + drug kill of cycling
   cells, reduced when lodged), exit of mature progenitors and egress of blasts to the blood next
   to sinusoids, niche release of lodged stem cells (rate x CXCR4-antagonist multiplier),
   re-adhesion of released cells; drug exposure (AUC) is accumulated here.
3. **division** into an empty face neighbour (or, for competitors, onto a displaced cell) -
   claim, then apply (see below).
4. **random walk** of free stem cells and blasts into an empty neighbour or swapping places with
   a progenitor - claim, then apply. With a CXCL12 field, free non-mobilized stem cells pick
   their direction with weights ``exp(chi (rho_J - rho_I))`` of the CXCR4 occupancy
   ``rho = c / (c + Kd)`` (:mod:`.cxcl12`); with ``chi = 0`` the pick is the uniform one.

Moves and divisions write a neighbour voxel, so two cells could target one voxel. They are
settled by a deterministic priority: each source writes ``atomic_max(claim[target], key)``
where ``key`` = random high bits (Philox) | the source's direction code (low 3 bits), then a
second kernel lets only the source whose code is in ``claim[target]`` act. Atomic max is
order-independent, so the winner, and the whole state, is the same for every thread count
(across backends the integer logic is the same, but a rate computed with a last-bit different
``exp`` could flip a draw); no cell is lost or duplicated. A mother whose own voxel is claimed (it is being
displaced) cancels its division, so no voxel is ever written by two threads.

Invariants: cells live only in ``MARROW`` voxels; only stem cells (HSC, LSC) occupy niche
voxels; a lodged cell sits on a working niche slot. A displaced cell is removed (an HSC pushed
off its slot by an LSC daughter is counted as displaced, standing for its forced egress or
differentiation: pushing it into a third voxel would need a second claim round).

Initial populations and homing are in :mod:`.cells_placement`, the readouts in
:mod:`.cells_metrics`. All randomness is Philox-4x32-10 keyed by the run seed with counter (voxel, step, purpose, sub);
:meth:`CellLattice.get_state` / :meth:`set_state` therefore checkpoint everything needed for a
bit-for-bit resume. Units: hours, mmHg, uM.
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations as live objects.

from collections.abc import Mapping

import numpy as np

from .cells_metrics import (
    AUC_CATEGORIES,
    AUC_ROWS,
    AUC_SCALE,
    BUFFER_NAMES,
    CAT_HSC_LODGED,
    CAT_LSC_LODGED,
    COUNTER_NAMES,
    COUNTER_ROW,
    DIRECTIONS,
    LODGED,
    MOBILIZED,
    PURPOSES,
    READOUT_NAMES,
    collect_metrics,
)
from .cells_params import SP, TP, pack_params
from .cells_placement import home_hsc, seed_initial
from .cxcl12 import chemotaxis_weight, pick_weighted
from .cells_rules import division_rate, drug_kill_rate, emax, event_probability, hif_response
from .niche_conditioning import OK_HSC, OK_LSC, TIMER_MAX, advance, slot_bits
from .codes import (
    ARTERIOLE,
    BLAST,
    CENTRAL_SINUS,
    EMPTY,
    HSC,
    LSC,
    MARROW,
    N_CELL_TYPES,
    NICHE_ENDOSTEAL,
    NICHE_NONE,
    PROGENITOR,
    SINUSOID,
)
from .philox import philox_counter, split_seed, uniform4, uniform_from_u32
from .ti_compat import ti

__all__ = ["CellLattice", "LODGED", "MOBILIZED", "PURPOSES", "DIRECTIONS"]

_P_EVENTS = PURPOSES["events"]
_P_DIVISION = PURPOSES["division"]
_P_WALK = PURPOSES["walk"]


@ti.func
def _is_vessel(label):
    return label == ARTERIOLE or label == SINUSOID or label == CENTRAL_SINUS


@ti.func
def _supports(kind, label):
    """Whether a vessel of tissue ``label`` is the supporting class of a niche of ``kind``."""
    ok = False
    if kind == NICHE_ENDOSTEAL:
        ok = label == ARTERIOLE
    else:
        ok = label == SINUSOID or label == CENTRAL_SINUS
    return ok


@ti.func
def _offset(d):
    o = ti.Vector([0, 0, 0])
    for q in ti.static(range(6)):
        if d == q:
            o = ti.Vector(DIRECTIONS[q])
    return o


@ti.func
def _pick_direction(mask, u):
    """The k-th set bit of a 6-bit direction mask, k = floor(u * popcount): a uniform pick."""
    n = 0
    for d in ti.static(range(6)):
        n += (mask >> d) & 1
    k = ti.min(ti.cast(u * ti.cast(n, ti.f32), ti.i32), n - 1)
    chosen = -1
    for d in ti.static(range(6)):
        if (mask >> d) & 1:
            if k == 0 and chosen < 0:
                chosen = d
            k -= 1
    return chosen


@ti.data_oriented
class CellLattice:
    """Per-voxel cell state and the kernels of one cell step.

    Parameters
    ----------
    shape : tuple of 3 int
        Grid shape; the same as every input field passed to the methods. Voxel linear index
        (Philox counter word 0) is the C-order index in this shape.
    params : mapping
        Kernel-unit parameters, see :func:`marrow3d.kernels.cells_params.pack_params`
        (``marrow3d.config.cells.CellsConfig.kernel_params()`` produces it).
    seed : int
        Run seed (``0 <= seed < 2**64``): the Philox key.

    Attributes
    ----------
    cells, flags, generation : ti.field of uint8, shape ``shape``
        Cell type code, flag bits (:data:`LODGED`, :data:`MOBILIZED`), progenitor generation.
    niche_ok : ti.field of uint8
        Where a niche slot currently works, for whom: bits ``OK_HSC`` (1) and ``OK_LSC`` (2) of
        :mod:`.niche_conditioning` (both on a working normal slot; set by :meth:`update_niches`).
    niche_cond : ti.field of uint8
        1 on a leukemia-conditioned slot (state; always 0 with the mechanism off).
    niche_timer : ti.field of uint16
        The slot's conditioning clock in cell steps (state, see :mod:`.niche_conditioning`).
    step_index : int
        Number of steps taken (Philox counter word 1); part of the checkpoint.
    key : (int, int)
        Philox key words (the seed split by :func:`~.philox.split_seed`).

    Notes
    -----
    Input fields, all of ``shape`` and passed as ``ti.template()``: ``tissue`` (uint8 tissue
    codes), ``niche`` (uint8 niche kinds), ``integrity`` (float, vessel integrity in [0, 1]),
    ``oxygen`` (float, pO2 in mmHg), ``cytarabine`` and ``daunorubicin`` (float, uM; ``None``
    when the drug is absent).
    """

    def __init__(self, shape, params: Mapping[str, object], seed: int):
        self.shape = tuple(int(n) for n in shape)
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise ValueError(f"shape must be 3 positive ints, got {shape!r}")
        if int(np.prod(self.shape, dtype=np.int64)) >= 2**31:
            raise ValueError("grids of 2**31 voxels or more must be split (int32 indexing)")
        self.set_seed(seed)
        self.step_index = 0
        fb = ti.FieldsBuilder()
        self.cells = ti.field(ti.u8)
        self.flags = ti.field(ti.u8)
        self.generation = ti.field(ti.u8)
        self.niche_ok = ti.field(ti.u8)
        self.intent = ti.field(ti.u8)  # workspace: direction + 1 | daughter << 3 | mother -> blast << 6
        self.claim = ti.field(ti.u32)  # workspace: priority | claimant direction code
        self.niche_cond = ti.field(ti.u8)
        self.niche_timer = ti.field(ti.u16)
        for f in (self.cells, self.flags, self.generation, self.niche_ok, self.intent, self.claim,
                  self.niche_cond, self.niche_timer):
            fb.dense(ti.ijk, self.shape).place(f)
        self.tparams = ti.field(ti.f32)
        fb.dense(ti.ij, (len(TP), N_CELL_TYPES)).place(self.tparams)
        self.sparams = ti.field(ti.f32)
        fb.dense(ti.i, len(SP)).place(self.sparams)
        # Upper bounds of the per-step event probabilities (see _event_bounds): rows division
        # (free, lodged), death (no drug, drug present); columns cell types.
        self.pbound = ti.field(ti.f32)
        fb.dense(ti.ij, (4, N_CELL_TYPES)).place(self.pbound)
        self.counters = ti.field(ti.i64)
        fb.dense(ti.ij, (len(COUNTER_NAMES), N_CELL_TYPES)).place(self.counters)
        self.auc = ti.field(ti.i64)
        fb.dense(ti.ij, (len(AUC_ROWS), len(AUC_CATEGORIES))).place(self.auc)
        self.readout_buffer = ti.field(ti.i64)  # workspace of the readout kernel
        fb.dense(ti.i, len(BUFFER_NAMES)).place(self.readout_buffer)
        self._tree = fb.finalize()
        self.readout_values = ti.ndarray(ti.f64, shape=len(READOUT_NAMES))  # the readouts, for collect_metrics
        self.set_params(params)

    # ----------------------------------------------------------------------------------------
    # host-side API
    # ----------------------------------------------------------------------------------------

    def set_seed(self, seed: int) -> None:
        """Change the run seed (Philox key); the compiled kernels are reused."""
        self.key = split_seed(seed)
        self.seed = int(seed)

    def set_params(self, params: Mapping[str, object]) -> None:
        """Validate and upload kernel-unit parameters (no recompilation)."""
        tarr, sarr = pack_params(params)
        self.tparams.from_numpy(tarr)
        self.sparams.from_numpy(sarr)
        self._params_np = (tarr, sarr)
        self._bounds_dt = None  # recomputed by the next step
        self.conditioning = bool(sarr[SP["niche_conditioning_enabled"]])

    def clear(self) -> None:
        """Empty the lattice and zero counters, exposure totals and the step index."""
        for f in (self.cells, self.flags, self.generation, self.niche_ok, self.intent, self.claim,
                  self.niche_cond, self.niche_timer):
            f.fill(0)
        self.counters.fill(0)
        self.auc.fill(0)
        self.step_index = 0

    def set_cells(self, cells, flags=None, generation=None) -> None:
        """Overwrite the cell state from numpy arrays of ``shape`` (uint8).

        Flags and generation default to 0. The caller keeps the invariants (cells only in
        marrow, only stem cells on niche voxels); :meth:`update_niches` fixes lodging.
        """
        self.cells.from_numpy(np.ascontiguousarray(cells, dtype=np.uint8))
        zeros = np.zeros(self.shape, dtype=np.uint8)
        self.flags.from_numpy(zeros if flags is None else np.ascontiguousarray(flags, np.uint8))
        gen = zeros if generation is None else np.ascontiguousarray(generation, np.uint8)
        self.generation.from_numpy(gen)

    def get_state(self) -> dict[str, np.ndarray]:
        """Everything a bit-for-bit resume needs, as numpy arrays."""
        return {
            "cells": self.cells.to_numpy(),
            "flags": self.flags.to_numpy(),
            "generation": self.generation.to_numpy(),
            "niche_conditioned": self.niche_cond.to_numpy(),
            "niche_timer": self.niche_timer.to_numpy(),
            "counters": self.counters.to_numpy(),
            "auc": self.auc.to_numpy(),
            "step_index": np.array(self.step_index, dtype=np.int64),
            "seed": np.array(self.seed, dtype=np.uint64),
        }

    def set_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore :meth:`get_state` output (the seed must match this lattice's).

        A state without the conditioning arrays (written before they existed, or by a run
        with the mechanism off) restores them as zero: no slot conditioned.
        """
        if int(state["seed"]) != self.seed:
            raise ValueError(f"checkpoint seed {int(state['seed'])} != lattice seed {self.seed}")
        self.set_cells(state["cells"], state["flags"], state["generation"])
        zeros = np.zeros(self.shape, dtype=np.uint8)
        cond = np.asarray(state.get("niche_conditioned", zeros))
        timer = np.asarray(state.get("niche_timer", zeros))
        if cond.shape != self.shape or timer.shape != self.shape:
            raise ValueError(f"niche_conditioned/niche_timer must have shape {self.shape}")
        self.niche_cond.from_numpy(np.ascontiguousarray(cond, dtype=np.uint8))
        self.niche_timer.from_numpy(np.ascontiguousarray(timer, dtype=np.uint16))
        self.counters.from_numpy(np.asarray(state["counters"], dtype=np.int64))
        self.auc.from_numpy(np.asarray(state["auc"], dtype=np.int64))
        self.step_index = int(state["step_index"])

    def step(
        self,
        tissue,
        niche,
        integrity,
        oxygen,
        cytarabine=None,
        daunorubicin=None,
        *,
        dt_hours: float = 1.0,
        integrity_floor: float = 0.2,
        release_multiplier: float = 1.0,
        cxcl12=None,
        chemotactic_sensitivity: float = 0.0,
        cxcr4_kd_nM: float = 1.0,
    ) -> None:
        """Advance the cells by one step of ``dt_hours``.

        Parameters
        ----------
        tissue, niche, integrity, oxygen, cytarabine, daunorubicin : ti.field
            Inputs (see the class notes); drugs may be ``None`` (absent).
        dt_hours : float
            Step length (h). Rates become probabilities 1 - exp(-rate dt).
        integrity_floor : float
            Vessel integrity below which a niche slot stops working
            (``VesselsConfig.integrity_floor``).
        release_multiplier : float
            Multiplier of the niche release rate and of blast egress to blood (CXCR4
            antagonist, e.g. plerixafor; 1 = none).
        cxcl12 : ti.field, optional
            CXCL12 concentration (nM); ``None``: no chemotaxis.
        chemotactic_sensitivity : float
            chi of the walk bias of free, non-mobilized stem cells up the CXCL12 receptor
            occupancy (already multiplied by ``1 - f`` of a CXCR4 antagonist); 0 = unbiased
            (the walk is then exactly the unbiased one).
        cxcr4_kd_nM : float
            CXCL12 concentration of half CXCR4 occupancy (nM).
        """
        if dt_hours <= 0.0 or release_multiplier < 0.0:
            raise ValueError("dt_hours must be > 0 and release_multiplier >= 0")
        if not (chemotactic_sensitivity >= 0.0 and cxcr4_kd_nM > 0.0):
            raise ValueError("chemotactic_sensitivity must be >= 0 and cxcr4_kd_nM > 0")
        k0, k1 = self.key
        s = self.step_index & 0xFFFFFFFF
        self.update_niches(tissue, niche, integrity, integrity_floor, _advance=True, _dt_hours=dt_hours)
        if self._bounds_dt != dt_hours:
            self.pbound.from_numpy(self._event_bounds(dt_hours))
            self._bounds_dt = dt_hours
        has_ara, has_dnr = int(cytarabine is not None), int(daunorubicin is not None)
        # An absent drug is never read (flag 0); oxygen stands in so the template has a field.
        ara = oxygen if cytarabine is None else cytarabine
        dnr = oxygen if daunorubicin is None else daunorubicin
        self._events(tissue, oxygen, ara, dnr, has_ara, has_dnr, dt_hours, release_multiplier,
                     k0, k1, s)
        self.claim.fill(0)
        self._divide_claim(tissue, niche, oxygen, ara, has_ara, dt_hours, k0, k1, s)
        self._divide_apply(niche)
        self.claim.fill(0)
        chi = float(chemotactic_sensitivity) if cxcl12 is not None else 0.0
        # Without a field, oxygen stands in so the template has one; chi = 0 never reads it.
        self._walk_claim(tissue, niche, oxygen if cxcl12 is None else cxcl12, chi, float(cxcr4_kd_nM),
                         dt_hours, k0, k1, s)
        self._walk_apply(niche)
        self.step_index += 1

    def _event_bounds(self, dt_hours: float) -> np.ndarray:
        """Upper bounds of the division and death probabilities of a step, per cell type.

        A cell's division rate is at most its base rate (x the lodged multiplier): hypoxia and
        cytarabine arrest only lower it. Its death rate is at most base + severe-hypoxia rate
        (+ both drugs' maximal kill rates when a drug is present). The kernels draw the cell's
        uniform first and evaluate the exact probability (HIF ``pow``, ``exp``) only when the
        uniform falls under the bound: the decisions are exactly those of the full
        evaluation (the bound has a margin far above float32 rounding), at a fraction of the
        cost, since few cells divide or die in one step.
        """
        tarr, sarr = (a.astype(np.float64) for a in self._params_np)

        def bound(rate):
            p = -np.expm1(-np.maximum(rate * dt_hours, 0.0))
            return np.minimum(1.0, p * (1.0 + 1e-4) + 1e-6)

        base = tarr[TP["division_rate_per_hour"]]
        death = tarr[TP["death_rate_per_hour"]] + tarr[TP["severe_hypoxia_death_rate_per_hour"]]
        death[BLAST] += sarr[SP["postmitotic_blast_death_rate_per_hour"]]  # 0 when maturation is off
        drug = sarr[SP["cytarabine_kmax_per_hour"]] + sarr[SP["daunorubicin_kmax_per_hour"]]
        mult = np.maximum(tarr[TP["lodged_division_multiplier"]], 1.0)
        out = np.stack([bound(base), bound(base * mult), bound(death), bound(death + drug)])
        out[out >= 1.0] = 2.0  # "no bound": every uniform in [0, 1) passes
        return out.astype(np.float32)

    def update_niches(self, tissue, niche, integrity, integrity_floor: float, *, _advance: bool = False,
                      _dt_hours: float = 1.0) -> None:
        """Recompute which niche slots work and lodge/unlodge the stem cells on them.

        Only :meth:`step` advances the conditioning clocks (``_advance``, by one step of
        ``_dt_hours``); every other call (seeding, homing, tests) just reads them.
        """
        sarr = self._params_np[1]
        on = self.conditioning
        n_cond, n_decond = 1, 1
        if on and _advance:
            n_cond = self.timer_steps(float(sarr[SP["conditioning_hours"]]), _dt_hours)
            n_decond = self.timer_steps(float(sarr[SP["deconditioning_hours"]]), _dt_hours)
        self._update_niches(tissue, niche, integrity, float(integrity_floor), int(on), int(on and _advance),
                            n_cond, n_decond)

    @staticmethod
    def timer_steps(hours: float, dt_hours: float) -> int:
        """Cell steps of ``hours`` at steps of ``dt_hours`` (ceil, at least 1; the same rule as
        ``NicheConditioningConfig.timer_steps``); refuses more than the uint16 timer holds."""
        n = max(1, int(np.ceil(hours / dt_hours - 1e-6)))
        if n > TIMER_MAX:
            raise ValueError(f"{hours:g} h is {n} steps of {dt_hours:g} h: at most {TIMER_MAX}")
        return n

    def seed_initial(self, tissue, niche, integrity, **kwargs) -> None:
        """Clear and place the initial populations: :func:`cells_placement.seed_initial`."""
        seed_initial(self, tissue, niche, integrity, **kwargs)

    def home_hsc(self, count: int, tissue, niche, integrity, *, integrity_floor: float) -> int:
        """Place transplanted HSCs on free working slots: :func:`cells_placement.home_hsc`."""
        return home_hsc(self, count, tissue, niche, integrity, integrity_floor=integrity_floor)

    def metrics(self, tissue, niche) -> dict[str, float]:
        """Flat dict of the current readouts (see :func:`cells_metrics.collect_metrics`)."""
        return collect_metrics(self, tissue, niche)

    # ----------------------------------------------------------------------------------------
    # Taichi helpers
    # ----------------------------------------------------------------------------------------

    @ti.func
    def _inside(self, J):
        return (
            0 <= J[0] < ti.static(self.shape[0])
            and 0 <= J[1] < ti.static(self.shape[1])
            and 0 <= J[2] < ti.static(self.shape[2])
        )

    @ti.func
    def linear_index(self, I):
        """C-order linear index of voxel ``I`` (Philox counter word 0)."""
        return (I[0] * ti.static(self.shape[1]) + I[1]) * ti.static(self.shape[2]) + I[2]

    @ti.func
    def _rdiv(self, c, h, lodged, gen):
        """Division rate (1/h) of a cell of type ``c``; 0 for mature progenitors."""
        r = division_rate(
            self.tparams[ti.static(TP["division_rate_per_hour"]), c],
            self.tparams[ti.static(TP["hypoxia_division_sensitivity"]), c],
            h,
            lodged,
            self.tparams[ti.static(TP["lodged_division_multiplier"]), c],
        )
        if c == PROGENITOR and ti.cast(gen, ti.f32) >= self.sparams[
            ti.static(SP["progenitor_max_generation"])
        ]:
            r = 0.0
        if self._postmitotic_blast(c, gen):
            r = 0.0
        return r

    @ti.func
    def _postmitotic_blast(self, c, gen):
        """True for a blast that has made its last division (only with blast maturation on:
        off, a blast's generation stays 0 and the limit is 255)."""
        return c == BLAST and ti.cast(gen, ti.f32) >= self.sparams[ti.static(SP["blast_max_generation"])]

    @ti.func
    def _hif(self, p):
        return hif_response(
            p, self.sparams[ti.static(SP["hif_p50_mmHg"])], self.sparams[ti.static(SP["hif_hill"])]
        )

    @ti.func
    def _next_to_sinusoid(self, tissue: ti.template(), I):
        found = False
        for d in ti.static(range(6)):
            J = I + ti.Vector(DIRECTIONS[d])
            if self._inside(J):
                if tissue[J] == SINUSOID or tissue[J] == CENTRAL_SINUS:
                    found = True
        return found

    @ti.func
    def _clear_voxel(self, I):
        self.cells[I] = ti.u8(EMPTY)
        self.flags[I] = ti.u8(0)
        self.generation[I] = ti.u8(0)

    @ti.func
    def _count(self, row: ti.template(), c):
        self.counters[row, c] += ti.i64(1)

    # ----------------------------------------------------------------------------------------
    # kernels
    # ----------------------------------------------------------------------------------------

    @ti.kernel
    def _update_niches(
        self,
        tissue: ti.template(),
        niche: ti.template(),
        integrity: ti.template(),
        floor: ti.f32,
        conditioning: ti.i32,
        advance_clock: ti.i32,
        n_cond: ti.i32,
        n_decond: ti.i32,
    ):
        cond_floor = self.sparams[ti.static(SP["conditioned_integrity_floor"])]
        for I in ti.grouped(self.cells):
            kind = ti.cast(niche[I], ti.i32)
            ok = 0
            c = ti.cast(self.cells[I], ti.i32)
            fl = ti.cast(self.flags[I], ti.i32)
            if kind != NICHE_NONE and tissue[I] == MARROW:
                q_sup = -1.0  # best supporting-class vessel
                q_any = -1.0  # best vessel of any class (fallback)
                for o in ti.static(DIRECTIONS):
                    J = I + ti.Vector(o)
                    if self._inside(J):
                        lab = ti.cast(tissue[J], ti.i32)
                        if _is_vessel(lab):
                            q = ti.cast(integrity[J], ti.f32)
                            q_any = ti.max(q_any, q)
                            if _supports(kind, lab):
                                q_sup = ti.max(q_sup, q)
                q = q_sup if q_sup >= 0.0 else q_any
                cond = 0
                if conditioning != 0:
                    cond = ti.cast(self.niche_cond[I], ti.i32)
                ok = slot_bits(q, floor, cond_floor, cond)
                if advance_clock != 0:
                    # Held: a lodged LSC that the slot (as it is now) still supports.
                    held = c == LSC and (fl & LODGED) != 0 and (ok & OK_LSC) != 0
                    ct = advance(cond, ti.cast(self.niche_timer[I], ti.i32), held, n_cond, n_decond)
                    if ct[0] != cond:
                        ok = slot_bits(q, floor, cond_floor, ct[0])
                    self.niche_cond[I] = ti.cast(ct[0], ti.u8)
                    self.niche_timer[I] = ti.cast(ct[1], ti.u16)
            self.niche_ok[I] = ti.cast(ok, ti.u8)
            if c == HSC or c == LSC:
                works = (ok & (OK_HSC if c == HSC else OK_LSC)) != 0
                if works and (fl & (LODGED | MOBILIZED)) == 0:
                    self.flags[I] = ti.cast(fl | LODGED, ti.u8)
                elif not works and (fl & LODGED) != 0:
                    self.flags[I] = ti.cast(fl & ~LODGED, ti.u8)

    @ti.kernel
    def _events(
        self,
        tissue: ti.template(),
        oxygen: ti.template(),
        ara: ti.template(),
        dnr: ti.template(),
        has_ara: ti.i32,
        has_dnr: ti.i32,
        dt: ti.f32,
        release_multiplier: ti.f32,
        k0: ti.u32,
        k1: ti.u32,
        step_no: ti.u32,
    ):
        for I in ti.grouped(self.cells):
            c = ti.cast(self.cells[I], ti.i32)
            if c != EMPTY:
                fl = ti.cast(self.flags[I], ti.i32)
                lodged = (fl & LODGED) != 0
                p_o2 = ti.cast(oxygen[I], ti.f32)
                c_ara = 0.0
                c_dnr = 0.0
                if has_ara:
                    c_ara = ti.max(ti.cast(ara[I], ti.f32), 0.0)
                if has_dnr:
                    c_dnr = ti.max(ti.cast(dnr[I], ti.f32), 0.0)
                # Exposure of the cell present during this step (fixed point, see AUC_SCALE).
                cat = c
                if lodged and c == HSC:
                    cat = CAT_HSC_LODGED
                elif lodged and c == LSC:
                    cat = CAT_LSC_LODGED
                # float32 products keep 24 bits (relative 6e-8); no f64 needed on the device.
                scale = dt * AUC_SCALE
                ch = ti.cast(scale + 0.5, ti.i64)
                ea = ti.cast(c_ara * scale + 0.5, ti.i64)
                ed = ti.cast(c_dnr * scale + 0.5, ti.i64)
                self.auc[0, c] += ch
                self.auc[1, c] += ea
                self.auc[2, c] += ed
                if cat != c:
                    self.auc[0, cat] += ch
                    self.auc[1, cat] += ea
                    self.auc[2, cat] += ed

                u = uniform4(k0, k1, self.linear_index(I), step_no, _P_EVENTS, 0)
                # The exact death probability only where the uniform is under its bound
                # (see _event_bounds); elsewhere the cell survives whatever it is.
                drugs = has_ara != 0 or has_dnr != 0
                p_die = 0.0
                r_drug = 0.0
                r_hyp = 0.0
                r_tot = 0.0
                if u[0] < self.pbound[2 + ti.cast(drugs, ti.i32), c]:
                    if drugs:  # without a drug r_drug is exactly 0 and the HIF rate is not needed
                        r_div = self._rdiv(c, self._hif(p_o2), lodged, self.generation[I])
                        r_drug = drug_kill_rate(
                            r_div,
                            c_ara,
                            c_dnr,
                            self.sparams[ti.static(SP["s_phase_hours"])],
                            self.sparams[ti.static(SP["cycle_hours"])],
                            self.sparams[ti.static(SP["cytarabine_kmax_per_hour"])],
                            self.sparams[ti.static(SP["cytarabine_ec50_uM"])],
                            self.sparams[ti.static(SP["daunorubicin_kmax_per_hour"])],
                            self.sparams[ti.static(SP["daunorubicin_ec50_uM"])],
                        )
                        if lodged:
                            r_drug *= 1.0 - self.sparams[ti.static(SP["lodged_drug_protection"])]
                    if p_o2 < self.sparams[ti.static(SP["severe_hypoxia_threshold_mmHg"])]:
                        r_hyp = self.tparams[ti.static(TP["severe_hypoxia_death_rate_per_hour"]), c]
                    r_tot = self.tparams[ti.static(TP["death_rate_per_hour"]), c] + r_hyp + r_drug
                    if self._postmitotic_blast(c, self.generation[I]):
                        r_tot += self.sparams[ti.static(SP["postmitotic_blast_death_rate_per_hour"])]
                    p_die = event_probability(r_tot, dt)
                if u[0] < p_die:
                    # One uniform decides death and its cause: [0, p*r_drug/r) is drug,
                    # the next r_hyp/r band hypoxia; the split is exact in expectation.
                    self._count(ti.static(COUNTER_ROW["died"]), c)
                    if u[0] < p_die * (r_drug / r_tot):
                        self._count(ti.static(COUNTER_ROW["killed_drug"]), c)
                        if lodged:
                            self._count(ti.static(COUNTER_ROW["killed_drug_lodged"]), c)
                    elif u[0] < p_die * ((r_drug + r_hyp) / r_tot):
                        self._count(ti.static(COUNTER_ROW["killed_hypoxia"]), c)
                    self._clear_voxel(I)
                elif c == PROGENITOR and ti.cast(self.generation[I], ti.f32) >= self.sparams[
                    ti.static(SP["progenitor_max_generation"])
                ]:
                    r_exit = self.sparams[ti.static(SP["mature_exit_rate_per_hour"])]
                    if not self._next_to_sinusoid(tissue, I):
                        r_exit *= self.sparams[ti.static(SP["mature_exit_far_factor"])]
                    if u[1] < event_probability(r_exit, dt):
                        self._count(ti.static(COUNTER_ROW["exited"]), c)
                        self._clear_voxel(I)
                elif c == BLAST:
                    if self._next_to_sinusoid(tissue, I):
                        r_eg = self.sparams[ti.static(SP["blast_egress_rate_per_hour"])]
                        # CXCR4 antagonists mobilise blasts too (Nervi 2009: x9 circulating
                        # blasts 3 h after AMD3100), so the same multiplier applies.
                        if u[1] < event_probability(r_eg * release_multiplier, dt):
                            self._count(ti.static(COUNTER_ROW["exited"]), c)
                            self._clear_voxel(I)
                elif lodged:
                    r_rel = self.sparams[ti.static(SP["niche_release_rate_per_hour"])]
                    if u[2] < event_probability(r_rel * release_multiplier, dt):
                        self._count(ti.static(COUNTER_ROW["released"]), c)
                        self.flags[I] = ti.cast((fl & ~LODGED) | MOBILIZED, ti.u8)
                elif (fl & MOBILIZED) != 0:
                    r_adh = self.sparams[ti.static(SP["readhesion_rate_per_hour"])]
                    if u[3] < event_probability(r_adh, dt):
                        self.flags[I] = ti.cast(fl & ~MOBILIZED, ti.u8)

    @ti.kernel
    def _divide_claim(
        self,
        tissue: ti.template(),
        niche: ti.template(),
        oxygen: ti.template(),
        ara: ti.template(),
        has_ara: ti.i32,
        dt: ti.f32,
        k0: ti.u32,
        k1: ti.u32,
        step_no: ti.u32,
    ):
        for I in ti.grouped(self.cells):
            c = ti.cast(self.cells[I], ti.i32)
            if c != EMPTY:
                lodged = (ti.cast(self.flags[I], ti.i32) & LODGED) != 0
                idx = self.linear_index(I)
                w = philox_counter(k0, k1, idx, step_no, _P_DIVISION, 0)
                u_div = uniform_from_u32(w[0])
                divides = False
                # The exact rate (HIF pow, exp) only under the bound (see _event_bounds).
                if u_div < self.pbound[ti.cast(lodged, ti.i32), c]:
                    p_o2 = ti.cast(oxygen[I], ti.f32)
                    r = self._rdiv(c, self._hif(p_o2), lodged, self.generation[I])
                    if has_ara != 0:
                        # S-phase arrest: cytarabine stalls DNA synthesis, so fewer cells divide.
                        r *= 1.0 - self.sparams[ti.static(SP["cytarabine_division_arrest"])] * emax(
                            ti.cast(ara[I], ti.f32), self.sparams[ti.static(SP["cytarabine_ec50_uM"])]
                        )
                    divides = r > 0.0 and u_div < event_probability(r, dt)
                if divides:
                    # Neighbour classes (bit d = direction d).
                    m_plain = 0  # empty non-niche marrow: any daughter
                    m_slot = 0  # empty niche slot working for the mother's type: stem daughters only
                    ok_bit = OK_HSC if c == HSC else OK_LSC
                    m_hsc = 0  # niche slot held by a lodged HSC: LSC displacement target
                    m_prog = 0  # progenitor: blast displacement target
                    for d in ti.static(range(6)):
                        J = I + ti.Vector(DIRECTIONS[d])
                        if self._inside(J):
                            if tissue[J] == MARROW:
                                cj = ti.cast(self.cells[J], ti.i32)
                                on_niche = niche[J] != NICHE_NONE
                                if cj == EMPTY:
                                    if not on_niche:
                                        m_plain |= 1 << d
                                    elif (ti.cast(self.niche_ok[J], ti.i32) & ok_bit) != 0:
                                        m_slot |= 1 << d
                                elif cj == HSC and on_niche:
                                    if (ti.cast(self.flags[J], ti.i32) & LODGED) != 0:
                                        m_hsc |= 1 << d
                                elif cj == PROGENITOR:
                                    m_prog |= 1 << d
                    u_fate = uniform_from_u32(w[1])
                    u_pick = uniform_from_u32(w[2])
                    u_disp = uniform_from_u32(w[3])
                    daughter = c
                    mask = m_plain
                    if c == HSC:
                        # HSC + HSC only when a free working slot takes the daughter.
                        daughter = PROGENITOR
                        if m_slot != 0 and u_fate < self.sparams[
                            ti.static(SP["hsc_self_renewal_probability"])
                        ]:
                            daughter = HSC
                            mask = m_slot
                    elif c == LSC:
                        daughter = BLAST
                        p_renew = self.sparams[ti.static(SP["lsc_self_renewal_probability"])]
                        if not lodged:
                            p_renew *= self.sparams[ti.static(SP["lsc_free_self_renewal_factor"])]
                        if u_fate < p_renew:
                            daughter = LSC
                            if m_slot != 0:
                                mask = m_slot
                            elif m_hsc != 0 and u_disp < self.sparams[
                                ti.static(SP["lsc_displacement_probability"])
                            ]:
                                mask = m_hsc
                    # A crowded leukemic daughter (no empty voxel, no slot) may push a
                    # progenitor out; its own uniform keeps it independent of u_disp.
                    w2 = philox_counter(k0, k1, idx, step_no, _P_DIVISION, 1)
                    if (daughter == BLAST or daughter == LSC) and mask == 0:
                        if uniform_from_u32(w2[1]) < self.sparams[
                            ti.static(SP["progenitor_displacement_probability"])
                        ]:
                            mask = m_prog
                    # Off a niche, an LSC whose daughter is a blast may lose its stemness
                    # too (symmetric differentiation: LSC -> blast + blast).
                    mother_differentiates = 0
                    if c == LSC and daughter == BLAST and not lodged:
                        if uniform_from_u32(w2[2]) < self.sparams[
                            ti.static(SP["lsc_free_differentiation_probability"])
                        ]:
                            mother_differentiates = 1
                    if mask != 0:
                        d = _pick_direction(mask, u_pick)
                        key = (w2[0] & ti.u32(0xFFFFFFF8)) | ti.cast((d ^ 1) + 1, ti.u32)
                        ti.atomic_max(self.claim[I + _offset(d)], key)
                        self.intent[I] = ti.cast((d + 1) | (daughter << 3) | (mother_differentiates << 6), ti.u8)

    @ti.kernel
    def _divide_apply(self, niche: ti.template()):
        for I in ti.grouped(self.cells):
            it = ti.cast(self.intent[I], ti.i32)
            if it != 0:
                self.intent[I] = ti.u8(0)
                d = (it & 7) - 1
                daughter = (it >> 3) & 7
                T = I + _offset(d)
                won = ti.cast(self.claim[T] & ti.u32(7), ti.i32) == (d ^ 1) + 1
                # claim[I] != 0: this mother is itself being displaced; it yields so that no
                # voxel is written by two threads.
                if won and self.claim[I] == 0:
                    mother = ti.cast(self.cells[I], ti.i32)
                    victim = ti.cast(self.cells[T], ti.i32)
                    if victim != EMPTY:
                        self._count(ti.static(COUNTER_ROW["displaced"]), victim)
                    self._count(ti.static(COUNTER_ROW["divisions"]), mother)
                    g = 0
                    # Transit amplification: both progenitor cells, and both blasts when blast
                    # maturation is on, move one generation up (a blast made by an LSC is at 0).
                    if mother == PROGENITOR or (
                        mother == BLAST and self.sparams[ti.static(SP["blast_maturation_enabled"])] != 0.0
                    ):
                        g = ti.min(ti.cast(self.generation[I], ti.i32) + 1, 255)
                        self.generation[I] = ti.cast(g, ti.u8)
                    self.cells[T] = ti.cast(daughter, ti.u8)
                    self.generation[T] = ti.cast(g, ti.u8)
                    if (it >> 6) != 0:  # a free LSC that differentiated with its daughter
                        self.cells[I] = ti.u8(BLAST)
                        self.flags[I] = ti.u8(0)
                    fl = 0
                    if (daughter == HSC or daughter == LSC) and niche[T] != NICHE_NONE:
                        if (ti.cast(self.niche_ok[T], ti.i32) & (OK_HSC if daughter == HSC else OK_LSC)) != 0:
                            fl = LODGED
                    self.flags[T] = ti.cast(fl, ti.u8)

    @ti.kernel
    def _walk_claim(
        self,
        tissue: ti.template(),
        niche: ti.template(),
        cxcl12: ti.template(),
        chi: ti.f32,
        kd: ti.f32,
        dt: ti.f32,
        k0: ti.u32,
        k1: ti.u32,
        step_no: ti.u32,
    ):
        for I in ti.grouped(self.cells):
            c = ti.cast(self.cells[I], ti.i32)
            fl = ti.cast(self.flags[I], ti.i32)
            r = 0.0
            if (c == HSC or c == LSC) and (fl & LODGED) == 0:
                r = self.sparams[ti.static(SP["stem_walk_rate_per_hour"])]
            elif c == BLAST:
                r = self.sparams[ti.static(SP["blast_walk_rate_per_hour"])]
            if r > 0.0:
                idx = self.linear_index(I)
                w = philox_counter(k0, k1, idx, step_no, _P_WALK, 0)
                if uniform_from_u32(w[0]) < event_probability(r, dt):
                    on_niche = niche[I] != NICHE_NONE
                    m_plain = 0  # empty non-niche marrow
                    m_niche = 0  # empty niche voxel (stem movers only)
                    m_slot = 0  # empty working niche slot
                    m_prog = 0  # progenitor: swap partner
                    for d in ti.static(range(6)):
                        J = I + ti.Vector(DIRECTIONS[d])
                        if self._inside(J):
                            if tissue[J] == MARROW:
                                cj = ti.cast(self.cells[J], ti.i32)
                                if cj == EMPTY:
                                    if niche[J] == NICHE_NONE:
                                        m_plain |= 1 << d
                                    else:
                                        m_niche |= 1 << d
                                        if (ti.cast(self.niche_ok[J], ti.i32) & (OK_HSC if c == HSC else OK_LSC)) != 0:
                                            m_slot |= 1 << d
                                elif cj == PROGENITOR:
                                    m_prog |= 1 << d
                    # A swap would put the progenitor on this voxel: never onto a niche.
                    if on_niche:
                        m_prog = 0
                    mask = m_plain | m_prog
                    if c != BLAST:
                        mask |= m_niche
                        # A lodging-ready stem cell next to a free working slot steps onto it
                        # (CXCL12 attraction at the one-voxel scale).
                        if m_slot != 0 and (fl & MOBILIZED) == 0:
                            mask = m_slot
                    if mask != 0:
                        d = -1
                        if chi > 0.0 and c != BLAST and (fl & MOBILIZED) == 0:
                            # CXCR4 chemotaxis: weight exp(chi (rho_J - rho_I)) per direction,
                            # rho the CXCL12 receptor occupancy (kernels.cxcl12); the same uniform.
                            wts = ti.Vector([1.0, 1.0, 1.0, 1.0, 1.0, 1.0], dt=ti.f32)
                            c_here = cxcl12[I]
                            for q in ti.static(range(6)):
                                if (mask >> q) & 1:
                                    wts[q] = chemotaxis_weight(chi, c_here, cxcl12[I + ti.Vector(DIRECTIONS[q])], kd)
                            d = pick_weighted(mask, wts, uniform_from_u32(w[1]))
                        else:
                            d = _pick_direction(mask, uniform_from_u32(w[1]))
                        key = (w[2] & ti.u32(0xFFFFFFF8)) | ti.cast((d ^ 1) + 1, ti.u32)
                        ti.atomic_max(self.claim[I + _offset(d)], key)
                        self.intent[I] = ti.cast(d + 1, ti.u8)

    @ti.kernel
    def _walk_apply(self, niche: ti.template()):
        # Movers (free stem cells, blasts) are never targets (targets are empty or hold a
        # progenitor), so the winner may write both its own voxel and the target.
        for I in ti.grouped(self.cells):
            it = ti.cast(self.intent[I], ti.i32)
            if it != 0:
                self.intent[I] = ti.u8(0)
                d = it - 1
                T = I + _offset(d)
                if ti.cast(self.claim[T] & ti.u32(7), ti.i32) == (d ^ 1) + 1:
                    c = self.cells[I]
                    fl = ti.cast(self.flags[I], ti.i32) & MOBILIZED
                    if c != ti.u8(BLAST) and fl == 0 and niche[T] != NICHE_NONE:
                        # A stem cell lodges only on a slot working for its type: an HSC that
                        # steps onto a conditioned slot stays free (and walks on).
                        if (ti.cast(self.niche_ok[T], ti.i32) & (OK_HSC if c == ti.u8(HSC) else OK_LSC)) != 0:
                            fl = LODGED
                    g = self.generation[I]
                    # Swap: the target's occupant (empty or a progenitor) takes this voxel.
                    self.cells[I] = self.cells[T]
                    self.generation[I] = self.generation[T]
                    self.flags[I] = ti.u8(0)
                    self.cells[T] = c
                    self.generation[T] = g
                    self.flags[T] = ti.cast(fl, ti.u8)
