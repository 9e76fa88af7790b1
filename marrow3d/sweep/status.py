"""``status.json`` of a member directory: written atomically, read defensively.

States: ``running`` (written when the member starts), ``done`` and ``failed`` (with the
one-line ``error``). A directory without a ``done`` status whose ``fingerprint`` matches the
member's config is stale: the next run of the sweep cleans it and runs the member again.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..output.checkpointer import fsync_dir as _fsync_dir

__all__ = ["STATUS_NAME", "read_status", "write_status", "is_done", "reset_dir", "write_json_atomic"]

STATUS_NAME = "status.json"


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON to a temporary file in the same folder, fsync, rename over ``path``, fsync the folder."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, default=str)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def write_status(directory: str | Path, status: dict[str, Any]) -> None:
    """Atomically (re)write ``directory/status.json``."""
    write_json_atomic(Path(directory) / STATUS_NAME, status)


def read_status(directory: str | Path) -> dict[str, Any] | None:
    """The status of a member directory, or None when absent or unreadable."""
    try:
        data = json.loads((Path(directory) / STATUS_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_done(directory: str | Path, member: dict[str, Any]) -> bool:
    """Whether ``directory`` holds a finished run of exactly this member's config."""
    st = read_status(directory)
    return bool(st) and st.get("status") == "done" and st.get("fingerprint") == member.get("fingerprint")


def reset_dir(directory: str | Path) -> None:
    """Remove whatever ``directory`` holds (a stale or failed attempt) and create it empty."""
    d = Path(directory)
    if d.is_symlink() or d.is_file():
        d.unlink()
    elif d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True, exist_ok=True)
