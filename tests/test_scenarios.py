"""The seed's claims on the small scenario variants (configs/scenarios/small), three seeds.

Arms share their history through checkpoint-style branching in memory (the same mechanism as
``marrow3d branch``): per seed, one natural history to day 7 forks the vessel-preservation
arm; the rest runs to diagnosis (day 21) and forks 7+3 and 7+3 + CXCR4 antagonist, and the
latter forks clearance + transplant just before its day-30 graft. Paired arms differ only by
their therapy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from marrow3d.config import load_config

#: About 6 minutes on 2 cores: outside the default run (`pytest -m slow` runs them).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "configs" / "scenarios" / "small"
SEEDS = (1, 2, 3)
END_DAY = 33  # relapse and re-engraftment are both visible by then
DFO_END_DAY = 28  # the arteriole comparison is made at day 28


def _advance(model, day):
    while model.clock.time_h < day * 24.0 - 1e-9:
        model.time_step()


def _fork(parent, scenario, seed):
    from marrow3d.runner import make_model

    cfg = load_config(SMALL / f"{scenario}.toml", [f"run.seed={seed}"])
    child = make_model(cfg)
    child.restore_prognostic_state(parent.prognostic_state())
    return child


@pytest.fixture(scope="module")
def arms(taichi_backend):
    from marrow3d.runner import make_model

    out = []
    for seed in SEEDS:
        base = make_model(load_config(SMALL / "natural_history.toml", [f"run.seed={seed}"]))
        _advance(base, 7)
        dfo = _fork(base, "chemo_7_3_vessel_preservation", seed)
        _advance(dfo, DFO_END_DAY)
        _advance(base, 21)
        runs = {"vessel_preservation": dfo}
        runs["chemo"] = _fork(base, "chemo_7_3", seed)
        _advance(runs["chemo"], END_DAY)
        runs["cxcr4"] = _fork(base, "chemo_7_3_cxcr4", seed)
        _advance(runs["cxcr4"], 30)  # the transplant arm shares everything up to its day-30 graft
        runs["transplant"] = _fork(runs["cxcr4"], "clearance_transplant", seed)
        _advance(runs["cxcr4"], END_DAY)
        _advance(runs["transplant"], END_DAY)
        out.append({k: {n: np.asarray(v) for n, v in m.history.items()} for k, m in runs.items()})
    return out


def _at(h, day):
    return int(np.searchsorted(h["time_h"], day * 24.0 - 1e-9))


def test_7_3_cuts_blasts_by_two_logs_then_relapse(arms):
    for run in arms:
        h = run["chemo"]
        start, stop = _at(h, 21), _at(h, 30)
        blasts = h["count_blast"]
        low = int(np.argmin(blasts[start:stop])) + start
        assert np.log10(blasts[start] / max(blasts[low], 1.0)) >= 2.0, (blasts[start], blasts[low])
        burden = h["count_blast"] + h["count_lsc"]
        assert burden[-1] > 3 * burden[low]  # leukemic burden rises again after induction


def test_lodged_lscs_are_killed_far_less_than_cycling_blasts(arms):
    """Per cell-hour on drug, lodged LSCs die at a far lower rate than blasts."""
    for run in arms:
        h = run["chemo"]
        a, b = _at(h, 21), _at(h, 29)
        blast = (h["killed_drug_blast"][b] - h["killed_drug_blast"][a]) / (h["cell_hours_blast"][b] - h["cell_hours_blast"][a])
        hours_lodged = h["cell_hours_lsc_lodged"][b] - h["cell_hours_lsc_lodged"][a]
        if hours_lodged <= 0:
            continue
        lodged = (h["killed_drug_lodged_lsc"][b] - h["killed_drug_lodged_lsc"][a]) / hours_lodged
        assert lodged < 0.25 * blast, (lodged, blast)


def test_vessel_preservation_keeps_endosteal_arterioles(arms):
    for run in arms:
        kept = run["vessel_preservation"]["arteriole_mean_integrity"][-1]
        lost = run["chemo"]["arteriole_mean_integrity"][_at(run["chemo"], 28)]
        assert kept > lost + 0.1, (kept, lost)


def _region_auc(h, field, region, day0, day1):
    """Time integral (uM h) of a tissue-level region mean between two days."""
    a, b = _at(h, day0), _at(h, day1)
    dt = np.diff(h["time_h"][a : b + 1])
    return float(np.sum(h[f"{field}_tissue_uM_mean_{region}"][a + 1 : b + 1] * dt))


def test_vessel_preservation_raises_endosteal_drug_exposure(arms):
    """Kept arterioles feed the endosteum: more of both drugs reaches the endosteal band."""
    for run in arms:
        for drug in ("cytarabine", "daunorubicin"):
            kept = _region_auc(run["vessel_preservation"], drug, "endosteal", 21, DFO_END_DAY)
            lost = _region_auc(run["chemo"], drug, "endosteal", 21, DFO_END_DAY)
            assert kept > lost, (drug, kept, lost)


def test_cxcr4_antagonist_releases_more_lscs_from_niches(arms):
    released = {k: 0.0 for k in ("chemo", "cxcr4")}
    for run in arms:
        for k in released:
            h = run[k]
            released[k] += h["released_lsc"][_at(h, 29)] - h["released_lsc"][_at(h, 21)]
    assert released["cxcr4"] > released["chemo"], released


def test_transplant_restores_hsc_niche_occupancy(arms):
    for run in arms:
        h, ref = run["transplant"], run["cxcr4"]  # same therapy without the transplant
        before, after = _at(h, 29.9), _at(h, END_DAY)
        assert h["hsc_niche_share"][after] > h["hsc_niche_share"][before]
        assert h["hsc_niche_share"][after] > ref["hsc_niche_share"][after]
