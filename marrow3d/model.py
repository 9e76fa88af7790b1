"""``MarrowModel``: the state and physics of one marrow, advanced one cell step at a time.

A step of ``dt`` hours runs, in this order (model-brief sections 3-6):

1. **PK**: plasma levels of every agent at the middle of the step (a pure function of time);
2. **transport**: oxygen, the remodeling signal and every drug present in plasma solved to
   steady state on the current cells and vessels, warm-started from the previous step;
3. **cells**: transplanted HSCs home, then death, division, competition, niche release and
   random walk on the lattice (Philox-keyed, deterministic for any thread count);
4. **vessels**: integrity loss driven by the signal, regeneration, deferoxamine protection;
5. **metrics**: one row of the time series.

The model does no I/O and has no stop logic: :class:`marrow3d.simulation.Simulation` drives it
and the output writers read it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import SimulationConfig
from .config.transport import DRUG_AGENTS
from .errors import NonFiniteError
from .kernels.cells import LODGED, CellLattice
from .transport_solver import MultigridSolver
from .kernels.ti_compat import ti
from .kernels.vessels import update_integrity
from .metrics import RegionMasks, disease_stage, field_region_means, integrity_metrics, oxygen_metrics
from .pharmacology import PlasmaPK
from .transport import FieldSolver, drug_tables, oxygen_tables, signal_tables

__all__ = ["Clock", "MarrowModel", "FIELD_UNITS"]

log = logging.getLogger(__name__)

FIELD_UNITS = {"oxygen": "mmHg", "signal": "su", "cytarabine": "uM", "daunorubicin": "uM"}
PK_AGENTS = ("cytarabine", "daunorubicin", "plerixafor", "deferoxamine")


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
        self.dtype = ti.f64 if config.run.precision == "float64" else ti.f32
        self.np_dtype = np.float64 if config.run.precision == "float64" else np.float32
        self.floor = config.vessels.integrity_floor
        self.pk = PlasmaPK(config.therapy)
        self.drugs = tuple(a for a in DRUG_AGENTS if config.therapy.uses(a))

        # compact per-voxel state ---------------------------------------------------------
        self.tissue = ti.field(ti.u8, shape=self.shape)
        self.niche = ti.field(ti.u8, shape=self.shape)
        self.integrity = ti.field(ti.f32, shape=self.shape)
        self.tissue.from_numpy(np.ascontiguousarray(anatomy.tissue, dtype=np.uint8))
        self.niche.from_numpy(np.ascontiguousarray(anatomy.niche, dtype=np.uint8))
        self.integrity.from_numpy(np.ascontiguousarray(anatomy.integrity, dtype=np.float32))
        self.fields: dict[str, object] = {}
        for name in ("oxygen", "signal", *self.drugs):
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
        self.drug_active = {a: False for a in self.drugs}
        self.solve_iterations: dict[str, int] = {}

        # metrics -----------------------------------------------------------------------
        self.regions = RegionMasks(anatomy.tissue, self.voxel_um, config.stages.endosteal_band_um)
        self.history: dict[str, list[float]] = {}
        self._update_transport(self._pk_time(0.0), first=True)
        self._record_metrics()

    # ------------------------------------------------------------------ stepping
    def _pk_time(self, t0_h: float) -> float:
        """PK-driven quantities are evaluated at the middle of the step (midpoint rule)."""
        return t0_h + 0.5 * self.clock.dt_h

    def _update_transport(self, t_mid: float, first: bool = False) -> None:
        t0 = t_mid - 0.5 * self.clock.dt_h
        t1 = t0 + self.clock.dt_h
        args = (self.tissue, self.cells.cells, self.integrity)
        for name in ("oxygen", "signal"):
            info = self.field_solvers[name].solve(self.solver, self.fields[name], *args)
            self.solve_iterations[name] = info.iterations
        for agent in self.drugs:
            present = self.pk.is_present(agent, t0, t1)
            if present:
                fs = self.field_solvers[agent]
                fs.set_blood_level(float(self.pk.concentration_uM(agent, t_mid)))
                info = fs.solve(self.solver, self.fields[agent], *args)
                self.solve_iterations[agent] = info.iterations
            elif self.drug_active[agent] or first:
                self.fields[agent].fill(0)  # absent: the field is exactly zero and not solved
                self.solve_iterations[agent] = 0
            else:
                self.solve_iterations[agent] = 0
            self.drug_active[agent] = present

    def time_step(self) -> None:
        """Advance the model by one cell step of ``clock.dt_h`` hours."""
        dt = self.clock.dt_h
        t0 = self.clock.time_h
        t_mid = self._pk_time(t0)
        # 1-2. PK and transport
        self._update_transport(t_mid)
        # 3. cells: transplants home first, then the lattice rules
        n_tx = self.config.therapy.transplanted_cells_between(t0, t0 + dt)
        if n_tx:
            placed = self.cells.home_hsc(n_tx, self.tissue, self.niche, self.integrity, integrity_floor=self.floor)
            log.info("day %.2f: %d of %d transplanted HSCs homed to free niche slots", t0 / 24, placed, n_tx)
        self.cells.step(
            self.tissue, self.niche, self.integrity, self.fields["oxygen"],
            self.fields["cytarabine"] if self.drug_active.get("cytarabine") else None,
            self.fields["daunorubicin"] if self.drug_active.get("daunorubicin") else None,
            dt_hours=dt, integrity_floor=self.floor,
            release_multiplier=float(self.pk.niche_release_multiplier(t_mid)),
        )
        # 4. vessels
        update_integrity(self.tissue, self.integrity, self.fields["signal"], self.config.vessels.kernel_params(),
                         dt_hours=dt, dfo_protection=float(np.clip(self.pk.vessel_loss_protection(t_mid), 0.0, 1.0)))
        # 5. clock and metrics
        self.clock.iteration += 1
        self._record_metrics()

    def check_finite(self) -> None:
        """Raise NonFiniteError when any field holds NaN or Inf."""
        for name, f in self.fields.items():
            arr = f.to_numpy()
            if not np.all(np.isfinite(arr)):
                bad = int(np.count_nonzero(~np.isfinite(arr)))
                raise NonFiniteError(f"field {name!r} holds {bad} non-finite values at step {self.clock.iteration}")

    # ------------------------------------------------------------------ metrics
    def current_metrics(self) -> dict[str, float]:
        """One row of readouts for the current state (see ``metric_units`` for units)."""
        t_mid = self._pk_time(self.clock.time_h)
        o2 = self.config.transport.oxygen
        m: dict[str, float] = {"time_h": self.clock.time_h}
        cm = self.cells.metrics(self.tissue, self.niche)
        m.update({k: float(v) for k, v in cm.items() if k != "step_index"})
        cells_total = sum(cm[f"count_{n}"] for n in ("hsc", "progenitor", "lsc", "blast"))
        leuk = cm["count_lsc"] + cm["count_blast"]
        m["cells_total"] = float(cells_total)
        m["leukemic_fraction"] = leuk / cells_total if cells_total else 0.0
        functional = sum(cm[f"niche_{k}_functional"] for k in ("endosteal", "perivascular"))
        held_hsc = sum(cm[f"niche_{k}_hsc"] for k in ("endosteal", "perivascular"))
        held_lsc = sum(cm[f"niche_{k}_lsc"] for k in ("endosteal", "perivascular"))
        slots = sum(cm[f"niche_{k}_slots"] for k in ("endosteal", "perivascular"))
        m["hsc_niche_share"] = held_hsc / slots if slots else 0.0
        m["lsc_niche_share"] = held_lsc / slots if slots else 0.0
        m["functional_niche_fraction"] = functional / slots if slots else 0.0
        m.update(oxygen_metrics(self.fields["oxygen"].to_numpy(), self.regions, o2.hypoxic_mmHg, o2.severe_hypoxic_mmHg))
        m.update(integrity_metrics(self.integrity.to_numpy(), self.regions, self.floor, self.leak))
        m.update(field_region_means(self.fields["signal"].to_numpy(), self.regions, "signal"))
        for agent in DRUG_AGENTS:
            if agent in self.fields:
                m.update(field_region_means(self.fields[agent].to_numpy(), self.regions, f"{agent}_tissue_uM"))
        for agent in PK_AGENTS:
            m[f"plasma_{agent}_uM"] = float(self.pk.concentration_uM(agent, t_mid)) if self.config.therapy.uses(agent) else 0.0
        m["niche_release_multiplier"] = float(self.pk.niche_release_multiplier(t_mid))
        m["dfo_protection"] = float(self.pk.vessel_loss_protection(t_mid))
        for name, its in self.solve_iterations.items():
            m[f"solver_iterations_{name}"] = float(its)
        m["stage"] = float(disease_stage(m["leukemic_fraction"], m["arteriole_mean_integrity"], self.config.stages))
        return m

    def _record_metrics(self) -> None:
        row = self.current_metrics()
        if not self.history:
            self.history = {k: [] for k in row}
        for k in self.history:
            self.history[k].append(row.get(k, float("nan")))

    def metric_units(self) -> dict[str, str]:
        """Every time-series name with its unit (the columns of ``/timeseries``)."""
        return {k: _metric_unit(k) for k in self.history}

    def history_arrays(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v, dtype=np.float64) for k, v in self.history.items()}

    def history_time(self) -> list[float]:
        return self.history["time_h"]

    def progress_summary(self) -> str:
        """A short live readout for the progress bar."""
        h = self.history
        stage = int(h["stage"][-1])
        return (f"LSC {int(h['count_lsc'][-1])} blast {int(h['count_blast'][-1])} "
                f"HSC {int(h['count_hsc'][-1])} | pO2 {h['o2_mean_mmHg'][-1]:.1f} mmHg | "
                f"{['pre-leukemic', 'permissive', 'self-reinforcing'][stage]}")

    # ------------------------------------------------------------------ arrays for writers
    def array_names(self) -> list[str]:
        return [*self.fields, "cells", "lodged", "integrity"]

    def has_array(self, name: str) -> bool:
        return name in self.array_names() or name in self.final_state_spec()

    def get_array(self, name: str) -> np.ndarray:
        """A state array by name (``oxygen``, ``cells``, ``lodged``, ``integrity``, ``fields/x``...)."""
        if name.startswith("fields/"):
            name = name.split("/", 1)[1]
        if name in self.fields:
            return self.fields[name].to_numpy()
        if name == "cells":
            return self.cells.cells.to_numpy()
        if name == "lodged":
            return (self.cells.flags.to_numpy() & LODGED).astype(np.uint8)
        if name in ("integrity", "vessel_integrity"):
            return self.integrity.to_numpy()
        raise KeyError(f"no array named {name!r}")

    def array_dtype(self, name: str) -> np.dtype:
        return np.dtype(np.uint8) if name in ("cells", "lodged") else (
            np.dtype(np.float32) if name == "integrity" else np.dtype(self.np_dtype))

    def array_units(self, name: str) -> str:
        if name in FIELD_UNITS:
            return FIELD_UNITS[name]
        return {"cells": "code", "lodged": "flag", "integrity": "1"}.get(name, "")

    def final_state_spec(self) -> dict[str, tuple[str, str]]:
        """Datasets of ``/state`` in run.h5: path -> (dtype, units)."""
        spec = {"cells": ("u1", "code"), "lodged": ("u1", "flag"), "vessel_integrity": ("f4", "1")}
        for name in self.fields:
            spec[f"fields/{name}"] = ("f4", FIELD_UNITS[name])
        return spec

    # ------------------------------------------------------------------ checkpoint protocol
    def prognostic_state(self) -> dict:
        """Everything needed to continue bit-for-bit (see docs/file-format.md)."""
        return {
            "anatomy": {
                "tissue": self.tissue.to_numpy(),
                "niche": self.niche.to_numpy(),
                "voxel_um": self.voxel_um,
                "origin_um": np.asarray(self.anatomy.origin_um, dtype=np.float64),
            },
            "cells": self.cells.get_state(),
            "vessel_integrity": self.integrity.to_numpy(),
            "fields": {name: f.to_numpy() for name, f in self.fields.items()},
            "drug_active": {a: bool(v) for a, v in self.drug_active.items()},
            "solve_iterations": {k: int(v) for k, v in self.solve_iterations.items()},
            "clock": {"iteration": int(self.clock.iteration), "dt_h": float(self.clock.dt_h)},
            "history": self.history_arrays(),
        }

    def restore_prognostic_state(self, state: dict) -> None:
        """Load a state written by :meth:`prognostic_state` (shapes are checked)."""
        from .errors import CheckpointError

        def check(name, arr, dtype=None):
            arr = np.asarray(arr)
            if arr.shape != self.shape:
                raise CheckpointError(f"checkpoint dataset {name} has shape {arr.shape}, expected {self.shape}")
            return arr if dtype is None else arr.astype(dtype, copy=False)

        anat = state["anatomy"]
        self.tissue.from_numpy(check("anatomy/tissue", anat["tissue"], np.uint8))
        self.niche.from_numpy(check("anatomy/niche", anat["niche"], np.uint8))
        self.integrity.from_numpy(check("vessel_integrity", state["vessel_integrity"], np.float32))
        for name, f in self.fields.items():
            if name not in state["fields"]:
                if name in self.drugs:  # a branch dosing a drug its parent never used: it was 0
                    f.fill(0)
                    continue
                raise CheckpointError(f"checkpoint has no field {name!r}")
            f.from_numpy(check(f"fields/{name}", state["fields"][name], self.np_dtype))
        cells = state["cells"]
        for key in ("cells", "flags", "generation"):
            check(f"cells/{key}", cells[key])
        self.cells.set_state(cells)
        self.drug_active = {a: bool(state.get("drug_active", {}).get(a, False)) for a in self.drugs}
        self.solve_iterations = {k: int(v) for k, v in state.get("solve_iterations", {}).items()}
        for agent in self.drugs:
            self.solve_iterations.setdefault(agent, 0)
        clock = state["clock"]
        if abs(float(clock["dt_h"]) - self.clock.dt_h) > 1e-12:
            raise CheckpointError(f"checkpoint cell step {clock['dt_h']} h differs from the config's {self.clock.dt_h} h")
        self.clock.iteration = int(clock["iteration"])
        hist = state["history"]
        self.history = {k: [float(x) for x in np.asarray(v)] for k, v in hist.items()}
        # A branch may add readouts (a new drug's tissue levels): NaN before the branch point.
        n = len(self.history.get("time_h", []))
        for k in self.current_metrics():
            if k not in self.history:
                self.history[k] = [float("nan")] * n

    def __repr__(self) -> str:
        nz, ny, nx = self.shape
        return (f"MarrowModel({nz}x{ny}x{nx} voxels of {self.voxel_um} um, step {self.clock.iteration}, "
                f"t = {self.clock.time_h / 24:.2f} d, fields {list(self.fields)}, {self.dtype})")


def _metric_unit(name: str) -> str:
    if name == "time_h":
        return "h"
    if name.endswith("_mmHg"):
        return "mmHg"
    if name.endswith("_uM") or "_tissue_uM_" in name:
        return "uM"
    if "_uM_h_" in name:
        return "uM h (summed over cells)"
    if name.startswith("cell_hours_"):
        return "cell h"
    if name.startswith("signal_mean"):
        return "su"
    if name == "stage":
        return "0 pre-leukemic, 1 permissive, 2 self-reinforcing"
    if "fraction" in name or "share" in name or "integrity" in name or "factor" in name or "multiplier" in name or name == "dfo_protection":
        return "1"
    return "count"
