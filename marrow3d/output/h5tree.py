"""Nested dicts of arrays and scalars <-> HDF5 groups (the checkpoint's payload format).

Arrays become datasets (chunked, gzip + shuffle + Fletcher-32 checksums, so corruption is
detected on read); scalars and strings become attributes; dicts become groups. Nothing is
pickled, ever.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["write_tree", "read_tree"]

_SCALARS = (bool, int, float, str, np.integer, np.floating, np.bool_)


def write_tree(group, tree: dict[str, Any], *, compression_level: int = 1) -> None:
    """Write ``tree`` under the open h5py ``group``."""
    for key, value in tree.items():
        if not isinstance(key, str) or not key or "/" in key:
            raise ValueError(f"invalid HDF5 name {key!r}")
        if isinstance(value, dict):
            write_tree(group.create_group(key), value, compression_level=compression_level)
        elif isinstance(value, np.ndarray):
            if value.ndim == 0 or value.size == 0:
                group.create_dataset(key, data=value)
            else:
                opts: dict[str, Any] = {"fletcher32": True, "chunks": True}
                if compression_level and value.size > 4096:
                    opts.update(compression="gzip", compression_opts=compression_level, shuffle=True)
                group.create_dataset(key, data=np.ascontiguousarray(value), **opts)
        elif isinstance(value, _SCALARS):
            group.attrs[key] = value
        elif isinstance(value, (list, tuple)):
            group.create_dataset(key, data=np.asarray(value))
        else:
            raise TypeError(f"cannot store {key!r} of type {type(value).__name__} in a checkpoint")


def read_tree(group) -> dict[str, Any]:
    """Read a group written by :func:`write_tree` back into nested dicts and numpy arrays."""
    out: dict[str, Any] = {}
    for key, value in group.attrs.items():
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    for key, item in group.items():
        if hasattr(item, "keys"):
            out[key] = read_tree(item)
        else:
            out[key] = item[()]
    return out
