"""Schedules decide when output writers and callbacks act.

A schedule is called with the model after each step and answers True when its owner should
act. Schedules are stateful (the next actuation), so their state is part of a checkpoint.
Simulated time is always ``iteration * dt`` (no accumulated float error), and a time interval
fires on the first step at or after its target time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

__all__ = ["IterationInterval", "TimeInterval", "WallTimeInterval", "Never", "schedule_from_state"]

#: Float slack when comparing simulated times (hours), far below any sensible cell step.
_EPS_H = 1e-9


@dataclass
class IterationInterval:
    """Act every ``n`` iterations (steps)."""

    n: int

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"IterationInterval needs n >= 1, got {self.n}")

    def __call__(self, model) -> bool:
        return model.clock.iteration % self.n == 0

    def prognostic_state(self) -> dict:
        return {"kind": "iteration", "n": self.n}

    def restore_prognostic_state(self, state: dict) -> None:
        self.n = int(state["n"])


@dataclass
class TimeInterval:
    """Act every ``hours`` of simulated time (first step at or after each multiple)."""

    hours: float
    next_h: float | None = None

    def __post_init__(self) -> None:
        if not self.hours > 0:
            raise ValueError(f"TimeInterval needs hours > 0, got {self.hours}")

    def prime(self, model) -> None:
        """Set the first target from the start time (before the first step)."""
        if self.next_h is None:
            self.next_h = (int(model.clock.time_h / self.hours + _EPS_H) + 1) * self.hours

    def __call__(self, model) -> bool:
        t = model.clock.time_h
        if self.next_h is None:
            self.prime(model)
            return False
        if t + _EPS_H >= self.next_h:
            # Skip multiples already passed (dt longer than the interval).
            self.next_h = (int(t / self.hours + _EPS_H) + 1) * self.hours
            return True
        return False

    def prognostic_state(self) -> dict:
        return {"kind": "time", "hours": self.hours, "next_h": -1.0 if self.next_h is None else self.next_h}

    def restore_prognostic_state(self, state: dict) -> None:
        self.hours = float(state["hours"])
        nh = float(state["next_h"])
        self.next_h = None if nh < 0 else nh


@dataclass
class WallTimeInterval:
    """Act every ``seconds`` of wall-clock time (not reproducible by nature: checkpoints only)."""

    seconds: float
    _last: float = field(default_factory=time.monotonic)

    def __call__(self, model) -> bool:
        now = time.monotonic()
        if now - self._last >= self.seconds:
            self._last = now
            return True
        return False

    def prognostic_state(self) -> dict:
        return {"kind": "wall", "seconds": self.seconds}

    def restore_prognostic_state(self, state: dict) -> None:
        self.seconds = float(state["seconds"])
        self._last = time.monotonic()


@dataclass
class Never:
    """Never act (an output turned off)."""

    def __call__(self, model) -> bool:
        return False

    def prognostic_state(self) -> dict:
        return {"kind": "never"}

    def restore_prognostic_state(self, state: dict) -> None:
        pass


@dataclass
class AnyOf:
    """Act when any of several schedules acts (all are polled, so all stay in step)."""

    schedules: list

    def prime(self, model) -> None:
        for s in self.schedules:
            if hasattr(s, "prime"):
                s.prime(model)

    def __call__(self, model) -> bool:
        hits = [s(model) for s in self.schedules]
        return any(hits)

    def prognostic_state(self) -> dict:
        return {"kind": "any", **{f"s{i}": s.prognostic_state() for i, s in enumerate(self.schedules)}}

    def restore_prognostic_state(self, state: dict) -> None:
        for i, s in enumerate(self.schedules):
            s.restore_prognostic_state(state[f"s{i}"])


def schedule_from_state(state: dict):
    """Rebuild a schedule from its ``prognostic_state`` dict."""
    kind = state["kind"]
    if kind == "iteration":
        return IterationInterval(int(state["n"]))
    if kind == "time":
        s = TimeInterval(float(state["hours"]))
        s.restore_prognostic_state(state)
        return s
    if kind == "wall":
        return WallTimeInterval(float(state["seconds"]))
    if kind == "never":
        return Never()
    raise ValueError(f"unknown schedule kind {kind!r}")
