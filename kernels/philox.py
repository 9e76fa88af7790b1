"""Philox-4x32-10 counter-based random numbers: Taichi functions and a numpy reference.

Every random draw in marrow3d is a pure function of ``(key, counter)``: the key is the run seed
split into two 32-bit words, the counter is ``(voxel linear index, step, purpose, sub)``. A draw
therefore does not depend on which thread computes it, on the thread count or on the backend,
and a run resumed from a checkpoint (which only has to store the step number) continues
bit-for-bit. ``ti.random`` keeps hidden per-thread state and is never used.

Algorithm: Salmon, Moraes, Dror & Shaw (2011), "Parallel random numbers: as easy as 1, 2, 3",
SC'11; constants and round structure as in Random123 ``philox.h``. Known answers (Random123
``tests/kat_vectors``) are checked in ``tests/test_philox.py``.

Uniform floats use the top 24 bits of a word, ``(x >> 8) * 2**-24``: every value is exactly
representable in float32, lies in ``[0, 1)``, and the numpy reference gives identical floats.
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations as live objects.

import numpy as np

from .ti_compat import ti

__all__ = [
    "PHILOX_M0",
    "PHILOX_M1",
    "PHILOX_W0",
    "PHILOX_W1",
    "split_seed",
    "philox4x32",
    "philox_counter",
    "uniform4",
    "uniform_from_u32",
    "philox4x32_numpy",
    "uniform4_numpy",
    "philox4x32_taichi",
]

# Random123 philox.h constants (multipliers and Weyl key increments).
PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9  # golden ratio
PHILOX_W1 = 0xBB67AE85  # sqrt(3) - 1
PHILOX_ROUNDS = 10

#: 2**-24: maps the top 24 bits of a word onto [0, 1) exactly in float32.
_INV_2_24 = 1.0 / 16777216.0


def split_seed(seed: int) -> tuple[int, int]:
    """Split a non-negative run seed (< 2**64) into the two Philox key words.

    Parameters
    ----------
    seed : int
        Run seed, ``0 <= seed < 2**64``.

    Returns
    -------
    (int, int)
        ``(seed & 0xFFFFFFFF, seed >> 32)``: the low and high 32-bit key words.
    """
    seed = int(seed)
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    return seed & 0xFFFFFFFF, seed >> 32


# --------------------------------------------------------------------------------------------
# Taichi
# --------------------------------------------------------------------------------------------


@ti.func
def _mulhilo32(a, b):
    """High and low 32-bit words of the 64-bit product of two u32 (exact, via u64)."""
    p = ti.cast(a, ti.u64) * ti.cast(b, ti.u64)
    return ti.cast(p >> ti.u64(32), ti.u32), ti.cast(p, ti.u32)


@ti.func
def philox4x32(c0, c1, c2, c3, k0, k1):
    """Philox-4x32-10 block function.

    Parameters
    ----------
    c0, c1, c2, c3 : u32
        Counter words.
    k0, k1 : u32
        Key words.

    Returns
    -------
    ti.Vector of 4 u32
        Four independent, uniformly distributed 32-bit words.
    """
    x0 = ti.cast(c0, ti.u32)
    x1 = ti.cast(c1, ti.u32)
    x2 = ti.cast(c2, ti.u32)
    x3 = ti.cast(c3, ti.u32)
    key0 = ti.cast(k0, ti.u32)
    key1 = ti.cast(k1, ti.u32)
    for r in ti.static(range(PHILOX_ROUNDS)):
        # Random123 bumps the key before every round but the first.
        if ti.static(r > 0):
            key0 += ti.u32(PHILOX_W0)  # u32 addition wraps modulo 2**32, as intended
            key1 += ti.u32(PHILOX_W1)
        hi0, lo0 = _mulhilo32(ti.u32(PHILOX_M0), x0)
        hi1, lo1 = _mulhilo32(ti.u32(PHILOX_M1), x2)
        y0 = hi1 ^ x1 ^ key0
        y2 = hi0 ^ x3 ^ key1
        x0, x1, x2, x3 = y0, lo1, y2, lo0
    return ti.Vector([x0, x1, x2, x3], dt=ti.u32)


@ti.func
def uniform_from_u32(x):
    """Map a u32 word to a float32 in [0, 1) using its top 24 bits (exact in float32)."""
    return ti.cast(x >> ti.u32(8), ti.f32) * ti.f32(_INV_2_24)


@ti.func
def philox_counter(k0, k1, index, step, purpose, sub):
    """Four random u32 words for ``counter = (index, step, purpose, sub)``.

    Parameters
    ----------
    k0, k1 : u32
        Key words (see :func:`split_seed`).
    index : int
        Voxel linear index (C order of the lattice shape), ``0 <= index < 2**32``.
    step : int
        Cell step number.
    purpose : int
        Which rule draws (a constant per rule, so rules never share a stream).
    sub : int
        Extra counter word for several blocks per (voxel, step, purpose).
    """
    return philox4x32(
        ti.cast(index, ti.u32),
        ti.cast(step, ti.u32),
        ti.cast(purpose, ti.u32),
        ti.cast(sub, ti.u32),
        k0,
        k1,
    )


@ti.func
def uniform4(k0, k1, index, step, purpose, sub):
    """Four float32 uniforms in [0, 1) for ``counter = (index, step, purpose, sub)``.

    Returns
    -------
    ti.Vector of 4 f32
    """
    w = philox_counter(k0, k1, index, step, purpose, sub)
    return ti.Vector([uniform_from_u32(w[q]) for q in ti.static(range(4))], dt=ti.f32)


@ti.kernel
def _philox_kernel(
    counters: ti.types.ndarray(dtype=ti.u32, ndim=2),
    k0: ti.u32,
    k1: ti.u32,
    out: ti.types.ndarray(dtype=ti.u32, ndim=2),
):
    for i in range(counters.shape[0]):
        w = philox4x32(counters[i, 0], counters[i, 1], counters[i, 2], counters[i, 3], k0, k1)
        for q in ti.static(range(4)):
            out[i, q] = w[q]


def philox4x32_taichi(counters: np.ndarray, key: tuple[int, int]) -> np.ndarray:
    """Evaluate :func:`philox4x32` in a Taichi kernel on a batch of counters (for tests).

    Parameters
    ----------
    counters : ndarray of uint32, shape (n, 4)
    key : (int, int)
        Key words.

    Returns
    -------
    ndarray of uint32, shape (n, 4)
    """
    c = np.ascontiguousarray(counters, dtype=np.uint32).reshape(-1, 4)
    out = np.zeros_like(c)
    _philox_kernel(c, int(key[0]), int(key[1]), out)
    return out


# --------------------------------------------------------------------------------------------
# numpy reference (the test oracle, and host-side draws that must match the kernels)
# --------------------------------------------------------------------------------------------

_MASK32 = np.uint64(0xFFFFFFFF)


def philox4x32_numpy(counters, key) -> np.ndarray:
    """Pure-numpy Philox-4x32-10, vectorised over counters.

    Parameters
    ----------
    counters : array_like of uint32, shape (..., 4)
        Counter words.
    key : (int, int) or array_like of uint32, shape (..., 2)
        Key words (broadcast against the counters).

    Returns
    -------
    ndarray of uint32, shape (..., 4)
    """
    c = np.asarray(counters, dtype=np.uint64)
    k = np.asarray(key, dtype=np.uint64)
    x0, x1, x2, x3 = (c[..., q] for q in range(4))
    k0 = np.broadcast_to(k[..., 0], x0.shape).copy()
    k1 = np.broadcast_to(k[..., 1], x0.shape).copy()
    m0, m1 = np.uint64(PHILOX_M0), np.uint64(PHILOX_M1)
    w0, w1 = np.uint64(PHILOX_W0), np.uint64(PHILOX_W1)
    for r in range(PHILOX_ROUNDS):
        if r > 0:
            k0 = (k0 + w0) & _MASK32
            k1 = (k1 + w1) & _MASK32
        p0 = m0 * x0  # < 2**64: exact in uint64
        p1 = m1 * x2
        hi0, lo0 = p0 >> np.uint64(32), p0 & _MASK32
        hi1, lo1 = p1 >> np.uint64(32), p1 & _MASK32
        x0, x1, x2, x3 = hi1 ^ x1 ^ k0, lo1, hi0 ^ x3 ^ k1, lo0
    return np.stack([x0, x1, x2, x3], axis=-1).astype(np.uint32)


def uniform4_numpy(key, index, step, purpose, sub=0) -> np.ndarray:
    """numpy twin of :func:`uniform4`: float32 uniforms in [0, 1), shape ``index.shape + (4,)``.

    Parameters
    ----------
    key : (int, int)
        Key words.
    index : array_like of int
        Voxel linear indices.
    step, purpose, sub : int or array_like of int
        Remaining counter words (broadcast against ``index``).
    """
    index = np.asarray(index, dtype=np.uint64)
    shape = index.shape
    ctr = np.stack(
        [
            index,
            np.broadcast_to(np.asarray(step, dtype=np.uint64), shape),
            np.broadcast_to(np.asarray(purpose, dtype=np.uint64), shape),
            np.broadcast_to(np.asarray(sub, dtype=np.uint64), shape),
        ],
        axis=-1,
    )
    words = philox4x32_numpy(ctr, key)
    return (words >> np.uint32(8)).astype(np.float32) * np.float32(_INV_2_24)
