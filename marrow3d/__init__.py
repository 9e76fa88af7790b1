"""marrow3d: a GPU-accelerated 3D simulator of the leukemic bone-marrow niche.

The public API is re-exported here; everything else is internal. Importing marrow3d never
initialises Taichi: call :func:`marrow3d.backend.initialize` (the CLI does) first.
"""

from __future__ import annotations

from ._version import __version__

__all__ = ["__version__"]
