"""``marrow3d export``: a run as VTKHDF (ParaView, pyvista) or its time series as CSV / Parquet."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ..errors import Marrow3DError

__all__ = ["export_run", "default_export_path", "EXPORT_FORMATS"]

#: Format name -> file suffix.
EXPORT_FORMATS = {"vtkhdf": ".vtkhdf", "csv": ".csv", "parquet": ".parquet"}


def default_export_path(run_file: Path, fmt: str) -> Path:
    """Next to the run file: ``run.vtkhdf``, ``run_timeseries.csv``, ``run_timeseries.parquet``."""
    stem = run_file.stem
    if fmt == "vtkhdf":
        return run_file.with_name(f"{stem}.vtkhdf")
    return run_file.with_name(f"{stem}_timeseries{EXPORT_FORMATS[fmt]}")


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
        cells, um). ``csv`` / ``parquet``: the time series, one row per step, ``time_h`` first.
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
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        if fmt == "csv":
            df.to_csv(tmp, index=True)
        else:
            df.to_parquet(tmp, engine="pyarrow", index=True)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target
