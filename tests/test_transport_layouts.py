"""The GPU kernel layout (``voxels``), forced on the CPU backend, against the CPU one (``rows``).

Every stencil, transfer and coarsening kernel does the same arithmetic per voxel in both
layouts, so their outputs must be bitwise identical; reductions sum in another fixed order, so
norms agree to rounding and the solves to the solver tolerance. The GPU layout also has its own
coarse solve (hierarchy down to one cell), batched pocket kernel and lane-tree reductions,
checked here against the scipy reference and for run-to-run identity. Grids have a largest
dimension in 17..32, so every GPU-layout solver here shares one compiled small-level cycle.
"""

import numpy as np
import pytest

from marrow3d.kernels import transport_reference as R

H_UM = 10.0
SHAPE = (13, 17, 19)  # odd sizes; 4199 cells: rows coarsens to 7x9x10, voxels to 1x1x1


def _problem(rng, shape=SHAPE, bone=0.15):
    """Random heterogeneous coefficients with inactive voxels and a nonlinear term."""
    D = rng.uniform(2e4, 1.5e5, shape)
    D[rng.random(shape) < bone] = 0.0
    a = rng.uniform(0.0, 2.0, shape)
    vmax = rng.uniform(0.0, 300.0, shape)
    s = np.where(rng.random(shape) < 0.1, rng.uniform(100, 5000, shape), 0.0)
    D.flat[0], a.flat[0], s.flat[0] = 1e5, 50.0, 1000.0
    return D, a, vmax, s


def _pair(coeffs, dtype_name="f64", **kw):
    from marrow3d.kernels.ti_compat import ti
    from marrow3d.transport_solver import MultigridSolver

    D = coeffs[0]
    out = []
    for layout in ("rows", "voxels"):
        solver = MultigridSolver(D.shape, H_UM, dtype=getattr(ti, dtype_name), layout=layout, **kw)
        solver.set_coefficients(*coeffs)
        out.append(solver)
    return out


def _pool(solver, name):
    return solver._pools[name].to_numpy()


def _level_slice(solver, lev):
    lv = solver.levels[lev]
    return slice(lv.offset, lv.offset + lv.size)


@pytest.mark.parametrize("dtype_name", ["f32", "f64"])
def test_operator_and_coarsening_kernels_are_bitwise_identical(taichi_backend, rng, dtype_name):
    """Conductances, fingerprint, residual/diagonal, coarse operators: the same bits."""
    rows, vox = _pair(_problem(rng), dtype_name)
    u = rng.uniform(0.0, 30.0, SHAPE)
    for s in (rows, vox):
        s._load(u)
        s._prepare_operator()
        s._residual(1.0, 0.0)
        s._prepare_coarse()
    common = [lev for lev in range(len(rows.levels)) if lev < len(vox.levels)]
    assert rows.levels[1].shape == vox.levels[1].shape
    for name in ("gz", "gy", "gx", "diag", "inv_diag"):
        for lev in common:
            a = _pool(rows, name)[_level_slice(rows, lev)]
            b = _pool(vox, name)[_level_slice(vox, lev)]
            assert np.array_equal(a, b), (name, lev)
    assert np.array_equal(_pool(rows, "b")[_level_slice(rows, 0)], _pool(vox, "b")[_level_slice(vox, 0)])  # F
    from marrow3d.kernels.solver_plan import S_FF, S_FP, S_FP2, S_JJ, S_SS, S_VM, S_XX

    sr, sv = rows._scalars(), vox._scalars()
    assert (sr[S_FP], sr[S_FP2]) == (sv[S_FP], sv[S_FP2])  # exact integer fingerprints
    assert sr[S_FP] == float(sr[S_FP]) and sr[S_FP] > 0
    for slot in (S_FF, S_SS, S_VM, S_XX, S_JJ):  # float64 sums in another order
        assert sv[slot] == pytest.approx(sr[slot], rel=1e-12)


def test_level_visit_kernels_are_bitwise_identical(taichi_backend, rng):
    """Pre-smoothing + restriction and prolongation + post-smoothing of the finest level."""
    from marrow3d.kernels import multigrid as mg
    from marrow3d.kernels.solver_plan import C_LIVE

    rows, vox = _pair(_problem(rng), "f32")
    u = rng.uniform(0.0, 30.0, SHAPE)
    b0 = rng.standard_normal(SHAPE).astype(np.float32)
    e1 = None
    for s in (rows, vox):
        s._load(u)
        s._prepare_operator()
        s._residual(1.0, 0.0)
        s._prepare_coarse()
        pools = s._pool_args("gz", "gy", "gx", "diag", "inv_diag", "b", "e")
        b = s._pools["b"].to_numpy()
        b[_level_slice(s, 0)][s._pad : s._pad + s.n] = b0.ravel()
        s._pools["b"].from_numpy(b)
        s._scal.from_numpy(np.where(np.arange(s._scal.shape[0]) == C_LIVE, 1.0, 0.0))
        mg.presmooth_restrict(*pools, s._meta, s._scal, 0, True, 2, s.gpu_layout)
        if e1 is None:
            e1 = rng.standard_normal(s.levels[1].n).astype(np.float32)
        e = s._pools["e"].to_numpy()
        lv1 = s.levels[1]
        e[lv1.offset + lv1.pad : lv1.offset + lv1.pad + lv1.n] = e1
        s._pools["e"].from_numpy(e)
    for name in ("e", "b"):
        a, b = _pool(rows, name), _pool(vox, name)
        for lev in (0, 1):
            assert np.array_equal(a[_level_slice(rows, lev)], b[_level_slice(vox, lev)]), (name, lev)
    for s in (rows, vox):
        gz, gy, gx, _, inv_diag, b, e = s._pool_args("gz", "gy", "gx", "diag", "inv_diag", "b", "e")
        mg.prolong_postsmooth(gz, gy, gx, inv_diag, b, e, s._meta, s._scal, 0, 2, s.gpu_layout)
    assert np.array_equal(_pool(rows, "e")[_level_slice(rows, 0)], _pool(vox, "e")[_level_slice(vox, 0)])


@pytest.mark.parametrize("kind", ["numpy", "field"])
def test_assembly_and_load_store_are_bitwise_identical(taichi_backend, rng, kind):
    from marrow3d.kernels import transport as T
    from marrow3d.kernels.ti_compat import ti

    tissue, cells, integ = R.synthetic_marrow(SHAPE, seed=2)
    rows, vox = _pair(_problem(rng), "f32")
    args = (tissue, cells, integ)
    if kind == "field":
        args = []
        for arr, dt in ((tissue, ti.u8), (cells, ti.u8), (integ, ti.f32)):
            f = ti.field(dt, shape=SHAPE)
            f.from_numpy(arr)
            args.append(f)
    for s in (rows, vox):
        T.assemble_coefficients(*args, R.oxygen_tables(), s.D, s.a, s.vmax, s.s, gpu=s.gpu_layout)
    for k, v in rows.coefficients().items():
        assert np.array_equal(v, vox.coefficients()[k]), k
    u = rng.uniform(-1.0, 30.0, SHAPE).astype(np.float32)
    outs = []
    for s in (rows, vox):
        if kind == "field":
            f = ti.field(ti.f32, shape=SHAPE)
            f.from_numpy(u)
            s._load(f)
            s._store(f)
            outs.append(f.to_numpy())
        else:
            v = u.copy()
            s._load(v)
            s._store(v)
            outs.append(v)
    assert np.array_equal(outs[0], outs[1]) and outs[0].min() >= 0


@pytest.mark.parametrize("nonlinear", [True, False])
def test_gpu_layout_solves_match_reference_and_are_reproducible(taichi_backend, rng, nonlinear):
    D, a, vmax, s = _problem(rng)
    if not nonlinear:
        vmax[:] = 0.0
    rows, vox = _pair((D, a, vmax, s), "f64")
    sols = {}
    for solver in (rows, vox):
        u = np.zeros(SHAPE)
        info = solver.solve(u, 1.0, tol=1e-10)
        assert info.converged, (solver.plan.layout, info)
        sols[solver.plan.layout] = (u, info)
    want = R.solve_steady(D, a, vmax, s, 1.0, H_UM)
    for u, _ in sols.values():
        np.testing.assert_allclose(u, want, rtol=1e-7, atol=1e-9 * np.abs(want).max())
    assert abs(sols["voxels"][1].iterations - sols["rows"][1].iterations) <= 1
    u2 = np.zeros(SHAPE)
    info2 = vox.solve(u2, 1.0, tol=1e-10)  # the lane tree: a fixed order, identical bits
    assert np.array_equal(u2, sols["voxels"][0]) and info2.residual_history == sols["voxels"][1].residual_history


def test_gpu_layout_pockets_and_scale(taichi_backend):
    """Sealed pockets (batched red-black kernel) and a huge vessel exchange in the GPU layout."""
    from marrow3d.kernels.ti_compat import ti
    from marrow3d.transport_solver import MultigridSolver

    n = 20
    shape = (n, n, n)
    rng = np.random.default_rng(4)
    a = np.full(shape, 0.005)
    s = np.zeros(shape)
    vessel = rng.random(shape) < 0.01
    a[vessel] += 20.0
    s[vessel] = 6.0
    D = np.full(shape, 1.2e4)
    for cz, cy, cx in [(4, 4, 4), (4, 15, 10), (15, 5, 14), (14, 14, 4)]:
        D[cz - 3 : cz + 4, cy - 3 : cy + 4, cx - 3 : cx + 4] = 0.0
        D[cz - 2 : cz + 3, cy - 2 : cy + 3, cx - 2 : cx + 3] = 1.2e4
        a[cz, cy, cx] += 20.0
        s[cz, cy, cx] = 6.0
    its = {}
    for layout in ("rows", "voxels"):
        solver = MultigridSolver(shape, H_UM, dtype=ti.f64, layout=layout)
        solver.set_coefficients(D=D, a=a, vmax=np.zeros(shape), s=s)
        u = np.zeros(shape)
        info = solver.solve(u, 1.0, tol=1e-8)
        assert info.converged and solver._n_pockets == 4, info
        its[layout] = info.iterations
        np.testing.assert_allclose(u, R.solve_steady(D, a, np.zeros(shape), s, 1.0, H_UM), rtol=1e-6, atol=1e-9)
    assert its["voxels"] <= its["rows"] + 2, its
    # the issue-16 slab with a vessel exchange of 1e8 /min: right answer in this layout too
    slab = (1, 1, 23)
    Ds, as_, vs, ss = np.full(slab, 1.2e5), np.zeros(slab), np.full(slab, 461.54), np.zeros(slab)
    for i in (0, 22):
        as_[0, 0, i], ss[0, 0, i], vs[0, 0, i] = 1e8, 2e9, 0.0
    solver = MultigridSolver(slab, H_UM, dtype=ti.f32, layout="voxels")
    solver.set_coefficients(D=Ds, a=as_, vmax=vs, s=ss)
    u = np.zeros(slab, np.float32)
    assert solver.solve(u, 1.0).converged
    assert u[0, 0, 11] == pytest.approx(1.9326, abs=2e-4)


@pytest.mark.parametrize("layout", ["rows", "voxels"])
def test_flag_checks_and_fused_levels_do_not_change_results(taichi_backend, rng, layout):
    """CG launched in batches of 1, 3 or 7 iterations between reads of the device-side flag
    (no-op iterations after convergence), and the small levels visited one launch per level
    instead of one per cycle: identical bits and iteration counts."""
    from marrow3d.kernels.ti_compat import ti
    from marrow3d.transport_solver import MultigridSolver

    coeffs = _problem(rng, shape=(20, 22, 24))
    results = []
    for check_every, fused in ((1, True), (3, True), (7, False)):
        solver = MultigridSolver(coeffs[0].shape, H_UM, dtype=ti.f32, layout=layout, check_every=check_every)
        if not fused:
            solver._fused_from = len(solver.levels) - 1  # coarsest alone in cycle_levels
        solver.set_coefficients(*coeffs)
        u = np.zeros(coeffs[0].shape, np.float32)
        info = solver.solve(u, 1.0)
        assert info.converged
        results.append((u, info.iterations, info.residual_history))
    for u, its, hist in results[1:]:
        assert np.array_equal(u, results[0][0]) and its == results[0][1] and hist == results[0][2]


def test_register_array_grows_for_long_newton_histories(taichi_backend, rng):
    """The residual history rides in the register array (read with the last registers); a
    solve allowed more Newton steps than it holds gets a larger array, same results."""
    from marrow3d.kernels.solver_plan import HISTORY, N_SCAL
    from marrow3d.kernels.ti_compat import ti
    from marrow3d.transport_solver import MultigridSolver

    coeffs = _problem(rng, shape=(17, 9, 11))
    solver = MultigridSolver(coeffs[0].shape, H_UM, dtype=ti.f64)
    solver.set_coefficients(*coeffs)
    runs = []
    for max_newton in (50, 3 * HISTORY):
        u = np.zeros(coeffs[0].shape)
        info = solver.solve(u, 1.0, tol=1e-10, max_newton=max_newton)
        assert info.converged and len(info.residual_history) == info.newton_iterations + 1
        runs.append((u, info.residual_history))
    assert solver._scal.shape[0] == N_SCAL + 3 * HISTORY + 2
    assert np.array_equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]
