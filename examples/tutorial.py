"""marrow3d tutorial: natural history, two treatment arms, a comparison report, 3D views, analysis.

Walks through docs/tutorial.md in one script:

1. run the natural history of the small scenario (a 24^3 box) to day 14;
2. branch at day 14 into two arms: 7+3 induction alone, and 7+3 with deferoxamine
   (vessel preservation), both to day 28;
3. compare the arms with ``marrow3d compare`` (report.md + report.html);
4. draw the marrow with ``marrow3d render`` and with pyvista directly (``open_run(...).to_pyvista()``);
5. analyse the runs with ``marrow3d.open_run``: time series with pandas, niche occupancy, drug
   exposure, and the distance of cells to vessels.

Usage::

    python examples/tutorial.py                      # the tutorial (a few minutes on a laptop CPU)
    python examples/tutorial.py --out runs/tutorial  # choose where the runs go
    python examples/tutorial.py --tiny               # a 16^3 box and 2 days, for tests (~1 min)

``MARROW3D_TUTORIAL_TINY=1`` is the same as ``--tiny``. Nothing here needs a GPU; the renders
need off-screen OpenGL (EGL or OSMesa), as ``marrow3d render`` does.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCENARIO = REPO / "configs" / "scenarios" / "small" / "natural_history.toml"


def settings(tiny: bool) -> dict:
    """Days, grid and doses of the tutorial (``tiny``: the same story in 2 days on 16^3)."""
    if tiny:
        return dict(branch_day=1, end_day=2, infusion_days=1, dauno_days=[1], dfo_doses=1,
                    overrides=["domain.shape_voxels=[16,16,16]",
                               "cells.initial.lsc_count=60",  # enough leukemia after 1 day to see therapy act
                               "output.snapshot_every_hours=12"],
                    render_size="480x360")
    return dict(branch_day=14, end_day=28, infusion_days=7, dauno_days=[14, 15, 16], dfo_doses=14, overrides=[],
                render_size="640x480")


def therapy(s: dict, deferoxamine: bool) -> str:
    """The ``--set therapy.events=[...]`` override of one arm (doses from the branch day on)."""
    d0 = s["branch_day"]
    events = [
        # 7+3: cytarabine 200 mg/m^2/day by continuous infusion, daunorubicin 60 mg/m^2 boluses
        f'{{agent="cytarabine",kind="infusion",start_day={d0},duration_days={s["infusion_days"]},'
        f'dose_mg_per_m2_per_day=200}}',
        f'{{agent="daunorubicin",kind="bolus",days={s["dauno_days"]},dose_mg_per_m2=60}}',
    ]
    if deferoxamine:
        # vessel preservation: deferoxamine 40 mg/kg as a daily 10 h infusion
        events.append(f'{{agent="deferoxamine",kind="repeated",start_day={d0},interval_h=24,count={s["dfo_doses"]},'
                      f'infusion_duration_h=10,dose_mg_per_kg=40}}')
    return "therapy.events=[" + ",".join(events) + "]"


def marrow3d_cli(*args: str) -> None:
    """Run a ``marrow3d`` command (the same as typing it in a shell)."""
    cmd = [sys.executable, "-m", "marrow3d", *args]
    print("$ marrow3d " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/tutorial"), help="folder for the runs and the report")
    parser.add_argument("--tiny", action="store_true", default=bool(os.environ.get("MARROW3D_TUTORIAL_TINY")),
                        help="a 16^3 box for 2 days (tests)")
    parser.add_argument("--backend", default=None, help="auto | cpu | cuda (default: from the scenario)")
    args = parser.parse_args(argv)
    s = settings(args.tiny)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    base, arm73, arm_dfo = out / "natural_history", out / "arm_7+3", out / "arm_7+3_dfo"

    # ------------------------------------------------------------------ 1. natural history
    from marrow3d.config import load_config
    from marrow3d.runner import branch_run, run_simulation

    overrides = [f"run.days={s['branch_day']}", *s["overrides"],
                 # drug fields are written only while dosed; listing them here keeps them in the arms
                 'output.snapshot_fields=["oxygen","signal","cells","lodged","integrity","cytarabine","daunorubicin"]']
    if args.backend:
        overrides.append(f'run.backend="{args.backend}"')
    cfg = load_config(SCENARIO, overrides)
    print(f"1. natural history to day {s['branch_day']}: {run_simulation(cfg, base, progress=False)}", flush=True)

    # ------------------------------------------------------------------ 2. two arms from the checkpoint
    end = f"run.days={s['end_day']}"
    print(f"2. arm 7+3: {branch_run(base, arm73, [therapy(s, False), end], progress=False)}", flush=True)
    print(f"   arm 7+3 + deferoxamine: {branch_run(base, arm_dfo, [therapy(s, True), end], progress=False)}",
          flush=True)

    # ------------------------------------------------------------------ 3. the comparison report
    report = out / "report"
    marrow3d_cli("compare", str(arm73), str(arm_dfo), "--out", str(report), "--labels", "7+3,7+3+DFO",
                 "--size", s["render_size"])

    # ------------------------------------------------------------------ 4. 3D views
    marrow3d_cli("render", str(arm_dfo), "--show", "oxygen", "--slice", "y", "--size", s["render_size"],
                 "--out", str(out / "oxygen_end.png"))
    pyvista_picture(arm_dfo, out / "pyvista_leukemic_cells.png")

    # ------------------------------------------------------------------ 5. analysis
    analyse(base, arm73, arm_dfo, out)
    print(f"done: report in {report / 'report.html'}")
    return 0


def pyvista_picture(run_dir: Path, target: Path) -> None:
    """Leukemic cells and arterioles of the final state, drawn with plain pyvista."""
    import numpy as np
    import pyvista as pv

    from marrow3d.analysis import open_run
    from marrow3d.kernels import codes
    from marrow3d.viz._gl import configure_headless

    configure_headless()  # VTK's EGL/OSMesa window when there is no display (marrow3d render does the same)
    with open_run(run_dir) as run:
        grid = run.to_pyvista()  # ImageData in um; tissue, niche, cells, lodged, integrity, fields as cell data
    leukemic = grid.extract_cells(np.flatnonzero(np.isin(grid.cell_data["cells"], (codes.LSC, codes.BLAST))))
    arterioles = grid.threshold((codes.ARTERIOLE - 0.5, codes.ARTERIOLE + 0.5), scalars="tissue")
    p = pv.Plotter(off_screen=True, window_size=(640, 480))
    p.set_background("white")
    p.add_mesh(grid.outline(), color="grey")
    if arterioles.n_cells:
        p.add_mesh(arterioles, color="#B2182B", opacity=0.6)
    if leukemic.n_cells:
        p.add_mesh(leukemic, scalars="cells", cmap=["#D55E00", "#CC79A7"], clim=(codes.LSC, codes.BLAST),
                   show_scalar_bar=False)
    p.add_text(f"{run_dir.name}: LSCs (orange), blasts (pink), arterioles (red)", font_size=10, color="black")
    p.camera_position = "iso"
    p.screenshot(str(target))
    p.close()
    print(f"4. pyvista: {leukemic.n_cells} leukemic cells drawn to {target}", flush=True)


def analyse(base: Path, arm73: Path, arm_dfo: Path, out: Path) -> None:
    """Time series, niche occupancy, drug exposure and cell-to-vessel distances of the arms."""
    import pandas as pd

    from marrow3d import open_run
    from marrow3d.analysis.endpoints import endpoints_table

    pd.set_option("display.width", 120)
    # time series: one DataFrame per run, indexed by time_h, with a day column
    series = {}
    for label, path in (("7+3", arm73), ("7+3+DFO", arm_dfo)):
        with open_run(path) as run:
            df = run.timeseries
        df["burden"] = df["count_lsc"] + df["count_blast"]
        series[label] = df
    daily = pd.concat({k: v[v["day"] % 1 == 0].set_index("day")[["burden", "arteriole_mean_integrity"]]
                       for k, v in series.items()}, axis=1)
    print("5. leukemic burden and arteriole integrity, once a day:")
    print(daily.tail(8).round(3).to_string())
    for label, df in series.items():
        nadir = df["burden"].idxmin()
        print(f"   {label}: burden nadir {df['burden'].min():.0f} cells on day {nadir / 24:.2f}")

    # the endpoint table of marrow3d compare, as a DataFrame
    table = endpoints_table([arm73, arm_dfo], labels=["7+3", "7+3+DFO"])
    cols = ["log10_blast_reduction", "relapse_fold", "arteriole_mean_integrity", "endosteal_daunorubicin_uM",
            "lsc_to_blast_daunorubicin"]
    print(table[cols].round(3).to_string())

    with open_run(arm_dfo) as run:
        # niche occupancy: at the branch point (the arm's first snapshot) and at the end
        print("   niche slots at the branch point:")
        print(run.niche_occupancy(step=0).to_string())
        print("   niche slots at the end:")
        print(run.niche_occupancy().to_string())
        # drug seen by each cell group, in the snapshot with the most cytarabine in the marrow
        steps = [k for k in range(run.n_snapshots) if "cytarabine" in run.array_names(k)]
        if steps:
            k = max(steps, key=lambda k: float(run.array("cytarabine", k).mean()))
            print(f"   mean drug concentration by cell group on day {run.step_time_h(k) / 24:g}:")
            print(run.drug_exposure(step=k).round(4).to_string())
        # distance of each cell group to the nearest arteriole / sinusoid (um), final state
        dist = run.distance_to_vessels()
        print("   distance to the nearest vessel (um):")
        print(dist[["n", "mean_um", "p50_um"]].round(1).to_string())
        dist.to_csv(out / "distance_to_vessels.csv")
        # the snapshots as labelled arrays (xarray), read lazily: mean marrow pO2 by height
        ds = run.to_xarray()
        profile = ds.oxygen.isel(time=-1).where(ds.tissue == 0).mean(dim=("y", "x"))
        print(f"   xarray: {dict(ds.sizes)}; mean marrow pO2 ({ds.oxygen.attrs['units']}) by z (um), last time point:")
        print(profile.to_series().dropna().round(2).head(6).to_string())
    with open_run(base) as run:
        print(f"   {run!r}")


if __name__ == "__main__":
    sys.exit(main())
