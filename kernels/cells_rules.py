"""Pointwise rate laws of the cell lattice: Taichi functions with numpy twins.

Each ``@ti.func`` here is pure (scalars in, scalar out) and has a numpy twin with the same
name plus ``_np``; the tests use the twins as the expected values of the stochastic rules.

Units: rates per hour, times in hours, pO2 in mmHg, concentrations in uM.
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations as live objects.

import numpy as np

from .ti_compat import ti

__all__ = [
    "hif_response",
    "event_probability",
    "emax",
    "division_rate",
    "drug_kill_rate",
    "hif_response_np",
    "event_probability_np",
    "emax_np",
    "division_rate_np",
    "drug_kill_rate_np",
]

#: Below this rate x dt the series 1 - exp(-x) ~ x - x^2/2 + x^3/6 is used: float32
#: ``1 - exp(-x)`` loses most digits for the small per-hour probabilities (egress 0.02/day
#: gives x = 8e-4), and a lost digit there is a biased rate.
_SERIES_BELOW = 1e-3


@ti.func
def hif_response(p_mmHg, p50_mmHg, hill):
    """HIF activity h(P) = 1 / (1 + (P/P50)^n), in [0, 1] (1 = fully hypoxic).

    Parameters
    ----------
    p_mmHg : f32
        Local pO2 (mmHg); negative values (solver undershoot) count as 0.
    p50_mmHg : f32
        Half-maximal pO2 (mmHg), 13 by default (Jiang 1996).
    hill : f32
        Hill exponent, 3 by default.
    """
    x = ti.max(ti.cast(p_mmHg, ti.f32), 0.0) / p50_mmHg
    return 1.0 / (1.0 + ti.pow(x, hill))


@ti.func
def event_probability(rate_per_hour, dt_hours):
    """Probability that an event of constant rate happens within dt: 1 - exp(-rate dt)."""
    x = ti.max(rate_per_hour * dt_hours, 0.0)
    p = 0.0
    if x < _SERIES_BELOW:
        p = x * (1.0 - x * (0.5 - x / 6.0))
    else:
        p = 1.0 - ti.exp(-x)
    return p


@ti.func
def emax(c_uM, ec50_uM):
    """Saturating drug effect C / (EC50 + C), in [0, 1); 0 for C <= 0."""
    c = ti.max(ti.cast(c_uM, ti.f32), 0.0)
    e = 0.0
    if c > 0.0:
        e = c / (ec50_uM + c)
    return e


@ti.func
def division_rate(base_per_hour, sensitivity, h, lodged, lodged_multiplier):
    """Division rate (1/h): base x (1 - sensitivity x h) x (lodged multiplier if lodged).

    Parameters
    ----------
    base_per_hour : f32
        Division rate of a free cell at normoxia (1/h).
    sensitivity : f32
        Fractional slow-down at full HIF response (normal cells high, leukemic cells low:
        leukemic cells tolerate hypoxia).
    h : f32
        HIF response h(P) in [0, 1].
    lodged : bool-like
        Whether the cell is lodged on a niche slot.
    lodged_multiplier : f32
        Niche-induced quiescence factor.
    """
    r = base_per_hour * (1.0 - sensitivity * h)
    if lodged:
        r *= lodged_multiplier
    return r


@ti.func
def drug_kill_rate(
    r_div, ara_uM, dnr_uM, s_phase_h, cycle_h, ara_kmax, ara_ec50, dnr_kmax, dnr_ec50
):
    """Drug kill rate (1/h) of a cell dividing at rate ``r_div`` (1/h), before protection.

    Cytarabine kills only S-phase cells: kmax x C/(EC50+C) x f_S with f_S = min(1, r_div Ts).
    Daunorubicin kills cycling cells: kmax x D/(EC50+D) x f_c with f_c = min(1, r_div Tc).
    A cell that does not divide (r_div = 0) is never killed by a drug.
    """
    f_s = ti.min(r_div * s_phase_h, 1.0)
    f_c = ti.min(r_div * cycle_h, 1.0)
    return ara_kmax * emax(ara_uM, ara_ec50) * f_s + dnr_kmax * emax(dnr_uM, dnr_ec50) * f_c


# --------------------------------------------------------------------------------------------
# numpy twins (test oracles)
# --------------------------------------------------------------------------------------------


def hif_response_np(p_mmHg, p50_mmHg=13.0, hill=3.0):
    """numpy twin of :func:`hif_response`."""
    x = np.maximum(np.asarray(p_mmHg, dtype=np.float64), 0.0) / p50_mmHg
    return 1.0 / (1.0 + x**hill)


def event_probability_np(rate_per_hour, dt_hours):
    """numpy twin of :func:`event_probability` (exact ``-expm1``)."""
    return -np.expm1(-np.maximum(np.asarray(rate_per_hour, dtype=np.float64) * dt_hours, 0.0))


def emax_np(c_uM, ec50_uM):
    """numpy twin of :func:`emax`."""
    c = np.maximum(np.asarray(c_uM, dtype=np.float64), 0.0)
    return np.divide(c, ec50_uM + c, out=np.zeros_like(c), where=c > 0.0)


def division_rate_np(base_per_hour, sensitivity, h, lodged=False, lodged_multiplier=1.0):
    """numpy twin of :func:`division_rate`."""
    r = np.asarray(base_per_hour, dtype=np.float64) * (1.0 - sensitivity * np.asarray(h))
    return np.where(lodged, r * lodged_multiplier, r)


def drug_kill_rate_np(
    r_div, ara_uM, dnr_uM, s_phase_h, cycle_h, ara_kmax, ara_ec50, dnr_kmax, dnr_ec50
):
    """numpy twin of :func:`drug_kill_rate`."""
    r_div = np.asarray(r_div, dtype=np.float64)
    f_s = np.minimum(r_div * s_phase_h, 1.0)
    f_c = np.minimum(r_div * cycle_h, 1.0)
    return ara_kmax * emax_np(ara_uM, ara_ec50) * f_s + dnr_kmax * emax_np(dnr_uM, dnr_ec50) * f_c
