"""Helpers shared by the CLI commands: error handling and config resolution."""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path
from typing import Callable, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import Marrow3DError

__all__ = ["err_console", "console", "cli_errors", "setup_logging", "resolve_config", "prepare_output_file"]

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable)


def cli_errors(func: F) -> F:
    """Turn user errors into one line on stderr and exit status 2 (no traceback).

    Besides marrow3d's own errors, an ``OSError`` (a path given on the command line that the
    operating system refuses: read-only, not a directory, no space) is reported the same way,
    with the file it names. The message is printed as text: brackets in it (``[domain]``)
    are not rich markup.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except Marrow3DError as exc:
            _print_error(str(exc))
            raise typer.Exit(code=2) from None
        except OSError as exc:
            where = f": {exc.filename!s}" if exc.filename else ""
            _print_error(f"{exc.strerror or exc}{where}")
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


def _print_error(message: str) -> None:
    text = " ".join(message.split())  # one line, whatever the message held
    err_console.print(f"[bold red]error:[/] {escape(text)}", highlight=False, markup=True, soft_wrap=True)


def prepare_output_file(path: Path, flag: str = "--out") -> Path:
    """Check that a file can be written at ``path`` (creating its folder); a one-line error otherwise.

    Raises
    ------
    OutputError
        ``path`` is a directory, a parent is a file, or the folder cannot be created or written.
    """
    from ..errors import OutputError

    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{flag} {str(path)!r} is a directory; give a file name")
    parent = path.parent
    for node in (parent, *parent.parents):
        if node.exists():
            if not node.is_dir():
                raise OutputError(f"{flag} {str(path)!r} cannot be written: {str(node)!r} is a file, not a directory")
            break
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{flag} {str(path)!r} cannot be written: {exc.strerror or exc}") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {str(path)!r} cannot be written: {str(parent)!r} is not writable")
    return path


class _CurrentStderrHandler(logging.StreamHandler):
    """Write to whatever ``sys.stderr`` is at the time of each record.

    A handler that kept the stream it was created with would write to a closed file once
    ``sys.stderr`` is swapped and closed again (a notebook cell, a test runner's capture).
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; sys.stderr wins
        pass


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr through rich when on a terminal, plain lines otherwise."""
    level = logging.DEBUG if verbose else logging.INFO
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=err_console, show_path=False)
        fmt = "%(message)s"
    else:
        handler = _CurrentStderrHandler()
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
