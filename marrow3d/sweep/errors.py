"""The sweep's user-facing error (one line and exit status 2 on the command line)."""

from __future__ import annotations

from ..errors import Marrow3DError

__all__ = ["SweepError"]


class SweepError(Marrow3DError, RuntimeError):
    """A sweep cannot start or continue: busy output folder, unreachable scheduler, missing
    ``dask``/``dask-cuda``, or a sweep folder that holds no sweep."""
