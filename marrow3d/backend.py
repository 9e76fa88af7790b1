"""Compute-backend selection: resolve, initialise once, verify, never fall back silently.

The kernel compiler (quadrants, the maintained Taichi; see :mod:`marrow3d.kernels.ti_compat`)
quietly runs on the CPU when ``init(arch=cuda)`` finds no GPU, unless told otherwise. A user
who asked for a GPU must get an error instead, and every output file records the arch that
really ran. ``initialize`` is called from entry points (CLI, sweep workers) and test fixtures
only, never at import.

Quiet by default: the compiler's start-up line and its warnings (a missing ``libcuda.so`` while
``auto`` probes for CUDA, a busy kernel-cache lock) are not shown; ``verbose=True`` (the CLI's
``-v``) shows them.

Kernel cache: compiled kernels are kept in ``$MARROW3D_KERNEL_CACHE`` or else
``$XDG_CACHE_HOME/marrow3d/kernels/quadrants-<version>`` (``~/.cache`` when unset), one
folder per compiler version, in a sub-folder named after a hash of the kernel sources
(``kernels/*.py``): the compiler's fast cache of the solver kernels skips re-parsing them by
hashing the kernel functions' source only, not the module constants they read (lanes, slots,
table offsets), so a change anywhere in those modules must start a fresh cache. Concurrent runs (sweep members) share it safely: kernel files are
written under unique names and renamed into place, and the metadata index is guarded by a lock
file that a writer holds for milliseconds; a run that finds it busy simply does not add its
kernels this time. A lock file left by a killed process would block every later update, so
``initialize`` removes lock files older than :data:`STALE_LOCK_SECONDS`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import BackendError

__all__ = [
    "BackendInfo",
    "initialize",
    "BACKEND_CHOICES",
    "probe_backends",
    "kernel_cache_dir",
    "missing_vulkan_capabilities",
    "vulkan_probe_status",
    "VULKAN_REQUIREMENTS",
]

log = logging.getLogger(__name__)

BackendName = Literal["auto", "cpu", "cuda", "vulkan"]
BACKEND_CHOICES = ("auto", "cpu", "cuda", "vulkan")
CPU_ARCHS = ("x64", "arm64")

#: A kernel-cache lock file older than this [s] belongs to a dead process (locks are held for
#: the milliseconds it takes to read or rewrite the cache index).
STALE_LOCK_SECONDS = 120.0


@dataclass(frozen=True)
class BackendInfo:
    """What ``initialize`` set up.

    Attributes
    ----------
    requested : str
        The backend the user asked for (``auto``, ``cpu``, ``cuda``, ``vulkan``).
    arch : str
        The arch the kernels actually run on (``x64``, ``arm64``, ``cuda``, ``vulkan``).
    threads : int or None
        CPU thread count (None for GPU archs).
    precision : str
        ``float32`` or ``float64``: the dtype of every transport field.
    library : str
        The kernel compiler and its version, e.g. ``"quadrants 1.3.3"``.
    """

    requested: str
    arch: str
    threads: int | None
    precision: str
    library: str = ""

    @property
    def name(self) -> str:
        """Short backend name stored in output files (``cpu``, ``cuda`` or ``vulkan``)."""
        return "cpu" if self.arch in CPU_ARCHS else self.arch

    @property
    def is_gpu(self) -> bool:
        return self.name in ("cuda", "vulkan")


def kernel_sources_digest() -> str:
    """A short hash of every kernel module's source (the ``marrow3d.kernels`` package files)."""
    import hashlib

    from . import kernels

    h = hashlib.sha256()
    for path in sorted(Path(kernels.__file__).parent.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def kernel_cache_dir() -> Path:
    """Folder of the compiled-kernel cache (see the module docstring)."""
    from .kernels.ti_compat import LIBRARY_NAME, library_version

    env = os.environ.get("MARROW3D_KERNEL_CACHE")
    if env:
        return Path(env).expanduser() / f"src-{kernel_sources_digest()}"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "marrow3d" / "kernels" / f"{LIBRARY_NAME}-{library_version()}" / f"src-{kernel_sources_digest()}"


def _remove_stale_locks(cache: Path, max_age_s: float = STALE_LOCK_SECONDS) -> None:
    """Delete cache lock files left behind by killed processes (older than ``max_age_s``)."""
    now = time.time()
    for lock in cache.glob("*/*.lock"):
        try:
            if now - lock.stat().st_mtime > max_age_s:
                lock.unlink()
                log.debug("removed stale kernel-cache lock %s", lock)
        except OSError:  # another process removed or re-took it meanwhile: its business
            pass


def _try_init(ti, arch, threads: int | None, fp64: bool, debug: bool, verbose: bool) -> None:
    cache = kernel_cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
        _remove_stale_locks(cache)
        cache_ok = os.access(cache, os.W_OK)
    except OSError:
        cache_ok = False
    if not cache_ok:
        log.warning("kernel cache %s is not writable: kernels are compiled anew in every run", cache)
    kwargs = dict(
        arch=arch,
        enable_fallback=False,
        default_fp=ti.f64 if fp64 else ti.f32,
        default_ip=ti.i32,
        log_level=ti.INFO if verbose else ti.ERROR,
        debug=debug,
        # Bit-exact CPU/GPU comparisons need IEEE arithmetic; CUDA still flushes denormals.
        fast_math=False,
        offline_cache=cache_ok,
    )
    if cache_ok:
        kwargs["offline_cache_file_path"] = str(cache)
    if threads is not None:
        kwargs["cpu_max_num_threads"] = int(threads)
    # init() prints "[Quadrants] Starting on arch=..." with print(): keep it off stdout.
    banner = io.StringIO()
    try:
        with contextlib.redirect_stdout(banner):
            ti.init(**kwargs)
    finally:
        if verbose and banner.getvalue().strip():
            log.debug("%s", banner.getvalue().strip())


def initialize(
    backend: str = "auto",
    *,
    threads: int | None = None,
    precision: str = "float32",
    debug: bool = False,
    verbose: bool | None = None,
) -> BackendInfo:
    """Initialise the kernel compiler on the requested backend and verify the arch that resulted.

    Parameters
    ----------
    backend : {"auto", "cpu", "cuda", "vulkan"}
        ``auto`` takes CUDA when it works, else the CPU, and logs which.
    threads : int, optional
        Number of CPU threads (CPU backend only). Results do not depend on it.
    precision : {"float32", "float64"}
        Floating-point type of the transport fields.
    debug : bool
        Bounds checking in kernels (slow; for development).
    verbose : bool, optional
        Show the kernel compiler's own messages (start-up line, warnings, info). Default: when
        the ``marrow3d`` logger is at DEBUG level (the CLI's ``-v``).

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
    from .kernels.ti_compat import ARCH_BY_NAME, LIBRARY_NAME, current_arch_name, library_version, ti

    fp64 = precision == "float64"
    if verbose is None:
        verbose = log.isEnabledFor(logging.DEBUG)
    if not verbose:
        # The compiler warns through the warnings module too (e.g. "Template mapper caching
        # disabled" when a dtype is a template argument): performance notes for its own
        # developers, shown with -v only. initialize() runs once, at an entry point.
        warnings.filterwarnings("ignore", module=r"quadrants(\.|$)")
    if backend == "auto":
        try:
            _try_init(ti, ti.cuda, None, fp64, debug, verbose)
        except Exception as exc:  # no driver, no device: auto means "CPU then"
            log.debug("CUDA unavailable (%s); using the CPU backend", exc)
            _try_init(ti, ti.cpu, threads, fp64, debug, verbose)
    else:
        try:
            _try_init(ti, ARCH_BY_NAME[backend], threads if backend == "cpu" else None, fp64, debug, verbose)
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
        library=f"{LIBRARY_NAME} {library_version()}",
    )
    if backend in ("cuda", "vulkan") and info.name != backend:
        raise BackendError(f"backend {backend!r} was requested but the kernels started on {arch!r}")
    if info.name == "vulkan":
        missing = missing_vulkan_capabilities(_device_capability_getter(ti))
        if missing:
            raise BackendError(
                "the Vulkan device lacks what marrow3d's kernels need: " + "; ".join(missing)
                + ". Run on CUDA or the CPU (--backend cuda / --backend cpu)"
            )
    log.debug("compute backend: %s (requested %s; %s)", info.name, backend, info.library)
    return info


#: Device capabilities the kernels need on Vulkan (SPIR-V), with what needs them. CUDA and the
#: CPU have all of them. Consumer GPUs without float64 (Intel Arc, Apple through MoltenVK) or
#: without 64-bit integer atomics (many mobile and integrated GPUs) cannot run the model.
VULKAN_REQUIREMENTS = {
    "spirv_has_float64": "float64 arithmetic (the transport solver's Newton iterate, residual and "
                         "every norm and dot product: without it a float32 solve cannot reach its tolerance)",
    "spirv_has_int64": "64-bit integers (the Philox random numbers of the cell rules)",
    "spirv_has_atomic_int64": "64-bit integer atomics (cell counters and exposure sums)",
}


def missing_vulkan_capabilities(has) -> list[str]:
    """The requirements in :data:`VULKAN_REQUIREMENTS` a device lacks.

    ``has(name)`` tells whether the device has capability ``name``. Floating-point atomics
    are not needed: every float reduction is a fixed-order sum (no atomics).
    """
    return [f"no {name.removeprefix('spirv_has_')}: needed for {why}" for name, why in VULKAN_REQUIREMENTS.items()
            if not has(name)]


def _device_capability_getter(ti):
    from quadrants._lib import core

    caps = ti.lang.impl.get_runtime().prog.get_device_caps()
    return lambda name: bool(caps.get(getattr(core.DeviceCapability, name)))


def vulkan_probe_status(has) -> str:
    """``marrow3d info``'s word on a Vulkan device that started, from its capabilities.

    ``has(name)`` tells whether the device has capability ``name``. A device that starts but
    lacks what :data:`VULKAN_REQUIREMENTS` lists is reported as such, not as available: a run
    on it would be refused at start-up.
    """
    missing = [name.removeprefix("spirv_has_") for name in VULKAN_REQUIREMENTS if not has(name)]
    if missing:
        return f"starts, but cannot run marrow3d (no {', no '.join(missing)})"
    return "available (vulkan)"


def probe_backends() -> dict[str, str]:
    """Report which backends could start, without initialising the kernels in this process.

    Each probe runs in a short-lived subprocess because ``init`` is process-global. A Vulkan
    device that starts is also checked for :data:`VULKAN_REQUIREMENTS`
    (:func:`vulkan_probe_status`): Mesa's software lavapipe, for one, starts on any CPU.
    """
    import subprocess
    import sys

    results: dict[str, str] = {}
    for name in ("cpu", "cuda", "vulkan"):
        code = (
            "import contextlib, io\n"
            "from marrow3d.kernels.ti_compat import ti, current_arch_name\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    ti.init(arch=ti.{name}, enable_fallback=False, log_level=ti.ERROR, offline_cache=False)\n"
            "print(current_arch_name())\n"
        )
        if name == "vulkan":
            code += ("from marrow3d.backend import _device_capability_getter, vulkan_probe_status\n"
                     "print('STATUS', vulkan_probe_status(_device_capability_getter(ti)))\n")
        try:
            proc = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
            )
            out = proc.stdout.strip().splitlines()
            results[name] = f"available ({out[-1]})" if proc.returncode == 0 and out else "unavailable"
            if proc.returncode == 0 and out and out[-1].startswith("STATUS "):
                results[name] = out[-1].removeprefix("STATUS ")
        except subprocess.TimeoutExpired:
            results[name] = "unavailable (probe timed out)"
    return results
