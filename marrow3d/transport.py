"""Transport fields of the model: coefficient tables from the config, solves, diagnostics.

Each field (oxygen, the remodeling signal, each dosed drug) shares one
:class:`~marrow3d.transport_solver.MultigridSolver`: assemble that field's coefficients from
the compact state (tissue, cells, integrity) and its :class:`CoefficientTables`, solve
warm-started from the field's previous value, move to the next field.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .config.transport import DrugConfig, OxygenConfig, SignalConfig, TransportConfig
from .errors import SolverError
from .kernels import codes
from .kernels.transport import CoefficientTables, assemble_coefficients, upload_tables

__all__ = [
    "oxygen_tables",
    "drug_tables",
    "signal_tables",
    "oxygen_vmax_mmHg_per_min",
    "FieldSolver",
]

log = logging.getLogger(__name__)


def _diffusivity(D_um2_per_min: float) -> np.ndarray:
    """Per-tissue D: marrow and vessels diffuse, bone and outside are no-flux (0)."""
    d = np.zeros(codes.N_TISSUE)
    for label in (codes.MARROW, codes.ARTERIOLE, codes.SINUSOID, codes.CENTRAL_SINUS):
        d[label] = D_um2_per_min
    return d


def oxygen_vmax_mmHg_per_min(q_amol_per_s: float, voxel_um: float, solubility_uM_per_mmHg: float) -> float:
    """Convert one cell's O2 consumption into a voxel-average rate in mmHg/min.

    ``q`` [amol/s] x 60 s/min spread over one voxel of ``voxel_um^3`` um^3 (1 um^3 = 1e-15 L)
    gives mol/L/min; x 1e6 gives uM/min; / solubility [uM/mmHg] gives mmHg/min.
    At 10 um voxels and alpha = 1.3 uM/mmHg, 1 amol/s is 46 mmHg/min.
    """
    mol_per_L_per_min = q_amol_per_s * 1e-18 * 60.0 / (voxel_um**3 * 1e-15)
    return mol_per_L_per_min * 1e6 / solubility_uM_per_mmHg


def oxygen_tables(o2: OxygenConfig, voxel_um: float, leak: np.ndarray, floor: float) -> CoefficientTables:
    """Coefficient tables of the oxygen field (mmHg, Michaelis-Menten consumption).

    O2 crosses vessel walls freely, so its exchange is perfusion-limited: a leaky vessel does
    not deliver more oxygen. The permeability gain (``leak``) is therefore not applied to O2
    (``E = E0 I``); it applies to drugs and the signal.
    """
    leak = np.zeros_like(leak)
    q = np.array(o2.consumption_amol_per_cell_s.as_table())
    vmax = np.array([oxygen_vmax_mmHg_per_min(v, voxel_um, o2.solubility_uM_per_mmHg) for v in q])
    decay = np.zeros(codes.N_TISSUE)
    decay[codes.MARROW] = o2.decay_per_min
    return CoefficientTables(
        diffusivity_by_tissue=_diffusivity(o2.diffusivity_um2_per_min),
        decay_by_tissue=decay,
        vmax_by_cell=vmax,
        exchange_by_class=np.array(o2.exchange_per_min.as_table()),
        leak_by_class=leak,
        blood_by_class=np.array(o2.blood_pO2_mmHg.as_table()),
        integrity_floor=floor,
    )


def drug_tables(drug: DrugConfig, leak: np.ndarray, floor: float, plasma_uM: float = 0.0) -> CoefficientTables:
    """Coefficient tables of a drug field (uM); ``plasma_uM`` is the vessel-side level."""
    decay = np.zeros(codes.N_TISSUE)
    decay[codes.MARROW] = drug.decay_per_min
    return CoefficientTables(
        diffusivity_by_tissue=_diffusivity(drug.diffusivity_um2_per_min),
        decay_by_tissue=decay,
        uptake_by_cell=np.array(drug.uptake_per_min.as_table()),
        exchange_by_class=np.array(drug.exchange_per_min.as_table()),
        leak_by_class=leak,
        blood_by_class=np.array([0.0, plasma_uM, plasma_uM]),
        integrity_floor=floor,
    )


def signal_tables(sig: SignalConfig, leak: np.ndarray, floor: float) -> CoefficientTables:
    """Coefficient tables of the remodeling signal (su): secreted by leukemic cells."""
    decay = np.zeros(codes.N_TISSUE)
    decay[codes.MARROW] = sig.decay_per_min
    return CoefficientTables(
        diffusivity_by_tissue=_diffusivity(sig.diffusivity_um2_per_min),
        decay_by_tissue=decay,
        secretion_by_cell=np.array(sig.secretion_su_per_min.as_table()),
        exchange_by_class=np.array(sig.exchange_per_min.as_table()),
        leak_by_class=leak,
        blood_by_class=np.zeros(3),
        integrity_floor=floor,
    )


class FieldSolver:
    """Solve one field to steady state on the shared solver, or fail loudly.

    Parameters
    ----------
    name : str
        Field name (``oxygen``, ``signal``, ``cytarabine``...), used in messages.
    tables : CoefficientTables
        The field's coefficient tables (``blood_by_class`` may be updated every step).
    km : float
        Michaelis-Menten constant [field units]; any positive number for linear fields.
    config : TransportConfig
        Tolerance and iteration caps.
    diagnostics_dir : Path
        Where a failed solve writes ``solver_failure_<name>.npz`` (field + coefficients).
    """

    def __init__(self, name: str, tables: CoefficientTables, km: float, config: TransportConfig,
                 diagnostics_dir: Path | None = None, diffusivity_override=None) -> None:
        self.name = name
        self.tables = tables
        self.km = float(km)
        self.tol = config.solver.tolerance
        self.max_iterations = config.solver.max_iterations
        self.diagnostics_dir = Path(diagnostics_dir) if diagnostics_dir else None
        self.diffusivity_override = diffusivity_override
        self._packed = None  # the packed tables on the device, allocated once
        self._stale = False
        self.last_info = None

    def set_blood_level(self, value: float) -> None:
        """Set u_blood of both vessel classes (drugs: the plasma concentration, uM).

        The packed device table is rewritten in place at the next assembly (no new array).
        """
        blood = np.array([0.0, value, value])
        if not np.array_equal(blood, self.tables.blood_by_class):
            self.tables.blood_by_class = blood
            self._stale = True

    def assemble(self, solver, tissue, cells, integrity) -> None:
        """Write this field's coefficients into the solver's D, a, vmax, s (solver's layout)."""
        if self._packed is None:
            self._packed = upload_tables(self.tables)
        elif self._stale:
            upload_tables(self.tables, out=self._packed)
        self._stale = False
        assemble_coefficients(tissue, cells, integrity, self._packed, solver.D, solver.a, solver.vmax,
                              solver.s, diffusivity_override=self.diffusivity_override, gpu=solver.gpu_layout)

    def solve(self, solver, u, tissue, cells, integrity):
        """Assemble and solve in place (warm start from ``u``); return the SolveInfo."""
        self.assemble(solver, tissue, cells, integrity)
        info = solver.solve(u, self.km, tol=self.tol, max_iterations=self.max_iterations)
        self.last_info = info
        if not info.converged:
            path = self._write_diagnostics(solver, u, info)
            raise SolverError(
                f"the {self.name} solve did not converge: relative residual "
                f"{info.relative_residual:.3g}, Jacobi-scaled residual {info.scaled_residual:.3g} "
                f"(tolerance {self.tol:g}) after {info.iterations} iterations ({info.message}); "
                f"diagnostics in {path}"
            )
        return info

    def _write_diagnostics(self, solver, u, info) -> str:
        directory = self.diagnostics_dir or Path(".")
        try:
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / f"solver_failure_{self.name}.npz"
            coeffs = solver.coefficients()
            np.savez_compressed(
                path,
                field=u.to_numpy() if hasattr(u, "to_numpy") else np.asarray(u),
                residual_history=np.asarray(info.residual_history, dtype=np.float64),
                **coeffs,
            )
            return str(path)
        except OSError as exc:  # the error about the solve matters more than this one
            log.error("could not write solver diagnostics: %s", exc)
            return "(not written)"
