"""Test fixtures: Taichi is initialised once per session, on the CPU, with no fallback.

Kernels take explicit dtypes, so one CPU initialisation serves float32 and float64 tests.
``MARROW3D_TEST_BACKEND=cuda`` runs the Taichi tests on a GPU instead (fails if absent).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from _seed_runs import JOBS, SeedRuns

_SEED_RUNS = SeedRuns()


@pytest.fixture(scope="session")
def taichi_backend():
    """Initialise Taichi once for the session and return the BackendInfo."""
    from marrow3d.backend import initialize

    backend = os.environ.get("MARROW3D_TEST_BACKEND", "cpu")
    return initialize(backend, threads=2 if backend == "cpu" else None)


@pytest.fixture(scope="session")
def gl():
    """Skip (with the reason) when no off-screen OpenGL back end works here."""
    from marrow3d.viz._gl import probe_offscreen

    ok, detail = probe_offscreen()  # configures the headless window first
    if not ok:
        pytest.skip(f"no off-screen rendering: {detail}")
    return detail


@pytest.fixture(autouse=True)
def restore_logging():
    """The CLI installs a handler on the marrow3d logger; put the logger back after every test."""
    import logging

    logger = logging.getLogger("marrow3d")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


@pytest.fixture
def rng():
    """A numpy Generator with a fixed seed, for building random test problems."""
    import numpy as np

    return np.random.default_rng(20261126)


# Tiny runs shared across modules (made once per session, read only): see tests/_runs.py.
from _runs import dosed_run, quick_run  # noqa: E402,F401


def pytest_collection_modifyitems(session, config, items):
    """Run the modules whose fixtures are background seed runs last (stable otherwise)."""
    items.sort(key=lambda item: Path(str(item.fspath)).name in JOBS)


def pytest_collection_finish(session):
    """Start the selected modules' seed runs now (see tests/_seed_runs.py)."""
    if session.config.option.collectonly:
        return
    modules = {Path(str(item.fspath)).name for item in session.items}
    _SEED_RUNS.start(modules & set(JOBS), other_tests=bool(modules - set(JOBS)))


def pytest_sessionfinish(session, exitstatus):
    _SEED_RUNS.close()


@pytest.fixture(scope="session")
def seed_runs():
    """The background seed runs (tests/_seed_runs.py): ``seed_runs.results("test_x.py")``."""
    return _SEED_RUNS
