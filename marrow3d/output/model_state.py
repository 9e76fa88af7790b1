"""The model's state as the output layer sees it: named arrays for writers, the checkpoint tree.

:class:`~marrow3d.model.MarrowModel` holds state and physics only; this module knows how that
state is written and read back:

* :class:`ModelArrays`, the writer array API: the per-voxel arrays a run file stores
  (snapshots and ``/state``) by name, with their dtypes and units. Reading one copies it from
  the device: this is where whole fields leave the device (snapshots, the final state).
* :func:`capture_model_state` / :func:`restore_model_state`, the checkpoint protocol: the
  ``/state/model`` tree of a checkpoint, everything needed to continue bit-for-bit (see
  docs/file-format.md).
"""

from __future__ import annotations

import numpy as np

from ..errors import CheckpointError

__all__ = ["ModelArrays", "capture_model_state", "restore_model_state"]

#: Units of the non-field arrays.
_ARRAY_UNITS = {"cells": "code", "lodged": "flag", "integrity": "1", "vessel_integrity": "1",
                "niche_conditioned": "flag"}


class ModelArrays:
    """The named per-voxel arrays of a model, as writers store them.

    Names: every transport field (``oxygen``, ``signal``, each dosed drug; also as
    ``fields/<name>``), ``cells`` (cell codes), ``lodged`` (0/1), ``integrity`` (also
    ``vessel_integrity``) and, with ``cells.niche_conditioning`` on, ``niche_conditioned``
    (0/1 per niche slot).

    Parameters
    ----------
    model : MarrowModel
    """

    def __init__(self, model) -> None:
        self.model = model

    def names(self) -> list[str]:
        """Array names a snapshot may hold, in a stable order."""
        extra = ["niche_conditioned"] if self._conditioning() else []
        return [*self.model.fields, "cells", "lodged", "integrity", *extra]

    def _conditioning(self) -> bool:
        # Off, the array is not written: runs without the mechanism keep their /state (and its
        # pinned digest, tests/test_reproducibility_pin.py) unchanged.
        return bool(self.model.config.cells.niche_conditioning.enabled)

    def has(self, name: str) -> bool:
        return name in self.names() or name in self.final_state_spec()

    def get(self, name: str) -> np.ndarray:
        """A copy of the array ``name`` on the host, shape (nz, ny, nx)."""
        from ..kernels.cells import LODGED

        m = self.model
        if name.startswith("fields/"):
            name = name.split("/", 1)[1]
        if name in m.fields:
            return m.fields[name].to_numpy()
        if name == "cells":
            return m.cells.cells.to_numpy()
        if name == "lodged":
            return (m.cells.flags.to_numpy() & LODGED).astype(np.uint8)
        if name in ("integrity", "vessel_integrity"):
            return m.integrity.to_numpy()
        if name == "niche_conditioned":
            return m.cells.niche_cond.to_numpy()
        raise KeyError(f"no array named {name!r}")

    def dtype(self, name: str) -> np.dtype:
        """The array's dtype in memory (writers may store floats at a lower precision)."""
        if name in ("cells", "lodged", "niche_conditioned"):
            return np.dtype(np.uint8)
        if name in ("integrity", "vessel_integrity"):
            return np.dtype(np.float32)
        return np.dtype(self.model.np_dtype)

    def units(self, name: str) -> str:
        from ..model import FIELD_UNITS

        if name.startswith("fields/"):
            name = name.split("/", 1)[1]
        return FIELD_UNITS.get(name) or _ARRAY_UNITS.get(name, "")

    def final_state_spec(self) -> dict[str, tuple[str, str]]:
        """Datasets of ``/state`` in run.h5: path -> (stored dtype, units)."""
        from ..model import FIELD_UNITS

        spec = {"cells": ("u1", "code"), "lodged": ("u1", "flag"), "vessel_integrity": ("f4", "1")}
        for name in self.model.fields:
            spec[f"fields/{name}"] = ("f4", FIELD_UNITS[name])
        if self._conditioning():
            spec["niche_conditioned"] = ("u1", "flag")
        return spec


def capture_model_state(model) -> dict:
    """The model's part of a checkpoint: everything needed to continue bit-for-bit."""
    return {
        "anatomy": {
            "tissue": model.tissue.to_numpy(),
            "niche": model.niche.to_numpy(),
            # The anatomy's own (initial) integrity, not the evolving one: with tissue, niche
            # and voxel size it is what Anatomy.fingerprint() hashes, so a resumed or branched
            # run rebuilds the anatomy that run.h5 records (the current integrity is model state).
            "integrity": np.ascontiguousarray(model.anatomy.integrity, dtype=np.float32),
            "voxel_um": model.voxel_um,
            "origin_um": np.asarray(model.anatomy.origin_um, dtype=np.float64),
        },
        "cells": model.cells.get_state(),
        "vessel_integrity": model.integrity.to_numpy(),
        "fields": {name: f.to_numpy() for name, f in model.fields.items()},
        "drug_active": {a: bool(v) for a, v in model.drug_active.items()},
        "solve_iterations": {k: int(v) for k, v in model.solve_iterations.items()},
        "clock": {"iteration": int(model.clock.iteration), "dt_h": float(model.clock.dt_h)},
        "history": model.metrics.history_arrays(),
    }


def restore_model_state(model, state: dict) -> None:
    """Load a tree written by :func:`capture_model_state` into ``model`` (shapes are checked).

    Raises
    ------
    CheckpointError
        A dataset of the wrong shape, a missing field, or another cell step length.
    """

    def check(name, arr, dtype=None):
        arr = np.asarray(arr)
        if arr.shape != model.shape:
            raise CheckpointError(f"checkpoint dataset {name} has shape {arr.shape}, expected {model.shape}")
        return arr if dtype is None else arr.astype(dtype, copy=False)

    anat = state["anatomy"]
    model.tissue.from_numpy(check("anatomy/tissue", anat["tissue"], np.uint8))
    model.niche.from_numpy(check("anatomy/niche", anat["niche"], np.uint8))
    model.integrity.from_numpy(check("vessel_integrity", state["vessel_integrity"], np.float32))
    for name, f in model.fields.items():
        if name not in state["fields"]:
            if name in model.drugs:  # a branch dosing a drug its parent never used: it was 0
                f.fill(0)
                continue
            if name == "cxcl12":  # a branch that turns CXCL12 on: the next step solves it from 0
                f.fill(0)
                continue
            raise CheckpointError(f"checkpoint has no field {name!r}")
        f.from_numpy(check(f"fields/{name}", state["fields"][name], model.np_dtype))
    cells = state["cells"]
    for key in ("cells", "flags", "generation"):
        check(f"cells/{key}", cells[key])
    for key in ("niche_conditioned", "niche_timer"):  # absent in checkpoints older than them: zero
        if key in cells:
            check(f"cells/{key}", cells[key])
    model.cells.set_state(cells)
    model.drug_active = {a: bool(state.get("drug_active", {}).get(a, False)) for a in model.drugs}
    model.solve_iterations = {k: int(v) for k, v in state.get("solve_iterations", {}).items()}
    for agent in model.drugs:
        model.solve_iterations.setdefault(agent, 0)
    clock = state["clock"]
    if abs(float(clock["dt_h"]) - model.clock.dt_h) > 1e-12:
        raise CheckpointError(f"checkpoint cell step {clock['dt_h']} h differs from the config's {model.clock.dt_h} h")
    model.clock.iteration = int(clock["iteration"])
    model.metrics.restore(state["history"], model)
