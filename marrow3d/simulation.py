"""The clock-driven loop: stop criteria, scheduled output writers and callbacks.

``MarrowModel`` owns state and physics (no I/O, no stop logic); ``Simulation`` owns the loop.
Output writers are objects with a ``schedule`` and ``write(simulation)``; a ``Checkpointer`` is
just a writer that also knows how to pick up. Progress is shown by a reporter handed in by the
caller (:mod:`marrow3d.progress`; the command line hands in a rich bar on a terminal).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

from .errors import NonFiniteError, OutputError
from .profiling import NULL_PROBE

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
        Anything with ``clock`` (``iteration``, ``time_h``), ``time_step()`` and
        ``check_finite()``; its checkpoint state is read and restored by
        :mod:`marrow3d.output.model_state`.
    stop_time_h : float
        Stop once simulated time reaches this many hours (inf: no limit).
    stop_iteration : int, optional
        Stop at this iteration count.
    wall_time_limit_s : float, optional
        Stop (after writing a checkpoint) once this much wall time has passed.
    progress : ProgressReporter or bool or None
        Who shows progress (:class:`marrow3d.progress.ProgressReporter`); ``True`` logs a
        line every 30 s (:class:`marrow3d.progress.LogProgress`); ``False``/None: nobody.
    """

    def __init__(self, model, *, stop_time_h: float = math.inf, stop_iteration: int | None = None,
                 wall_time_limit_s: float | None = None, progress=None) -> None:
        if math.isinf(stop_time_h) and stop_iteration is None and wall_time_limit_s is None:
            raise ValueError("Simulation needs a stop criterion: stop_time_h, stop_iteration or wall_time_limit_s")
        self.model = model
        self.stop_time_h = stop_time_h
        self.stop_iteration = stop_iteration
        self.wall_time_limit_s = wall_time_limit_s
        if progress is True:
            from .progress import LogProgress

            progress = LogProgress()
        self.progress = progress or None
        self.output_writers: dict[str, Any] = {}
        self.callbacks: dict[str, Callback] = {}
        #: Phase probe (``marrow3d.profiling``): a no-op unless a profiler is installed.
        self.probe = NULL_PROBE
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
        from .output.model_state import capture_model_state

        return {
            "model": capture_model_state(self.model),
            "writers": {k: w.prognostic_state() for k, w in self.output_writers.items()},
            "callbacks": {k: c.prognostic_state() for k, c in self.callbacks.items()},
        }

    def restore_prognostic_state(self, state: dict) -> None:
        from .output.model_state import restore_model_state

        restore_model_state(self.model, state["model"])
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

    def total_steps(self) -> int | None:
        """The iteration at which the stop criteria end the run (None: wall time only)."""
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
        try:
            for w in self.output_writers.values():
                w.initialize(self)
        except OutputError:
            self._abort_writers()
            raise
        # Time schedules take their first target from the start time, so an interval equal
        # to the step still fires after the first step.
        for sched in [w.schedule for w in self.output_writers.values()] + [c.schedule for c in self.callbacks.values()]:
            if hasattr(sched, "prime"):
                sched.prime(self.model)
        reason = "finished"
        progress = self.progress
        probe = self.probe
        try:
            if progress is not None:
                progress.start(self)
            try:
                while True:
                    stop = self._should_stop()
                    if stop:
                        reason = stop
                        break
                    self.model.time_step()
                    with probe.phase("finite"):
                        self.model.check_finite()
                    wrote = False
                    with probe.phase("output"):
                        for c in self.callbacks.values():
                            if c.schedule(self.model):
                                c.func(self)
                        for w in self.output_writers.values():
                            if w.schedule(self.model):
                                w.write(self)
                                wrote = True
                    probe.step_done(wrote)
                    if progress is not None:
                        progress.update(self)
            finally:
                if progress is not None:
                    progress.stop(self)
        except KeyboardInterrupt:
            reason = "interrupted"
            log.warning("interrupted at step %d: writing a checkpoint", self.model.clock.iteration)
        except OutputError:
            # a writer could not write (disk full): the others stop without writing more, so
            # the last checkpoint stays consistent with what run.h5 holds
            self._abort_writers()
            raise
        except NonFiniteError:
            try:
                cp = self.checkpointer
                if cp is not None:
                    path = cp.write_diagnostic(self)
                    log.error("non-finite values: diagnostic checkpoint written to %s", path)
                for w in self.output_writers.values():
                    w.finalize(self, ok=False)
            except OutputError as exc:
                log.error("%s", exc)
                self._abort_writers()
            raise
        try:
            for w in self.output_writers.values():
                w.finalize(self, ok=True)
        except OutputError:
            self._abort_writers()
            raise
        clock = self.model.clock
        return RunStatus(reason, clock.iteration, clock.time_h, time.monotonic() - self._wall_start)

    def _abort_writers(self) -> None:
        """Close every writer that can be closed without writing anything more."""
        for w in self.output_writers.values():
            abort = getattr(w, "abort", None)
            if abort is not None:
                abort()

