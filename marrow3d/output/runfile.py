"""The ``run.h5`` output contract (documented in ``docs/file-format.md``).

Arrays are C-ordered ``(z, y, x)``. Later schema versions add datasets, never rename them.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

import numpy as np

from ..kernels import codes

__all__ = ["SCHEMA_VERSION", "write_meta", "write_anatomy", "label_attrs", "now_iso"]

#: Version of the HDF5 layout written by this marrow3d (run.h5 and checkpoints).
SCHEMA_VERSION = 1


def now_iso() -> str:
    """Current UTC time as an ISO-8601 string (stored in ``/meta@created``)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def label_attrs(names: dict[int, str], prefix: str) -> dict[str, int]:
    """Label codes as attributes, e.g. ``tissue_code_bone = 1``."""
    return {f"{prefix}_{name}": code for code, name in names.items()}


def write_meta(h5, *, config_toml: str, seed: int, backend: str, created: str | None = None,
               extra: dict[str, Any] | None = None) -> None:
    """Write ``/meta`` with its required attributes.

    Parameters
    ----------
    h5 : h5py.File
        Open, writable file.
    config_toml : str
        The fully resolved configuration as TOML.
    seed : int
        Run seed.
    backend : str
        The backend that actually ran (``cpu``, ``cuda``, ``vulkan``).
    """
    from .. import __version__

    meta = h5.require_group("meta")
    meta.attrs["schema_version"] = SCHEMA_VERSION
    meta.attrs["marrow3d_version"] = __version__
    meta.attrs["config_toml"] = config_toml
    meta.attrs["seed"] = np.int64(seed)
    meta.attrs["backend"] = backend
    meta.attrs["created"] = created or now_iso()
    for k, v in (extra or {}).items():
        meta.attrs[k] = v


def write_anatomy(h5, anatomy, compression_level: int = 3) -> None:
    """Write ``/anatomy/tissue`` and ``/anatomy/niche`` (uint8) with voxel size and codes."""
    grp = h5.require_group("anatomy")
    opts: dict[str, Any] = {"fletcher32": True}
    if compression_level:
        opts.update(compression="gzip", compression_opts=compression_level, shuffle=True)
    for name, arr, names, prefix in (
        ("tissue", anatomy.tissue, codes.TISSUE_NAMES, "code"),
        ("niche", anatomy.niche, codes.NICHE_NAMES, "code"),
    ):
        if name in grp:
            del grp[name]
        ds = grp.create_dataset(name, data=np.ascontiguousarray(arr, dtype=np.uint8), **opts)
        ds.attrs["voxel_um"] = float(anatomy.voxel_um)
        ds.attrs["origin_um"] = np.asarray(anatomy.origin_um, dtype=np.float64)
        ds.attrs["axes"] = "zyx"
        for k, v in label_attrs(names, prefix).items():
            ds.attrs[k] = v
    grp.attrs["voxel_um"] = float(anatomy.voxel_um)
    grp.attrs["origin_um"] = np.asarray(anatomy.origin_um, dtype=np.float64)
