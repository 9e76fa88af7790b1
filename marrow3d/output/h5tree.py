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


def write_tree(group, tree: dict[str, Any], *, compression_level: int = 1,
               written: dict[str, np.ndarray] | None = None) -> None:
    """Write ``tree`` under the open h5py ``group``.

    ``written``: filled with ``{dataset path: the array stored}`` (what a reader gets back),
    so checksums can be taken without reading the file again.
    """
    for key, value in tree.items():
        if not isinstance(key, str) or not key or "/" in key:
            raise ValueError(f"invalid HDF5 name {key!r}")
        if isinstance(value, dict):
            write_tree(group.create_group(key), value, compression_level=compression_level, written=written)
            continue
        if isinstance(value, _SCALARS):
            group.attrs[key] = value
            continue
        if isinstance(value, np.ndarray):
            data = value if value.ndim == 0 or value.size == 0 else np.ascontiguousarray(value)
            opts: dict[str, Any] = {}
            if data.ndim and data.size:
                opts = {"fletcher32": True, "chunks": True}
                if compression_level and data.size > 4096:
                    opts.update(compression="gzip", compression_opts=compression_level, shuffle=True)
        elif isinstance(value, (list, tuple)):
            data, opts = np.asarray(value), {}
        else:
            raise TypeError(f"cannot store {key!r} of type {type(value).__name__} in a checkpoint")
        ds = group.create_dataset(key, data=data, **opts)
        if written is not None:
            written[ds.name] = data


def read_tree(group, *, datasets: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Read a group written by :func:`write_tree` back into nested dicts and numpy arrays.

    ``datasets``: filled with ``{dataset path: array read}``. A dataset that cannot be read
    (a damaged chunk) raises ``OSError`` naming it.
    """
    out: dict[str, Any] = {}
    for key, value in group.attrs.items():
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    for key, item in group.items():
        if hasattr(item, "keys"):
            out[key] = read_tree(item, datasets=datasets)
        else:
            try:
                out[key] = item[()]
            except (OSError, RuntimeError, ValueError) as exc:
                raise OSError(f"dataset {item.name} cannot be read ({' '.join(str(exc).split())})") from None
            if datasets is not None:
                datasets[item.name] = out[key]
    return out
