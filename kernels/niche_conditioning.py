"""Leukemia-conditioned niche slots: the per-slot rule of the niches phase, with numpy twins.

State per voxel (meaningful on niche slots only, zero elsewhere), on the device in
:class:`~marrow3d.kernels.cells.CellLattice`:

* ``niche_cond`` (uint8): 1 while the slot is conditioned;
* ``niche_timer`` (uint16): consecutive niche phases (one per cell step) that found the slot
  *held* (a lodged LSC on it that the slot supports) while it is normal, or not held while it
  is conditioned. One timer serves both clocks because a slot is only ever in one of the two
  states; it saturates at 65535 (the config refuses longer times in steps).

Rule, at the niches phase of every step (``advance``): a normal slot found held at ``n_cond``
consecutive phases becomes conditioned at the last of them; a conditioned slot found not held
at ``n_decond`` consecutive phases becomes normal at the last of them; any other finding resets
the timer. ``n`` = ceil(hours / dt). So a slot held from t0 on is conditioned in the state
written after the step ending at t0 + n_cond dt, and never before. Holding must be continuous
(a break restarts the clock): remodelling is driven by leukemic cells present in the niche
(Schepers 2013; Colmone 2008), and a cumulative count would need a decay rule with one more
unmeasured time.

What the slot offers each cell type (``slot_bits``), from its vessel quality q (best
supporting-class integrity, as ``CellLattice._update_niches`` computes it):

* normal slot: HSC and LSC alike while q >= floor and q > 0 (the old rule, unchanged);
* conditioned slot: no HSC ever; LSC while q >= conditioned floor and a vessel is adjacent
  (q >= 0; q = 0 counts: a lost vessel still anchors the remodelled, hypoxic niche).

The bits go to ``niche_ok`` (:data:`OK_HSC`, :data:`OK_LSC`); with the mechanism off every
working slot gets both bits and every test ``niche_ok != 0`` reads what it read before.
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations as live objects.

import numpy as np

from .ti_compat import ti

__all__ = ["OK_HSC", "OK_LSC", "TIMER_MAX", "slot_bits", "advance", "slot_bits_np", "advance_np"]

OK_HSC = 1  #: ``niche_ok`` bit: the slot works for HSCs (lodging, HSC daughters, homing)
OK_LSC = 2  #: ``niche_ok`` bit: the slot works for LSCs
TIMER_MAX = 65535  #: saturation of the uint16 timer


@ti.func
def slot_bits(q, floor, cond_floor, cond):
    """``niche_ok`` bits of a slot of vessel quality ``q`` (-1: no adjacent vessel)."""
    bits = 0
    if q >= floor and q > 0.0:
        bits = OK_HSC | OK_LSC
    if cond != 0:
        bits = 0
        if q >= cond_floor and q >= 0.0:
            bits = OK_LSC
        elif q >= floor and q > 0.0:  # cond_floor <= floor (config): never reached, kept for safety
            bits = OK_LSC
    return bits


@ti.func
def advance(cond, timer, held, n_cond, n_decond):
    """One niches phase of the conditioning clock: returns ``ti.Vector([cond, timer])``."""
    c = cond
    t = timer
    if c == 0:
        if held:
            t = ti.min(t + 1, TIMER_MAX)
            if t >= n_cond:
                c = 1
                t = 0
        else:
            t = 0
    else:
        if held:
            t = 0
        else:
            t = ti.min(t + 1, TIMER_MAX)
            if t >= n_decond:
                c = 0
                t = 0
    return ti.Vector([c, t], dt=ti.i32)


# --------------------------------------------------------------------------------------------
# numpy twins (test oracles)
# --------------------------------------------------------------------------------------------


def slot_bits_np(q, floor, cond_floor, cond):
    """numpy twin of :func:`slot_bits` (arrays broadcast)."""
    q = np.asarray(q, dtype=np.float64)
    good = (q >= floor) & (q > 0.0)
    low = (q >= cond_floor) & (q >= 0.0)
    normal = np.where(good, OK_HSC | OK_LSC, 0)
    conditioned = np.where(low | good, OK_LSC, 0)
    return np.where(np.asarray(cond) != 0, conditioned, normal).astype(np.uint8)


def advance_np(cond, timer, held, n_cond, n_decond):
    """numpy twin of :func:`advance` (scalars)."""
    if not cond:
        if held:
            timer = min(timer + 1, TIMER_MAX)
            if timer >= n_cond:
                return 1, 0
            return 0, timer
        return 0, 0
    if held:
        return 1, 0
    timer = min(timer + 1, TIMER_MAX)
    if timer >= n_decond:
        return 0, 0
    return 1, timer
