"""``marrow3d export``: a run as VTKHDF (ParaView, pyvista) or its time series as CSV / Parquet.

Every export carries units:

* VTKHDF: in the array names (``oxygen [mmHg]``), see :mod:`marrow3d.output.vtkhdf`;
* CSV: in the header, ``name [unit]`` (``time_h [h]``, ``signal_mean [su]``,
  ``count_lsc [count]``, ``leukemic_fraction [1]``), so a spreadsheet or plotting tool shows
  them; :func:`read_timeseries_csv` gives back the plain names and the units;
* Parquet: as field metadata (``units``, and ``description`` where the run states more, e.g.
  the stage codes), with the plain column names; the schema metadata ``marrow3d`` holds the
  source file, version and seed as JSON.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path

from ..errors import Marrow3DError

__all__ = ["export_run", "default_export_path", "EXPORT_FORMATS", "split_unit", "timeseries_units",
           "read_timeseries_csv"]

#: Format name -> file suffix.
EXPORT_FORMATS = {"vtkhdf": ".vtkhdf", "csv": ".csv", "parquet": ".parquet"}


def default_export_path(run_file: Path, fmt: str) -> Path:
    """Next to the run file: ``run.vtkhdf``, ``run_timeseries.csv``, ``run_timeseries.parquet``."""
    stem = run_file.stem
    if fmt == "vtkhdf":
        return run_file.with_name(f"{stem}.vtkhdf")
    return run_file.with_name(f"{stem}_timeseries{EXPORT_FORMATS[fmt]}")


def split_unit(text: str) -> tuple[str, str]:
    """Split a run file's unit text into ``(unit, description)``.

    ``"uM h (summed over cells)"`` -> ``("uM h", "summed over cells")``; the stage's code list
    ``"0 pre-leukemic, 1 permissive, ..."`` -> ``("code", "0 pre-leukemic, ...")``; a plain
    unit -> ``(unit, "")``.
    """
    text = str(text).strip()
    if re.match(r"^\d+ [A-Za-z]", text):
        return "code", text
    m = re.match(r"^(.*?)\s*\((.*)\)$", text)
    if m:
        return m.group(1).strip(), m.group(2).strip()
    return text, ""


def timeseries_units(run) -> dict[str, tuple[str, str]]:
    """``{column: (unit, description)}`` for ``time_h`` and every column of ``run.timeseries``.

    Checkpoints store no units (their history is the model's raw state): their columns get
    ``("", "")``.
    """
    units = run.units
    cols = ["time_h", *run.timeseries.columns]
    return {c: split_unit(units[c]) if c in units else ("", "") for c in cols}


def _labelled(name: str, unit: str) -> str:
    return f"{name} [{unit}]" if unit else name


def read_timeseries_csv(path: str | Path):
    """Read a CSV written by ``marrow3d export --format csv``.

    Returns
    -------
    (pandas.DataFrame, dict)
        The time series indexed by ``time_h`` with the plain column names (as
        ``RunData.timeseries``), and ``{column: unit}`` from the header.
    """
    import pandas as pd

    df = pd.read_csv(path, index_col=0)
    header = [str(df.index.name), *map(str, df.columns)]
    names, units = [], {}
    for label in header:
        m = re.match(r"^(.*?) \[(.*)\]$", label)
        name, unit = (m.group(1), m.group(2)) if m else (label, "")
        names.append(name)
        units[name] = unit
    df.index.name = names[0]
    df.columns = names[1:]
    return df, units


def _write_csv(df, units: dict[str, tuple[str, str]], target: Path) -> None:
    out = df.rename(columns={c: _labelled(c, units.get(c, ("", ""))[0]) for c in df.columns})
    out.index.name = _labelled(df.index.name, units.get(df.index.name, ("", ""))[0])
    out.to_csv(target, index=True)


def _write_parquet(df, units: dict[str, tuple[str, str]], target: Path, about: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=True)
    fields = []
    for f in table.schema:
        unit, note = units.get(f.name, ("", ""))
        meta = {b"units": unit.encode()}
        if note:
            meta[b"description"] = note.encode()
        fields.append(f.with_metadata(meta) if unit or note else f)
    schema_meta = dict(table.schema.metadata or {})
    schema_meta[b"marrow3d"] = json.dumps(about).encode()
    table = table.cast(pa.schema(fields, metadata=schema_meta))
    pq.write_table(table, target)


def _require_pyarrow() -> None:
    if importlib.util.find_spec("pyarrow") is None:
        raise Marrow3DError("parquet export needs pyarrow, which is not installed: pip install pyarrow")


def export_run(path: str | Path, fmt: str, out: str | Path | None = None, *, compression_level: int = 3) -> Path:
    """Export the run at ``path`` (directory, run.h5 or checkpoint) in format ``fmt``.

    Parameters
    ----------
    path : str or Path
        Run directory or HDF5 file (see :func:`marrow3d.analysis.open_run`).
    fmt : {"vtkhdf", "csv", "parquet"}
        ``vtkhdf``: every snapshot and the final state as an ImageData time series (voxels as
        cells, um; units in the array names). ``csv`` / ``parquet``: the time series, one row
        per step, ``time_h`` first, with units (see the module docstring).
    out : str or Path, optional
        Output file (default: next to the run file, see :func:`default_export_path`).

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    Marrow3DError
        Unknown format, unreadable run (CheckpointError), or pyarrow missing for parquet.
    """
    from ..analysis import open_run

    if fmt not in EXPORT_FORMATS:
        raise Marrow3DError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    if fmt == "parquet":
        _require_pyarrow()
    with open_run(path) as run:
        target = Path(out) if out is not None else default_export_path(run.path, fmt)
        if target.exists() and target.is_dir():
            raise Marrow3DError(f"--out {str(target)!r} is a directory; give a file name")
        if fmt == "vtkhdf":
            from .vtkhdf import write_vtkhdf

            return write_vtkhdf(run, target, compression_level=compression_level)
        df = run.timeseries
        units = timeseries_units(run)
        about = {"source": str(run.path), "marrow3d_version": run.meta.get("marrow3d_version", ""),
                 "seed": run.meta.get("seed"), "time_units": "h"}
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        if fmt == "csv":
            _write_csv(df, units, tmp)
        else:
            _write_parquet(df, units, tmp, about)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target
