"""Parameter sweeps: many runs of one model, spread over worker processes or machines.

A sweep is described by a TOML *spec* (:mod:`.spec`): a base configuration, the parameters
to vary (cartesian grid, zipped lists, explicit points, Latin hypercube), the replicate
seeds and, optionally, a branch day at which a shared prefix run per seed is forked into
treatment arms. :mod:`.members` expands the spec into members, each a fully resolved and
validated config; :func:`.worker.run_member`, shipped to the worker processes, runs one
member in a fresh process of its own (where Taichi is initialised); :mod:`.cluster` opens a
local Dask cluster (or connects to a scheduler); :mod:`.driver` submits the members, tracks ``status.json`` files for
resumption and writes the endpoint table of :mod:`.summary`; :mod:`.report` plots it.

Nothing here imports Taichi in the process that drives the sweep.

Examples
--------
>>> from marrow3d.sweep import load_spec, expand          # doctest: +SKIP
>>> plan = expand(load_spec("configs/sweeps/tiny.toml"))
>>> [m["member_id"] for m in plan.members]
['p000_s1', 'p000_s2', 'p001_s1', 'p001_s2']
"""

from __future__ import annotations

from .errors import SweepError
from .members import Plan, expand
from .spec import SweepSpec, load_spec

__all__ = ["SweepError", "SweepSpec", "load_spec", "expand", "Plan", "run_sweep"]


def run_sweep(*args, **kwargs):
    """Run a sweep; see :func:`marrow3d.sweep.driver.run_sweep`."""
    from .driver import run_sweep as _run

    return _run(*args, **kwargs)
