"""The time series of a run: one row of readouts per cell step, reduced on the device.

:class:`MetricsRecorder` (``model.metrics``) assembles a row: cell counts, niche shares,
events and exposures (the lattice's integer counters), pO2 statistics, vessel integrity,
regional field means, plasma levels, solver iterations and the disease stage. It keeps the
history and knows every column's unit.

Everything that needs the grid is reduced on the device (:mod:`marrow3d.kernels.readouts`,
:mod:`marrow3d.kernels.cells_metrics`) into one float64 result array, read back once per step
(88-94 values, whatever the grid): one kernel launch for the cells, two per field (oxygen,
signal, vessel integrity, each drug while dosed: its copy or gather, then its reduction). On the CPU the values are bitwise those of the numpy
readouts (``kernels.readouts_reference``): sums in numpy's pairwise order, exact counts and
exact order statistics interpolated with ``np.percentile``'s formula. The GPU layout sums
in a fixed strided tree instead (deterministic, within a few ulps).

Adding a readout (see docs/model.md, section 6):

* a per-cell or per-slot count: count it in ``kernels/cells_metrics.py`` (``_count_voxel``
  and ``BUFFER_NAMES``); the column appears by itself;
* a statistic of a field: give the field a :class:`~marrow3d.kernels.readouts.FieldReduction`
  in :meth:`MetricsRecorder._field_reductions` (sums, counts below a threshold, order
  statistics over any set of regions) and turn its slots into columns in :meth:`row`;
* anything computed on the host from the others (shares, fractions, the stage): in :meth:`row`.
"""

from __future__ import annotations

import numpy as np

from .config.transport import DRUG_AGENTS
from .kernels.codes import REGION_ARTERIOLE, REGION_CENTRAL, REGION_ENDOSTEAL, REGION_SINUSOID
from .regions import region_codes

__all__ = ["MetricsRecorder", "disease_stage", "metric_unit", "percentile_ranks", "interpolate_percentiles",
           "STAGE_NAMES", "PK_AGENTS", "O2_PERCENTILES"]

STAGE_NAMES = {0: "pre-leukemic", 1: "permissive", 2: "self-reinforcing"}
#: Agents whose plasma level is a column (``plasma_<agent>_uM``), dosed or not.
PK_AGENTS = ("cytarabine", "daunorubicin", "plerixafor", "deferoxamine")
#: pO2 percentiles over the marrow (columns ``o2_p05_mmHg`` ...).
O2_PERCENTILES = (5, 50, 95)

# Region sets (bit masks of region codes, ``kernels.readouts.region_mask``).
_ENDO = 1 << REGION_ENDOSTEAL
_CENTRAL = 1 << REGION_CENTRAL
_MARROW = _ENDO | _CENTRAL
_ARTERIOLE = 1 << REGION_ARTERIOLE
_SINUSOID = 1 << REGION_SINUSOID


def disease_stage(leukemic_fraction: float, arteriole_integrity: float, stages, conditioned_share: float = 0.0) -> int:
    """Stage code (0 pre-leukemic, 1 permissive, 2 self-reinforcing) from current readouts.

    Self-reinforcing: leukemic cells at least ``reinforcing_leukemic_fraction`` and the niche
    remodelled, either by endosteal vessel loss (mean arteriole integrity at or below
    ``reinforcing_arteriole_integrity``) or by leukemia-conditioned slots (their share of all
    niche slots at least ``reinforcing_conditioned_share``; always 0 with the mechanism off).
    """
    remodelled = (arteriole_integrity <= stages.reinforcing_arteriole_integrity
                  or conditioned_share >= stages.reinforcing_conditioned_share)
    if leukemic_fraction >= stages.reinforcing_leukemic_fraction and remodelled:
        return 2
    if leukemic_fraction >= stages.permissive_leukemic_fraction:
        return 1
    return 0


def metric_unit(name: str) -> str:
    """Unit of the time-series column ``name`` (``/timeseries/<name>`` attribute ``units``)."""
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


# ------------------------------------------------------------------------------ percentiles
def _positions(n: int, q) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.percentile``'s (method "linear") lower and upper ranks and weights for ``n`` values."""
    qf = np.true_divide(np.asarray(q, dtype=np.float64), 100)
    virtual = (n - 1) * qf
    prev = np.floor(virtual)
    nxt = prev + 1
    above = virtual >= n - 1
    prev[above] = -1
    nxt[above] = -1
    below = virtual < 0
    prev[below] = 0
    nxt[below] = 0
    gamma = np.asanyarray(virtual - prev, dtype=np.float64)  # as numpy's _get_gamma
    prev = prev.astype(np.intp)
    nxt = nxt.astype(np.intp)
    return np.where(prev < 0, n + prev, prev), np.where(nxt < 0, n + nxt, nxt), gamma


def percentile_ranks(n: int, q) -> tuple[int, ...]:
    """The order statistics (0-based ranks) that the ``q`` percentiles of ``n`` values, their
    minimum and maximum need."""
    lo, hi, _ = _positions(n, q)
    return tuple(sorted({0, n - 1, *(int(k) for k in lo), *(int(k) for k in hi)}))


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """numpy's own interpolation formula of ``np.percentile`` (method "linear"), verbatim."""
    diff_b_a = np.subtract(b, a)
    out = np.asanyarray(np.add(a, diff_b_a * t))
    np.subtract(b, diff_b_a * (1 - t), out=out, where=t >= 0.5, casting="unsafe", dtype=out.dtype)
    return out


def interpolate_percentiles(order: dict[int, float], n: int, q) -> np.ndarray:
    """``np.percentile(values.astype(float64), q)`` from the values' order statistics.

    ``order`` maps every rank of :func:`percentile_ranks` to its value; the result is bitwise
    what ``np.percentile`` returns (same ranks, same weights, same formula).
    """
    lo, hi, gamma = _positions(n, q)
    a = np.array([order[int(k)] for k in lo], dtype=np.float64)
    b = np.array([order[int(k)] for k in hi], dtype=np.float64)
    return _lerp(a, b, gamma)


# ------------------------------------------------------------------------------ recorder
class MetricsRecorder:
    """The time series of one model: a row of readouts per step, and the history so far.

    Parameters
    ----------
    model : MarrowModel
        The model whose readouts are recorded. Its anatomy defines the metric regions
        (:mod:`marrow3d.regions`, endosteal band ``stages.endosteal_band_um``), written once
        to the device as one byte per voxel.
    gpu_layout : bool, optional
        Reduce with the GPU layout (default: when the backend is a GPU; tests force it on
        the CPU).

    Attributes
    ----------
    history : dict of str to list of float
        One list per column, one entry per recorded step (the ``/timeseries`` datasets).
    """

    def __init__(self, model, *, gpu_layout: bool | None = None) -> None:
        # The kernel modules are imported here, not at the top: STAGE_NAMES and metric_unit
        # are read by the analysis of saved runs, which needs no kernel compiler.
        from .kernels import readouts as R
        from .kernels.cells_metrics import READOUT_LAYOUT
        from .kernels.ti_compat import is_gpu_arch, ti

        self._layout = READOUT_LAYOUT
        cfg = model.config
        self.gpu_layout = is_gpu_arch() if gpu_layout is None else bool(gpu_layout)
        codes = region_codes(model.anatomy.tissue, model.voxel_um, cfg.stages.endosteal_band_um)
        self.region_sizes = {name: int(np.count_nonzero(codes == c)) for name, c in (
            ("endosteal", REGION_ENDOSTEAL), ("central", REGION_CENTRAL),
            ("arteriole", REGION_ARTERIOLE), ("sinusoid", REGION_SINUSOID))}
        self.region_sizes["marrow"] = self.region_sizes["endosteal"] + self.region_sizes["central"]
        self.region = ti.ndarray(ti.u8, shape=model.shape)
        self.region.from_numpy(codes)
        self._cells_offset = 0
        specs = self._field_reductions(model)
        sizes = {name: _width(spec) for name, spec in specs.items()}
        #: Every readout of a step, in slots: the lattice's, then each field's (one transfer).
        self.values = ti.ndarray(ti.f64, shape=len(READOUT_LAYOUT) + sum(sizes.values()))
        #: Where each reduction copies or gathers its field (the model's float dtype, which
        #: holds every field exactly).
        shape = R.scratch_shape(codes, [spec[1:] for spec in specs.values()], self.gpu_layout)
        self.scratch = ti.ndarray(model.dtype, shape=shape)
        self._fields = {name: spec[0] for name, spec in specs.items()}
        self._reductions: dict[str, R.FieldReduction] = {}
        offset = len(READOUT_LAYOUT)
        for name, (_, sums, counts, order) in specs.items():
            self._reductions[name] = R.FieldReduction(self.region, codes, self.values, offset, self.scratch, sums=sums,
                                                      counts=counts, order=order, gpu=self.gpu_layout)
            offset += sizes[name]
        del codes
        self.history: dict[str, list[float]] = {}

    def _field_reductions(self, model) -> dict:
        """What is reduced of each field: name -> (field, sums, counts, order statistics)."""
        from .kernels import readouts as R

        o2 = model.config.transport.oxygen
        marrow_means = (R.SumSpec(_MARROW), R.SumSpec(_ENDO), R.SumSpec(_CENTRAL))
        n_marrow = self.region_sizes["marrow"]
        self._o2_ranks = percentile_ranks(n_marrow, O2_PERCENTILES) if n_marrow else ()
        specs = {
            "oxygen": (model.fields["oxygen"], marrow_means,
                       (R.CountSpec(_ENDO, o2.hypoxic_mmHg), R.CountSpec(_ENDO, o2.severe_hypoxic_mmHg),
                        R.CountSpec(_CENTRAL, o2.hypoxic_mmHg), R.CountSpec(_CENTRAL, o2.severe_hypoxic_mmHg)),
                       R.OrderSpec(_MARROW, self._o2_ranks) if n_marrow else None),
            "integrity": (model.integrity,
                          (R.SumSpec(_ARTERIOLE, ((R.VALUE, 0.0, 0.0), (R.EXCHANGE_FACTOR, model.floor, model.leak[1]))),
                           R.SumSpec(_SINUSOID, ((R.VALUE, 0.0, 0.0), (R.EXCHANGE_FACTOR, model.floor, model.leak[2])))),
                          (R.CountSpec(_ARTERIOLE, model.floor), R.CountSpec(_SINUSOID, model.floor)), None),
            "signal": (model.fields["signal"], marrow_means, (), None),
        }
        for agent in DRUG_AGENTS:
            if agent in model.fields:
                specs[agent] = (model.fields[agent], marrow_means, (), None)
        return specs

    # ------------------------------------------------------------------ one row
    def reduce(self, model) -> np.ndarray:
        """Run every reduction of the current state and read the results back (one transfer)."""
        from .kernels.cells_metrics import write_readouts

        write_readouts(model.cells, model.tissue, model.niche, self.values, self._cells_offset, self.gpu_layout)
        for name, red in self._reductions.items():
            if name in model.drug_active and not model.drug_active[name]:
                continue  # an absent drug's field is exactly zero: nothing to reduce
            red.launch(self._fields[name])
        return self.values.to_numpy()

    def row(self, model) -> dict[str, float]:
        """One row of readouts for the model's current state (see :meth:`units`)."""
        values = self.reduce(model)
        t_mid = model.pk_time(model.clock.time_h)
        cfg = model.config
        m: dict[str, float] = {"time_h": model.clock.time_h}
        for (name, _, _, _), v in zip(self._layout, values):
            m[name] = float(v)
        cells_total = sum(m[f"count_{n}"] for n in ("hsc", "progenitor", "lsc", "blast"))
        m["cells_total"] = cells_total
        m["leukemic_fraction"] = (m["count_lsc"] + m["count_blast"]) / cells_total if cells_total else 0.0
        functional = sum(m[f"niche_{k}_functional"] for k in ("endosteal", "perivascular"))
        held_hsc = sum(m[f"niche_{k}_hsc"] for k in ("endosteal", "perivascular"))
        held_lsc = sum(m[f"niche_{k}_lsc"] for k in ("endosteal", "perivascular"))
        slots = sum(m[f"niche_{k}_slots"] for k in ("endosteal", "perivascular"))
        m["hsc_niche_share"] = held_hsc / slots if slots else 0.0
        m["lsc_niche_share"] = held_lsc / slots if slots else 0.0
        m["functional_niche_fraction"] = functional / slots if slots else 0.0
        conditioned = sum(m[f"niche_{k}_conditioned"] for k in ("endosteal", "perivascular"))
        conditioned_lsc = sum(m[f"niche_{k}_conditioned_lsc"] for k in ("endosteal", "perivascular"))
        m["conditioned_niche_share"] = conditioned / slots if slots else 0.0
        m["conditioned_lsc_niche_share"] = conditioned_lsc / slots if slots else 0.0
        m.update(self._oxygen(values))
        m.update(self._integrity(values))
        m.update(self._means(values, "signal", "signal", model))
        for agent in DRUG_AGENTS:
            if agent in model.fields:
                m.update(self._means(values, agent, f"{agent}_tissue_uM", model))
        for agent in PK_AGENTS:
            m[f"plasma_{agent}_uM"] = float(model.pk.concentration_uM(agent, t_mid)) if cfg.therapy.uses(agent) else 0.0
        m["niche_release_multiplier"] = float(model.pk.niche_release_multiplier(t_mid))
        m["dfo_protection"] = float(model.pk.vessel_loss_protection(t_mid))
        for name, its in model.solve_iterations.items():
            m[f"solver_iterations_{name}"] = float(its)
        m["stage"] = float(disease_stage(m["leukemic_fraction"], m["arteriole_mean_integrity"], cfg.stages,
                                         m["conditioned_niche_share"]))
        return m

    def _sum(self, values, field: str, k: int) -> float:
        return float(values[self._reductions[field].sum_slots[k]])

    def _mean(self, values, field: str, k: int, region: str) -> float:
        n = self.region_sizes[region]
        return self._sum(values, field, k) / n if n else float("nan")

    def _oxygen(self, values) -> dict[str, float]:
        red = self._reductions["oxygen"]
        n = self.region_sizes
        out: dict[str, float] = {}
        if n["marrow"]:
            order = {k: float(values[s]) for k, s in zip(self._o2_ranks, red.order_slots)}
            q = interpolate_percentiles(order, n["marrow"], O2_PERCENTILES)
            out.update(o2_min_mmHg=order[0], o2_p05_mmHg=float(q[0]), o2_p50_mmHg=float(q[1]),
                       o2_p95_mmHg=float(q[2]), o2_max_mmHg=order[n["marrow"] - 1])
        c_endo_hyp, c_endo_sev, c_cen_hyp, c_cen_sev = (int(values[s]) for s in red.count_slots)
        for prefix, region, k, hyp, sev in (("o2", "marrow", 0, c_endo_hyp + c_cen_hyp, c_endo_sev + c_cen_sev),
                                             ("o2_endosteal", "endosteal", 1, c_endo_hyp, c_endo_sev),
                                             ("o2_central", "central", 2, c_cen_hyp, c_cen_sev)):
            size = n[region]
            if not size:
                nan = float("nan")
                out.update({f"{prefix}_mean_mmHg": nan, f"{prefix}_hypoxic_fraction": nan,
                            f"{prefix}_severe_fraction": nan})
                continue
            out[f"{prefix}_mean_mmHg"] = self._sum(values, "oxygen", k) / size
            out[f"{prefix}_hypoxic_fraction"] = float(hyp) / size
            out[f"{prefix}_severe_fraction"] = float(sev) / size
        return out

    def _integrity(self, values) -> dict[str, float]:
        red = self._reductions["integrity"]
        out: dict[str, float] = {}
        for i, name in enumerate(("arteriole", "sinusoid")):
            size = self.region_sizes[name]
            if not size:
                out.update({f"{name}_mean_integrity": float("nan"), f"{name}_fraction_lost": float("nan"),
                            f"{name}_exchange_factor": float("nan")})
                continue
            out[f"{name}_mean_integrity"] = self._sum(values, "integrity", 2 * i) / size
            out[f"{name}_fraction_lost"] = float(int(values[red.count_slots[i]])) / size
            out[f"{name}_exchange_factor"] = self._sum(values, "integrity", 2 * i + 1) / size
        return out

    def _means(self, values, field: str, prefix: str, model) -> dict[str, float]:
        absent = field in model.drug_active and not model.drug_active[field]
        out = {}
        for k, (suffix, region) in enumerate((("", "marrow"), ("_endosteal", "endosteal"), ("_central", "central"))):
            if absent:  # the field is exactly zero (not reduced): its mean is 0, as numpy's
                out[f"{prefix}_mean{suffix}"] = 0.0 if self.region_sizes[region] else float("nan")
            else:
                out[f"{prefix}_mean{suffix}"] = self._mean(values, field, k, region)
        return out

    def record(self, model) -> None:
        """Append the current row to the history."""
        row = self.row(model)
        if not self.history:
            self.history = {k: [] for k in row}
        for k in self.history:
            self.history[k].append(row.get(k, float("nan")))

    # ------------------------------------------------------------------ history
    def units(self) -> dict[str, str]:
        """Every column with its unit (the columns of ``/timeseries``)."""
        return {k: metric_unit(k) for k in self.history}

    def history_arrays(self) -> dict[str, np.ndarray]:
        """The history as float64 arrays."""
        return {k: np.asarray(v, dtype=np.float64) for k, v in self.history.items()}

    def __len__(self) -> int:
        return len(self.history.get("time_h", []))

    def restore(self, history: dict, model) -> None:
        """Replace the history by a checkpoint's; columns the model now adds (a branch's new
        drug) are NaN before the branch point."""
        self.history = {k: [float(x) for x in np.asarray(v)] for k, v in history.items()}
        n = len(self)
        for k in self.row(model):
            if k not in self.history:
                self.history[k] = [float("nan")] * n

    def summary(self) -> str:
        """A short live readout of the newest row (for a progress display)."""
        h = self.history
        stage = int(h["stage"][-1])
        return (f"LSC {int(h['count_lsc'][-1])} blast {int(h['count_blast'][-1])} "
                f"HSC {int(h['count_hsc'][-1])} | pO2 {h['o2_mean_mmHg'][-1]:.1f} mmHg | "
                f"{STAGE_NAMES[stage]}")

    def nbytes(self) -> int:
        """Device bytes of the readouts: region codes, scratch field, results, the reductions' tables."""
        scratch = int(np.prod(self.scratch.shape)) * (8 if self.scratch.dtype == self.values.dtype else 4)
        return (int(np.prod(self.region.shape)) + scratch + 8 * int(self.values.shape[0])
                + sum(r.nbytes() for r in self._reductions.values()))


def _width(spec) -> int:
    _, sums, counts, order = spec
    return sum(len(s.channels) for s in sums) + len(counts) + (len(order.ranks) if order else 0)
