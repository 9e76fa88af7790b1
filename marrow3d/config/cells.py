"""``[cells]``: lattice cell dynamics (death, division, fates, drug kill, niches, egress).

Rates are per day or per hour as their names say; :meth:`CellsConfig.kernel_params` converts
them to the per-hour table the kernels read (``marrow3d.kernels.cells_params``). Sources are cited
by author and year (docs/model.md lists them); *assumption* marks our own choices.

Calibration of the defaults (the values marked *calibrated*), made in the integrated model
with its solved O2 field and CXCL12 field (tests/test_calibration.py, docs/model.md section 9):
blasts divide every 40 h (human median 48 h, Raza 1991; the mouse MLL-AF9 leukemia is faster)
but only six times after they leave the LSC (``[cells.blast_maturation]``), then die within
about a day; LSCs cycle at the blast rate and self-renew with probability 0.75 on a niche (x 0.9
off one, which may also differentiate), so the LSC pool carries the leukemia, about 1 in 4
leukemic cells. A crowded leukemic daughter displaces a neighbouring progenitor, and blasts and
free stem cells hop (swapping with progenitors) so a clone spreads instead of growing only at
its surface. From 4 LSCs in the 32^3 test box, leukemic cells pass 80% of marrow cells on days
23-28 (seeds 1-3), inside the MLL-AF9 window of 3-5 weeks (recipients moribund by week 4, Blood
2013, 122:2888).
"""

from __future__ import annotations

from pydantic import Field, model_validator

from .base import Section
from .blast_maturation import BlastMaturationConfig
from .niche_mechanisms import NicheConditioningConfig, NicheDependenceConfig
from .transport import PerCellType

__all__ = [
    "DivisionConfig",
    "FateConfig",
    "DrugKillConfig",
    "NicheDynamicsConfig",
    "EgressConfig",
    "InitialCellsConfig",
    "CellsConfig",
]

_HOURS_PER_DAY = 24.0


class DivisionConfig(Section):
    """Division rates and their oxygen dependence."""

    hsc_rate_per_day: float = Field(
        0.05, ge=0.0, le=10.0, description="HSC division rate, active HSCs 1/20 d (Wilson 2008; Shepherd 2007: once per 2.5 weeks)."
    )
    progenitor_rate_per_day: float = Field(
        1.0, ge=0.0, le=24.0, description="Progenitor division rate, transit amplification (assumption)."
    )
    progenitor_max_generation: int = Field(
        8, ge=1, le=254, description="Divisions before a progenitor is mature and stops dividing (assumption)."
    )
    blast_cycle_time_hours: float = Field(
        40.0,
        gt=0.0,
        le=1000.0,
        description="Blast cell-cycle time Tc: human AML median 48 h, range 11.5-211 h (Raza 1991); "
        "calibrated to 40 h so a few LSCs take over a mouse marrow in 3-5 weeks (MLL-AF9, PMC3799001).",
    )
    lsc_fraction_of_blast_rate: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="LSC division rate as a fraction of the blast rate: 10-25% in human AML (assumption; LSCs "
        "mostly quiescent, Jordan & Guzman 2004); calibrated to 100% for the mouse MLL-AF9 time course, which "
        "with blast maturation on is carried by the LSCs (MLL-AF9 LSCs are GMP-like, frequent and cycling, Krivtsov 2006).",
    )
    s_phase_hours: float = Field(
        12.0, gt=0.0, le=1000.0, description="S-phase duration Ts, median 12 h (Raza 1991)."
    )
    lodged_division_multiplier: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Division-rate factor of lodged stem cells: niche-induced quiescence (Kunisaki 2013, qualitative; assumption).",
    )
    hif_p50_mmHg: float = Field(
        13.0, gt=0.0, le=100.0, description="Half-maximal pO2 of the HIF response h(P) (Jiang 1996: 11-15 mmHg)."
    )
    hif_hill: float = Field(3.0, gt=0.0, le=10.0, description="Hill exponent of h(P) (assumption: HIF-1 rises steeply below its half-maximum, Jiang 1996).")
    normal_hypoxia_sensitivity: float = Field(
        0.8,
        ge=0.0,
        le=1.0,
        description="Fractional slow-down of normal-cell division at full HIF response (assumption).",
    )
    leukemic_hypoxia_sensitivity: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="Same for leukemic cells, which tolerate hypoxia (Konopleva ASH 2014, qualitative; assumption).",
    )

    @model_validator(mode="after")
    def _s_within_cycle(self) -> "DivisionConfig":
        if self.s_phase_hours > self.blast_cycle_time_hours:
            raise ValueError("s_phase_hours must not exceed blast_cycle_time_hours")
        return self


class FateConfig(Section):
    """Daughter fates and competition."""

    hsc_self_renewal_probability: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="P(an HSC daughter is an HSC) when a free working niche slot is adjacent to take it (assumption).",
    )
    lsc_self_renewal_probability: float = Field(
        0.75,
        ge=0.0,
        le=1.0,
        description="P(an LSC daughter is an LSC), above the HSC's (Stiehl & Marciniak-Czochra, arXiv:1907.02842: LSC self-renewal drives clonal selection; assumption). "
        "Calibrated so the LSC pool expands and competes visibly for niches, as MLL-AF9's frequent LSCs do (Krivtsov 2006).",
    )
    lsc_displacement_probability: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="P(an LSC daughter with no free slot next to it takes a neighbouring HSC's niche slot) (assumption).",
    )
    progenitor_displacement_probability: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="P(a leukemic daughter (blast, or LSC without a slot to take) with no empty neighbour displaces a neighbouring progenitor) (assumption, calibrated).",
    )

    @model_validator(mode="after")
    def _lsc_above_hsc(self) -> "FateConfig":
        if self.lsc_self_renewal_probability <= self.hsc_self_renewal_probability:
            raise ValueError(
                "lsc_self_renewal_probability must be above hsc_self_renewal_probability "
                "(LSCs self-renew more than HSCs: docs/model.md section 4.4)"
            )
        return self


class DrugKillConfig(Section):
    """Drug kill p = 1 - exp(-kmax C/(EC50 + C) f dt) of cycling cells only.

    Cytarabine uses the S-phase fraction f_S = min(1, r_div Ts); daunorubicin the cycling
    fraction f_c = min(1, r_div Tc); r_div includes the O2 and lodging factors, so quiescent
    and hypoxic cells are spared.
    """

    cytarabine_kmax_per_day: float = Field(
        3.0, ge=0.0, le=100.0, description="Maximal ara-C kill rate of S-phase cells, 1-3/day (kill form Jusko 1973; the rate is an assumption)."
    )
    cytarabine_ec50_uM: float = Field(
        0.1, gt=0.0, le=1000.0, description="Ara-C half-maximal concentration (~0.1 uM, an estimate within 0.01-1 uM; UNVERIFIED for blasts)."
    )
    cytarabine_division_arrest: float = Field(
        0.8,
        ge=0.0,
        le=1.0,
        description="Largest fraction of divisions cytarabine blocks (ara-CTP halts DNA synthesis, so S-phase "
        "cells stall rather than divide; SmPC mechanism), scaled by C/(EC50 + C). Assumption, calibrated so "
        "7+3 cuts blasts by 2-3 logs (an assumption consistent with CR rates of 57-83%, Fernandez 2009, Lee 2011).",
    )
    daunorubicin_kmax_per_day: float = Field(
        1.5, ge=0.0, le=100.0, description="Maximal daunorubicin kill rate of cycling cells (assumption)."
    )
    daunorubicin_ec50_uM: float = Field(
        0.02, gt=0.0, le=1000.0,
        description="Daunorubicin half-maximal extracellular concentration; cells accumulate the drug far "
        "above the medium, so nM levels kill (AML lines: IC50 ~10-100 nM; assumption).",
    )
    lodged_protection_fraction: float = Field(
        0.8,
        ge=0.0,
        le=1.0,
        description="Fraction of the drug kill rate removed for lodged cells (stromal protection, Nervi 2009 qualitative; assumption).",
    )


class NicheDynamicsConfig(Section):
    """Niche release, re-adhesion and the random walk of free stem cells."""

    release_rate_per_day: float = Field(
        0.02,
        ge=0.0,
        le=24.0,
        description="Release (egress) rate of lodged stem cells, 1-5%/day (Bhattacharya 2009).",
    )
    readhesion_time_hours: float = Field(
        12.0,
        gt=0.0,
        le=1e4,
        description="Mean time before a released cell may lodge again; AMD3100 effect gone by 12 h (Nervi 2009; assumption).",
    )
    walk_rate_per_hour: float = Field(
        1.0,
        ge=0.0,
        le=100.0,
        description="Hop rate of free stem cells to a face neighbour, empty or holding a progenitor (swap) (assumption).",
    )
    blast_walk_rate_per_hour: float = Field(
        1.0,
        ge=0.0,
        le=100.0,
        description="Hop rate of blasts, same moves: leukemic cells migrate through the marrow (Hawkins 2016; assumption).",
    )


class EgressConfig(Section):
    """Cells leaving the marrow through sinusoids."""

    mature_exit_rate_per_day: float = Field(
        1.0,
        ge=0.0,
        le=24.0,
        description="Exit rate of mature progenitors next to a sinusoid (assumption).",
    )
    mature_exit_far_factor: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="Exit-rate factor for mature progenitors not next to a sinusoid: migration to one (assumption).",
    )
    blast_blood_egress_rate_per_day: float = Field(
        0.1,
        ge=0.0,
        le=24.0,
        description="Egress rate to blood of blasts next to a sinusoid; counted as circulating blasts (assumption).",
    )


class InitialCellsConfig(Section):
    """Initial populations (placed deterministically from the run seed)."""

    hsc_niche_fraction: float = Field(
        0.7,
        ge=0.0,
        le=1.0,
        description="Fraction of working niche slots holding a lodged HSC; occupancy < 100% (Shimoto 2017; assumption).",
    )
    progenitor_density: float = Field(
        0.8,
        ge=0.0,
        le=1.0,
        description="Fraction of non-niche marrow voxels holding a progenitor (assumption; red marrow ~60% hematopoietic, BioNumbers 117068).",
    )
    lsc_count: int = Field(
        4, ge=0, description="Free LSCs seeded at random marrow voxels (MLL-AF9 transfers with 4 cells, Krivtsov 2006)."
    )


class CellsConfig(Section):
    """``[cells]``: the cell lattice rules."""

    death_rate_per_day: PerCellType = Field(
        default_factory=lambda: PerCellType(hsc=0.002, progenitor=0.02, lsc=0.01, blast=0.02),
        description="Base death rate by type (assumption: HSCs rarely die; blast value calibrated, see module doc).",
    )
    severe_hypoxia_death_rate_per_day: PerCellType = Field(
        default_factory=lambda: PerCellType(hsc=0.5, progenitor=0.5, lsc=0.0, blast=0.0),
        description="Extra death rate below the severe threshold; leukemic cells tolerate hypoxia (assumption).",
    )
    severe_hypoxia_threshold_mmHg: float = Field(
        3.0, ge=0.0, le=100.0, description="pO2 below which severe-hypoxia death applies (Secomb 1995)."
    )
    division: DivisionConfig = Field(default_factory=DivisionConfig, description="Division rates.")
    fate: FateConfig = Field(default_factory=FateConfig, description="Daughter fates, competition.")
    drugs: DrugKillConfig = Field(default_factory=DrugKillConfig, description="Drug kill.")
    niche: NicheDynamicsConfig = Field(
        default_factory=NicheDynamicsConfig, description="Niche release, re-adhesion, walk."
    )
    egress: EgressConfig = Field(default_factory=EgressConfig, description="Exit through sinusoids.")
    blast_maturation: BlastMaturationConfig = Field(
        default_factory=BlastMaturationConfig,
        description="Finite blast proliferative lifetime (switch, on by default).",
    )
    niche_dependence: NicheDependenceConfig = Field(
        default_factory=NicheDependenceConfig, description="Niche-dependent LSC stemness (switch, on by default)."
    )
    niche_conditioning: NicheConditioningConfig = Field(
        default_factory=NicheConditioningConfig,
        description="Leukemia-conditioned niche slots (switch, on by default).",
    )
    initial: InitialCellsConfig = Field(
        default_factory=InitialCellsConfig, description="Initial populations."
    )

    def kernel_params(self) -> dict[str, object]:
        """The kernels' parameter table (per hour, mmHg, uM); see ``kernels.cells_params``."""
        day = _HOURS_PER_DAY
        dv, fa, dr, ni, eg = self.division, self.fate, self.drugs, self.niche, self.egress
        blast_per_h = 1.0 / dv.blast_cycle_time_hours
        free_factor, free_diff = self.niche_dependence.kernel_values()
        nc = self.niche_conditioning
        bm_on, bm_gen, bm_death = self.blast_maturation.kernel_values()
        per_type = lambda p: {"hsc": p.hsc, "progenitor": p.progenitor, "lsc": p.lsc, "blast": p.blast}  # noqa: E731
        return {
            "death_rate_per_hour": {k: v / day for k, v in per_type(self.death_rate_per_day).items()},
            "division_rate_per_hour": {
                "hsc": dv.hsc_rate_per_day / day,
                "progenitor": dv.progenitor_rate_per_day / day,
                "lsc": dv.lsc_fraction_of_blast_rate * blast_per_h,
                "blast": blast_per_h,
            },
            "hypoxia_division_sensitivity": {
                "hsc": dv.normal_hypoxia_sensitivity,
                "progenitor": dv.normal_hypoxia_sensitivity,
                "lsc": dv.leukemic_hypoxia_sensitivity,
                "blast": dv.leukemic_hypoxia_sensitivity,
            },
            "severe_hypoxia_death_rate_per_hour": {
                k: v / day for k, v in per_type(self.severe_hypoxia_death_rate_per_day).items()
            },
            # Only stem cells lodge; the other entries are never read.
            "lodged_division_multiplier": {
                "hsc": dv.lodged_division_multiplier,
                "progenitor": 1.0,
                "lsc": dv.lodged_division_multiplier,
                "blast": 1.0,
            },
            "hif_p50_mmHg": dv.hif_p50_mmHg,
            "hif_hill": dv.hif_hill,
            "severe_hypoxia_threshold_mmHg": self.severe_hypoxia_threshold_mmHg,
            "s_phase_hours": dv.s_phase_hours,
            "cycle_hours": dv.blast_cycle_time_hours,
            "cytarabine_kmax_per_hour": dr.cytarabine_kmax_per_day / day,
            "cytarabine_ec50_uM": dr.cytarabine_ec50_uM,
            "cytarabine_division_arrest": dr.cytarabine_division_arrest,
            "daunorubicin_kmax_per_hour": dr.daunorubicin_kmax_per_day / day,
            "daunorubicin_ec50_uM": dr.daunorubicin_ec50_uM,
            "lodged_drug_protection": dr.lodged_protection_fraction,
            "hsc_self_renewal_probability": fa.hsc_self_renewal_probability,
            "lsc_self_renewal_probability": fa.lsc_self_renewal_probability,
            "lsc_free_self_renewal_factor": free_factor,
            "lsc_free_differentiation_probability": free_diff,
            "lsc_displacement_probability": fa.lsc_displacement_probability,
            "progenitor_displacement_probability": fa.progenitor_displacement_probability,
            "progenitor_max_generation": float(dv.progenitor_max_generation),
            "mature_exit_rate_per_hour": eg.mature_exit_rate_per_day / day,
            "mature_exit_far_factor": eg.mature_exit_far_factor,
            "niche_release_rate_per_hour": ni.release_rate_per_day / day,
            "readhesion_rate_per_hour": 1.0 / ni.readhesion_time_hours,
            "stem_walk_rate_per_hour": ni.walk_rate_per_hour,
            "blast_walk_rate_per_hour": ni.blast_walk_rate_per_hour,
            "blast_egress_rate_per_hour": eg.blast_blood_egress_rate_per_day / day,
            "blast_maturation_enabled": bm_on,
            "blast_max_generation": bm_gen,
            "postmitotic_blast_death_rate_per_hour": bm_death,
            "niche_conditioning_enabled": 1.0 if nc.enabled else 0.0,
            "conditioning_hours": nc.conditioning_hours,
            "deconditioning_hours": nc.deconditioning_hours,
            "conditioned_integrity_floor": nc.conditioned_integrity_floor,
        }
