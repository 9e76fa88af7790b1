"""marrow3d.viz: pictures, movies, an interactive viewer and time-series panels of runs.

Reads runs through :func:`marrow3d.analysis.open_run` only and never drives a simulation
(imports go ``viz -> marrow3d -> kernels``). pyvista and matplotlib are imported when a
function that needs them is first used.

=====================  =========================================================
:func:`render_png`     one time point to a PNG, off screen (``marrow3d render``)
:func:`write_movie`    GIF/MP4 over the snapshots (``marrow3d movie``)
:class:`RunViewer`     interactive scene with widgets (``marrow3d view``)
:func:`plot_runs`      matplotlib panel of one or more runs (``marrow3d plot``)
=====================  =========================================================
"""

from __future__ import annotations

__all__ = ["render_png", "render_image", "write_movie", "RunViewer", "view_run", "plot_runs", "SHOW_MODES"]

_WHERE = {
    "render_png": "render",
    "render_image": "render",
    "write_movie": "movie",
    "RunViewer": "interactive",
    "view_run": "interactive",
    "plot_runs": "plots",
    "SHOW_MODES": "style",
}


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        module = importlib.import_module(f".{_WHERE[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
