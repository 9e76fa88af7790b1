"""marrow3d: a GPU-accelerated 3D simulator of the leukemic bone-marrow niche.

The public API is re-exported here; everything else is internal. Importing marrow3d never
initialises Taichi: call :func:`marrow3d.backend.initialize` (the CLI does) first.
"""

from __future__ import annotations

from ._version import __version__

__all__ = ["__version__", "open_run", "load_config"]


def __getattr__(name: str):
    # Lazy re-exports: `import marrow3d` stays light (no h5py, pandas or Taichi at import).
    if name == "open_run":
        from .analysis import open_run

        return open_run
    if name == "load_config":
        from .config import load_config

        return load_config
    raise AttributeError(f"module 'marrow3d' has no attribute {name!r}")
