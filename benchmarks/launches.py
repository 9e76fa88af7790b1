"""Benchmark: the fixed cost of a kernel launch, and launches / host reads per model step.

Usage::

    python -m benchmarks.launches                 # CPU backend, 2 threads
    python -m benchmarks.launches --backend cuda  # on a GPU

Part 1 times launches of tiny kernels (16 elements, so the work is nothing) that differ only in
their arguments: 1, 4, 8 and 16 ndarrays; 8 dense fields passed as templates (the alternative
to ndarrays); 8 ndarrays plus a compile-time int (the solver's layout switch); 8 ndarrays plus
the dtype as a template (the pattern the kernels used before: quadrants cannot cache its
template mapping for a dtype object). Rounds of all variants alternate and the median of the
per-round minima is kept, reported as microseconds and as a ratio to the 1-ndarray kernel of
the same process. A field-argument kernel is compiled once per field instance (every new grid
or solver recompiles it, about 0.1 s each); an ndarray kernel once per dtype.

Part 2 builds the default box at each ``--sizes`` edge, takes warm-up steps, then counts every
launch of the transport kernels and every read of the solver registers over ``--steps`` model
steps (by wrapping the kernel objects and ``MultigridSolver._scalars``), with the time per step.

Results go to ``benchmarks/results/launches.json``.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _define(ti):
    ND1 = ti.types.ndarray(ndim=1)

    @ti.kernel
    def k1(a: ND1):
        for i in range(16):
            a[i] = a[i] + 1.0

    @ti.kernel
    def k4(a: ND1, b: ND1, c: ND1, d: ND1):
        for i in range(16):
            a[i] = b[i] + c[i] + d[i]

    @ti.kernel
    def k8(a: ND1, b: ND1, c: ND1, d: ND1, e: ND1, f: ND1, g: ND1, h: ND1):
        for i in range(16):
            a[i] = b[i] + c[i] + d[i] + e[i] + f[i] + g[i] + h[i]

    @ti.kernel
    def k16(a: ND1, b: ND1, c: ND1, d: ND1, e: ND1, f: ND1, g: ND1, h: ND1,
            a2: ND1, b2: ND1, c2: ND1, d2: ND1, e2: ND1, f2: ND1, g2: ND1, h2: ND1):
        for i in range(16):
            a[i] = b[i] + c[i] + d[i] + e[i] + f[i] + g[i] + h[i] + a2[i] + b2[i] + c2[i] + d2[i] + e2[i] + f2[i]

    @ti.kernel
    def k8_fields(a: ti.template(), b: ti.template(), c: ti.template(), d: ti.template(), e: ti.template(),
                  f: ti.template(), g: ti.template(), h: ti.template()):
        for i in range(16):
            a[i] = b[i] + c[i] + d[i] + e[i] + f[i] + g[i] + h[i]

    @ti.kernel
    def k8_layout(a: ND1, b: ND1, c: ND1, d: ND1, e: ND1, f: ND1, g: ND1, h: ND1, gpu: ti.template()):
        if ti.static(gpu):
            for i in range(16):
                a[i] = b[i] + c[i] + d[i] + e[i] + f[i] + g[i] + h[i]
        else:
            for i in range(16):
                a[i] = h[i] + g[i] + f[i] + e[i] + d[i] + c[i] + b[i]

    @ti.kernel
    def k8_dtype(a: ND1, b: ND1, c: ND1, d: ND1, e: ND1, f: ND1, g: ND1, h: ND1, dt: ti.template()):
        for i in range(16):
            a[i] = ti.cast(b[i] + c[i] + d[i] + e[i] + f[i] + g[i] + h[i], dt)

    return k1, k4, k8, k16, k8_fields, k8_layout, k8_dtype


def launch_costs(ti, rounds: int, per_round: int) -> dict:
    import warnings

    k1, k4, k8, k16, k8_fields, k8_layout, k8_dtype = _define(ti)
    arrs = [ti.ndarray(ti.f32, shape=16) for _ in range(16)]
    fields = [ti.field(ti.f32, shape=16) for _ in range(8)]
    variants = {
        "1 ndarray": lambda: k1(arrs[0]),
        "4 ndarrays": lambda: k4(*arrs[:4]),
        "8 ndarrays": lambda: k8(*arrs[:8]),
        "16 ndarrays": lambda: k16(*arrs),
        "8 fields (templates)": lambda: k8_fields(*fields),
        "8 ndarrays + int template": lambda: k8_layout(*arrs[:8], True),
        "8 ndarrays + dtype template": lambda: k8_dtype(*arrs[:8], ti.f32),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for fn in variants.values():  # compile
            fn()
        ti.sync()
        best = {k: [] for k in variants}
        for _ in range(rounds):
            for name, fn in variants.items():
                t0 = time.perf_counter()
                for _ in range(per_round):
                    fn()
                ti.sync()
                best[name].append((time.perf_counter() - t0) / per_round)
    us = {k: statistics.median(v) * 1e6 for k, v in best.items()}
    base = us["1 ndarray"]
    return {k: {"us": v, "x_1_ndarray": v / base} for k, v in us.items()}


def step_counts(n: int, steps: int) -> dict:
    from marrow3d import transport_solver as ts
    from marrow3d.config import load_config
    from marrow3d.kernels import coarse_solve, krylov, multigrid
    from marrow3d.kernels import transport as kt
    from marrow3d.kernels.ti_compat import ti
    from marrow3d.runner import make_model

    model = make_model(load_config(None, [f"domain.shape_voxels=[{n},{n},{n}]"]))
    for _ in range(2):
        model.time_step()
    counts = {"launches": 0, "reads": 0}
    saved = []
    for mod in (multigrid, krylov, coarse_solve, kt):
        for name in dir(mod):
            obj = getattr(mod, name)
            if type(obj).__name__ == "QuadrantsCallable":
                def wrap(fn):
                    def counted(*a, **k):
                        counts["launches"] += 1
                        return fn(*a, **k)
                    return counted
                saved.append((mod, name, obj))
                setattr(mod, name, wrap(obj))
    original_read = ts.MultigridSolver._scalars

    def read(self):
        counts["reads"] += 1
        return original_read(self)

    ts.MultigridSolver._scalars = read
    try:
        t0 = time.perf_counter()
        for _ in range(steps):
            model.time_step()
        ti.sync()
        wall = (time.perf_counter() - t0) / steps
    finally:
        ts.MultigridSolver._scalars = original_read
        for mod, name, obj in saved:
            setattr(mod, name, obj)
    return {"n": n, "steps": steps, "transport_launches_per_step": counts["launches"] / steps,
            "solver_reads_per_step": counts["reads"] / steps, "s_per_step": wall,
            "iterations": dict(model.solve_iterations)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="cpu", choices=["cpu", "cuda", "vulkan"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--per-round", type=int, default=300)
    p.add_argument("--sizes", default="24,64")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--out", type=Path, default=RESULTS / "launches.json")
    args = p.parse_args(argv)
    from marrow3d.backend import initialize
    from marrow3d.kernels.ti_compat import ti

    info = initialize(args.backend, threads=args.threads if args.backend == "cpu" else None)
    rec = {"benchmark": "launches", "backend": info.name, "library": info.library, "threads": info.threads,
           "platform": platform.platform(), "python": sys.version.split()[0], "load_before": os.getloadavg()[0],
           "command": " ".join(["python -m benchmarks.launches", *(argv if argv is not None else sys.argv[1:])])}
    rec["launch"] = launch_costs(ti, args.rounds, args.per_round)
    print(f"backend {info.name} ({info.library}), load {rec['load_before']:.1f}")
    for k, v in rec["launch"].items():
        print(f"  {k:<30} {v['us']:7.1f} us  x{v['x_1_ndarray']:.2f}")
    rec["steps"] = [step_counts(int(n), args.steps) for n in args.sizes.split(",") if n]
    for r in rec["steps"]:
        print(f"  {r['n']}^3: {r['transport_launches_per_step']:.0f} transport launches, "
              f"{r['solver_reads_per_step']:.1f} solver reads per step, {r['s_per_step'] * 1e3:.1f} ms/step, "
              f"iterations {r['iterations']}")
    rec["load_after"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rec, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
