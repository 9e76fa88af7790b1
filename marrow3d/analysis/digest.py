"""A fingerprint of a run's final state, to tell whether two runs ended bit for bit alike.

Two runs of the same config and seed on the same backend end with the same digest whatever
the thread count, and a resumed run ends with the digest of the uninterrupted one (the
project's reproducibility guarantees). ``marrow3d info DIR`` prints it.
"""

from __future__ import annotations

import hashlib

import h5py
import numpy as np

__all__ = ["state_digest"]


def state_digest(state: h5py.Group) -> str:
    """SHA-256 of every dataset under a run file's ``/state`` group, and of its clock.

    Parameters
    ----------
    state : h5py.Group
        ``/state`` of a ``run.h5`` (cells, lodged, vessel integrity, fields).

    Returns
    -------
    str
        64 hexadecimal digits. Each dataset enters as its path, dtype, shape and raw bytes
        (C order), in sorted path order; then the ``iteration`` and ``time_h`` attributes.
    """
    names: list[str] = []
    state.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    h = hashlib.sha256()
    for name in sorted(names):
        arr = np.ascontiguousarray(state[name][()])
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(arr.tobytes())
    h.update(f"it={int(state.attrs['iteration'])}|t={float(state.attrs['time_h'])!r}".encode())
    return h.hexdigest()
