"""Vessel remodeling: loss under signal, regeneration without, DFO, sinusoid sparing, floor."""

import numpy as np
import pytest
from pydantic import ValidationError

from marrow3d.config.vessels import VesselsConfig
from marrow3d.kernels import codes

SHAPE = (8, 8, 8)
A, S, C = codes.ARTERIOLE, codes.SINUSOID, codes.CENTRAL_SINUS

PARAMS = {
    "arteriole_loss_per_hour": 0.01,
    "sinusoid_loss_per_hour": 0.005,
    "sinusoid_min_integrity": 0.5,
    "signal_half_saturation": 1.0,
    "regeneration_per_hour": 0.02,
    "regeneration_signal_threshold": 0.1,
}


@pytest.fixture(scope="module")
def fields(taichi_backend):
    from marrow3d.kernels.ti_compat import ti

    tissue = np.zeros(SHAPE, np.uint8)
    tissue[0] = A
    tissue[7] = S
    tissue[4, 4, 4] = C
    f = {"tissue": ti.field(ti.u8, SHAPE), "integ": ti.field(ti.f32, SHAPE),
         "signal": ti.field(ti.f32, SHAPE)}
    f["tissue"].from_numpy(tissue)
    return f


def run(fields, *, signal, integ0=1.0, hours=10, dt=1.0, dfo=0.0, params=PARAMS):
    from marrow3d.kernels.vessels import update_integrity

    fields["signal"].from_numpy(np.broadcast_to(np.float32(signal), SHAPE).copy())
    fields["integ"].from_numpy(np.broadcast_to(np.float32(integ0), SHAPE).copy())
    for _ in range(int(round(hours / dt))):
        update_integrity(fields["tissue"], fields["integ"], fields["signal"], params,
                         dt_hours=dt, dfo_protection=dfo)
    return fields["integ"].to_numpy()


def test_arteriole_integrity_falls_with_signal(fields):
    out = run(fields, signal=3.0, hours=10)
    sat = 3.0 / (3.0 + 1.0)
    np.testing.assert_allclose(out[0], 1.0 - 0.01 * sat * 10, rtol=1e-5)
    weak = run(fields, signal=0.5, hours=10)
    assert weak[0].mean() > out[0].mean()  # saturating in the signal
    assert (out[1:7][fields["tissue"].to_numpy()[1:7] == codes.MARROW] == 1.0).all()


def test_integrity_clamped_at_zero(fields):
    out = run(fields, signal=100.0, integ0=0.05, hours=20)
    assert (out[0] == 0.0).all()


def test_regeneration_when_signal_is_low(fields):
    out = run(fields, signal=0.0, integ0=0.3, hours=24)
    np.testing.assert_allclose(out[0], 1.0 - 0.7 * np.exp(-0.02 * 24), rtol=1e-5)
    assert out.max() <= 1.0


def test_dfo_cuts_the_arteriole_loss(fields):
    base = 1.0 - run(fields, signal=3.0, hours=10)[0, 0, 0]
    with_dfo = 1.0 - run(fields, signal=3.0, hours=10, dfo=0.8)[0, 0, 0]
    assert with_dfo == pytest.approx(0.2 * base, rel=1e-4)
    full = run(fields, signal=3.0, hours=10, dfo=1.0)
    assert (full[0] == 1.0).all()


def test_sinusoids_are_spared_above_their_minimum(fields):
    out = run(fields, signal=3.0, hours=20)
    np.testing.assert_allclose(out[7], 1.0 - 0.005 * 0.75 * 20, rtol=1e-5)  # leak rises
    long = run(fields, signal=100.0, hours=400)
    assert (long[7] == pytest.approx(0.5)) and long[4, 4, 4] == pytest.approx(0.5)
    assert (long[0] == 0.0).all()  # while arterioles are lost
    below = run(fields, signal=100.0, integ0=0.3, hours=5)
    assert (below[7] == pytest.approx(0.3))  # an imported low value is not pushed further


def test_signal_is_sensed_from_marrow_neighbours(fields):
    from marrow3d.kernels.vessels import update_integrity

    sig = np.zeros(SHAPE, np.float32)
    sig[1, 2, 3] = 3.0  # only a marrow voxel next to arteriole voxel (0, 2, 3) carries signal
    fields["signal"].from_numpy(sig)
    fields["integ"].fill(1.0)
    update_integrity(fields["tissue"], fields["integ"], fields["signal"], PARAMS, dt_hours=1.0)
    out = fields["integ"].to_numpy()
    assert out[0, 2, 3] == pytest.approx(1.0 - 0.01 * 0.75)
    assert (np.delete(out[0].ravel(), 2 * 8 + 3) == 1.0).all()


def test_stats_and_parameter_checks(fields):
    from marrow3d.kernels.vessels import update_integrity

    run(fields, signal=100.0, integ0=0.25, hours=10)  # arterioles to 0.15, below the floor
    tissue, integ = fields["tissue"].to_numpy(), fields["integ"].to_numpy()
    art = integ[tissue == codes.ARTERIOLE]
    sin = integ[(tissue == codes.SINUSOID) | (tissue == codes.CENTRAL_SINUS)]
    assert art.size == 64 and sin.size == 65
    assert np.all(art < 0.2) and np.all(sin >= 0.2)
    assert art.astype(np.float64).mean() == pytest.approx(0.25 - 0.01 * 100 / 101 * 10, rel=1e-5)
    with pytest.raises(ValueError, match="unknown"):
        update_integrity(fields["tissue"], fields["integ"], fields["signal"],
                         {**PARAMS, "typo": 1.0})
    with pytest.raises(ValueError):
        update_integrity(fields["tissue"], fields["integ"], fields["signal"], PARAMS,
                         dfo_protection=1.5)


def test_floor_switches_niche_slots_off(fields, taichi_backend):
    """A lodged HSC loses its slot when the arteriole behind it falls below the floor."""
    from marrow3d.config.cells import CellsConfig
    from marrow3d.kernels.cells import CellLattice
    from marrow3d.kernels.ti_compat import ti

    vcfg = VesselsConfig()
    niche = ti.field(ti.u8, SHAPE)
    n = np.zeros(SHAPE, np.uint8)
    n[1] = codes.NICHE_ENDOSTEAL  # next to the arteriole plane
    n[6] = codes.NICHE_PERIVASCULAR  # next to the sinusoid plane
    niche.from_numpy(n)
    cells = np.where(n != 0, codes.HSC, codes.EMPTY).astype(np.uint8)
    lat = CellLattice(SHAPE, CellsConfig().kernel_params(), seed=3)
    lat.set_cells(cells)
    fields["integ"].fill(1.0)
    lat.update_niches(fields["tissue"], niche, fields["integ"], vcfg.integrity_floor)
    m = lat.metrics(fields["tissue"], niche)
    assert m["niche_endosteal_hsc"] == 64 and m["niche_perivascular_hsc"] == 64
    # high signal for long: arterioles fall through the floor, sinusoids stop at their minimum
    fields["signal"].fill(50.0)
    from marrow3d.kernels.vessels import update_integrity

    for _ in range(30):
        update_integrity(fields["tissue"], fields["integ"], fields["signal"],
                         vcfg.kernel_params(), dt_hours=24.0)
    lat.update_niches(fields["tissue"], niche, fields["integ"], vcfg.integrity_floor)
    m = lat.metrics(fields["tissue"], niche)
    assert m["niche_endosteal_functional"] == 0 and m["niche_endosteal_hsc"] == 0
    assert m["niche_endosteal_free_cell"] == 64
    assert m["niche_perivascular_functional"] == 64 and m["niche_perivascular_hsc"] == 64


def test_vessels_config():
    cfg = VesselsConfig()
    from marrow3d.kernels.vessels import VESSEL_PARAMS

    assert set(cfg.kernel_params()) == set(VESSEL_PARAMS)
    assert cfg.sinusoid_min_integrity >= cfg.integrity_floor
    with pytest.raises(ValidationError):
        VesselsConfig(sinusoid_min_integrity=0.1, integrity_floor=0.2)
    with pytest.raises(ValidationError):
        VesselsConfig(arteriole_loss_rate_per_dya=0.1)
    for name, field in VesselsConfig.model_fields.items():
        assert field.description, name
