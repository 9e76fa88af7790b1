"""Per-step profile of a run: kernel launches, host syncs, host<->device bytes, time per phase.

``marrow3d run --profile`` (and the benchmarks) wrap a run in a :class:`StepProfiler`. While
it is active it counts, at the kernel library's public entry points:

* **launches**: every kernel call (the model's kernels and the library's own helpers behind
  ``fill``), by kernel name;
* **host syncs**: every operation that makes the host wait for the device: ``to_numpy`` /
  ``from_numpy`` of a field or ndarray, a scalar element read (``field[i]``), a kernel that
  returns a value or takes a numpy array argument (copied over and back), and an explicit
  ``ti.sync()``;
* **bytes** to the host and to the device of those transfers (scalar kernel arguments are
  launch parameters and not counted).

Each counted operation is counted once: the library's internal kernels and syncs behind a
``to_numpy`` are part of that one transfer. The counts are attributed to the innermost
**phase** open at the time (``pk``, ``solve:<field>``, ``cells``, ``vessels``, ``readouts``,
``finite``, ``output``; ``other`` outside any), which the model and the simulation loop open
through their ``probe`` (a :class:`NullProbe`, which costs nothing, unless a profiler is
installed). A phase ends with a device sync that is not counted, so its wall time includes
the device work it launched (on the CPU backend kernels are synchronous anyway).

The counting layer replaces methods of the kernel library's classes for the duration of the
``with`` block and restores them afterwards; it is meant for profiling runs, not for
production runs (it adds a few microseconds per launch). Written against quadrants 1.3
(``marrow3d.kernels.ti_compat``); an entry point the library does not have is reported in
``missing_hooks`` instead of being counted silently as zero.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["NullProbe", "NULL_PROBE", "StepProfiler", "Counts"]

_NULL_CONTEXT = contextlib.nullcontext()


class NullProbe:
    """The probe of an unprofiled run: phases cost one attribute lookup and a no-op context."""

    active = False

    def phase(self, name: str):  # noqa: ARG002 - same signature as StepProfiler.phase
        return _NULL_CONTEXT

    def step_done(self, wrote_output: bool = False) -> None:
        pass


NULL_PROBE = NullProbe()


@dataclass
class Counts:
    """Launches, syncs and transferred bytes, and wall time, of one phase of one step."""

    launches: int = 0
    syncs: int = 0
    bytes_to_host: int = 0
    bytes_to_device: int = 0
    seconds: float = 0.0
    kernels: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, other: "Counts") -> None:
        self.launches += other.launches
        self.syncs += other.syncs
        self.bytes_to_host += other.bytes_to_host
        self.bytes_to_device += other.bytes_to_device
        self.seconds += other.seconds
        for k, v in other.kernels.items():
            self.kernels[k] += v

    def as_dict(self) -> dict[str, Any]:
        return {"launches": self.launches, "syncs": self.syncs, "bytes_to_host": self.bytes_to_host,
                "bytes_to_device": self.bytes_to_device, "seconds": self.seconds}


def _nbytes(obj) -> int:
    return int(obj.nbytes) if isinstance(obj, np.ndarray) else 0


class StepProfiler:
    """Count launches, syncs and bytes and time the phases of every step of a run.

    Use as a context manager around the run, and hand it to the model and the simulation as
    their ``probe``::

        with StepProfiler() as prof:
            model.probe = sim.probe = prof
            sim.run()
        print(prof.table())

    Attributes
    ----------
    steps : list of dict
        One record per step: ``{"output": bool, "phases": {name: Counts}}``.
    missing_hooks : list of str
        Library entry points that could not be instrumented (their operations are not counted).
    """

    active = True

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []
        self.missing_hooks: list[str] = []
        self._current: dict[str, Counts] = defaultdict(Counts)
        self._stack: list[str] = []
        self._depth = 0  # > 0 inside a counted transfer: its internal launches/syncs are part of it
        self._saved: list[tuple[object, str, object]] = []
        self._ti = None
        self._step_t0 = time.perf_counter()

    # ------------------------------------------------------------------ phases
    def _counts(self) -> Counts:
        return self._current[self._stack[-1] if self._stack else "other"]

    @contextlib.contextmanager
    def phase(self, name: str):
        """Attribute everything counted inside to phase ``name`` and time it."""
        self._stack.append(name)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._quiet_sync()
            dt = time.perf_counter() - t0
            self._stack.pop()
            self._current[name].seconds += dt
            # an enclosing phase's time excludes its nested phases (no double counting)
            if self._stack:
                self._current[self._stack[-1]].seconds -= dt

    def step_done(self, wrote_output: bool = False) -> None:
        """Close the current step (``wrote_output``: a writer ran in it).

        Time not spent in any phase (the loop itself, a progress display) goes to ``other``.
        """
        now = time.perf_counter()
        wall = now - self._step_t0
        self._step_t0 = now
        self._current["other"].seconds += wall - sum(c.seconds for c in self._current.values())
        self.steps.append({"output": bool(wrote_output), "wall_s": wall, "phases": dict(self._current)})
        self._current = defaultdict(Counts)

    def _quiet_sync(self) -> None:
        if self._ti is not None:
            self._depth += 1
            try:
                self._ti.sync()
            finally:
                self._depth -= 1

    # ------------------------------------------------------------------ counting hooks
    def _launch(self, name: str, args, result) -> None:
        c = self._counts()
        c.launches += 1
        c.kernels[name] += 1
        arrays = [a for a in args if isinstance(a, np.ndarray)]
        if arrays or result is not None:
            c.syncs += 1
        nb = sum(a.nbytes for a in arrays)
        c.bytes_to_device += nb
        c.bytes_to_host += nb + (8 if result is not None else 0)

    def _transfer(self, name: str, to_host: int = 0, to_device: int = 0, sync: bool = True) -> None:
        c = self._counts()
        c.launches += 1
        c.kernels[name] += 1
        c.syncs += int(sync)
        c.bytes_to_host += to_host
        c.bytes_to_device += to_device

    def _patch(self, owner, attr: str, make) -> None:
        original = owner.__dict__.get(attr) if isinstance(owner, type) else getattr(owner, attr, None)
        if original is None:
            self.missing_hooks.append(f"{getattr(owner, '__name__', owner)}.{attr}")
            return
        self._saved.append((owner, attr, original))
        setattr(owner, attr, make(original))

    def __enter__(self) -> "StepProfiler":
        import importlib

        from .kernels.ti_compat import ti

        self._ti = ti
        prof = self

        def module(name):
            return importlib.import_module(f"{ti.__name__}.lang.{name}")

        kernel_mod, field_mod, matrix_mod, ndarray_mod, runtime_ops = (
            module(n) for n in ("kernel", "field", "matrix", "_ndarray", "runtime_ops"))

        def launch(orig):
            def __call__(kernel, *args, **kwargs):
                if prof._depth:
                    return orig(kernel, *args, **kwargs)
                prof._depth += 1  # the library's own sync for a returned value is part of this launch
                try:
                    result = orig(kernel, *args, **kwargs)
                finally:
                    prof._depth -= 1
                name = getattr(getattr(kernel, "func", None), "__name__", "kernel")
                prof._launch(name, args, result)
                return result
            return __call__

        def to_numpy(kind):
            def make(orig):
                def wrapper(obj, *args, **kwargs):
                    if prof._depth:
                        return orig(obj, *args, **kwargs)
                    prof._depth += 1
                    try:
                        out = orig(obj, *args, **kwargs)
                    finally:
                        prof._depth -= 1
                    prof._transfer(f"{kind}.to_numpy", to_host=_nbytes(out))
                    return out
                return wrapper
            return make

        def from_numpy(kind):
            def make(orig):
                def wrapper(obj, arr, *args, **kwargs):
                    if prof._depth:
                        return orig(obj, arr, *args, **kwargs)
                    prof._depth += 1
                    try:
                        return orig(obj, arr, *args, **kwargs)
                    finally:
                        prof._depth -= 1
                        prof._transfer(f"{kind}.from_numpy", to_device=_nbytes(np.asarray(arr)))
                return wrapper
            return make

        def getitem(kind):
            def make(orig):
                def wrapper(obj, key):
                    if prof._depth:
                        return orig(obj, key)
                    prof._depth += 1
                    try:
                        out = orig(obj, key)
                    finally:
                        prof._depth -= 1
                    prof._transfer(f"{kind}[] read", to_host=8)
                    return out
                return wrapper
            return make

        def setitem(kind):
            def make(orig):
                def wrapper(obj, key, value):
                    if prof._depth:
                        return orig(obj, key, value)
                    prof._depth += 1
                    try:
                        return orig(obj, key, value)
                    finally:
                        prof._depth -= 1
                        prof._transfer(f"{kind}[] write", to_device=8, sync=False)
                return wrapper
            return make

        def fill(kind):
            def make(orig):
                def wrapper(obj, value):
                    if prof._depth:
                        return orig(obj, value)
                    prof._depth += 1
                    try:
                        return orig(obj, value)
                    finally:
                        prof._depth -= 1
                        prof._transfer(f"{kind}.fill", sync=False)
                return wrapper
            return make

        def sync(orig):
            def wrapper(*args, **kwargs):
                if prof._depth:
                    return orig(*args, **kwargs)
                prof._counts().syncs += 1  # a sync, not a launch
                prof._depth += 1
                try:
                    return orig(*args, **kwargs)
                finally:
                    prof._depth -= 1
            return wrapper

        self._patch(kernel_mod.Kernel, "__call__", launch)
        classes = [("field", field_mod.ScalarField), ("field", matrix_mod.MatrixField),
                   ("ndarray", ndarray_mod.ScalarNdarray), ("ndarray", matrix_mod.MatrixNdarray)]
        for kind, cls in classes:
            self._patch(cls, "to_numpy", to_numpy(kind))
            self._patch(cls, "from_numpy", from_numpy(kind))
            self._patch(cls, "__getitem__", getitem(kind))
            self._patch(cls, "__setitem__", setitem(kind))
        self._patch(field_mod.ScalarField, "fill", fill("field"))
        self._patch(matrix_mod.MatrixField, "fill", fill("field"))
        self._patch(ndarray_mod.Ndarray, "fill", fill("ndarray"))
        self._patch(runtime_ops, "sync", sync)
        self._patch(ti, "sync", sync)
        self._step_t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        for owner, attr, original in reversed(self._saved):
            setattr(owner, attr, original)
        self._saved.clear()

    # ------------------------------------------------------------------ report
    def summary(self, skip: int = 1) -> dict[str, Any]:
        """Medians per step over the non-output steps (after ``skip`` warm-up steps).

        Returns
        -------
        dict
            ``steps`` (profiled, non-output, output), ``per_step`` (median launches, syncs,
            bytes to host and device, seconds of a non-output step), ``phases`` (the same per
            phase), ``max_output_step`` (the largest step that wrote output), ``kernels``
            (launches per non-output step by name, median), ``missing_hooks``.
        """
        steps = self.steps[skip:] if len(self.steps) > skip else self.steps
        plain = [s for s in steps if not s["output"]] or steps
        out_steps = [s for s in steps if s["output"]]
        names: list[str] = []  # in order of first appearance (the order of a step)
        for s in steps:
            names += [p for p in s["phases"] if p not in names and p != "other"]
        names.append("other")

        def total(s) -> Counts:
            t = Counts()
            for c in s["phases"].values():
                t.add(c)
            return t

        def med(values):
            return float(statistics.median(values)) if values else 0.0

        keys = ("launches", "syncs", "bytes_to_host", "bytes_to_device", "seconds")
        per_step = {k: med([getattr(total(s), k) for s in plain]) for k in keys}
        phases = {p: {k: med([getattr(s["phases"].get(p, Counts()), k) for s in plain]) for k in keys}
                  for p in names}
        kernels: dict[str, float] = {}
        for name in sorted({k for s in plain for c in s["phases"].values() for k in c.kernels}):
            kernels[name] = med([sum(c.kernels.get(name, 0) for c in s["phases"].values()) for s in plain])
        biggest = max(out_steps, key=lambda s: total(s).bytes_to_host, default=None)
        return {
            "steps": {"profiled": len(steps), "non_output": len([s for s in steps if not s["output"]]),
                      "output": len(out_steps), "warmup_skipped": len(self.steps) - len(steps)},
            "per_step": per_step,
            "phases": phases,
            "max_output_step": total(biggest).as_dict() if biggest else None,
            "kernels": {k: v for k, v in kernels.items() if v},
            "missing_hooks": list(self.missing_hooks),
        }

    def table(self, skip: int = 1) -> str:
        """The summary as a plain-text table (one row per phase, then the step total)."""
        s = self.summary(skip)
        n = s["steps"]
        lines = [f"profile, median of {n['non_output']} non-output steps ({n['output']} with output, "
                 f"{n['warmup_skipped']} skipped):",
                 f"{'phase':<22}{'ms':>10}{'launches':>10}{'syncs':>7}{'to host B':>12}{'to dev B':>12}"]
        rows = list(s["phases"].items()) + [("step (total)", s["per_step"])]
        for name, c in rows:
            lines.append(f"{name:<22}{c['seconds'] * 1e3:>10.2f}{c['launches']:>10.0f}{c['syncs']:>7.0f}"
                         f"{c['bytes_to_host']:>12.0f}{c['bytes_to_device']:>12.0f}")
        if s["max_output_step"]:
            o = s["max_output_step"]
            lines.append(f"largest output step: {o['seconds'] * 1e3:.1f} ms, {o['syncs']} syncs, "
                         f"{o['bytes_to_host'] / 2**20:.2f} MiB to host")
        if s["missing_hooks"]:
            lines.append("not counted (library entry points missing): " + ", ".join(s["missing_hooks"]))
        return "\n".join(lines)

    def write_json(self, path: Path, skip: int = 1, extra: dict | None = None) -> None:
        """The summary (and ``extra``) as JSON."""
        data = {"summary": self.summary(skip), **(extra or {})}
        Path(path).write_text(json.dumps(data, indent=2), encoding="utf-8")
