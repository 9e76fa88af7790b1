"""The model step by grid size: time, kernel launches, host syncs and host<->device bytes.

``python -m benchmarks.step [--sizes 24,64,128] [--rounds 12] [--threads 2]`` builds the
default box anatomy at each size and measures one loop step (``model.time_step()`` then
``model.check_finite()``, what ``Simulation.run`` does between outputs):

* **time**: the sizes are stepped in turn, round after round, so that a change of machine
  load hits every size alike; the table gives the median wall and CPU time per step, and
  the ratio of each size's step to the largest size's is the median of the per-round ratios
  (robust to load drift on a shared machine);
* **counts**: three more steps per size under :class:`marrow3d.profiling.StepProfiler`:
  launches, syncs and bytes per step (median) and the time per phase. These do not depend on
  the load.

The goals of the speed issue (2-core CPU) are checked at the end: the 24^3 step at most
0.15 x the 64^3 step, at most 1 MiB to the host and at most 10 host syncs per non-output step.
Results also go to ``benchmarks/results/step.json`` (machine, load, command, date).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"

#: Goals of the speed issue on 2 CPU threads.
GOALS = {"step_24_over_64": 0.15, "bytes_to_host_per_step": 2**20, "syncs_per_step": 10}


def _loop_step(model) -> None:
    model.time_step()
    model.check_finite()


def profile_steps(model, steps: int = 3) -> dict:
    """Per-step counts and phase times of ``steps`` loop steps (``StepProfiler.summary``)."""
    from marrow3d.profiling import NULL_PROBE, StepProfiler

    with StepProfiler() as prof:
        model.probe = prof
        try:
            for _ in range(steps):
                model.time_step()
                with prof.phase("finite"):
                    model.check_finite()
                prof.step_done()
        finally:
            model.probe = NULL_PROBE
    return prof.summary(skip=0)


def bench(sizes, rounds: int, threads: int | None) -> dict:
    from benchmarks.suite import load, machine_info, model_config
    from marrow3d.backend import initialize
    from marrow3d.runner import make_model

    info = initialize("cpu", threads=threads, precision="float32")
    record = {"benchmark": "step", "command": "python -m benchmarks.step " + " ".join(sys.argv[1:]),
              "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine_info(info), "load_before": load(), "goals": GOALS}
    models = {}
    for n in sizes:
        models[n] = make_model(model_config(n))
        for _ in range(2):  # compile, leave the start-up transient
            _loop_step(models[n])
    walls = {n: [] for n in sizes}
    cpus = {n: [] for n in sizes}
    for _ in range(rounds):
        for n in sizes:
            c0, t0 = time.process_time(), time.perf_counter()
            _loop_step(models[n])
            walls[n].append(time.perf_counter() - t0)
            cpus[n].append(time.process_time() - c0)
    top = max(sizes)
    rows = {}
    for n in sizes:
        prof = profile_steps(models[n])
        rows[n] = {
            "n": n,
            "step_ms": float(np.median(walls[n]) * 1e3),
            "step_cpu_ms": float(np.median(cpus[n]) * 1e3),
            "best_ms": float(np.min(walls[n]) * 1e3),
            "over_largest": float(np.median(np.array(walls[n]) / np.array(walls[top]))),
            "per_step": prof["per_step"],
            "phases": prof["phases"],
            "kernels": prof["kernels"],
            "missing_hooks": prof["missing_hooks"],
        }
    record["sizes"] = [rows[n] for n in sizes]
    if 24 in walls and 64 in walls:  # the goal's ratio, per round, then the median
        record["step_24_over_64"] = float(np.median(np.array(walls[24]) / np.array(walls[64])))
    record["rounds"] = rounds
    record["load_after"] = load()
    return record


def report(record: dict) -> str:
    lines = [f"model step (time_step + check_finite), {record['machine'].get('cpu', '')}, "
             f"{record['machine'].get('threads')} threads, load {record['load_before']:.2f} -> "
             f"{record['load_after']:.2f}, {record['rounds']} rounds",
             f"{'n':>5} {'step ms':>9} {'cpu ms':>8} {'best ms':>8} {'x largest':>9} {'launches':>9} {'syncs':>6} "
             f"{'to host B':>10} {'to dev B':>9}"]
    for r in record["sizes"]:
        p = r["per_step"]
        lines.append(f"{r['n']:>4}^3 {r['step_ms']:9.2f} {r['step_cpu_ms']:8.2f} {r['best_ms']:8.2f} "
                     f"{r['over_largest']:9.3f} {p['launches']:9.0f} {p['syncs']:6.0f} {p['bytes_to_host']:10.0f} "
                     f"{p['bytes_to_device']:9.0f}")
    for r in record["sizes"]:
        phases = ", ".join(f"{k} {v['seconds'] * 1e3:.2f} ms/{v['launches']:.0f}L/{v['syncs']:.0f}S"
                           for k, v in r["phases"].items() if v["seconds"] > 1e-5 or v["launches"])
        lines.append(f"{r['n']}^3 phases: {phases}")
    checks = []
    if "step_24_over_64" in record:
        checks.append(f"24^3 / 64^3 step {record['step_24_over_64']:.3f} (goal <= {GOALS['step_24_over_64']})")
    worst_b = max(r["per_step"]["bytes_to_host"] for r in record["sizes"])
    worst_s = max(r["per_step"]["syncs"] for r in record["sizes"])
    checks.append(f"bytes to host per step <= {worst_b:.0f} (goal <= {GOALS['bytes_to_host_per_step']})")
    checks.append(f"host syncs per step <= {worst_s:.0f} (goal <= {GOALS['syncs_per_step']})")
    lines.append("goals: " + "; ".join(checks))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.step", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="24,64", help="cube edges, comma-separated (default 24,64)")
    p.add_argument("--rounds", type=int, default=12, help="timed steps per size (interleaved)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=RESULTS / "step.json")
    args = p.parse_args(argv)
    sizes = sorted(int(v) for v in args.sizes.split(",") if v.strip())
    record = bench(sizes, args.rounds, args.threads)
    text = report(record)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
