"""Transport solver against analytic solutions (docs/model.md section 2) and their convergence.

Boundary placement matters for the observed order. A Dirichlet wall is imposed through one
layer of "vessel" voxels with a huge exchange rate E (u -> u_blood there): the wall then sits
at that layer's cell *centres*, a grid node, and the scheme stays second order when the
analytic domain is measured from there. No-flux walls sit on cell faces, which the
cell-centred scheme also treats to second order. A voxelised sphere has a staircase surface:
that case is checked to first order only, as expected.
"""

import numpy as np
import pytest

E_WALL = 1e10  # [1/min] exchange of the Dirichlet layer: wall error ~ g/E ~ 1e-5 at worst


def solve_planar(taichi_backend, n_cells, length_um, D, lam, C0, axis=2, vmax=0.0, km=1.0, tol=1e-12):
    """1-D problem along ``axis`` on a thin 3-D grid: Dirichlet C0 at cell 0, no flux at the far face.

    The domain [0, H] runs from the centre of the wall cell (x = 0) to the far face,
    H = (n_cells + 1/2) h. Returns the node positions x_i = i h and the solution.
    """
    from marrow3d.transport_solver import MultigridSolver
    from marrow3d.kernels.ti_compat import ti

    h = length_um / (n_cells + 0.5)
    shape = [2, 3, 2]
    shape[axis] = n_cells + 1
    shape = tuple(shape)
    wall = [slice(None)] * 3
    wall[axis] = 0
    wall = tuple(wall)
    a = np.full(shape, lam, float)
    s = np.zeros(shape)
    vm = np.full(shape, vmax, float)
    a[wall], s[wall], vm[wall] = E_WALL, E_WALL * C0, 0.0
    solver = MultigridSolver(shape, h, dtype=ti.f64)
    solver.set_coefficients(D=np.full(shape, D, float), a=a, vmax=vm, s=s)
    u = np.zeros(shape)
    info = solver.solve(u, km, tol=tol)
    assert info.converged, info
    line = np.moveaxis(u, axis, 0)
    # y/z copies of a 1-D problem must agree exactly (no spurious transverse coupling)
    assert np.ptp(line.reshape(shape[axis], -1), axis=1).max() <= 1e-12 * C0
    return np.arange(shape[axis]) * h, line[:, 0, 0]


def observed_order(hs, errs):
    slope, _ = np.polyfit(np.log(hs), np.log(errs), 1)
    return slope


def test_slab_with_decay_worked_numbers():
    """Worked case: L = H = 100 um gives C(50)/C0 = 0.7308 and C(100)/C0 = 0.6481."""
    H = L = 100.0
    C = lambda x: np.cosh((H - x) / L) / np.cosh(H / L)  # noqa: E731
    assert C(50.0) == pytest.approx(0.7308, abs=1e-4)
    assert C(100.0) == pytest.approx(0.6481, abs=1e-4)


@pytest.mark.parametrize("axis", [2, 0])
def test_slab_with_decay_second_order(taichi_backend, axis):
    """D C'' = lam C, C(0) = C0, C'(H) = 0: C = C0 cosh((H - x)/L) / cosh(H/L), order 2."""
    H = L = 100.0
    D = 1.2e5  # um^2/min
    lam = D / L**2
    C0 = 2.0
    hs, errs = [], []
    for m in (10, 20, 40, 80):
        x, u = solve_planar(taichi_backend, m, H, D, lam, C0, axis=axis)
        exact = C0 * np.cosh((H - x) / L) / np.cosh(H / L)
        hs.append(x[1])
        errs.append(np.abs(u - exact).max() / C0)
    assert errs[-1] < 1e-5
    order = observed_order(hs, errs)
    assert 1.8 <= order <= 2.2, (order, errs)


def test_cosine_mode_second_order(taichi_backend):
    """-D u'' + lam u = A cos(pi x / Lx) + B with no-flux walls (cell faces) on both ends.

    u = A cos(pi x/Lx) / (D pi^2/Lx^2 + lam) + B / lam; source sampled at cell centres.
    """
    from marrow3d.transport_solver import MultigridSolver
    from marrow3d.kernels.ti_compat import ti

    Lx, D, lam, A, B = 400.0, 1.2e4, 0.05, 3.0, 3.0
    hs, errs = [], []
    for n in (8, 16, 32, 64):
        h = Lx / n
        z = (np.arange(n) + 0.5) * h
        shape = (n, 2, 3)
        src = np.broadcast_to((A * np.cos(np.pi * z / Lx) + B)[:, None, None], shape)
        solver = MultigridSolver(shape, h, dtype=ti.f64)
        solver.set_coefficients(D=np.full(shape, D), a=np.full(shape, lam), vmax=np.zeros(shape), s=src)
        u = np.zeros(shape)
        info = solver.solve(u, 1.0, tol=1e-10)  # the float64 floor is ~1e-12 here (weak sink)
        assert info.converged, info
        exact = A * np.cos(np.pi * z / Lx) / (D * np.pi**2 / Lx**2 + lam) + B / lam
        hs.append(h)
        errs.append(np.abs(u[:, 1, 2] - exact).max() / np.abs(exact).max())
    order = observed_order(hs, errs)
    assert 1.8 <= order <= 2.2, (order, errs)


def test_zero_order_slab(taichi_backend):
    """Zero-order uptake (Michaelis-Menten with km << u): P = P0 + (A/2)(x^2 - 2 H x).

    Worked case (A = 3.85e-3 mmHg/um^2, P0 = 20 mmHg; H_max = 102 um) with
    H = 80 um so that P > 0 throughout. A quadratic is reproduced exactly by the cell-centred
    scheme, so what remains is the km and wall-layer error.
    """
    A, P0, H, D = 3.85e-3, 20.0, 80.0, 1.2e5
    assert np.sqrt(2 * P0 / A) == pytest.approx(102, abs=0.5)  # H_max of the worked example
    km = 1e-6  # mmHg: consumption = vmax (1 - O(km/P)) -> zero order
    for m in (16, 48):
        x, u = solve_planar(taichi_backend, m, H, D, 0.0, P0, vmax=A * D, km=km)
        exact = P0 + 0.5 * A * (x**2 - 2 * H * x)
        assert exact.min() > 5.0
        np.testing.assert_allclose(u, exact, atol=1e-4 * P0)


def test_michaelis_menten_slab_is_monotone_and_nonnegative(taichi_backend):
    """Past H_max the zero-order profile would go negative: with MM it must stay >= 0."""
    A, P0, H, D = 3.85e-3, 20.0, 300.0, 1.2e5  # H >> H_max = 102 um: an anoxic core
    x, u = solve_planar(taichi_backend, 60, H, D, 0.0, P0, vmax=A * D, km=1.0, tol=1e-10)
    assert np.all(u >= 0)
    assert np.all(np.diff(u) <= 1e-12)  # monotone decreasing away from the wall
    assert u[-1] < 0.1  # the far end is anoxic (P << km)


def test_dirichlet_sphere_with_decay(taichi_backend):
    """Sphere of radius a held at C0 with decay: C = C0 (a/r) e^{-(r-a)/L}.

    One octant: the sphere's centre sits on the domain corner and the no-flux walls act as
    symmetry planes. Voxels whose centre lies inside the sphere form the Dirichlet layer
    (strong exchange). The staircase surface makes this first order in h: check the error
    halves under refinement and is a few percent at h = a/8.
    """
    from marrow3d.transport_solver import MultigridSolver
    from marrow3d.kernels.ti_compat import ti

    # worked numbers first (a = 10 um, L = 100 um)
    C = lambda r, a, L: (a / r) * np.exp(-(r - a) / L)  # noqa: E731
    np.testing.assert_allclose([C(r, 10, 100) for r in (20, 50, 100, 200)], [0.452, 0.134, 0.0407, 0.0075], atol=6e-4)

    a_r, L, D, C0, dom = 20.0, 50.0, 1.2e4, 1.0, 200.0
    errs = []
    for h in (5.0, 2.5):
        n = int(round(dom / h))
        c = (np.arange(n) + 0.5) * h
        Z, Y, X = np.meshgrid(c, c, c, indexing="ij")
        r = np.sqrt(X**2 + Y**2 + Z**2)
        inside = r <= a_r
        shape = (n, n, n)
        solver = MultigridSolver(shape, h, dtype=ti.f64)
        solver.set_coefficients(
            D=np.full(shape, D), a=np.where(inside, E_WALL, D / L**2), vmax=np.zeros(shape),
            s=np.where(inside, E_WALL * C0, 0.0),
        )
        u = np.zeros(shape)
        info = solver.solve(u, 1.0, tol=1e-10)
        assert info.converged, info
        # compare away from the surface and from the far walls (whose image adds < 1e-3)
        m = (r > a_r + 2 * h) & (r < 120.0)
        exact = C(r[m], a_r, L) * C0
        errs.append(np.abs(u[m] - exact).max() / exact.max())
    assert errs[1] < 0.06, errs
    assert 1.5 < errs[0] / errs[1] < 2.6, errs  # first order: the staircase surface


def test_steady_mass_balance(taichi_backend):
    """At steady state vessel supply + secretion = uptake + decay (float64, 1e-6 relative).

    Two fields on one synthetic marrow: O2-like (Michaelis-Menten, exchange feeds) and a
    remodeling signal (secreted by leukemic cells, decays, washed out by vessels with u_blood
    = 0, so the exchange is a loss).
    """
    from marrow3d.kernels import transport as T
    from marrow3d.kernels import transport_reference as R
    from marrow3d.transport_solver import MultigridSolver
    from marrow3d.kernels.ti_compat import ti

    shape = (24, 26, 28)
    tissue, cells, integ = R.synthetic_marrow(shape, seed=5)
    oxygen = R.oxygen_tables(decay_by_tissue=[0.1, 0, 0.1, 0.1, 0.1, 0])
    signal = R.CoefficientTables(
        diffusivity_by_tissue=[3e3, 0, 3e3, 3e3, 3e3, 0],
        decay_by_tissue=[0.05] * 6,
        secretion_by_cell=[0, 0, 0, 1.0, 1.0],
        exchange_by_class=[5.0, 20.0],
        leak_by_class=[1.0, 3.0],
        blood_by_class=[0.0, 0.0],
        integrity_floor=0.1,
    )
    solver = MultigridSolver(shape, 10.0, dtype=ti.f64)
    cases = ((oxygen, 1.0, "exchange", ("uptake", "decay")), (signal, 1.0, "secretion", ("decay",)))
    for tables, km, in_key, out_keys in cases:
        T.assemble_coefficients(tissue, cells, integ, tables, solver.D, solver.a, solver.vmax, solver.s)
        u = np.zeros(shape)
        info = solver.solve(u, km, tol=1e-10)
        assert info.converged, info
        assert u.min() >= 0.0
        tot = R.balance_totals(u, tissue, cells, integ, tables, km, 10.0)  # the numpy oracle
        supply = tot["exchange"] + tot["secretion"]
        loss = tot["uptake"] + tot["decay"]
        assert tot[in_key] > 0 and all(tot[k] > 0 for k in out_keys)
        assert abs(supply - loss) <= 1e-6 * max(abs(supply), abs(loss)), tot
    assert tot["exchange"] < 0  # the signal drains into the vessels


def test_backward_euler_uniform_decay_first_order(taichi_backend):
    """A uniform field with decay k: BE gives (1 + k dt)^-n, first order towards exp(-k t)."""
    from marrow3d.transport_solver import MultigridSolver
    from marrow3d.kernels.ti_compat import ti

    k, T_end, u0 = 0.5, 2.0, 3.0  # 1/min, min
    shape = (6, 5, 7)
    solver = MultigridSolver(shape, 10.0, dtype=ti.f64)
    solver.set_coefficients(D=np.full(shape, 1e4), a=np.full(shape, k), vmax=np.zeros(shape), s=np.zeros(shape))
    dts, errs = [], []
    for steps in (8, 16, 32, 64):
        dt = T_end / steps
        u = np.full(shape, u0)
        for _ in range(steps):
            info = solver.backward_euler_step(u, 1.0, dt, tol=1e-12)
            assert info.converged, info
        assert np.ptp(u) <= 1e-12 * u0  # stays uniform: no spurious boundary flux
        assert u[0, 0, 0] == pytest.approx(u0 * (1 + k * dt) ** -steps, rel=1e-10)
        dts.append(dt)
        errs.append(abs(u[0, 0, 0] - u0 * np.exp(-k * T_end)))
    order = observed_order(dts, errs)
    assert 0.9 <= order <= 1.1, (order, errs)


@pytest.mark.parametrize("dtype_name", ["f32", "f64"])
def test_backward_euler_matches_reference_step(taichi_backend, dtype_name):
    """One implicit step of a heterogeneous Michaelis-Menten problem against the scipy step."""
    from marrow3d.kernels import transport as T
    from marrow3d.kernels import transport_reference as R
    from marrow3d.transport_solver import MultigridSolver
    from marrow3d.kernels.ti_compat import ti

    dtype = getattr(ti, dtype_name)
    npdt = np.float32 if dtype == ti.f32 else np.float64
    shape = (14, 15, 16)
    tissue, cells, integ = R.synthetic_marrow(shape, seed=9)
    solver = MultigridSolver(shape, 10.0, dtype=dtype)
    T.assemble_coefficients(tissue, cells, integ, R.oxygen_tables(), solver.D, solver.a, solver.vmax, solver.s)
    c = {k: v.astype(np.float64) for k, v in solver.coefficients().items()}
    rng = np.random.default_rng(3)
    u_old = np.where(c["D"] > 0, rng.uniform(5.0, 25.0, shape), 0.0).astype(npdt)
    want = R.backward_euler_step(u_old.astype(np.float64), c["D"], c["a"], c["vmax"], c["s"], 1.0, 10.0, 0.01)
    u = u_old.copy()
    info = solver.backward_euler_step(u, 1.0, 0.01, tol=1e-8)
    assert info.converged, info
    err = np.abs(u - want).max() / np.abs(want).max()
    assert err < 1e-5, err
