"""``marrow3d export``: write a run as .vtkhdf (ParaView/pyvista) or its time series as CSV/Parquet."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import cli_errors, console, prepare_output_file

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the ``export`` command to ``app``."""

    @app.command()
    @cli_errors
    def export(
        run_dir: Path = typer.Argument(..., help="Run directory, run.h5 or checkpoint file."),
        fmt: str = typer.Option("vtkhdf", "--format", "-f", help="vtkhdf | csv | parquet."),
        out: Optional[Path] = typer.Option(
            None, "--out", "-o", help="Output file (default: next to run.h5: run.vtkhdf, run_timeseries.csv/.parquet)."
        ),
        compression: int = typer.Option(3, "--compression", min=0, max=9, help="gzip level of .vtkhdf arrays (0 = none)."),
    ) -> None:
        """Export snapshots as a .vtkhdf time series, or the time series as CSV / Parquet.

        Example: [bold]marrow3d export runs/tiny --format vtkhdf[/] then open runs/tiny/run.vtkhdf in ParaView
        """
        from ..output.export import export_run

        if out is not None:
            prepare_output_file(out)
        path = export_run(run_dir, fmt.lower(), out, compression_level=compression)
        console.print(f"[green]wrote[/] {path}", highlight=False)
