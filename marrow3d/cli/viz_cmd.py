"""Visualisation commands: ``render``, ``movie``, ``view`` and ``plot``.

They read finished (or running) runs through :mod:`marrow3d.analysis` and never simulate.
Rendering is off screen except for ``view``; pyvista and matplotlib are imported lazily.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .common import cli_errors, console, prepare_output_file

__all__ = ["register"]

_SHOW_HELP = "oxygen | drug (or cytarabine, daunorubicin) | signal | cells | niches | vessels | integrity."
_SLICE_HELP = "Axis-aligned plane(s) instead of a volume: x, y or z, optionally =POSITION_UM (e.g. z=150); repeatable."
_CAMERA_HELP = "iso | xy | xz | yz (default: facing a single --slice axis, else iso)."
_CLIM_HELP = "Colour range LO,HI in the field's units, replacing the fixed scale (e.g. 8,18 for pO2)."


def _parse_clim(text: Optional[str]):
    if text is None:
        return None
    from ..viz._gl import RenderError

    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise RenderError(f"bad --clim {text!r}: expected LO,HI (two numbers, e.g. 0,40)") from None
    if not hi > lo:
        raise RenderError(f"bad --clim {text!r}: HI must be larger than LO")
    return (lo, hi)


def register(app: typer.Typer) -> None:
    """Add the visualisation commands to the ``marrow3d`` app."""

    @app.command()
    @cli_errors
    def render(
        run_dir: Path = typer.Argument(..., help="Run directory (holding run.h5)."),
        show: str = typer.Option("oxygen", "--show", help=_SHOW_HELP),
        step: int = typer.Option(-1, "--step", "-n", help="Snapshot index (0, 1, ...); -1 = the final state."),
        slice_: Optional[List[str]] = typer.Option(None, "--slice", help=_SLICE_HELP),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="PNG to write (default DIR/render_<show>_<step>.png)."),
        size: str = typer.Option("1600x1200", "--size", help="Picture size WIDTHxHEIGHT in pixels."),
        camera: Optional[str] = typer.Option(None, "--camera", help=_CAMERA_HELP),
        clim: Optional[str] = typer.Option(None, "--clim", help=_CLIM_HELP),
    ) -> None:
        """Render one time point of a run to a PNG, off screen.

        Fields: a block with its front octant cut away, or voxel-exact planes with --slice,
        on fixed colour scales (pO2 0-40 mmHg; signal log10; drugs 0 to the run's plasma peak).
        Parallel projection: the scale bar is exact in the view plane; a triad shows x, y, z.
        Vessels: smoothed surfaces by class; lost vessels grey.
        Cells: HSC and LSC spheres over a progenitor/blast volume.
        Niches: slots marked by who holds them.
        The title gives the day and the disease stage.

        Example: [bold]marrow3d render runs/tiny --show oxygen --slice z=150 --out o2.png[/]
        """
        from ..viz.render import render_png

        tag = "final" if step == -1 else f"step{step:03d}"
        target = out if out is not None else run_dir / f"render_{show}_{tag}.png"
        if out is not None:
            prepare_output_file(out)
        path = render_png(run_dir, target, show=show, step=step, slices=slice_ or None, size=size, camera=camera,
                          clim=_parse_clim(clim))
        console.print(f"[green]wrote[/] {path}")

    @app.command()
    @cli_errors
    def movie(
        run_dir: Path = typer.Argument(..., help="Run directory (holding run.h5 with snapshots)."),
        show: str = typer.Option("cells", "--show", help=_SHOW_HELP),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Movie file, .gif or .mp4 (default DIR/<show>.gif)."),
        orbit: bool = typer.Option(False, "--orbit", help="Turn the camera once around the domain over the movie."),
        slice_: Optional[List[str]] = typer.Option(None, "--slice", help=_SLICE_HELP),
        size: Optional[str] = typer.Option(None, "--size", help="Frame size WxH (default 800x600 GIF, 1280x960 MP4)."),
        camera: Optional[str] = typer.Option(None, "--camera", help=_CAMERA_HELP),
        fps: float = typer.Option(4.0, "--fps", help="Frames (snapshots) per second."),
        clim: Optional[str] = typer.Option(None, "--clim", help=_CLIM_HELP),
    ) -> None:
        """Make a movie over every snapshot of a run, with one colour scale for all frames.

        GIF is written with Pillow; MP4 needs the imageio-ffmpeg package.

        Example: [bold]marrow3d movie runs/tiny --show cells --orbit --out cells.gif[/]
        """
        from rich.progress import Progress

        from ..viz.movie import write_movie

        target = out if out is not None else run_dir / f"{show}.gif"
        if out is not None:
            prepare_output_file(out)
        bar = Progress(console=console, transient=True)
        task = None

        def progress(k: int, total: int) -> None:  # the bar starts with the first frame (after validation)
            nonlocal task
            if not console.is_terminal:
                return
            if task is None:
                bar.start()
                task = bar.add_task(f"rendering {target.name}", total=total)
            bar.update(task, completed=k)

        try:
            path, n = write_movie(run_dir, target, show=show, slices=slice_ or None, size=size, camera=camera,
                                  orbit=orbit, fps=fps, clim=_parse_clim(clim), progress=progress)
        finally:
            if task is not None:
                bar.stop()
        console.print(f"[green]wrote[/] {path} ({n} frames)")

    @app.command()
    @cli_errors
    def view(
        run_dir: Path = typer.Argument(..., help="Run directory (holding run.h5)."),
        step: Optional[int] = typer.Option(None, "--step", "-n", help="Snapshot to start at (-1 = final state)."),
    ) -> None:
        """Open an interactive 3D viewer (needs a display).

        A slider steps through the snapshots.
        Check boxes toggle the field (one at a time), cells, niche slots, vessels, bone
        and the clip plane (drag the plane to move it).
        Right-click prints the values of the voxel under the cursor.

        Example: [bold]marrow3d view runs/tiny[/]
        """
        from ..viz.interactive import view_run

        view_run(run_dir, step=step)

    @app.command()
    @cli_errors
    def plot(
        run_dirs: List[Path] = typer.Argument(..., help="One or more run directories (several are overlaid)."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="PNG/PDF/SVG to write (default FIRST_DIR/panel.png)."),
        title: Optional[str] = typer.Option(None, "--title", help="Figure title."),
    ) -> None:
        """Plot the time series of one or more runs as one panel (matplotlib).

        Populations (log scale), niche occupancy by kind, vessel integrity,
        hypoxic fraction, plasma and marrow drug levels, drug exposure by cell type
        and the disease stages. Several runs are overlaid, one line style each.

        Example: [bold]marrow3d plot runs/base runs/arm73 --out compare.png[/]
        """
        from ..viz.plots import plot_runs

        target = out if out is not None else run_dirs[0] / "panel.png"
        if out is not None:
            prepare_output_file(out)
        path = plot_runs(run_dirs, target, title=title)
        console.print(f"[green]wrote[/] {path}")
