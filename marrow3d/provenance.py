"""Provenance of a run: which software, from which source tree, on which host, by which command.

:func:`provenance` gives the attributes ``marrow3d run``, ``resume``, ``branch`` and the sweep
workers store in ``/meta`` of ``run.h5`` and of every checkpoint (documented in
``docs/file-format.md``). Everything is a plain string, so the attributes read back the same
with h5py, h5dump or any HDF5 viewer.
"""

from __future__ import annotations

import functools
import platform
import shlex
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

__all__ = ["provenance", "git_commit", "package_versions", "version_line", "PROVENANCE_PACKAGES"]

#: Packages whose versions decide the numbers a run produces (``<name>_version`` in /meta).
PROVENANCE_PACKAGES = ("numpy", "scipy", "h5py", "pydantic")


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the marrow3d source tree when it runs from a git checkout, else ``""``.

    A checkout with uncommitted changes to tracked files gets ``-dirty`` appended: its
    results need not be reproducible from the commit alone. An installed wheel (no ``.git``
    next to the package) or a machine without git gives ``""``.
    """
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return ""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return ""
        commit = head.stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    dirty = status.returncode == 0 and bool(status.stdout.strip())
    return f"{commit}-dirty" if dirty else commit


def package_versions() -> dict[str, str]:
    """Installed versions of the packages in :data:`PROVENANCE_PACKAGES` (``""`` if missing)."""
    out = {}
    for name in PROVENANCE_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = ""
    return out


def version_line() -> str:
    """``marrow3d 0.1.0 (quadrants 1.3.3; git abc1234)``, as ``marrow3d --version`` prints it."""
    from . import __version__
    from .kernels.ti_compat import LIBRARY_NAME, library_version

    parts = [f"{LIBRARY_NAME} {library_version()}"]
    commit = git_commit()
    if commit:
        parts.append(f"git {commit[:12]}{'-dirty' if commit.endswith('-dirty') else ''}")
    return f"marrow3d {__version__} ({'; '.join(parts)})"


def provenance(argv: list[str] | None = None) -> dict[str, str]:
    """Attributes describing the software and the invocation of this process.

    Parameters
    ----------
    argv : list of str, optional
        The command line to record (default ``sys.argv``).

    Returns
    -------
    dict
        ``kernel_compiler`` (e.g. ``"quadrants 1.3.3"``), ``git_commit`` (``""`` outside a
        checkout), ``python_version``, ``<package>_version`` for numpy, scipy, h5py and
        pydantic, ``hdf5_version`` (the HDF5 library h5py uses), ``host`` (network name) and
        ``platform``, and ``command_line`` (shell-quoted).
    """
    import h5py

    from .kernels.ti_compat import LIBRARY_NAME, library_version

    out = {
        "kernel_compiler": f"{LIBRARY_NAME} {library_version()}",
        "git_commit": git_commit(),
        "python_version": platform.python_version(),
    }
    out.update({f"{name}_version": v for name, v in package_versions().items()})
    out["hdf5_version"] = h5py.version.hdf5_version
    out["host"] = socket.gethostname()
    out["platform"] = platform.platform(terse=True)
    out["command_line"] = shlex.join(sys.argv if argv is None else argv)
    return out
