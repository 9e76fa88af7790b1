"""CXCR4 chemotaxis of free stem cells on an imposed CXCL12 field, and the one antagonist term.

Isolated HSCs (3 voxels apart, so no two compete for a target) walk every step (walk rate
100/h); their step directions are tallied and compared with the probabilities computed here in
numpy from the rule's definition, p_d = w_d / sum w, w_d = exp(chi (rho(c_d) - rho(c_0))),
rho = c / (c + Kd) (docs/model.md 2.10). Counts are sums of independent Bernoulli draws with
known p, so each direction's total must lie within 5 standard deviations of its mean.
"""

from types import SimpleNamespace

import numpy as np
import pytest

from marrow3d.kernels import codes

SHAPE = (15, 15, 15)
DIRS = codes.FACE_DIRECTIONS
KD = 5.0
MOBILIZED = 2


def _params(**changes):
    from test_cells_rules import null_params

    return null_params(stem_walk_rate_per_hour=100.0, **changes)


def _field():
    """An imposed field rising along +x and, more weakly, along -y (nM)."""
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in SHAPE), indexing="ij")
    return (4.0 * np.exp(0.12 * x) * (1.0 + 0.04 * (SHAPE[1] - y))).astype(np.float32)


@pytest.fixture(scope="module")
def env(taichi_backend):
    from marrow3d.kernels.cells import CellLattice
    from marrow3d.kernels.ti_compat import ti

    f = {k: ti.field(ti.u8, SHAPE) for k in ("tissue", "niche")}
    f.update({k: ti.field(ti.f32, SHAPE) for k in ("integrity", "oxygen", "cxcl12")})
    f["tissue"].fill(codes.MARROW)
    f["niche"].fill(codes.NICHE_NONE)
    f["integrity"].fill(1.0)
    f["oxygen"].fill(20.0)
    f["cxcl12"].from_numpy(_field())
    return SimpleNamespace(lat=CellLattice(SHAPE, _params(), seed=3), **f)


def _start_cells():
    cells = np.zeros(SHAPE, np.uint8)
    cells[1::3, 1::3, 1::3] = codes.HSC  # 125 cells, neighbourhoods disjoint
    return cells


def _walk(env, steps, *, chi=None, flags=None):
    """Tally the step directions of ``steps`` rounds, every round from the same start."""
    start = _start_cells()
    pos = np.argwhere(start == codes.HSC)
    counts = np.zeros((len(pos), 6), np.int64)
    env.lat.clear()
    for k in range(steps):
        env.lat.set_cells(start, flags)
        env.lat.step_index = k
        kw = {} if chi is None else {"cxcl12": env.cxcl12, "chemotactic_sensitivity": chi, "cxcr4_kd_nM": KD}
        env.lat.step(env.tissue, env.niche, env.integrity, env.oxygen, **kw)
        c = env.lat.get_state()["cells"]
        for d, off in enumerate(DIRS):
            q = pos + np.array(off)
            counts[:, d] += c[q[:, 0], q[:, 1], q[:, 2]] == codes.HSC
    assert (counts.sum(axis=1) == steps).all()  # every cell moved every round, exactly once
    return pos, counts


def _expected(pos, chi):
    """p_d per cell, from the definition (numpy, float64)."""
    c = _field().astype(np.float64)
    rho = c / (c + KD)
    w = np.empty((len(pos), 6))
    for d, off in enumerate(DIRS):
        q = pos + np.array(off)
        w[:, d] = np.exp(chi * (rho[q[:, 0], q[:, 1], q[:, 2]] - rho[pos[:, 0], pos[:, 1], pos[:, 2]]))
    return w / w.sum(axis=1, keepdims=True)


def _check(counts, p, steps):
    for d in range(6):
        mean = steps * p[:, d].sum()
        sd = np.sqrt(steps * (p[:, d] * (1 - p[:, d])).sum())
        assert abs(counts[:, d].sum() - mean) <= 5 * sd + 1, (d, counts[:, d].sum(), mean, sd)


def test_bias_matches_expected_direction_frequencies(env):
    steps, chi = 40, 25.0
    pos, counts = _walk(env, steps, chi=chi)
    p = _expected(pos, chi)
    assert p[:, 4].mean() > 0.25 > 1 / 6  # +x is strongly favoured: the test can tell
    _check(counts, p, steps)
    # and the unbiased law is rejected by the same counts
    with pytest.raises(AssertionError):
        _check(counts, np.full_like(p, 1 / 6), steps)


def test_half_occupied_receptors_halve_the_sensitivity(env):
    from marrow3d.pharmacology import cxcr4_occupancy
    from marrow3d.config.therapy import PlerixaforEffect

    eff = PlerixaforEffect()
    f = cxcr4_occupancy(eff.cxcr4_kd_uM, eff)
    assert f == 0.5
    steps, chi = 40, 25.0
    pos, counts = _walk(env, steps, chi=chi * (1 - f))
    _check(counts, _expected(pos, chi * (1 - f)), steps)


def test_zero_sensitivity_is_the_unbiased_walk_bit_for_bit(env):
    steps = 30
    pos, plain = _walk(env, steps)
    _, zero = _walk(env, steps, chi=0.0)
    np.testing.assert_array_equal(plain, zero)
    _check(plain, np.full((len(pos), 6), 1 / 6), steps)


def test_mobilized_cells_are_not_biased(env):
    flags = np.where(_start_cells() == codes.HSC, MOBILIZED, 0).astype(np.uint8)
    _, plain = _walk(env, 10, flags=flags)
    _, biased = _walk(env, 10, chi=25.0, flags=flags)
    np.testing.assert_array_equal(plain, biased)


def test_full_occupancy_removes_the_bias_in_the_model(taichi_backend):
    """The model passes chi x (1 - f): f = 1 gives chi = 0 (the unbiased walk above)."""
    from marrow3d.config import load_config
    from marrow3d.model import MarrowModel

    model = SimpleNamespace(cxcl12=True, fields={"cxcl12": "F"},
                            config=load_config(None, ["transport.cxcl12.enabled=true",
                                                      "transport.cxcl12.chemotactic_sensitivity=12.0"]))
    kw = MarrowModel._chemotaxis(model, {"cxcr4_occupancy": 1.0})
    assert kw["chemotactic_sensitivity"] == 0.0 and kw["cxcl12"] == "F"
    assert MarrowModel._chemotaxis(model, {"cxcr4_occupancy": 0.25})["chemotactic_sensitivity"] == 9.0
    model.cxcl12 = False
    assert MarrowModel._chemotaxis(model, {"cxcr4_occupancy": 0.0}) == {}


def test_release_multiplier_derives_from_the_same_occupancy():
    """m(f(C)) equals the calibrated Hill law of C; f = 0 without drug gives exactly 1."""
    from marrow3d.config.therapy import PlerixaforEffect
    from marrow3d.pharmacology import cxcr4_occupancy, release_multiplier_from_occupancy

    e = PlerixaforEffect()
    c = np.array([0.0, 0.05, 0.3, 0.6, 1.0, 3.0, 50.0])
    f = cxcr4_occupancy(c, e)
    np.testing.assert_allclose(f, c / (c + 0.65), rtol=1e-15)
    hill = 1.0 + 9.0 * c**5 / (0.6**5 + c**5)  # the former law, written out independently
    np.testing.assert_allclose(release_multiplier_from_occupancy(f, e), hill, rtol=1e-12)
    assert release_multiplier_from_occupancy(0.0, e) == 1.0
    assert release_multiplier_from_occupancy(1.0, e) == 10.0
