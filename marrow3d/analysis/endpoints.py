"""Endpoints of one run for side-by-side comparison (``marrow3d compare``).

Computed from the time series of ``run.h5`` alone (no per-voxel data), so they are cheap and
match what ``marrow3d plot`` draws. The shared core (final counts, burden nadir, relapse
day, final niche share, vessel loss, hypoxic fraction) comes from
:func:`marrow3d.analysis.run_endpoints.endpoints`, the function behind a sweep's ``summary.csv``, so a
compare and a sweep report the same numbers for the same run; this module adds the
therapy-window readouts.

Definitions (``B = count_lsc + count_blast`` is the leukemic burden):

*Therapy window.* It opens at the first time-series row where a cytotoxic plasma level
(``plasma_cytarabine_uM`` or ``plasma_daunorubicin_uM``) is above zero and closes at the last
row where one of them is still at least :data:`THERAPY_END_FRACTION` of its own peak in the
run (the end of dosing plus the washout; at most the end of the run). Plerixafor and
deferoxamine do not open it: they do not kill cells, and a vessel-preservation course that
starts two weeks before induction would otherwise move the start of "therapy" to a marrow
with hardly any blasts. Untreated runs have no window (NaN).

``therapy_start_day``, ``therapy_end_day``
    The window, in days.
``final_lsc``, ``final_blast``, ``final_burden``
    Last row of ``count_lsc``, ``count_blast`` and their sum.
``min_burden``, ``min_burden_day``
    Minimum of ``B`` over the rows from the start of therapy on (the whole run when
    untreated) and the first day it is reached (sweep definition).
``blast_at_therapy_start``, ``min_blast``, ``min_blast_day``
    Blasts on the last row before the window opens, and their minimum from the start of
    therapy on.
``log10_blast_reduction``
    ``log10(max(blast_at_therapy_start, 1) / max(min_blast, 1))``: counts are floored at one
    cell (the detection limit of a simulated domain), so eradication of 1000 blasts is 3.
``relapse_fold``
    ``final_burden / max(min_burden, 1)``: regrowth from the nadir to the end (treated runs).
``relapse_day``
    First day after the nadir with ``B > 10 x max(min_burden, 1)`` (sweep definition); NaN
    when untreated or not within the run.
``final_hsc_niche_share``, ``final_lsc_niche_share``
    Last row of ``hsc_niche_share`` / ``lsc_niche_share`` (niche slots held by lodged HSCs /
    LSCs, of all slots).
``arteriole_mean_integrity``, ``arteriole_fraction_lost``
    Last row: mean arteriole integrity and the fraction of arteriole voxels below the floor.
``final_hypoxic_fraction``, ``final_endosteal_hypoxic_fraction``
    Last row of ``o2_hypoxic_fraction`` (marrow) and ``o2_endosteal_hypoxic_fraction``.
``endosteal_cytarabine_uM``, ``endosteal_daunorubicin_uM``
    Mean of ``<drug>_tissue_uM_mean_endosteal`` over the rows of the therapy window.
``lsc_lodged_cytarabine_uM``, ``blast_cytarabine_uM``
    Time-averaged cytarabine a lodged LSC / a blast saw during therapy:
    ``delta(cytarabine_uM_h_<cat>) / delta(cell_hours_<cat>)`` between the last row before
    the window and its last row (NaN when no such cell was counted in the window). Each is
    averaged over its own cells' hours, so the two weigh the window's days differently: lodged
    LSCs that outlive a bolus while blasts die during it average lower without ever having
    seen less drug. Compare places with the matched ratios below.
``lsc_to_blast_cytarabine``, ``lsc_to_blast_daunorubicin``
    Time-matched exposure ratio: per time-series row, the level lodged LSCs saw over the level
    blasts saw in the same step (each ``delta(<drug>_uM_h_<cat>) / delta(cell_hours_<cat>)``
    over that row), averaged over the window's rows weighted by the lodged-LSC hours; rows
    without lodged LSCs, blasts or blast exposure are skipped. Below 1: lodged LSCs sat where
    less drug reached than where the blasts were.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .run_endpoints import endpoints as series_endpoints

__all__ = ["ENDPOINT_COLUMNS", "CYTOTOXIC_DRUGS", "THERAPY_END_FRACTION", "therapy_window", "compare_endpoints",
           "matched_exposure_ratio", "run_endpoints", "endpoints_table"]

#: Plasma levels that open the therapy window.
CYTOTOXIC_DRUGS = ("cytarabine", "daunorubicin")
#: The window closes when every cytotoxic plasma level is below this fraction of its peak.
THERAPY_END_FRACTION = 0.01

#: Columns of :func:`compare_endpoints`, in order.
ENDPOINT_COLUMNS = (
    "final_day",
    "final_stage",
    "therapy_start_day",
    "therapy_end_day",
    "final_lsc",
    "final_blast",
    "final_burden",
    "min_burden",
    "min_burden_day",
    "blast_at_therapy_start",
    "min_blast",
    "min_blast_day",
    "log10_blast_reduction",
    "relapse_fold",
    "relapse_day",
    "final_hsc_niche_share",
    "final_lsc_niche_share",
    "arteriole_mean_integrity",
    "arteriole_fraction_lost",
    "final_hypoxic_fraction",
    "final_endosteal_hypoxic_fraction",
    "endosteal_cytarabine_uM",
    "endosteal_daunorubicin_uM",
    "lsc_lodged_cytarabine_uM",
    "blast_cytarabine_uM",
    "lsc_to_blast_cytarabine",
    "lsc_to_blast_daunorubicin",
)

_NAN = float("nan")


def _col(df: pd.DataFrame, name: str) -> np.ndarray | None:
    return df[name].to_numpy(dtype=np.float64) if name in df.columns else None


def matched_exposure_ratio(df: pd.DataFrame, drug: str, base: int, last: int) -> float:
    """Lodged-LSC over blast drug level at matched times, rows ``base+1 .. last`` (see above).

    Parameters
    ----------
    df : DataFrame
        Time series with the cumulative ``<drug>_uM_h_<cat>`` [uM h, summed over cells] and
        ``cell_hours_<cat>`` [cell h] columns of ``lsc_lodged`` and ``blast``.
    drug : str
        ``"cytarabine"`` or ``"daunorubicin"``.
    base, last : int
        Row positions: increments are taken from ``base`` to ``last``.

    Returns
    -------
    float
        The lodged-LSC-hour-weighted mean of the per-row level ratio (dimensionless), NaN when
        no row has both cell kinds and blast exposure or a column is missing.
    """
    cols = [f"{drug}_uM_h_lsc_lodged", "cell_hours_lsc_lodged", f"{drug}_uM_h_blast", "cell_hours_blast"]
    if any(c not in df.columns for c in cols):
        return _NAN
    a_l, h_l, a_b, h_b = (np.diff(np.nan_to_num(_col(df, c)[base:last + 1])) for c in cols)
    ok = (h_l > 0) & (h_b > 0) & (a_b > 0)
    if not ok.any():
        return _NAN
    ratio = (a_l[ok] / h_l[ok]) / (a_b[ok] / h_b[ok])
    return float(np.sum(h_l[ok] * ratio) / np.sum(h_l[ok]))


def therapy_window(df: pd.DataFrame) -> tuple[int, int] | None:
    """Row positions ``(first, last)`` of the therapy window of a time series, or None.

    See the module docstring: first row with a cytotoxic plasma level above zero, last row
    with one at or above :data:`THERAPY_END_FRACTION` of its peak.
    """
    first, last = None, None
    for drug in CYTOTOXIC_DRUGS:
        plasma = _col(df, f"plasma_{drug}_uM")
        if plasma is None:
            continue
        plasma = np.nan_to_num(plasma, nan=0.0)  # NaN before a branch that added the drug
        on = np.flatnonzero(plasma > 0)
        if on.size == 0:
            continue
        peak = float(plasma.max())
        high = np.flatnonzero(plasma >= THERAPY_END_FRACTION * peak)
        first = int(on[0]) if first is None else min(first, int(on[0]))
        last = int(high[-1]) if last is None else max(last, int(high[-1]))
    if first is None or last is None:
        return None
    return first, max(first, last)


def compare_endpoints(df: pd.DataFrame) -> dict[str, float]:
    """Endpoints (:data:`ENDPOINT_COLUMNS`) of one time series (``RunData.timeseries``)."""
    out: dict[str, float] = {k: _NAN for k in ENDPOINT_COLUMNS}
    if len(df) == 0:
        return out
    time_h = np.asarray(df.index, dtype=np.float64)
    day = time_h / 24.0
    window = therapy_window(df)
    start_day = float(day[window[0]]) if window else _NAN

    ts = {name: df[name].to_numpy(dtype=np.float64) for name in df.columns if name != "day"}
    ts["time_h"] = time_h
    core = series_endpoints(ts, start_day)
    for key in ("final_day", "final_stage", "final_lsc", "final_blast", "min_burden", "min_burden_day",
                "relapse_day", "final_hsc_niche_share", "arteriole_fraction_lost", "final_hypoxic_fraction"):
        out[key] = core[key]

    def last(name: str) -> float:
        v = _col(df, name)
        return float(v[-1]) if v is not None else _NAN

    out["final_burden"] = out["final_lsc"] + out["final_blast"]
    out["final_lsc_niche_share"] = last("lsc_niche_share")
    out["arteriole_mean_integrity"] = last("arteriole_mean_integrity")
    out["final_endosteal_hypoxic_fraction"] = last("o2_endosteal_hypoxic_fraction")
    if window is None:
        return out

    k0, k1 = window
    base = max(k0 - 1, 0)  # the last row before the first dosed row
    out["therapy_start_day"] = start_day
    out["therapy_end_day"] = float(day[k1])
    blast = _col(df, "count_blast")
    if blast is not None:
        after = blast[k0:]
        j = int(np.argmin(after))
        out["blast_at_therapy_start"] = float(blast[base])
        out["min_blast"] = float(after[j])
        out["min_blast_day"] = float(day[k0 + j])
        out["log10_blast_reduction"] = math.log10(max(float(blast[base]), 1.0) / max(float(after[j]), 1.0))
    if math.isfinite(out["min_burden"]):
        out["relapse_fold"] = out["final_burden"] / max(out["min_burden"], 1.0)
    for drug in CYTOTOXIC_DRUGS:
        endo = _col(df, f"{drug}_tissue_uM_mean_endosteal")
        if endo is not None:
            vals = endo[k0:k1 + 1]
            vals = vals[np.isfinite(vals)]
            out[f"endosteal_{drug}_uM"] = float(vals.mean()) if vals.size else _NAN
        out[f"lsc_to_blast_{drug}"] = matched_exposure_ratio(df, drug, base, k1)
    for cat, key in (("lsc_lodged", "lsc_lodged_cytarabine_uM"), ("blast", "blast_cytarabine_uM")):
        auc = _col(df, f"cytarabine_uM_h_{cat}")
        hours = _col(df, f"cell_hours_{cat}")
        if auc is None or hours is None:
            continue
        d_auc = float(np.nan_to_num(auc[k1]) - np.nan_to_num(auc[base]))
        d_hours = float(np.nan_to_num(hours[k1]) - np.nan_to_num(hours[base]))
        out[key] = d_auc / d_hours if d_hours > 0 else _NAN
    return out


def run_endpoints(run: Any) -> dict[str, float]:
    """:func:`compare_endpoints` of a run directory, ``run.h5`` or open :class:`RunData`."""
    from .rundata import RunData, open_run

    if isinstance(run, RunData):
        return compare_endpoints(run.timeseries)
    with open_run(run) as r:
        return compare_endpoints(r.timeseries)


def endpoints_table(runs: list[str | Path], labels: list[str] | None = None) -> pd.DataFrame:
    """One row per run (index: label, default the directory name), :data:`ENDPOINT_COLUMNS`."""
    names = labels if labels is not None else [Path(r).name for r in runs]
    if len(names) != len(runs):
        raise ValueError(f"{len(names)} labels for {len(runs)} runs")
    rows = [run_endpoints(r) for r in runs]
    df = pd.DataFrame(rows, columns=list(ENDPOINT_COLUMNS), index=pd.Index(names, name="run"))
    return df
