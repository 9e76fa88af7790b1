"""Each cell rule alone on a small lattice, against its expectation.

Rates are switched on one at a time (everything else zero), so each stochastic outcome is a
binomial count whose mean follows from the rate law; counts must fall within 5 standard
deviations. Structural rules (where a daughter may go, who may displace whom, conservation
under moves) are checked voxel by voxel. One lattice (20^3 voxels) serves the whole module so
the kernels compile once.
"""

from types import SimpleNamespace

import numpy as np
import pytest

from marrow3d.config.cells import CellsConfig
from marrow3d.kernels import codes
from marrow3d.kernels.cells_params import SCALAR_PARAMS, TYPE_PARAMS, pack_params
from marrow3d.kernels.cells_rules import (
    division_rate_np,
    drug_kill_rate_np,
    event_probability_np,
    hif_response_np,
)

SHAPE = (20, 20, 20)
E, H, P, L, B = codes.EMPTY, codes.HSC, codes.PROGENITOR, codes.LSC, codes.BLAST
LODGED, MOBILIZED = 1, 2


def null_params(**changes):
    """Kernel parameters with every rate and probability 0, then ``changes`` applied.

    Per-type changes are given as ``name={"blast": x}`` (other types stay 0).
    """
    p = CellsConfig().kernel_params()
    keep = {
        "hif_p50_mmHg",
        "hif_hill",
        "s_phase_hours",
        "cycle_hours",
        "cytarabine_ec50_uM",
        "daunorubicin_ec50_uM",
        "progenitor_max_generation",
        "blast_max_generation",  # 255 (blast maturation off) unless a test sets it
        "mature_exit_far_factor",
        "severe_hypoxia_threshold_mmHg",
        "lsc_free_self_renewal_factor",  # 1: stemness independent of the niche
        "conditioning_hours",  # > 0 (pack_params); the mechanism itself is off
        "deconditioning_hours",
    }
    for name in TYPE_PARAMS:
        p[name] = {k: 0.0 for k in p[name]}
    p["lodged_division_multiplier"] = {k: 1.0 for k in p["lodged_division_multiplier"]}
    for name in SCALAR_PARAMS:
        if name not in keep:
            p[name] = 0.0
    for name, value in changes.items():
        if name in TYPE_PARAMS:
            p[name] = {**p[name], **value}
        else:
            p[name] = value
    return p


def within_binomial(k, n, p, z=5.0):
    sd = np.sqrt(n * p * (1.0 - p))
    return abs(k - n * p) <= z * sd + 1.0


@pytest.fixture(scope="module")
def env(taichi_backend):
    from marrow3d.kernels.cells import CellLattice
    from marrow3d.kernels.ti_compat import ti

    fields = {name: ti.field(ti.u8, SHAPE) for name in ("tissue", "niche")}
    fields.update({n: ti.field(ti.f32, SHAPE) for n in ("integrity", "oxygen", "ara", "dnr")})
    lat = CellLattice(SHAPE, null_params(), seed=11)
    return SimpleNamespace(lat=lat, **fields)


def setup(env, *, params, cells, tissue=None, niche=None, flags=None, generation=None,
          integrity=1.0, oxygen=20.0, ara=0.0, dnr=0.0, floor=0.2):
    """Upload a world and a cell state; fix lodging from the niches."""
    full = lambda v, dt: np.broadcast_to(np.asarray(v, dtype=dt), SHAPE).copy()  # noqa: E731
    env.tissue.from_numpy(full(codes.MARROW if tissue is None else tissue, np.uint8))
    env.niche.from_numpy(full(codes.NICHE_NONE if niche is None else niche, np.uint8))
    env.integrity.from_numpy(full(integrity, np.float32))
    env.oxygen.from_numpy(full(oxygen, np.float32))
    env.ara.from_numpy(full(ara, np.float32))
    env.dnr.from_numpy(full(dnr, np.float32))
    env.lat.set_params(params)
    env.lat.clear()
    env.lat.set_cells(cells, flags, generation)
    env.lat.update_niches(env.tissue, env.niche, env.integrity, floor)


def step(env, n=1, *, drugs=False, **kw):
    for _ in range(n):
        if drugs:
            env.lat.step(env.tissue, env.niche, env.integrity, env.oxygen, env.ara, env.dnr, **kw)
        else:
            env.lat.step(env.tissue, env.niche, env.integrity, env.oxygen, **kw)


def state(env):
    s = env.lat.get_state()
    return s["cells"], s["flags"], s["generation"]


def metrics(env):
    return env.lat.metrics(env.tissue, env.niche)


def plane_world():
    """Sinusoid planes at x = 0, 3, ..., 18; every other (marrow) voxel a perivascular slot."""
    tissue = np.zeros(SHAPE, np.uint8)
    tissue[0::3] = codes.SINUSOID
    niche = np.where(tissue == codes.MARROW, codes.NICHE_PERIVASCULAR, codes.NICHE_NONE)
    return tissue, niche.astype(np.uint8)


# --------------------------------------------------------------------------------------------
# death
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dt,steps", [(1.0, 30), (5.0, 6)])
def test_survival_follows_exponential(env, dt, steps):
    r = 0.01  # per hour
    cells = np.full(SHAPE, B, np.uint8)
    setup(env, params=null_params(death_rate_per_hour={"blast": r}), cells=cells)
    step(env, steps, dt_hours=dt)
    c, _, _ = state(env)
    n, alive = cells.size, int((c == B).sum())
    assert within_binomial(alive, n, np.exp(-r * dt * steps))
    m = metrics(env)
    assert m["died_blast"] == n - alive and m["count_blast"] == alive
    assert set(np.unique(c)) <= {E, B}


def test_severe_hypoxia_kills_normal_cells_only_below_threshold(env):
    r = 0.05
    params = null_params(severe_hypoxia_death_rate_per_hour={"progenitor": r, "hsc": r})
    cells = np.where(np.indices(SHAPE).sum(axis=0) % 2 == 0, P, B).astype(np.uint8)
    oxygen = np.full(SHAPE, 20.0, np.float32)
    oxygen[:10] = 1.0  # below the 3 mmHg threshold
    setup(env, params=params, cells=cells, oxygen=oxygen)
    step(env, 20)
    c, _, _ = state(env)
    assert (c[cells == B] == B).all()  # leukemic cells tolerate it
    assert (c[10:][cells[10:] == P] == P).all()  # normoxic progenitors untouched
    n = int((cells[:10] == P).sum())
    died = n - int((c[:10] == P).sum())
    assert within_binomial(died, n, 1 - np.exp(-r * 20))
    m = metrics(env)
    assert m["killed_hypoxia_progenitor"] == died == m["died_progenitor"]


# --------------------------------------------------------------------------------------------
# division
# --------------------------------------------------------------------------------------------


def test_division_rate_and_oxygen_dependence(env):
    """Isolated mothers (no competition for space) divide with p = 1 - exp(-r(P) dt)."""
    r, sens = 0.5, 0.8
    params = null_params(
        division_rate_per_hour={"progenitor": r},
        hypoxia_division_sensitivity={"progenitor": sens},
    )
    cells = np.zeros(SHAPE, np.uint8)
    cells[::3, ::3, ::3] = P  # 3 voxels apart: no two mothers share a neighbour
    oxygen = np.full(SHAPE, 20.0, np.float32)
    oxygen[:10] = 0.0
    divided = {"hypoxic": 0, "normoxic": 0}
    mothers = {"hypoxic": 0, "normoxic": 0}
    for _ in range(5):  # each repeat uses new draws (the step index advances)
        idx = env.lat.step_index
        setup(env, params=params, cells=cells, oxygen=oxygen)
        env.lat.step_index = idx
        step(env)
        _, _, g = state(env)
        for name, sl in (("hypoxic", slice(0, 10)), ("normoxic", slice(10, 20))):
            mom = cells[sl] == P
            mothers[name] += int(mom.sum())
            divided[name] += int((g[sl][mom] == 1).sum())
    for name, p_o2 in (("hypoxic", 0.0), ("normoxic", 20.0)):
        rate = float(division_rate_np(r, sens, hif_response_np(p_o2)))
        assert within_binomial(divided[name], mothers[name], event_probability_np(rate, 1.0))


def test_division_only_into_empty_voxels(env, rng):
    """No displacement allowed: every daughter lands on a previously empty marrow voxel next to
    a mother of a compatible type; mothers stay; nothing is lost or duplicated."""
    params = null_params(
        division_rate_per_hour={"hsc": 1.0, "progenitor": 1.0, "lsc": 1.0, "blast": 1.0},
        hsc_self_renewal_probability=0.5,
        lsc_self_renewal_probability=0.6,
    )
    tissue = np.where(rng.random(SHAPE) < 0.1, codes.BONE, codes.MARROW).astype(np.uint8)
    tissue[0] = codes.SINUSOID
    niche = np.zeros(SHAPE, np.uint8)
    niche[1][(tissue[1] == codes.MARROW) & (rng.random(SHAPE[1:]) < 0.5)] = codes.NICHE_PERIVASCULAR
    u = rng.random(SHAPE)
    cells = np.select([u < 0.3, u < 0.4, u < 0.45], [P, B, L], E).astype(np.uint8)
    cells[niche != 0] = np.where(rng.random(SHAPE) < 0.5, H, E)[niche != 0]
    cells[tissue != codes.MARROW] = E
    gen = np.where(cells == P, rng.integers(0, 8, SHAPE), 0).astype(np.uint8)
    setup(env, params=params, cells=cells, tissue=tissue, niche=niche, generation=gen)
    for _ in range(3):
        c0, _, g0 = state(env)
        before = metrics(env)
        step(env)
        c1, f1, g1 = state(env)
        after = metrics(env)
        occupied = c0 != E
        assert (c1[occupied] == c0[occupied]).all()  # mothers stay, nobody displaced
        new = (c0 == E) & (c1 != E)
        assert (tissue[new] == codes.MARROW).all()
        assert not np.isin(c1[niche != 0], [P, B]).any()  # non-stem cells never on a slot
        n_div = sum(after[f"divisions_{t}"] - before[f"divisions_{t}"]
                    for t in ("hsc", "progenitor", "lsc", "blast"))
        assert int(new.sum()) == n_div > 0
        # progenitor mothers: generation +1 exactly for the successful ones
        moms = (c0 == P) & (g1 != g0)
        assert (g1[moms] == g0[moms] + 1).all()
        assert int(moms.sum()) == after["divisions_progenitor"] - before["divisions_progenitor"]
        # each daughter has a neighbouring mother that can produce its type
        parents = {H: (H,), P: (H, P), L: (L,), B: (L, B)}
        pad = np.pad(c0, 1)
        for i, j, k in zip(*np.nonzero(new)):
            nb = [pad[i + 1 + a, j + 1 + b, k + 1 + cc] for a, b, cc in
                  ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))]
            assert any(x in parents[int(c1[i, j, k])] for x in nb)
        # stem daughters on a working slot lodge
        on_slot = new & (niche != 0)
        assert (f1[on_slot] & LODGED).all()


@pytest.mark.parametrize("maturation", [False, True])
def test_blast_generations_and_postmitotic_arrest(env, maturation):
    """Blast maturation on: a dividing blast of generation g leaves mother and daughter at g + 1
    and a blast at the limit never divides; off: blast generations stay 0 whatever happens."""
    r, limit = 0.5, 2
    params = null_params(division_rate_per_hour={"blast": r}, blast_maturation_enabled=float(maturation),
                         blast_max_generation=float(limit) if maturation else 255.0)
    cells = np.zeros(SHAPE, np.uint8)
    cells[::3, ::3, ::3] = B  # isolated mothers: every draw that divides finds room
    gen0 = np.zeros(SHAPE, np.uint8)
    if maturation:
        gen0[::3, ::3, ::3] = (np.arange(cells[::3, ::3, ::3].size) % 3).reshape(cells[::3, ::3, ::3].shape)
    setup(env, params=params, cells=cells, generation=gen0)
    step(env)
    c1, _, g1 = state(env)
    moms = cells == B
    daughters = (cells == E) & (c1 == B)
    assert (c1[moms] == B).all()
    if not maturation:
        assert (g1 == 0).all() and daughters.sum() > 0
        return
    divided = moms & (g1 != gen0)
    assert (g1[divided] == gen0[divided] + 1).all()
    assert not divided[moms & (gen0 >= limit)].any()  # post-mitotic: never divides
    assert int(divided.sum()) == int(daughters.sum()) == metrics(env)["divisions_blast"]
    # each daughter carries its mother's new generation: the multiset of generations matches
    assert sorted(g1[daughters].tolist()) == sorted(g1[divided].tolist())
    young = moms & (gen0 < limit)
    assert within_binomial(int(divided.sum()), int(young.sum()), event_probability_np(r, 1.0))


def test_postmitotic_blasts_die_faster_and_escape_cycle_drugs(env):
    """A post-mitotic blast dies at base + post-mitotic rate and, not cycling, is not killed by
    cytarabine; a cycling blast dies at base + drug rate. One long step: every death is drawn
    on the initial cells (divisions into the freed voxels come after, with new generations)."""
    base, extra, r_div, kmax, conc, dt, limit = 0.002, 0.02, 0.05, 0.1, 0.3, 20.0, 3
    params = null_params(
        death_rate_per_hour={"blast": base}, division_rate_per_hour={"blast": r_div},
        cytarabine_kmax_per_hour=kmax, blast_maturation_enabled=1.0, blast_max_generation=float(limit),
        postmitotic_blast_death_rate_per_hour=extra,
    )
    cells = np.full(SHAPE, B, np.uint8)
    gen = np.zeros(SHAPE, np.uint8)
    gen[10:] = limit
    setup(env, params=params, cells=cells, generation=gen, ara=conc)
    step(env, drugs=True, dt_hours=dt)
    c, _, g = state(env)
    k = float(drug_kill_rate_np(
        r_div, conc, 0.0, params["s_phase_hours"], params["cycle_hours"], kmax,
        params["cytarabine_ec50_uM"], 0.0, params["daunorubicin_ec50_uM"]))
    assert k == pytest.approx(kmax * conc / (conc + params["cytarabine_ec50_uM"]) * 0.6)
    n = cells[10:].size
    m = metrics(env)
    # post-mitotic blasts never divide, so those alive with their generation are the survivors
    died_post = n - int(((c[10:] == B) & (g[10:] == limit)).sum())
    died_cycling = m["died_blast"] - died_post
    assert within_binomial(died_post, n, 1 - np.exp(-(base + extra) * dt)), died_post
    assert within_binomial(died_cycling, n, 1 - np.exp(-(base + k) * dt)), died_cycling
    p_drug = (1 - np.exp(-(base + k) * dt)) * k / (base + k)  # drug deaths, cycling cells only
    assert within_binomial(m["killed_drug_blast"], n, p_drug), m["killed_drug_blast"]
    assert m["divisions_blast"] > 0  # the cycling half divides into the freed voxels


def test_blasts_displace_progenitors_never_the_reverse(env, rng):
    params = null_params(
        division_rate_per_hour={"progenitor": 0.5, "blast": 0.5},
        progenitor_displacement_probability=1.0,
    )
    cells = np.where(rng.random(SHAPE) < 0.3, B, P).astype(np.uint8)  # packed: no empty voxel
    setup(env, params=params, cells=cells)
    for _ in range(3):
        c0, _, _ = state(env)
        step(env)
        c1, _, _ = state(env)
        assert (c1[c0 == B] == B).all()
        assert set(np.unique(c1[c0 == P])) <= {P, B}
    m = metrics(env)
    gained = m["count_blast"] - int((cells == B).sum())
    assert gained > 0 and gained == m["displaced_progenitor"] == m["divisions_blast"]
    assert m["count_progenitor"] + m["count_blast"] == cells.size


def test_lsc_takes_hsc_slots_never_the_reverse(env):
    params = null_params(
        division_rate_per_hour={"hsc": 0.5, "lsc": 0.5},
        hsc_self_renewal_probability=1.0,
        lsc_self_renewal_probability=1.0,
        lsc_displacement_probability=1.0,
    )
    tissue = np.zeros(SHAPE, np.uint8)
    tissue[0] = codes.SINUSOID
    niche = np.zeros(SHAPE, np.uint8)
    niche[1] = codes.NICHE_PERIVASCULAR
    cells = np.full(SHAPE, P, np.uint8)
    cells[0] = E
    cells[1] = H  # every slot held by an HSC
    cells[2] = L  # LSCs next to them, nowhere else to put a daughter
    setup(env, params=params, cells=cells, tissue=tissue, niche=niche)
    assert metrics(env)["niche_perivascular_hsc"] == 400
    for _ in range(4):
        c0, _, _ = state(env)
        step(env)
        c1, f1, _ = state(env)
        assert (c1[c0 == L] == L).all()  # an LSC is never replaced
        assert set(np.unique(c1[c0 == H])) <= {H, L}
    m = metrics(env)
    taken = 400 - m["niche_perivascular_hsc"]
    assert taken > 0
    assert taken == m["niche_perivascular_lsc"] == m["displaced_hsc"] == m["count_lsc"] - 400
    assert (f1[1][c1[1] == L] & LODGED).all()


@pytest.mark.parametrize("factor,q", [(0.4, 0.5), (1.0, 0.0)])
def test_free_lsc_fates_and_lodged_lscs_unchanged(env, factor, q):
    """Isolated LSC mothers, half lodged: a free one gives an LSC daughter with p_s x factor;
    otherwise a blast daughter, and turns into a blast itself with probability q. Lodged
    mothers keep p_s and never differentiate."""
    p_s = 0.6
    params = null_params(
        division_rate_per_hour={"lsc": 0.7},
        lsc_self_renewal_probability=p_s,
        lsc_free_self_renewal_factor=factor,
        lsc_free_differentiation_probability=q,
    )
    tissue = np.zeros(SHAPE, np.uint8)
    niche = np.zeros(SHAPE, np.uint8)
    cells = np.zeros(SHAPE, np.uint8)
    cells[1::3, ::3, ::3] = L  # 3 voxels apart: every division lands, no neighbour shared
    niche[1:10:3, ::3, ::3] = codes.NICHE_PERIVASCULAR  # z < 10: mothers on slots
    tissue[0:10:3, ::3, ::3] = codes.SINUSOID  # the slot's vessel, below each lodged mother
    counts = {k: np.zeros(3, int) for k in ("free", "lodged")}  # LSC daughter, blast + LSC, blast + blast
    for _ in range(4):
        idx = env.lat.step_index
        setup(env, params=params, cells=cells, tissue=tissue, niche=niche)
        env.lat.step_index = idx
        _, f0, _ = state(env)
        step(env)
        c1, _, _ = state(env)
        pad = np.pad(c1, 1)
        for z, y, x in zip(*np.nonzero(cells == L)):
            kind = "lodged" if f0[z, y, x] & LODGED else "free"
            nb = [pad[z + 1 + a, y + 1 + b, x + 1 + d] for a, b, d in
                  ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))]
            new = [v for v in nb if v in (L, B)]
            if not new:
                assert c1[z, y, x] == L  # no division, no change
                continue
            assert len(new) == 1
            if new[0] == L:
                assert c1[z, y, x] == L
                counts[kind][0] += 1
            else:
                counts[kind][1 if c1[z, y, x] == L else 2] += 1
    assert counts["lodged"].sum() > 200 and counts["free"].sum() > 200
    lo, fr = counts["lodged"], counts["free"]
    assert lo[2] == 0 and within_binomial(lo[0], lo.sum(), p_s)
    assert within_binomial(fr[0], fr.sum(), p_s * factor)
    assert within_binomial(fr[2], fr.sum(), (1 - p_s * factor) * q)
    if q == 0:
        assert fr[2] == 0


# --------------------------------------------------------------------------------------------
# drugs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("drug", ["cytarabine", "daunorubicin"])
def test_drug_kills_cycling_cells_only_and_less_when_lodged(env, drug):
    r_div, kmax, conc, protection, steps = 0.05, 0.1, 0.3, 0.8, 20
    params = null_params(
        division_rate_per_hour={"lsc": r_div},
        lodged_drug_protection=protection,
        **{f"{drug}_kmax_per_hour": kmax},
    )
    tissue, niche = plane_world()
    cells = np.where(tissue == codes.MARROW, L, E).astype(np.uint8)
    niche[:, 10:] = codes.NICHE_NONE  # y >= 10: free LSCs
    cells[:, 15:][tissue[:, 15:] == codes.MARROW] = P  # y >= 15: mature (non-cycling) progenitors
    gen = np.where(cells == P, int(params["progenitor_max_generation"]), 0).astype(np.uint8)
    conc_kw = {"ara": conc} if drug == "cytarabine" else {"dnr": conc}
    setup(env, params=params, cells=cells, tissue=tissue, niche=niche, generation=gen, **conc_kw)
    _, f0, _ = state(env)
    lodged0 = (cells == L) & ((f0 & LODGED) != 0)
    free0 = (cells == L) & ~lodged0
    assert lodged0.sum() > 1000 and free0.sum() > 500
    step(env, steps, drugs=True)
    c, _, _ = state(env)
    ara, dnr = (conc, 0.0) if drug == "cytarabine" else (0.0, conc)
    k = float(drug_kill_rate_np(
        r_div, ara, dnr, params["s_phase_hours"], params["cycle_hours"],
        params["cytarabine_kmax_per_hour"], params["cytarabine_ec50_uM"],
        params["daunorubicin_kmax_per_hour"], params["daunorubicin_ec50_uM"],
    ))
    # f_S = 0.6 (S-phase only) for cytarabine, f_c = 1 (capped) for daunorubicin
    assert k == pytest.approx(kmax * conc / (conc + params[f"{drug}_ec50_uM"])
                              * (0.6 if drug == "cytarabine" else 1.0))
    for mask, rate in ((free0, k), (lodged0, k * (1 - protection))):
        n = int(mask.sum())
        dead = n - int((c[mask] == L).sum())
        assert within_binomial(dead, n, 1 - np.exp(-rate * steps)), (n, dead, rate)
    assert (c[cells == P] == P).all()  # non-cycling cells are spared
    m = metrics(env)
    n_lsc = int(free0.sum() + lodged0.sum())
    assert m["killed_drug_lsc"] == m["died_lsc"] == n_lsc - m["count_lsc"]
    assert m["killed_drug_lodged_lsc"] == int(lodged0.sum()) - int((c[lodged0] == L).sum())
    # exposure of the never-killed progenitors: C x dt x cells x steps (fixed point, ~1e-7)
    n_p = int((cells == P).sum())
    assert m[f"{drug}_uM_h_progenitor"] == pytest.approx(conc * steps * n_p, rel=1e-5)
    assert m["cell_hours_progenitor"] == pytest.approx(steps * n_p, rel=1e-9)
    other = "daunorubicin" if drug == "cytarabine" else "cytarabine"
    assert m[f"{other}_uM_h_lsc"] == 0.0


# --------------------------------------------------------------------------------------------
# egress, exit, niche release
# --------------------------------------------------------------------------------------------


def test_blast_egress_next_to_sinusoids_only(env):
    r, steps = 0.02, 24
    tissue = np.zeros(SHAPE, np.uint8)
    tissue[0] = codes.SINUSOID
    cells = np.where(tissue == codes.MARROW, B, E).astype(np.uint8)
    setup(env, params=null_params(blast_egress_rate_per_hour=r), cells=cells, tissue=tissue)
    step(env, steps)
    c, _, _ = state(env)
    assert (c[2:] == B).all()
    gone = 400 - int((c[1] == B).sum())
    assert within_binomial(gone, 400, 1 - np.exp(-r * steps))
    assert metrics(env)["exited_blast"] == gone


def test_mature_progenitor_exit_near_and_far(env):
    r, far, steps = 0.02, 0.25, 24
    params = null_params(mature_exit_rate_per_hour=r, mature_exit_far_factor=far)
    tissue = np.zeros(SHAPE, np.uint8)
    tissue[0] = codes.SINUSOID
    cells = np.where(tissue == codes.MARROW, P, E).astype(np.uint8)
    gen = np.full(SHAPE, int(params["progenitor_max_generation"]), np.uint8)
    gen[10:] = 0  # immature: never exit
    setup(env, params=params, cells=cells, tissue=tissue, generation=gen)
    step(env, steps)
    c, _, _ = state(env)
    assert (c[10:] == P).all()
    near = 400 - int((c[1] == P).sum())
    far_n = 8 * 400
    far_gone = far_n - int((c[2:10] == P).sum())
    assert within_binomial(near, 400, 1 - np.exp(-r * steps))
    assert within_binomial(far_gone, far_n, 1 - np.exp(-r * far * steps))
    assert metrics(env)["exited_progenitor"] == near + far_gone


@pytest.mark.parametrize("multiplier", [1.0, 5.0])
def test_niche_release_rate_and_cxcr4_multiplier(env, multiplier):
    r, steps = 0.01, 10
    tissue, niche = plane_world()
    cells = np.where(niche != 0, H, E).astype(np.uint8)
    setup(env, params=null_params(niche_release_rate_per_hour=r), cells=cells, tissue=tissue,
          niche=niche)
    n = int((cells == H).sum())
    assert metrics(env)["lodged_hsc"] == n
    step(env, steps, release_multiplier=multiplier)
    m = metrics(env)
    released = m["released_hsc"]
    assert within_binomial(released, n, 1 - np.exp(-r * multiplier * steps))
    # released cells stay put (no walk) but are mobilized: they hold no slot
    assert m["mobilized_hsc"] == released == n - m["lodged_hsc"]
    assert m["niche_perivascular_free_cell"] == released
    if multiplier > 1:
        assert released > 2.5 * n * (1 - np.exp(-r * steps))  # the agent clearly raises release


def test_readhesion_lets_released_cells_lodge_again(env):
    r, steps = 0.1, 10
    tissue, niche = plane_world()
    cells = np.where(niche != 0, L, E).astype(np.uint8)
    flags = np.where(cells == L, MOBILIZED, 0).astype(np.uint8)
    setup(env, params=null_params(readhesion_rate_per_hour=r), cells=cells, tissue=tissue,
          niche=niche, flags=flags)
    n = int((cells == L).sum())
    assert metrics(env)["lodged_lsc"] == 0
    step(env, steps)
    env.lat.update_niches(env.tissue, env.niche, env.integrity, 0.2)
    m = metrics(env)
    assert m["lodged_lsc"] + m["mobilized_lsc"] == n
    assert within_binomial(m["lodged_lsc"], n, 1 - np.exp(-r * steps))


# --------------------------------------------------------------------------------------------
# moves, lodging, niche function
# --------------------------------------------------------------------------------------------


def random_world(rng):
    tissue = np.where(rng.random(SHAPE) < 0.1, codes.BONE, codes.MARROW).astype(np.uint8)
    tissue[::5] = codes.SINUSOID
    niche = np.zeros(SHAPE, np.uint8)
    niche[1::5][(tissue[1::5] == codes.MARROW) & (rng.random((4, 20, 20)) < 0.3)] = 2
    u = rng.random(SHAPE)
    cells = np.select([u < 0.35, u < 0.5, u < 0.55, u < 0.6], [P, B, L, H], E).astype(np.uint8)
    stem = rng.random(SHAPE) < 0.5
    cells[niche != 0] = np.where(stem, np.where(rng.random(SHAPE) < 0.5, H, L), E)[niche != 0]
    cells[tissue != codes.MARROW] = E
    flags = np.where(np.isin(cells, [H, L]) & (rng.random(SHAPE) < 0.3), MOBILIZED, 0)
    gen = np.where(cells == P, rng.integers(0, 9, SHAPE), 0)
    return tissue, niche, cells, flags.astype(np.uint8), gen.astype(np.uint8)


@pytest.mark.parametrize("world_seed", [1, 2, 3])
def test_moves_conserve_cells(env, world_seed):
    """Walk and swap only: counts by type and the progenitor generations are conserved, the
    invariants hold, and cells really move."""
    rng = np.random.default_rng(world_seed)
    tissue, niche, cells, flags, gen = random_world(rng)
    params = null_params(stem_walk_rate_per_hour=1.0, blast_walk_rate_per_hour=1.0)
    setup(env, params=params, cells=cells, tissue=tissue, niche=niche, flags=flags,
          generation=gen)
    c_start, f_start, _ = state(env)
    lodged_start = (f_start & LODGED) != 0
    step(env, 5)
    c, f, g = state(env)
    for t in (H, P, L, B):
        assert (c == t).sum() == (cells == t).sum()
    np.testing.assert_array_equal(np.sort(g[c == P]), np.sort(gen[cells == P]))
    assert (c[tissue != codes.MARROW] == E).all()
    assert not np.isin(c[niche != 0], [P, B]).any()
    assert (c[lodged_start] == c_start[lodged_start]).all()  # lodged cells do not walk
    assert ((f & LODGED) == 0)[niche == 0].all()
    assert (c != c_start).sum() > 100


def test_free_stem_cells_lodge_on_working_slots_and_floor_switches_slots_off(env):
    tissue = np.zeros(SHAPE, np.uint8)
    tissue[0] = codes.ARTERIOLE
    niche = np.zeros(SHAPE, np.uint8)
    niche[1] = codes.NICHE_ENDOSTEAL
    cells = np.zeros(SHAPE, np.uint8)
    cells[2] = H  # free HSCs, each next to one empty slot
    params = null_params(stem_walk_rate_per_hour=20.0)
    setup(env, params=params, cells=cells, tissue=tissue, niche=niche, integrity=0.1)
    step(env, 2, integrity_floor=0.2)  # vessel below the floor: slots do not work
    m = metrics(env)
    assert m["niche_endosteal_functional"] == 0 and m["lodged_hsc"] == 0
    env.integrity.fill(1.0)
    step(env, 2, integrity_floor=0.2)
    m = metrics(env)
    assert m["niche_endosteal_functional"] == 400
    assert m["lodged_hsc"] == m["niche_endosteal_hsc"] > 200
    c, f, _ = state(env)
    assert ((f & LODGED) != 0)[niche == 0].sum() == 0
    # vessel lost: every slot stops working and its cell loses the slot (and protection)
    env.integrity.fill(0.1)
    env.lat.update_niches(env.tissue, env.niche, env.integrity, 0.2)
    m = metrics(env)
    assert m["niche_endosteal_functional"] == 0 and m["lodged_hsc"] == 0
    assert m["niche_endosteal_free_cell"] == (c[1] == H).sum()


def test_homing_fills_free_working_slots_deterministically(env):
    tissue = np.zeros(SHAPE, np.uint8)
    tissue[0] = codes.ARTERIOLE
    niche = np.zeros(SHAPE, np.uint8)
    niche[1] = codes.NICHE_ENDOSTEAL
    integrity = np.ones(SHAPE, np.float32)
    integrity[0, :10] = 0.05  # half the slots have a failed vessel
    cells = np.zeros(SHAPE, np.uint8)
    cells[1, 10:15] = H  # 100 working slots already held
    kw = dict(params=null_params(), cells=cells, tissue=tissue, niche=niche, integrity=integrity)
    setup(env, **kw)
    placed = env.lat.home_hsc(60, env.tissue, env.niche, env.integrity, integrity_floor=0.2)
    c1, f1, _ = state(env)
    assert placed == 60 and metrics(env)["homed_hsc"] == 60
    new = (c1 == H) & (cells == E)
    assert new.sum() == 60 and (niche[new] != 0).all() and (f1[new] & LODGED).all()
    assert (c1[1, :10] == E).all()  # failed slots are not used
    setup(env, **kw)
    env.lat.home_hsc(60, env.tissue, env.niche, env.integrity, integrity_floor=0.2)
    np.testing.assert_array_equal(state(env)[0], c1)
    assert env.lat.home_hsc(1000, env.tissue, env.niche, env.integrity, integrity_floor=0.2) == 40


def test_seed_initial_populations(env):
    tissue, niche = plane_world()
    env.tissue.from_numpy(tissue)
    env.niche.from_numpy(niche)
    niche2 = niche.copy()
    niche2[:, :, 10:] = 0  # half the marrow is plain marrow
    env.niche.from_numpy(niche2)
    env.integrity.fill(1.0)
    env.lat.set_params(null_params())
    kw = dict(integrity_floor=0.2, hsc_niche_fraction=0.6, progenitor_density=0.7, lsc_count=5)
    env.lat.seed_initial(env.tissue, env.niche, env.integrity, **kw)
    c, f, g = state(env)
    slots = niche2 != 0
    plain = (tissue == codes.MARROW) & ~slots
    assert within_binomial(int((c[slots] == H).sum()), int(slots.sum()), 0.6)
    assert (f[c == H] & LODGED).all() and not np.isin(c[slots], [P, B, L]).any()
    assert (c == L).sum() == 5 and (niche2[c == L] == 0).all()
    n_p = int((c[plain] == P).sum()) + 5  # LSCs replaced progenitors or filled empty voxels
    assert within_binomial(n_p, int(plain.sum()), 0.7, z=5.5)
    assert g[c == P].max() <= 8
    env.lat.seed_initial(env.tissue, env.niche, env.integrity, **kw)
    np.testing.assert_array_equal(state(env)[0], c)


# --------------------------------------------------------------------------------------------
# parameters (no Taichi)
# --------------------------------------------------------------------------------------------


def test_config_produces_exactly_the_kernel_table():
    tarr, sarr = pack_params(CellsConfig().kernel_params())
    assert tarr.shape == (len(TYPE_PARAMS), codes.N_CELL_TYPES) and (tarr[:, 0] == 0).all()
    assert sarr.shape == (len(SCALAR_PARAMS),)


def test_pack_params_refuses_bad_tables():
    good = CellsConfig().kernel_params()
    with pytest.raises(ValueError, match="unknown"):
        pack_params({**good, "typo_rate": 1.0})
    bad = dict(good)
    del bad["hif_hill"]
    with pytest.raises(ValueError, match="missing"):
        pack_params(bad)
    with pytest.raises(ValueError, match="probability"):
        pack_params({**good, "lsc_self_renewal_probability": 1.5})
    with pytest.raises(ValueError):
        pack_params({**good, "death_rate_per_hour": {"hsc": 1.0}})


def test_cells_config_validation():
    from pydantic import ValidationError

    cfg = CellsConfig()
    assert cfg.fate.lsc_self_renewal_probability > cfg.fate.hsc_self_renewal_probability
    assert cfg.kernel_params()["division_rate_per_hour"]["blast"] == pytest.approx(1 / cfg.division.blast_cycle_time_hours)
    assert cfg.kernel_params()["niche_release_rate_per_hour"] == pytest.approx(0.02 / 24)
    with pytest.raises(ValidationError):
        CellsConfig.model_validate({"fate": {"lsc_self_renewal_probability": 0.4}})
    with pytest.raises(ValidationError):
        CellsConfig.model_validate({"division": {"hsc_rate_per_dya": 0.1}})
    with pytest.raises(ValidationError):
        CellsConfig.model_validate({"niche": {"release_rate_per_day": -1}})
    for section in (cfg, cfg.division, cfg.fate, cfg.drugs, cfg.niche, cfg.egress, cfg.initial,
                    cfg.blast_maturation):
        for name, field in type(section).model_fields.items():
            assert field.description, f"{type(section).__name__}.{name} has no description"


def test_cytarabine_arrests_division(env):
    """With kill switched off, cytarabine scales the division rate by 1 - arrest C/(EC50 + C)."""
    r, arrest, ec50, c = 0.5, 0.8, 0.1, 0.3
    params = null_params(division_rate_per_hour={"progenitor": r}, cytarabine_division_arrest=arrest,
                         cytarabine_ec50_uM=ec50)
    cells = np.zeros(SHAPE, np.uint8)
    cells[::3, ::3, ::3] = P
    counts = {}
    for label, ara in (("none", 0.0), ("ara", c)):
        divided = mothers = 0
        for _ in range(5):
            idx = env.lat.step_index
            setup(env, params=params, cells=cells, ara=ara)
            env.lat.step_index = idx
            step(env, drugs=True)
            _, _, g = state(env)
            mom = cells == P
            mothers += int(mom.sum())
            divided += int((g[mom] == 1).sum())
        counts[label] = (divided, mothers)
    rate = r * (1 - arrest * c / (ec50 + c))
    assert within_binomial(*counts["ara"], event_probability_np(rate, 1.0))
    assert within_binomial(*counts["none"], event_probability_np(r, 1.0))


@pytest.mark.parametrize("multiplier", [1.0, 9.0])
def test_cxcr4_multiplier_mobilises_blasts_to_blood(env, multiplier):
    """Plerixafor's release multiplier also scales blast egress (Nervi 2009: x9 circulating blasts)."""
    r, steps = 0.005, 12
    tissue = np.zeros(SHAPE, np.uint8)
    tissue[0] = codes.SINUSOID
    cells = np.where(tissue == codes.MARROW, B, E).astype(np.uint8)
    setup(env, params=null_params(blast_egress_rate_per_hour=r), cells=cells, tissue=tissue)
    step(env, steps, release_multiplier=multiplier)
    c, _, _ = state(env)
    gone = 400 - int((c[1] == B).sum())
    assert within_binomial(gone, 400, 1 - np.exp(-r * multiplier * steps))
