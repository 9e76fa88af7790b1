"""The CXCL12 field: assembly and solve against a plain numpy/scipy reference and analytic cases.

The reference here rebuilds the perivascular source from its definition with numpy shifts
(independent of the Taichi neighbour loop) and solves the same discrete operator with the scipy
direct solver of :mod:`kernels.transport_reference`.
"""

import math

import numpy as np
import pytest

from marrow3d.config.transport import Cxcl12Config, PerVesselClass
from marrow3d.kernels import transport_reference as R
from marrow3d.kernels.codes import ARTERIOLE, BONE, CENTRAL_SINUS, MARROW, SINUSOID

H_UM = 10.0
CLASS = {ARTERIOLE: 1, SINUSOID: 2, CENTRAL_SINUS: 2}


def _reference_coefficients(tissue, integrity, cfg: Cxcl12Config, floor):
    """D, a, vmax, s from the definition (docs/model.md 2.10), by whole-array numpy shifts."""
    k = math.log(2.0) / cfg.half_life_min
    k_marrow = k + cfg.uptake_per_min  # receptor uptake by the marrow's cells, not in the lumen
    level = {1: cfg.source_level_nM.arteriole, 2: cfg.source_level_nM.sinusoid}
    active = np.isin(tissue, (MARROW, ARTERIOLE, SINUSOID, CENTRAL_SINUS))
    D = np.where(active, cfg.diffusivity_um2_per_min, 0.0)
    a = np.where(tissue == MARROW, k_marrow, np.where(active, k, 0.0))
    # per-voxel stroma strength level[class] * I of each vessel voxel (0 if not a vessel or < floor)
    strength = np.zeros(tissue.shape)
    for lab, cls in CLASS.items():
        sel = (tissue == lab) & (integrity.astype(np.float64) >= floor)
        strength[sel] = level[cls] * integrity[sel].astype(np.float64)
    best = np.zeros(tissue.shape)
    pad = np.pad(strength, 1)
    nz, ny, nx = tissue.shape
    for dz, dy, dx in ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)):
        best = np.maximum(best, pad[1 + dz:1 + dz + nz, 1 + dy:1 + dy + ny, 1 + dx:1 + dx + nx])
    s = np.where(tissue == MARROW, k_marrow * best, 0.0)
    return D, a, np.zeros(tissue.shape), s


def _solver(shape, dtype_name="f64", layout=None):
    from marrow3d.kernels.ti_compat import ti
    from marrow3d.transport_solver import MultigridSolver

    return MultigridSolver(shape, H_UM, dtype=getattr(ti, dtype_name), layout=layout)


def _config(**kw):
    from marrow3d.config.transport import TransportConfig

    tc = TransportConfig()
    return tc.model_copy(update={"cxcl12": Cxcl12Config(**kw)})


@pytest.mark.parametrize("uptake", [0.0, 0.4])
@pytest.mark.parametrize("layout", ["rows", "voxels"])
def test_assembly_matches_numpy_reference_in_both_layouts(taichi_backend, layout, uptake):
    from marrow3d.cxcl12 import cxcl12_tables
    from marrow3d.kernels.cxcl12 import assemble_cxcl12

    tissue, _, integ = R.synthetic_marrow((9, 12, 14), seed=3, damaged_fraction=0.5)
    tissue[0, 0, :3] = CENTRAL_SINUS  # every vessel class present
    integ[0, 0, :3] = 0.7
    cfg = Cxcl12Config(enabled=True, source_level_nM=PerVesselClass(arteriole=7.0, sinusoid=3.0),
                       uptake_per_min=uptake)
    floor = 0.2
    want = _reference_coefficients(tissue, integ, cfg, floor)
    solver = _solver(tissue.shape, "f64", layout)
    assemble_cxcl12(tissue, integ, cxcl12_tables(cfg, floor), solver.D, solver.a, solver.vmax, solver.s,
                    gpu=layout == "voxels")
    got = solver.coefficients()
    for name, ref in zip(("D", "a", "vmax", "s"), want):
        np.testing.assert_array_equal(got[name], ref, err_msg=name)
    assert (want[3] > 0).sum() > 50 and (want[3][tissue != MARROW] == 0).all()


@pytest.mark.parametrize("uptake", [0.0, 0.3])
def test_solution_matches_scipy_reference_and_balances(taichi_backend, uptake):
    """Multigrid solve = scipy direct solve of the same operator; sum k c = sum s (no-flux box)."""
    from marrow3d.cxcl12 import Cxcl12FieldSolver, cxcl12_tables
    from marrow3d.kernels.ti_compat import ti

    tissue, cells, integ = R.synthetic_marrow((12, 14, 16), seed=5, damaged_fraction=0.4)
    tc = _config(enabled=True, half_life_min=10.0, uptake_per_min=uptake)
    floor = 0.2
    D, a, vmax, s = _reference_coefficients(tissue, integ, tc.cxcl12, floor)
    ref = R.solve_steady(D, a, vmax, s, 1.0, H_UM)
    solver = _solver(tissue.shape, "f64")
    fs = Cxcl12FieldSolver(cxcl12_tables(tc.cxcl12, floor), tc)
    u = ti.field(ti.f64, shape=tissue.shape)
    fields = []
    for arr, dt in ((tissue, ti.u8), (cells, ti.u8), (integ, ti.f32)):
        f = ti.field(dt, shape=tissue.shape)
        f.from_numpy(arr)
        fields.append(f)
    info = fs.solve(solver, u, *fields)
    assert info.converged
    got = u.to_numpy()
    scale = ref.max()
    assert scale > 0.5
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * scale)
    k = math.log(2.0) / 10.0
    active = D > 0
    k_vox = np.where(tissue == MARROW, k + uptake, k)  # uptake in marrow voxels only
    # steady state in a closed box: what decays is what is secreted (the "normalised" level)
    assert (k_vox * got)[active].sum() == pytest.approx(s.sum(), rel=1e-5)
    # a warm start from the solution needs no iteration (why the field is solved every step)
    again = fs.solve(solver, u, *fields)
    assert again.iterations == 0


@pytest.mark.parametrize("uptake", [0.0, 0.2])
def test_planar_source_decays_as_exp_minus_x_over_L(taichi_backend, uptake):
    """A sheet of stroma on a planar sinusoid: c(x) ~ exp(-x / L), L = sqrt(D / (k + uptake)), far
    from both ends."""
    from marrow3d.cxcl12 import Cxcl12FieldSolver, cxcl12_tables
    from marrow3d.kernels.ti_compat import ti

    shape = (2, 2, 256)
    tissue = np.full(shape, MARROW, np.uint8)
    tissue[..., 0] = SINUSOID
    integ = np.zeros(shape, np.float32)
    integ[..., 0] = 1.0
    D, t_half = 3.0e3, 30.0
    tc = _config(enabled=True, diffusivity_um2_per_min=D, half_life_min=t_half, uptake_per_min=uptake)
    L = math.sqrt(D / (math.log(2.0) / t_half + uptake))  # 360 um without uptake, 120 um with 0.2 /min
    fs = Cxcl12FieldSolver(cxcl12_tables(tc.cxcl12, 0.2), tc)
    u = ti.field(ti.f64, shape=shape)
    fields = []
    for arr, dt in ((tissue, ti.u8), (np.zeros(shape, np.uint8), ti.u8), (integ, ti.f32)):
        f = ti.field(dt, shape=shape)
        f.from_numpy(arr)
        fields.append(f)
    assert fs.solve(_solver(shape), u, *fields).converged
    c = u.to_numpy()[0, 0]
    n = int(round(5 * L / H_UM / 3))  # out to 5/3 L (600 um without uptake); the far end is > 5 L away
    x = np.arange(5, n)
    slope = np.polyfit(x * H_UM, np.log(c[x]), 1)[0]
    assert slope == pytest.approx(-1.0 / L, rel=2e-3)
    # the sheet secretes k level h per unit area; with the no-flux wall one voxel behind it all
    # of it decays in front: D c0 / L = k level h, so c0 = level h / L (10 nM x 10 / 360 ~ 0.28 nM)
    if uptake == 0.0:
        assert c[1] == pytest.approx(10.0 * H_UM / L, rel=0.05)
    # exact discrete solution: c_x = c_1 r^(x-1) in the marrow with r + 1/r - 2 = k_m h^2 / D; the
    # lumen voxel behind the sheet (decay only, no-flux wall) holds c_0 = alpha c_1; the balance at
    # voxel 1 then gives c_1 = k_m level h^2 / D / (1/r - alpha)
    k_v = math.log(2.0) / t_half
    k_m = k_v + uptake
    g = D / H_UM**2
    r = 1.0 + k_m / (2 * g) - math.sqrt((1.0 + k_m / (2 * g)) ** 2 - 1.0)
    alpha = g / (g + k_v)
    assert c[1] == pytest.approx(k_m * 10.0 / g / (1.0 / r - alpha), rel=1e-3)
    assert c[0] == pytest.approx(alpha * c[1], rel=1e-3)


def test_lost_vessel_secretes_nothing(taichi_backend):
    from marrow3d.cxcl12 import cxcl12_tables
    from marrow3d.kernels.cxcl12 import assemble_cxcl12

    shape = (3, 3, 3)
    tissue = np.full(shape, MARROW, np.uint8)
    tissue[1, 1, 1] = ARTERIOLE
    tissue[0, 0, 0] = BONE
    integ = np.zeros(shape, np.float32)
    integ[1, 1, 1] = 0.19
    solver = _solver(shape)
    tab = cxcl12_tables(Cxcl12Config(enabled=True), 0.2)
    assemble_cxcl12(tissue, integ, tab, solver.D, solver.a, solver.vmax, solver.s)
    assert not solver.coefficients()["s"].any()
    integ[1, 1, 1] = 0.5
    assemble_cxcl12(tissue, integ, tab, solver.D, solver.a, solver.vmax, solver.s)
    s = solver.coefficients()["s"].reshape(shape)
    k = math.log(2.0) / Cxcl12Config().half_life_min + Cxcl12Config().uptake_per_min  # marrow k
    assert np.count_nonzero(s) == 6 and s[0, 1, 1] == pytest.approx(k * 10.0 * 0.5)
    assert solver.coefficients()["D"].reshape(shape)[0, 0, 0] == 0.0
