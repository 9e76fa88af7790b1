"""``python -m benchmarks``: the benchmark suite (see :mod:`benchmarks.suite` and docs/benchmarks.md).

Examples::

    python -m benchmarks                        # 24^3 (+ whole-step numpy baseline), 64^3, 128^3, 256^3
    python -m benchmarks --quick                # 24^3 and 64^3, fewer repeats: about two minutes
    python -m benchmarks --sizes 128,512        # 512^3 only if its memory estimate fits
    python -m benchmarks --default-run          # also time `marrow3d run` (64^3, 28 days)

The other modules of this package are single-purpose benchmarks with their own entry points
(``python -m benchmarks.transport``, ``.checkpoint``, ``.anatomy``, ``.render``, ``.sweep``,
``.numpy_baseline``) and ``benchmarks/device_check.py`` is the GPU acceptance script.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .suite import RESULTS, run_suite


def parse(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--sizes", default=None, help="cube edges, comma-separated (default 24,64,128,256; --quick 24,64)")
    p.add_argument("--quick", action="store_true", help="small sizes and fewer repeats (a smoke run)")
    p.add_argument("--repeat", type=int, default=None, help="repeats per kernel timing (best is kept; default 3)")
    p.add_argument("--steps", type=int, default=None, help="model steps timed per size (default 4)")
    p.add_argument("--numpy-max", type=int, default=24,
                   help="largest size of the whole-step numpy baseline (scipy direct solves; default 24)")
    p.add_argument("--skip-numpy", action="store_true", help="no numpy baseline")
    p.add_argument("--skip-checkpoint", action="store_true", help="no checkpoint write/read")
    p.add_argument("--skip-drug", action="store_true", help="no model step with a drug dosed")
    p.add_argument("--default-run", action="store_true", help="also time `marrow3d run` with no arguments")
    p.add_argument("--backend", default="cpu", choices=["cpu", "cuda", "vulkan", "auto"])
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--out", type=Path, default=RESULTS / "suite.json", help="JSON output")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.sizes is None:
        args.sizes = "24,64" if args.quick else "24,64,128,256"
    args.sizes = [int(v) for v in str(args.sizes).split(",") if v.strip()]
    if args.repeat is None:
        args.repeat = 2 if args.quick else 3
    if args.steps is None:
        args.steps = 2 if args.quick else 4
    if min(args.sizes) < 8:
        p.error("--sizes: each size must be at least 8")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    from marrow3d.resources import available_memory_bytes, estimate_memory

    free = available_memory_bytes("cpu")
    keep = []
    for n in args.sizes:
        need = 2 * estimate_memory((n, n, n), "float32", drugs=1).total_bytes  # model + drug model
        if free is not None and need > 0.8 * free:
            print(f"skipping {n}^3: needs about {need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free", flush=True)
        else:
            keep.append(n)
    if not keep:
        print("no size fits in memory", file=sys.stderr)
        return 2
    args.sizes = keep
    run_suite(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
