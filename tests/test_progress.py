"""Progress reporting: the simulation calls the reporter it is handed; log lines and the rich bar.

A stand-in model (a clock and a readout, no kernels) drives the real :class:`Simulation`
loop, so these tests take milliseconds.
"""

from __future__ import annotations

import ast
import io
import logging
import re
from pathlib import Path

import pytest

from marrow3d.progress import LogProgress, format_duration, progress_state
from marrow3d.simulation import Simulation

ROOT = Path(__file__).resolve().parents[1]


class _Clock:
    def __init__(self, dt_h: float) -> None:
        self.iteration = 0
        self.dt_h = dt_h

    @property
    def time_h(self) -> float:
        return self.iteration * self.dt_h


class _Model:
    """The parts of MarrowModel the loop and the reporters use."""

    def __init__(self, dt_h: float = 1.0) -> None:
        self.clock = _Clock(dt_h)

    def time_step(self) -> None:
        self.clock.iteration += 1

    def check_finite(self) -> None:
        pass

    def progress_summary(self) -> str:
        return f"LSC {self.clock.iteration}"


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def start(self, sim) -> None:
        self.calls.append(("start", sim.model.clock.iteration))

    def update(self, sim) -> None:
        self.calls.append(("update", sim.model.clock.iteration))

    def stop(self, sim) -> None:
        self.calls.append(("stop", sim.model.clock.iteration))


class _FakeTime:
    """A monotonic clock that advances by ``step`` seconds per reading."""

    def __init__(self, step: float) -> None:
        self.t = 100.0
        self.step = step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


def test_simulation_calls_the_reporter_it_is_handed():
    rec = _Recorder()
    status = Simulation(_Model(), stop_time_h=5.0, progress=rec).run()
    assert status.iteration == 5
    assert rec.calls == [("start", 0), *(("update", k) for k in range(1, 6)), ("stop", 5)]


def test_reporter_is_stopped_when_the_model_fails():
    class Failing(_Model):
        def time_step(self) -> None:
            super().time_step()
            if self.clock.iteration == 3:
                raise RuntimeError("boom")

    rec = _Recorder()
    with pytest.raises(RuntimeError):
        Simulation(Failing(), stop_time_h=10.0, progress=rec).run()
    assert rec.calls[-1] == ("stop", 3)


def test_simulation_does_not_import_the_command_line():
    """simulation.py (and progress.py) hand progress display to the caller: no CLI imports."""
    for name in ("simulation.py", "progress.py"):
        tree = ast.parse((ROOT / "marrow3d" / name).read_text())
        modules = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        modules += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [m for m in modules if "cli" in m.split(".") or m.startswith(("rich", "typer"))], (name, modules)


def test_progress_state_rate_and_eta():
    sim = Simulation(_Model(dt_h=0.5), stop_time_h=10.0)  # 20 steps
    sim.model.clock.iteration = 5
    st = progress_state(sim, first_iteration=1, t0=0.0, now=2.0)
    assert st.total == 20 and st.rate == pytest.approx(2.0)  # 4 steps in 2 s
    assert st.eta_s == pytest.approx(7.5)  # 15 steps left
    assert st.day == pytest.approx(2.5 / 24) and st.stop_time_h == 10.0 and st.info == "LSC 5"
    before = progress_state(sim, first_iteration=5, t0=0.0, now=2.0)
    assert before.rate == 0.0 and before.eta_s is None  # no step taken yet: unknown


def test_format_duration():
    assert format_duration(None) == "?" and format_duration(float("inf")) == "?"
    assert format_duration(42.4) == "42 s" and format_duration(185) == "3 min 05 s"
    assert format_duration(3725) == "1 h 02 min"


def test_log_progress_lines_are_periodic(caplog):
    """First step, then every interval of wall time, and the last step; each line with an ETA."""
    reporter = LogProgress(interval_s=10.0, clock=_FakeTime(step=3.0))  # 3 s per reading
    with caplog.at_level(logging.INFO, logger="marrow3d.progress"):
        Simulation(_Model(), stop_time_h=20.0, progress=reporter).run()
    lines = [r.getMessage() for r in caplog.records if r.name == "marrow3d.progress"]
    steps = [int(m.split("step ")[1].split("/")[0]) for m in lines]
    # readings at 103 (start), 106 (step 1: first line), then every 10 s: steps 5, 9, 13, 17; 20 is last
    assert steps == [1, 5, 9, 13, 17, 20]
    assert lines[0].startswith("day 0.04 of 0.833333  step 1/20  5.0%")
    assert "ETA ?" in lines[0]  # the rate is measured from the end of the first step (compilation)
    assert "0.3 steps/s  ETA 45 s" in lines[1]  # step 5: 4 steps in 12 s, 15 steps left
    assert lines[-1].split("ETA ")[1].startswith("0 s") and lines[-1].endswith("LSC 20")


def test_rich_progress_on_a_terminal_shows_eta():
    from rich.console import Console

    from marrow3d.cli.progress import RichProgress, make_progress

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=80, color_system=None)
    reporter = make_progress(console)
    assert isinstance(reporter, RichProgress)
    Simulation(_Model(), stop_time_h=4.0, progress=reporter).run()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())  # cursor control codes
    last = [ln for ln in text.replace("\r", "\n").splitlines() if ln.strip()][-1]
    assert last.startswith("day 0.17/0.166667") and "4/4" in last and "steps/s" in last and "ETA 0 s" in last
    assert isinstance(make_progress(Console(file=io.StringIO(), force_terminal=False)), LogProgress)
