"""The Taichi transport kernels against the numpy/scipy reference of the same discrete operator.

Random heterogeneous problems: every tissue label (bone and outside give D = 0), cells also in
non-marrow voxels (must be ignored), integrities below the floor, per-voxel D overrides with
zeros. Float64 must agree to rounding; float32 to its own precision.
"""

import numpy as np
import pytest

from marrow3d.kernels import transport_reference as R
from marrow3d.kernels.codes import ARTERIOLE, BONE, CENTRAL_SINUS, MARROW, SINUSOID

H_UM = 10.0
KM = 1.0


def random_state(rng, shape):
    """Tissue/cells/integrity with every label, and cells scattered everywhere."""
    p = [0.62, 0.12, 0.06, 0.1, 0.04, 0.06]  # marrow bone arteriole sinusoid central outside
    tissue = rng.choice(6, size=shape, p=p).astype(np.uint8)
    cells = rng.integers(0, 5, size=shape).astype(np.uint8)
    integrity = rng.uniform(0.0, 1.0, size=shape).astype(np.float32)
    return tissue, cells, integrity


def random_tables(rng, vmax=True):
    """Tables with every term switched on (so any mix-up between terms shows)."""
    return R.CoefficientTables(
        diffusivity_by_tissue=[1.2e5, 0.0, 9.0e4, 1.1e5, 1.3e5, 0.0],
        decay_by_tissue=rng.uniform(0.0, 0.2, 6),
        uptake_by_cell=np.r_[0.0, rng.uniform(0.0, 2.0, 4)],
        vmax_by_cell=np.r_[0.0, rng.uniform(50.0, 500.0, 4)] if vmax else np.zeros(5),
        secretion_by_cell=np.r_[0.0, rng.uniform(0.0, 5.0, 4)],
        exchange_by_class=[350.0, 500.0],
        leak_by_class=[1.0, 3.0],
        blood_by_class=[32.0, 16.0],
        integrity_floor=0.15,
    )


def np_dtype(ti_dtype):
    from marrow3d.kernels.ti_compat import ti

    return np.float32 if ti_dtype == ti.f32 else np.float64


# ----------------------------------------------------------------------------- numpy-only parts


def test_tables_validate_lengths_and_signs():
    with pytest.raises(ValueError, match="diffusivity_by_tissue"):
        R.CoefficientTables(diffusivity_by_tissue=[1.0, 2.0])
    with pytest.raises(ValueError, match="decay_by_tissue"):
        R.CoefficientTables(diffusivity_by_tissue=np.ones(6), decay_by_tissue=-np.ones(6))
    t = R.CoefficientTables(diffusivity_by_tissue=np.ones(6), exchange_by_class=[1.0, 2.0])
    assert list(t.exchange_by_class) == [0.0, 1.0, 2.0]  # length 2 read as (arteriole, sinusoid)


def test_reference_exchange_formula():
    tissue = np.array([[[MARROW, ARTERIOLE, SINUSOID, CENTRAL_SINUS, SINUSOID, BONE]]], np.uint8)
    integ = np.array([[[1.0, 0.5, 0.5, 1.0, 0.05, 1.0]]], np.float32)
    t = R.CoefficientTables(
        diffusivity_by_tissue=np.ones(6), exchange_by_class=[10.0, 20.0], leak_by_class=[1.0, 3.0],
        integrity_floor=0.1,
    )
    E = R.exchange_rate(tissue, integ, t).ravel()
    np.testing.assert_allclose(E, [0.0, 10 * 0.5 * 1.5, 20 * 0.5 * 2.5, 20.0, 0.0, 0.0])


def test_reference_stencil_matches_matrix(rng):
    """The oracle's two forms (stencil residual, sparse matrix) agree with each other."""
    shape = (5, 6, 7)
    D = rng.uniform(0.5, 2.0, shape) * 1e4
    D[rng.random(shape) < 0.2] = 0.0
    a, vmax, s = (rng.uniform(0, 1, shape) for _ in range(3))
    u = rng.uniform(0, 3, shape)
    A = R.operator_matrix(D, a, H_UM)
    F = R.residual(u, D, a, vmax, s, KM, H_UM)
    active = D > 0
    F2 = (s.ravel() - A @ np.where(active, u, 0).ravel() - vmax.ravel() * u.ravel() / (KM + u.ravel()))
    np.testing.assert_allclose(F[active], F2.reshape(shape)[active], rtol=1e-12, atol=1e-9)
    # symmetric, and a positive diagonal on active voxels
    assert abs(A - A.T).max() == 0
    assert np.all(A.diagonal()[active.ravel()] > 0)


# ----------------------------------------------------------------------------- Taichi vs numpy


@pytest.mark.parametrize("dtype_name", ["f32", "f64"])
@pytest.mark.parametrize("inputs", ["numpy", "fields"])
@pytest.mark.parametrize("override", [False, True])
def test_assembly_matches_reference(taichi_backend, rng, dtype_name, inputs, override):
    from marrow3d.kernels import transport as T
    from marrow3d.transport_solver import MultigridSolver
    from marrow3d.kernels.ti_compat import ti

    dtype = getattr(ti, dtype_name)
    shape = (6, 9, 11)
    tissue, cells, integ = random_state(rng, shape)
    tables = random_tables(rng)
    dmap = None
    if override:
        dmap = rng.uniform(1e4, 2e5, shape).astype(np.float32)
        dmap[rng.random(shape) < 0.2] = 0.0
    ref = R.assemble_coefficients(tissue, cells, integ, tables, dmap)
    solver = MultigridSolver(shape, H_UM, dtype=dtype)
    if inputs == "fields":
        fields = []
        for arr, dt in ((tissue, ti.u8), (cells, ti.u8), (integ, ti.f32)) + (((dmap, ti.f32),) if override else ()):
            f = ti.field(dt, shape=shape)
            f.from_numpy(arr)
            fields.append(f)
        args = fields[:3]
        dmap_in = fields[3] if override else None
    else:
        args, dmap_in = (tissue, cells, integ), dmap
    T.assemble_coefficients(*args, tables, solver.D, solver.a, solver.vmax, solver.s, diffusivity_override=dmap_in)
    got = solver.coefficients()
    npdt = np_dtype(dtype)
    for name, want in zip(("D", "a", "vmax", "s"), ref):
        # computed in float64 and rounded once: bitwise equal to the rounded reference
        np.testing.assert_array_equal(got[name], want.astype(npdt), err_msg=name)


@pytest.mark.parametrize("dtype_name", ["f32", "f64"])
def test_residual_matches_reference(taichi_backend, rng, dtype_name):
    from marrow3d.transport_solver import MultigridSolver
    from marrow3d.kernels.ti_compat import ti

    dtype = getattr(ti, dtype_name)
    npdt = np_dtype(dtype)
    shape = (7, 10, 12)
    D = (rng.uniform(0.2, 2.0, shape) * 1e5).astype(npdt)
    D[rng.random(shape) < 0.2] = 0
    a = rng.uniform(0, 50, shape).astype(npdt)
    vmax = rng.uniform(0, 300, shape).astype(npdt)
    s = rng.uniform(0, 500, shape).astype(npdt)
    u = rng.uniform(0, 30, shape).astype(npdt)
    solver = MultigridSolver(shape, H_UM, dtype=dtype)
    solver.set_coefficients(D=D, a=a, vmax=vmax, s=s)
    got = solver.residual(u, KM)
    want = R.residual(u.astype(np.float64), D, a, vmax, s, KM, H_UM)
    assert np.all(got[D == 0] == 0)
    # float32 rounds the face conductances and the stored residual once each
    rtol = 1e-6 if dtype == ti.f32 else 1e-13
    err = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert err < rtol, err


def heterogeneous_problem(rng, shape, vmax=True):
    """Synthetic marrow with a random per-voxel D (zeros on bone) and every coefficient on."""
    tissue, cells, integ = R.synthetic_marrow(shape, seed=int(rng.integers(1 << 30)))
    tables = random_tables(rng, vmax=vmax)
    dmap = np.where(tissue == BONE, 0.0, rng.uniform(3e4, 2e5, shape)).astype(np.float32)
    dmap[(tissue == MARROW) & (rng.random(shape) < 0.03)] = 0.0  # some extra no-flux voxels
    return tissue, cells, integ, tables, dmap


@pytest.fixture(scope="module")
def mm_problem():
    """One 24^3 Michaelis-Menten problem and its sparse-direct reference solutions."""
    rng = np.random.default_rng(7)
    tissue, cells, integ, tables, dmap = heterogeneous_problem(rng, (24, 24, 24))
    return tissue, cells, integ, tables, dmap


@pytest.mark.parametrize("dtype_name", ["f32", "f64"])
def test_steady_mm_solve_matches_reference(taichi_backend, mm_problem, dtype_name):
    from marrow3d.kernels import transport as T
    from marrow3d.transport_solver import MultigridSolver
    from marrow3d.kernels.ti_compat import ti

    tissue, cells, integ, tables, dmap = mm_problem
    dtype = getattr(ti, dtype_name)
    solver = MultigridSolver(tissue.shape, H_UM, dtype=dtype)
    T.assemble_coefficients(tissue, cells, integ, tables, solver.D, solver.a, solver.vmax, solver.s, dmap)
    c = {k: v.astype(np.float64) for k, v in solver.coefficients().items()}
    # the reference solves the problem as stored (coefficients rounded to dtype)
    want = R.solve_steady(c["D"], c["a"], c["vmax"], c["s"], KM, H_UM)
    u = np.zeros(tissue.shape, np_dtype(dtype))
    info = solver.solve(u, KM, tol=1e-7)
    assert info.converged, info
    assert np.all(u >= 0)
    assert np.all(u[c["D"] == 0] == 0)
    err = np.abs(u - want).max() / np.abs(want).max()
    assert err < 1e-5, err


@pytest.mark.parametrize("dtype_name", ["f32", "f64"])
def test_steady_linear_solve_matches_reference(taichi_backend, dtype_name):
    from marrow3d.kernels import transport as T
    from marrow3d.transport_solver import MultigridSolver
    from marrow3d.kernels.ti_compat import ti

    rng = np.random.default_rng(11)
    shape = (28, 30, 32)  # not powers of two: exercises odd coarsening
    tissue, cells, integ, tables, dmap = heterogeneous_problem(rng, shape, vmax=False)
    dtype = getattr(ti, dtype_name)
    solver = MultigridSolver(shape, H_UM, dtype=dtype)
    T.assemble_coefficients(tissue, cells, integ, tables, solver.D, solver.a, solver.vmax, solver.s, dmap)
    c = {k: v.astype(np.float64) for k, v in solver.coefficients().items()}
    want = R.solve_steady(c["D"], c["a"], c["vmax"], c["s"], KM, H_UM)
    u = np.zeros(shape, np_dtype(dtype))
    info = solver.solve(u, KM, tol=1e-7)
    assert info.converged, info
    err = np.abs(u - want).max() / np.abs(want).max()
    assert err < 1e-5, err
