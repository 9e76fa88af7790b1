"""Mask import: round trips for every format, and one clear MaskError per malformed mask."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest
import tifffile

from marrow3d.anatomy import (
    anatomy_from_mask,
    build_anatomy,
    generate_anatomy,
    load_mask,
    mask_shape,
    save_mask,
)
from marrow3d.config.anatomy import AnatomyConfig, DomainConfig
from marrow3d.errors import MaskError
from marrow3d.kernels import codes


@pytest.fixture(scope="module")
def generated():
    return generate_anatomy(DomainConfig(kind="box", shape_voxels=(24, 40, 32)), AnatomyConfig(), seed=5)


# --- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["m.npy", "m.tif", "m.tiff", "m.h5:/tissue", "m.hdf5:/labels/run1/tissue"])
def test_round_trip_each_format(tmp_path, generated, spec):
    path_spec = str(tmp_path / spec)
    save_mask(generated, path_spec)
    labels = load_mask(path_spec)
    assert labels.dtype == np.uint8 and labels.shape == generated.shape
    assert np.array_equal(labels, generated.tissue)
    assert mask_shape(path_spec) == generated.shape


def test_anatomy_from_mask_reproduces_the_generator(tmp_path, generated):
    """Niche slots follow the generator's rule and stream: same seed, same anatomy."""
    save_mask(generated, tmp_path / "m.npy")
    imported = anatomy_from_mask(load_mask(tmp_path / "m.npy"), voxel_um=10.0, seed=5, source="m.npy")
    assert imported.kind == "mask" and imported.source == "m.npy"
    assert np.array_equal(imported.tissue, generated.tissue)
    assert np.array_equal(imported.niche, generated.niche)
    assert np.array_equal(imported.integrity, generated.integrity)


def test_anatomy_from_mask_on_foreign_integer_dtypes(generated):
    for dtype in (np.int16, np.uint16, np.int32, np.int64):
        a = anatomy_from_mask(generated.tissue.astype(dtype), voxel_um=5.0, origin_um=(1.0, 2.0, 3.0))
        assert a.tissue.dtype == np.uint8 and a.voxel_um == 5.0 and a.origin_um == (1.0, 2.0, 3.0)
        assert np.array_equal(a.integrity == 1.0, np.isin(a.tissue, codes.VESSEL_LABELS))
        assert np.all(a.tissue[a.niche != 0] == codes.MARROW)


def test_mask_without_vessels_has_no_niches():
    t = np.zeros((8, 8, 8), dtype=np.uint8)
    t[0] = codes.BONE
    a = anatomy_from_mask(t)
    assert not a.niche.any() and not a.integrity.any()


def test_domain_kind_mask_builds_from_file(tmp_path, generated):
    spec = f"{tmp_path / 'm.h5'}:/seg/tissue"
    save_mask(generated, spec)
    domain = DomainConfig(kind="mask", mask_path=spec, voxel_um=10.0)
    a = build_anatomy(domain, AnatomyConfig(), seed=5)
    assert a.kind == "mask" and a.source == spec
    assert np.array_equal(a.tissue, generated.tissue)


# --- malformed masks ----------------------------------------------------------------------


def _labels(shape=(6, 7, 8), dtype=np.uint8):
    t = np.zeros(shape, dtype=dtype)
    t[0] = codes.BONE
    t[3, 3] = codes.SINUSOID
    return t


def _npy(tmp_path, arr, name="bad.npy"):
    p = tmp_path / name
    np.save(p, arr)
    return str(p)


class _Boom:
    """Unpickling this would create a file: proof that nothing was unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _cases(tmp_path):
    """(path_spec, fragments the one-line message must contain) for each malformed mask."""
    c = []
    c.append((str(tmp_path / "absent.npy"), ["absent.npy", "does not exist"]))
    png = tmp_path / "mask.png"
    png.write_bytes(b"\x89PNG")
    c.append((str(png), ["mask.png", "unknown file type", ".png"]))
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"this is not numpy data at all")
    c.append((str(garbage), ["garbage.npy", "not in .npy format"]))
    trunc = tmp_path / "trunc.npy"
    np.save(trunc, _labels())
    trunc.write_bytes(trunc.read_bytes()[:-50])
    c.append((str(trunc), ["trunc.npy", "corrupt"]))
    marker = tmp_path / "pwned"
    objs = np.empty(2, dtype=object)
    objs[0], objs[1] = _Boom(str(marker)), 1
    pk = tmp_path / "objects.npy"
    np.save(pk, objs, allow_pickle=True)
    c.append((str(pk), ["objects.npy", "never unpickled"]))
    npz = tmp_path / "arch.npy"
    with open(npz, "wb") as fh:
        np.savez(fh, a=_labels())
    c.append((str(npz), ["arch.npy", "zip"]))
    badtif = tmp_path / "broken.tif"
    badtif.write_bytes(b"II*\x00" + b"\xff" * 20)
    c.append((str(badtif), ["broken.tif", "not a readable TIFF"]))
    h5 = tmp_path / "seg.h5"
    with h5py.File(h5, "w") as f:
        f.create_dataset("labels/tissue", data=_labels())
        f.create_group("empty_group")
    c.append((f"{h5}:/labels/missing", ["seg.h5", "no dataset '/labels/missing'", "/labels/tissue"]))
    c.append((str(h5), ["seg.h5", "name the dataset"]))
    c.append((f"{h5}:/empty_group", ["seg.h5", "group, not a dataset"]))
    badh5 = tmp_path / "broken.h5"
    badh5.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 40)
    c.append((f"{badh5}:/x", ["broken.h5", "not a readable HDF5"]))
    c.append(
        (
            _npy(tmp_path, _labels().astype(np.float32), "float.npy"),
            ["float.npy", "dtype float32", "uint8", "int16"],
        )
    )
    c.append(
        (_npy(tmp_path, _labels().astype(bool), "bool.npy"), ["bool.npy", "dtype bool", "integer labels"])
    )
    neg = _labels(dtype=np.int16)
    neg[1, :2, :3] = -1
    c.append(
        (
            _npy(tmp_path, neg, "neg.npy"),
            ["neg.npy", "unknown labels", "-1 (6 voxels)", "allowed codes", "0 marrow"],
        )
    )
    unk = _labels()
    unk[2, 0, :4] = 7
    unk[4, 1, :1] = 200
    c.append(
        (_npy(tmp_path, unk, "unknown.npy"), ["unknown.npy", "7 (4 voxels)", "200 (1 voxel)", "5 outside"])
    )
    c.append(
        (_npy(tmp_path, _labels()[0], "flat.npy"), ["flat.npy", "2 dimension(s)", "(7, 8)", "expected 3"])
    )
    c.append((_npy(tmp_path, _labels()[None], "four.npy"), ["four.npy", "4 dimension(s)", "(1, 6, 7, 8)"]))
    c.append(
        (
            _npy(tmp_path, np.full((4, 4, 4), codes.BONE, np.uint8), "allbone.npy"),
            ["allbone.npy", "no marrow"],
        )
    )
    c.append((_npy(tmp_path, np.zeros((0, 4, 4), np.uint8), "empty.npy"), ["empty.npy", "empty"]))
    c.append(
        (_npy(tmp_path, _labels().astype(np.complex64), "complex.npy"), ["complex.npy", "dtype complex64"])
    )
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.zeros((3, 5, 6, 3), dtype=np.uint8))
    c.append((str(rgb), ["rgb.tif", "4 dimension(s)"]))
    return c, marker


def test_every_malformed_mask_raises_a_one_line_mask_error(tmp_path):
    cases, marker = _cases(tmp_path)
    assert len(cases) >= 8
    for spec, fragments in cases:
        with pytest.raises(MaskError) as info:
            load_mask(spec)
        msg = str(info.value)
        assert "\n" not in msg, msg
        for frag in fragments:
            assert frag in msg, f"{frag!r} not in {msg!r}"
    assert not marker.exists(), "an object array was unpickled"


def test_mask_error_is_a_value_error():
    assert issubclass(MaskError, ValueError)


def test_anatomy_from_mask_validates_arrays():
    with pytest.raises(MaskError, match="dtype float64"):
        anatomy_from_mask(np.zeros((4, 4, 4)))
    with pytest.raises(MaskError, match="voxel_um"):
        anatomy_from_mask(_labels(), voxel_um=0.0)


def test_mask_shape_errors(tmp_path):
    with pytest.raises(MaskError, match="does not exist"):
        mask_shape(tmp_path / "nothing.npy")
    with pytest.raises(MaskError, match="unknown file type"):
        mask_shape(tmp_path / "x.raw")
    (tmp_path / "folder.npy").mkdir()
    with pytest.raises(MaskError, match="is a directory, not a file"):
        mask_shape(tmp_path / "folder.npy")
    with pytest.raises(MaskError, match="is a directory, not a file"):
        load_mask(tmp_path / "folder.npy")


def test_header_path_refuses_every_malformed_mask_cleanly(tmp_path):
    """``mask_shape`` (sizing a run from the header) on every malformed mask: a MaskError, or a
    3-D shape whose content ``load_mask`` then refuses; never an IndexError or ValueError from
    a 2-D or 4-D header (issue 16, item 9)."""
    cases, _ = _cases(tmp_path)
    for spec, _fragments in cases:
        try:
            shape = mask_shape(spec)
        except MaskError as exc:
            assert "\n" not in str(exc)
            continue
        assert len(shape) == 3, (spec, shape)
        with pytest.raises(MaskError):
            load_mask(spec)


def test_wrapped_negative_labels_get_a_hint(tmp_path):
    """-1 written into an unsigned file reads back as 255: the message says so."""
    arr = _labels()
    arr[1, 1, 1] = 255
    with pytest.raises(MaskError, match=r"255 \(1 voxel\).*255 = -1 in an unsigned 8-bit file"):
        load_mask(_npy(tmp_path, arr, "wrapped.npy"))
    arr16 = _labels(dtype=np.uint16)
    arr16[1, 1, 1] = 65534
    with pytest.raises(MaskError, match="65534 = -2 in an unsigned 16-bit file"):
        load_mask(_npy(tmp_path, arr16, "wrapped16.npy"))


def test_pickle_payload_sanity(tmp_path):
    """The payload used above really would run if unpickled (guards the guard)."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_Boom(str(marker)))).close()
    assert marker.exists()
