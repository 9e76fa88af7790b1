"""Interim run.h5 reader with the interface of ``marrow3d.analysis.open_run``.

Used only until ``marrow3d.analysis`` exists; :mod:`marrow3d.viz._data` prefers the real one.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from marrow3d.errors import CheckpointError

_FIELDS = ("oxygen", "signal", "cytarabine", "daunorubicin")


class _RunData:
    def __init__(self, path) -> None:
        p = Path(path)
        if p.is_dir():
            p = p / "run.h5"
        if not p.exists():
            raise CheckpointError(f"no run found at {path} (expected a run directory holding run.h5)")
        try:
            self._h5 = h5py.File(p, "r", swmr=True, libver="latest")
        except OSError as exc:
            raise CheckpointError(f"cannot read {p}: {exc}") from None
        self.path = p
        h5 = self._h5
        self.meta = dict(h5["meta"].attrs)
        from marrow3d.config import config_from_toml_text

        self.config = config_from_toml_text(str(self.meta["config_toml"]), source=str(p))
        self.voxel_um = float(h5["anatomy"].attrs["voxel_um"])
        self.origin_um = np.asarray(h5["anatomy"].attrs["origin_um"], dtype=float)
        self.tissue = h5["anatomy/tissue"][()]
        self.niche = h5["anatomy/niche"][()]
        self.shape = self.tissue.shape
        ts = {k: h5["timeseries"][k][()] for k in h5["timeseries"]}
        df = pd.DataFrame(ts).set_index("time_h")
        df["day"] = df.index / 24.0
        self.timeseries = df
        snaps = h5.get("snapshots")
        self.snapshot_times_h = snaps["time_h"][()] if snaps is not None else np.zeros(0)
        self.n_snapshots = int(self.snapshot_times_h.size)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self._h5.close()

    def _get(self, step: int, snap_name: str, state_name: str):
        if step == -1:
            if "state" not in self._h5 or state_name not in self._h5["state"]:
                raise CheckpointError(f"{self.path} has no final state /state/{state_name}")
            return self._h5["state"][state_name][()]
        if not 0 <= step < self.n_snapshots:
            raise CheckpointError(f"step {step} out of range (0..{self.n_snapshots - 1}, or -1)")
        if snap_name not in self._h5["snapshots"]:
            raise CheckpointError(f"snapshots hold no {snap_name!r}")
        return self._h5["snapshots"][snap_name][step]

    def fields(self, step: int = -1) -> dict:
        out = {}
        for name in _FIELDS:
            if step == -1:
                if f"state/fields/{name}" in self._h5:
                    out[name] = self._h5[f"state/fields/{name}"][()]
            elif name in self._h5["snapshots"]:
                out[name] = self._get(step, name, "")
        return out

    def cells(self, step: int = -1):
        return self._get(step, "cells", "cells")

    def lodged(self, step: int = -1):
        return self._get(step, "lodged", "lodged")

    def integrity(self, step: int = -1):
        return self._get(step, "integrity", "vessel_integrity")


def open_run(path) -> _RunData:
    return _RunData(path)
