"""``[run]``: seed, duration, cell time step, compute backend and precision."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Section

__all__ = ["RunConfig"]


class RunConfig(Section):
    """How long to simulate, with which seed, on which backend."""

    seed: int = Field(
        1, ge=0, lt=2**63, description="Run seed: keys every random draw (Philox-4x32-10)."
    )
    days: float = Field(
        28.0, ge=0.0, le=3650.0, description="Simulated time to run, in days (0 = anatomy and t=0 fields only)."
    )
    cell_step_hours: float = Field(
        1.0,
        gt=0.0,
        le=24.0,
        description="Cell time step in hours: one transport solve and one round of cell events per step.",
    )
    backend: Literal["auto", "cpu", "cuda", "vulkan"] = Field(
        "auto", description="Compute backend; 'auto' takes CUDA when it works, else the CPU."
    )
    threads: int | None = Field(
        None, ge=1, le=1024, description="CPU threads (CPU backend). Results do not depend on it."
    )
    precision: Literal["float32", "float64"] = Field(
        "float32", description="Floating-point type of the transport fields."
    )
