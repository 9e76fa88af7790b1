"""Paired statistics of sweep arms (no Taichi, fast): the CI math against scipy and a hand
formula, sign counts, censoring, n/a endpoints, the [experiment] table of a spec and the
experiment spec of configs/experiments."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from marrow3d.analysis.paired import paired_stats, restricted_time, sign_counts
from marrow3d.errors import ConfigError
from marrow3d.sweep import expand, load_spec
from marrow3d.sweep.errors import SweepError
from marrow3d.sweep.paired import (
    ExperimentDays,
    endpoint_names,
    markdown_table,
    member_endpoints,
    paired_table,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.toml"
EXPERIMENT = ROOT / "configs" / "experiments" / "niche_therapy.toml"


# ---------------------------------------------------------------------------- statistics


def test_paired_t_interval_matches_scipy_and_the_hand_formula():
    rng = np.random.default_rng(3)
    control = rng.normal(20.0, 6.0, size=20)
    arm = control + rng.normal(-2.0, 3.0, size=20)
    st = paired_stats(arm, control)
    d = arm - control
    n = d.size
    # Hand formula: mean -+ t_{0.975, n-1} * s / sqrt(n).
    half = stats.t.ppf(0.975, n - 1) * np.sqrt(np.sum((d - d.sum() / n) ** 2) / (n - 1)) / np.sqrt(n)
    assert st["n"] == 20
    assert st["mean_diff"] == pytest.approx(d.sum() / n, rel=1e-12)
    assert st["t_low"] == pytest.approx(d.mean() - half, rel=1e-12)
    assert st["t_high"] == pytest.approx(d.mean() + half, rel=1e-12)
    ref = stats.ttest_rel(arm, control)
    ci = ref.confidence_interval(0.95)
    assert (st["t_low"], st["t_high"]) == pytest.approx((ci.low, ci.high), rel=1e-10)
    assert st["p_t"] == pytest.approx(ref.pvalue, rel=1e-10)
    assert st["arm_mean"] == pytest.approx(arm.mean()) and st["control_mean"] == pytest.approx(control.mean())
    # The bootstrap interval brackets the mean, is reproducible and is about as wide as the t one.
    assert st["boot_low"] < st["mean_diff"] < st["boot_high"]
    assert paired_stats(arm, control)["boot_low"] == st["boot_low"]
    assert 0.6 < (st["boot_high"] - st["boot_low"]) / (2 * half) < 1.2


def test_sign_counts_and_sign_test():
    arm = np.array([3.0, 5.0, 2.0, 2.0, 7.0, 1.0, np.nan])
    control = np.array([1.0, 5.0, 4.0, 2.0, 6.0, 0.0, 9.0])
    assert sign_counts(arm - control) == (3, 2, 1)
    st = paired_stats(arm, control)
    assert st["n"] == 6  # the NaN pair is left out
    assert (st["n_pos"], st["n_zero"], st["n_neg"]) == (3, 2, 1)
    # Sign test by hand: P(X <= 1 or X >= 3), X ~ Binomial(4, 1/2) -> 2 * (1 + 4) / 16.
    assert st["p_sign"] == pytest.approx(10 / 16)


def test_degenerate_pairs_give_defined_answers():
    same = paired_stats([4.0, 4.0, 4.0], [4.0, 4.0, 4.0])
    assert same["mean_diff"] == 0 and same["t_low"] == same["t_high"] == 0
    assert math.isnan(same["p_t"]) and same["p_sign"] == 1.0 and same["n_zero"] == 3
    one = paired_stats([2.0], [1.0])
    assert one["n"] == 1 and one["mean_diff"] == 1 and math.isnan(one["t_low"]) and math.isnan(one["boot_low"])
    none = paired_stats([math.nan], [1.0])
    assert none["n"] == 0 and math.isnan(none["mean_diff"]) and none["n_pos"] == 0
    with pytest.raises(ValueError, match="different lengths"):
        paired_stats([1.0, 2.0], [1.0])


def test_restricted_time_censors_at_the_horizon():
    t, cens = restricted_time(np.array([3.5, np.nan, 30.0]), np.array([21.0, 21.0, 21.0]))
    np.testing.assert_array_equal(t, [3.5, 21.0, 21.0])
    np.testing.assert_array_equal(cens, [False, True, False])


# ---------------------------------------------------------------------------- member endpoints

EXP = ExperimentDays(induction_start_day=2.0, end_of_induction_day=3.0, followup_days=2.0)


def _series(burden: list[float], *, drug_from_day: float | None = 2.0, extra: dict | None = None) -> pd.DataFrame:
    """Hourly rows at 0, 12, 24, ... h with the columns the endpoints read (a burden per row)."""
    n = len(burden)
    t = np.arange(n) * 12.0
    lsc = np.asarray(burden, dtype=float) / 2
    df = pd.DataFrame({
        "count_lsc": lsc, "count_blast": np.asarray(burden, dtype=float) - lsc,
        "lodged_lsc": np.minimum(lsc, 3.0), "hsc_niche_share": np.linspace(0.5, 0.3, n),
        "plasma_cytarabine_uM": np.where(t >= (drug_from_day or 1e9) * 24, 0.3, 0.0),
    }, index=pd.Index(t, name="time_h"))
    for k, v in (extra or {}).items():
        df[k] = v
    return df


def test_member_endpoints_read_lsc_counts_on_the_stated_days():
    burden = [10, 20, 40, 80, 20, 4, 2, 2, 2, 2, 2]  # rows at 0..120 h
    vals, missing = member_endpoints(_series(burden), EXP)
    # Day 3 = 72 h = row 6 (burden 2 -> 1 LSC, all lodged); day 5 = 120 h = row 10.
    assert vals["lsc_eoi"] == 1.0 and vals["lsc_lodged_eoi"] == 1.0 and vals["lsc_free_eoi"] == 0.0
    assert vals["lsc_fu"] == 1.0
    assert vals["hsc_niche_share_eoi"] == pytest.approx(np.linspace(0.5, 0.3, 11)[6])
    # No relapse by day 5: censored at 5 - 2 = 3 days after induction start.
    assert vals["relapse_free_days"] == 3.0 and vals["relapse_censored"] == 1.0
    # The conditioning readout does not exist yet: n/a, and named as missing.
    assert math.isnan(vals["conditioned_slot_share_eoi"]) and "conditioned_slot_share" in missing


def test_relapse_is_timed_from_induction_start_after_the_nadir():
    # Nadir 2 at 84 h (day 3.5); relapse: first row with burden > 20, at 108 h (day 4.5).
    burden = [10, 20, 40, 80, 20, 4, 3, 2, 15, 30, 50]
    vals, _ = member_endpoints(_series(burden), EXP)
    assert vals["relapse_free_days"] == pytest.approx(4.5 - 2.0) and vals["relapse_censored"] == 0.0
    # Untreated run: no induction, no relapse endpoint.
    untreated, _ = member_endpoints(_series(burden, drug_from_day=None), EXP)
    assert math.isnan(untreated["relapse_free_days"]) and math.isnan(untreated["relapse_censored"])


def test_conditioned_share_and_extra_columns_plug_in_by_name():
    n = 11
    extra = {"niche_endosteal_conditioned": np.full(n, 3.0), "niche_perivascular_conditioned": np.full(n, 1.0),
             "niche_endosteal_slots": np.full(n, 10.0), "niche_perivascular_slots": np.full(n, 30.0),
             "cxcl12_uM_mean": np.arange(n, dtype=float)}
    exp = ExperimentDays(2.0, 3.0, 2.0, columns=("cxcl12_uM_mean", "not_there", "hsc_niche_share", "lsc"))
    # Built-in readings named again, or a name that would collide with one, add nothing.
    assert [k for k in endpoint_names(exp) if k.endswith("_eoi")] == [
        "lsc_lodged_eoi", "lsc_free_eoi", "lsc_eoi", "hsc_niche_share_eoi", "conditioned_slot_share_eoi",
        "cxcl12_uM_mean_eoi", "not_there_eoi"]
    vals, missing = member_endpoints(_series([10] * n, extra=extra), exp)
    assert vals["conditioned_slot_share_eoi"] == pytest.approx(4 / 40)
    assert vals["cxcl12_uM_mean_eoi"] == 6.0 and vals["cxcl12_uM_mean_fu"] == 10.0
    assert math.isnan(vals["not_there_fu"]) and "not_there" in missing and "conditioned_slot_share" not in missing
    # A run that ended before the follow-up day has no follow-up value.
    short, _ = member_endpoints(_series([10] * 8, extra={k: v[:8] for k, v in extra.items()}), exp)
    assert short["cxcl12_uM_mean_eoi"] == 6.0 and math.isnan(short["cxcl12_uM_mean_fu"])


# ---------------------------------------------------------------------------- the paired table


def _members() -> pd.DataFrame:
    rows = []
    names = list(endpoint_names(EXP))
    for seed in (1, 2, 3, 4):
        for arm, shift in (("7+3", 0.0), ("7+3+CXCR4", -1.0), ("no therapy", 5.0)):
            row = {"member_id": f"{arm}_{seed}", "arm": arm, "seed": seed}
            row.update({k: float(seed) + shift for k in names})
            row["conditioned_slot_share_eoi"] = row["conditioned_slot_share_fu"] = math.nan
            row["relapse_censored"] = float(seed % 2)
            if arm == "no therapy":
                row["relapse_free_days"] = row["relapse_censored"] = math.nan
            row["missing_readouts"] = "conditioned_slot_share"
            rows.append(row)
    return pd.DataFrame(rows)


def test_paired_table_pairs_by_seed_and_reports_na_with_the_reason():
    members = _members().sample(frac=1.0, random_state=1)  # pairing must not rely on row order
    table = paired_table(members, "7+3", EXP).set_index(["endpoint", "arm"])
    row = table.loc[("lsc_eoi", "7+3+CXCR4")]
    assert row["n"] == 4 and row["mean_diff"] == -1.0 and (row["n_pos"], row["n_zero"], row["n_neg"]) == (0, 0, 4)
    assert row["t_low"] == row["t_high"] == -1.0  # the same difference in every seed
    rel = table.loc[("relapse_free_days", "7+3+CXCR4")]
    assert (rel["censored_arm"], rel["censored_control"]) == (2, 2)
    na = table.loc[("relapse_free_days", "no therapy")]
    assert na["n"] == 0 and "cytotoxic" in na["note"]
    cond = table.loc[("conditioned_slot_share_fu", "7+3+CXCR4")]
    assert cond["n"] == 0 and "'conditioned_slot_share'" in cond["note"]
    md = markdown_table(paired_table(members, "7+3", EXP), EXP, "test")
    assert "| conditioned-slot share, day 3 | 7+3+CXCR4 | 0 | n/a: no run has the time-series column" in md
    assert "-1 [-1, -1]" in md and "0/0/4" in md


def test_an_unknown_control_or_arm_is_one_clear_error():
    with pytest.raises(SweepError, match=r"control arm '7\+4': no finished member .* \(finished arms: '7\+3'"):
        paired_table(_members(), "7+4", EXP)
    with pytest.raises(SweepError, match="no finished member is in an arm named 'DFO'"):
        paired_table(_members(), "7+3", EXP, arms=["DFO"])
    twice = pd.concat([_members(), _members().iloc[:1]])
    with pytest.raises(SweepError, match="arm '7\\+3' has several members for seed 1"):
        paired_table(twice, "7+3", EXP)


# ---------------------------------------------------------------------------- specs


def _spec(tmp_path: Path, experiment: str, days: float = 0.25) -> Path:
    p = tmp_path / "spec.toml"
    p.write_text(f'''base = "{TINY.as_posix()}"
[set]
"run.days" = {days}
[vary]
lists = [ {{ name = "control" }}, {{ name = "treated", "cells.initial.lsc_count" = 8 }} ]
[experiment]
{experiment}
''')
    return p


@pytest.mark.parametrize("experiment, message", [
    ('control = "ctrl"\ninduction_start_day = 0.1\nend_of_induction_day = 0.2',
     "experiment.control: no arm is named 'ctrl' (arms: 'control', 'treated')"),
    ('control = "control"\narms = ["treatd"]\ninduction_start_day = 0.1\nend_of_induction_day = 0.2',
     "experiment.arms: no arm is named 'treatd'"),
    ('control = "control"\narms = ["control"]\ninduction_start_day = 0.1\nend_of_induction_day = 0.2',
     "arms lists the control arm 'control'"),
    ('control = "control"\ninduction_start_day = 0.2\nend_of_induction_day = 0.1',
     "end_of_induction_day (0.1) must be after induction_start_day (0.2)"),
    ('control = "control"\ninduction_start_day = 0.1\nend_of_induction_day = 0.2\ncolumns = ["a b"]',
     "'a b' is not a time-series column name"),
    ('control = "control"\ninduction_start_day = 0.1\nend_of_induction_day = 0.2\nfollow_up = 3',
     "follow_up"),
    ('control = "control"\ninduction_start_day = 0.1\nend_of_induction_day = 0.2\n'
     '[vary.grid]\n"cells.initial.hsc_niche_fraction" = [0.5, 0.6]',
     "vary.grid multiplies them"),
])
def test_experiment_table_problems_are_one_line_config_errors(tmp_path, experiment, message):
    with pytest.raises(ConfigError) as err:
        load_spec(_spec(tmp_path, experiment))
    text = str(err.value)
    assert message in text and "\n" not in text and "spec.toml" in text


def test_follow_up_after_the_end_of_the_runs_is_an_error(tmp_path):
    spec = _spec(tmp_path, 'control = "control"\ninduction_start_day = 0.1\nend_of_induction_day = 0.2\n'
                           'followup_days = 0.1', days=0.25)
    with pytest.raises(ConfigError, match=r"follow-up day 0.3 .* after the end of the runs \(run.days = 0.25\)"):
        expand(*load_spec(spec))


def test_the_niche_therapy_experiment_expands_to_20_seeds_of_five_arms_branched_on_day_7():
    plan = expand(*load_spec(EXPERIMENT))
    assert len(plan.members) == 100 and len(plan.prefixes) == 20 and plan.at_day == 7
    labels = list(dict.fromkeys(m["label"] for m in plan.members))
    assert labels == ["no therapy", "7+3", "7+3+CXCR4", "7+3+DFO", "clearance+transplant"]
    assert all(m["error"] is None and m["kind"] == "arm" for m in plan.members)
    assert sorted({m["seed"] for m in plan.members}) == list(range(1, 21))
    assert plan.experiment["control"] == "7+3" and plan.experiment["end_of_induction_day"] == 28
    cfg = tomllib.loads(plan.members[0]["config_toml"])
    assert cfg["domain"]["shape_voxels"] == [40, 40, 40] and cfg["anatomy"]["niche_density_per_mm3"] == 4000
    assert cfg["run"]["days"] == 42


def test_the_reduced_experiment_keeps_arms_seeds_and_slots_and_branches_at_diagnosis():
    plan = expand(*load_spec(EXPERIMENT.with_name("niche_therapy_reduced.toml")))
    assert len(plan.members) == 100 and len(plan.prefixes) == 20 and plan.at_day == 21
    assert all(m["error"] is None for m in plan.members)
    dfo = tomllib.loads(next(m for m in plan.members if m["label"] == "7+3+DFO")["config_toml"])
    assert [e["start_day"] for e in dfo["therapy"]["events"] if e["agent"] == "deferoxamine"] == [21]
    assert tomllib.loads(plan.members[0]["config_toml"])["domain"]["shape_voxels"] == [32, 32, 32]
