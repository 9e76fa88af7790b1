"""``[domain]`` and ``[anatomy]``: the voxel grid and the marrow anatomy generator.

Lengths are in um, densities per mm^3 of marrow, array axes are ``(z, y, x)``. In a femur
domain ``z`` is the bone axis; in a box the bone lies on the low-``z`` face.

Every default below is sourced in ``docs/model.md`` (anatomy table). Values marked
*assumption* or UNVERIFIED there are free parameters: their statistics are measured by
:func:`marrow3d.anatomy.anatomy_stats` and checked against ``LITERATURE_RANGES``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt, model_validator

from .base import Section

__all__ = ["DomainConfig", "AnatomyConfig", "MAX_VOXELS"]

#: Taichi indexes one field with int32: at most 2**31 - 1 elements (stack-notes.md).
MAX_VOXELS = 2**31 - 1


class DomainConfig(Section):
    """The voxel grid: which geometry, how many voxels, how large each is."""

    kind: Literal["box", "femur", "mask"] = Field(
        "box",
        description=(
            "Geometry. 'box': a block of marrow with bone on the low-z face (tests, quick runs); "
            "'femur': a femur-like cylinder segment along z (cortical shell, trabeculae near "
            "z = 0, central sinus on the axis); 'mask': labels imported from mask_path."
        ),
    )
    shape_voxels: tuple[PositiveInt, PositiveInt, PositiveInt] = Field(
        (64, 64, 64),
        description=(
            "Grid size (z, y, x) in voxels; for 'femur' z is the bone axis and the marrow "
            "cylinder is inscribed in the (y, x) cross-section. Ignored for 'mask': the file "
            "decides the shape."
        ),
    )
    voxel_um: float = Field(
        10.0,
        gt=0.0,
        le=50.0,
        description="Voxel edge length in um; 10 um holds one hematopoietic cell (cells ~8-10 um across).",
    )
    origin_um: tuple[float, float, float] = Field(
        (0.0, 0.0, 0.0),
        description="Position (z, y, x) in um of the centre of voxel (0, 0, 0), for output and viewers.",
    )
    mask_path: str | None = Field(
        None,
        description=(
            "Labelled tissue mask for kind='mask': 'file.npy', 'stack.tif'/'stack.tiff' "
            "(pages = z) or 'file.h5:/dataset'; integer labels with the codes of "
            "marrow3d.kernels.codes (0 marrow, 1 bone, 2 arteriole, 3 sinusoid, "
            "4 central sinus, 5 outside)."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> DomainConfig:
        if self.kind == "mask" and not self.mask_path:
            raise ValueError("kind='mask' needs mask_path ('file.npy', 'stack.tif' or 'file.h5:/dataset')")
        if self.kind != "mask" and self.mask_path is not None:
            raise ValueError(
                f"mask_path is set but kind is {self.kind!r}; set kind='mask' or remove mask_path"
            )
        n = self.shape_voxels[0] * self.shape_voxels[1] * self.shape_voxels[2]
        if n > MAX_VOXELS:
            raise ValueError(
                f"domain.shape_voxels = {list(self.shape_voxels)} has {n} voxels; one field holds at most "
                f"{MAX_VOXELS} (int32 indexing)"
            )
        return self


class AnatomyConfig(Section):
    """Parameters of the generated marrow: bone, vessels and niche slots.

    Vessel networks are grown as persistent, branching random walks whose tips fuse with the
    network they meet (anastomosis), then widened to tubes of the configured radius. Their
    density is set by a *spacing* ``s``: centreline length per volume ``L_v = 1 / s^2``
    (parallel tubes ``s`` apart have exactly this density).
    """

    # --- bone ---------------------------------------------------------------------------
    box_bone_thickness_um: float = Field(
        30.0,
        gt=0.0,
        description=(
            "Box only: thickness in um of the bone slab on the low-z face, whose surface is the "
            "endosteum. Bone is no-flux, so a few voxels suffice (assumption)."
        ),
    )
    marrow_radius_fraction: float = Field(
        0.82,
        gt=0.0,
        lt=1.0,
        description=(
            "Femur only: marrow-cavity radius as a fraction of half the smaller cross-section "
            "side. Mouse femoral marrow radius is ~450-500 um (Frassoni 1982, derived): 0.82 "
            "of a 110-voxel (1.1 mm) cross-section at 10 um gives 451 um. The cavity plus the "
            "cortical shell must fit the cross-section (>= 89 voxels at the defaults)."
        ),
    )
    cortical_thickness_um: float = Field(
        80.0,
        gt=0.0,
        description=(
            "Femur only: cortical shell thickness in um outside the marrow cavity. Thinner than "
            "a real mouse cortex (~150-200 um, UNVERIFIED) on purpose: cortex is inert no-flux "
            "tissue and only its endosteal surface matters to the model."
        ),
    )
    trabecular_length_fraction: float = Field(
        0.25,
        ge=0.0,
        le=1.0,
        description=(
            "Femur only: fraction of the length (from z = 0, the metaphyseal end) holding "
            "trabeculae; full density over its first half, fading linearly to zero at its end "
            "(trabecular bone fills the metaphysis, near the end of a long bone)."
        ),
    )
    trabecular_bone_volume_fraction: float = Field(
        0.15,
        ge=0.0,
        lt=0.6,
        description=(
            "Femur only: trabecular bone volume / tissue volume (BV/TV) in the dense part of the "
            "trabecular region. Mouse distal-femur metaphysis ~0.05-0.20 (assumption, UNVERIFIED)."
        ),
    )
    trabecular_thickness_um: float = Field(
        40.0,
        gt=0.0,
        description=(
            "Femur only: mean trabecular plate thickness in um (mouse Tb.Th ~30-50 um, "
            "assumption). With BV/TV it sets the plate spacing (2 x thickness / BV/TV)."
        ),
    )
    central_sinus_radius_um: float = Field(
        40.0,
        gt=0.0,
        description=(
            "Femur only: radius in um of the central sinus along the axis, into which the "
            "sinusoids drain (Grüneboom 2019 describes it; its size is an assumption)."
        ),
    )

    # --- sinusoids ----------------------------------------------------------------------
    sinusoid_radius_um: float = Field(
        10.0,
        gt=0.0,
        description=(
            "Sinusoid tube radius in um: voxels whose centre lies within it of the centreline. "
            "Mouse BM sinusoids ~10-30 um across (working estimate, UNVERIFIED; human 30-70 um)."
        ),
    )
    sinusoid_spacing_um: float = Field(
        48.0,
        gt=0.0,
        description=(
            "Sinusoid spacing in um: centreline length density 1/spacing^2 in the marrow. "
            "Chosen so that most marrow lies within 1-2 cell diameters of a sinusoid "
            "(Gomariz 2018) and the vascular volume fraction stays in the assumed 8-30%."
        ),
    )
    sinusoid_bone_clearance_um: float = Field(
        20.0,
        ge=0.0,
        description=(
            "No sinusoid voxel (centreline or tube) lies within this distance in um of bone, so the "
            "endosteal zone is supplied mainly by the arteriolar / type-H vessels that line it while "
            "type-L sinusoids fill the central marrow (Kusumbe 2014 zonation; the value is an "
            "assumption). At 20 um the two marrow layers on the bone hold no sinusoid; wider "
            "clearances empty the pockets between trabeculae (the Gomariz 2018 range of marrow "
            "within 20 um of a sinusoid fails at 25 um). 0 lets sinusoids touch bone."
        ),
    )
    sinusoid_persistence_length_um: float = Field(
        60.0,
        gt=0.0,
        description=(
            "Persistence length in um of the sinusoid random walk: how straight they run (assumption)."
        ),
    )
    sinusoid_branch_length_um: float = Field(
        60.0,
        gt=0.0,
        description="Mean sinusoid length in um between branch points while the network grows (assumption).",
    )

    # --- arterioles ---------------------------------------------------------------------
    arteriole_radius_um: float = Field(
        5.0,
        gt=0.0,
        description=(
            "Arteriole tube radius in um; mouse BM arterioles are < 10-15 um across (working estimate)."
        ),
    )
    arteriole_spacing_um: float = Field(
        60.0,
        gt=0.0,
        description=(
            "Arteriole spacing in um inside the endosteal band: centreline length density "
            "1/spacing^2 of the band's marrow (assumption; sets the endosteal O2 supply)."
        ),
    )
    arteriole_band_um: float = Field(
        80.0,
        gt=0.0,
        description=(
            "Arterioles run within this distance in um of a bone surface (Kunisaki 2013: "
            "arterioles are endosteal; Bourke 2009: 72% of vessel fragments lie within 100 um "
            "of trabecular bone)."
        ),
    )
    arteriole_persistence_length_um: float = Field(
        150.0,
        gt=0.0,
        description=(
            "Persistence length in um of the arteriole random walk; arterioles run straighter "
            "than sinusoids (assumption)."
        ),
    )
    arteriole_surface_alignment: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description=(
            "Fraction of an arteriole's step component normal to the bone surface removed each "
            "step: 0 = isotropic walk in the band, 1 = strictly parallel to the endosteum."
        ),
    )

    # --- niche slots --------------------------------------------------------------------
    niche_density_per_mm3: float = Field(
        50.0,
        ge=0.0,
        description=(
            "Niche slots (both kinds) per mm^3 of marrow-label volume. ~2e4 HSCs per mouse "
            "(Abkowitz 2002; Busch 2015) in ~4e8 marrow cells (16e9 cells/kg x 25 g) is one "
            "niche per 2e4 cells, the same as the HSC frequency of 1 per 20,000 (PMC5487585). "
            "At one cell per 10-um voxel (1e6 cells/mm^3) that is 50 slots/mm^3; the mouse then "
            "has ~400 mm^3 of marrow at model packing."
        ),
    )
    endosteal_niche_fraction: float = Field(
        0.15,
        ge=0.0,
        le=1.0,
        description=(
            "Fraction of niche slots that are endosteal/arteriolar; the rest are perivascular "
            "(sinusoidal). Endosteal slots never touch a sinusoid, so this is the share of slots "
            "farther than 10 um from one: ~85% of HSCs lie within 10 um of a sinusoid "
            "(Acar 2015), while quiescent HSCs favour endosteal arterioles (Kunisaki 2013)."
        ),
    )
    endosteal_niche_band_um: float = Field(
        100.0,
        gt=0.0,
        description=(
            "Endosteal slots lie on marrow voxels next to an arteriole (and not next to a "
            "sinusoid) within this distance in um of bone (Bourke 2009: the 100-um band)."
        ),
    )
    min_niche_slots_per_kind: int = Field(
        1,
        ge=0,
        description=(
            "At least this many slots of each kind wherever candidate voxels exist, so small "
            "test domains still hold both kinds (a 64^3 box has ~0.2 mm^3 of marrow, ~10 slots)."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> AnatomyConfig:
        if 2.0 * self.sinusoid_radius_um >= self.sinusoid_spacing_um:
            raise ValueError(
                f"sinusoid_radius_um ({self.sinusoid_radius_um}) must be below half of "
                f"sinusoid_spacing_um ({self.sinusoid_spacing_um}), or the tubes fill the marrow"
            )
        if 2.0 * self.arteriole_radius_um >= self.arteriole_spacing_um:
            raise ValueError(
                f"arteriole_radius_um ({self.arteriole_radius_um}) must be below half of "
                f"arteriole_spacing_um ({self.arteriole_spacing_um})"
            )
        if self.arteriole_radius_um >= self.arteriole_band_um:
            raise ValueError(
                f"arteriole_radius_um ({self.arteriole_radius_um}) must be below "
                f"arteriole_band_um ({self.arteriole_band_um})"
            )
        return self
