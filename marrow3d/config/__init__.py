"""Typed, validated configuration of a marrow3d run.

A run is configured by one TOML file whose top-level tables are the sections below. Every value
has a default (the embedded default config, ``configs/default.toml``), units are in the key
names, and unknown keys are errors that suggest the closest name.

Examples
--------
>>> from marrow3d.config import load_config
>>> cfg = load_config(None, ["run.days=2", "domain.shape_voxels=[32, 32, 32]"])
>>> cfg.run.days
2.0
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from .anatomy import AnatomyConfig, DomainConfig
from .base import Section
from .cells import CellsConfig
from .loader import apply_overrides, default_config_text, parse_toml_text, read_toml, to_toml, validate_dict
from .output import OutputConfig
from .run import RunConfig
from .stages import StagesConfig
from .therapy import TherapyConfig
from .transport import TransportConfig
from .vessels import VesselsConfig

__all__ = [
    "MAX_CELL_STEPS",
    "SimulationConfig",
    "load_config",
    "config_from_toml_text",
    "to_toml",
    "Section",
]


#: Most cell steps one run may take (``run.days * 24 / run.cell_step_hours``). Ten years at
#: 1 h steps is 87,600 steps; a million steps is days of compute even on a small grid, so a
#: larger count is a typo in a unit (``cell_step_hours = 1e-6``), refused before any work.
MAX_CELL_STEPS = 1_000_000


class SimulationConfig(Section):
    """The whole configuration of one run (one TOML file)."""

    run: RunConfig = Field(default_factory=RunConfig, description="Seed, duration, backend.")
    domain: DomainConfig = Field(default_factory=DomainConfig, description="Grid and geometry kind.")
    anatomy: AnatomyConfig = Field(default_factory=AnatomyConfig, description="Anatomy generator.")
    transport: TransportConfig = Field(default_factory=TransportConfig, description="Fields and solver.")
    cells: CellsConfig = Field(default_factory=CellsConfig, description="Cell dynamics.")
    vessels: VesselsConfig = Field(default_factory=VesselsConfig, description="Vessel remodeling.")
    therapy: TherapyConfig = Field(default_factory=TherapyConfig, description="Dosing schedule.")
    stages: StagesConfig = Field(default_factory=StagesConfig, description="Disease-stage thresholds.")
    output: OutputConfig = Field(default_factory=OutputConfig, description="What is written, when.")

    @model_validator(mode="after")
    def _consistent(self) -> "SimulationConfig":
        o2 = self.transport.oxygen
        if o2.severe_hypoxic_mmHg >= o2.hypoxic_mmHg:
            raise ValueError(
                "transport.oxygen.severe_hypoxic_mmHg must be below transport.oxygen.hypoxic_mmHg"
            )
        # the step count first: an absurd step length is the error to name, not its consequences
        steps = self.n_cell_steps
        if steps > MAX_CELL_STEPS:
            raise ValueError(
                f"run.days = {self.run.days:g} with run.cell_step_hours = {self.run.cell_step_hours:g} "
                f"means {steps:,} cell steps, more than the {MAX_CELL_STEPS:,} one run may take; "
                "lengthen run.cell_step_hours or shorten run.days"
            )
        nc = self.cells.niche_conditioning
        if nc.enabled:
            from .niche_mechanisms import TIMER_MAX_STEPS

            for key in ("conditioning_hours", "deconditioning_hours"):
                n = nc.timer_steps(getattr(nc, key), self.run.cell_step_hours)
                if n > TIMER_MAX_STEPS:
                    raise ValueError(
                        f"cells.niche_conditioning.{key} = {getattr(nc, key):g} h is {n:,} cell steps of "
                        f"run.cell_step_hours = {self.run.cell_step_hours:g}; at most {TIMER_MAX_STEPS:,} "
                        "(the per-slot timer is 16 bits)"
                    )
            if nc.conditioned_integrity_floor > self.vessels.integrity_floor:
                raise ValueError(
                    "cells.niche_conditioning.conditioned_integrity_floor must not exceed "
                    "vessels.integrity_floor (a conditioned slot works down to a lower integrity)"
                )
        return self

    @property
    def n_cell_steps(self) -> int:
        """Cell steps of a run from t = 0 to ``run.days``."""
        import math

        return int(math.ceil(self.run.days * 24.0 / self.run.cell_step_hours - 1e-9))

    def to_toml(self) -> str:
        """The fully resolved config as TOML (round-trips through :func:`load_config`)."""
        return to_toml(self)


def config_from_toml_text(text: str, source: str = "config") -> SimulationConfig:
    """Validate a TOML string (e.g. the ``config_toml`` stored in a run file)."""
    return validate_dict(SimulationConfig, parse_toml_text(text, source), source)  # type: ignore[return-value]


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> SimulationConfig:
    """Load a config file (or the embedded default), apply overrides, validate.

    Parameters
    ----------
    path : str or Path, optional
        A TOML file. ``None`` uses the embedded default config. Keys missing from the file take
        their defaults.
    overrides : sequence of str
        ``section.key=value`` strings (the CLI's ``--set``), applied in order.

    Returns
    -------
    SimulationConfig

    Raises
    ------
    ConfigError
        One line naming the key, the value and what is allowed.
    """
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    if path is None:
        data: dict[str, Any] = tomllib.loads(default_config_text())
        source = "default config"
    else:
        data = read_toml(path)
        source = str(path)
    if overrides:
        data = apply_overrides(data, overrides)
        source = f"{source} (with --set overrides)"
    # A partial table keeps the defaults of the keys it does not name: setting
    # transport.oxygen.blood_pO2_mmHg.arteriole must not zero the sinusoid value.
    data = _merge(SimulationConfig().model_dump(mode="json", exclude_none=True), data)
    return validate_dict(SimulationConfig, data, source)  # type: ignore[return-value]


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursively overlay ``update`` on ``base`` (tables merge, other values replace)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
