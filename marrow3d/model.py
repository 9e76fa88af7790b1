"""``MarrowModel``: the state and physics of one marrow, advanced one cell step at a time.

A step of ``dt`` hours runs, in this order (docs/model.md section 0):

1. **PK**: plasma levels of every agent at the middle of the step (a pure function of time);
2. **transport**: oxygen, the remodeling signal and every drug present in plasma solved to
   steady state on the current cells and vessels, warm-started from the previous step;
3. **cells**: transplanted HSCs home, then death, division, competition, niche release and
   random walk on the lattice (Philox-keyed, deterministic for any thread count);
4. **vessels**: integrity loss driven by the signal, regeneration, deferoxamine protection;
5. **metrics**: one row of the time series.

The model does no I/O and has no stop logic: :class:`marrow3d.simulation.Simulation` drives it,
:class:`marrow3d.metrics.MetricsRecorder` (``model.metrics``) keeps its time series, and the
output layer reads and restores its state (:mod:`marrow3d.output.model_state`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import SimulationConfig
from .config.transport import DRUG_AGENTS
from .cxcl12 import Cxcl12FieldSolver, cxcl12_tables
from .errors import NonFiniteError
from .kernels.cells import CellLattice
from .kernels.readouts import NonFiniteCounter, count_nonfinite
from .transport_solver import MultigridSolver
from .kernels.ti_compat import ti
from .kernels.vessels import update_integrity
from .metrics import MetricsRecorder
from .pharmacology import PlasmaPK
from .profiling import NULL_PROBE
from .transport import FieldSolver, drug_tables, oxygen_tables, signal_tables

__all__ = ["Clock", "MarrowModel", "FIELD_UNITS"]

log = logging.getLogger(__name__)

#: Units of the transport fields.
FIELD_UNITS = {"oxygen": "mmHg", "signal": "su", "cytarabine": "uM", "daunorubicin": "uM", "cxcl12": "nM"}


@dataclass
class Clock:
    """Simulated time. ``time_h`` is always ``iteration * dt_h`` (no accumulated rounding)."""

    iteration: int = 0
    dt_h: float = 1.0

    @property
    def time_h(self) -> float:
        return self.iteration * self.dt_h


class MarrowModel:
    """Anatomy, fields, cells, vessel integrity, parameters, clock and RNG key of one run.

    Parameters
    ----------
    config : SimulationConfig
        The resolved configuration (its ``run.seed`` keys every random draw).
    anatomy : marrow3d.anatomy.Anatomy
        Tissue labels, niche slots and initial vessel integrity.
    diagnostics_dir : Path, optional
        Where a failed transport solve writes its diagnostic file.
    diffusivity_map : ndarray, optional
        Per-voxel O2 diffusivity [um^2/min] replacing the per-tissue value.

    Notes
    -----
    ``ti.init`` must have been called (``marrow3d.backend.initialize``).
    """

    def __init__(self, config: SimulationConfig, anatomy, *, diagnostics_dir: Path | None = None,
                 diffusivity_map: np.ndarray | None = None) -> None:
        self.config = config
        self.anatomy = anatomy
        self.shape = tuple(int(n) for n in anatomy.shape)
        self.voxel_um = float(anatomy.voxel_um)
        self.clock = Clock(0, config.run.cell_step_hours)
        #: Phase probe (``marrow3d.profiling``): a no-op unless a profiler is installed.
        self.probe = NULL_PROBE
        self.dtype = ti.f64 if config.run.precision == "float64" else ti.f32
        self.np_dtype = np.float64 if config.run.precision == "float64" else np.float32
        self.floor = config.vessels.integrity_floor
        self.pk = PlasmaPK(config.therapy)
        self.drugs = tuple(a for a in DRUG_AGENTS if config.therapy.uses(a))
        #: CXCL12 field and CXCR4 chemotaxis (``transport.cxcl12.enabled``).
        self.cxcl12 = config.transport.cxcl12.enabled

        # compact per-voxel state ---------------------------------------------------------
        self.tissue = ti.field(ti.u8, shape=self.shape)
        self.niche = ti.field(ti.u8, shape=self.shape)
        self.integrity = ti.field(ti.f32, shape=self.shape)
        self.tissue.from_numpy(np.ascontiguousarray(anatomy.tissue, dtype=np.uint8))
        self.niche.from_numpy(np.ascontiguousarray(anatomy.niche, dtype=np.uint8))
        self.integrity.from_numpy(np.ascontiguousarray(anatomy.integrity, dtype=np.float32))
        self.fields: dict[str, object] = {}
        for name in ("oxygen", "signal", *self.drugs, *(("cxcl12",) if self.cxcl12 else ())):
            f = ti.field(self.dtype, shape=self.shape)
            f.fill(0)
            self.fields[name] = f
        self.cells = CellLattice(self.shape, config.cells.kernel_params(), config.run.seed)
        init = config.cells.initial
        self.cells.seed_initial(self.tissue, self.niche, self.integrity, integrity_floor=self.floor,
                                hsc_niche_fraction=init.hsc_niche_fraction,
                                progenitor_density=init.progenitor_density, lsc_count=init.lsc_count)

        # transport ---------------------------------------------------------------------
        tc = config.transport
        leak = np.array(tc.exchange.leak.as_table())
        self.leak = leak
        # field_residual=False: the float32 field residual is a diagnostic nothing here reads;
        # skipping it saves one residual pass per solve.
        self.solver = MultigridSolver(self.shape, self.voxel_um, self.dtype, field_residual=False)
        override = None
        if diffusivity_map is not None:
            override = ti.field(self.dtype, shape=self.shape)
            override.from_numpy(np.ascontiguousarray(diffusivity_map, dtype=self.np_dtype))
        self.field_solvers = {
            "oxygen": FieldSolver("oxygen", oxygen_tables(tc.oxygen, self.voxel_um, leak, self.floor),
                                  tc.oxygen.km_mmHg, tc, diagnostics_dir, override),
            "signal": FieldSolver("signal", signal_tables(tc.signal, leak, self.floor), 1.0, tc, diagnostics_dir),
        }
        for agent in self.drugs:
            self.field_solvers[agent] = FieldSolver(
                agent, drug_tables(getattr(tc.drugs, agent), leak, self.floor), 1.0, tc, diagnostics_dir)
        if self.cxcl12:
            self.field_solvers["cxcl12"] = Cxcl12FieldSolver(cxcl12_tables(tc.cxcl12, self.floor), tc, diagnostics_dir)
        self.drug_active = {a: False for a in self.drugs}
        self.solve_iterations: dict[str, int] = {}

        # readouts ----------------------------------------------------------------------
        self._nonfinite = NonFiniteCounter(self.fields.values())
        self.metrics = MetricsRecorder(self)
        self._update_transport(self._plasma(0.0), first=True)
        self.metrics.record(self)

    # ------------------------------------------------------------------ stepping
    def pk_time(self, t0_h: float) -> float:
        """PK-driven quantities are evaluated at the middle of the step (midpoint rule)."""
        return t0_h + 0.5 * self.clock.dt_h

    def _plasma(self, t0_h: float) -> dict:
        """PK of the step starting at ``t0_h``: whether each dosed drug is present during the
        step and its plasma level at the midpoint, the niche-release multiplier and the
        deferoxamine protection (pure functions of time)."""
        t_mid = self.pk_time(t0_h)
        t0 = t_mid - 0.5 * self.clock.dt_h  # as the solves always did (bitwise the same times)
        t1 = t0 + self.clock.dt_h
        drugs = {}
        for a in self.drugs:
            present = self.pk.is_present(a, t0, t1)
            drugs[a] = (present, float(self.pk.concentration_uM(a, t_mid)) if present else 0.0)
        return {
            "drugs": drugs,
            "release_multiplier": float(self.pk.niche_release_multiplier(t_mid)),
            "cxcr4_occupancy": float(self.pk.cxcr4_occupancy(t_mid)),
            "dfo_protection": float(np.clip(self.pk.vessel_loss_protection(t_mid), 0.0, 1.0)),
            "transplanted": self.config.therapy.transplanted_cells_between(t0_h, t0_h + self.clock.dt_h),
        }

    def _update_transport(self, plasma: dict, first: bool = False) -> None:
        args = (self.tissue, self.cells.cells, self.integrity)
        for name in ("oxygen", "signal"):
            with self.probe.phase(f"solve:{name}"):
                info = self.field_solvers[name].solve(self.solver, self.fields[name], *args)
            self.solve_iterations[name] = info.iterations
        for agent in self.drugs:
            present, level = plasma["drugs"][agent]
            if present:
                fs = self.field_solvers[agent]
                fs.set_blood_level(level)
                with self.probe.phase(f"solve:{agent}"):
                    info = fs.solve(self.solver, self.fields[agent], *args)
                self.solve_iterations[agent] = info.iterations
            elif self.drug_active[agent] or first:
                self.fields[agent].fill(0)  # absent: the field is exactly zero and not solved
                self.solve_iterations[agent] = 0
            else:
                self.solve_iterations[agent] = 0
            self.drug_active[agent] = present
        if self.cxcl12:
            # Every step, warm-started: with unchanged integrity it costs no iteration
            # (marrow3d.cxcl12 says why no change detector is kept).
            with self.probe.phase("solve:cxcl12"):
                info = self.field_solvers["cxcl12"].solve(self.solver, self.fields["cxcl12"], *args)
            self.solve_iterations["cxcl12"] = info.iterations

    def time_step(self) -> None:
        """Advance the model by one cell step of ``clock.dt_h`` hours."""
        probe = self.probe
        dt = self.clock.dt_h
        t0 = self.clock.time_h
        # 1. PK
        with probe.phase("pk"):
            plasma = self._plasma(t0)
        # 2. transport
        self._update_transport(plasma)
        # 3. cells: transplants home first, then the lattice rules
        with probe.phase("cells"):
            n_tx = plasma["transplanted"]
            if n_tx:
                placed = self.cells.home_hsc(n_tx, self.tissue, self.niche, self.integrity, integrity_floor=self.floor)
                log.info("day %.2f: %d of %d transplanted HSCs homed to free niche slots", t0 / 24, placed, n_tx)
            self.cells.step(
                self.tissue, self.niche, self.integrity, self.fields["oxygen"],
                self.fields["cytarabine"] if self.drug_active.get("cytarabine") else None,
                self.fields["daunorubicin"] if self.drug_active.get("daunorubicin") else None,
                dt_hours=dt, integrity_floor=self.floor, release_multiplier=plasma["release_multiplier"],
                **self._chemotaxis(plasma),
            )
        # 4. vessels
        with probe.phase("vessels"):
            update_integrity(self.tissue, self.integrity, self.fields["signal"], self.config.vessels.kernel_params(),
                             dt_hours=dt, dfo_protection=plasma["dfo_protection"])
        # 5. clock and readouts
        self.clock.iteration += 1
        with probe.phase("readouts"):
            self.metrics.record(self)

    def _chemotaxis(self, plasma: dict) -> dict:
        """Walk-bias arguments of the cell step: chi x (1 - f) of the CXCR4 antagonist occupancy."""
        if not self.cxcl12:
            return {}
        cc = self.config.transport.cxcl12
        return {"cxcl12": self.fields["cxcl12"],
                "chemotactic_sensitivity": cc.chemotactic_sensitivity * (1.0 - plasma["cxcr4_occupancy"]),
                "cxcr4_kd_nM": cc.cxcr4_kd_nM}

    def check_finite(self) -> None:
        """Raise NonFiniteError when any field holds NaN or Inf.

        Counted on the device over every field at once (one launch, 8 bytes back); only a
        failure counts field by field, for the message.
        """
        if self._nonfinite.count() == 0:
            return
        for name, f in self.fields.items():
            bad = count_nonfinite(f)
            if bad:
                raise NonFiniteError(f"field {name!r} holds {bad} non-finite values at step {self.clock.iteration}")

    # ------------------------------------------------------------------ readouts
    @property
    def history(self) -> dict[str, list[float]]:
        """The time series so far (``self.metrics.history``): column -> one value per step."""
        return self.metrics.history

    def progress_summary(self) -> str:
        """A short live readout for the progress display."""
        return self.metrics.summary()

    def __repr__(self) -> str:
        nz, ny, nx = self.shape
        return (f"MarrowModel({nz}x{ny}x{nx} voxels of {self.voxel_um} um, step {self.clock.iteration}, "
                f"t = {self.clock.time_h / 24:.2f} d, fields {list(self.fields)}, {self.dtype})")

