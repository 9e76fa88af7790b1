"""The benchmark suite behind ``python -m benchmarks``: every kernel and the whole model, by size.

For each grid size n (a cube of the default ``box`` anatomy, ``domain.shape_voxels=[n,n,n]``):

* one red-black Gauss-Seidel **smoothing sweep** (both colours) on the finest level of the
  transport solver, with the model's oxygen operator;
* a **cold** (from zero) and a **warm** (from the previous step's field, after one cell step)
  steady oxygen solve to the model's tolerance (relative residual 1e-6);
* one **cell step** (``CellLattice.step``);
* one **full model step** (PK, transport, cells, vessels, metrics), without a drug and with
  cytarabine dosed (continuous infusion from day 0: one more transport field);
* a **checkpoint** write (``Checkpointer``: gzip + shuffle + Fletcher-32, fsync, rename) and
  read (``load_checkpoint``: verification and full read) of the model's real state;
* the **numpy baseline** (:mod:`benchmarks.numpy_baseline`): the whole step at small sizes
  (its scipy direct solves cannot go further), and its cell step at every size.

Baselines measured in the same process: a 256 MiB numpy copy and a Taichi copy kernel over
the same bytes (bytes read + written per second), against which sweeps are rated.

Each timing is the best of ``--repeat`` runs (wall clock) and is reported with the process
CPU time of the same run (all threads): on a shared machine the wall time is inflated by the
other processes while the CPU time is not, so both are kept. The load average before and
after is recorded. Results go to a table on stdout and to ``benchmarks/results/suite.json``
with the machine, backend, versions, date and command line.
"""

from __future__ import annotations

import datetime as _dt
import gc
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"

#: Targets of the performance issue (2-core CPU, float32, 128^3 default box anatomy).
TARGETS = {
    "model_step_128_s": 1.0,
    "model_step_drug_128_s": 1.5,
    "cell_over_warm_solve_128": 0.25,
    "default_run_s": 120.0,
    "state_bytes_per_voxel": 32,
}

#: Bytes moved and floating-point operations per voxel update, counted from the kernels
#: (float32 fields, float64 Newton iterate; "min bytes" = each array read or written once).
ROOFLINE = {
    "rbgs_sweep": {"bytes": 28, "flops": 13, "what": "b, 1/diag, gz, gy, gx, e read; e written (per full sweep)"},
    "residual_jacobian": {"bytes": 48, "flops": 38, "what": "x64 (8), D, a, vmax, s, gz, gy, gx read; r, diag, "
                          "1/diag written; 2 f64 divisions"},
    "operator": {"bytes": 24, "flops": 15, "what": "p, diag, gz, gy, gx read; q written; p.q"},
    "cg_vectors": {"bytes": 44, "flops": 10, "what": "r.z (8), p = z + beta p (12), dx += a p, r -= a q, r.r (24)"},
    "cell_step": {"bytes": 40, "flops": 0, "what": "5 passes over u8 state + tissue/niche/O2 reads, u32 claims; "
                  "Philox-4x32-10 (~120 integer ops) per occupied voxel per rule"},
}


# ------------------------------------------------------------------------------ helpers
def load() -> float:
    return os.getloadavg()[0]


def timed(fn, repeat: int = 3, warmup: int = 1, sync=None) -> dict:
    """Best wall time and the CPU time of that run, over ``repeat`` calls after ``warmup``."""
    for _ in range(warmup):
        fn()
        if sync:
            sync()
    best_w, best_c, walls = math.inf, math.inf, []
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        if sync:
            sync()
        w, c = time.perf_counter() - t0, time.process_time() - c0
        walls.append(w)
        if w < best_w:
            best_w, best_c = w, c
    return {"s": best_w, "cpu_s": best_c, "median_s": float(np.median(walls)), "runs": len(walls)}


def machine_info(backend_info=None) -> dict:
    import scipy

    info = {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
    }
    try:
        from marrow3d.kernels.ti_compat import LIBRARY_NAME, library_version

        info["kernel_library"] = f"{LIBRARY_NAME} {library_version()}"
    except Exception:  # pragma: no cover
        pass
    try:
        import h5py

        info["h5py"], info["hdf5"] = h5py.__version__, h5py.version.hdf5_version
    except Exception:  # pragma: no cover
        pass
    import marrow3d

    info["marrow3d"] = marrow3d.__version__
    info["git_commit"] = _git_commit()
    if backend_info is not None:
        info.update(backend=backend_info.name, arch=backend_info.arch, threads=backend_info.threads)
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


# ------------------------------------------------------------------------------ baselines
def numpy_copy_bandwidth(mib: int = 256, repeat: int = 5) -> float:
    """GB/s (bytes read + written) of ``np.copyto`` between two ``mib`` MiB float32 arrays."""
    n = mib * 2**20 // 4
    a = np.ones(n, np.float32)
    b = np.empty_like(a)
    t = timed(lambda: np.copyto(b, a), repeat)
    return 2 * a.nbytes / t["s"] / 1e9


def taichi_copy_bandwidth(mib: int = 256, repeat: int = 5, gpu: bool | None = None) -> float:
    """GB/s (read + written) of a copy kernel over two ``mib`` MiB float32 ndarrays.

    On a GPU backend (default for ``gpu``) one thread per element, the roofline the GPU
    layout's kernels are rated against; on the CPU rows of 4096 per thread.
    """
    from benchmarks._kernels import copy_kernel
    from marrow3d.kernels.ti_compat import is_gpu_arch, ti

    gpu = is_gpu_arch() if gpu is None else bool(gpu)
    n = mib * 2**20 // 4
    a = ti.ndarray(ti.f32, shape=n)
    b = ti.ndarray(ti.f32, shape=n)
    a.fill(1.0)
    t = timed(lambda: copy_kernel(a, b, n, gpu), repeat, sync=ti.sync)
    return 2 * n * 4 / t["s"] / 1e9


# ------------------------------------------------------------------------------ model pieces
DRUG_EVENT = '{agent="cytarabine", kind="infusion", start_day=0, duration_days=7, dose_mg_per_m2_per_day=100}'


def model_config(n, drug: bool = False, extra=()):
    from marrow3d.config import load_config

    sets = [f"domain.shape_voxels=[{n},{n},{n}]" if isinstance(n, int) else f"domain.shape_voxels={list(n)}"]
    if drug:
        sets.append(f"therapy.events=[{DRUG_EVENT}]")
    return load_config(None, [*sets, *extra])


def build_model(cfg):
    from marrow3d.runner import make_model

    t0 = time.perf_counter()
    model = make_model(cfg)
    return model, time.perf_counter() - t0


def sweep_time(model, repeat: int) -> dict:
    """One full red-black Gauss-Seidel sweep on the model solver's finest level."""
    from marrow3d.kernels.ti_compat import ti

    return timed(model.solver.sweep, repeat, sync=ti.sync)


def _cell_args(model):
    da = model.drug_active
    return ((model.tissue, model.niche, model.integrity, model.fields["oxygen"],
             model.fields["cytarabine"] if da.get("cytarabine") else None,
             model.fields["daunorubicin"] if da.get("daunorubicin") else None),
            {"dt_hours": model.clock.dt_h, "integrity_floor": model.floor})


def solve_and_cell_times(model, repeat: int) -> dict:
    """Cold and warm O2 solves and the cell step on the model's live state.

    Each repetition: a cell step (timed), then the O2 field re-solved warm from its previous
    value on the new cells (timed) - exactly what a model step does. The cold solve starts
    from a zero field on the same state. The model's state advances (cells only).
    """
    from marrow3d.kernels.ti_compat import ti

    fs = model.field_solvers["oxygen"]
    u = model.fields["oxygen"]
    args = (model.tissue, model.cells.cells, model.integrity)
    cargs, ckw = _cell_args(model)
    out = {}
    cells, warm, warm_its = [], [], []
    for _ in range(repeat + 1):
        c = timed(lambda: model.cells.step(*cargs, **ckw), 1, warmup=0, sync=ti.sync)
        infos = []
        w = timed(lambda: infos.append(fs.solve(model.solver, u, *args)), 1, warmup=0)
        cells.append(c)
        warm.append(w)
        warm_its.append(infos[-1].iterations)
    cells, warm = cells[1:], warm[1:]  # the first pair compiled / settled
    out["cell_step"] = min(cells, key=lambda r: r["s"])
    out["warm_solve"] = min(warm, key=lambda r: r["s"])
    out["warm_solve"]["iterations"] = warm_its[1:]
    saved = u.to_numpy()
    colds, cold_its = [], []
    for _ in range(max(1, repeat // 2)):
        u.fill(0)
        infos = []
        colds.append(timed(lambda: infos.append(fs.solve(model.solver, u, *args)), 1, warmup=0))
        cold_its.append(infos[-1].iterations)
    u.from_numpy(saved)
    out["cold_solve"] = min(colds, key=lambda r: r["s"])
    out["cold_solve"]["iterations"] = cold_its
    return out


def model_step_times(model, steps: int) -> dict:
    """Best and median loop steps (``time_step`` + ``check_finite``), then three profiled steps:
    launches, syncs and host<->device bytes per step and the median time per phase."""
    from benchmarks.step import profile_steps

    def step():
        model.time_step()
        model.check_finite()

    step()  # settle (a first step after a solve benchmark may recompile nothing)
    runs = [timed(step, 1, warmup=0) for _ in range(steps)]
    prof = profile_steps(model)
    phases = prof["phases"]
    transport = sum(v["seconds"] for k, v in phases.items() if k.startswith("solve:"))
    best = min(runs, key=lambda r: r["s"])
    return {"s": best["s"], "cpu_s": best["cpu_s"], "median_s": float(np.median([r["s"] for r in runs])),
            "median_cpu_s": float(np.median([r["cpu_s"] for r in runs])), "runs": steps,
            "parts_median_s": {"transport": transport, "cells": phases.get("cells", {}).get("seconds", 0.0),
                               "metrics": phases.get("readouts", {}).get("seconds", 0.0)
                               + phases.get("finite", {}).get("seconds", 0.0)},
            "per_step": prof["per_step"], "phases": phases,
            "iterations": dict(model.solve_iterations)}


def checkpoint_times(model, repeat: int) -> dict:
    """Write (``Checkpointer``) and read (``load_checkpoint``) of the model's real state."""
    from marrow3d.output.checkpointer import Checkpointer, load_checkpoint
    from marrow3d.schedules import Never
    from marrow3d.simulation import Simulation

    sim = Simulation(model, stop_iteration=model.clock.iteration + 1, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        cp = Checkpointer(Path(tmp), Never(), keep=1, meta={"config_toml": model.config.to_toml(), "seed": 1,
                                                            "backend": "cpu"})
        cp.initialize(sim)
        paths = []
        w = timed(lambda: paths.append(cp.write(sim)), repeat, warmup=1)
        r = timed(lambda: load_checkpoint(Path(tmp)), repeat, warmup=1)
        size = paths[-1].stat().st_size
    from marrow3d.output.model_state import capture_model_state

    state = capture_model_state(model)
    raw = sum(v.nbytes for v in _arrays(state))
    return {"write": w, "read": r, "state_mib": raw / 2**20, "file_mib": size / 2**20,
            "write_mib_per_s": raw / 2**20 / w["s"], "read_mib_per_s": raw / 2**20 / r["s"]}


def _arrays(tree):
    for v in tree.values():
        if isinstance(v, dict):
            yield from _arrays(v)
        elif isinstance(v, np.ndarray):
            yield v


def numpy_times(model, whole_step: bool, repeat: int) -> dict:
    """The numpy baseline from the model's state: whole step (small grids) or cell step only."""
    from benchmarks.numpy_baseline import NumpyMarrow, cell_step_numpy

    nm = NumpyMarrow(model)
    out = {}
    if whole_step:
        steps = [nm.step() for _ in range(repeat)]
        out["step"] = min(steps, key=lambda t: t["total"])
    cells = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        cell_step_numpy(nm.cells, nm.flags, nm.generation, nm.tissue, nm.fields["oxygen"], None, None,
                        nm.params, nm.dt, nm.rng)
        cells.append(time.perf_counter() - t0)
    out["cell_step_s"] = min(cells)
    return out


# ------------------------------------------------------------------------------ one size
def bench_size(n: int, args, baselines: dict) -> dict:
    from marrow3d.resources import estimate_memory

    rec: dict = {"n": n, "voxels": n**3, "load_before": load()}
    print(f"\n== {n}^3 ({n**3:,} voxels), load average {rec['load_before']:.2f}", flush=True)
    model, rec["build_s"] = build_model(model_config(n))
    rec["memory_bytes_per_voxel"] = estimate_memory((n, n, n), "float32", drugs=0).per_voxel()
    model.time_step()  # compile everything, leave the start-up transient
    sw = sweep_time(model, args.repeat)
    vox = n**3
    sw["GBps_effective"] = ROOFLINE["rbgs_sweep"]["bytes"] * vox / sw["s"] / 1e9
    sw["vs_taichi_copy"] = sw["GBps_effective"] / baselines["taichi_copy_GBps"]
    sw["vs_numpy_copy"] = sw["GBps_effective"] / baselines["numpy_copy_GBps"]
    sw["ns_per_voxel"] = sw["s"] / vox * 1e9
    rec["sweep"] = sw
    print(f"  sweep {sw['s'] * 1e3:8.2f} ms  {sw['GBps_effective']:6.2f} GB/s effective "
          f"({sw['vs_taichi_copy']:.2f} x Taichi copy)", flush=True)
    rec.update(solve_and_cell_times(model, args.repeat))
    print(f"  O2 solve cold {rec['cold_solve']['s']:.3f} s ({rec['cold_solve']['iterations']} its), warm "
          f"{rec['warm_solve']['s']:.3f} s ({rec['warm_solve']['iterations']} its); cell step "
          f"{rec['cell_step']['s']:.3f} s", flush=True)
    rec["cell_over_warm_solve"] = rec["cell_step"]["s"] / rec["warm_solve"]["s"]
    rec["cell_over_warm_solve_cpu"] = rec["cell_step"]["cpu_s"] / rec["warm_solve"]["cpu_s"]
    rec["model_step"] = model_step_times(model, args.steps)
    ps = rec["model_step"]["per_step"]
    print(f"  model step {rec['model_step']['s']:.3f} s (cpu {rec['model_step']['cpu_s']:.3f} s) "
          f"parts {rec['model_step']['parts_median_s']}; per step {ps['launches']:.0f} launches, "
          f"{ps['syncs']:.0f} syncs, {ps['bytes_to_host']:.0f} B to host", flush=True)
    if not args.skip_checkpoint:
        rec["checkpoint"] = checkpoint_times(model, max(1, args.repeat - 1))
        print(f"  checkpoint write {rec['checkpoint']['write']['s']:.2f} s, read {rec['checkpoint']['read']['s']:.2f} s"
              f" ({rec['checkpoint']['state_mib']:.0f} MiB state, {rec['checkpoint']['file_mib']:.0f} MiB file)",
              flush=True)
    if not args.skip_numpy:
        whole = n <= args.numpy_max
        rec["numpy"] = numpy_times(model, whole, 1 if n >= 256 else args.repeat)
        rec["numpy"]["cell_speedup"] = rec["numpy"]["cell_step_s"] / rec["cell_step"]["s"]
        if whole:
            rec["numpy"]["model_speedup"] = rec["numpy"]["step"]["total"] / rec["model_step"]["s"]
            print(f"  numpy step {rec['numpy']['step']['total']:.3f} s -> marrow3d x{rec['numpy']['model_speedup']:.1f}",
                  flush=True)
        print(f"  numpy cell step {rec['numpy']['cell_step_s']:.3f} s -> marrow3d x{rec['numpy']['cell_speedup']:.1f}",
              flush=True)
    del model
    gc.collect()
    if not args.skip_drug:
        model, _ = build_model(model_config(n, drug=True))
        model.time_step()
        rec["model_step_drug"] = model_step_times(model, args.steps)
        print(f"  model step with cytarabine {rec['model_step_drug']['s']:.3f} s "
              f"(cpu {rec['model_step_drug']['cpu_s']:.3f} s) its {rec['model_step_drug']['iterations']}", flush=True)
        del model
        gc.collect()
    rec["load_after"] = load()
    return rec


def default_run(threads: int | None) -> dict:
    """``marrow3d run`` with no arguments (64^3, 28 days, 672 steps, default output), timed."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "marrow3d", "run", "--out", str(Path(tmp) / "run")]
        if threads:
            cmd += ["--threads", str(threads)]
        l0 = load()
        c0 = os.times()
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        c1 = os.times()
    cpu = (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system)
    return {"command": " ".join(cmd[1:]), "returncode": proc.returncode, "wall_s": wall, "cpu_s": cpu,
            "load_before": l0, "load_after": load(), "stderr_tail": proc.stderr[-500:] if proc.returncode else ""}


# ------------------------------------------------------------------------------ report
def print_table(record: dict) -> None:
    rows = record["sizes"]
    print("\nmarrow3d benchmark suite: " + f"{record['machine'].get('cpu', '')}, {record['machine'].get('cpus')} "
          f"cpus, backend {record['machine'].get('backend')} ({record['machine'].get('threads')} threads), "
          f"{record['date']}")
    b = record["baselines"]
    print(f"baselines: numpy copy {b['numpy_copy_GBps']:.2f} GB/s, Taichi copy {b['taichi_copy_GBps']:.2f} GB/s "
          "(bytes read + written)")
    print(f"load average: before {record['load_before']:.2f}, after {record['load_after']:.2f} "
          f"(on {record['machine'].get('cpus')} cpus; wall times are inflated when it exceeds that)")
    head = (f"{'n':>5} {'sweep ms':>9} {'xcopy':>6} {'cold s':>7} {'warm s':>7} {'cells s':>8} {'c/w':>5} "
            f"{'step s':>7} {'cpu s':>6} {'drug s':>7} {'ckpt w/r s':>11} {'np step':>8} {'speedup':>8} {'np cell x':>9}")
    print(head)
    for r in rows:
        ck = r.get("checkpoint")
        ckt = f"{ck['write']['s']:.2f}/{ck['read']['s']:.2f}" if ck else "-"
        np_ = r.get("numpy", {})
        nps = f"{np_['step']['total']:.3f}" if "step" in np_ else "-"
        spd = f"x{np_['model_speedup']:.1f}" if "model_speedup" in np_ else "-"
        cx = f"x{np_['cell_speedup']:.1f}" if "cell_speedup" in np_ else "-"
        drug = f"{r['model_step_drug']['s']:.3f}" if "model_step_drug" in r else "-"
        print(f"{r['n']:>4}^3 {r['sweep']['s'] * 1e3:9.2f} {r['sweep']['vs_taichi_copy']:6.2f} "
              f"{r['cold_solve']['s']:7.3f} {r['warm_solve']['s']:7.3f} {r['cell_step']['s']:8.3f} "
              f"{r['cell_over_warm_solve']:5.2f} {r['model_step']['s']:7.3f} {r['model_step']['cpu_s']:6.2f} "
              f"{drug:>7} {ckt:>11} {nps:>8} {spd:>8} {cx:>9}")
    if "default_run" in record:
        d = record["default_run"]
        print(f"default run (`marrow3d {d['command'].split(' ', 2)[-1]}`): {d['wall_s']:.1f} s wall, "
              f"{d['cpu_s']:.1f} s CPU, exit {d['returncode']} (target < {TARGETS['default_run_s']:.0f} s)")
    for r in rows:
        if r["n"] == 128:
            ok = r["model_step"]["s"] < TARGETS["model_step_128_s"]
            print(f"targets at 128^3: model step {r['model_step']['s']:.3f} s (< 1 s: {'ok' if ok else 'MISSED'}), "
                  f"cell/warm solve {r['cell_over_warm_solve']:.2f} (<= 0.25: "
                  f"{'ok' if r['cell_over_warm_solve'] <= 0.25 else 'MISSED'})", end="")
            if "model_step_drug" in r:
                okd = r["model_step_drug"]["s"] < TARGETS["model_step_drug_128_s"]
                print(f", with a drug {r['model_step_drug']['s']:.3f} s (< 1.5 s: {'ok' if okd else 'MISSED'})")
            else:
                print()


def run_suite(args) -> dict:
    from marrow3d.backend import initialize

    info = initialize(args.backend, threads=args.threads, precision="float32")
    record = {
        "benchmark": "suite",
        "command": "python -m benchmarks " + " ".join(args.argv),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(info),
        "targets": TARGETS,
        "roofline": ROOFLINE,
        "load_before": load(),
    }
    print(f"backend {info.name} ({info.arch}), threads {info.threads}, load average {record['load_before']:.2f}",
          flush=True)
    record["baselines"] = {"numpy_copy_GBps": numpy_copy_bandwidth(), "taichi_copy_GBps": taichi_copy_bandwidth()}
    print(f"numpy copy {record['baselines']['numpy_copy_GBps']:.2f} GB/s, "
          f"Taichi copy {record['baselines']['taichi_copy_GBps']:.2f} GB/s", flush=True)
    record["sizes"] = []
    for n in args.sizes:
        record["sizes"].append(bench_size(n, args, record["baselines"]))
        _write(record, args.out)  # partial results survive an interrupted run
    if args.default_run:
        record["default_run"] = default_run(args.threads)
    record["load_after"] = load()
    _write(record, args.out)
    print_table(record)
    print(f"wrote {args.out}")
    return record


def _write(record: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, default=float))
