"""Endpoints of one run from its time series: the columns of a sweep's ``summary.csv``.

Pure functions of the time-series columns (``RunData.timeseries`` or ``run.h5``
``/timeseries``); used by ``marrow3d sweep`` (:mod:`marrow3d.sweep.summary`) and by
``marrow3d compare`` (:mod:`marrow3d.analysis.endpoints`). ``B(t) = count_lsc + count_blast``
is the leukemic burden.

``final_day``
    Simulated time of the last row.
``final_lsc``, ``final_blast``, ``final_leukemic_fraction``, ``final_stage``
    Last row of ``count_lsc``, ``count_blast``, ``leukemic_fraction`` and ``stage``
    (0 pre-leukemic, 1 permissive, 2 self-reinforcing).
``treatment_start_day``
    Start of the earliest drug dose in ``therapy.events`` (cytarabine, daunorubicin,
    plerixafor, deferoxamine; HSC transplants do not count); NaN when untreated.
``min_burden``, ``min_burden_day``
    The minimum of ``B`` over the rows at or after ``treatment_start_day`` (over the whole run
    when untreated) and the first day it is reached (the nadir).
``relapse_day``
    Treated members only: the first day after the nadir at which ``B`` exceeds
    ``10 x max(min_burden, 1)`` (so after eradication, B = 0, relapse means more than 10
    leukemic cells). NaN when untreated or when it does not happen within the run.
``final_hsc_niche_share``
    Last row of ``hsc_niche_share``.
``arteriole_loss``, ``arteriole_fraction_lost``
    ``1 - arteriole_mean_integrity`` and ``arteriole_fraction_lost`` at the end.
``final_hypoxic_fraction``
    Last row of ``o2_hypoxic_fraction``.
``lsc_lodged_cytarabine_uM``, ``lsc_lodged_daunorubicin_uM``
    Drug exposure of niche-lodged LSCs: the accumulated exposure ``<drug>_uM_h_lsc_lodged``
    divided by the accumulated ``cell_hours_lsc_lodged`` (the time-averaged concentration a
    lodged LSC saw, uM); NaN when no lodged LSC was ever counted.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["ENDPOINTS", "ENDPOINT_INPUTS", "RELAPSE_FACTOR", "TREATMENT_AGENTS", "endpoints", "nadir_and_relapse",
           "treatment_start_day"]

#: Relapse: the burden exceeds this multiple of its nadir (and at least this many cells).
RELAPSE_FACTOR = 10.0
#: Agents whose first dose starts the treatment (HSC transplants do not count).
TREATMENT_AGENTS = ("cytarabine", "daunorubicin", "plerixafor", "deferoxamine")

ENDPOINTS = (
    "final_day",
    "final_lsc",
    "final_blast",
    "final_leukemic_fraction",
    "final_stage",
    "treatment_start_day",
    "min_burden",
    "min_burden_day",
    "relapse_day",
    "final_hsc_niche_share",
    "arteriole_loss",
    "arteriole_fraction_lost",
    "final_hypoxic_fraction",
    "lsc_lodged_cytarabine_uM",
    "lsc_lodged_daunorubicin_uM",
)

#: The time-series columns :func:`endpoints` reads.
ENDPOINT_INPUTS = ("time_h", "count_lsc", "count_blast", "leukemic_fraction", "stage", "hsc_niche_share",
                   "arteriole_mean_integrity", "arteriole_fraction_lost", "o2_hypoxic_fraction",
                   "cytarabine_uM_h_lsc_lodged", "daunorubicin_uM_h_lsc_lodged", "cell_hours_lsc_lodged")


def treatment_start_day(config_toml: str | None) -> float:
    """Start of the earliest drug dose of a resolved config (NaN when there is none)."""
    if not config_toml:
        return math.nan
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    events = tomllib.loads(config_toml).get("therapy", {}).get("events", [])
    starts = []
    for e in events:
        if e.get("agent") not in TREATMENT_AGENTS:
            continue
        for key in ("start_day", "day"):
            if e.get(key) is not None:
                starts.append(float(e[key]))
        if e.get("days"):
            starts.append(min(float(d) for d in e["days"]))
    return min(starts) if starts else math.nan


def nadir_and_relapse(day: np.ndarray, burden: np.ndarray, start_day: float) -> tuple[float, float, float]:
    """Burden nadir from ``start_day`` on, the day it is first reached, and the relapse day.

    Parameters
    ----------
    day : ndarray
        Time of each row [d], increasing.
    burden : ndarray
        Leukemic burden ``B = count_lsc + count_blast`` of each row [cells].
    start_day : float
        First day searched [d] (``-inf``: the whole run).

    Returns
    -------
    (nadir, nadir_day, relapse_day) : tuple of float
        ``min B`` over the rows at or after ``start_day`` [cells] and the first day it is
        reached [d]; the first day after the nadir with ``B > RELAPSE_FACTOR * max(nadir, 1)``
        [d], NaN when that does not happen within the rows (censored). All NaN when no row is
        at or after ``start_day``.
    """
    day = np.asarray(day, dtype=np.float64)
    burden = np.asarray(burden, dtype=np.float64)
    idx = np.flatnonzero(day >= start_day - 1e-9)
    if idx.size == 0:
        return math.nan, math.nan, math.nan
    k = int(idx[np.argmin(burden[idx])])  # argmin: the first index of the minimum
    nadir = float(burden[k])
    above = np.flatnonzero(burden[k + 1:] > RELAPSE_FACTOR * max(nadir, 1.0))
    relapse = float(day[k + 1 + above[0]]) if above.size else math.nan
    return nadir, float(day[k]), relapse


def endpoints(ts: dict[str, np.ndarray], treat_day: float = math.nan) -> dict[str, float]:
    """The endpoints of one run from its time series (see the module docstring)."""
    out = {k: math.nan for k in ENDPOINTS}
    t = np.asarray(ts["time_h"], dtype=np.float64)
    if t.size == 0:
        return out
    day = t / 24.0

    def last(name: str) -> float:
        col = ts.get(name)
        return float(col[-1]) if col is not None and len(col) else math.nan

    out["final_day"] = float(day[-1])
    out["final_lsc"] = last("count_lsc")
    out["final_blast"] = last("count_blast")
    out["final_leukemic_fraction"] = last("leukemic_fraction")
    out["final_stage"] = last("stage")
    out["treatment_start_day"] = treat_day
    if "count_lsc" in ts and "count_blast" in ts:
        burden = np.asarray(ts["count_lsc"], dtype=np.float64) + np.asarray(ts["count_blast"], dtype=np.float64)
        treated = math.isfinite(treat_day)
        nadir, nadir_day, relapse = nadir_and_relapse(day, burden, treat_day if treated else -math.inf)
        out["min_burden"], out["min_burden_day"] = nadir, nadir_day
        if treated:
            out["relapse_day"] = relapse
    out["final_hsc_niche_share"] = last("hsc_niche_share")
    integrity = last("arteriole_mean_integrity")
    out["arteriole_loss"] = 1.0 - integrity if math.isfinite(integrity) else math.nan
    out["arteriole_fraction_lost"] = last("arteriole_fraction_lost")
    out["final_hypoxic_fraction"] = last("o2_hypoxic_fraction")
    hours = last("cell_hours_lsc_lodged")
    for drug in ("cytarabine", "daunorubicin"):
        auc = last(f"{drug}_uM_h_lsc_lodged")
        out[f"lsc_lodged_{drug}_uM"] = auc / hours if math.isfinite(hours) and hours > 0 else math.nan
    return out
