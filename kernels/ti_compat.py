"""The single place that imports Taichi.

Every kernel module does ``from .ti_compat import ti``. Swapping Taichi for the API-compatible
``quadrants`` fork (native sm_90) is then a one-line change here. This module never calls
``ti.init``: that happens once, at an entry point (``marrow3d.backend.initialize``) or in a test
fixture.
"""

from __future__ import annotations

import taichi as ti

__all__ = ["ti", "current_arch_name", "is_initialized", "ARCH_BY_NAME"]

#: Backend names accepted by marrow3d, mapped to Taichi archs.
ARCH_BY_NAME = {"cpu": ti.cpu, "cuda": ti.cuda, "vulkan": ti.vulkan}


def is_initialized() -> bool:
    """Return True when ``ti.init`` has been called in this process."""
    return ti.lang.impl.get_runtime().prog is not None


def current_arch_name() -> str:
    """Name of the arch Taichi actually runs on (``x64``, ``arm64``, ``cuda``, ``vulkan``)."""
    if not is_initialized():
        return "uninitialized"
    return ti.lang.impl.current_cfg().arch.name
