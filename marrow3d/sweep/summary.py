"""The endpoint table of a sweep: one row per member (``summary.csv``, ``summary.parquet``).

Columns: ``member_id``, ``label``, ``seed``, the varied parameters (one column per dotted
key; lists and tables as JSON text), ``status`` (``done``, ``failed`` or ``missing``),
``error``, ``wall_s``, ``run_dir``, then the endpoints below (NaN when the member did not
finish). ``B(t) = count_lsc + count_blast`` is the leukemic burden.

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

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from .status import read_status

__all__ = ["ENDPOINTS", "RELAPSE_FACTOR", "endpoints", "treatment_start_day", "read_timeseries", "summary_table",
           "write_summary", "load_summary"]

log = logging.getLogger(__name__)

#: Relapse: the burden exceeds this multiple of its nadir (and at least this many cells).
RELAPSE_FACTOR = 10.0
DRUG_AGENTS = ("cytarabine", "daunorubicin", "plerixafor", "deferoxamine")

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

_COLUMNS = ("time_h", "count_lsc", "count_blast", "leukemic_fraction", "stage", "hsc_niche_share",
            "arteriole_mean_integrity", "arteriole_fraction_lost", "o2_hypoxic_fraction",
            "cytarabine_uM_h_lsc_lodged", "daunorubicin_uM_h_lsc_lodged", "cell_hours_lsc_lodged")


def read_timeseries(run_dir: str | Path) -> dict[str, np.ndarray]:
    """The time-series columns the endpoints need, from ``run_dir/run.h5`` (numpy arrays)."""
    try:
        from ..analysis import open_run
    except ImportError:  # pragma: no cover - analysis package absent
        open_run = None
    if open_run is not None:
        with open_run(run_dir) as run:
            df = run.timeseries
        cols = {name: df[name].to_numpy(dtype=np.float64) for name in _COLUMNS if name in df.columns}
        cols["time_h"] = df.index.to_numpy(dtype=np.float64)
        return cols
    import h5py  # pragma: no cover

    with h5py.File(Path(run_dir) / "run.h5", "r") as h5:  # pragma: no cover
        ts = h5["timeseries"]
        return {name: np.asarray(ts[name][()], dtype=np.float64) for name in _COLUMNS if name in ts}


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
        if e.get("agent") not in DRUG_AGENTS:
            continue
        for key in ("start_day", "day"):
            if e.get(key) is not None:
                starts.append(float(e[key]))
        if e.get("days"):
            starts.append(min(float(d) for d in e["days"]))
    return min(starts) if starts else math.nan


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
        window = day >= treat_day - 1e-9 if treated else np.ones_like(day, dtype=bool)
        if window.any():
            idx = np.flatnonzero(window)
            k = int(idx[np.argmin(burden[idx])])  # argmin: the first index of the minimum
            nadir = float(burden[k])
            out["min_burden"] = nadir
            out["min_burden_day"] = float(day[k])
            if treated:
                above = np.flatnonzero(burden[k + 1:] > RELAPSE_FACTOR * max(nadir, 1.0))
                if above.size:
                    out["relapse_day"] = float(day[k + 1 + above[0]])
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


def _param_columns(members: list[dict[str, Any]], keys: list[str]) -> dict[str, list[Any]]:
    """Varied values per key; a column that is not all numbers (or all strings) becomes JSON text."""
    cols: dict[str, list[Any]] = {}
    for key in keys:
        vals = [m.get("params", {}).get(key) for m in members]
        present = [v for v in vals if v is not None]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present)
        strings = all(isinstance(v, str) for v in present)
        bools = all(isinstance(v, bool) for v in present)
        if numeric:
            cols[key] = [float(v) if v is not None else math.nan for v in vals]
        elif strings or bools:
            cols[key] = vals
        else:
            cols[key] = [json.dumps(v, separators=(",", ":")) if v is not None else None for v in vals]
    return cols


def summary_table(sweep_dir: str | Path, members: list[dict[str, Any]], varied_keys: list[str]):
    """A pandas DataFrame with one row per member (read from the member directories)."""
    import pandas as pd

    sweep_dir = Path(sweep_dir)
    rows = []
    for m in members:
        run_dir = sweep_dir / "members" / m["member_id"]
        st = read_status(run_dir) or {}
        status = st.get("status", "missing")
        if status == "done" and st.get("fingerprint") != m.get("fingerprint"):
            status = "stale"
        row: dict[str, Any] = {
            "member_id": m["member_id"],
            "label": m.get("label"),
            "seed": m.get("seed"),
            "status": status,
            "error": st.get("error") if status != "done" else None,
            "wall_s": float(st["wall_s"]) if st.get("wall_s") is not None else math.nan,
            "run_dir": str(Path("members") / m["member_id"]),
        }
        if status == "missing" and m.get("error"):
            row["error"] = m["error"]
        ep = {k: math.nan for k in ENDPOINTS}
        if status == "done":
            try:
                ep = endpoints(read_timeseries(run_dir), treatment_start_day(m.get("config_toml")))
            except Exception as exc:  # noqa: BLE001 - an unreadable run is a row with its reason
                row["status"] = "unreadable"
                row["error"] = f"cannot read the time series: {' '.join(str(exc).split())}"
        row.update(ep)
        rows.append(row)
    df = pd.DataFrame(rows)
    params = _param_columns(members, varied_keys)
    front = ["member_id", "label", "seed"]
    for i, key in enumerate(params):
        df.insert(len(front) + i, key, params[key])
    if df["label"].isna().all():
        df = df.drop(columns="label")
    return df


def write_summary(sweep_dir: str | Path, members: list[dict[str, Any]], varied_keys: list[str]):
    """Write ``summary.csv`` and ``summary.parquet`` (atomically) and return the DataFrame."""
    import os

    sweep_dir = Path(sweep_dir)
    df = summary_table(sweep_dir, members, varied_keys)
    for name, write in (("summary.csv", lambda p: df.to_csv(p, index=False)),
                        ("summary.parquet", lambda p: df.to_parquet(p, index=False))):
        target = sweep_dir / name
        tmp = sweep_dir / f".{name}.tmp-{os.getpid()}"
        try:
            write(tmp)
            os.replace(tmp, target)
        except ImportError as exc:  # parquet without pyarrow: the CSV still holds everything
            log.warning("summary.parquet not written (%s); install pyarrow", exc)
        finally:
            if tmp.exists():
                tmp.unlink()
    return df


def load_summary(sweep_dir: str | Path):
    """The summary of a sweep folder: ``summary.parquet`` (else ``summary.csv``), rebuilt from
    ``sweep.json`` and the member folders when neither exists."""
    import pandas as pd

    from .errors import SweepError

    d = Path(sweep_dir)
    if (d / "summary.parquet").exists():
        try:
            return pd.read_parquet(d / "summary.parquet")
        except ImportError:
            pass
    if (d / "summary.csv").exists():
        return pd.read_csv(d / "summary.csv")
    plan_file = d / "sweep.json"
    if not plan_file.exists():
        raise SweepError(f"{str(d)!r} holds no sweep (no summary.csv or sweep.json)")
    plan = json.loads(plan_file.read_text(encoding="utf-8"))
    return write_summary(d, plan["members"], plan.get("varied_keys", []))

