"""Helpers shared by the CLI commands: error handling and config resolution."""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Callable, TypeVar

import typer
from rich.console import Console

from ..errors import Marrow3DError

__all__ = ["err_console", "console", "cli_errors", "setup_logging", "resolve_config"]

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable)


def cli_errors(func: F) -> F:
    """Turn user errors into one line on stderr and exit status 2 (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except Marrow3DError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr through rich when on a terminal, plain lines otherwise."""
    level = logging.DEBUG if verbose else logging.INFO
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=err_console, show_path=False)
        fmt = "%(message)s"
    else:
        handler = logging.StreamHandler(sys.stderr)
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger("marrow3d")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def resolve_config(config: Path | None, overrides: list[str] | None, **flags):
    """Load CONFIG (or the embedded default), apply ``--set`` overrides, then explicit flags.

    Flags given as keyword arguments map to ``run.<name>`` and win over ``--set``.
    """
    from ..config import load_config

    extra = list(overrides or [])
    for name, value in flags.items():
        if value is not None:
            extra.append(f"run.{name}={_toml_literal(value)}")
    return load_config(config, extra)


def _toml_literal(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
