"""Progress of a running simulation, for whoever shows it.

:class:`~marrow3d.simulation.Simulation` takes a *reporter* (anything with ``start``,
``update`` and ``stop``, see :class:`ProgressReporter`) and calls it around the loop; it never
decides how progress is shown. :func:`progress_state` turns a simulation into the numbers a
display needs (steps done and to do, rate, estimated time left, a one-line readout).

Two reporters exist: :class:`LogProgress` here (a log line every so often, with ETA: for log
files, batch jobs and sweep workers) and the rich progress bar of the command line
(``marrow3d.cli.progress``), which the CLI chooses when stderr is a terminal.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Protocol

__all__ = ["ProgressReporter", "ProgressState", "progress_state", "LogProgress", "format_duration"]

log = logging.getLogger(__name__)


class ProgressReporter(Protocol):
    """What :class:`~marrow3d.simulation.Simulation` calls: ``start`` before the first step,
    ``update`` after every step, ``stop`` when the loop ends (also on errors)."""

    def start(self, sim) -> None: ...

    def update(self, sim) -> None: ...

    def stop(self, sim) -> None: ...


@dataclass(frozen=True)
class ProgressState:
    """A simulation's progress at one moment.

    Attributes
    ----------
    iteration : int
        Steps done since t = 0.
    total : int or None
        Step at which the run stops (None: stops on wall time only).
    time_h : float
        Simulated time [h].
    rate : float
        Steps per second of wall time since this process started stepping (0 before a step).
    eta_s : float or None
        Wall time [s] left at that rate (None when unknown).
    info : str
        The model's one-line readout (cell counts, pO2, stage), or ``""``.
    stop_time_h : float or None
        Simulated time [h] at which the run stops (None: no time limit).
    """

    iteration: int
    total: int | None
    time_h: float
    rate: float
    eta_s: float | None
    info: str
    stop_time_h: float | None = None

    @property
    def day(self) -> float:
        return self.time_h / 24.0


def progress_state(sim, first_iteration: int, t0: float, now: float | None = None) -> ProgressState:
    """The :class:`ProgressState` of ``sim``, with the rate measured from ``(first_iteration, t0)``.

    ``t0`` is a :func:`time.monotonic` reading taken at ``first_iteration``.
    """
    model = sim.model
    clock = model.clock
    now = time.monotonic() if now is None else now
    done = clock.iteration - first_iteration
    rate = done / (now - t0) if done > 0 and now > t0 else 0.0
    total = sim.total_steps()
    eta = (max(total - clock.iteration, 0) / rate) if total is not None and rate > 0 else None
    info = model.progress_summary() if hasattr(model, "progress_summary") else ""
    stop = float(sim.stop_time_h) if math.isfinite(sim.stop_time_h) else None
    return ProgressState(clock.iteration, total, float(clock.time_h), rate, eta, info, stop)


def format_duration(seconds: float | None) -> str:
    """``"1 h 02 min"``, ``"3 min 05 s"``, ``"42 s"``; ``"?"`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


class LogProgress:
    """Log a progress line (INFO, logger ``marrow3d.progress``) every ``interval_s`` of wall time.

    Lines are also written after the first step (start-up and kernel compilation are then
    done) and after the last one, so a short run logs two lines and a long one a line every
    ``interval_s``. The rate and ETA are measured from the end of the first step, so
    compilation does not inflate them (the first line's ETA is therefore ``?``)::

        day 3.25 of 28  step 78/672  11.6%  4.1 steps/s  ETA 2 min 25 s  LSC 4 blast 0 ...

    Parameters
    ----------
    interval_s : float
        Wall time between lines [s].
    clock : callable
        Source of monotonic time (tests pass a fake one).
    """

    def __init__(self, interval_s: float = 30.0, clock=time.monotonic) -> None:
        self.interval_s = float(interval_s)
        self._clock = clock
        self._t0 = 0.0
        self._first = 0
        self._last_line = -math.inf
        self._lines = 0

    def start(self, sim) -> None:
        self._t0 = self._clock()
        self._first = sim.model.clock.iteration
        self._last_line = -math.inf
        self._lines = 0

    def update(self, sim) -> None:
        now = self._clock()
        if self._lines == 0:  # measure the rate from the end of the first step on
            self._first, self._t0 = sim.model.clock.iteration, now
        st = progress_state(sim, self._first, self._t0, now)
        last = st.total is not None and st.iteration >= st.total
        if self._lines == 0 or last or now - self._last_line >= self.interval_s:
            self._emit(st)
            self._last_line = now

    def stop(self, sim) -> None:
        pass

    def _emit(self, st: ProgressState) -> None:
        self._lines += 1
        where = f"day {st.day:.2f}" + (f" of {st.stop_time_h / 24:g}" if st.stop_time_h is not None else "")
        if st.total:
            where += f"  step {st.iteration}/{st.total}  {100.0 * st.iteration / st.total:.1f}%"
        else:
            where += f"  step {st.iteration}"
        log.info("%s  %.1f steps/s  ETA %s  %s", where, st.rate, format_duration(st.eta_s), st.info)
