"""``[transport.*]``: oxygen, drug and remodeling-signal fields and their solver.

Every field obeys the same quasi-steady operator (docs/model.md section 2)::

    div(D grad u) - k u - R(u) + E (u_blood - u) + S = 0

Units: lengths in um, transport rates per minute, O2 in mmHg, drugs in uM, the remodeling
signal in arbitrary signal units (su). ``E`` = exchange_per_min[class] x perfusion/permeability
factor of the vessel's integrity (see ``[transport.exchange]``).
"""

from __future__ import annotations

from pydantic import Field

from .base import Section

__all__ = [
    "PerCellType",
    "PerVesselClass",
    "OxygenConfig",
    "DrugConfig",
    "SignalConfig",
    "ExchangeConfig",
    "SolverConfig",
    "Cxcl12Config",
    "TransportConfig",
    "DRUG_AGENTS",
]

#: Agents with a tissue concentration field (plerixafor and deferoxamine act through plasma PK).
DRUG_AGENTS = ("cytarabine", "daunorubicin")


class PerCellType(Section):
    """A value for each cell type (units given by the owning field's name)."""

    hsc: float = Field(0.0, ge=0.0, description="Normal hematopoietic stem cell.")
    progenitor: float = Field(0.0, ge=0.0, description="Normal progenitor (all generations).")
    lsc: float = Field(0.0, ge=0.0, description="Leukemic stem cell.")
    blast: float = Field(0.0, ge=0.0, description="Leukemic blast.")

    def as_table(self) -> list[float]:
        """Values indexed by cell code (EMPTY, HSC, PROGENITOR, LSC, BLAST)."""
        return [0.0, self.hsc, self.progenitor, self.lsc, self.blast]


class PerVesselClass(Section):
    """A value for each vessel class."""

    arteriole: float = Field(0.0, ge=0.0, description="Endosteal / transition arterioles.")
    sinusoid: float = Field(0.0, ge=0.0, description="Sinusoids and the central sinus.")

    def as_table(self) -> list[float]:
        """Values indexed by vessel class (none, arteriole, sinusoid)."""
        return [0.0, self.arteriole, self.sinusoid]


class ExchangeConfig(Section):
    """How vessel integrity changes exchange: ``E = E0 * I * (1 + leak * (1 - I))``.

    Perfusion falls with integrity I (the factor I); permeability rises as the vessel leaks
    (the factor 1 + leak (1 - I)). A vessel under ``[vessels].integrity_floor`` exchanges
    nothing.
    """

    leak: PerVesselClass = Field(
        default_factory=lambda: PerVesselClass(arteriole=0.0, sinusoid=3.0),
        description="Permeability gain as integrity falls. Sinusoids leak (Passaro 2017: AML sinusoids x2-5 "
        "leakier; assumption); lost endosteal arterioles mainly lose perfusion (Duarte 2018), so their gain is 0.",
    )


class OxygenConfig(Section):
    """Oxygen partial pressure field (mmHg) with Michaelis-Menten consumption."""

    diffusivity_um2_per_min: float = Field(
        1.2e5, gt=0.0, description="O2 diffusivity in marrow and blood (2000 um^2/s, water at 25 C: Crank, The Mathematics of Diffusion)."
    )
    diffusivity_map: str | None = Field(
        None,
        description="Optional per-voxel diffusivity (um^2/min): a .npy file or file.h5:/dataset shaped like the grid.",
    )
    solubility_uM_per_mmHg: float = Field(
        1.3, gt=0.0, description="Bunsen solubility converted to uM/mmHg (Christoforides 1969)."
    )
    km_mmHg: float = Field(1.0, gt=0.0, description="Michaelis-Menten constant of O2 uptake (modelling convention).")
    consumption_amol_per_cell_s: PerCellType = Field(
        default_factory=lambda: PerCellType(hsc=1.5, progenitor=5.0, lsc=2.0, blast=10.0),
        description="Maximal O2 consumption per cell (Wagner 2011: ~2.5 amol/s average; cycling 1.5-5x quiescent).",
    )
    blood_pO2_mmHg: PerVesselClass = Field(
        default_factory=lambda: PerVesselClass(arteriole=40.0, sinusoid=16.0),
        description="Intravascular pO2 by class: arterial blood above the tissue's (Spencer 2014: tissue < 32 mmHg, "
        "minimum ~10 mmHg, endosteum less hypoxic). Calibrated: tissue pO2 stays < 32 mmHg, the deep 5th percentile "
        "near 10 mmHg, endosteal band above central marrow (docs/model.md, Calibration).",
    )
    exchange_per_min: PerVesselClass = Field(
        default_factory=lambda: PerVesselClass(arteriole=400.0, sinusoid=400.0),
        description="Exchange rate E0 of a healthy vessel voxel for O2 (perfusion-limited; assumption).",
    )
    decay_per_min: float = Field(0.0, ge=0.0, description="Bulk O2 decay (0: consumption only).")
    hypoxic_mmHg: float = Field(10.0, gt=0.0, description="'Hypoxic' threshold for metrics (the lowest mouse-marrow pO2 measured is 9.9 mmHg, Spencer 2014; HIF-1 is half-maximal at 11-15 mmHg, Jiang 1996).")
    severe_hypoxic_mmHg: float = Field(3.0, gt=0.0, description="'Severe' hypoxia threshold (Secomb 1995).")


class DrugConfig(Section):
    """A chemotherapy field (uM): linear decay, linear uptake by cells, exchange with plasma."""

    diffusivity_um2_per_min: float = Field(1.2e4, gt=0.0, description="Tissue diffusivity.")
    decay_per_min: float = Field(0.0, ge=0.0, description="Tissue degradation rate.")
    uptake_per_min: PerCellType = Field(
        default_factory=lambda: PerCellType(hsc=0.5, progenitor=1.0, lsc=0.5, blast=1.0),
        description="Linear uptake (transport into cells and intracellular trapping) by cells of each type; "
        "quiescent stem cells take up half as much (assumption).",
    )
    exchange_per_min: PerVesselClass = Field(
        default_factory=lambda: PerVesselClass(arteriole=50.0, sinusoid=20.0),
        description="Extravasation rate of a healthy vessel voxel, P S/V with one small-molecule wall "
        "permeability P = 160 um/min (Eikenberry 2009 tumour-cord value) for both classes: a 5-um arteriole "
        "fills one 10-um voxel (S/V 0.31 /um -> 50 /min), a 10-um sinusoid tube spreads its wall over about "
        "5 voxels per section (S/V 0.13 /um -> 20 /min). Leakiness is added by transport.exchange.leak.",
    )


def _cytarabine() -> DrugConfig:
    return DrugConfig(
        diffusivity_um2_per_min=1.2e4,  # Stokes-Einstein estimate (Schmidt & Wittrup 2009) with tortuosity
        decay_per_min=0.005,  # cytidine deaminase activity in tissue (assumption)
    )


def _daunorubicin() -> DrugConfig:
    return DrugConfig(
        diffusivity_um2_per_min=7.0e3,  # doxorubicin tumour-cord model (Eikenberry 2009)
        decay_per_min=0.0,
        # Saturable uptake Vmax/KE at 1e12 cells/L (doxorubicin tumour-cord model,
        # Eikenberry 2009) is ~13 /min per cell-filled voxel: anthracyclines reach only ~25 um from a vessel.
        uptake_per_min=PerCellType(hsc=5.0, progenitor=10.0, lsc=5.0, blast=10.0),
    )


class DrugsConfig(Section):
    """One field per chemotherapy agent; solved only while the agent is present in plasma."""

    cytarabine: DrugConfig = Field(default_factory=_cytarabine, description="Ara-C (S-phase specific).")
    daunorubicin: DrugConfig = Field(default_factory=_daunorubicin, description="Anthracycline.")


class SignalConfig(Section):
    """Remodeling signal (su): secreted by leukemic cells, decays, washed out by vessels."""

    diffusivity_um2_per_min: float = Field(
        3.0e3, gt=0.0, description="Cytokine-sized molecule in tissue (assumption)."
    )
    decay_per_min: float = Field(0.05, ge=0.0, description="Decay rate (sets a ~250 um range; assumption).")
    secretion_su_per_min: PerCellType = Field(
        default_factory=lambda: PerCellType(lsc=1.0, blast=1.0),
        description="Secretion per cell (Duarte 2018: endosteal AML cells secrete anti-angiogenic cytokines).",
    )
    exchange_per_min: PerVesselClass = Field(
        default_factory=lambda: PerVesselClass(arteriole=0.05, sinusoid=0.2),
        description="Wash-out into blood (blood level 0).",
    )


class SolverConfig(Section):
    """Steady-state multigrid solver settings."""

    tolerance: float = Field(1e-6, gt=0.0, lt=1.0, description="Relative residual to reach.")
    max_iterations: int = Field(200, ge=1, description="Maximum multigrid iterations per solve.")


class Cxcl12Config(Section):
    """CXCL12 chemokine field (nM) and CXCR4 chemotaxis of free stem cells (docs/model.md 2.10).

    ``div(D grad c) - k c + S = 0`` with ``k = ln 2 / half_life_min`` and a perivascular source
    ``S = k * level[class] * I`` in marrow voxels next to a vessel of integrity ``I >= floor``
    (CAR / perivascular stroma, Sugiyama 2006; Ding & Morrison 2013; Greenbaum 2013). Off by
    default: the integrator turns it on after the recalibration of issue 17.
    """

    enabled: bool = Field(True, description="Solve the CXCL12 field and bias the walk of free stem cells up it "
                          "(on by default since the recalibration of docs/model.md 9.8).")
    diffusivity_um2_per_min: float = Field(
        3.0e3, gt=0.0,
        description="Effective tissue diffusivity (50 um^2/s): Stokes-Einstein ~190 um^2/s for an 8 kDa protein "
        "(r_h ~1.7 nm, water at 37 C) / tortuosity^2 (lambda ~1.6, Sykova & Nicholson 2008), lowered further by "
        "heparan-sulfate binding (Amara 1999); assumption, confidence low.",
    )
    half_life_min: float = Field(
        30.0, gt=0.0,
        description="Tissue half-life: N-terminal cleavage by CD26/DPP4 and MMPs inactivates CXCL12 "
        "(Christopherson 2004); order of the serum half-life; assumption, confidence low.",
    )
    uptake_per_min: float = Field(
        0.3, ge=0.0,
        description="First-order receptor-mediated uptake in marrow voxels [1/min], added to the decay there: "
        "CXCR4 internalises bound CXCL12 and ACKR3 (CXCR7) scavenges it (Naumann 2010; Boldajipour 2008). "
        "Order-of-magnitude estimate n R k_int / (N_A Kd) for packed marrow (docs/model.md 2.10); confidence low.",
    )
    source_level_nM: PerVesselClass = Field(
        default_factory=lambda: PerVesselClass(arteriole=10.0, sinusoid=10.0),
        description="Concentration a region made only of stroma on intact vessels of that class would reach "
        "(secretion = k * level per perivascular marrow voxel). Arteriolar and sinusoidal stroma both express "
        "high Cxcl12 (Ding & Morrison 2013; Sugiyama 2006); the level is an assumption, confidence low.",
    )
    cxcr4_kd_nM: float = Field(
        5.0, gt=0.0,
        description="CXCL12 concentration of half CXCR4 occupancy (receptor law of the chemotaxis): low-nanomolar, the "
        "order of published binding constants (UNVERIFIED; assumption).",
    )
    chemotactic_sensitivity: float = Field(
        20.0, ge=0.0, le=60.0,
        description="chi: a walking free stem cell picks direction d with weight exp(chi (1 - f_plx) "
        "(rho(c_d) - rho(c_here))), rho = c / (c + Kd); 0 = unbiased walk (to calibrate; assumption).",
    )


class TransportConfig(Section):
    """All transported fields and the solver."""

    oxygen: OxygenConfig = Field(default_factory=OxygenConfig, description="Oxygen (mmHg).")
    drugs: DrugsConfig = Field(default_factory=DrugsConfig, description="Chemotherapy fields (uM).")
    signal: SignalConfig = Field(default_factory=SignalConfig, description="Remodeling signal (su).")
    cxcl12: Cxcl12Config = Field(default_factory=Cxcl12Config, description="CXCL12 field (nM) and chemotaxis.")
    exchange: ExchangeConfig = Field(default_factory=ExchangeConfig, description="Integrity -> exchange law.")
    solver: SolverConfig = Field(default_factory=SolverConfig, description="Solver settings.")
