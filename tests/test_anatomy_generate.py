"""Generated anatomy: config validation, determinism, label and niche invariants."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from marrow3d.anatomy import Anatomy, face_neighbours, generate_anatomy
from marrow3d.anatomy.geometry import bone_distance_um
from marrow3d.config.anatomy import AnatomyConfig, DomainConfig
from marrow3d.errors import ConfigError
from marrow3d.kernels import codes

BOX = DomainConfig(kind="box", shape_voxels=(48, 48, 48))
FEMUR = DomainConfig(kind="femur", shape_voxels=(120, 100, 100))


@pytest.fixture(scope="module")
def box() -> Anatomy:
    return generate_anatomy(BOX, AnatomyConfig(), seed=7)


@pytest.fixture(scope="module")
def femur() -> Anatomy:
    return generate_anatomy(FEMUR, AnatomyConfig(), seed=7)


@pytest.fixture(scope="module")
def tiny() -> Anatomy:
    return generate_anatomy(DomainConfig(kind="box", shape_voxels=(32, 32, 32)), AnatomyConfig(), seed=3)


# --- config -------------------------------------------------------------------------------


def test_config_defaults_validate():
    d, a = DomainConfig(), AnatomyConfig()
    assert d.kind == "box" and d.voxel_um == 10.0 and d.mask_path is None
    assert a.niche_density_per_mm3 == 50.0


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"voxel_um": 0.0}, "voxel_um"),
        ({"voxel_um": -1.0}, "voxel_um"),
        ({"shape_voxels": (0, 8, 8)}, "shape_voxels"),
        ({"shape_voxels": (2048, 2048, 2048)}, "int32"),
        ({"kind": "mask"}, "mask_path"),
        ({"kind": "box", "mask_path": "x.npy"}, "mask_path"),
        ({"kind": "sphere"}, "kind"),
        ({"voxels": 3}, "voxels"),
    ],
)
def test_domain_config_refuses(kwargs, fragment):
    with pytest.raises(ValidationError, match=fragment):
        DomainConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"sinusoid_radius_um": 30.0, "sinusoid_spacing_um": 50.0}, "sinusoid_radius_um"),
        ({"arteriole_radius_um": 50.0}, "arteriole_radius_um"),
        ({"endosteal_niche_fraction": 1.5}, "endosteal_niche_fraction"),
        ({"niche_density_per_mm3": -1.0}, "niche_density_per_mm3"),
        ({"marrow_radius_fraction": 1.0}, "marrow_radius_fraction"),
        ({"trabecular_bone_volume_fraction": 0.9}, "trabecular_bone_volume_fraction"),
        ({"cortical_thickness_um": 0.0}, "cortical_thickness_um"),
        ({"sinusoid_radius": 10.0}, "sinusoid_radius"),  # no unit: unknown key
    ],
)
def test_anatomy_config_refuses(kwargs, fragment):
    with pytest.raises(ValidationError, match=fragment):
        AnatomyConfig(**kwargs)


def test_every_config_field_has_a_description():
    for model in (DomainConfig, AnatomyConfig):
        for name, field in model.model_fields.items():
            assert field.description and len(field.description) > 20, name


@pytest.mark.parametrize(
    "domain, anatomy, fragment",
    [
        (DomainConfig(kind="femur", shape_voxels=(64, 60, 60)), AnatomyConfig(), "cortical_thickness_um"),
        (
            DomainConfig(kind="box", shape_voxels=(16, 16, 16)),
            AnatomyConfig(box_bone_thickness_um=200.0),
            "box_bone_thickness_um",
        ),
        (DomainConfig(kind="box", shape_voxels=(4, 32, 32)), AnatomyConfig(), "at least 8"),
        (
            DomainConfig(kind="femur", shape_voxels=(64, 100, 100)),
            AnatomyConfig(central_sinus_radius_um=300.0),
            "central_sinus_radius_um",
        ),
    ],
)
def test_geometry_that_does_not_fit_is_a_config_error(domain, anatomy, fragment):
    with pytest.raises(ConfigError, match=fragment):
        generate_anatomy(domain, anatomy, seed=1)


@pytest.mark.parametrize("seed", [-1, 1.5, True])
def test_bad_seed_is_a_config_error(seed):
    with pytest.raises(ConfigError, match="seed"):
        generate_anatomy(BOX, AnatomyConfig(), seed=seed)


# --- determinism ----------------------------------------------------------------------------


@pytest.mark.parametrize("domain", [BOX, FEMUR], ids=["box", "femur"])
def test_same_seed_gives_identical_bytes(domain, box, femur):
    first = box if domain is BOX else femur
    again = generate_anatomy(domain, AnatomyConfig(), seed=7)
    for name in ("tissue", "niche", "integrity"):
        a, b = getattr(first, name), getattr(again, name)
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), name
    assert first.fingerprint() == again.fingerprint()


@pytest.mark.parametrize("domain", [BOX, FEMUR], ids=["box", "femur"])
def test_other_seed_gives_other_anatomy(domain, box, femur):
    first = box if domain is BOX else femur
    other = generate_anatomy(domain, AnatomyConfig(), seed=8)
    assert not np.array_equal(first.tissue, other.tissue)
    assert first.fingerprint() != other.fingerprint()
    # ... but statistically the same tissue: volume fractions within a few percent.
    for name in ("sinusoid", "bone"):
        a, b = first.tissue_counts[name], other.tissue_counts[name]
        assert abs(a - b) <= 0.1 * max(a, b), name


def test_niche_stream_is_independent_of_vessel_streams(box):
    """Changing a niche parameter redraws slots but leaves bone and vessels identical."""
    more = generate_anatomy(BOX, AnatomyConfig(niche_density_per_mm3=400.0), seed=7)
    assert np.array_equal(more.tissue, box.tissue)
    assert sum(more.niche_counts.values()) > sum(box.niche_counts.values())


# --- labels and niches ----------------------------------------------------------------------


def _check_invariants(a: Anatomy, cfg: AnatomyConfig) -> None:
    assert a.tissue.dtype == np.uint8 and a.niche.dtype == np.uint8 and a.integrity.dtype == np.float32
    assert a.tissue.shape == a.niche.shape == a.integrity.shape == a.shape
    assert a.tissue.flags.c_contiguous
    assert set(np.unique(a.tissue)) <= set(codes.TISSUE_NAMES)
    assert set(np.unique(a.niche)) <= set(codes.NICHE_NAMES)
    vessel = np.isin(a.tissue, codes.VESSEL_LABELS)
    # Integrity: exactly 1.0 on vessels, exactly 0 elsewhere.
    assert np.array_equal(a.integrity == 1.0, vessel)
    assert np.all(a.integrity[~vessel] == 0.0)
    # Niche slots only on marrow voxels.
    slot = a.niche != codes.NICHE_NONE
    assert np.all(a.tissue[slot] == codes.MARROW)
    # Endosteal slots: next to an arteriole, not next to a sinusoid, near bone.
    endo = a.niche == codes.NICHE_ENDOSTEAL
    peri = a.niche == codes.NICHE_PERIVASCULAR
    sin_cls = (a.tissue == codes.SINUSOID) | (a.tissue == codes.CENTRAL_SINUS)
    assert np.all(face_neighbours(a.tissue == codes.ARTERIOLE)[endo])
    assert not np.any(face_neighbours(sin_cls)[endo])
    dist = bone_distance_um(a.tissue == codes.BONE, a.voxel_um)
    assert np.all(dist[endo] <= cfg.endosteal_niche_band_um)
    # Perivascular slots: next to a sinusoid or the central sinus.
    assert np.all(face_neighbours(sin_cls)[peri])
    # Both kinds and both vessel classes are present.
    assert endo.any() and peri.any()
    assert (a.tissue == codes.ARTERIOLE).any() and (a.tissue == codes.SINUSOID).any()
    # Every slot has a supporting vessel voxel of its class.
    slots, support = a.niche_support()
    assert slots.size == slot.sum() and np.all(support >= 0)
    sup_label = a.tissue.ravel()[support]
    kinds = a.niche.ravel()[slots]
    assert np.all(sup_label[kinds == codes.NICHE_ENDOSTEAL] == codes.ARTERIOLE)
    assert np.all(
        np.isin(sup_label[kinds == codes.NICHE_PERIVASCULAR], (codes.SINUSOID, codes.CENTRAL_SINUS))
    )


def test_box_invariants(box):
    _check_invariants(box, AnatomyConfig())


def test_femur_invariants(femur):
    _check_invariants(femur, AnatomyConfig())


def test_a_32_cube_box_has_both_vessel_classes_and_niche_kinds(tiny):
    _check_invariants(tiny, AnatomyConfig())


def test_box_layout(box):
    t = box.tissue
    # Bone is a slab on the low-z face (30 um = 3 voxels), nothing else is bone or outside.
    assert np.all(t[:3] == codes.BONE)
    assert not np.any(t[3:] == codes.BONE)
    assert not np.any(t == codes.OUTSIDE) and not np.any(t == codes.CENTRAL_SINUS)
    # Arterioles hug the bone: all within the 80-um band (plus the tube radius).
    z = np.nonzero(t == codes.ARTERIOLE)[0]
    assert z.size and (z.max() - 2) * box.voxel_um <= 80.0 + 5.0


@pytest.mark.parametrize("clearance", [0.0, 20.0, 40.0])
def test_sinusoids_keep_their_clearance_from_bone(clearance):
    """No sinusoid voxel within the clearance of bone; at 0 they reach the bone surface."""
    for domain in (BOX, FEMUR):
        a = generate_anatomy(domain, AnatomyConfig(sinusoid_bone_clearance_um=clearance), seed=5)
        dist = bone_distance_um(a.tissue == codes.BONE, a.voxel_um)[a.tissue == codes.SINUSOID]
        assert dist.size
        if clearance > 0:
            assert dist.min() > clearance
        else:
            assert dist.min() == a.voxel_um  # a sinusoid voxel shares a face with bone


def test_femur_layout(femur):
    t = femur.tissue
    nz, ny, nx = t.shape
    cy, cx = (ny - 1) / 2, (nx - 1) / 2
    # The central sinus runs along the whole axis.
    assert np.all(t[:, int(cy), int(cx)] == codes.CENTRAL_SINUS)
    # Corners of the cross-section are outside the bone; the cavity edge is cortex.
    assert np.all(t[:, 0, 0] == codes.OUTSIDE)
    r_marrow = 0.82 * 50 * 10.0
    iy = int(round(cy + (r_marrow + 40.0) / 10.0))
    assert np.all(t[:, iy, int(cx)] == codes.BONE)
    # Trabeculae: bone inside the cavity near z = 0, none in the far half (diaphysis).
    yy, xx = np.mgrid[:ny, :nx]
    inner = np.hypot(yy - cy, xx - cx) * 10.0 < r_marrow - 20.0
    trab_near = np.mean(t[: nz // 8][:, inner] == codes.BONE)
    trab_far = np.mean(t[nz // 2 :][:, inner] == codes.BONE)
    assert trab_near > 0.03 and trab_far == 0.0


def test_niche_counts_follow_density():
    cfg = AnatomyConfig(niche_density_per_mm3=400.0, endosteal_niche_fraction=0.25)
    a = generate_anatomy(BOX, cfg, seed=2)
    total = round(400.0 * a.marrow_volume_mm3)
    nc = a.niche_counts
    assert nc["endosteal"] + nc["perivascular"] == total
    assert nc["endosteal"] == round(0.25 * total)


def test_zero_density_gives_no_slots():
    a = generate_anatomy(BOX, AnatomyConfig(niche_density_per_mm3=0.0), seed=2)
    assert not a.niche.any()


def test_anatomy_rejects_inconsistent_arrays(box):
    with pytest.raises(ValueError, match="niche"):
        Anatomy(box.tissue, box.niche[:-1], box.integrity, 10.0)
    with pytest.raises(ValueError, match="integrity"):
        Anatomy(box.tissue, box.niche, box.integrity.astype(np.float64), 10.0)


def test_anatomy_conveniences(box):
    assert box.shape == (48, 48, 48)
    assert sum(box.tissue_counts.values()) == box.n_voxels
    assert box.marrow_mask.sum() == box.tissue_counts["marrow"]
    assert np.isclose(box.marrow_volume_mm3, box.tissue_counts["marrow"] * 1e-6)
    assert "endosteal" in repr(box) and "sinusoid" in repr(box)
    copy = box.copy()
    assert copy.fingerprint() == box.fingerprint() and copy.tissue is not box.tissue
