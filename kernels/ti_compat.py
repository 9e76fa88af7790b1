"""The single place that imports the kernel language.

marrow3d's kernels are written in the Taichi language and compiled by **quadrants**, the
maintained fork of Taichi (same language and Python API; LLVM 22, native sm_90 for Hopper
GPUs). Upstream Taichi 1.7.4, its last release, aborts in LLVM instruction selection on CUDA
at the first multigrid kernel, while quadrants compiles the same code and gives results
bitwise identical to the CPU.

Every kernel module does ``from .ti_compat import ti``: ``ti`` is the ``quadrants`` module
under the name the kernel code has always used. This module never calls ``ti.init``: that
happens once, at an entry point (``marrow3d.backend.initialize``) or in a test fixture.

Importing it keeps the library quiet: the version banner quadrants prints on import is
switched off (``ENABLE_QUADRANTS_HEADER_PRINT``; a value the user already set wins), and so is
the ``[PURE.VIOLATION]`` warning the compiler gives when a ``fastcache`` kernel reads a module
constant (slot numbers, lane counts, table offsets). Its fast cache skips re-parsing a kernel
by hashing the source of the kernel's functions only, so a changed constant alone would serve
stale code; marrow3d's kernel cache therefore lives in a folder named after a hash of every
kernel module's source, constants included (:func:`marrow3d.backend.kernel_cache_dir`), and
the warning has nothing left to warn about.
"""

from __future__ import annotations

import os
import warnings

# The banner is printed at import time, so this must be set before the import.
os.environ.setdefault("ENABLE_QUADRANTS_HEADER_PRINT", "False")

import quadrants as ti  # noqa: E402

warnings.filterwarnings("ignore", message=r"\[PURE\.VIOLATION\]", category=UserWarning)

__all__ = [
    "ti",
    "current_arch_name",
    "is_initialized",
    "ARCH_BY_NAME",
    "LIBRARY_NAME",
    "library_version",
    "is_gpu_arch",
]

#: Distribution name of the kernel compiler (recorded in output files and ``marrow3d info``).
LIBRARY_NAME = "quadrants"

#: Backend names accepted by marrow3d, mapped to archs of the kernel compiler.
ARCH_BY_NAME = {"cpu": ti.cpu, "cuda": ti.cuda, "vulkan": ti.vulkan}


def library_version() -> str:
    """Version of the kernel compiler, e.g. ``"1.3.3"``."""
    return ".".join(str(v) for v in ti.__version__)


def is_initialized() -> bool:
    """Return True when ``ti.init`` has been called in this process."""
    # quadrants' ``get_runtime().prog`` raises before init; the private slot does not.
    return ti.lang.impl.get_runtime()._prog is not None


def current_arch_name() -> str:
    """Name of the arch the kernels actually run on (``x64``, ``arm64``, ``cuda``, ``vulkan``)."""
    if not is_initialized():
        return "uninitialized"
    return ti.lang.impl.current_cfg().arch.name


def is_gpu_arch() -> bool:
    """True when the initialised arch is a GPU (kernels then take their GPU memory layout)."""
    return current_arch_name() not in ("x64", "arm64", "uninitialized")
