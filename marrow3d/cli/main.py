"""The ``marrow3d`` command line (typer).

Every command prints one line ``error: ...`` and exits with status 2 on bad input; see
``marrow3d COMMAND --help`` for examples.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .common import cli_errors, console, err_console, resolve_config, setup_logging
from .progress import make_progress

app = typer.Typer(
    name="marrow3d",
    help="GPU-accelerated 3D simulator of the leukemic bone-marrow niche.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
config_app = typer.Typer(help="Show and validate configurations.", no_args_is_help=True)
anatomy_app = typer.Typer(help="Inspect generated or imported marrow anatomy.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(anatomy_app, name="anatomy")


def _print_version(value: bool) -> None:
    if value:
        from ..provenance import version_line

        typer.echo(version_line())
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version (and the kernel compiler's, and the git commit "
                                      "when run from a checkout) and exit."),
) -> None:
    """GPU-accelerated 3D simulator of the leukemic bone-marrow niche."""

ConfigArg = typer.Argument(None, help="TOML config file; the embedded default when omitted.", show_default=False)
SetOpt = typer.Option(None, "--set", "-s", help="Override a value: section.key=value (repeatable).")
BackendOpt = typer.Option(None, "--backend", "-b", help="auto | cpu | cuda | vulkan (default: from config, 'auto').")
ThreadsOpt = typer.Option(None, "--threads", "-t", help="CPU threads (results do not depend on it).")
VerboseOpt = typer.Option(False, "--verbose", "-v",
                          help="Details: debug logging and the kernel compiler's own messages and warnings.")


@app.command()
@cli_errors
def run(
    config: Optional[Path] = ConfigArg,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory (default runs/<timestamp>)."),
    set_: Optional[List[str]] = SetOpt,
    days: Optional[float] = typer.Option(None, "--days", "-d", help="Simulated days (overrides run.days)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Run seed (overrides run.seed)."),
    backend: Optional[str] = BackendOpt,
    threads: Optional[int] = ThreadsOpt,
    verbose: bool = VerboseOpt,
    profile: bool = typer.Option(
        False, "--profile",
        help="Count kernel launches, host syncs and host<->device bytes and time each phase of every step; "
             "prints a table and writes DIR/profile.json (adds a few us per launch).",
    ),
) -> None:
    """Run a simulation and write DIR/run.h5.

    Example: [bold]marrow3d run configs/tiny.toml --days 3 --out runs/tiny --set run.seed=7[/]
    """
    from ..runner import run_simulation

    setup_logging(verbose)
    cfg = resolve_config(config, set_, days=days, seed=seed, backend=backend, threads=threads)
    result = run_simulation(cfg, out, progress=make_progress(err_console), profile=profile)
    if result.profile_table:
        console.print(result.profile_table, markup=False, highlight=False, soft_wrap=True)
    console.print(f"[green]done[/]: {result}", soft_wrap=True)


@app.command()
@cli_errors
def resume(
    run_dir: Path = typer.Argument(..., help="Run directory holding checkpoint.h5."),
    days: Optional[float] = typer.Option(None, "--days", "-d", help="New total simulated days (default: run.days)."),
    backend: Optional[str] = BackendOpt,
    threads: Optional[int] = ThreadsOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """Continue a run from its newest checkpoint (bit-identical to a direct run).

    Example: [bold]marrow3d resume runs/tiny --days 4[/]
    """
    from ..runner import resume_run

    setup_logging(verbose)
    result = resume_run(run_dir, days, backend=backend, threads=threads, progress=make_progress(err_console))
    console.print(f"[green]done[/]: {result}", soft_wrap=True)


@app.command()
@cli_errors
def branch(
    run_dir: Path = typer.Argument(..., help="Run directory to branch from."),
    new_dir: Path = typer.Argument(..., help="New run directory."),
    set_: Optional[List[str]] = SetOpt,
    days: Optional[float] = typer.Option(None, "--days", "-d", help="Total simulated days of the branch."),
    at_day: Optional[float] = typer.Option(
        None, "--at-day", help="Branch from the checkpoint of this simulated day (default: the newest); "
        "runs with output.checkpoints_archive = \"snapshots\" keep one per snapshot."),
    verbose: bool = VerboseOpt,
) -> None:
    """Start a treatment arm from a checkpoint with changed therapy or parameters.

    Only therapy, run.days/backend/threads, output, cells, vessels, transport.drugs,
    transport.solver and stages may change; doses must not start before the branch point.
    `marrow3d info DIR` lists the days DIR has checkpoints for.

    Example: [bold]marrow3d branch runs/base runs/arm73 --days 28 --set 'therapy.events=[{agent="cytarabine",kind="infusion",start_day=14,duration_days=7,dose_mg_per_m2_per_day=100}]'[/]
    """
    from ..runner import branch_run

    setup_logging(verbose)
    overrides = list(set_ or [])
    if days is not None:
        overrides.append(f"run.days={days!r}")
    result = branch_run(run_dir, new_dir, overrides, at_day=at_day, progress=make_progress(err_console))
    console.print(f"[green]done[/]: {result}", soft_wrap=True)


@app.command()
@cli_errors
def info(
    path: Optional[Path] = typer.Argument(None, help="A run directory or HDF5 file to summarise."),
) -> None:
    """Print versions, the backends found and the device; or summarise a run.

    Example: [bold]marrow3d info[/] or [bold]marrow3d info runs/tiny[/]
    """
    from .info import print_environment, print_run_summary

    if path is None:
        print_environment()
    else:
        print_run_summary(path)


@config_app.command("show")
@cli_errors
def config_show(
    config: Optional[Path] = ConfigArg,
    set_: Optional[List[str]] = SetOpt,
) -> None:
    """Print the fully resolved config as TOML (it round-trips).

    Example: [bold]marrow3d config show configs/tiny.toml --set run.days=3 > mine.toml[/]
    """
    cfg = resolve_config(config, set_)
    typer.echo(cfg.to_toml(), nl=False)


@config_app.command("validate")
@cli_errors
def config_validate(
    config: Path = typer.Argument(..., help="TOML config file to check."),
    set_: Optional[List[str]] = SetOpt,
) -> None:
    """Check a config file and the files it names; exit 0 when valid, 2 with a one-line error otherwise.

    An imported mask (domain.kind = "mask") is read and checked in full and sizes the grid;
    a diffusivity map must match that grid.

    Example: [bold]marrow3d config validate configs/femur.toml[/]
    """
    from ..config.transport import DRUG_AGENTS
    from ..resources import estimate_memory
    from ..runner import check_inputs

    cfg = resolve_config(config, set_)
    shape = check_inputs(cfg)
    drugs = sum(1 for agent in DRUG_AGENTS if cfg.therapy.uses(agent))
    est = estimate_memory(shape, cfg.run.precision, drugs=drugs,
                          diffusivity_map=cfg.transport.oxygen.diffusivity_map is not None,
                          cxcl12=cfg.transport.cxcl12.enabled)
    grid = "x".join(str(n) for n in shape)
    mib = est.total_bytes / 2**20
    size = f"{mib:,.0f} MiB" if mib >= 10 else f"{mib:.2g} MiB"
    console.print(
        f"[green]valid[/]: {config} ({grid} = {est.voxels:,} voxels, about {size}; {cfg.n_cell_steps:,} cell steps)",
        soft_wrap=True,
    )


@anatomy_app.command("stats")
@cli_errors
def anatomy_stats_cmd(
    config: Optional[Path] = ConfigArg,
    set_: Optional[List[str]] = SetOpt,
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed (overrides run.seed)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the statistics as JSON."),
) -> None:
    """Build the anatomy of CONFIG and report measured statistics against literature ranges.

    A statistic outside its range because the config sets an anatomy key away from the
    default (tiny.toml's 20x niche density) is marked "set", with the setting named.

    Example: [bold]marrow3d anatomy stats configs/femur.toml --set domain.shape_voxels=[300,110,110][/]
    """
    import json

    from ..anatomy import build_anatomy
    from ..anatomy.stats import anatomy_stats, check_literature_ranges, stated_settings, stats_table

    cfg = resolve_config(config, set_, seed=seed)
    anat = build_anatomy(cfg.domain, cfg.anatomy, cfg.run.seed)
    stats = anatomy_stats(anat)
    settings = stated_settings(cfg) if cfg.domain.kind != "mask" else {}
    console.print(stats_table(stats, settings=settings))
    if json_out is not None:
        checks = [{"statistic": c.key, "value": c.value, "low": c.range.low, "high": c.range.high,
                   "unit": c.range.unit, "source": c.range.source, "verdict": c.verdict,
                   "note": c.deliberate or c.note} for c in check_literature_ranges(stats, settings=settings)]
        json_out.write_text(json.dumps({**stats, "checks": checks}, indent=2, default=float))


from .export_cmd import register as _register_export  # noqa: E402

_register_export(app)


from .viz_cmd import register as _register_viz  # noqa: E402

_register_viz(app)


from .sweep_cmd import register as _register_sweep; _register_sweep(app)  # noqa: E402, E702
from .compare_cmd import register as _register_compare; _register_compare(app)  # noqa: E402, E702


def main() -> None:  # pragma: no cover - console-script shim
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
