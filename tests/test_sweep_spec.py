"""Sweep specs, their expansion into members, endpoints and command-line errors (no Taichi, fast)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from marrow3d.cli.main import app
from marrow3d.config import config_from_toml_text, load_config
from marrow3d.config.loader import parse_override
from marrow3d.errors import ConfigError
from marrow3d.sweep import expand, load_spec
from marrow3d.sweep.members import fingerprint, latin_hypercube, toml_literal
from marrow3d.sweep.spec import spec_from_text
from marrow3d.sweep.summary import endpoints, treatment_start_day

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.toml"
SWEEPS = ROOT / "configs" / "sweeps"


def _spec(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "spec.toml"
    p.write_text(f'base = "{TINY.as_posix()}"\n' + text)
    return p


def _plan(tmp_path: Path, text: str, **kw):
    return expand(*load_spec(_spec(tmp_path, text)), **kw)


@pytest.mark.parametrize("value", [
    0, -3, 2**40, 1.5, 1e-5, -2.5e300, float("inf"), True, False, "cpu", 'a "quoted" \\ back\nslash\t\x7f é 😀',
    [], [1, 2.5, "x"], [[1, 2], [3]], {"a": 1, "b c": [1, {"d": "e"}]},
    [{"agent": "cytarabine", "kind": "infusion", "start_day": 14, "duration_days": 7, "dose_mg_per_m2_per_day": 100}],
])
def test_toml_literal_round_trips_through_the_override_parser(value):
    parts, parsed = parse_override(f"a.b={toml_literal(value)}")
    assert parts == ["a", "b"] and parsed == value
    assert tomllib.loads(f"v = {toml_literal(value)}")["v"] == value


def test_tiny_spec_expands_into_four_validated_members():
    plan = expand(*load_spec(SWEEPS / "tiny.toml"))
    assert [m["member_id"] for m in plan.members] == ["p000_s1", "p000_s2", "p001_s1", "p001_s2"]
    assert plan.varied_keys == ["cells.initial.lsc_count"] and plan.prefixes == []
    for m in plan.members:
        assert m["error"] is None and m["kind"] == "run"
        cfg = config_from_toml_text(m["config_toml"])
        assert cfg.run.seed == m["seed"] and cfg.run.days == 0.25
        assert cfg.cells.initial.lsc_count == m["params"]["cells.initial.lsc_count"]
        # The member config is what `marrow3d run tiny.toml --set ...` builds from its overrides.
        assert cfg == load_config(TINY, m["overrides"])


def test_example_induction_spec_expands_into_branched_arms():
    plan = expand(*load_spec(SWEEPS / "induction_plerixafor.toml"))
    assert len(plan.members) == 12
    assert [p["member_id"] for p in plan.prefixes] == ["prefix_s1", "prefix_s2", "prefix_s3"]
    assert {m["label"] for m in plan.members} == {"untreated", "plerixafor", "7+3", "7+3+plerixafor"}
    for m in plan.members:
        assert m["error"] is None, m["error"]
        assert m["kind"] == "arm" and m["prefix_id"] == f"prefix_s{m['seed']}"
        assert config_from_toml_text(m["config_toml"]).run.days == 28.0
    for p in plan.prefixes:
        cfg = config_from_toml_text(p["config_toml"])
        assert cfg.run.days == 14.0 and cfg.therapy.events == []


def test_grid_zip_lists_multiply_and_keep_labels(tmp_path):
    plan = _plan(tmp_path, """
[vary]
grid = { cells.initial.lsc_count = [4, 8, 16] }
zip = { "cells.death_rate_per_day.lsc" = [0.01, 0.02], "cells.death_rate_per_day.blast" = [0.03, 0.04] }
lists = [{ name = "a" }, { name = "b", "vessels.regeneration_rate_per_day" = 0.05 }]
""")
    assert len(plan.members) == 3 * 2 * 2
    m = plan.members[-1]
    assert m["member_id"] == "p011_s1" and m["label"] == "b"
    assert m["params"] == {"cells.initial.lsc_count": 16, "cells.death_rate_per_day.lsc": 0.02,
                           "cells.death_rate_per_day.blast": 0.04, "vessels.regeneration_rate_per_day": 0.05}
    cfg = config_from_toml_text(m["config_toml"])
    assert cfg.vessels.regeneration_rate_per_day == 0.05 and cfg.cells.death_rate_per_day.blast == 0.04
    assert plan.members[0]["seed"] == 1  # no [replicates]: the base config's seed


def test_latin_hypercube_is_stratified_reproducible_and_log_scaled(tmp_path):
    pts = latin_hypercube({"a": (0.0, 1.0), "b": (1e-3, 1e1)}, 16, seed=5, log=["b"])
    assert pts == latin_hypercube({"a": (0.0, 1.0), "b": (1e-3, 1e1)}, 16, seed=5, log=["b"])
    a = np.array([p["a"] for p in pts])
    b = np.log10([p["b"] for p in pts])
    assert sorted(np.floor(a * 16).astype(int)) == list(range(16))
    assert sorted(np.floor((b + 3) / 4 * 16).astype(int)) == list(range(16))
    plan = _plan(tmp_path, """
[vary.latin_hypercube]
samples = 5
seed = 3
bounds = { "vessels.arteriole_loss_rate_per_day" = [0.01, 0.1] }
[replicates]
count = 2
first_seed = 10
""")
    assert len(plan.members) == 10 and {m["seed"] for m in plan.members} == {10, 11}
    vals = [m["params"]["vessels.arteriole_loss_rate_per_day"] for m in plan.members]
    assert all(0.01 <= v <= 0.1 for v in vals)


@pytest.mark.parametrize("text, message", [
    ("[vary]\ngrdi = { \"cells.initial.lsc_count\" = [1] }\n", "did you mean 'vary.grid'"),
    ("[vary]\nzip = { \"cells.initial.lsc_count\" = [1, 2], \"run.days\" = [1] }\n", "equally long"),
    ("[vary]\ngrid = { \"run.days\" = [1] }\nlists = [{ \"run.days\" = 2 }]\n", "varied in both"),
    ("[vary]\ngrid = { \"run\" = [1] }\n", "names a whole section"),
    ("[vary]\ngrid = { \"run.days\" = [] }\n", "empty list"),
    ("[replicates]\nseeds = [1]\ncount = 2\n", "either seeds"),
    ("[replicates]\nseeds = [1, 1]\n", "twice"),
    ("[vary]\ngrid = { \"run.seed\" = [1, 2] }\n[replicates]\nseeds = [1]\n", "run.seed is varied"),
    ("[vary.latin_hypercube]\nsamples = 2\nbounds = { \"run.days\" = [2, 1] }\n", "low < high"),
    ("[set]\n\"run.days\" = -1\n", "run.days = -1 is invalid"),
    ("[vary]\ngrid = { \"domain.voxel_um\" = [5.0, 10.0] }\n[branch]\nat_day = 0.125\n", "only branchable keys"),
    ("[branch]\nat_day = 0.1\n", "not a whole number of cell steps"),
])
def test_spec_problems_are_one_line_config_errors(tmp_path, text, message):
    with pytest.raises(ConfigError, match=None) as err:
        _plan(tmp_path, text)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_base_file_is_an_error_naming_it(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text('base = "nope.toml"\n')
    with pytest.raises(ConfigError, match="nope.toml"):
        expand(*load_spec(p))


def test_an_invalid_member_value_fails_that_member_only(tmp_path):
    plan = _plan(tmp_path, '[vary]\ngrid = { "cells.initial.lsc_count" = [4, -5, "many"] }\n')
    errors = [m["error"] for m in plan.members]
    assert errors[0] is None
    assert "member p001_s1" in errors[1] and "cells.initial.lsc_count = -5" in errors[1]
    assert "cells.initial.lsc_count" in errors[2]


def test_inline_base_table_and_branch_arms(tmp_path):
    spec = spec_from_text("""
[base]
run = { days = 0.25, backend = "cpu" }
"domain.shape_voxels" = [32, 32, 32]
[vary]
lists = [
  { name = "control" },
  { name = "ara-c", "therapy.events" = [{ agent = "cytarabine", kind = "bolus", day = 0.125, dose_mg_per_m2 = 100 }] },
  { name = "too early", "therapy.events" = [
      { agent = "cytarabine", kind = "bolus", day = 0.0, dose_mg_per_m2 = 100 }] },
]
[replicates]
seeds = [4]
[branch]
at_day = 0.125
""")
    plan = expand(spec)
    assert [p["member_id"] for p in plan.prefixes] == ["prefix_s4"]
    prefix = config_from_toml_text(plan.prefixes[0]["config_toml"])
    assert prefix.run.days == 0.125 and tuple(prefix.domain.shape_voxels) == (32, 32, 32)
    control, arac, early = plan.members
    assert control["error"] is None and control["branch_overrides"] == ["run.days=0.25"]
    assert arac["error"] is None and arac["branch_overrides"][-1] == "run.days=0.25"
    assert "before the branch point" in early["error"]
    assert control["fingerprint"] != arac["fingerprint"]


def test_fingerprint_ignores_threads_only():
    a = load_config(TINY, ["run.threads=1"])
    assert fingerprint(a) == fingerprint(load_config(TINY, ["run.threads=2"]))
    assert fingerprint(a) != fingerprint(load_config(TINY, ["run.seed=2"]))


def test_endpoints_follow_their_documented_definitions():
    day = np.arange(0, 11, dtype=float)
    lsc = np.array([50, 60, 70, 40, 10, 2, 1, 3, 8, 30, 90], dtype=float)
    blast = np.zeros_like(lsc)
    blast[:3] = 5
    ts = {
        "time_h": day * 24, "count_lsc": lsc, "count_blast": blast, "leukemic_fraction": lsc / 1000,
        "stage": np.zeros_like(day), "hsc_niche_share": np.linspace(1, 0.5, 11),
        "arteriole_mean_integrity": np.linspace(1, 0.7, 11), "arteriole_fraction_lost": np.linspace(0, 0.2, 11),
        "o2_hypoxic_fraction": np.full(11, 0.1), "cell_hours_lsc_lodged": np.linspace(0, 100, 11),
        "cytarabine_uM_h_lsc_lodged": np.linspace(0, 25, 11), "daunorubicin_uM_h_lsc_lodged": np.zeros(11),
    }
    ep = endpoints(ts, treat_day=2.0)
    assert ep["final_day"] == 10 and ep["final_lsc"] == 90 and ep["final_blast"] == 0
    assert ep["min_burden"] == 1 and ep["min_burden_day"] == 6
    assert ep["relapse_day"] == 9  # first day after the nadir with burden > 10 x max(1, 1)
    assert ep["final_hsc_niche_share"] == 0.5
    assert ep["arteriole_loss"] == pytest.approx(0.3) and ep["arteriole_fraction_lost"] == pytest.approx(0.2)
    assert ep["lsc_lodged_cytarabine_uM"] == pytest.approx(0.25) and ep["lsc_lodged_daunorubicin_uM"] == 0
    untreated = endpoints(ts)
    assert math.isnan(untreated["relapse_day"]) and untreated["min_burden"] == 1
    ts["cell_hours_lsc_lodged"] = np.zeros(11)
    assert math.isnan(endpoints(ts)["lsc_lodged_cytarabine_uM"])


def test_treatment_start_is_the_first_drug_dose():
    cfg = load_config(TINY, [
        'therapy.events=[{agent="hsc_transplant", day=1, cells=5}, '
        '{agent="daunorubicin", kind="bolus", days=[16, 15], dose_mg_per_m2=60}, '
        '{agent="cytarabine", kind="infusion", start_day=15.5, duration_days=7, dose_mg_per_m2_per_day=100}]'
    ])
    assert treatment_start_day(cfg.to_toml()) == 15.0
    assert math.isnan(treatment_start_day(load_config(TINY).to_toml()))


def test_dry_run_lists_members_and_writes_nothing(tmp_path):
    out = tmp_path / "sw"
    result = CliRunner().invoke(app, ["sweep", str(SWEEPS / "tiny.toml"), "--out", str(out), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "p001_s2" in result.output and "4 members (4 to run, 0 invalid)" in result.output
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--gpus"], "dask-cuda"),
    (["--scheduler", "localhost:8786"], "tcp://HOST:PORT"),
    (["--workers", "0"], "--workers must be >= 1"),
    (["--set", "run.dyas=1"], "did you mean 'run.days'"),
])
def test_sweep_option_errors_are_one_line_exit_2(tmp_path, args, message):
    pytest.importorskip("distributed")
    if "--gpus" in args:
        import importlib.util

        if importlib.util.find_spec("dask_cuda") is not None:
            pytest.skip("dask-cuda is installed here")
    out = tmp_path / "sw"
    result = CliRunner().invoke(app, ["sweep", str(SWEEPS / "tiny.toml"), "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_sweep_report_of_a_folder_without_a_sweep_is_an_error(tmp_path):
    result = CliRunner().invoke(app, ["sweep-report", str(tmp_path)])
    assert result.exit_code == 2 and "holds no sweep" in result.output


def test_classify_keeps_done_members_and_reruns_everything_else(tmp_path):
    from marrow3d.sweep.driver import classify, unit_dir
    from marrow3d.sweep.status import write_status

    plan = _plan(tmp_path, '[vary]\ngrid = { "cells.initial.lsc_count" = [4, 8, 16, -1, 32] }\n')
    sw = tmp_path / "sw"
    m = plan.members
    unit_dir(sw, m[0]).mkdir(parents=True)
    write_status(unit_dir(sw, m[0]), {"status": "done", "fingerprint": m[0]["fingerprint"]})
    unit_dir(sw, m[1]).mkdir(parents=True)
    write_status(unit_dir(sw, m[1]), {"status": "done", "fingerprint": "another config"})
    unit_dir(sw, m[2]).mkdir(parents=True)  # killed before its status was written
    (unit_dir(sw, m[2]) / "run.h5").write_bytes(b"\x89HDF\r\n")
    states = classify(sw, plan)
    assert states == {"p000_s1": "done", "p001_s1": "rerun", "p002_s1": "rerun", "p003_s1": "invalid",
                      "p004_s1": "new"}


@pytest.mark.parametrize("command", [["sweep"], ["sweep-report"]])
def test_sweep_commands_have_help_with_an_example(command):
    result = CliRunner().invoke(app, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Example" in result.output


def test_run_member_records_failures_instead_of_raising(tmp_path):
    from marrow3d.sweep.status import read_status, write_status
    from marrow3d.sweep.worker import run_member

    plan = _plan(tmp_path, """
[set]
"run.days" = 0.25
[vary]
lists = [{ name = "bad", "cells.initial.lsc_count" = -1 }, { name = "arm" }]
[replicates]
seeds = [2]
[branch]
at_day = 0.125
""")
    bad, arm = plan.members
    out = tmp_path / "members" / bad["member_id"]
    out.mkdir(parents=True)
    (out / "leftover.h5").write_bytes(b"junk")  # an earlier attempt: cleaned
    assert run_member(bad, out) == str(out)
    st = read_status(out)
    assert st["status"] == "failed" and "cells.initial.lsc_count = -1" in st["error"] and st["wall_s"] >= 0
    assert not (out / "leftover.h5").exists()

    prefix_dir = tmp_path / "prefixes" / "prefix_s2"
    prefix_dir.mkdir(parents=True)
    write_status(prefix_dir, {"status": "failed", "error": "solver diverged", "fingerprint": arm["prefix_fingerprint"]})
    arm = {**arm, "prefix_dir": str(prefix_dir)}
    run_member(arm, tmp_path / "members" / arm["member_id"])
    st = read_status(tmp_path / "members" / arm["member_id"])
    assert st["status"] == "failed" and st["error"] == "shared prefix prefix_s2 did not finish: solver diverged"
    # A finished member is returned as it is, without touching its folder.
    done_dir = tmp_path / "members" / "done"
    done_dir.mkdir()
    write_status(done_dir, {"status": "done", "fingerprint": bad["fingerprint"]})
    before = (done_dir / "status.json").stat().st_mtime_ns
    run_member(bad, done_dir)
    assert (done_dir / "status.json").stat().st_mtime_ns == before


def test_a_member_process_that_dies_fails_that_member_with_the_reason(tmp_path, monkeypatch):
    from marrow3d.sweep.status import read_status
    from marrow3d.sweep.worker import run_member

    plan = _plan(tmp_path, '[set]\n"run.days" = 0.25\n')
    member = plan.members[0]
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'Segmentation fault (core dumped)'\nkill -9 $$\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    out = tmp_path / "members" / member["member_id"]
    assert run_member(member, out) == str(out)
    st = read_status(out)
    assert st["status"] == "failed" and st["wall_s"] >= 0
    assert st["error"] == ("the member process ended without a result (killed by SIGKILL (out of memory?)); "
                           "last output: Segmentation fault (core dumped)")


@pytest.mark.parametrize("text, needles", [
    ("[sett]\n'run.days' = 1\n", ["'sett'", "did you mean 'set'?"]),
    ("[zzz]\n", ["'zzz'", "allowed here: name, base, set, vary, replicates, branch"]),
    ("[branch]\nat_day = inf\n", ["branch.at_day", "finite"]),
])
def test_spec_errors_name_keys_as_written(text, needles):
    """Issue 16 item 12: the key list shows 'set', never the attribute name 'set_'."""
    with pytest.raises(ConfigError) as info:
        spec_from_text(text)
    msg = str(info.value)
    assert "set_" not in msg and "\n" not in msg
    for needle in needles:
        assert needle in msg, (needle, msg)
