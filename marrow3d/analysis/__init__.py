"""Read and analyse marrow3d output: ``run.h5``, checkpoints and diagnostic files.

Everything here reads files; nothing initialises Taichi or drives a simulation, so analysis
runs anywhere h5py, numpy, scipy and pandas are installed (pyvista only for ``to_pyvista``).

Examples
--------
>>> from marrow3d.analysis import open_run
>>> with open_run("runs/tiny") as run:                          # doctest: +SKIP
...     df = run.timeseries                 # pandas, indexed by time_h, with a ``day`` column
...     o2 = run.fields()["oxygen"]         # final state, (z, y, x) float32 in mmHg
...     grid = run.to_pyvista(step=0)       # the first snapshot as pyvista.ImageData
...     run.distance_to_vessels()           # cell-to-vessel distances in um
"""

from __future__ import annotations

from .rundata import RunData, RunDataError, open_run

__all__ = ["open_run", "RunData", "RunDataError"]
