"""``[cells.blast_maturation]``: blasts with a finite number of divisions (a leukemic hierarchy).

AML is organised as a hierarchy: only a minority of leukemic cells can initiate the disease
in a recipient (Bonnet & Dick 1997, Nat Med 3:730, doi:10.1038/nm0797-730), and below the
leukemic stem cells the blasts have a limited and heterogeneous proliferative capacity
(Hope, Jin & Dick 2004, Nat Immunol 5:738, doi:10.1038/ni1080). Mathematical models of AML
therefore give the non-stem leukemic compartments a finite number of divisions and a
post-mitotic compartment that dies (Stiehl & Marciniak-Czochra 2012, Math Model Nat Phenom
7:166; volume and page recalled, UNVERIFIED).

Switched on, a blast made by an LSC starts at generation 0; every blast division moves mother
and daughter one generation up; a blast at ``max_divisions`` no longer divides (so no drug
that needs cycling kills it) and dies at ``postmitotic_death_rate_per_day`` on top of the
blast base rate. On by default (calibrated with the niche mechanisms, docs/model.md 9.8). Off,
a blast divides without limit, and the model is bit for bit what it was without the section.
"""

from __future__ import annotations

from pydantic import Field

from .base import Section

__all__ = ["BlastMaturationConfig"]


class BlastMaturationConfig(Section):
    """``[cells.blast_maturation]``: the blasts' proliferative lifetime."""

    enabled: bool = Field(
        True,
        description="Switch the finite blast proliferative lifetime on (off: blasts divide without limit).",
    )
    max_divisions: int = Field(
        6,
        ge=1,
        le=254,
        description="Divisions a blast lineage makes after it leaves the LSC before it is post-mitotic "
        "(hierarchical AML, Bonnet & Dick 1997; Hope 2004: limited blast proliferation; the number is "
        "an assumption, calibrated to the LSC frequency, docs/model.md 9.8).",
    )
    postmitotic_death_rate_per_day: float = Field(
        1.0,
        ge=0.0,
        le=24.0,
        description="Extra death rate of post-mitotic blasts, on top of the blast base death rate "
        "(assumption, calibrated: post-mitotic leukemic cells turn over in days, as the death "
        "compartment of Stiehl & Marciniak-Czochra 2012).",
    )

    def kernel_values(self) -> tuple[float, float, float]:
        """(enabled 0/1, max generation, post-mitotic death rate per hour) for the kernels:
        (0, 255, 0) when off, under which a blast's generation never changes."""
        if not self.enabled:
            return 0.0, 255.0, 0.0
        return 1.0, float(self.max_divisions), self.postmitotic_death_rate_per_day / 24.0
