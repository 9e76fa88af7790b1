"""``[output]``: what the run writes, how often, at which precision."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import Section

__all__ = ["OutputConfig", "SNAPSHOT_FIELDS"]

#: Arrays that can be snapshotted into ``run.h5`` (``/snapshots/<name>``).
SNAPSHOT_FIELDS = ("oxygen", "cytarabine", "daunorubicin", "signal", "cxcl12", "cells", "lodged", "integrity",
                   "niche_conditioned")
SnapshotField = Literal["oxygen", "cytarabine", "daunorubicin", "signal", "cxcl12", "cells", "lodged", "integrity",
                        "niche_conditioned"]


class OutputConfig(Section):
    """Snapshots, time series and checkpoints (lean output for sweeps is one switch away)."""

    snapshot_every_hours: float | None = Field(
        24.0, gt=0.0, description="Write the chosen fields to run.h5 every this many simulated hours; unset = never."
    )
    snapshot_fields: list[SnapshotField] = Field(
        default_factory=lambda: ["oxygen", "signal", "cells", "lodged", "integrity"],
        description="Arrays included in each snapshot (drug fields are written only while dosed, cxcl12 only "
        "when transport.cxcl12.enabled, niche_conditioned only with cells.niche_conditioning on).",
    )
    snapshot_precision: Literal["float16", "float32"] = Field(
        "float32", description="Storage type of snapshotted float fields (float16 halves the file)."
    )
    compression_level: int = Field(
        3, ge=0, le=9, description="gzip level for snapshots (gzip + shuffle only: readable by ParaView)."
    )
    checkpoint_every_hours: float | None = Field(
        168.0, gt=0.0, description="Write a checkpoint every this many simulated hours; unset = only at the end."
    )
    checkpoint_every_wall_seconds: float | None = Field(
        3600.0, gt=0.0, description="Also checkpoint every this many wall-clock seconds (long runs)."
    )
    checkpoints_keep: int = Field(
        2, ge=1, le=1000,
        description="How many of the newest checkpoints to keep on disk (archived ones are kept besides).",
    )
    checkpoints_archive: Literal["none", "snapshots", "all"] = Field(
        "none",
        description="Checkpoints kept for good, as branch points for `marrow3d branch --at-day`: 'snapshots' "
        "also writes a checkpoint with every snapshot (t = 0 included) and keeps those; 'all' keeps every "
        "checkpoint written; 'none' keeps only the newest checkpoints_keep.",
    )

    @model_validator(mode="after")
    def _archive_needs_snapshots(self) -> "OutputConfig":
        if self.checkpoints_archive == "snapshots" and self.snapshot_every_hours is None:
            raise ValueError("checkpoints_archive = 'snapshots' needs snapshot_every_hours (snapshots are unset)")
        return self
