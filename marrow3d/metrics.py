"""The time series of a run: one row of readouts per cell step, recorded from the model state.

:class:`MetricsRecorder` assembles a row (cell counts and niche shares, pO2 statistics,
vessel integrity, regional field means, plasma levels, solver iterations, disease stage),
keeps the history and knows every column's unit. The regional statistics are summed in numpy
(pairwise summation, one thread), so the time series are bit-identical for any Taichi thread
count. The cell lattice's own counters come from integer kernels and are exact too.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .config.transport import DRUG_AGENTS
from .kernels import codes

__all__ = ["MetricsRecorder", "RegionMasks", "percentiles", "oxygen_metrics", "integrity_metrics", "field_region_means",
           "disease_stage", "metric_unit", "STAGE_NAMES", "PK_AGENTS"]

STAGE_NAMES = {0: "pre-leukemic", 1: "permissive", 2: "self-reinforcing"}
#: Agents whose plasma level is a column (``plasma_<agent>_uM``), dosed or not.
PK_AGENTS = ("cytarabine", "daunorubicin", "plerixafor", "deferoxamine")


class RegionMasks:
    """Flat indices of the marrow regions used by the metrics.

    ``endosteal``: marrow voxels within ``band_um`` of bone; ``central``: the other marrow
    voxels. Arteriole and sinusoid-class vessel voxels are kept as flat index arrays too.

    Stored compactly (about 4 bytes per voxel instead of 14): int32 indices (grids hold fewer
    than 2^31 voxels), and the endosteal/central split as one boolean per marrow voxel
    (``marrow_is_endosteal``), so a field is gathered once over the marrow and split by a mask
    (the same values in the same order as gathering each region's indices).
    ``endosteal`` and ``central`` are still available as index arrays (built on access).
    """

    def __init__(self, tissue: np.ndarray, voxel_um: float, band_um: float) -> None:
        flat = tissue.ravel()
        marrow = tissue == codes.MARROW
        bone = tissue == codes.BONE
        if bone.any():
            dist = ndimage.distance_transform_edt(~bone, sampling=voxel_um)
            endo = marrow & (dist <= band_um)
            del dist
        else:
            endo = np.zeros_like(marrow)
        idx_t = np.int32 if flat.size < 2**31 else np.int64
        self.marrow = np.flatnonzero(marrow.ravel()).astype(idx_t)
        self.marrow_is_endosteal = endo.ravel()[self.marrow]
        self.arteriole = np.flatnonzero(flat == codes.ARTERIOLE).astype(idx_t)
        self.sinusoid = np.flatnonzero((flat == codes.SINUSOID) | (flat == codes.CENTRAL_SINUS)).astype(idx_t)
        self.arteriole_endosteal = self.arteriole  # arterioles are generated near bone

    @property
    def endosteal(self) -> np.ndarray:
        return self.marrow[self.marrow_is_endosteal]

    @property
    def central(self) -> np.ndarray:
        return self.marrow[~self.marrow_is_endosteal]

    def split(self, marrow_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(endosteal, central) parts of values gathered over ``marrow`` (index order kept)."""
        return marrow_values[self.marrow_is_endosteal], marrow_values[~self.marrow_is_endosteal]

    def nbytes(self) -> int:
        """Host memory held by the masks (bytes)."""
        return sum(a.nbytes for a in (self.marrow, self.marrow_is_endosteal, self.arteriole, self.sinusoid))


def _stats(values: np.ndarray, prefix: str, hypoxic: float, severe: float) -> dict[str, float]:
    if values.size == 0:
        nan = float("nan")
        return {f"{prefix}_mean_mmHg": nan, f"{prefix}_hypoxic_fraction": nan, f"{prefix}_severe_fraction": nan}
    v = values.astype(np.float64)
    return {
        f"{prefix}_mean_mmHg": float(v.mean()),
        f"{prefix}_hypoxic_fraction": float(np.count_nonzero(v < hypoxic)) / v.size,
        f"{prefix}_severe_fraction": float(np.count_nonzero(v < severe)) / v.size,
    }


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """numpy's own interpolation formula of ``np.percentile`` (method "linear"), verbatim."""
    diff_b_a = np.subtract(b, a)
    out = np.asanyarray(np.add(a, diff_b_a * t))
    np.subtract(b, diff_b_a * (1 - t), out=out, where=t >= 0.5, casting="unsafe", dtype=out.dtype)
    return out


def percentiles(values: np.ndarray, q) -> tuple[np.ndarray, float, float]:
    """``(np.percentile(values.astype(float64), q), min, max)``, bitwise, at lower cost.

    Selects the order statistics on the array's own dtype (float32 fields: half the bytes
    of the float64 copy ``np.percentile`` would partition; the cast is exact and monotone, so
    the selected values are the same) and interpolates in float64 with numpy's formula
    (method "linear"). Min and max come from the same partition. ``values`` is overwritten
    (partitioned in place); it must hold no NaN and at least one value.
    """
    n = values.size
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
    prev = prev.astype(np.intp)
    nxt = nxt.astype(np.intp)
    kth = np.unique(np.concatenate(([0, n - 1], np.where(prev < 0, n + prev, prev), np.where(nxt < 0, n + nxt, nxt))))
    values.partition(kth)
    a = values[prev].astype(np.float64)
    b = values[nxt].astype(np.float64)
    gamma = np.asanyarray(virtual - prev, dtype=np.float64)  # as numpy's _get_gamma
    return _lerp(a, b, gamma), float(values[0]), float(values[n - 1])


def oxygen_metrics(oxygen: np.ndarray, regions: RegionMasks, hypoxic: float, severe: float) -> dict[str, float]:
    """pO2 mean, quantiles, hypoxic (< ``hypoxic``) and severe (< ``severe``) fractions by region."""
    flat = oxygen.ravel()
    marrow = flat[regions.marrow]
    out: dict[str, float] = {}
    endo, central = regions.split(marrow)
    if marrow.size:
        q, lo, hi = percentiles(marrow.copy(), [5, 50, 95])
        out.update(o2_min_mmHg=lo, o2_p05_mmHg=float(q[0]), o2_p50_mmHg=float(q[1]),
                   o2_p95_mmHg=float(q[2]), o2_max_mmHg=hi)
    out.update(_stats(marrow, "o2", hypoxic, severe))
    out.update(_stats(endo, "o2_endosteal", hypoxic, severe))
    out.update(_stats(central, "o2_central", hypoxic, severe))
    return out


def integrity_metrics(integrity: np.ndarray, regions: RegionMasks, floor: float, leak: np.ndarray) -> dict[str, float]:
    """Vessel integrity by class: mean, fraction lost (below the floor), mean exchange factor.

    The exchange factor ``I (1 + leak (1 - I))`` (0 below the floor) is what multiplies a
    vessel's healthy exchange rate: it shows when sinusoid exchange starts to change.
    """
    flat = integrity.ravel()
    out: dict[str, float] = {}
    for name, idx, lk in (("arteriole", regions.arteriole, leak[1]), ("sinusoid", regions.sinusoid, leak[2])):
        v = flat[idx].astype(np.float64)
        if v.size == 0:
            out.update({f"{name}_mean_integrity": float("nan"), f"{name}_fraction_lost": float("nan"),
                        f"{name}_exchange_factor": float("nan")})
            continue
        factor = np.where(v >= floor, v * (1.0 + lk * (1.0 - v)), 0.0)
        out[f"{name}_mean_integrity"] = float(v.mean())
        out[f"{name}_fraction_lost"] = float(np.count_nonzero(v < floor)) / v.size
        out[f"{name}_exchange_factor"] = float(factor.mean())
    return out


def field_region_means(values: np.ndarray, regions: RegionMasks, prefix: str) -> dict[str, float]:
    """Mean of a field over the marrow, the endosteal band and the central marrow."""
    marrow = values.ravel()[regions.marrow]
    out = {}
    for name, v in (("", marrow), *zip(("_endosteal", "_central"), regions.split(marrow))):
        out[f"{prefix}_mean{name}"] = float(v.astype(np.float64).mean()) if v.size else float("nan")
    return out


def disease_stage(leukemic_fraction: float, arteriole_integrity: float, stages) -> int:
    """Stage code (0 pre-leukemic, 1 permissive, 2 self-reinforcing) from current readouts."""
    if leukemic_fraction >= stages.reinforcing_leukemic_fraction and arteriole_integrity <= stages.reinforcing_arteriole_integrity:
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


class MetricsRecorder:
    """The time series of one model: a row of readouts per step, and the history so far.

    Parameters
    ----------
    model : MarrowModel
        The model whose readouts are recorded; its anatomy defines the metric regions
        (:class:`RegionMasks`, band ``stages.endosteal_band_um``).

    Attributes
    ----------
    history : dict of str to list of float
        One list per column, one entry per recorded step (the ``/timeseries`` datasets).
    """

    def __init__(self, model) -> None:
        cfg = model.config
        self.regions = RegionMasks(model.anatomy.tissue, model.voxel_um, cfg.stages.endosteal_band_um)
        self.history: dict[str, list[float]] = {}

    # ------------------------------------------------------------------ one row
    def row(self, model) -> dict[str, float]:
        """One row of readouts for the model's current state (see :meth:`units`)."""
        t_mid = model.pk_time(model.clock.time_h)
        cfg = model.config
        o2 = cfg.transport.oxygen
        m: dict[str, float] = {"time_h": model.clock.time_h}
        cm = model.cells.metrics(model.tissue, model.niche)
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
        m.update(oxygen_metrics(model.fields["oxygen"].to_numpy(), self.regions, o2.hypoxic_mmHg, o2.severe_hypoxic_mmHg))
        m.update(integrity_metrics(model.integrity.to_numpy(), self.regions, model.floor, model.leak))
        m.update(field_region_means(model.fields["signal"].to_numpy(), self.regions, "signal"))
        for agent in DRUG_AGENTS:
            if agent in model.fields:
                m.update(field_region_means(model.fields[agent].to_numpy(), self.regions, f"{agent}_tissue_uM"))
        for agent in PK_AGENTS:
            m[f"plasma_{agent}_uM"] = float(model.pk.concentration_uM(agent, t_mid)) if cfg.therapy.uses(agent) else 0.0
        m["niche_release_multiplier"] = float(model.pk.niche_release_multiplier(t_mid))
        m["dfo_protection"] = float(model.pk.vessel_loss_protection(t_mid))
        for name, its in model.solve_iterations.items():
            m[f"solver_iterations_{name}"] = float(its)
        m["stage"] = float(disease_stage(m["leukemic_fraction"], m["arteriole_mean_integrity"], cfg.stages))
        return m

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
