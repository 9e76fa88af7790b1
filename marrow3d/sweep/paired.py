"""Paired comparison of a sweep's named arms against a control arm, by seed.

``marrow3d sweep-report DIR`` (with an ``[experiment]`` table in the spec, or ``--paired ARM``)
writes, next to the summary:

``paired_members.csv``, ``paired_members.parquet``
    One row per finished member: ``member_id``, ``arm``, ``seed``, the endpoints below and
    ``missing_readouts`` (time-series columns an endpoint needs that the run lacks).
``paired.csv``, ``paired.parquet``, ``paired.md``
    One row per (endpoint, arm other than the control): the statistics of
    :mod:`marrow3d.analysis.paired` on the per-seed differences ``arm - control``, the
    censoring counts of time to relapse, and a ``note`` saying why an endpoint is n/a.

Endpoints (days from the spec's ``[experiment]``; ``EOI`` = ``end_of_induction_day``, ``FU`` =
``EOI + followup_days``; a value "on day D" is the last time-series row at or before D, NaN
when the run ended earlier):

``lsc_lodged_eoi``, ``lsc_free_eoi``, ``lsc_eoi`` (and ``_fu``)
    Surviving LSCs on a niche slot (``lodged_lsc``), off one (``count_lsc - lodged_lsc``) and
    all of them [cells].
``relapse_free_days``
    Time to relapse from ``induction_start_day`` [d], restricted to the run: the burden
    ``B = count_lsc + count_blast`` has its nadir on or after induction start; relapse is the
    first later row with ``B > RELAPSE_FACTOR * max(nadir, 1)`` (the sweep summary's
    definition, :func:`marrow3d.analysis.run_endpoints.nadir_and_relapse`). A run without
    relapse by its last row is censored and counts as the time to its end
    (:func:`marrow3d.analysis.paired.restricted_time`); ``relapse_censored`` is 1 for those.
    NaN for a run with no cytotoxic drug (no induction to relapse from).
``lsc_to_blast_cytarabine``, ``lsc_to_blast_daunorubicin``
    Drug level seen by lodged LSCs over that seen by blasts in the same steps, over the
    therapy window (:func:`marrow3d.analysis.endpoints.matched_exposure_ratio`; the AUC
    categories ``lsc_lodged`` and ``blast`` of ``kernels/cells_metrics.py``). Below 1: lodged
    LSCs sat where less drug reached.
``endosteal_cytarabine_uM``, ``endosteal_daunorubicin_uM``
    Mean tissue level in the endosteal band over the therapy window [uM]
    (:func:`marrow3d.analysis.endpoints.compare_endpoints`). Arms with the same cytotoxic
    schedule have the same window, so these compare like time integrals.
``hsc_niche_share_eoi``, ``hsc_niche_share_fu``
    Niche slots held by a lodged HSC, of all slots.
``conditioned_slot_share_eoi``, ``conditioned_slot_share_fu``
    Conditioned niche slots, of all slots: the time-series column ``conditioned_slot_share``,
    else ``sum(niche_<kind>_conditioned) / sum(niche_<kind>_slots)`` over the niche kinds
    (endosteal, perivascular); n/a for runs that have neither (no conditioning readout).
``<column>_eoi``, ``<column>_fu``
    Every extra time-series column named in ``[experiment] columns`` (n/a when absent).

To add an endpoint read from the time series on both days, add its column to
:data:`AT_DAY_COLUMNS` (or derive it in :func:`derived_columns`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..analysis.paired import STAT_COLUMNS, paired_stats, restricted_time
from ..analysis.run_endpoints import nadir_and_relapse
from .errors import SweepError

__all__ = ["ExperimentDays", "AT_DAY_COLUMNS", "WINDOW_ENDPOINTS", "derived_columns", "member_endpoints",
           "endpoint_names", "members_table", "paired_table", "markdown_table", "write_paired", "experiment_of"]

#: Time-series columns read on the end-of-induction and follow-up days: column -> label.
AT_DAY_COLUMNS = {
    "lodged_lsc": ("lsc_lodged", "lodged LSCs"),
    "free_lsc": ("lsc_free", "free LSCs"),
    "count_lsc": ("lsc", "all LSCs"),
    "hsc_niche_share": ("hsc_niche_share", "HSC niche share"),
    "conditioned_slot_share": ("conditioned_slot_share", "conditioned-slot share"),
}
#: Endpoints over the therapy window (from :func:`marrow3d.analysis.endpoints.compare_endpoints`): name -> label.
WINDOW_ENDPOINTS = {
    "lsc_to_blast_cytarabine": "lodged-LSC / blast cytarabine, matched times",
    "lsc_to_blast_daunorubicin": "lodged-LSC / blast daunorubicin, matched times",
    "endosteal_cytarabine_uM": "endosteal cytarabine, window mean (uM)",
    "endosteal_daunorubicin_uM": "endosteal daunorubicin, window mean (uM)",
}
#: The time-series columns each window endpoint needs.
_WINDOW_NEEDS = {
    "lsc_to_blast_cytarabine": ("cytarabine_uM_h_lsc_lodged", "cytarabine_uM_h_blast"),
    "lsc_to_blast_daunorubicin": ("daunorubicin_uM_h_lsc_lodged", "daunorubicin_uM_h_blast"),
    "endosteal_cytarabine_uM": ("cytarabine_tissue_uM_mean_endosteal",),
    "endosteal_daunorubicin_uM": ("daunorubicin_tissue_uM_mean_endosteal",),
}
_NICHE_KINDS = ("endosteal", "perivascular")


@dataclass(frozen=True)
class ExperimentDays:
    """The days and extra readouts of a paired comparison (the spec's ``[experiment]``)."""

    induction_start_day: float
    end_of_induction_day: float
    followup_days: float
    columns: tuple[str, ...] = field(default_factory=tuple)

    @property
    def followup_day(self) -> float:
        return self.end_of_induction_day + self.followup_days


def derived_columns(df):
    """``df`` with the derived readouts added where their inputs exist: ``free_lsc`` and
    ``conditioned_slot_share`` (see the module docstring). Returns a new frame."""
    df = df.copy()
    if "count_lsc" in df.columns and "lodged_lsc" in df.columns and "free_lsc" not in df.columns:
        df["free_lsc"] = df["count_lsc"] - df["lodged_lsc"]
    cond = [f"niche_{k}_conditioned" for k in _NICHE_KINDS]
    slots = [f"niche_{k}_slots" for k in _NICHE_KINDS]
    if "conditioned_slot_share" not in df.columns and all(c in df.columns for c in cond + slots):
        total = df[slots].sum(axis=1).to_numpy(dtype=np.float64)
        held = df[cond].sum(axis=1).to_numpy(dtype=np.float64)
        df["conditioned_slot_share"] = np.divide(held, total, out=np.full_like(held, np.nan), where=total > 0)
    return df


def _at_day(df, column: str, day: float) -> float:
    """Value of ``column`` on the last row at or before ``day`` (NaN if the run ended earlier)."""
    time_h = np.asarray(df.index, dtype=np.float64)
    if time_h.size == 0 or time_h[-1] < day * 24.0 - 1e-6:
        return math.nan
    k = int(np.searchsorted(time_h, day * 24.0 + 1e-6, side="right")) - 1
    return float(df[column].iloc[k]) if k >= 0 else math.nan


def _at_day_columns(exp: ExperimentDays) -> dict[str, tuple[str, str]]:
    """Time-series column -> (endpoint stem, label) of every reading on the two days: the
    built-in ones, then the spec's extra ``columns`` (those whose stem is already taken are
    the built-in readings themselves, or would collide, and are skipped)."""
    out = dict(AT_DAY_COLUMNS)
    stems = {stem for stem, _ in out.values()}
    for c in exp.columns:
        if c not in out and c not in stems:
            out[c] = (c, c)
            stems.add(c)
    return out


def endpoint_names(exp: ExperimentDays) -> dict[str, str]:
    """Every endpoint of ``exp``, in table order: name -> label."""
    out: dict[str, str] = {}
    at_day = _at_day_columns(exp)
    for when, day in (("eoi", exp.end_of_induction_day), ("fu", exp.followup_day)):
        for name, label in at_day.values():
            out[f"{name}_{when}"] = f"{label}, day {day:g}"
        if when == "eoi":
            out["relapse_free_days"] = f"time to relapse from day {exp.induction_start_day:g} (d, restricted)"
            out.update(WINDOW_ENDPOINTS)
    return out


def member_endpoints(df, exp: ExperimentDays) -> tuple[dict[str, float], list[str]]:
    """The endpoints of one run's time series (``RunData.timeseries``: indexed by ``time_h``).

    Returns
    -------
    (values, missing)
        Endpoint name -> value (NaN where undefined), and the time-series columns that
        endpoints needed and the run lacks.
    """
    from ..analysis.endpoints import compare_endpoints, therapy_window

    df = derived_columns(df)
    values: dict[str, float] = {k: math.nan for k in endpoint_names(exp)}
    missing: list[str] = []
    for column, (name, _) in _at_day_columns(exp).items():
        if column not in df.columns:
            missing.append(column)
            continue
        values[f"{name}_eoi"] = _at_day(df, column, exp.end_of_induction_day)
        values[f"{name}_fu"] = _at_day(df, column, exp.followup_day)
    values["relapse_censored"] = math.nan
    if "count_lsc" in df.columns and "count_blast" in df.columns and len(df):
        if therapy_window(df) is not None:
            day = np.asarray(df.index, dtype=np.float64) / 24.0
            burden = df["count_lsc"].to_numpy(dtype=np.float64) + df["count_blast"].to_numpy(dtype=np.float64)
            _, _, relapse = nadir_and_relapse(day, burden, exp.induction_start_day)
            if day[-1] >= exp.induction_start_day:
                t, censored = restricted_time(np.array([relapse - exp.induction_start_day]),
                                              np.array([day[-1] - exp.induction_start_day]))
                values["relapse_free_days"] = float(t[0])
                values["relapse_censored"] = float(censored[0])
    else:
        missing.extend(c for c in ("count_lsc", "count_blast") if c not in df.columns)
    window = compare_endpoints(df)
    for name in WINDOW_ENDPOINTS:
        values[name] = float(window[name])
        missing.extend(c for c in _WINDOW_NEEDS[name] if c not in df.columns)
    return values, sorted(set(missing))


def experiment_of(sweep_dir: Path) -> ExperimentDays | None:
    """The ``[experiment]`` days recorded in ``DIR/sweep.json`` (None when the spec had none)."""
    plan_file = Path(sweep_dir) / "sweep.json"
    if not plan_file.exists():
        return None
    exp = json.loads(plan_file.read_text(encoding="utf-8")).get("experiment")
    if not exp:
        return None
    return ExperimentDays(float(exp["induction_start_day"]), float(exp["end_of_induction_day"]),
                          float(exp["followup_days"]), tuple(exp.get("columns") or ()))


def members_table(sweep_dir: str | Path, exp: ExperimentDays):
    """One row per finished member of the sweep in ``sweep_dir`` with its endpoints."""
    import pandas as pd

    from ..analysis import open_run
    from .summary import load_summary

    sweep_dir = Path(sweep_dir)
    summary = load_summary(sweep_dir)
    if "label" not in summary.columns or summary["label"].isna().all():
        raise SweepError(f"{str(sweep_dir)!r}: the sweep's points have no names; a paired comparison needs "
                         "arms named in [vary] lists")
    rows = []
    for r in summary.itertuples(index=False):
        if r.status != "done" or not isinstance(r.label, str):
            continue
        with open_run(sweep_dir / r.run_dir) as run:
            values, missing = member_endpoints(run.timeseries, exp)
        rows.append({"member_id": r.member_id, "arm": r.label, "seed": int(r.seed), **values,
                     "missing_readouts": ";".join(missing)})
    cols = ["member_id", "arm", "seed", *endpoint_names(exp), "relapse_censored", "missing_readouts"]
    return pd.DataFrame(rows, columns=cols)


def _note(members, name: str, exp: ExperimentDays, arm: str, control: str) -> str:
    """Why an endpoint has no pair (``n = 0``)."""
    sub = members[members["arm"].isin([arm, control])]
    if sub.empty:
        return "n/a: no finished member in these arms"
    needed = {f"{stem}_{w}": col for col, (stem, _) in _at_day_columns(exp).items() for w in ("eoi", "fu")}
    cols = (needed[name],) if name in needed else _WINDOW_NEEDS.get(name, ("count_lsc", "count_blast"))
    lacking = [c for c in cols if sub["missing_readouts"].str.split(";").map(lambda m: c in m).all()]
    if lacking:
        return f"n/a: no run has the time-series column {lacking[0]!r}"
    if name == "relapse_free_days" or name in WINDOW_ENDPOINTS:
        return "n/a: needs a cytotoxic therapy in both arms"
    return "n/a: no seed has a value in both arms (a run ended before the day?)"


def paired_table(members, control: str, exp: ExperimentDays, arms: list[str] | None = None):
    """Paired statistics of every endpoint, each arm against ``control`` (one row per pair)."""
    import pandas as pd

    known = list(dict.fromkeys(members["arm"]))
    if control not in known:
        raise SweepError(f"control arm {control!r}: no finished member is in an arm of that name "
                         f"(finished arms: {', '.join(repr(a) for a in known) or 'none'})")
    if arms is None:
        arms = [a for a in known if a != control]
    bad = [a for a in arms if a not in known]
    if bad:
        raise SweepError(f"experiment.arms: no finished member is in an arm named {bad[0]!r} "
                         f"(finished arms: {', '.join(map(repr, known))})")
    dup = members[members.duplicated(["arm", "seed"])]
    if len(dup):
        raise SweepError(f"arm {dup['arm'].iloc[0]!r} has several members for seed {int(dup['seed'].iloc[0])}; "
                         "a paired comparison needs one member per arm and seed")
    names = endpoint_names(exp)
    ctrl = members[members["arm"] == control].set_index("seed")
    rows = []
    for arm in arms:
        sub = members[members["arm"] == arm].set_index("seed")
        seeds = sorted(set(sub.index) & set(ctrl.index))
        for name, label in names.items():
            a = sub.loc[seeds, name].to_numpy(dtype=np.float64) if seeds else np.array([])
            c = ctrl.loc[seeds, name].to_numpy(dtype=np.float64) if seeds else np.array([])
            st = paired_stats(a, c)
            row: dict[str, Any] = {"endpoint": name, "label": label, "arm": arm, "control": control, **st}
            row["censored_arm"] = row["censored_control"] = math.nan
            if name == "relapse_free_days" and seeds:
                ok = np.isfinite(a) & np.isfinite(c)
                row["censored_arm"] = int(np.nansum(sub.loc[seeds, "relapse_censored"].to_numpy(float)[ok]))
                row["censored_control"] = int(np.nansum(ctrl.loc[seeds, "relapse_censored"].to_numpy(float)[ok]))
            row["note"] = _note(members, name, exp, arm, control) if st["n"] == 0 else ""
            rows.append(row)
    cols = ["endpoint", "label", "arm", "control", *STAT_COLUMNS, "censored_arm", "censored_control", "note"]
    return pd.DataFrame(rows, columns=cols)


def _g(x: float) -> str:
    return "—" if not np.isfinite(x) else f"{x:.3g}"


def markdown_table(table, exp: ExperimentDays, name: str = "") -> str:
    """``table`` (:func:`paired_table`) as a Markdown document."""
    control = table["control"].iloc[0] if len(table) else ""
    lines = [
        f"# Paired differences against {control}{': ' + name if name else ''}",
        "",
        f"Per seed, arm minus {control} on the same seed's history; n = seeds with both values. "
        f"End of induction: day {exp.end_of_induction_day:g}; follow-up: day {exp.followup_day:g}. "
        f"Time to relapse from day {exp.induction_start_day:g}: first day after the burden nadir with "
        "LSC+blast > 10 x max(nadir, 1); runs without relapse are censored at their end and count as that "
        "time (restricted time; 'cens.' = censored runs in arm / control). Intervals are 95%: t on the "
        "paired differences, and a percentile bootstrap over seeds; +/0/- counts seeds by the sign of the "
        "difference, p(sign) is the two-sided sign test.",
        "",
        f"| endpoint | arm | n | arm mean | {control} mean | mean diff [95% t CI] | bootstrap 95% CI | +/0/- | "
        "p (t) | p (sign) | cens. |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples(index=False):
        if r.n == 0:
            lines.append(f"| {r.label} | {r.arm} | 0 | {r.note} | | | | | | | |")
            continue
        cens = (f"{int(r.censored_arm)} / {int(r.censored_control)}"
                if np.isfinite(r.censored_arm) else "")
        lines.append(
            f"| {r.label} | {r.arm} | {int(r.n)} | {_g(r.arm_mean)} | {_g(r.control_mean)} | "
            f"{_g(r.mean_diff)} [{_g(r.t_low)}, {_g(r.t_high)}] | [{_g(r.boot_low)}, {_g(r.boot_high)}] | "
            f"{int(r.n_pos)}/{int(r.n_zero)}/{int(r.n_neg)} | {_g(r.p_t)} | {_g(r.p_sign)} | {cens} |"
        )
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, write) -> None:
    import os

    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_paired(sweep_dir: str | Path, control: str | None = None) -> tuple[Path, Any]:
    """Write the member and paired tables of the sweep in ``sweep_dir`` (see the module docstring).

    Parameters
    ----------
    sweep_dir : path
        A finished (or partly finished) sweep folder whose spec has an ``[experiment]`` table.
    control : str, optional
        The reference arm (default: the spec's ``experiment.control``).

    Returns
    -------
    (Path, DataFrame)
        ``DIR/paired.md`` and the paired table.

    Raises
    ------
    SweepError
        No ``[experiment]`` table, unnamed arms, or an arm name that no finished member has.
    """
    sweep_dir = Path(sweep_dir)
    plan_file = sweep_dir / "sweep.json"
    if not plan_file.exists():
        raise SweepError(f"{str(sweep_dir)!r} holds no sweep (no sweep.json)")
    plan = json.loads(plan_file.read_text(encoding="utf-8"))
    exp = experiment_of(sweep_dir)
    if exp is None:
        raise SweepError(f"{str(sweep_dir)!r}: the sweep's spec has no [experiment] table (the induction days "
                         "the paired endpoints are read on); add one and rerun the sweep command")
    spec_exp = plan["experiment"]
    control = control if control is not None else spec_exp["control"]
    arms = spec_exp.get("arms") if control == spec_exp["control"] else None
    members = members_table(sweep_dir, exp)
    table = paired_table(members, control, exp, arms)
    for df, stem in ((members, "paired_members"), (table, "paired")):
        _write_atomic(sweep_dir / f"{stem}.csv", lambda p, df=df: df.to_csv(p, index=False))
        try:
            _write_atomic(sweep_dir / f"{stem}.parquet", lambda p, df=df: df.to_parquet(p, index=False))
        except ImportError:  # pragma: no cover - parquet without pyarrow: the CSV holds everything
            pass
    md = sweep_dir / "paired.md"
    _write_atomic(md, lambda p: p.write_text(markdown_table(table, exp, plan.get("name") or ""), encoding="utf-8"))
    return md, table
