"""The clock-driven loop: stop criteria, scheduled output writers and callbacks, progress.

``MarrowModel`` owns state and physics (no I/O, no stop logic); ``Simulation`` owns the loop.
Output writers are objects with a ``schedule`` and ``write(simulation)``; a ``Checkpointer`` is
just a writer that also knows how to pick up.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

from .errors import NonFiniteError

__all__ = ["Simulation", "Callback", "RunStatus"]

log = logging.getLogger(__name__)

_EPS_H = 1e-9


@dataclass
class Callback:
    """A function ``func(simulation)`` called whenever ``schedule(model)`` is true."""

    func: Callable[["Simulation"], None]
    schedule: Any

    def prognostic_state(self) -> dict:
        return {"schedule": self.schedule.prognostic_state()}

    def restore_prognostic_state(self, state: dict) -> None:
        self.schedule.restore_prognostic_state(state["schedule"])


@dataclass(frozen=True)
class RunStatus:
    """How a run ended: ``finished``, ``interrupted`` (Ctrl-C) or ``wall_time``."""

    reason: str
    iteration: int
    time_h: float
    wall_s: float


class Simulation:
    """Drive a model until a stop criterion, calling writers and callbacks on their schedules.

    Parameters
    ----------
    model : MarrowModel
        Anything with ``clock`` (``iteration``, ``time_h``), ``time_step()``,
        ``check_finite()``, ``prognostic_state()`` and ``restore_prognostic_state()``.
    stop_time_h : float
        Stop once simulated time reaches this many hours (inf: no limit).
    stop_iteration : int, optional
        Stop at this iteration count.
    wall_time_limit_s : float, optional
        Stop (after writing a checkpoint) once this much wall time has passed.
    progress : bool
        Show a rich progress bar on a terminal; plain log lines otherwise.
    """

    def __init__(self, model, *, stop_time_h: float = math.inf, stop_iteration: int | None = None,
                 wall_time_limit_s: float | None = None, progress: bool = True) -> None:
        if math.isinf(stop_time_h) and stop_iteration is None and wall_time_limit_s is None:
            raise ValueError("Simulation needs a stop criterion: stop_time_h, stop_iteration or wall_time_limit_s")
        self.model = model
        self.stop_time_h = stop_time_h
        self.stop_iteration = stop_iteration
        self.wall_time_limit_s = wall_time_limit_s
        self.progress = progress
        self.output_writers: dict[str, Any] = {}
        self.callbacks: dict[str, Callback] = {}
        self._wall_start = 0.0

    # ------------------------------------------------------------------ configuration
    def add_writer(self, name: str, writer) -> None:
        """Register an output writer under ``name`` (writers run in registration order)."""
        self.output_writers[name] = writer

    def add_callback(self, name: str, func: Callable[["Simulation"], None], schedule) -> None:
        self.callbacks[name] = Callback(func, schedule)

    @property
    def checkpointer(self):
        """The single registered Checkpointer, or None."""
        from .output.checkpointer import Checkpointer

        found = [w for w in self.output_writers.values() if isinstance(w, Checkpointer)]
        if len(found) > 1:
            raise ValueError("a Simulation takes at most one Checkpointer")
        return found[0] if found else None

    # ------------------------------------------------------------------ checkpoint protocol
    def prognostic_state(self) -> dict:
        """Everything needed to continue: the model's state and every schedule's counters."""
        return {
            "model": self.model.prognostic_state(),
            "writers": {k: w.prognostic_state() for k, w in self.output_writers.items()},
            "callbacks": {k: c.prognostic_state() for k, c in self.callbacks.items()},
        }

    def restore_prognostic_state(self, state: dict) -> None:
        self.model.restore_prognostic_state(state["model"])
        for k, w in self.output_writers.items():
            if k in state.get("writers", {}):
                w.restore_prognostic_state(state["writers"][k])
        for k, c in self.callbacks.items():
            if k in state.get("callbacks", {}):
                c.restore_prognostic_state(state["callbacks"][k])

    # ------------------------------------------------------------------ loop
    def _should_stop(self) -> str | None:
        clock = self.model.clock
        if clock.time_h + _EPS_H >= self.stop_time_h:
            return "finished"
        if self.stop_iteration is not None and clock.iteration >= self.stop_iteration:
            return "finished"
        if self.wall_time_limit_s is not None and time.monotonic() - self._wall_start >= self.wall_time_limit_s:
            return "wall_time"
        return None

    def _total_steps(self) -> int | None:
        dt = self.model.clock.dt_h
        total = None
        if not math.isinf(self.stop_time_h):
            total = int(math.ceil(self.stop_time_h / dt - 1e-9))
        if self.stop_iteration is not None:
            total = self.stop_iteration if total is None else min(total, self.stop_iteration)
        return total

    def run(self) -> RunStatus:
        """Run until a stop criterion; Ctrl-C writes a checkpoint and returns cleanly.

        Raises
        ------
        NonFiniteError
            NaN/Inf in a field; a diagnostic checkpoint is written first.
        """
        self._wall_start = time.monotonic()
        for w in self.output_writers.values():
            w.initialize(self)
        # Time schedules take their first target from the start time, so an interval equal
        # to the step still fires after the first step.
        for sched in [w.schedule for w in self.output_writers.values()] + [c.schedule for c in self.callbacks.values()]:
            if hasattr(sched, "prime"):
                sched.prime(self.model)
        reason = "finished"
        try:
            with _Progress(self, enabled=self.progress) as bar:
                while True:
                    stop = self._should_stop()
                    if stop:
                        reason = stop
                        break
                    self.model.time_step()
                    self.model.check_finite()
                    for c in self.callbacks.values():
                        if c.schedule(self.model):
                            c.func(self)
                    for w in self.output_writers.values():
                        if w.schedule(self.model):
                            w.write(self)
                    bar.update()
        except KeyboardInterrupt:
            reason = "interrupted"
            log.warning("interrupted at step %d: writing a checkpoint", self.model.clock.iteration)
        except NonFiniteError:
            cp = self.checkpointer
            if cp is not None:
                path = cp.write_diagnostic(self)
                log.error("non-finite values: diagnostic checkpoint written to %s", path)
            for w in self.output_writers.values():
                w.finalize(self, ok=False)
            raise
        for w in self.output_writers.values():
            w.finalize(self, ok=True)
        clock = self.model.clock
        return RunStatus(reason, clock.iteration, clock.time_h, time.monotonic() - self._wall_start)


class _Progress:
    """Rich progress bar on a terminal, a log line per simulated day otherwise."""

    def __init__(self, sim: Simulation, enabled: bool) -> None:
        self.sim = sim
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self._bar = None
        self._task = None
        self._last_day = -1
        self._t0 = time.monotonic()
        self._steps0 = sim.model.clock.iteration

    def __enter__(self) -> "_Progress":
        if self.enabled and self.tty:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            from .cli.common import err_console

            self._bar = Progress(
                TextColumn("[bold]day {task.fields[day]:6.2f}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} steps"),
                TextColumn("{task.fields[rate]:5.1f} steps/s"),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                console=err_console,
                transient=False,
            )
            self._bar.__enter__()
            total = self.sim._total_steps()
            self._task = self._bar.add_task(
                "run", total=total, completed=self.sim.model.clock.iteration, day=self.sim.model.clock.time_h / 24,
                rate=0.0, info="",
            )
        return self

    def update(self) -> None:
        if not self.enabled:
            return
        model = self.sim.model
        clock = model.clock
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        rate = (clock.iteration - self._steps0) / elapsed
        info = model.progress_summary() if hasattr(model, "progress_summary") else ""
        if self._bar is not None:
            self._bar.update(self._task, completed=clock.iteration, day=clock.time_h / 24, rate=rate, info=info)
        else:
            day = int(clock.time_h // 24 + 1e-9)
            if day != self._last_day:
                self._last_day = day
                log.info("day %.2f  step %d  %.1f steps/s  %s", clock.time_h / 24, clock.iteration, rate, info)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
