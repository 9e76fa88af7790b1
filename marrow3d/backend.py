"""Compute-backend selection: resolve, initialise once, verify, never fall back silently.

Taichi's default ``ti.init(arch=ti.cuda)`` quietly runs on the CPU when no GPU is found. A user
who asked for a GPU must get an error instead, and every output file records the arch that
really ran. ``initialize`` is called from entry points (CLI, sweep workers) and test fixtures
only, never at import.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Literal

from .errors import BackendError

__all__ = ["BackendInfo", "initialize", "BACKEND_CHOICES", "probe_backends"]

log = logging.getLogger(__name__)

BackendName = Literal["auto", "cpu", "cuda", "vulkan"]
BACKEND_CHOICES = ("auto", "cpu", "cuda", "vulkan")
CPU_ARCHS = ("x64", "arm64")


@dataclass(frozen=True)
class BackendInfo:
    """What ``initialize`` set up.

    Attributes
    ----------
    requested : str
        The backend the user asked for (``auto``, ``cpu``, ``cuda``, ``vulkan``).
    arch : str
        The Taichi arch actually running (``x64``, ``arm64``, ``cuda``, ``vulkan``).
    threads : int or None
        CPU thread count (None for GPU archs).
    precision : str
        ``float32`` or ``float64``: the dtype of every transport field.
    """

    requested: str
    arch: str
    threads: int | None
    precision: str

    @property
    def name(self) -> str:
        """Short backend name stored in output files (``cpu``, ``cuda`` or ``vulkan``)."""
        return "cpu" if self.arch in CPU_ARCHS else self.arch

    @property
    def is_gpu(self) -> bool:
        return self.name in ("cuda", "vulkan")


def _try_init(ti, arch, threads: int | None, fp64: bool, debug: bool) -> None:
    kwargs = dict(
        arch=arch,
        enable_fallback=False,
        default_fp=ti.f64 if fp64 else ti.f32,
        default_ip=ti.i32,
        log_level=ti.WARN,
        debug=debug,
        # Bit-exact CPU/GPU comparisons need IEEE arithmetic; CUDA still flushes denormals.
        fast_math=False,
        offline_cache=True,
    )
    if threads is not None:
        kwargs["cpu_max_num_threads"] = int(threads)
    ti.init(**kwargs)


def initialize(
    backend: str = "auto",
    *,
    threads: int | None = None,
    precision: str = "float32",
    debug: bool = False,
) -> BackendInfo:
    """Initialise Taichi on the requested backend and verify the arch that resulted.

    Parameters
    ----------
    backend : {"auto", "cpu", "cuda", "vulkan"}
        ``auto`` takes CUDA when it works, else the CPU, and logs which.
    threads : int, optional
        Number of CPU threads (CPU backend only). Results do not depend on it.
    precision : {"float32", "float64"}
        Floating-point type of the transport fields.
    debug : bool
        Taichi bounds checking (slow; for development).

    Returns
    -------
    BackendInfo

    Raises
    ------
    BackendError
        When the requested backend is unavailable; never falls back silently.
    """
    if backend not in BACKEND_CHOICES:
        raise BackendError(
            f"backend {backend!r} is not known; choose one of {', '.join(BACKEND_CHOICES)}"
        )
    if precision not in ("float32", "float64"):
        raise BackendError(f"precision {precision!r} is not known; choose float32 or float64")
    if threads is not None and threads < 1:
        raise BackendError(f"threads must be >= 1, got {threads}")
    from .kernels.ti_compat import ARCH_BY_NAME, current_arch_name, ti

    fp64 = precision == "float64"
    if backend == "auto":
        try:
            _try_init(ti, ti.cuda, None, fp64, debug)
        except Exception as exc:  # no driver, no device: auto means "CPU then"
            log.info("CUDA unavailable (%s); using the CPU backend", exc)
            _try_init(ti, ti.cpu, threads, fp64, debug)
    else:
        try:
            _try_init(ti, ARCH_BY_NAME[backend], threads if backend == "cpu" else None, fp64, debug)
        except Exception as exc:
            raise BackendError(
                f"backend {backend!r} was requested but is not available here ({exc}); "
                "use --backend cpu to run on the CPU"
            ) from None
    arch = current_arch_name()
    info = BackendInfo(
        requested=backend,
        arch=arch,
        threads=(threads or os.cpu_count()) if arch in CPU_ARCHS else None,
        precision=precision,
    )
    if backend in ("cuda", "vulkan") and info.name != backend:
        raise BackendError(f"backend {backend!r} was requested but Taichi started on {arch!r}")
    log.info("compute backend: %s (requested %s)", info.name, backend)
    return info


def probe_backends() -> dict[str, str]:
    """Report which backends could start, without initialising Taichi in this process.

    Each probe runs in a short-lived subprocess because ``ti.init`` is process-global.
    """
    import subprocess
    import sys

    results: dict[str, str] = {}
    for name in ("cpu", "cuda", "vulkan"):
        code = (
            "import taichi as ti, sys\n"
            f"ti.init(arch=ti.{name}, enable_fallback=False, log_level=ti.ERROR)\n"
            "print(ti.lang.impl.current_cfg().arch.name)\n"
        )
        try:
            proc = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
            )
            out = proc.stdout.strip().splitlines()
            results[name] = f"available ({out[-1]})" if proc.returncode == 0 and out else "unavailable"
        except subprocess.TimeoutExpired:
            results[name] = "unavailable (probe timed out)"
    return results
