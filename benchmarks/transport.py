"""Benchmark: transport solver (Newton + multigrid-preconditioned CG) speed and scaling.

Usage::

    python -m benchmarks.transport                     # 32^3 .. 128^3, bandwidth at 128^3
    python -m benchmarks.transport --sizes 64,128,256  # add 256^3 (about 2 GB of memory)
    python -m benchmarks.transport --explicit-size 0   # skip the explicit time-marching run

Prints a table and writes ``benchmarks/results/transport.json`` (gitignored). Measured:

* memory bandwidth: a large numpy copy, a numpy 7-point Jacobi stencil, a naive one-pass
  Taichi Jacobi stencil (3-D dense field, flat parallel loop) and the solver's red-black
  Gauss-Seidel sweep and operator application, as *effective* GB/s = minimal bytes / time
  (each array read or written once per pass; a red-black half-sweep in fact streams every
  cache line, so its real traffic is about twice its effective count);
* per grid size, on two domains (``box``: the project's anatomy generator; ``synthetic``:
  trabecular noise bone, see ``make_state``), for an O2-like field (Michaelis-Menten uptake,
  vessel exchange) and a linear drug-like field: cold solve (from u = 0) and warm re-solve
  (after 2% of the vessels lose half their integrity and 1% of the cells turn into blasts)
  times, CG iterations and Newton steps, to a relative residual of 1e-6;
* explicit forward-Euler time marching of the same operator to the same steady state
  (BioFVM/PhysiCell-style substepping at the stability limit), and the speedup of multigrid.

Targets (2 CPU cores, float32): 128^3 cold O2 solve < 2 s, warm re-solve < 0.5 s, iteration
counts within 2 of each other from 32^3 to 128^3.
"""

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_COLD_S = 2.0
TARGET_WARM_S = 0.5


def _best_time(fn, repeats: int) -> float:
    """Best wall time of ``repeats`` calls (after one warm-up call)."""
    fn()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


# ------------------------------------------------------------------------------- bandwidth


def bandwidth(n: int) -> dict:
    """Effective bandwidths (GB/s) of copies, stencils and the solver's sweeps on n^3 float32."""
    from marrow3d.kernels import transport as T
    from marrow3d.kernels.solver_plan import S_PQ
    from marrow3d.transport_solver import MultigridSolver
    from marrow3d.kernels import transport_reference as R
    from marrow3d.kernels.ti_compat import ti

    out = {"grid": n}
    nvox = n**3
    # numpy copy of a large array (256 MiB, beyond any cache): read + write
    bufs = [np.ones(64 * 1024 * 1024, np.float32), np.empty(64 * 1024 * 1024, np.float32)]
    t = _best_time(lambda: np.copyto(bufs[1], bufs[0]), 3)
    out["numpy_copy_GBps"] = 2 * bufs[0].nbytes / t / 1e9
    bufs.clear()  # 512 MiB: release before the next tests

    # numpy 7-point Jacobi stencil (interior), minimal traffic 8 B/voxel
    u = np.random.default_rng(0).random((n, n, n), dtype=np.float32)
    v = np.zeros_like(u)

    def np_jacobi():
        v[1:-1, 1:-1, 1:-1] = (
            u[:-2, 1:-1, 1:-1] + u[2:, 1:-1, 1:-1] + u[1:-1, :-2, 1:-1]
            + u[1:-1, 2:, 1:-1] + u[1:-1, 1:-1, :-2] + u[1:-1, 1:-1, 2:]
        ) * np.float32(1 / 6)

    out["numpy_jacobi_GBps"] = 8 * nvox / _best_time(np_jacobi, 3) / 1e9

    # naive Taichi Jacobi: a 3-D dense field, one flat parallel loop with boundary branches
    uf = ti.field(ti.f32, shape=(n, n, n))
    vf = ti.field(ti.f32, shape=(n, n, n))
    uf.from_numpy(u)
    t = _best_time(lambda: (_naive_jacobi(uf, vf), ti.sync()), 5)
    out["taichi_naive_jacobi_GBps"] = 8 * nvox / t / 1e9

    # the solver's own passes on a realistic problem
    solver = MultigridSolver((n, n, n), 10.0, dtype=ti.f32)
    tissue, cells, integ = R.synthetic_marrow((n, n, n), seed=1)
    T.assemble_coefficients(tissue, cells, integ, R.oxygen_tables(), solver.D, solver.a, solver.vmax, solver.s)
    solver.solve(np.zeros((n, n, n), np.float32), 1.0)  # fills conductances and diagonals
    l0 = solver.levels[0]
    g = (l0.gz, l0.gy, l0.gx)

    def rbgs():
        solver.sweep(0)
        ti.sync()

    t = _best_time(rbgs, 5)
    out["rbgs_sweep_ms"] = t * 1e3
    out["rbgs_sweep_GBps"] = 28 * nvox / t / 1e9  # b, 1/diag, gx, gy, gz, e read + e written

    def matvec():
        T.apply_operator(solver.p, solver.q, l0.diag, *g, solver._part, solver._scal, S_PQ, n, n, n,
                         solver.gpu_layout)
        ti.sync()

    t = _best_time(matvec, 5)
    out["operator_ms"] = t * 1e3
    out["operator_GBps"] = 24 * nvox / t / 1e9
    for k in ("numpy_jacobi", "taichi_naive_jacobi", "rbgs_sweep", "operator"):
        out[f"{k}_vs_copy"] = out[f"{k}_GBps"] / out["numpy_copy_GBps"]
    out["rbgs_vs_taichi_naive"] = out["rbgs_sweep_GBps"] / out["taichi_naive_jacobi_GBps"]
    out["rbgs_vs_numpy_jacobi"] = out["rbgs_sweep_GBps"] / out["numpy_jacobi_GBps"]
    return out


def _define_kernels():
    from marrow3d.kernels.ti_compat import ti
    from marrow3d.kernels.transport import ND1, neighbor_sum

    global _naive_jacobi, _explicit_step

    @ti.kernel
    def _naive_jacobi(u: ti.template(), v: ti.template()):
        nz, ny, nx = u.shape
        for z, y, x in u:
            acc = 0.0
            cnt = 0.0
            if x > 0:
                acc += u[z, y, x - 1]
                cnt += 1
            if x < nx - 1:
                acc += u[z, y, x + 1]
                cnt += 1
            if y > 0:
                acc += u[z, y - 1, x]
                cnt += 1
            if y < ny - 1:
                acc += u[z, y + 1, x]
                cnt += 1
            if z > 0:
                acc += u[z - 1, y, x]
                cnt += 1
            if z < nz - 1:
                acc += u[z + 1, y, x]
                cnt += 1
            v[z, y, x] = acc / cnt

    @ti.kernel
    def _explicit_step(
        u: ND1, v: ND1, D: ND1, a: ND1, vmax: ND1, s: ND1, gz: ND1, gy: ND1, gx: ND1,
        km: ti.f32, dt: ti.f32, nz: ti.i32, ny: ti.i32, nx: ti.i32,
    ):
        """v = u + dt F(u): one forward-Euler step of the same discrete operator (padded u, v)."""
        sy = nx
        sz = nx * ny
        for z, y in ti.ndrange(nz, ny):
            for x in range(nx):
                p = (z * ny + y) * nx + x
                pp = p + sz
                up = u[pp]
                f = 0.0
                if D[p] > 0:
                    flux = neighbor_sum(u, gz, gy, gx, pp, sy, sz)
                    gsum = gx[pp - 1] + gx[pp] + gy[pp - sy] + gy[pp] + gz[pp - sz] + gz[pp]
                    f = flux - gsum * up - a[p] * up - vmax[p] * up / (km + up) + s[p]
                v[pp] = ti.max(up + dt * f, 0.0)


# ------------------------------------------------------------------------------- solves


def _drug_tables():
    from marrow3d.kernels import transport_reference as R

    return R.CoefficientTables(
        diffusivity_by_tissue=[1.2e4, 0, 1.2e4, 1.2e4, 1.2e4, 0],
        decay_by_tissue=[0.005] * 6,
        uptake_by_cell=[0, 0.02, 0.05, 0.02, 0.05],
        exchange_by_class=[2.0, 20.0],
        leak_by_class=[1.0, 3.0],
        blood_by_class=[0.3, 0.3],
        integrity_floor=0.1,
    )


def make_state(problem: str, n: int, seed: int = 3):
    """(tissue, cells, integrity) of an n^3 test domain.

    ``box``: the project's anatomy generator (bone slab, random-walk sinusoid network,
    endosteal arterioles; one connected marrow space) with cells in 70% of marrow voxels.
    ``synthetic``: :func:`kernels.transport_reference.synthetic_marrow` (trabecular bone from
    thresholded noise, which also leaves a few sealed marrow pockets at 128^3: a stress case).
    """
    from marrow3d.kernels import transport_reference as R
    from marrow3d.kernels.codes import MARROW

    if problem == "synthetic":
        return R.synthetic_marrow((n, n, n), seed=seed)
    from marrow3d.anatomy import generate_anatomy
    from marrow3d.config.anatomy import AnatomyConfig, DomainConfig

    an = generate_anatomy(DomainConfig(kind="box", shape_voxels=(n, n, n)), AnatomyConfig(), seed=seed)
    rng = np.random.default_rng(seed)
    tissue = np.ascontiguousarray(an.tissue, dtype=np.uint8)
    cells = np.zeros(tissue.shape, np.uint8)
    occ = (tissue == MARROW) & (rng.random(tissue.shape) < 0.7)
    cells[occ] = rng.choice([1, 2, 3, 4], size=int(occ.sum()), p=[0.02, 0.78, 0.02, 0.18])
    return tissue, cells, np.ascontiguousarray(an.integrity, dtype=np.float32)


def solve_case(n: int, field: str, problem: str = "box", seed: int = 3, repeats: int = 2) -> dict:
    """Cold and warm solve times on an n^3 domain (best of ``repeats``)."""
    from marrow3d.kernels import transport as T
    from marrow3d.kernels import transport_reference as R
    from marrow3d.transport_solver import MultigridSolver, hierarchy_shapes
    from marrow3d.kernels.ti_compat import ti

    shape = (n, n, n)
    tissue, cells, integ = make_state(problem, n, seed)
    tables, km = (R.oxygen_tables(), 1.0) if field == "oxygen" else (_drug_tables(), 1.0)
    solver = MultigridSolver(shape, 10.0, dtype=ti.f32)
    rng = np.random.default_rng(5)
    integ2 = integ.copy()
    hit = (integ2 > 0) & (rng.random(shape) < 0.02)
    integ2[hit] *= 0.5
    cells2 = cells.copy()
    cells2[(cells2 > 0) & (rng.random(shape) < 0.01)] = 4
    cold_t = warm_t = cold_cpu = warm_cpu = math.inf
    for _ in range(repeats):
        T.assemble_coefficients(tissue, cells, integ, tables, solver.D, solver.a, solver.vmax, solver.s)
        u = np.zeros(shape, np.float32)
        t0, c0 = time.perf_counter(), time.process_time()
        cold = solver.solve(u, km, tol=1e-6)
        cold_t, cold_cpu = min(cold_t, time.perf_counter() - t0), min(cold_cpu, time.process_time() - c0)
        T.assemble_coefficients(tissue, cells2, integ2, tables, solver.D, solver.a, solver.vmax, solver.s)
        t0, c0 = time.perf_counter(), time.process_time()
        warm = solver.solve(u, km, tol=1e-6)
        warm_t, warm_cpu = min(warm_t, time.perf_counter() - t0), min(warm_cpu, time.process_time() - c0)
    return {
        # CPU seconds of all threads: far less sensitive than wall time to other processes
        "cold_cpu_s": cold_cpu,
        "warm_cpu_s": warm_cpu,
        "grid": n,
        "problem": problem,
        "field": field,
        "levels": [list(s) for s in hierarchy_shapes(shape)[0]],
        "cold_s": cold_t,
        "cold_iterations": cold.iterations,
        "cold_newton": cold.newton_iterations,
        "cold_converged": cold.converged,
        "cold_relative_residual": cold.relative_residual,
        "cold_field_relative_residual": cold.field_relative_residual,
        "warm_s": warm_t,
        "warm_iterations": warm.iterations,
        "warm_newton": warm.newton_iterations,
        "warm_converged": warm.converged,
        "warm_initial_relative_residual": warm.residual_history[0],
    }


def explicit_case(n: int, tol: float, max_seconds: float) -> dict:
    """Forward-Euler time marching of the O2 problem to steady state, against multigrid."""
    from marrow3d.kernels import transport as T
    from marrow3d.kernels import transport_reference as R
    from marrow3d.transport_solver import MultigridSolver
    from marrow3d.kernels.ti_compat import ti

    shape = (n, n, n)
    km = 1.0
    tissue, cells, integ = R.synthetic_marrow(shape, seed=3)
    solver = MultigridSolver(shape, 10.0, dtype=ti.f32)
    T.assemble_coefficients(tissue, cells, integ, R.oxygen_tables(), solver.D, solver.a, solver.vmax, solver.s)
    u_mg = np.zeros(shape, np.float32)
    solver.solve(u_mg, km, tol=tol)  # compile, fill conductances
    u_mg[:] = 0
    t0 = time.perf_counter()
    info = solver.solve(u_mg, km, tol=tol)
    t_mg = time.perf_counter() - t0

    c = solver.coefficients()
    l0 = solver.levels[0]
    gsum = sum(np.asarray(g.to_numpy()[n * n : n * n + n**3]).reshape(shape) for g in (l0.gz, l0.gy, l0.gx))
    # faces towards lower neighbours are stored on the neighbour: add them
    for axis, g in zip((0, 1, 2), (l0.gz, l0.gy, l0.gx)):
        ga = g.to_numpy()[n * n : n * n + n**3].reshape(shape)
        sl = [slice(None)] * 3
        sl[axis] = slice(1, None)
        lo = [slice(None)] * 3
        lo[axis] = slice(0, -1)
        gsum[tuple(sl)] += ga[tuple(lo)]
    rate = gsum + c["a"] + c["vmax"] / km
    dt = 1.0 / float(rate.max())  # monotone (positivity-preserving) explicit limit [min]
    size = l0.size
    ua = ti.ndarray(ti.f32, shape=size)
    ub = ti.ndarray(ti.f32, shape=size)
    ua.fill(0)
    ub.fill(0)
    scale = float(np.linalg.norm(c["s"].astype(np.float64)))
    steps, rel, hist = 0, 1.0, []
    check_every = 200
    t0 = time.perf_counter()
    while True:
        for _ in range(check_every):
            _explicit_step(ua, ub, solver.D, solver.a, solver.vmax, solver.s, *( l0.gz, l0.gy, l0.gx), km, dt, n, n, n)
            ua, ub = ub, ua
        steps += check_every
        field = ua.to_numpy()[n * n : n * n + n**3].reshape(shape)
        rel = float(np.linalg.norm(solver.residual(field, km)) / scale)
        hist.append((steps, rel))
        elapsed = time.perf_counter() - t0
        if rel <= tol or elapsed > max_seconds:
            break
    t_explicit = time.perf_counter() - t0
    # (the residual checks use the solver; they are a small part of the time)
    record = {
        "grid": n,
        "tol": tol,
        "dt_min": dt,
        "multigrid_s": t_mg,
        "multigrid_iterations": info.iterations,
        "explicit_steps": steps,
        "explicit_s": t_explicit,
        "explicit_relative_residual": rel,
        "explicit_converged": rel <= tol,
        "simulated_minutes": steps * dt,
    }
    if rel > tol and len(hist) >= 2:
        # extrapolate with the observed asymptotic contraction per step
        (s1, r1), (s2, r2) = hist[-2], hist[-1]
        per_step = (r2 / r1) ** (1.0 / (s2 - s1)) if r2 < r1 else 1.0
        if per_step < 1.0:
            more = math.log(tol / rel) / math.log(per_step)
            record["explicit_steps_extrapolated"] = steps + more
            record["explicit_s_extrapolated"] = t_explicit * (steps + more) / steps
    t_ex = record.get("explicit_s_extrapolated", t_explicit)
    record["speedup_multigrid"] = t_ex / t_mg
    record["max_abs_difference"] = float(np.abs(field - u_mg).max())
    return record


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="32,64,128", help="cube edges to solve (default 32,64,128)")
    p.add_argument("--bandwidth-size", type=int, default=128, help="grid of the bandwidth tests (0: skip)")
    p.add_argument("--explicit-size", type=int, default=64, help="grid of the explicit comparison (0: skip)")
    p.add_argument("--explicit-tol", type=float, default=1e-5, help="relative residual for that comparison")
    p.add_argument("--explicit-max-s", type=float, default=60.0, help="wall-time cap of explicit marching")
    p.add_argument("--problems", default="box,synthetic", help="box (anatomy generator), synthetic")
    p.add_argument("--backend", default="cpu", choices=["cpu", "cuda", "vulkan", "auto"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=RESULTS / "transport.json")
    args = p.parse_args(argv)

    from marrow3d.backend import initialize

    info = initialize(args.backend, threads=args.threads, precision="float32")
    _define_kernels()
    sizes = [int(v) for v in args.sizes.split(",") if v]
    record = {
        "benchmark": "transport",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "kernel_library": info.library,
            "backend": info.name,
            "arch": info.arch,
            "threads": info.threads,
        },
        "targets": {"cold_128_s": TARGET_COLD_S, "warm_128_s": TARGET_WARM_S},
    }
    load = os.getloadavg()
    record["load_average_before"] = list(load)
    print(f"backend {info.name} ({info.arch}), threads {info.threads}, load average {load[0]:.2f}", flush=True)
    if load[0] > 0.5 * (os.cpu_count() or 1):
        print("  warning: the machine is busy; timings will be inflated", flush=True)
    solve_case(16, "oxygen", "synthetic", repeats=1)  # compile every kernel once, outside the timings
    solve_case(16, "drug", "synthetic", repeats=1)

    if args.bandwidth_size:
        bw = bandwidth(args.bandwidth_size)
        record["bandwidth"] = bw
        print(f"\nbandwidth at {bw['grid']}^3 (effective GB/s = minimal bytes / time)")
        print(f"  numpy copy (256 MiB)          {bw['numpy_copy_GBps']:7.2f}")
        for k, label in (
            ("numpy_jacobi", "numpy 7-point Jacobi"),
            ("taichi_naive_jacobi", "Taichi naive Jacobi"),
            ("rbgs_sweep", "red-black GS sweep (solver)"),
            ("operator", "operator apply (solver)"),
        ):
            print(f"  {label:<29} {bw[k + '_GBps']:7.2f}   {bw[k + '_vs_copy']:5.2f} x copy")
        print(
            f"  RB-GS sweep {bw['rbgs_sweep_ms']:.2f} ms: {bw['rbgs_vs_taichi_naive']:.2f} x naive Taichi Jacobi, "
            f"{bw['rbgs_vs_numpy_jacobi']:.2f} x numpy Jacobi (effective bandwidth)"
        )

    runs = []
    print(
        f"\n{'grid':>6} {'problem':<9} {'field':<7} {'cold s':>8} {'cpu s':>7} {'its':>4} {'newt':>4} "
        f"{'warm s':>8} {'cpu s':>7} {'its':>4} {'newt':>4}  levels"
    )
    for n in sizes:
        for problem in args.problems.split(","):
            for field in ("oxygen", "drug"):
                r = solve_case(n, field, problem)
                runs.append(r)
                lv = " ".join("x".join(map(str, s)) for s in r["levels"])
                flag = "" if r["cold_converged"] and r["warm_converged"] else "  NOT CONVERGED"
                print(
                    f"{n:>5}^3 {problem:<9} {field:<7} {r['cold_s']:8.3f} {r['cold_cpu_s']:7.2f} "
                    f"{r['cold_iterations']:4d} {r['cold_newton']:4d} {r['warm_s']:8.3f} {r['warm_cpu_s']:7.2f} "
                    f"{r['warm_iterations']:4d} {r['warm_newton']:4d}  "
                    f"{lv}{flag}",
                    flush=True,
                )
    record["solves"] = runs
    for problem in args.problems.split(","):
        for field in ("oxygen", "drug"):
            its = {r["grid"]: r["cold_iterations"] for r in runs if (r["field"], r["problem"]) == (field, problem)}
            its = {k: v for k, v in its.items() if k >= 32}
            if its:
                spread = max(its.values()) - min(its.values())
                print(f"  {problem} {field}: cold CG iterations by grid {its} (spread {spread})")
    ok = True
    nthreads = info.threads or 1
    for r in runs:
        if r["grid"] == 128 and r["field"] == "oxygen":
            good = r["cold_s"] < TARGET_COLD_S and r["warm_s"] < TARGET_WARM_S
            ok = ok and good
            print(
                f"  128^3 {r['problem']} O2 targets: cold {r['cold_s']:.2f} s (< {TARGET_COLD_S}), warm "
                f"{r['warm_s']:.2f} s (< {TARGET_WARM_S}): {'ok' if good else 'MISSED'}; "
                f"CPU time / {nthreads} threads: cold {r['cold_cpu_s'] / nthreads:.2f} s, "
                f"warm {r['warm_cpu_s'] / nthreads:.2f} s"
            )
    record["load_average_after"] = list(os.getloadavg())

    if args.explicit_size:
        ex = explicit_case(args.explicit_size, args.explicit_tol, args.explicit_max_s)
        record["explicit"] = ex
        extra = ""
        if not ex["explicit_converged"]:
            extra = f" (capped; extrapolated {ex.get('explicit_steps_extrapolated', float('nan')):.0f} steps, " \
                    f"{ex.get('explicit_s_extrapolated', float('nan')):.1f} s)"
        print(
            f"\nexplicit forward Euler at {ex['grid']}^3 to {ex['tol']:g}: dt = {ex['dt_min'] * 60:.3g} s, "
            f"{ex['explicit_steps']} steps in {ex['explicit_s']:.1f} s{extra}; "
            f"multigrid {ex['multigrid_s']:.3f} s -> speedup x{ex['speedup_multigrid']:.0f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2))
    print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
