"""GPU acceptance check: one script, under 10 minutes on one NVIDIA GPU.

Usage::

    python benchmarks/device_check.py              # on the GPU machine (CUDA backend)
    python benchmarks/device_check.py --dry-run    # here: CPU backend, small sizes, same code paths

What it does, in order (each part prints as it finishes; one summary table and a JSON file,
``benchmarks/results/device_check.json``, at the end):

1. **backend**: initialises CUDA and fails loudly (exit 1) unless
   ``marrow3d.kernels.ti_compat.current_arch_name() == "cuda"`` - the compiler falls back to
   the CPU silently otherwise. Checked again at the end, after every kernel ran.
2. **layouts**: steady O2-like and drug-like solves of a synthetic ``--layout-size``^3 marrow
   (64^3; float32, tolerance 1e-6) in the device's layout (``voxels``: one thread per voxel,
   lane-tree reductions), twice: the two device runs must be bitwise identical (fixed-shape
   reductions, no float atomics). A CPU subprocess solves the same problems in the same
   ``voxels`` layout (expected identical: the same arithmetic; accepted within 1e-6 of the
   field's range, since CUDA flushes denormals) and in the CPU's ``rows`` layout (the sums run
   in another order: within 1e-5 of the range and 1e-6 relative L2; measured on the CPU
   at 24^3-48^3: <= 3e-7 and 4e-8).
3. **reductions**: ``v . Jv`` of a random vector by the device's lane tree, twice (identical
   bits) and against numpy's float64 sum of the same products read back (1e-12 relative).
4. **cross-check** of a 128^3 model run (the default box anatomy, seed 1, ``--check-steps``
   steps) against the CPU: the CPU run happens in a subprocess (``ti.init`` is process-global)
   and writes its state; the device run here is compared field by field. Fields (oxygen,
   signal, vessel integrity) must agree to float32 tolerance: relative L2 difference <= 1e-4
   and max difference <= 1e-3 of the field's range (both runs converge to a relative residual
   of 1e-6, in different layouts, so they differ by the solver tolerance, not by rounding
   alone). The integer cell state is reported as identical, or else checked as statistically
   equal: cell counts per type within 2% + 3 cells, and under 1% of the marrow voxels
   different. Bitwise identity is not required: a random draw that falls within an ulp of a
   probability threshold can flip a decision, and a flipped cell changes its neighbours'
   later draws; the CPU results themselves are bitwise identical for any thread count.
5. **copy bandwidth** of the device: a one-thread-per-element copy kernel over two 1 GiB
   float32 ndarrays (bytes read + written per second): the roofline the stencil timings are
   rated against.
6. **kernel timings** at 256^3 and 512^3 (:mod:`benchmarks.suite`): red-black smoothing sweep
   (goal at 512^3: >= 50% of the copy bandwidth in effective bytes, a check), cold and warm O2
   solve, cell step, full model step.
7. **femur**: ``configs/femur.toml`` (1200 x 110 x 110 voxels) for ``--femur-days`` simulated
   days: time per simulated day and the extrapolation to 28 days.

``--dry-run`` runs all of it on the CPU backend at small sizes (layouts at 24^3 with the
``voxels`` layout forced on the CPU; model cross-check 24^3 against a 1-thread CPU subprocess,
which must then be bitwise identical; timings at 32^3; a 24 x 90 x 90 femur for 2 hours), so the script is known to work before GPU time is spent; the sweep goal is not
checked there. ``tests/test_device_check.py`` runs the dry mode.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
FIELD_RTOL_L2 = 1e-4
FIELD_MAX_FRACTION = 1e-3
COUNT_RTOL, COUNT_ATOL = 0.02, 3
CELL_DIFF_FRACTION = 0.01

LAYOUT_SAME_MAX = 1e-6  # voxels layout on the device vs on the CPU (expected identical)
LAYOUT_ROWS_MAX, LAYOUT_ROWS_L2 = 1e-5, 1e-6  # voxels vs rows (other summation order)
REDUCTION_RTOL = 1e-12
SWEEP_GOAL = 0.5  # RB-GS sweep at the largest size, effective bytes / copy bandwidth

REAL = {"check_size": 128, "check_steps": 6, "sizes": [256, 512], "femur_shape": None, "femur_days": 2.0,
        "copy_mib": 1024, "repeat": 3, "steps": 3, "layout_size": 64}
DRY = {"check_size": 24, "check_steps": 3, "sizes": [32], "femur_shape": [24, 90, 90], "femur_days": 2 / 24,
       "copy_mib": 16, "repeat": 1, "steps": 2, "layout_size": 24}


class CheckFailed(RuntimeError):
    pass


def log(msg: str) -> None:
    print(msg, flush=True)


# ------------------------------------------------------------------------------ state I/O
def run_steps(n: int, steps: int, seed: int = 1) -> dict:
    """Build the default box model at n^3 and take ``steps`` steps; return its state arrays."""
    from benchmarks.suite import build_model, model_config

    model, _ = build_model(model_config(n, extra=[f"run.seed={seed}"]))
    for _ in range(steps):
        model.time_step()
    st = model.cells.get_state()
    out = {
        "oxygen": model.fields["oxygen"].to_numpy(),
        "signal": model.fields["signal"].to_numpy(),
        "integrity": model.integrity.to_numpy(),
        "cells": st["cells"],
        "flags": st["flags"],
        "generation": st["generation"],
        "tissue": model.tissue.to_numpy(),
    }
    if "cxcl12" in model.fields:  # on by default: the chemotaxis field is cross-checked too
        out["cxcl12"] = model.fields["cxcl12"].to_numpy()
    for k, v in model.metrics.history_arrays().items():
        out[f"history/{k}"] = v
    return out


def cpu_reference(args) -> int:
    """Subprocess side of the cross-checks: the same work on the CPU backend, saved to --out."""
    from marrow3d.backend import initialize

    initialize("cpu", threads=args.threads)
    if args.solver_reference:
        out = {}
        for layout in ("voxels", "rows"):
            for k, v in layout_solves(args.size, layout).items():
                out[f"{layout}/{k}"] = v
        np.savez(args.out, **out)
    else:
        np.savez(args.out, **run_steps(args.size, args.steps))
    return 0


def _drug_tables():
    from marrow3d.kernels import transport_reference as R

    return R.CoefficientTables(
        diffusivity_by_tissue=[1.2e4, 0, 1.2e4, 1.2e4, 1.2e4, 0], decay_by_tissue=[0.005] * 6,
        uptake_by_cell=[0, 0.02, 0.05, 0.02, 0.05], exchange_by_class=[2.0, 20.0], leak_by_class=[1.0, 3.0],
        blood_by_class=[0.3, 0.3], integrity_floor=0.1,
    )


def layout_solves(n: int, layout: str) -> dict:
    """O2-like and drug-like steady solves of a synthetic n^3 marrow in ``layout`` (float32)."""
    from marrow3d.kernels import transport as T
    from marrow3d.kernels import transport_reference as R
    from marrow3d.kernels.ti_compat import ti
    from marrow3d.transport_solver import MultigridSolver

    tissue, cells, integ = R.synthetic_marrow((n, n, n), seed=3)
    solver = MultigridSolver((n, n, n), 10.0, dtype=ti.f32, layout=layout)
    out = {}
    for name, tables in (("oxygen", R.oxygen_tables()), ("drug", _drug_tables())):
        T.assemble_coefficients(tissue, cells, integ, tables, solver.D, solver.a, solver.vmax, solver.s,
                                gpu=solver.gpu_layout)
        u = np.zeros((n, n, n), np.float32)
        info = solver.solve(u, 1.0, tol=1e-6)
        if not info.converged:
            raise CheckFailed(f"{layout} {name} solve did not converge: {info.message}")
        out[name] = u
        out[f"{name}_iterations"] = np.array(info.iterations)
    return out


def layout_check(n: int, dry: bool, tmp: Path) -> dict:
    """The device layout twice (identical?) against the CPU in the same and in the rows layout."""
    ref_path = tmp / "cpu_layouts.npz"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--cpu-reference", "--solver-reference", "--size", str(n),
           "--out", str(ref_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CheckFailed(f"CPU layout reference failed: {proc.stderr[-1500:]}")
    t0 = time.perf_counter()
    first = layout_solves(n, "voxels")
    second = layout_solves(n, "voxels")
    res: dict = {"size": n, "device_s": (time.perf_counter() - t0) / 2, "fields": {}, "ok": True}
    with np.load(ref_path) as z:
        ref = {k: z[k] for k in z.files}
    for name in ("oxygen", "drug"):
        dev = first[name].astype(np.float64)
        span = max(float(np.abs(dev).max()), 1e-30)
        rec = {"repeat_identical": bool(np.array_equal(first[name], second[name])),
               "iterations": int(first[f"{name}_iterations"])}
        for layout in ("voxels", "rows"):
            cpu = ref[f"{layout}/{name}"].astype(np.float64)
            rec[f"cpu_{layout}_identical"] = bool(np.array_equal(dev, cpu))
            rec[f"cpu_{layout}_max_over_range"] = float(np.abs(dev - cpu).max() / span)
            rec[f"cpu_{layout}_rel_l2"] = float(np.linalg.norm(dev - cpu) / max(np.linalg.norm(cpu), 1e-30))
            rec[f"cpu_{layout}_iterations"] = int(ref[f"{layout}/{name}_iterations"])
        ok = (rec["repeat_identical"] and rec["cpu_voxels_max_over_range"] <= LAYOUT_SAME_MAX
              and rec["cpu_rows_max_over_range"] <= LAYOUT_ROWS_MAX and rec["cpu_rows_rel_l2"] <= LAYOUT_ROWS_L2)
        if dry:  # the same backend: the voxels layout must give the very same bits
            ok = ok and rec["cpu_voxels_identical"]
        rec["ok"] = bool(ok)
        res["fields"][name] = rec
        res["ok"] &= bool(ok)
    return res


def reduction_check(n: int) -> dict:
    """v . Jv by the lane tree of the voxels layout: repeatable bits, and numpy's float64 sum."""
    from marrow3d.kernels import transport as T
    from marrow3d.kernels import transport_reference as R
    from marrow3d.kernels.solver_plan import S_PQ
    from marrow3d.kernels.ti_compat import ti
    from marrow3d.transport_solver import MultigridSolver

    tissue, cells, integ = R.synthetic_marrow((n, n, n), seed=4)
    s = MultigridSolver((n, n, n), 10.0, dtype=ti.f32, layout="voxels")
    T.assemble_coefficients(tissue, cells, integ, R.oxygen_tables(), s.D, s.a, s.vmax, s.s, gpu=True)
    s.solve(np.zeros((n, n, n), np.float32), 1.0)  # conductances and diagonal
    v = np.zeros(s.p.shape[0], np.float32)
    v[n * n : n * n + n**3] = np.random.default_rng(1).standard_normal(n**3).astype(np.float32)
    s.p.from_numpy(v)
    l0 = s.levels[0]
    dots = []
    for _ in range(2):
        T.apply_operator(s.p, s.q, l0.diag, l0.gz, l0.gy, l0.gx, s._part, s._scal, S_PQ, n, n, n, True)
        dots.append(float(s._scalars()[S_PQ]))
    q = s.q.to_numpy()
    want = float(np.sum(v.astype(np.float64) * q.astype(np.float64)))
    rel = abs(dots[0] - want) / abs(want)
    return {"size": n, "repeat_identical": dots[0] == dots[1], "device": dots[0], "numpy_float64": want,
            "relative_difference": rel, "ok": bool(dots[0] == dots[1] and rel <= REDUCTION_RTOL)}


def compare_states(dev: dict, ref: dict) -> dict:
    """Field and cell-state agreement of two runs (see the module docstring)."""
    out: dict = {"fields": {}, "ok": True}
    for name in ("oxygen", "signal", "integrity", "cxcl12"):
        if name not in dev and name not in ref:
            continue  # cxcl12: only when transport.cxcl12 is on in both runs
        a = dev[name].astype(np.float64)
        b = ref[name].astype(np.float64)
        scale = max(float(np.abs(b).max()), 1e-30)
        l2 = float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))
        mx = float(np.abs(a - b).max())
        ok = bool(np.array_equal(a, b) or (l2 <= FIELD_RTOL_L2 and mx <= FIELD_MAX_FRACTION * scale))
        out["fields"][name] = {"identical": bool(np.array_equal(a, b)), "rel_l2": l2, "max_abs": mx,
                               "max_over_range": mx / scale, "ok": ok}
        out["ok"] &= ok
    cd, cr = dev["cells"], ref["cells"]
    same = bool(np.array_equal(cd, cr) and np.array_equal(dev["flags"], ref["flags"])
                and np.array_equal(dev["generation"], ref["generation"]))
    marrow = int(np.count_nonzero(ref["tissue"] == 0))
    diff = int(np.count_nonzero(cd != cr))
    counts_d = np.bincount(cd.ravel(), minlength=5)[1:5]
    counts_r = np.bincount(cr.ravel(), minlength=5)[1:5]
    counts_ok = bool(np.all(np.abs(counts_d - counts_r) <= COUNT_RTOL * counts_r + COUNT_ATOL))
    frac = diff / max(marrow, 1)
    cells_ok = same or (counts_ok and frac <= CELL_DIFF_FRACTION)
    out["cells"] = {"identical": same, "voxels_different": diff, "fraction_of_marrow": frac,
                    "counts_device": counts_d.tolist(), "counts_cpu": counts_r.tolist(), "ok": bool(cells_ok)}
    out["ok"] &= bool(cells_ok)
    return out


def cross_check(n: int, steps: int, dry: bool, tmp: Path) -> dict:
    ref_path = tmp / "cpu_reference.npz"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--cpu-reference", "--size", str(n), "--steps", str(steps),
           "--out", str(ref_path)]
    if dry:
        cmd += ["--threads", "1"]  # the device side runs 2+ threads: a thread-count check too
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CheckFailed(f"CPU reference run failed: {proc.stderr[-1500:]}")
    t_cpu = time.perf_counter() - t0
    t0 = time.perf_counter()
    dev = run_steps(n, steps)
    t_dev = time.perf_counter() - t0
    with np.load(ref_path) as z:
        ref = {k: z[k] for k in z.files}
    res = compare_states(dev, ref)
    res.update(size=n, steps=steps, cpu_subprocess_s=t_cpu, device_s=t_dev)
    identical = all(f["identical"] for f in res["fields"].values()) and res["cells"]["identical"]
    if dry and not identical:
        res["ok"] = False  # same backend, other thread count: must be bitwise identical
        res["note"] = "dry run: CPU vs CPU must be bitwise identical"
    return res


# ------------------------------------------------------------------------------ timings
def kernel_timings(n: int, repeat: int, steps: int, copy_gbps: float) -> dict:
    from benchmarks.suite import ROOFLINE, build_model, model_config, model_step_times, solve_and_cell_times, sweep_time
    from marrow3d.resources import estimate_memory

    rec: dict = {"n": n, "memory_gib": estimate_memory((n, n, n), "float32", drugs=0).device_bytes / 2**30}
    model, rec["build_s"] = build_model(model_config(n))
    model.time_step()
    sw = sweep_time(model, repeat)
    sw["GBps_effective"] = ROOFLINE["rbgs_sweep"]["bytes"] * n**3 / sw["s"] / 1e9
    sw["vs_copy"] = sw["GBps_effective"] / copy_gbps
    rec["sweep"] = sw
    rec.update(solve_and_cell_times(model, repeat))
    rec["model_step"] = model_step_times(model, steps)
    del model
    return rec


def femur_run(shape, days: float, backend: str) -> dict:
    from benchmarks.suite import build_model
    from marrow3d.config import load_config
    from marrow3d.simulation import Simulation

    sets = [f'run.backend="{backend}"']
    if shape:
        sets.append(f"domain.shape_voxels={list(shape)}")
    cfg = load_config(ROOT / "configs" / "femur.toml", sets)
    model, build_s = build_model(cfg)
    Simulation(model, stop_iteration=1, progress=False).run()  # compile; the first step is not timed
    t0_h = model.clock.time_h
    t0 = time.perf_counter()
    Simulation(model, stop_time_h=t0_h + days * 24.0, progress=False).run()
    wall = time.perf_counter() - t0
    sim_days = (model.clock.time_h - t0_h) / 24.0
    per_day = wall / sim_days
    return {"shape": list(model.shape), "voxels": int(np.prod(model.shape)), "build_s": build_s,
            "simulated_days": sim_days, "steps": int(round(sim_days * 24 / model.clock.dt_h)), "wall_s": wall,
            "s_per_simulated_day": per_day, "extrapolated_28_days_min": per_day * 28 / 60.0,
            "iterations_last_step": dict(model.solve_iterations)}


def gpu_name() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout.strip()
        return out.splitlines()[0] if out else ""
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return ""


# ------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="CPU backend, small sizes, same code paths")
    p.add_argument("--sizes", default=None, help="kernel-timing cube edges (default 256,512; dry 32,40)")
    p.add_argument("--check-size", type=int, default=None, help="cross-check grid edge (default 128; dry 24)")
    p.add_argument("--check-steps", type=int, default=None)
    p.add_argument("--layout-size", type=int, default=None, help="layout/reduction check grid edge (default 64; dry 24)")
    p.add_argument("--femur-days", type=float, default=None, help="simulated days of the femur run (default 2)")
    p.add_argument("--skip-femur", action="store_true")
    p.add_argument("--budget-s", type=float, default=540.0,
                   help="skip the remaining timing sizes once this much wall time has passed (default 540)")
    p.add_argument("--out", type=Path, default=None, help="JSON output (default benchmarks/results/device_check.json)")
    # subprocess mode (the CPU side of the cross-check)
    p.add_argument("--cpu-reference", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--solver-reference", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=24, help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=3, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.cpu_reference:
        return cpu_reference(args)

    plan = dict(DRY if args.dry_run else REAL)
    if args.sizes:
        plan["sizes"] = [int(v) for v in args.sizes.split(",")]
    if args.check_size:
        plan["check_size"] = args.check_size
    if args.check_steps:
        plan["check_steps"] = args.check_steps
    if args.layout_size:
        plan["layout_size"] = args.layout_size
    if args.femur_days:
        plan["femur_days"] = args.femur_days
    out_path = args.out or RESULTS / ("device_check_dry.json" if args.dry_run else "device_check.json")
    backend = "cpu" if args.dry_run else "cuda"
    start = time.perf_counter()

    from benchmarks.suite import machine_info, numpy_copy_bandwidth, taichi_copy_bandwidth
    from marrow3d.backend import initialize
    from marrow3d.errors import BackendError
    from marrow3d.kernels.ti_compat import current_arch_name

    record: dict = {"benchmark": "device_check", "dry_run": args.dry_run, "plan": plan,
                    "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
                    "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    "load_before": os.getloadavg()[0], "checks": {}}
    # 1. backend ---------------------------------------------------------------------------
    try:
        info = initialize(backend)
    except BackendError as exc:
        log(f"FAIL backend: {exc}")
        return 1
    arch = current_arch_name()
    want = "cuda" if not args.dry_run else arch
    if arch != want:
        log(f"FAIL backend: the kernels run on {arch!r}, not {want!r} (silent fallback)")
        return 1
    record["machine"] = machine_info(info)
    record["machine"]["gpu"] = gpu_name() if not args.dry_run else ""
    log(f"backend {arch} ({info.name}), {record['machine'].get('gpu') or record['machine']['cpu']}")
    record["checks"]["backend"] = {"arch": arch, "ok": True}

    import tempfile

    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        # 2. layouts ---------------------------------------------------------------------------
        try:
            lc = layout_check(plan["layout_size"], args.dry_run, Path(tmp))
        except CheckFailed as exc:
            lc = {"ok": False, "error": str(exc)}
        record["checks"]["layouts"] = lc
        ok &= lc["ok"]
        log(f"layouts {_layouts_text(lc)} -> {'ok' if lc['ok'] else 'FAIL'}")
        # 3. reductions ------------------------------------------------------------------------
        rc = reduction_check(plan["layout_size"])
        record["checks"]["reductions"] = rc
        ok &= rc["ok"]
        log(f"reductions: repeat {'identical' if rc['repeat_identical'] else 'DIFFERENT'}, vs numpy "
            f"{rc['relative_difference']:.1e} -> {'ok' if rc['ok'] else 'FAIL'}")
        # 4. cross-check -----------------------------------------------------------------------
        try:
            cc = cross_check(plan["check_size"], plan["check_steps"], args.dry_run, Path(tmp))
        except CheckFailed as exc:
            cc = {"ok": False, "error": str(exc)}
        record["checks"]["cross_check"] = cc
        ok &= cc["ok"]
        if "fields" in cc:
            log(f"cross-check {cc['size']}^3 x {cc['steps']} steps vs CPU: {_fields_text(cc)}; cells "
                f"{_cells_text(cc)} -> {'ok' if cc['ok'] else 'FAIL'}")
        else:
            log(f"cross-check FAIL: {cc.get('error')}")
    # 5. bandwidth -----------------------------------------------------------------------------
    bw = {"taichi_copy_GBps": taichi_copy_bandwidth(plan["copy_mib"], 5),
          "host_numpy_copy_GBps": numpy_copy_bandwidth(min(plan["copy_mib"], 256), 3)}
    record["bandwidth"] = bw
    log(f"device copy {bw['taichi_copy_GBps']:.1f} GB/s (host numpy copy {bw['host_numpy_copy_GBps']:.1f} GB/s)")
    # 6. kernel timings ------------------------------------------------------------------------
    record["timings"] = []
    for n in plan["sizes"]:
        if time.perf_counter() - start > args.budget_s:
            log(f"skipping {n}^3: time budget ({args.budget_s:.0f} s) spent")
            record.setdefault("skipped", []).append(n)
            continue
        try:
            t = kernel_timings(n, plan["repeat"], plan["steps"], bw["taichi_copy_GBps"])
        except Exception as exc:  # e.g. out of device memory at 512^3: report, go on
            t = {"n": n, "error": f"{type(exc).__name__}: {exc}"}
        record["timings"].append(t)
        if "error" in t:
            log(f"{n}^3: {t['error']}")
        else:
            log(f"{n}^3: sweep {t['sweep']['s'] * 1e3:.2f} ms ({t['sweep']['vs_copy']:.2f} x copy), O2 cold "
                f"{t['cold_solve']['s']:.3f} s, warm {t['warm_solve']['s']:.3f} s, cells {t['cell_step']['s']:.3f} s, "
                f"model step {t['model_step']['s']:.3f} s")
    # 7. femur ---------------------------------------------------------------------------------
    if not args.skip_femur:
        try:
            fr = femur_run(plan["femur_shape"], plan["femur_days"], backend)
        except Exception as exc:
            fr = {"error": f"{type(exc).__name__}: {exc}"}
        record["femur"] = fr
        if "error" in fr:
            log(f"femur: {fr['error']}")
        else:
            log(f"femur {'x'.join(map(str, fr['shape']))}: {fr['s_per_simulated_day']:.1f} s per simulated day "
                f"-> 28 days in {fr['extrapolated_28_days_min']:.1f} min")
    # the sweep goal at the largest size timed (GPU only: a CPU core is not rated against it)
    done = [t for t in record["timings"] if "error" not in t]
    if done and not args.dry_run:
        ratio = done[-1]["sweep"]["vs_copy"]
        record["checks"]["sweep_vs_copy"] = {"n": done[-1]["n"], "ratio": ratio, "goal": SWEEP_GOAL,
                                             "ok": bool(ratio >= SWEEP_GOAL)}
        ok &= ratio >= SWEEP_GOAL
    # the backend must still be the requested one after everything ran
    arch_end = current_arch_name()
    record["checks"]["backend_at_end"] = {"arch": arch_end, "ok": arch_end == arch}
    ok &= arch_end == arch
    record["ok"] = bool(ok)
    record["wall_s"] = time.perf_counter() - start
    record["load_after"] = os.getloadavg()[0]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(record, indent=2, default=float))
    summary(record)
    log(f"wrote {out_path}")
    return 0 if ok else 1


def _layouts_text(lc: dict) -> str:
    if "fields" not in lc:
        return f"error: {lc.get('error')}"
    parts = []
    for name, r in lc["fields"].items():
        same = "identical" if r["cpu_voxels_identical"] else f"{r['cpu_voxels_max_over_range']:.1e}"
        parts.append(f"{name}: repeat {'identical' if r['repeat_identical'] else 'DIFFERENT'}, vs CPU voxels {same}, "
                     f"vs CPU rows {r['cpu_rows_max_over_range']:.1e} of range")
    return f"{lc['size']}^3 " + "; ".join(parts)


def _fields_text(cc: dict) -> str:
    parts = []
    for k, v in cc["fields"].items():
        parts.append(f"{k} identical" if v["identical"] else f"{k} rel L2 {v['rel_l2']:.1e}")
    return ", ".join(parts)


def _cells_text(cc: dict) -> str:
    c = cc["cells"]
    return "identical" if c["identical"] else f"{c['voxels_different']} voxels differ"


def summary(record: dict) -> None:
    m = record["machine"]
    log("\n=== device check " + ("(dry run, CPU) " if record["dry_run"] else "") + f"{record['date']} ===")
    log(f"device: {m.get('gpu') or m.get('cpu')} | backend {m.get('backend')} ({m.get('arch')}) | "
        f"{m.get('kernel_library')} | marrow3d {m.get('marrow3d')} {m.get('git_commit', '')}")
    cc = record["checks"].get("cross_check", {})
    log(f"{'check':<28} {'result':<50}")
    log(f"{'backend':<28} {record['checks']['backend']['arch']} -> ok")
    lc = record["checks"].get("layouts", {})
    log(f"{'layouts':<28} {_layouts_text(lc)} -> {'ok' if lc.get('ok') else 'FAIL'}")
    rc = record["checks"].get("reductions", {})
    if rc:
        log(f"{'reductions':<28} repeat {'identical' if rc['repeat_identical'] else 'DIFFERENT'}, "
            f"vs numpy {rc['relative_difference']:.1e} -> {'ok' if rc['ok'] else 'FAIL'}")
    if "fields" in cc:
        label = f"cross-check {cc['size']}^3 fields"
        log(f"{label:<28} {_fields_text(cc)} -> {'ok' if cc['ok'] else 'FAIL'}")
        c = cc["cells"]
        log(f"{'cross-check cells':<28} {_cells_text(cc)} (counts {c['counts_device']} vs {c['counts_cpu']})")
    log(f"{'copy bandwidth':<28} {record['bandwidth']['taichi_copy_GBps']:.1f} GB/s")
    log(f"{'n':>6} {'sweep ms':>9} {'x copy':>7} {'cold s':>8} {'warm s':>8} {'cells s':>8} {'step s':>8}")
    for t in record["timings"]:
        if "error" in t:
            log(f"{t['n']:>5}^3 {t['error']}")
            continue
        log(f"{t['n']:>5}^3 {t['sweep']['s'] * 1e3:9.2f} {t['sweep']['vs_copy']:7.2f} {t['cold_solve']['s']:8.3f} "
            f"{t['warm_solve']['s']:8.3f} {t['cell_step']['s']:8.3f} {t['model_step']['s']:8.3f}")
    sw = record["checks"].get("sweep_vs_copy")
    if sw:
        log(f"{'sweep vs copy':<28} {sw['ratio']:.2f} at {sw['n']}^3 (goal >= {sw['goal']}) -> "
            f"{'ok' if sw['ok'] else 'FAIL'}")
    fr = record.get("femur")
    if fr and "error" not in fr:
        log(f"femur {'x'.join(map(str, fr['shape']))}: {fr['steps']} steps, {fr['s_per_simulated_day']:.1f} s/simulated day, "
            f"28 days ~ {fr['extrapolated_28_days_min']:.1f} min")
    log(f"overall: {'PASS' if record['ok'] else 'FAIL'} in {record['wall_s']:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
