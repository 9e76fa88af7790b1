"""Drive a sweep: expand the spec, skip finished members, run the rest, write the summary.

Layout of a sweep folder ``DIR``::

    DIR/sweep.json                 the expanded plan (every member's config and overrides)
    DIR/members/<member_id>/       a run directory (run.h5, config.toml, checkpoints, ...)
                    status.json    running | done | failed (+ error, wall_s, host, ...)
                    member.log     the member's log lines (error.log: traceback of a crash)
    DIR/prefixes/prefix_s<seed>/   branching sweeps: the shared history of each seed
    DIR/summary.csv, summary.parquet

Running the same command again resumes: members whose ``status.json`` says ``done`` for the
same config (fingerprint) are skipped, everything else is cleaned and run again.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SweepError
from .members import Plan, expand
from .spec import load_spec
from .status import is_done, read_status, reset_dir, write_json_atomic, write_status

__all__ = ["run_sweep", "SweepResult", "unit_dir", "lock_sweep_dir"]


@dataclass
class SweepResult:
    """What a sweep command did."""

    sweep_dir: Path
    n_members: int
    done: int = 0
    failed: int = 0
    skipped: int = 0
    ran: list[str] = field(default_factory=list)
    cluster: str = ""
    cluster_start_s: float = 0.0
    run_s: float = 0.0
    wall_s: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)
    summary: Any = None


def unit_dir(sweep_dir: Path, unit: dict[str, Any]) -> Path:
    """``DIR/members/<id>`` or, for a shared prefix, ``DIR/prefixes/<id>``."""
    return Path(sweep_dir) / ("prefixes" if unit.get("kind") == "prefix" else "members") / unit["member_id"]


@contextlib.contextmanager
def lock_sweep_dir(sweep_dir: Path):
    """Hold an exclusive lock on ``DIR/.sweep.lock`` (one sweep command per folder at a time)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fh = open(Path(sweep_dir) / ".sweep.lock", "a+")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SweepError(f"another sweep command is running in {str(sweep_dir)!r}") from None
        yield
    finally:
        fh.close()


def _default_threads(workers: int | None) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, workers or 2))


def plan_sweep(spec_path: str | Path, *, overrides: list[str] | tuple[str, ...] = (), threads: int | None = None,
               local_workers: int | None = None) -> Plan:
    """Read and expand a spec. With ``local_workers`` (a local CPU cluster) and no thread count
    anywhere, each member gets ``cpu_count // workers`` threads so the processes do not
    oversubscribe the cores."""
    spec, spec_dir = load_spec(spec_path)
    default = _default_threads(local_workers) if local_workers is not None else None
    return expand(spec, spec_dir, extra_overrides=overrides, threads=threads, default_threads=default)


def classify(sweep_dir: Path, plan: Plan) -> dict[str, str]:
    """Each unit's state before running: ``done``, ``invalid`` (bad config), ``rerun`` (a stale,
    failed or interrupted directory) or ``new``."""
    states = {}
    for u in plan.units:
        d = unit_dir(sweep_dir, u)
        if u.get("error"):
            states[u["member_id"]] = "invalid"
        elif is_done(d, u):
            states[u["member_id"]] = "done"
        elif d.exists():
            states[u["member_id"]] = "rerun"
        else:
            states[u["member_id"]] = "new"
    return states


def _record_failure(d: Path, unit: dict[str, Any], error: str, *, clean: bool) -> None:
    if clean:
        reset_dir(d)
    else:
        d.mkdir(parents=True, exist_ok=True)
    write_status(d, {
        "member_id": unit["member_id"], "kind": unit.get("kind", "run"), "fingerprint": unit.get("fingerprint"),
        "status": "failed", "error": error, "wall_s": 0.0,
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    })


def run_sweep(spec_path: str | Path, out_dir: str | Path, *, workers: int | None = None, scheduler: str | None = None,
              gpus: bool = False, threads: int | None = None, overrides: list[str] | tuple[str, ...] = (),
              console=None, progress: bool = True) -> SweepResult:
    """Run (or resume) the sweep of ``spec_path`` into ``out_dir``.

    Parameters
    ----------
    spec_path : path
        The sweep spec (TOML; see :mod:`marrow3d.sweep.spec`).
    out_dir : path
        The sweep folder (created; reused to resume).
    workers, scheduler, gpus
        Where members run (see :func:`marrow3d.sweep.cluster.open_client`).
    threads : int, optional
        ``run.threads`` of every member.
    overrides : sequence of str
        ``section.key=value`` applied to every member after the spec's ``[set]``.
    console : rich.console.Console, optional
        Where the progress bar and one line per finished member go (nothing when None).

    Returns
    -------
    SweepResult
        Counts, failures and timings; ``summary`` is the endpoint table (also written to
        ``DIR/summary.csv`` and ``DIR/summary.parquet``).
    """
    from .cluster import check_cluster_options, open_client
    from .summary import write_summary
    from .worker import run_member

    t_start = time.perf_counter()
    check_cluster_options(workers=workers, scheduler=scheduler, gpus=gpus)
    local_cpu = scheduler is None and not gpus
    plan = plan_sweep(spec_path, overrides=overrides, threads=threads,
                      local_workers=(workers or 2) if local_cpu else None)
    if gpus and console is not None:
        cpu = [m["member_id"] for m in plan.units if m.get("config_toml") and 'backend = "cpu"' in m["config_toml"]]
        if cpu:
            console.print(f"[yellow]warning[/]: --gpus, but {len(cpu)} member(s) have run.backend = \"cpu\" "
                          "(set run.backend = \"cuda\" or \"auto\" in the spec)", highlight=False)
    sweep_dir = Path(out_dir).resolve()
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise SweepError(f"--out {str(out_dir)!r} exists and is not a directory")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    result = SweepResult(sweep_dir=sweep_dir, n_members=len(plan.members))
    with lock_sweep_dir(sweep_dir):
        spec_text = Path(spec_path).read_text(encoding="utf-8")
        write_json_atomic(sweep_dir / "sweep.json", {
            "spec_path": str(Path(spec_path).resolve()),
            "spec_toml": spec_text,
            "overrides": list(overrides),
            "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            **plan.to_json(),
        })
        states = classify(sweep_dir, plan)
        known = {u["member_id"] for u in plan.units}
        for sub in ("members", "prefixes"):
            extra = [p.name for p in (sweep_dir / sub).glob("*") if p.is_dir() and p.name not in known]
            if extra and console is not None:
                console.print(f"note: {len(extra)} folder(s) in {sub}/ are not part of this spec; left as they are")

        prefix_dirs = {p["member_id"]: unit_dir(sweep_dir, p) for p in plan.prefixes}
        for u in plan.units:
            if u.get("kind") == "arm":
                u["prefix_dir"] = str(prefix_dirs[u["prefix_id"]])
        # Invalid configs fail now, without a task.
        for u in plan.units:
            if states[u["member_id"]] == "invalid":
                _record_failure(unit_dir(sweep_dir, u), u, u["error"], clean=True)
        todo_members = [m for m in plan.members if states[m["member_id"]] in ("new", "rerun")]
        needed_prefixes = {m["prefix_id"] for m in todo_members if m.get("kind") == "arm"}
        todo_prefixes = [p for p in plan.prefixes
                         if p["member_id"] in needed_prefixes and states[p["member_id"]] != "done"]
        result.skipped = sum(states[m["member_id"]] == "done" for m in plan.members)

        try:
            if todo_members:
                _execute(plan, sweep_dir, todo_prefixes, todo_members, states, result, run_member, open_client,
                         dict(workers=workers, scheduler=scheduler, gpus=gpus), console, progress)
        finally:
            result.summary = write_summary(sweep_dir, plan.members, plan.varied_keys)
            result.done = int((result.summary["status"] == "done").sum())
            result.failed = int(len(result.summary) - result.done)
            result.failures = {
                r.member_id: str(r.error) for r in result.summary.itertuples() if r.status != "done"
            }
            result.wall_s = time.perf_counter() - t_start
    return result


def _execute(plan, sweep_dir, todo_prefixes, todo_members, states, result, run_member, open_client, cluster_kw,
             console, progress):
    import uuid

    from distributed import as_completed

    n_total = len(plan.members)
    already = sum(states[m["member_id"]] in ("done", "invalid") for m in plan.members)
    bar = _Bar(console if progress else None, n_total, already, len(todo_prefixes))
    t0 = time.perf_counter()
    with open_client(**cluster_kw) as (client, description):
        result.cluster = description
        result.cluster_start_s = time.perf_counter() - t0
        if console is not None:
            console.print(f"sweep: {len(todo_members)} of {n_total} members to run"
                          + (f" (+{len(todo_prefixes)} shared prefixes)" if todo_prefixes else "")
                          + f" on {description}")
        t_run = time.perf_counter()
        tag = uuid.uuid4().hex[:8]
        futures: dict[Any, dict[str, Any]] = {}
        prefix_futs = {}
        for p in todo_prefixes:
            f = client.submit(run_member, p, str(unit_dir(sweep_dir, p)), key=f"marrow3d-{p['member_id']}-{tag}",
                              priority=10, pure=False)
            prefix_futs[p["member_id"]] = f
            futures[f] = p
        for m in todo_members:
            deps = [prefix_futs[m["prefix_id"]]] if m.get("prefix_id") in prefix_futs else []
            f = client.submit(run_member, m, str(unit_dir(sweep_dir, m)), *deps,
                              key=f"marrow3d-{m['member_id']}-{tag}", pure=False)
            futures[f] = m
        with bar:
            for fut in as_completed(list(futures)):
                unit = futures[fut]
                d = unit_dir(sweep_dir, unit)
                try:
                    fut.result()
                except Exception as exc:  # noqa: BLE001 - a lost worker fails this member only
                    if not is_done(d, unit):
                        _record_failure(d, unit, f"{type(exc).__name__}: {' '.join(str(exc).split())}",
                                        clean=False)
                st = read_status(d) or {}
                ok = st.get("status") == "done"
                result.ran.append(unit["member_id"])
                bar.finished(unit, ok, st)
        result.run_s = time.perf_counter() - t_run


class _Bar:
    """Members done/total as a rich progress bar, plus one line per finished member."""

    def __init__(self, console, total: int, already: int, n_prefixes: int) -> None:
        self.console = console
        self.total, self.count, self.failed = total, already, 0
        self.n_prefixes = n_prefixes
        self._progress = None

    def __enter__(self):
        if self.console is not None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("members  {task.fields[failed]}"), TimeElapsedColumn(),
                                      console=self.console, transient=False)
            self._progress.__enter__()
            self._task = self._progress.add_task("sweep", total=self.total, completed=self.count, failed="")
        return self

    def finished(self, unit: dict[str, Any], ok: bool, st: dict[str, Any]) -> None:
        is_prefix = unit.get("kind") == "prefix"
        if not is_prefix:
            self.count += 1
            self.failed += not ok
        if self.console is None:
            return
        what = "prefix " if is_prefix else ""
        wall = st.get("wall_s")
        took = f" in {wall:.1f} s" if isinstance(wall, (int, float)) else ""
        if ok:
            self._progress.console.print(f"{what}{unit['member_id']} done{took}", highlight=False)
        else:
            self._progress.console.print(f"[red]{what}{unit['member_id']} failed[/]{took}: {st.get('error')}",
                                         highlight=False)
        self._progress.update(self._task, completed=self.count,
                              failed=f"({self.failed} failed)" if self.failed else "")

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)


def describe_plan(plan: Plan, sweep_dir: Path | None = None) -> list[dict[str, Any]]:
    """Rows for ``--dry-run``: id, label, seed, varied values, kind and state."""
    states = classify(sweep_dir, plan) if sweep_dir is not None and sweep_dir.is_dir() else {}
    rows = []
    for u in plan.units:
        params = ", ".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in u.get("params", {}).items())
        rows.append({
            "member_id": u["member_id"], "kind": u.get("kind", "run"), "label": u.get("label") or "",
            "seed": u.get("seed"), "params": params, "state": states.get(u["member_id"], "new"),
            "error": u.get("error") or "",
        })
    return rows
