"""The CXCL12 field of the model: its tables from the config and its solver.

The field (nM) is steady and linear: secreted by perivascular stroma in proportion to the
integrity of the vessel it sits on, first-order decay, no cell terms (:mod:`kernels.cxcl12`).
It is solved on the shared multigrid solver every cell step, warm-started from the previous
step's field: when no vessel integrity changed, the warm start already meets the tolerance and
the solve costs one assembly and one residual (no iteration), so no separate change detector
(an extra copy of the integrity, which a bit-for-bit resume would then have to checkpoint) is
needed.
"""

from __future__ import annotations

import math

import numpy as np

from .config.transport import Cxcl12Config
from .kernels import codes
from .kernels.cxcl12 import Cxcl12Tables, assemble_cxcl12, upload_tables
from .transport import FieldSolver

__all__ = ["cxcl12_tables", "decay_per_min", "Cxcl12FieldSolver"]


def decay_per_min(cfg: Cxcl12Config) -> float:
    """First-order decay rate k = ln 2 / half-life [1/min]."""
    return math.log(2.0) / cfg.half_life_min


def cxcl12_tables(cfg: Cxcl12Config, floor: float) -> Cxcl12Tables:
    """Tables of the CXCL12 field: D and k in marrow and vessels (bone, outside no-flux).

    k is the decay ``ln 2 / half_life_min`` everywhere, plus the receptor-mediated uptake
    ``uptake_per_min`` in marrow voxels (the cells that internalise CXCL12 are in the marrow,
    not in the vessel lumen). The perivascular source is ``k_marrow * level``, so ``level`` stays
    the concentration a region made only of stroma would reach.
    """
    d = np.zeros(codes.N_TISSUE)
    k = np.zeros(codes.N_TISSUE)
    for label in (codes.MARROW, codes.ARTERIOLE, codes.SINUSOID, codes.CENTRAL_SINUS):
        d[label] = cfg.diffusivity_um2_per_min
        k[label] = decay_per_min(cfg)
    k[codes.MARROW] += cfg.uptake_per_min
    return Cxcl12Tables(d, k, np.array(cfg.source_level_nM.as_table()), float(floor))


class Cxcl12FieldSolver(FieldSolver):
    """:class:`~marrow3d.transport.FieldSolver` whose assembly is the CXCL12 one (linear, km unused)."""

    def __init__(self, tables: Cxcl12Tables, config, diagnostics_dir=None) -> None:
        super().__init__("cxcl12", tables, 1.0, config, diagnostics_dir)

    def set_blood_level(self, value: float) -> None:  # pragma: no cover - not a plasma-driven field
        raise TypeError("the CXCL12 field has no blood level")

    def assemble(self, solver, tissue, cells, integrity) -> None:
        """Write D, a, vmax, s of the CXCL12 field into the solver (``cells`` is not read)."""
        if self._packed is None:
            self._packed = upload_tables(self.tables)
        assemble_cxcl12(tissue, integrity, self._packed, solver.D, solver.a, solver.vmax, solver.s,
                        gpu=solver.gpu_layout)
