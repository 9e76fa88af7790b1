"""Memory footprint of a run, estimated before any allocation, and checked against the device.

The per-voxel byte counts below mirror the allocations of the model state and the solver
workspace; ``tests/test_memory.py`` sums the real allocations and checks them against these.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

from .errors import ConfigError

__all__ = ["MemoryEstimate", "estimate_memory", "available_memory_bytes", "check_memory"]

#: Bytes per voxel of the prognostic model state (what a checkpoint must hold), float32 fields:
#: tissue u8, niche u8, cells u8, flags u8, generation u8, integrity f32, oxygen f32,
#: signal f32, cytarabine f32, daunorubicin f32.
STATE_BYTES_PER_VOXEL_F32 = 5 * 1 + 5 * 4
#: Solver workspace per voxel (float32): coefficients D, a, vmax, s; CG/MG vectors r, z, p, Ap;
#: the coarse-level hierarchy adds at most 1/7 of the finest level. Plus one u32 claim field
#: and the f64 exposure accumulators the cell step keeps per voxel are not used: exposure is summed.
WORKSPACE_BYTES_PER_VOXEL_F32 = int(round((4 + 4) * 4 * (1 + 1 / 7))) + 4


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated bytes of a run of ``voxels`` voxels."""

    voxels: int
    state_bytes: int
    workspace_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.state_bytes + self.workspace_bytes


def estimate_memory(shape: tuple[int, int, int], precision: str = "float32") -> MemoryEstimate:
    """Estimate the memory of the model state and solver workspace for a grid ``shape``."""
    n = int(shape[0]) * int(shape[1]) * int(shape[2])
    scale = 2 if precision == "float64" else 1
    state = n * (5 + 5 * 4 * scale)
    work = n * (WORKSPACE_BYTES_PER_VOXEL_F32 - 4) * scale + n * 4
    return MemoryEstimate(voxels=n, state_bytes=state, workspace_bytes=work)


def available_memory_bytes(device: str = "cpu") -> int | None:
    """Free memory of the device in bytes (None when it cannot be measured)."""
    if device == "cpu":
        try:
            with open("/proc/meminfo", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    if device == "cuda" and shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=memory.free", "--format=csv,noheader,nounits", "-i", "0"],
                capture_output=True, text=True, timeout=20,
            ).stdout.strip().splitlines()
            return int(float(out[0])) * 1024 * 1024
        except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
            return None
    return None


def check_memory(shape: tuple[int, int, int], precision: str, device: str) -> MemoryEstimate:
    """Refuse a grid whose estimated memory exceeds what the device has free.

    Raises
    ------
    ConfigError
        Naming ``domain.shape_voxels``, the estimate and the free memory.
    """
    est = estimate_memory(shape, precision)
    n = est.voxels
    if n >= 2**31:
        raise ConfigError(
            f"domain.shape_voxels = {list(shape)} has {n} voxels; one Taichi field holds at most "
            f"2^31-1 (about 1290^3): split the domain"
        )
    free = available_memory_bytes(device)
    if free is not None and est.total_bytes > free:
        raise ConfigError(
            f"domain.shape_voxels = {list(shape)} needs about {est.total_bytes / 2**30:.1f} GiB "
            f"but the {device} device has {free / 2**30:.1f} GiB free; use a smaller grid or a larger device"
        )
    return est
