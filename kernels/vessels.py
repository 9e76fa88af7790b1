"""Vessel remodeling: integrity of arterioles and sinusoids under the leukemic signal.

Integrity I in [0, 1] lives on vessel voxels (tissue ``ARTERIOLE``, ``SINUSOID``,
``CENTRAL_SINUS``). Per step of dt hours, with S the signal the voxel senses (the largest of
its own value and those of its marrow face neighbours: the signal comes from leukemic cells in
the marrow, and a transport solve may hold vessel voxels near the blood value):

* S >= threshold, arteriole: I -= k_art x S/(S+K) x (1 - p_DFO) x dt  (Duarte 2018: AML cells
  degrade endosteal vessels; deferoxamine preserves them);
* S >= threshold, sinusoid class: I -= k_sin x S/(S+K) x dt, but not below ``sinusoid_min``
  (sinusoids survive and leak more; permeability is read from I by transport);
* S < threshold: regeneration, I = 1 - (1 - I) exp(-k_regen dt) (exact for dI/dt = k (1 - I));
* I is clamped to [0, 1].

Deterministic and pointwise (no randomness, no neighbour writes). Units: hours, signal units.
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations as live objects.

from collections.abc import Mapping

from .codes import ARTERIOLE, CENTRAL_SINUS, FACE_DIRECTIONS, MARROW, SINUSOID
from .ti_compat import ti

__all__ = ["VESSEL_PARAMS", "update_integrity", "sensed_signal"]

#: Parameters of :func:`update_integrity` (``VesselsConfig.kernel_params()`` produces them).
VESSEL_PARAMS = (
    "arteriole_loss_per_hour",
    "sinusoid_loss_per_hour",
    "sinusoid_min_integrity",
    "signal_half_saturation",
    "regeneration_per_hour",
    "regeneration_signal_threshold",
)


@ti.func
def sensed_signal(tissue: ti.template(), signal: ti.template(), I):
    """Largest signal (su) over voxel ``I`` and its in-grid marrow face neighbours."""
    s = ti.cast(signal[I], ti.f32)
    for o in ti.static(FACE_DIRECTIONS):
        J = I + ti.Vector(o)
        inside = True
        for a in ti.static(range(3)):
            if J[a] < 0 or J[a] >= signal.shape[a]:
                inside = False
        if inside:
            if tissue[J] == MARROW:
                s = ti.max(s, ti.cast(signal[J], ti.f32))
    return s


@ti.kernel
def _update_integrity(
    tissue: ti.template(),
    integrity: ti.template(),
    signal: ti.template(),
    dt: ti.f32,
    k_art: ti.f32,
    k_sin: ti.f32,
    sin_min: ti.f32,
    k_half: ti.f32,
    k_regen: ti.f32,
    s_low: ti.f32,
    protection: ti.f32,
):
    for I in ti.grouped(tissue):
        lab = tissue[I]
        if lab == ARTERIOLE or lab == SINUSOID or lab == CENTRAL_SINUS:
            s = ti.max(sensed_signal(tissue, signal, I), 0.0)
            v = ti.cast(integrity[I], ti.f32)
            if s < s_low:
                v = 1.0 - (1.0 - v) * ti.exp(-k_regen * dt)
            else:
                sat = s / (s + k_half)
                if lab == ARTERIOLE:
                    v -= k_art * sat * (1.0 - protection) * dt
                else:
                    # Never push a sinusoid below its floor; one already below stays put.
                    v = ti.max(v - k_sin * sat * dt, ti.min(v, sin_min))
            integrity[I] = ti.min(ti.max(v, 0.0), 1.0)


def update_integrity(
    tissue,
    integrity,
    signal,
    params: Mapping[str, float],
    *,
    dt_hours: float = 1.0,
    dfo_protection: float = 0.0,
) -> None:
    """Advance vessel integrity by one step, in place.

    Parameters
    ----------
    tissue : ti.field of uint8
        Tissue codes.
    integrity : ti.field of float
        Vessel integrity in [0, 1] (read and written; values off vessels are left alone).
    signal : ti.field of float
        Remodeling signal (su), same shape.
    params : mapping
        The names of :data:`VESSEL_PARAMS` (rates per hour, signal values in su).
    dt_hours : float
        Step length (h).
    dfo_protection : float
        Fraction in [0, 1] of the arteriole loss rate removed by deferoxamine (0: no drug).
    """
    missing = sorted(set(VESSEL_PARAMS) - set(params))
    unknown = sorted(set(params) - set(VESSEL_PARAMS))
    if missing or unknown:
        raise ValueError(f"vessel parameters: missing {missing}, unknown {unknown}")
    if dt_hours <= 0.0 or not 0.0 <= dfo_protection <= 1.0:
        raise ValueError("dt_hours must be > 0 and dfo_protection in [0, 1]")
    if params["signal_half_saturation"] <= 0.0:
        raise ValueError("signal_half_saturation must be > 0")
    _update_integrity(
        tissue,
        integrity,
        signal,
        float(dt_hours),
        float(params["arteriole_loss_per_hour"]),
        float(params["sinusoid_loss_per_hour"]),
        float(params["sinusoid_min_integrity"]),
        float(params["signal_half_saturation"]),
        float(params["regeneration_per_hour"]),
        float(params["regeneration_signal_threshold"]),
        float(dfo_protection),
    )
