"""Exceptions that the command line turns into one-line messages (exit status 2).

Every error a user can cause by giving bad input derives from :class:`Marrow3DError`.
The CLI catches exactly this family and prints ``error: <message>`` with no traceback;
anything else is a bug in marrow3d and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "Marrow3DError",
    "ConfigError",
    "MaskError",
    "BackendError",
    "CheckpointError",
    "OutputError",
    "SolverError",
    "NonFiniteError",
]


class Marrow3DError(Exception):
    """Base class of all user-facing errors (bad config, bad file, missing device...)."""


class ConfigError(Marrow3DError, ValueError):
    """A configuration value, key or file is invalid; the message names the key."""


class MaskError(Marrow3DError, ValueError):
    """An imported tissue mask is unreadable or holds labels/dtype/shape we cannot use."""


class BackendError(Marrow3DError, RuntimeError):
    """The requested compute backend is unavailable (never silently replaced)."""


class CheckpointError(Marrow3DError, OSError):
    """A checkpoint or run file is missing, truncated, foreign or of another schema."""


class OutputError(Marrow3DError, OSError):
    """Output cannot be written: the run directory is not writable or has another writer, or
    the disk filled up; the message says what was kept and how to continue."""


class SolverError(Marrow3DError, RuntimeError):
    """A transport solve failed to converge; the message reports the residual."""


class NonFiniteError(Marrow3DError, FloatingPointError):
    """NaN or Inf appeared in a field; the run stops with a diagnostic checkpoint."""
