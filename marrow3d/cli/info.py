"""``marrow3d info``: the environment, or a summary of a run directory / HDF5 file."""

from __future__ import annotations

import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

from rich.table import Table

from ..errors import CheckpointError
from .common import console

__all__ = ["print_environment", "print_run_summary", "cpu_name", "gpu_names"]

PACKAGES = ("marrow3d", "quadrants", "numpy", "scipy", "h5py", "pyvista", "vtk", "pydantic", "typer", "xarray", "dask",
            "cupy-cuda12x")


def cpu_name() -> str:
    """The CPU model string (Linux), or the platform's processor name."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_names() -> list[str]:
    """NVIDIA GPUs listed by ``nvidia-smi -L`` (empty when none)."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def print_environment() -> None:
    """Versions, backends that start, and the devices."""
    import os

    from ..backend import probe_backends

    table = Table(title="marrow3d environment", show_header=True)
    table.add_column("item")
    table.add_column("value")
    table.add_row("python", platform.python_version())
    for pkg in PACKAGES:
        try:
            table.add_row(pkg, metadata.version(pkg))
        except metadata.PackageNotFoundError:
            table.add_row(pkg, "[dim]not installed[/]")
    table.add_row("cpu", f"{cpu_name()} ({os.cpu_count()} threads)")
    gpus = gpu_names()
    table.add_row("gpu", "; ".join(gpus) if gpus else "[dim]none found[/]")
    for name, status in probe_backends().items():
        table.add_row(f"backend {name}", status)
    console.print(table)


def _run_file(path: Path) -> Path:
    if path.is_dir():
        for name in ("run.h5", "checkpoint.h5"):
            if (path / name).exists():
                return path / name
        raise CheckpointError(f"{str(path)!r} holds no run.h5 or checkpoint.h5")
    if not path.exists():
        raise CheckpointError(f"{str(path)!r} does not exist")
    return path


def print_run_summary(path: Path) -> None:
    """Summarise a run directory or HDF5 file (meta, grid, last metrics)."""
    from ..analysis import open_run

    with open_run(_run_file(Path(path))) as run:
        console.print(run.summary_table())
