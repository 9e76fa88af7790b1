"""Benchmark: anatomy generation (and statistics) time on large grids.

Usage::

    python -m benchmarks.anatomy                          # box + femur, 512 x 256 x 256
    python -m benchmarks.anatomy --shape 256,128,128 --kinds femur --no-stats

Prints one line per run and writes ``benchmarks/results/anatomy.json`` (gitignored):
machine, versions, shape, generation and statistics wall times (seconds), peak memory, and
the measured statistics with their literature-range checks. The target is generation of a
512 x 256 x 256 domain in under 60 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import scipy

from marrow3d.anatomy import anatomy_stats, check_literature_ranges, generate_anatomy
from marrow3d.config.anatomy import AnatomyConfig, DomainConfig

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_S = 60.0


def _peak_rss_mib() -> float:
    # ru_maxrss is KiB on Linux (bytes on macOS); this benchmark targets Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run(kind: str, shape: tuple[int, int, int], seed: int, stats: bool) -> dict:
    """Generate one anatomy (and optionally measure it); return a JSON-ready record."""
    domain = DomainConfig(kind=kind, shape_voxels=shape)
    t0 = time.perf_counter()
    anatomy = generate_anatomy(domain, AnatomyConfig(), seed=seed)
    t_gen = time.perf_counter() - t0
    record = {
        "kind": kind,
        "shape_voxels": list(shape),
        "voxels": int(np.prod(shape)),
        "seed": seed,
        "generate_s": round(t_gen, 3),
        "within_target": t_gen < TARGET_S,
        "tissue_counts": anatomy.tissue_counts,
        "niche_counts": anatomy.niche_counts,
        "fingerprint": anatomy.fingerprint(),
    }
    print(
        f"{kind:<6} {'x'.join(map(str, shape)):>13}  generate {t_gen:7.2f} s "
        f"({'ok' if t_gen < TARGET_S else 'OVER'} < {TARGET_S:g} s)",
        flush=True,
    )
    if stats:
        t1 = time.perf_counter()
        s = anatomy_stats(anatomy)
        t_stats = time.perf_counter() - t1
        checks = check_literature_ranges(s)
        record["stats_s"] = round(t_stats, 3)
        record["stats"] = s
        record["literature_checks"] = {c.key: {"value": c.value, "ok": c.ok} for c in checks}
        bad = [c.key for c in checks if c.ok is False]
        print(
            f"{'':<6} {'':>13}  stats    {t_stats:7.2f} s, literature ranges: "
            f"{'all pass' if not bad else 'FAIL ' + ', '.join(bad)}",
            flush=True,
        )
    record["peak_rss_mib"] = round(_peak_rss_mib(), 1)
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="512,256,256", help="z,y,x voxels (default 512,256,256)")
    p.add_argument("--kinds", default="box,femur", help="comma-separated: box, femur")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-stats", action="store_true", help="time generation only")
    p.add_argument("--out", type=Path, default=RESULTS / "anatomy.json")
    args = p.parse_args(argv)
    shape = tuple(int(v) for v in args.shape.split(","))
    if len(shape) != 3:
        p.error("--shape needs three integers z,y,x")
    records = [run(k.strip(), shape, args.seed, not args.no_stats) for k in args.kinds.split(",")]
    out = {
        "benchmark": "anatomy",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "scipy": scipy.__version__,
        },
        "target_generate_s": TARGET_S,
        "runs": records,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")
    return 0 if all(r["within_target"] for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
