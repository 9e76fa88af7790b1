"""The progress display of ``marrow3d run``, ``resume`` and ``branch``.

On a terminal: a rich progress bar with the simulated day, steps, rate, the model's readout
and the estimated time left. Elsewhere (a log file, a batch job): the periodic log lines of
:class:`marrow3d.progress.LogProgress`. The simulation only calls the reporter it is given.
"""

from __future__ import annotations

from ..progress import LogProgress, format_duration, progress_state

__all__ = ["RichProgress", "make_progress"]


class RichProgress:
    """A rich progress bar on ``console`` (a :class:`rich.console.Console` on a terminal).

    Columns: simulated day, bar, steps done/total, steps/s, ETA, the model's readout. The rate
    is measured from the end of the first step (which includes kernel compilation) and the
    ETA is the steps left at that rate.
    """

    def __init__(self, console) -> None:
        self.console = console
        self._bar = None
        self._task = None
        self._t0 = 0.0
        self._first = 0
        self._stepped = False

    def start(self, sim) -> None:
        import time

        from rich.progress import BarColumn, Progress, TextColumn
        from rich.table import Column

        self._t0 = time.monotonic()
        self._first = sim.model.clock.iteration
        # Fixed columns first; the model's readout takes what is left of the line and is cut
        # with an ellipsis on narrow terminals (80 columns keep day, steps, rate and ETA).
        self._bar = Progress(
            TextColumn("[bold]day {task.fields[day]:.2f}{task.fields[of]}"),
            BarColumn(bar_width=20),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("{task.fields[rate]:.1f} steps/s"),
            TextColumn("ETA {task.fields[eta]}"),
            TextColumn("{task.fields[info]}", table_column=Column(ratio=1, no_wrap=True, overflow="ellipsis")),
            console=self.console,
            transient=False,
            expand=True,
        )
        self._bar.start()
        st = progress_state(sim, self._first, self._t0)
        of = f"/{st.stop_time_h / 24:g}" if st.stop_time_h is not None else ""
        self._task = self._bar.add_task("run", total=st.total, completed=st.iteration, day=st.day, of=of,
                                        rate=0.0, eta="?", info="")

    def update(self, sim) -> None:
        import time

        if not self._stepped:  # measure the rate from the end of the first step on
            self._stepped = True
            self._first, self._t0 = sim.model.clock.iteration, time.monotonic()
        st = progress_state(sim, self._first, self._t0)
        self._bar.update(self._task, completed=st.iteration, day=st.day, rate=st.rate,
                         eta=format_duration(st.eta_s), info=st.info)

    def stop(self, sim) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def make_progress(console):
    """A :class:`RichProgress` when ``console`` is a terminal, else a :class:`LogProgress`."""
    return RichProgress(console) if console.is_terminal else LogProgress()
