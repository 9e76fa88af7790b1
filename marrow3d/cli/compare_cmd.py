"""``marrow3d compare``: one report (Markdown + PNGs, and a single-file HTML) of several runs."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .common import cli_errors, console

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the ``compare`` command to the ``marrow3d`` app."""

    @app.command()
    @cli_errors
    def compare(
        run_dirs: List[Path] = typer.Argument(..., help="Run directories (holding run.h5), in report order."),
        out: Path = typer.Option(..., "--out", "-o",
                                 help="Report folder: report.md, report.html, endpoints.csv, PNGs."),
        days: Optional[str] = typer.Option(
            None, "--days",
            help="Days to render, comma-separated: numbers and start, therapy (first snapshot on therapy), "
                 "end (each run's final state); default start,therapy,end."),
        labels: Optional[str] = typer.Option(None, "--labels",
                                             help="One label per run, comma-separated (default: folder names)."),
        title: Optional[str] = typer.Option(None, "--title", help="Report title."),
        size: str = typer.Option("640x480", "--size", help="Size of each render, WIDTHxHEIGHT in pixels."),
        no_renders: bool = typer.Option(False, "--no-renders",
                                        help="Tables and plots only (no 3D renders, no OpenGL)."),
    ) -> None:
        """Compare runs side by side in one report: endpoints, time series and matched renders.

        Writes OUT/report.md with its PNGs next to it, and the same as one file,
        OUT/report.html (figures embedded); OUT/endpoints.csv has one row per run.
        Renders share one colour scale per quantity across the runs.
        Days before a branch point are drawn from the run it was branched from.

        Example: [bold]marrow3d compare runs/arm73 runs/arm73_dfo --out report --labels 7+3,7+3+DFO --days 0,15,28[/]
        """
        from rich.progress import Progress

        from ..viz.report import make_compare_report

        bar = Progress(console=console, transient=True)
        task = None

        def progress(k: int, total: int, what: str) -> None:
            nonlocal task
            if not console.is_terminal:
                return
            if task is None:
                bar.start()
                task = bar.add_task("rendering", total=total)
            bar.update(task, completed=k, description=f"rendering {what}")

        try:
            result = make_compare_report(run_dirs, out, days=days, labels=labels, title=title, size=size,
                                         renders=not no_renders, progress=progress)
        finally:
            if task is not None:
                bar.stop()
        console.print(f"[green]wrote[/] {result}")
