"""Benchmark: time to render a 256^3 run to PNG, off screen.

Usage::

    python -m benchmarks.render                       # 256^3, every --show mode, 1600x1200
    python -m benchmarks.render --n 128 --modes oxygen,vessels --size 800x600

A run file is synthesised with the ``run.h5`` layout (no simulation): a generated box anatomy
(``marrow3d.anatomy.generate_anatomy``), pO2 falling off with the distance to vessels, a
cytarabine field, a damage signal, cells drawn at typical proportions, lodged stem cells on
niche slots and a lost arteriole patch. Each picture is rendered through
``marrow3d.viz.render_png`` (which reads the run with ``marrow3d.analysis.open_run``), one
after another in one process; the first also pays for OpenGL start-up and shader compilation.

Prints one line per picture and writes ``benchmarks/results/render.json`` (gitignored):
machine, versions, grid, picture size and wall time per mode. Target: every picture of the
256^3 run in under 30 s on a 2-core machine with Mesa's llvmpipe.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
from scipy import ndimage

from marrow3d.anatomy import generate_anatomy
from marrow3d.config import load_config
from marrow3d.config.anatomy import AnatomyConfig, DomainConfig
from marrow3d.kernels import codes
from marrow3d.output.runfile import write_anatomy, write_meta

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_S = 30.0
MODES = [("oxygen", None), ("oxygen", "z"), ("drug", None), ("signal", None), ("cells", None), ("niches", None),
         ("vessels", None), ("integrity", None)]


def synthesize_run(directory: Path, n: int, seed: int = 1) -> Path:
    """Write ``directory/run.h5`` for an n^3 box in the run-file layout; return the directory."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    shape = (n, n, n)
    anatomy = generate_anatomy(DomainConfig(kind="box", shape_voxels=shape), AnatomyConfig(), seed=seed)
    t = anatomy.tissue
    vessel = np.isin(t, codes.VESSEL_LABELS)
    marrow = t == codes.MARROW
    d_um = ndimage.distance_transform_edt(~vessel, sampling=anatomy.voxel_um).astype(np.float32)
    oxygen = np.where(marrow | vessel, 8.0 + 20.0 * np.exp(-d_um / 25.0), 0.0).astype(np.float32)
    oxygen[t == codes.ARTERIOLE] = 38.0
    cyt = np.where(marrow | vessel, 0.15 * (0.6 + 0.4 * np.exp(-d_um / 40.0)), 0.0).astype(np.float32)
    signal = ndimage.gaussian_filter(rng.lognormal(-7.0, 1.5, shape).astype(np.float32), 3.0)
    cells = np.zeros(shape, np.uint8)
    u = rng.random(shape, dtype=np.float32)
    cells[marrow & (u < 0.70)] = codes.PROGENITOR
    cells[marrow & (u >= 0.70) & (u < 0.72)] = codes.BLAST
    cells[marrow & (u >= 0.72) & (u < 0.7203)] = codes.LSC
    slots = (anatomy.niche != codes.NICHE_NONE) & marrow
    held = slots & (rng.random(shape, dtype=np.float32) < 0.6)
    cells[held] = np.where(rng.random(int(held.sum())) < 0.8, codes.HSC, codes.LSC).astype(np.uint8)
    lodged = held.astype(np.uint8)
    integrity = np.where(vessel, 1.0, 0.0).astype(np.float32)
    lost = (t == codes.ARTERIOLE) & (np.arange(n)[None, None, :] < n // 2)
    integrity[lost] = 0.1
    cfg = load_config(None, ["run.days=1", f"domain.shape_voxels=[{n},{n},{n}]"])
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "run.h5"
    opts = dict(compression="gzip", compression_opts=1, shuffle=True, chunks=(1, *(min(64, n),) * 3))
    with h5py.File(path, "w") as h5:
        write_meta(h5, config_toml=cfg.to_toml(), seed=seed, backend="synthetic")
        write_anatomy(h5, anatomy, 1)
        ts = h5.create_group("timeseries")
        times = np.array([0.0, 24.0])
        cols = {"time_h": times, "stage": np.array([0.0, 1.0]), "plasma_cytarabine_uM": np.array([0.0, 0.15]),
                "plasma_daunorubicin_uM": np.zeros(2)}
        for k, v in cols.items():
            ts.create_dataset(k, data=v)
        snaps = h5.create_group("snapshots")
        snaps.create_dataset("time_h", data=np.array([24.0]))
        snaps.create_dataset("iteration", data=np.array([24], dtype=np.int64))
        arrays = {"oxygen": oxygen, "cytarabine": cyt, "signal": signal, "cells": cells, "lodged": lodged,
                  "integrity": integrity}
        for k, v in arrays.items():
            snaps.create_dataset(k, data=v[None], **opts)
        state = h5.create_group("state")
        for k, v in arrays.items():
            name = {"integrity": "vessel_integrity", "cells": "cells", "lodged": "lodged"}.get(k, f"fields/{k}")
            state.create_dataset(name, data=v, chunks=opts["chunks"][1:], compression="gzip", compression_opts=1,
                                 shuffle=True)
        state.attrs["iteration"] = np.int64(24)
        state.attrs["time_h"] = 24.0
        state.attrs["complete"] = True
    print(f"synthesised {path} ({n}^3, {path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t0:.1f} s",
          flush=True)
    return directory


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=256, help="grid edge in voxels (default 256)")
    ap.add_argument("--size", default="1600x1200", help="picture size WxH (default 1600x1200)")
    ap.add_argument("--modes", default=",".join(m if s is None else f"{m}:{s}" for m, s in MODES),
                    help="comma-separated --show modes, MODE:AXIS for a slice (default: all)")
    ap.add_argument("--keep", type=Path, default=None, help="write the run here and keep it (default: a temp dir)")
    args = ap.parse_args(argv)

    from marrow3d.viz.render import render_png

    modes = [(m.split(":")[0], m.split(":")[1] if ":" in m else None) for m in args.modes.split(",") if m]
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = synthesize_run(args.keep or Path(tmp) / f"synthetic{args.n}", args.n)
        records = []
        for show, axis in modes:
            out = Path(tmp) / f"{show}{'_' + axis if axis else ''}.png"
            t0 = time.perf_counter()
            render_png(run_dir, out, show=show, step=-1, slices=[axis] if axis else None, size=args.size)
            dt = time.perf_counter() - t0
            ok = dt < TARGET_S
            label = show + (f" --slice {axis}" if axis else "")
            print(f"{label:<18} {args.n}^3 -> {args.size} PNG  {dt:6.2f} s  ({'ok' if ok else 'OVER'} < {TARGET_S:g} s)",
                  flush=True)
            records.append({"show": show, "slice": axis, "seconds": round(dt, 3), "within_target": ok})
    import pyvista
    import vtk

    result = {
        "benchmark": "render",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "vtk": vtk.vtkVersion.GetVTKVersion(), "pyvista": pyvista.__version__,
                    "opengl_window": os.environ.get("VTK_DEFAULT_OPENGL_WINDOW", ""),
                    "load_average_1min_after": round(os.getloadavg()[0], 2)},
        "grid": [args.n] * 3,
        "size": args.size,
        "target_s": TARGET_S,
        "note": "sequential in one process; the first picture includes OpenGL start-up",
        "runs": records,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "render.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {RESULTS / 'render.json'}")
    return 0 if all(r["within_target"] for r in records) else 1


if __name__ == "__main__":
    raise SystemExit(main())
