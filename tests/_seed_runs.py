"""Seed runs of the calibration and 7+3 fixtures, started early on a core the suite leaves idle.

The default suite is mostly single-threaded (its user time is about its wall time on 2 cores),
while ``test_calibration`` and ``test_scenarios`` wait on three seeds each, run in worker
processes. ``conftest.py`` moves those two modules to the end of the run and, once collection
is final, submits their six seed runs to one background worker process; by the time their
fixtures ask, the results are ready (or nearly). When only those modules are selected, two
workers run them side by side, as the modules did on their own. Results do not depend on the
thread count or on which process runs a seed.
"""

from __future__ import annotations

import functools
import multiprocessing
import os

from _calibration_runs import natural_history
from _scenario_arms import run_arms

SEEDS = (1, 2, 3)
#: module file -> the fixture's job per seed (a picklable callable)
JOBS = {
    "test_calibration.py": natural_history,
    "test_scenarios.py": functools.partial(run_arms, chemo_only=True),
}


class SeedRuns:
    """Pending seed runs (pool AsyncResults), keyed by module file name; one pool per session."""

    def __init__(self) -> None:
        self._pool = None  # a multiprocessing Pool: terminate() stops work nobody will read
        self._futures: dict[str, list] = {}

    def start(self, modules: set[str], other_tests: bool) -> None:
        wanted = [m for m in JOBS if m in modules]  # JOBS order: calibration first
        if not wanted:
            return
        workers = 1 if other_tests else max(1, min(2, os.cpu_count() or 1))
        # "spawn": a forked child would inherit an initialised Taichi runtime.
        self._pool = multiprocessing.get_context("spawn").Pool(workers)
        for m in wanted:
            self._futures[m] = [self._pool.apply_async(JOBS[m], (seed,)) for seed in SEEDS]

    def results(self, module: str) -> list:
        """The seed results of ``module``; run here, in order, if collection did not start them."""
        if module not in self._futures:
            return [JOBS[module](seed) for seed in SEEDS]
        return [f.get() for f in self._futures[module]]

    def close(self) -> None:
        """Stop the workers (a run that was not read, e.g. after -x, is abandoned)."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
