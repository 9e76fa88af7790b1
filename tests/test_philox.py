"""Philox-4x32-10: known answers, Taichi == numpy, and uniformity of the float helpers."""

import numpy as np
import pytest

from marrow3d.kernels.philox import (
    philox4x32_numpy,
    philox4x32_taichi,
    split_seed,
    uniform4_numpy,
)

# Random123 tests/kat_vectors, the three "philox4x32 10" lines: counter (4), key (2), answer (4).
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    (
        (0xFFFFFFFF,) * 4,
        (0xFFFFFFFF,) * 2,
        (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD),
    ),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize("ctr,key,expected", KAT)
def test_known_answers_numpy(ctr, key, expected):
    out = philox4x32_numpy(np.array(ctr, dtype=np.uint32), key)
    assert out.tolist() == list(expected)


@pytest.mark.parametrize("ctr,key,expected", KAT)
def test_known_answers_taichi(taichi_backend, ctr, key, expected):
    out = philox4x32_taichi(np.array([ctr], dtype=np.uint32), key)
    assert out[0].tolist() == list(expected)


def test_taichi_matches_numpy_on_random_counters(taichi_backend, rng):
    counters = rng.integers(0, 2**32, size=(20000, 4), dtype=np.uint64).astype(np.uint32)
    for key in [(0, 0), (123456789, 987654321), (0xFFFFFFFF, 1), split_seed(2**63 + 12345)]:
        np.testing.assert_array_equal(
            philox4x32_taichi(counters, key), philox4x32_numpy(counters, key)
        )


def test_taichi_uniforms_match_numpy(taichi_backend):
    """The in-kernel float helper and its numpy twin give the same bits."""
    from marrow3d.kernels.ti_compat import ti
    from marrow3d.kernels.philox import uniform4

    n = 4096
    out = np.zeros((n, 4), dtype=np.float32)

    @ti.kernel
    def fill(out: ti.types.ndarray(dtype=ti.f32, ndim=2), k0: ti.u32, k1: ti.u32):
        for i in range(n):
            u = uniform4(k0, k1, i, 17, 3, 1)
            for q in ti.static(range(4)):
                out[i, q] = u[q]

    key = split_seed(20261126)
    fill(out, key[0], key[1])
    np.testing.assert_array_equal(out, uniform4_numpy(key, np.arange(n), 17, 3, 1))


def test_uniformity_and_range():
    key = split_seed(42)
    u = uniform4_numpy(key, np.arange(50000), step=3, purpose=1).ravel()  # 200k draws
    assert u.dtype == np.float32
    assert u.min() >= 0.0 and u.max() < 1.0
    # Chi-square over 100 bins: 99 dof, mean 99, sd 14; 99 + 5 sd = 169.
    counts, _ = np.histogram(u, bins=100, range=(0.0, 1.0))
    expected = u.size / 100
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 169.0
    assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / u.size)
    # Neighbouring counters and the four words of one block are uncorrelated.
    w = uniform4_numpy(key, np.arange(50000), step=3, purpose=1)
    c = np.corrcoef(w.T)
    assert np.all(np.abs(c[np.triu_indices(4, 1)]) < 0.02)
    assert abs(np.corrcoef(w[:-1, 0], w[1:, 0])[0, 1]) < 0.02


def test_streams_differ_by_each_counter_word_and_seed():
    key = split_seed(7)
    base = uniform4_numpy(key, np.arange(100), 5, 2, 0)
    for other in (
        uniform4_numpy(key, np.arange(100), 6, 2, 0),
        uniform4_numpy(key, np.arange(100), 5, 3, 0),
        uniform4_numpy(key, np.arange(100), 5, 2, 1),
        uniform4_numpy(split_seed(8), np.arange(100), 5, 2, 0),
    ):
        assert np.mean(base == other) < 0.01


def test_split_seed():
    assert split_seed(0) == (0, 0)
    assert split_seed(2**32 + 5) == (5, 1)
    assert split_seed(2**64 - 1) == (0xFFFFFFFF, 0xFFFFFFFF)
    for bad in (-1, 2**64):
        with pytest.raises(ValueError):
            split_seed(bad)
