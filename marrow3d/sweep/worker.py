"""``run_member``: run one sweep member in the current (worker) process.

This is the one function a sweep ships to its workers (Dask processes started with the
``spawn`` method: CUDA is not fork-safe). It is self-contained: it takes a member dict from
:func:`marrow3d.sweep.members.expand` and the member's directory, initialises Taichi here for
the member's backend, threads and precision (a fresh runtime per member frees the previous
member's fields, and is faster than adding fields to a live runtime), runs the member and
records the outcome in ``status.json``. It never raises for a failing member: the error goes
into the status file so that the other members carry on.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import logging
import os
import socket
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from ..errors import Marrow3DError
from .errors import SweepError
from .status import is_done, read_status, reset_dir, write_status

__all__ = ["run_member"]

# Taichi is process-global: members sharing a worker process (a worker started with several
# threads) must take turns.
_LOCK = threading.Lock()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, Marrow3DError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextlib.contextmanager
def _member_log(path: Path):
    """Send marrow3d's log records to ``path`` for the duration of a member."""
    logger = logging.getLogger("marrow3d")
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.setLevel(old_level)
        logger.propagate = old_propagate


def _checkpoint_time_h(run_dir: Path) -> float:
    import h5py

    with h5py.File(run_dir / "checkpoint.h5", "r") as h5:
        return float(h5["meta"].attrs["time_h"])


def run_member(member: dict[str, Any], out_dir: str | os.PathLike, *depends_on: Any) -> str:
    """Run one member into ``out_dir`` and write ``out_dir/status.json``; return ``out_dir``.

    Parameters
    ----------
    member : dict
        A member (or shared prefix) from :func:`marrow3d.sweep.members.expand`; arms also
        carry ``prefix_dir`` (set by the driver).
    out_dir : path
        The member's run directory. A finished run of the same config there is kept as it is
        (the call returns at once); anything else in it is removed first.
    *depends_on
        Ignored: results of tasks that must finish first (an arm's prefix), so that a task
        scheduler orders them.

    Returns
    -------
    str
        ``out_dir``. Whether the member succeeded is in ``status.json`` (``done`` or
        ``failed`` with a one-line ``error``; tracebacks of unexpected errors go to
        ``error.log``), never raised.
    """
    out = Path(out_dir)
    if is_done(out, member):
        return str(out)
    with _LOCK:
        return _run_locked(member, out)


def _run_locked(member: dict[str, Any], out: Path) -> str:
    from ..config import config_from_toml_text

    t0, cpu0 = time.perf_counter(), time.process_time()
    mid = member["member_id"]
    kind = member.get("kind", "run")
    record: dict[str, Any] = {
        "member_id": mid,
        "kind": kind,
        "fingerprint": member.get("fingerprint"),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": _now(),
    }
    reset_dir(out)
    write_status(out, {**record, "status": "running"})
    with _member_log(out / "member.log"):
        try:
            if member.get("error"):
                raise SweepError(member["error"])
            cfg = config_from_toml_text(member["config_toml"], f"config of member {mid}")
            if kind == "arm":
                _check_prefix(member)
            info = _init_backend(cfg)
            record["backend"] = info.name
            result = _run(member, cfg, out)
            st = result.status
            if st.reason != "finished":
                raise SweepError(f"the run ended early ({st.reason}) at day {st.time_h / 24:.3f}")
            if kind == "prefix":
                t_h = _checkpoint_time_h(out)
                want = float(member["at_day"]) * 24.0
                if abs(t_h - want) > 1e-6 * max(1.0, want):
                    raise SweepError(
                        f"the shared prefix's last checkpoint is at {t_h} h, not at the branch point {want} h"
                    )
            record.update(status="done", error=None, final_day=st.time_h / 24.0, steps=int(st.iteration))
        except Exception as exc:  # noqa: BLE001 - every failure is recorded, none stops the sweep
            record.update(status="failed", error=_one_line(exc))
            if not isinstance(exc, Marrow3DError):
                (out / "error.log").write_text(traceback.format_exc(), encoding="utf-8")
            logging.getLogger("marrow3d.sweep").error("member %s failed: %s", mid, record["error"])
    record["finished"] = _now()
    record["wall_s"] = round(time.perf_counter() - t0, 3)
    record["cpu_s"] = round(time.process_time() - cpu0, 3)  # all threads of this worker process
    write_status(out, record)
    return str(out)


def _init_backend(cfg):
    """A fresh Taichi runtime for this member (Taichi's banner goes to member.log, not stdout)."""
    from ..backend import initialize

    # Taichi decides at import whether sys.stdout is "wrapped" (a notebook) and, if so, adds a
    # print-buffer flush to every kernel launch; the redirect below must not make it think so.
    os.environ.setdefault("TI_ENABLE_PYBUF", "0")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        info = initialize(cfg.run.backend, threads=cfg.run.threads, precision=cfg.run.precision)
    for line in buf.getvalue().splitlines():
        logging.getLogger("marrow3d.sweep").info("%s", line)
    return info


def _run(member: dict[str, Any], cfg, out: Path):
    from ..runner import branch_run, run_simulation

    if member.get("kind") == "arm":
        return branch_run(Path(member["prefix_dir"]), out, list(member["branch_overrides"]), progress=False)
    return run_simulation(cfg, out, progress=False)


def _check_prefix(member: dict[str, Any]) -> None:
    """An arm forks only from a finished prefix of the config it was planned with."""
    pst = read_status(Path(member["prefix_dir"]))
    if not pst or pst.get("status") != "done" or pst.get("fingerprint") != member.get("prefix_fingerprint"):
        why = f": {pst['error']}" if pst and pst.get("error") else ""
        raise SweepError(f"shared prefix {member['prefix_id']} did not finish{why}")
