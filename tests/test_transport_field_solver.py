"""FieldSolver: coefficient tables updated in place, assembly in the solver's layout."""

import numpy as np

from marrow3d.kernels import transport_reference as R


def test_blood_level_updates_the_device_table_in_place(taichi_backend):
    from marrow3d.config import load_config
    from marrow3d.transport import FieldSolver, drug_tables
    from marrow3d.transport_solver import MultigridSolver

    cfg = load_config(None, [])
    tc = cfg.transport
    shape = (6, 7, 8)
    tissue, cells, integ = R.synthetic_marrow(shape, seed=1)
    leak = np.array(tc.exchange.leak.as_table())
    fs = FieldSolver("cytarabine", drug_tables(tc.drugs.cytarabine, leak, 0.2), 1.0, tc)
    solver = MultigridSolver(shape, 10.0)
    sources = []
    for level in (1.0, 2.5, 2.5):
        fs.set_blood_level(level)
        fs.assemble(solver, tissue, cells, integ)
        if len(sources) == 0:
            packed = fs._packed
        assert fs._packed is packed  # one device table for the run, rewritten in place
        sources.append(solver.coefficients()["s"].astype(np.float64))
        want = R.assemble_coefficients(tissue, cells, integ, fs.tables)[3]
        np.testing.assert_allclose(sources[-1], want, rtol=1e-6)
    vessel = sources[0] > 0
    assert vessel.any()
    np.testing.assert_allclose(sources[1][vessel], 2.5 * sources[0][vessel], rtol=1e-6)
    assert np.array_equal(sources[1], sources[2])
