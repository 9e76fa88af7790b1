"""``run_member``: run one sweep member, in a fresh process of its own.

``run_member`` is the one function a sweep ships to its workers (Dask worker processes,
started with the ``spawn`` method). It takes a member dict from
:func:`marrow3d.sweep.members.expand` and the member's directory, and starts a new Python
interpreter (``python -m marrow3d.sweep.worker DIR``: fork + exec, never a bare fork, so
CUDA is safe) that initialises Taichi (:func:`marrow3d.backend.initialize`) for the member's
backend, threads and precision, runs the member and writes ``status.json``. The worker
process itself never initialises Taichi.

Why a process per member: Taichi 1.7's runtime is process-global and does not survive being
re-initialised many times in one process (after a handful of ``ti.init`` calls kernels fail to
compile or the process segfaults), while reusing one runtime keeps every member's fields
allocated until the process ends and ignores each member's thread count and precision. A
fresh process frees everything, honours every member's settings, picks up the
``CUDA_VISIBLE_DEVICES`` that dask-cuda gave the worker, and a crash (segfault, out of
memory) fails that member only: the worker records it and takes the next one. The start-up
cost is about 2 s of imports per member.

``run_member`` never raises for a failing member: the error goes into the status file (one
line; a traceback of an unexpected error into ``error.log``), so the other members carry on.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from ..errors import Marrow3DError
from .errors import SweepError
from .status import is_done, read_status, reset_dir, write_json_atomic, write_status

__all__ = ["run_member", "run_member_here", "MEMBER_FILE"]

#: The member dict, written into the member's folder for the member process to read.
MEMBER_FILE = "member.json"
#: stdout and stderr of the member process (Taichi's banner, warnings, a crash's last words).
OUTPUT_FILE = "process.log"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, Marrow3DError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}" + (" (out of memory?)" if -code == signal.SIGKILL else "")
    return f"exit status {code}"


def _check_prefix(member: dict[str, Any]) -> None:
    """An arm forks only from a finished prefix of the config it was planned with."""
    pst = read_status(Path(member["prefix_dir"]))
    if not pst or pst.get("status") != "done" or pst.get("fingerprint") != member.get("prefix_fingerprint"):
        why = f": {pst['error']}" if pst and pst.get("error") else ""
        raise SweepError(f"shared prefix {member['prefix_id']} did not finish{why}")


def run_member(member: dict[str, Any], out_dir: str | os.PathLike, *depends_on: Any) -> str:
    """Run one member into ``out_dir`` (a fresh process) and write ``out_dir/status.json``.

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
        ``out_dir``. Whether the member succeeded is in ``status.json`` (``done``, or
        ``failed`` with a one-line ``error``), never raised.
    """
    out = Path(out_dir)
    if is_done(out, member):
        return str(out)
    t0 = time.perf_counter()
    record: dict[str, Any] = {
        "member_id": member["member_id"],
        "kind": member.get("kind", "run"),
        "fingerprint": member.get("fingerprint"),
        "host": socket.gethostname(),
        "started": _now(),
    }
    reset_dir(out)
    write_status(out, {**record, "status": "running"})
    try:  # problems known before starting a process fail at once
        if member.get("error"):
            raise SweepError(member["error"])
        if member.get("kind") == "arm":
            _check_prefix(member)
    except SweepError as exc:
        write_status(out, {**record, "status": "failed", "error": str(exc), "finished": _now(),
                           "wall_s": round(time.perf_counter() - t0, 3)})
        return str(out)
    write_json_atomic(out / MEMBER_FILE, member)
    env = dict(os.environ)
    # Taichi decides at import whether stdout is "wrapped" (a notebook) and then adds a
    # print-buffer flush to every kernel launch; the member process's stdout is a file.
    env.setdefault("TI_ENABLE_PYBUF", "0")
    with open(out / OUTPUT_FILE, "wb") as log_fh:
        proc = subprocess.Popen([sys.executable, "-m", "marrow3d.sweep.worker", str(out)], stdin=subprocess.DEVNULL,
                                stdout=log_fh, stderr=subprocess.STDOUT, env=env)
        try:
            code = proc.wait()
        finally:
            if proc.poll() is None:  # this worker is going away: do not leave the member running
                proc.kill()
                proc.wait()
    st = read_status(out) or {}
    if st.get("status") not in ("done", "failed"):
        tail = ""
        with contextlib.suppress(OSError):
            lines = [ln for ln in (out / OUTPUT_FILE).read_text(errors="replace").splitlines() if ln.strip()]
            tail = f"; last output: {' '.join(lines[-1].split())[:300]}" if lines else ""
        write_status(out, {**record, **st, "status": "failed",
                           "error": f"the member process ended without a result ({_exit_reason(code)}){tail}",
                           "finished": _now(), "wall_s": round(time.perf_counter() - t0, 3)})
    else:
        write_status(out, {**st, "wall_s": round(time.perf_counter() - t0, 3)})
    return str(out)


# --------------------------------------------------------------------------------------------
# The member process
# --------------------------------------------------------------------------------------------


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


def _cpu_seconds() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _watch_parent() -> None:
    """End this process if the worker that started it dies (it would wait for nobody)."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(2.0)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, name="marrow3d-parent-watch", daemon=True).start()


def run_member_here(member: dict[str, Any], out: Path) -> dict[str, Any]:
    """Run ``member`` in this process (Taichi is initialised here) and write its final status.

    This is the body of the member process; call it directly only in a process that has not
    initialised Taichi yet (it is process-global).
    """
    from ..config import config_from_toml_text

    t0 = time.perf_counter()
    mid = member["member_id"]
    kind = member.get("kind", "run")
    record = dict(read_status(out) or {})
    record.update(member_id=mid, kind=kind, fingerprint=member.get("fingerprint"), pid=os.getpid())
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
    record["run_s"] = round(time.perf_counter() - t0, 3)
    record["cpu_s"] = round(_cpu_seconds(), 3)  # every thread of the member process, imports included
    write_status(out, record)
    return record


def _init_backend(cfg):
    """Initialise Taichi for this member (Taichi's banner goes to member.log)."""
    from ..backend import initialize

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


def main(argv: list[str] | None = None) -> int:
    """``python -m marrow3d.sweep.worker DIR``: run the member described by ``DIR/member.json``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m marrow3d.sweep.worker MEMBER_DIR", file=sys.stderr)
        return 2
    out = Path(args[0])
    _watch_parent()
    member = json.loads((out / MEMBER_FILE).read_text(encoding="utf-8"))
    record = run_member_here(member, out)
    return 0 if record["status"] == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
