"""A plain numpy/scipy implementation of one model step: the baseline of the speedups.

:class:`NumpyMarrow` starts from a :class:`marrow3d.model.MarrowModel`'s state (same
anatomy, cells, vessel integrity, fields, coefficient tables and parameters) and advances it
the way a straightforward Python programmer would, with whole-array numpy operations and
scipy's sparse direct solver:

* **transport** (the same steady problems, to the same relative residual 1e-6): for each
  field (oxygen, the remodeling signal, each dosed drug) the coefficients are assembled by
  :func:`marrow3d.kernels.transport_reference.assemble_coefficients` and solved by
  :func:`~marrow3d.kernels.transport_reference.solve_steady` (Newton; each Newton step a
  ``scipy.sparse.linalg.spsolve`` of the 7-point operator, SuperLU with COLAMD ordering),
  warm-started from the previous field. This is the project's scipy reference, as is. Its cost
  grows much faster than the voxel count (fill-in of a 3-D direct factorisation): seconds at
  24^3, minutes at 32^3, out of reach at 64^3. It is run at small grids only;
* **cells** (a documented subset of :class:`marrow3d.kernels.cells.CellLattice.step`, with
  comparable work per voxel): HIF response, division and drug-kill rates of every cell, death
  (base + severe hypoxia + drug), division into a uniformly chosen empty marrow neighbour
  (daughter types as in the model: HSC -> progenitor, LSC -> LSC/blast by the self-renewal
  probability, progenitor generation + 1), random walk of free stem cells and blasts into an
  empty neighbour. Conflicts (two cells choosing one voxel) are settled by a random priority,
  as in the lattice. Left out: niche lodging/release, displacement, egress, AUC bookkeeping;
  numpy's generator replaces Philox, so trajectories differ from the model's (the work does
  not);
* **vessels**: the integrity update of :mod:`marrow3d.kernels.vessels` (signal sensed as the
  maximum over the voxel and its marrow face neighbours), in numpy;
* **metrics**: the numpy readouts (:mod:`marrow3d.kernels.readouts_reference`, what marrow3d
  computed on the host before its readouts moved to the device).

Usage (also called by ``python -m benchmarks``)::

    python -m benchmarks.numpy_baseline --sizes 16,24 --steps 2
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from marrow3d.kernels import codes
from marrow3d.kernels import transport_reference as R
from marrow3d.kernels.cells_rules import (
    division_rate_np,
    drug_kill_rate_np,
    emax_np,
    event_probability_np,
    hif_response_np,
)

__all__ = ["NumpyMarrow", "time_numpy_step", "cell_step_numpy"]

_TYPES = {"hsc": codes.HSC, "progenitor": codes.PROGENITOR, "lsc": codes.LSC, "blast": codes.BLAST}
_OFFSETS = codes.FACE_DIRECTIONS  # the kernels' face-neighbour order (direction d and d ^ 1 opposite)
LODGED = 1


def _per_type(params, name) -> np.ndarray:
    out = np.zeros(codes.N_CELL_TYPES)
    for key, code in _TYPES.items():
        out[code] = params[name][key]
    return out


def _shift(a: np.ndarray, off, fill) -> np.ndarray:
    """b[I] = a[I + off] (``fill`` outside the grid)."""
    out = np.full_like(a, fill)
    src = tuple(slice(max(o, 0), a.shape[k] + min(o, 0)) for k, o in enumerate(off))
    dst = tuple(slice(max(-o, 0), a.shape[k] + min(-o, 0)) for k, o in enumerate(off))
    out[dst] = a[src]
    return out


def _choose_targets(movers: np.ndarray, free: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """For each mover voxel a uniformly chosen free face neighbour; conflicts settled by a
    random priority (the highest wins). Returns flat (source, target) indices of the winners."""
    shape = free.shape
    best_key = np.full(shape, -1.0)
    best_dir = np.full(shape, -1, dtype=np.int8)
    for d, off in enumerate(_OFFSETS):
        ok = movers & _shift(free, off, False)
        key = np.where(ok, rng.random(shape), -1.0)
        better = key > best_key
        best_key = np.where(better, key, best_key)
        best_dir = np.where(better, d, best_dir)
    src = np.flatnonzero(best_dir.ravel() >= 0)
    if src.size == 0:
        return src, src
    z, y, x = np.unravel_index(src, shape)
    dirs = np.asarray(_OFFSETS)[best_dir.ravel()[src]]
    tgt = np.ravel_multi_index((z + dirs[:, 0], y + dirs[:, 1], x + dirs[:, 2]), shape)
    prio = rng.random(src.size)
    order = np.lexsort((-prio, tgt))  # by target, highest priority first
    tgt_sorted = tgt[order]
    first = np.ones(order.size, dtype=bool)
    first[1:] = tgt_sorted[1:] != tgt_sorted[:-1]
    win = order[first]
    return src[win], tgt[win]


def cell_step_numpy(cells, flags, generation, tissue, oxygen, ara, dnr, params, dt, rng) -> None:
    """One cell step (the documented subset), in place on the uint8 arrays."""
    c = cells.astype(np.intp)
    occ = c != codes.EMPTY
    lodged = (flags & LODGED) != 0
    h = hif_response_np(oxygen, params["hif_p50_mmHg"], params["hif_hill"])
    r_div = division_rate_np(_per_type(params, "division_rate_per_hour")[c],
                             _per_type(params, "hypoxia_division_sensitivity")[c], h, lodged,
                             _per_type(params, "lodged_division_multiplier")[c])
    mature = (c == codes.PROGENITOR) & (generation >= params["progenitor_max_generation"])
    r_div = np.where(mature, 0.0, r_div)
    c_ara = np.zeros(cells.shape) if ara is None else np.maximum(ara, 0.0)
    c_dnr = np.zeros(cells.shape) if dnr is None else np.maximum(dnr, 0.0)
    r_drug = drug_kill_rate_np(r_div, c_ara, c_dnr, params["s_phase_hours"], params["cycle_hours"],
                               params["cytarabine_kmax_per_hour"], params["cytarabine_ec50_uM"],
                               params["daunorubicin_kmax_per_hour"], params["daunorubicin_ec50_uM"])
    r_drug = np.where(lodged, r_drug * (1.0 - params["lodged_drug_protection"]), r_drug)
    r_hyp = np.where(oxygen < params["severe_hypoxia_threshold_mmHg"],
                     _per_type(params, "severe_hypoxia_death_rate_per_hour")[c], 0.0)
    r_tot = _per_type(params, "death_rate_per_hour")[c] + r_hyp + r_drug
    die = occ & (rng.random(cells.shape) < event_probability_np(r_tot, dt))
    cells[die] = codes.EMPTY
    flags[die] = 0
    generation[die] = 0

    # division into an empty marrow neighbour
    c = cells.astype(np.intp)
    occ = c != codes.EMPTY
    if ara is not None:
        r_div = r_div * (1.0 - params["cytarabine_division_arrest"] * emax_np(c_ara, params["cytarabine_ec50_uM"]))
    divide = occ & (rng.random(cells.shape) < event_probability_np(r_div, dt))
    free = (tissue == codes.MARROW) & ~occ
    src, tgt = _choose_targets(divide, free, rng)
    mother = c.ravel()[src]
    daughter = mother.copy()
    daughter[mother == codes.HSC] = codes.PROGENITOR
    lsc = mother == codes.LSC
    daughter[lsc] = np.where(rng.random(int(lsc.sum())) < params["lsc_self_renewal_probability"],
                             codes.LSC, codes.BLAST)
    gen = generation.ravel()
    g = np.where(mother == codes.PROGENITOR, np.minimum(gen[src].astype(np.int32) + 1, 255), 0)
    gen[src] = np.where(mother == codes.PROGENITOR, g, gen[src])
    cells.ravel()[tgt] = daughter
    gen[tgt] = g
    flags.ravel()[tgt] = 0

    # random walk of free stem cells and blasts
    c = cells.astype(np.intp)
    occ = c != codes.EMPTY
    stem = ((c == codes.HSC) | (c == codes.LSC)) & ((flags & LODGED) == 0)
    rate = np.where(stem, params["stem_walk_rate_per_hour"], np.where(c == codes.BLAST,
                    params["blast_walk_rate_per_hour"], 0.0))
    move = (rate > 0) & (rng.random(cells.shape) < event_probability_np(rate, dt))
    free = (tissue == codes.MARROW) & ~occ
    src, tgt = _choose_targets(move, free, rng)
    flat_c, flat_g, flat_f = cells.ravel(), generation.ravel(), flags.ravel()
    flat_c[tgt], flat_g[tgt], flat_f[tgt] = flat_c[src], flat_g[src], flat_f[src]
    flat_c[src], flat_g[src], flat_f[src] = codes.EMPTY, 0, 0


def vessel_step_numpy(tissue, integrity, signal, vp, dt, protection=0.0) -> None:
    """The integrity update of ``kernels.vessels.update_integrity``, in numpy, in place."""
    marrow = tissue == codes.MARROW
    sensed = signal.astype(np.float64).copy()
    for off in _OFFSETS:
        nb = _shift(signal.astype(np.float64), off, -np.inf)
        sensed = np.where(_shift(marrow, off, False), np.maximum(sensed, nb), sensed)
    s = np.maximum(sensed, 0.0)
    v = integrity.astype(np.float64)
    art = tissue == codes.ARTERIOLE
    sin = (tissue == codes.SINUSOID) | (tissue == codes.CENTRAL_SINUS)
    sat = s / (s + vp["signal_half_saturation"])
    regen = 1.0 - (1.0 - v) * np.exp(-vp["regeneration_per_hour"] * dt)
    low = s < vp["regeneration_signal_threshold"]
    new = np.where(art, v - vp["arteriole_loss_per_hour"] * sat * (1.0 - protection) * dt, v)
    new = np.where(sin, np.maximum(v - vp["sinusoid_loss_per_hour"] * sat * dt,
                                   np.minimum(v, vp["sinusoid_min_integrity"])), new)
    new = np.where(low, regen, new)
    vessel = art | sin
    integrity[vessel] = np.clip(new, 0.0, 1.0)[vessel].astype(integrity.dtype)


class NumpyMarrow:
    """The state of a :class:`~marrow3d.model.MarrowModel`, advanced in numpy (see module doc).

    Parameters
    ----------
    model : MarrowModel
        Source of the anatomy, initial state, coefficient tables and parameters. Not modified.
    seed : int
        Seed of numpy's generator (the cell draws).
    """

    def __init__(self, model, seed: int = 1) -> None:
        self.model = model
        self.dt = model.clock.dt_h
        self.t_h = model.clock.time_h
        self.voxel_um = model.voxel_um
        self.tissue = model.tissue.to_numpy()
        self.niche = model.niche.to_numpy()
        self.integrity = model.integrity.to_numpy().astype(np.float64)
        st = model.cells.get_state()
        self.cells, self.flags, self.generation = st["cells"], st["flags"], st["generation"]
        self.fields = {k: f.to_numpy().astype(np.float64) for k, f in model.fields.items()}
        self.params = model.config.cells.kernel_params()
        self.vparams = model.config.vessels.kernel_params()
        self.tol = model.config.transport.solver.tolerance
        self.rng = np.random.default_rng(seed)
        self.timings: dict[str, float] = {}
        from marrow3d.kernels.readouts_reference import RegionMasks

        self.regions = RegionMasks(self.tissue, model.voxel_um, model.config.stages.endosteal_band_um)

    def transport(self) -> None:
        m = self.model
        t_mid = self.t_h + 0.5 * self.dt
        for name, fs in m.field_solvers.items():
            if name in m.drugs:
                if not m.pk.is_present(name, self.t_h, self.t_h + self.dt):
                    self.fields[name][:] = 0.0
                    continue
                fs.set_blood_level(float(m.pk.concentration_uM(name, t_mid)))
            D, a, vmax, s = R.assemble_coefficients(self.tissue, self.cells, self.integrity, fs.tables)
            self.fields[name] = R.solve_steady(D, a, vmax, s, fs.km, self.voxel_um, u0=self.fields[name],
                                               tol=self.tol)

    def step(self) -> dict[str, float]:
        """One step (transport, cells, vessels, metrics); returns the seconds of each part."""
        from marrow3d.kernels import readouts_reference as M

        m = self.model
        t = {}
        t0 = time.perf_counter()
        self.transport()
        t["transport"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        cell_step_numpy(self.cells, self.flags, self.generation, self.tissue, self.fields["oxygen"],
                        self.fields.get("cytarabine"), self.fields.get("daunorubicin"), self.params, self.dt,
                        self.rng)
        t["cells"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        vessel_step_numpy(self.tissue, self.integrity, self.fields["signal"], self.vparams, self.dt)
        t["vessels"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        o2 = m.config.transport.oxygen
        M.oxygen_metrics(self.fields["oxygen"].astype(np.float32), self.regions, o2.hypoxic_mmHg, o2.severe_hypoxic_mmHg)
        M.integrity_metrics(self.integrity.astype(np.float32), self.regions, m.floor, m.leak)
        for name, f in self.fields.items():
            if name != "oxygen":
                M.field_region_means(f.astype(np.float32), self.regions, name)
        np.bincount(self.cells.ravel(), minlength=codes.N_CELL_TYPES)
        t["metrics"] = time.perf_counter() - t0
        t["total"] = sum(t.values())
        self.t_h += self.dt
        return t


def time_numpy_step(model, steps: int = 1) -> dict[str, float]:
    """Best-of-``steps`` seconds per numpy step (each part) from ``model``'s current state."""
    nm = NumpyMarrow(model)
    best: dict[str, float] = {}
    for _ in range(steps):
        t = nm.step()
        best = t if not best or t["total"] < best["total"] else best
    return best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.numpy_baseline", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="16,24", help="cube edges (the direct solves limit this to ~24)")
    p.add_argument("--steps", type=int, default=2)
    args = p.parse_args(argv)
    from marrow3d.backend import initialize
    from marrow3d.config import load_config
    from marrow3d.runner import make_model

    initialize("cpu")
    for n in (int(v) for v in args.sizes.split(",")):
        model = make_model(load_config(None, [f"domain.shape_voxels=[{n},{n},{n}]", 'run.backend="cpu"']))
        t = time_numpy_step(model, args.steps)
        print(f"{n}^3 numpy step " + " ".join(f"{k} {v:.3f} s" for k, v in t.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
