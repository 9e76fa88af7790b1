"""Benchmark: checkpoint write/read time of a large state, and the output overhead of a run.

Usage::

    python -m benchmarks.checkpoint                       # 256^3 state; 64^3 default run, 2 days
    python -m benchmarks.checkpoint --shape 128,128,128 --days 1 --repeat 2
    python -m benchmarks.checkpoint --skip-run            # checkpoint I/O only (no Taichi)

Part 1 builds a state dict shaped exactly like ``Simulation.prognostic_state()`` of a
``MarrowModel`` on the given grid (random arrays of the real dtypes: labels, cell lattice,
vessel integrity, oxygen/signal/two drug fields, a 28-day history) and writes it through the
real ``Checkpointer._write`` path (temporary file, fsync, rename, ``checkpoint.h5`` link swap),
then reads it back with ``load_checkpoint`` (verification + full read). Random data are less
compressible than real fields, so sizes and times are upper bounds. For comparison it also
writes the same tree with ``write_tree(compression_level=0)``.

Part 2 runs the default configuration (64^3, hourly steps) for ``--days`` with and without
its output writers (``run.h5`` snapshots/time series every default interval, checkpoints)
and reports the ratio of the loop's wall times. Kernels are compiled in a warm-up step that
is not timed. On a shared machine that ratio is noisy, so the time spent inside the writers
is also measured directly within the same loop (``writer_fraction_percent``: writer time over
the rest of the loop).

Prints a table and writes ``benchmarks/results/checkpoint.json`` (gitignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


# ---------------------------------------------------------------------------------- part 1
def synthetic_state(shape: tuple[int, int, int], days: float = 28.0, seed: int = 0) -> dict:
    """A state tree with the structure, names and dtypes of ``Simulation.prognostic_state()``."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))

    def labels(values, p):
        return rng.choice(np.asarray(values, dtype=np.uint8), size=n, p=p).reshape(shape)

    def field(lo, hi):
        return rng.uniform(lo, hi, size=shape).astype(np.float32)

    rows = int(days * 24) + 1
    metric_names = [f"metric_{i:03d}" for i in range(109)]  # a dosed run writes ~110 columns
    history = {name: rng.standard_normal(rows) for name in metric_names}
    history["time_h"] = np.arange(rows, dtype=np.float64)
    tissue = labels([0, 1, 2, 3, 4], [0.70, 0.10, 0.01, 0.18, 0.01])
    off_marrow = tissue != 0  # niche slots and cells only on marrow, as load_checkpoint checks

    def on_marrow(arr):
        arr[off_marrow] = 0
        return arr

    return {
        "model": {
            "anatomy": {
                "tissue": tissue,
                "niche": on_marrow(labels([0, 1, 2], [0.995, 0.002, 0.003])),
                "voxel_um": 10.0,
                "origin_um": np.zeros(3),
            },
            "cells": {
                "cells": on_marrow(labels([0, 1, 2, 3, 4], [0.05, 0.001, 0.9, 0.01, 0.039])),
                "flags": on_marrow(labels([0, 1, 2], [0.998, 0.001, 0.001])),
                "generation": rng.integers(0, 12, size=shape, dtype=np.uint8),
                "counters": rng.integers(0, 10**6, size=(9, 5), dtype=np.int64),
                "auc": rng.integers(0, 2**50, size=(3, 7), dtype=np.int64),
                "step_index": np.array(rows - 1, dtype=np.int64),
                "seed": np.array(1, dtype=np.uint64),
            },
            "vessel_integrity": field(0.0, 1.0),
            "fields": {"oxygen": field(0, 90), "signal": field(0, 2), "cytarabine": field(0, 5),
                       "daunorubicin": field(0, 1)},
            "drug_active": {"cytarabine": True, "daunorubicin": False},
            "solve_iterations": {"oxygen": 4, "signal": 5, "cytarabine": 3, "daunorubicin": 0},
            "clock": {"iteration": rows - 1, "dt_h": 1.0},
            "history": history,
        },
        "writers": {
            "run": {"schedule": {"kind": "time", "hours": 24.0, "next_h": float(rows + 23)}},
            "checkpoint": {"schedule": {"kind": "any", "s0": {"kind": "time", "hours": 168.0, "next_h": 840.0},
                                        "s1": {"kind": "wall", "seconds": 3600.0}}},
        },
        "callbacks": {},
    }


class _Clock:
    def __init__(self, iteration: int, dt_h: float) -> None:
        self.iteration = iteration
        self.dt_h = dt_h

    @property
    def time_h(self) -> float:
        return self.iteration * self.dt_h


class _StubSimulation:
    """What ``Checkpointer._write`` reads from a Simulation: its state and the model's clock."""

    def __init__(self, state: dict) -> None:
        self._state = state
        clock = state["model"]["clock"]
        self.model = type("M", (), {})()
        self.model.clock = _Clock(int(clock["iteration"]), float(clock["dt_h"]))

    def prognostic_state(self) -> dict:
        return self._state


def _state_bytes(tree) -> int:
    total = 0
    for v in tree.values():
        if isinstance(v, dict):
            total += _state_bytes(v)
        elif isinstance(v, np.ndarray):
            total += v.nbytes
    return total


def bench_checkpoint_io(shape: tuple[int, int, int], repeat: int, directory: Path) -> dict:
    from marrow3d.output.checkpointer import Checkpointer, load_checkpoint
    from marrow3d.output.h5tree import write_tree
    from marrow3d.schedules import Never

    state = synthetic_state(shape)
    sim = _StubSimulation(state)
    raw = _state_bytes(state)
    cp = Checkpointer(directory, Never(), keep=1, meta={"config_toml": "[run]\n", "seed": 1, "backend": "cpu"})
    cp.initialize(sim)
    writes, reads, plain_writes = [], [], []
    path = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        path = cp.write(sim)
        writes.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        meta, back = load_checkpoint(directory)
        reads.append(time.perf_counter() - t0)
        assert back["model"]["fields"]["oxygen"].shape == shape
        del back
    size = path.stat().st_size
    # the integrity work inside those, timed alone on the same file and state: the SHA-256 of
    # every object (the write hashes the arrays it wrote, the read those it read) and the
    # content checks of the read; and, as the baseline, the same payload written the same way
    # without checksum record, rename or link swap
    from marrow3d.output.h5access import WRITE_OPTIONS
    from marrow3d.output.h5tree import read_tree
    from marrow3d.output.integrity import tree_digests
    from marrow3d.output.state_checks import check_checkpoint_state

    digests, checks, bare = [], [], []
    for _ in range(repeat):
        with h5py.File(path, "r") as h5:
            arrays: dict = {}
            read_tree(h5["state"], datasets=arrays)
            t0 = time.perf_counter()
            tree_digests(h5, arrays=arrays)
            digests.append(time.perf_counter() - t0)
        meta, back = load_checkpoint(directory)
        t0 = time.perf_counter()
        check_checkpoint_state(meta, back, str(path))
        checks.append(time.perf_counter() - t0)
        del back, arrays
        t0 = time.perf_counter()
        with h5py.File(directory / "bare.h5", "w", libver="v110", **WRITE_OPTIONS) as h5:
            write_tree(h5.create_group("state"), state)
        with open(directory / "bare.h5", "rb+") as fh:
            os.fsync(fh.fileno())
        bare.append(time.perf_counter() - t0)
    (directory / "bare.h5").unlink()
    plain = directory / "uncompressed.h5"
    for _ in range(repeat):
        t0 = time.perf_counter()
        with h5py.File(plain, "w") as h5:
            write_tree(h5.create_group("state"), state, compression_level=0)
        with open(plain, "rb+") as fh:
            os.fsync(fh.fileno())
        plain_writes.append(time.perf_counter() - t0)
    plain_size = plain.stat().st_size
    plain.unlink()
    return {
        "shape_voxels": list(shape),
        "state_mib": raw / 2**20,
        "file_mib": size / 2**20,
        "write_s": min(writes),
        "write_s_all": writes,
        "read_s": min(reads),
        "read_s_all": reads,
        "write_mib_per_s": raw / 2**20 / min(writes),
        "read_mib_per_s": raw / 2**20 / min(reads),
        "checksums_s": min(digests),
        "content_checks_s": min(checks),
        "bare_write_s": min(bare),
        "uncompressed_write_s": min(plain_writes),
        "uncompressed_file_mib": plain_size / 2**20,
    }


# ---------------------------------------------------------------------------------- part 2
def _instrument(sim) -> dict:
    """Accumulate the wall time spent inside every writer's initialize/write/finalize."""
    spent = {"s": 0.0, "calls": 0}
    for writer in sim.output_writers.values():
        for meth in ("initialize", "write", "finalize"):
            original = getattr(writer, meth)

            def timed(*args, _original=original, **kwargs):
                t0 = time.perf_counter()
                try:
                    return _original(*args, **kwargs)
                finally:
                    spent["s"] += time.perf_counter() - t0
                    spent["calls"] += 1

            setattr(writer, meth, timed)
    return spent


def _timed_run(cfg, out_dir: Path | None, backend_name: str) -> tuple[float, float]:
    """Wall time of the simulation loop over ``cfg.run.days`` after a 1-step warm-up, and the
    part of it spent in output writers."""
    from marrow3d.runner import build_simulation, make_model
    from marrow3d.simulation import Simulation

    model = make_model(cfg, out_dir)
    Simulation(model, stop_iteration=1, progress=False).run()  # compile this model's kernels
    stop = model.clock.time_h + cfg.run.days * 24.0
    if out_dir is None:
        sim = Simulation(model, stop_time_h=stop, progress=False)
    else:
        sim = build_simulation(model, cfg, out_dir, backend_name, stop_time_h=stop, progress=False)
    spent = _instrument(sim)
    t0 = time.perf_counter()
    sim.run()
    return time.perf_counter() - t0, spent["s"]


def bench_output_overhead(days: float, repeat: int, directory: Path) -> dict:
    from marrow3d.config import load_config
    from marrow3d.runner import ensure_backend

    cfg = load_config(None, [f"run.days={days!r}", "run.backend=\"cpu\""])
    info = ensure_backend(cfg)
    with_w, without, in_writers = [], [], []
    for i in range(repeat):  # interleaved, so a change of machine load hits both
        without.append(_timed_run(cfg, None, info.name)[0])
        loop, writers = _timed_run(cfg, directory / f"run{i}", info.name)
        with_w.append(loop)
        in_writers.append(writers)
    steps = int(round(days * 24 / cfg.run.cell_step_hours))
    out = cfg.output
    return {
        "config": "embedded default",
        "shape_voxels": list(cfg.domain.shape_voxels),
        "days": days,
        "steps": steps,
        "schedule": {"snapshot_every_hours": out.snapshot_every_hours, "snapshot_fields": list(out.snapshot_fields),
                     "checkpoint_every_hours": out.checkpoint_every_hours,
                     "checkpoint_every_wall_seconds": out.checkpoint_every_wall_seconds},
        "without_writers_s": min(without),
        "with_writers_s": min(with_w),
        "without_writers_s_all": without,
        "with_writers_s_all": with_w,
        "ratio": min(with_w) / min(without),
        "overhead_percent": 100.0 * (min(with_w) / min(without) - 1.0),
        # load-independent estimate: time inside the writers over the rest of the same loop
        "writers_s": min(in_writers),
        "writers_s_all": in_writers,
        "writer_fraction_percent": 100.0 * min(w / (t - w) for w, t in zip(in_writers, with_w)),
        "run_h5_mib": (directory / "run0" / "run.h5").stat().st_size / 2**20,
    }


# ---------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.checkpoint", description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="256,256,256", help="Grid of the checkpoint state (z,y,x).")
    p.add_argument("--days", type=float, default=2.0, help="Simulated days of the overhead runs.")
    p.add_argument("--repeat", type=int, default=2, help="Repetitions (the minimum is reported).")
    p.add_argument("--skip-run", action="store_true", help="Only the checkpoint I/O part (no Taichi).")
    p.add_argument("--dir", type=Path, default=None, help="Scratch directory (default: a temporary one).")
    p.add_argument("--out", type=Path, default=RESULTS / "checkpoint.json")
    args = p.parse_args(argv)
    shape = tuple(int(s) for s in args.shape.split(","))
    if len(shape) != 3:
        p.error("--shape takes three integers z,y,x")

    import marrow3d

    record: dict = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "h5py": h5py.__version__, "hdf5": h5py.version.hdf5_version, "numpy": np.__version__,
                    "marrow3d": marrow3d.__version__},
    }
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        tmp = Path(tmp)
        io = bench_checkpoint_io(shape, args.repeat, tmp / "ckpt")
        record["checkpoint_io"] = io
        print(f"checkpoint of a {'x'.join(map(str, shape))} state "
              f"({io['state_mib']:.0f} MiB in memory, {io['file_mib']:.0f} MiB on disk, gzip 1 + shuffle + Fletcher-32)")
        print(f"  {'write (Checkpointer._write)':<34} {io['write_s']:8.2f} s  {io['write_mib_per_s']:7.0f} MiB/s")
        print(f"  {'read (load_checkpoint)':<34} {io['read_s']:8.2f} s  {io['read_mib_per_s']:7.0f} MiB/s")
        print(f"  {'  of each: SHA-256 of every object':<34} {io['checksums_s']:8.2f} s  "
              f"({io['checksums_s'] / io['write_s']:.0%} of the write, {io['checksums_s'] / io['read_s']:.0%} "
              f"of the read)")
        print(f"  {'  of the read: content checks':<34} {io['content_checks_s']:8.2f} s  "
              f"({io['content_checks_s'] / io['read_s']:.0%})")
        print(f"  {'write without record/rename/link':<34} {io['bare_write_s']:8.2f} s  "
              f"(the full write takes x{io['write_s'] / io['bare_write_s']:.2f})")
        print(f"  {'write, no compression':<34} {io['uncompressed_write_s']:8.2f} s  "
              f"({io['uncompressed_file_mib']:.0f} MiB)")
        if not args.skip_run:
            ov = bench_output_overhead(args.days, args.repeat, tmp / "runs")
            record["output_overhead"] = ov
            print(f"default config {'x'.join(map(str, ov['shape_voxels']))}, {ov['days']:g} days "
                  f"({ov['steps']} steps), default output schedule")
            print(f"  {'loop without writers':<34} {ov['without_writers_s']:8.2f} s")
            print(f"  {'loop with run.h5 + checkpoints':<34} {ov['with_writers_s']:8.2f} s")
            print(f"  {'ratio (with / without)':<34} {ov['ratio']:8.3f}   ({ov['overhead_percent']:+.1f} %)")
            print(f"  {'time inside the writers':<34} {ov['writers_s']:8.2f} s  "
                  f"({ov['writer_fraction_percent']:.1f} % of the physics in the same loop)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
