"""``marrow3d sweep`` and ``marrow3d sweep-report``: parameter sweeps on a Dask cluster."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .common import cli_errors, console, err_console, prepare_output_file, setup_logging

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the sweep commands to the ``marrow3d`` app."""

    @app.command("sweep")
    @cli_errors
    def sweep(
        spec: Path = typer.Argument(
            ..., help="Sweep spec (TOML): base config, the vary, replicates and branch tables."
        ),
        out: Path = typer.Option(..., "--out", "-o", help="Sweep folder (rerun the command to resume)."),
        workers: Optional[int] = typer.Option(
            None, "--workers", "-w", help="Worker processes of the local cluster (default 2; with --gpus one per GPU)."
        ),
        scheduler: Optional[str] = typer.Option(
            None, "--scheduler", help="Use a running Dask scheduler tcp://HOST:PORT instead of a local cluster."
        ),
        gpus: bool = typer.Option(False, "--gpus", help="One worker per GPU (dask-cuda's LocalCUDACluster)."),
        set_: Optional[List[str]] = typer.Option(
            None, "--set", "-s", help="Override a value of every member: section.key=value (repeatable)."
        ),
        threads: Optional[int] = typer.Option(
            None, "--threads", "-t", help="CPU threads per member (default: run.threads, else cores / workers)."
        ),
        dry_run: bool = typer.Option(False, "--dry-run", help="List the members and their state; run nothing."),
        verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
    ) -> None:
        """Run every member of a sweep spec in parallel; write DIR/summary.csv and .parquet.

        Each member is a run directory DIR/members/<id>/ with a status.json; rerunning the
        command skips finished members and reruns failed or interrupted ones. Exit status 1
        when some member failed (its error is in the summary), 2 on bad input.

        Example: [bold]marrow3d sweep configs/sweeps/tiny.toml --out runs/sweep --workers 2[/]
        """
        from ..sweep.driver import describe_plan, plan_sweep, run_sweep

        setup_logging(verbose)
        if threads is not None and threads < 1:
            from ..sweep.errors import SweepError

            raise SweepError(f"--threads must be >= 1, got {threads}")
        if dry_run:
            local = scheduler is None and not gpus
            plan = plan_sweep(spec, overrides=list(set_ or []), threads=threads,
                              local_workers=(workers or 2) if local else None)
            _print_plan(describe_plan(plan, out), out)
            return
        try:
            result = run_sweep(spec, out, workers=workers, scheduler=scheduler, gpus=gpus, threads=threads,
                               overrides=list(set_ or []), console=err_console)
        except KeyboardInterrupt:
            err_console.print(f"[yellow]interrupted[/]: finished members are kept; rerun the same command to "
                              f"run the others (summary so far: {out / 'summary.csv'})", highlight=False)
            raise typer.Exit(code=130) from None
        ran = len([m for m in result.ran if not m.startswith("prefix_")])
        line = (f"{result.done} of {result.n_members} members done ({ran} run now, {result.skipped} "
                f"already done), {result.failed} not done; {result.wall_s:.1f} s")
        if result.failed:
            console.print(f"[yellow]sweep finished with failures[/]: {line}")
            for mid, err in list(result.failures.items())[:10]:
                console.print(f"  {mid}: {err}", highlight=False, markup=False)
            if len(result.failures) > 10:
                console.print(f"  ... and {len(result.failures) - 10} more")
        else:
            console.print(f"[green]sweep done[/]: {line}")
        console.print(f"summary: {result.sweep_dir / 'summary.csv'}", highlight=False)
        if result.failed:
            raise typer.Exit(code=1)

    @app.command("sweep-report")
    @cli_errors
    def sweep_report(
        sweep_dir: Path = typer.Argument(..., help="A sweep folder (holds summary.csv or sweep.json)."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Image file (default DIR/report.png)."),
        paired: Optional[str] = typer.Option(
            None, "--paired", help="Compare every arm with this one, paired by seed (default: the spec's "
            "experiment.control, when it has an [experiment] table)."
        ),
    ) -> None:
        """Plot a sweep's endpoints against its varied parameters; with an [experiment] table in the
        spec (or --paired ARM), also write the paired differences against the control arm:
        DIR/paired.csv, .parquet and .md (95% t and bootstrap intervals, sign counts) and the
        per-member endpoints DIR/paired_members.csv and .parquet.

        Example: [bold]marrow3d sweep-report runs/niche_therapy --paired 7+3[/]
        """
        from ..sweep.paired import experiment_of, write_paired
        from ..sweep.report import make_report

        if out is not None:
            prepare_output_file(out)
        # The paired tables first: a wrong arm name is reported before the figure is drawn.
        if paired is not None or experiment_of(sweep_dir) is not None:
            md, table = write_paired(sweep_dir, paired)
            n_na = int((table["n"] == 0).sum())
            console.print(f"[green]written[/]: {md} ({len(table)} comparisons, {n_na} n/a; "
                          f"also paired.csv, paired.parquet, paired_members.csv)", highlight=False, soft_wrap=True)
        path = make_report(sweep_dir, out)
        console.print(f"[green]written[/]: {path}", highlight=False, soft_wrap=True)


def _print_plan(rows: list[dict], out: Path) -> None:
    from rich.table import Table

    table = Table(title=f"sweep into {out}", show_lines=False)
    for col in ("member_id", "kind", "label", "seed", "params", "state"):
        table.add_column(col, overflow="fold")
    for r in rows:
        state = r["state"] if not r["error"] else f"invalid: {r['error']}"
        params = r["params"] if len(r["params"]) <= 70 else r["params"][:67] + "..."
        table.add_row(r["member_id"], r["kind"], r["label"], str(r["seed"]), params, state)
    console.print(table)
    n = sum(r["kind"] != "prefix" for r in rows)
    bad = sum(bool(r["error"]) for r in rows)
    todo = sum(r["state"] != "done" and not r["error"] for r in rows if r["kind"] != "prefix")
    console.print(f"{n} members ({todo} to run, {bad} invalid)", highlight=False)
