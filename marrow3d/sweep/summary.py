"""The endpoint table of a sweep: one row per member (``summary.csv``, ``summary.parquet``).

Columns: ``member_id``, ``label``, ``seed``, the varied parameters (one column per dotted
key; lists and tables as JSON text), ``status`` (``done``, ``failed`` or ``missing``),
``error``, ``wall_s``, ``run_dir``, then the endpoints of the run (NaN when the member did not
finish). ``B(t) = count_lsc + count_blast`` is the leukemic burden.

The endpoints and their definitions: :mod:`marrow3d.analysis.run_endpoints`.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..analysis.run_endpoints import (
    ENDPOINT_INPUTS,
    ENDPOINTS,
    RELAPSE_FACTOR,
    endpoints,
    treatment_start_day,
)
from .status import read_status

__all__ = ["ENDPOINTS", "RELAPSE_FACTOR", "endpoints", "treatment_start_day", "read_timeseries", "summary_table",
           "write_summary", "load_summary"]

log = logging.getLogger(__name__)

_COLUMNS = ENDPOINT_INPUTS


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

