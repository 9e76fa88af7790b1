"""``[stages]``: thresholds that name the disease stage (Bernasconi & Borsani 2019).

pre-leukemic (0) -> permissive (1) -> self-reinforcing (2), from the time series:

* permissive: leukemic cells (LSC + blast) are established, i.e. at least
  ``permissive_leukemic_fraction`` of marrow cells;
* self-reinforcing: the niche has been remodelled - mean arteriole integrity at or below
  ``reinforcing_arteriole_integrity``, or at least ``reinforcing_conditioned_share`` of the
  niche slots leukemia-conditioned (``[cells.niche_conditioning]``, Schepers 2013: a
  "self-reinforcing leukemic niche") - while leukemic cells are at least
  ``reinforcing_leukemic_fraction`` of marrow cells.

The stage is computed from the current state at every step; after therapy it can fall back.
"""

from __future__ import annotations

from pydantic import Field

from .base import Section

__all__ = ["StagesConfig"]


class StagesConfig(Section):
    """Disease-stage thresholds (assumptions, documented in docs/model.md)."""

    permissive_leukemic_fraction: float = Field(
        0.05, gt=0.0, lt=1.0, description="Leukemic share of marrow cells that marks an established leukemia."
    )
    reinforcing_leukemic_fraction: float = Field(
        0.3, gt=0.0, lt=1.0, description="Leukemic share of marrow cells needed for the self-reinforcing stage."
    )
    reinforcing_arteriole_integrity: float = Field(
        0.8, gt=0.0, lt=1.0, description="Mean arteriole integrity at or below which the endosteum counts as remodelled."
    )
    reinforcing_conditioned_share: float = Field(
        0.2,
        gt=0.0,
        le=1.0,
        description="Share of all niche slots leukemia-conditioned at or above which the niche counts as remodelled "
        "(assumption; only reached with cells.niche_conditioning on).",
    )
    endosteal_band_um: float = Field(
        100.0, gt=0.0, description="Marrow within this distance of bone is the endosteal region of the metrics."
    )
