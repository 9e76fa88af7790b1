"""``[cells.niche_dependence]`` and ``[cells.niche_conditioning]``: two switchable niche mechanisms.

*Niche-dependent LSC stemness*: an LSC off a niche slot self-renews less
(``free_self_renewal_factor`` x ``cells.fate.lsc_self_renewal_probability``) and, when its
daughter is a blast, turns into a blast too with ``free_differentiation_probability``; lodged
LSCs are unaffected, so the LSC pool is kept mainly on niche slots, as in niche-competition
models of AML (Zhu & Stiehl 2024, doi:10.1038/s41598-024-75429-7: HSCs and LSCs compete for a
joint niche) and as measured for human AML leukemia-initiating cells, which are outcompeted
for niche occupancy by HSPCs and then lose renewal (Boyd 2014, J Exp Med 211:1925,
doi:10.1084/jem.20131300) and for MLL-AF9 (Glait-Santar 2015, Stem Cells 33:3635).

*Leukemia-conditioned niches*: a slot held by a lodged LSC for ``conditioning_hours`` becomes
conditioned: it works for LSCs down to ``conditioned_integrity_floor`` (below the vessel floor
``vessels.integrity_floor`` that switches normal slots off), it accepts no HSC, and it turns
normal again after ``deconditioning_hours`` without a lodged LSC. Leukemic cells remodel the
niche into one that favours them over normal cells (Colmone 2008, Science 322:1861,
doi:10.1126/science.1164390; Schepers 2013, Cell Stem Cell 13:285,
doi:10.1016/j.stem.2013.06.009; Hanoun 2014, Cell Stem Cell 15:365,
doi:10.1016/j.stem.2014.06.020; Duarte 2018, Cell Stem Cell 22:64,
doi:10.1016/j.stem.2017.11.006). None of them measures a conditioning or recovery time per
niche: both times and the floor are assumptions (confidence L), see docs/model.md 4.8.

Both are on by default, with the CXCL12 field and blast maturation (docs/model.md 9.8 gives the
recalibration). Off, the model is bit for bit what it was before they existed.
"""

from __future__ import annotations

from pydantic import Field

from .base import Section

__all__ = ["NicheDependenceConfig", "NicheConditioningConfig", "TIMER_MAX_STEPS"]

#: Largest conditioning or de-conditioning time in cell steps: the per-slot timer is uint16.
TIMER_MAX_STEPS = 65535


class NicheDependenceConfig(Section):
    """``[cells.niche_dependence]``: LSC stemness that depends on being lodged."""

    enabled: bool = Field(
        True,
        description="Switch niche-dependent LSC stemness on (off: a free LSC renews as a lodged one; "
        "the two keys below are then not used).",
    )
    free_self_renewal_factor: float = Field(
        0.9,
        ge=0.0,
        le=1.0,
        description="Multiplier of cells.fate.lsc_self_renewal_probability for an LSC off a niche "
        "(niche-competition models, Zhu & Stiehl 2024; value an assumption, calibrated with the other "
        "niche mechanisms and blast maturation on, docs/model.md 9.8).",
    )
    free_differentiation_probability: float = Field(
        0.25,
        ge=0.0,
        le=1.0,
        description="P(an LSC off a niche whose daughter is a blast turns into a blast as well: "
        "LSC -> blast + blast); with the factor 0.9 a free LSC division gains 0.59 LSC on average "
        "against 0.75 for a lodged one (assumption, calibrated; Boyd 2014: niche-deprived "
        "L-ICs lose renewal).",
    )

    def kernel_values(self) -> tuple[float, float]:
        """(free self-renewal factor, free differentiation probability) the kernels use:
        (1, 0) when off, which is exactly the niche-independent rule."""
        if not self.enabled:
            return 1.0, 0.0
        return self.free_self_renewal_factor, self.free_differentiation_probability


class NicheConditioningConfig(Section):
    """``[cells.niche_conditioning]``: niche slots remodelled by the LSCs that hold them."""

    enabled: bool = Field(
        True, description="Switch leukemia-conditioned niche slots on (off: no slot is ever conditioned)."
    )
    conditioning_hours: float = Field(
        168.0,
        gt=0.0,
        le=1e5,
        description="Hours a slot must be held by a lodged LSC without a break to become conditioned "
        "(assumption: leukemic remodelling of the niche takes weeks, Schepers 2013, Duarte 2018; no "
        "per-niche time is measured).",
    )
    deconditioning_hours: float = Field(
        336.0,
        gt=0.0,
        le=1e5,
        description="Hours a conditioned slot must be without a lodged LSC to turn normal again "
        "(assumption: niche recovery after leukemia is slower than its remodelling, Duarte 2018; "
        "no per-niche time is measured).",
    )
    conditioned_integrity_floor: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="Vessel integrity down to which a conditioned slot still works for LSCs "
        "(hypoxia-tolerant leukemic niche; assumption, below vessels.integrity_floor).",
    )

    def timer_steps(self, hours: float, dt_hours: float) -> int:
        """Cell steps of ``hours`` at steps of ``dt_hours``: ceil, at least 1."""
        import math

        return max(1, int(math.ceil(hours / dt_hours - 1e-6)))
