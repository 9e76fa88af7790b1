"""``marrow3d compare``: one report of several runs, its endpoints, and its errors.

Three real tiny runs are made once per module in one subprocess (one Taichi start): a
natural history of a 16^3 box to day 1 and two arms branched from it at day 1 to day 1.5,
7+3 and 7+3 with deferoxamine (snapshots every 12 h, with the drug fields). The report of
all three is written once through the real console command. The endpoint definitions are
checked on a hand-made time series where every value is known.
"""

from __future__ import annotations

import base64
import io
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["natural history", "7+3", "7+3+DFO"]

_MAKE_RUNS = r"""
import sys
from pathlib import Path
from marrow3d.config import load_config
from marrow3d.runner import branch_run, run_simulation

root, out = Path(sys.argv[1]), Path(sys.argv[2])
fields = 'output.snapshot_fields=["oxygen","signal","cells","lodged","integrity","cytarabine","daunorubicin"]'
cfg = load_config(root / "configs/scenarios/small/natural_history.toml",
                  ["run.days=1", "domain.shape_voxels=[16,16,16]", "cells.initial.lsc_count=60",
                   'run.backend="cpu"', "run.threads=2", "output.snapshot_every_hours=12", fields])
run_simulation(cfg, out / "base", progress=False)
chemo = ('{agent="cytarabine",kind="infusion",start_day=1,duration_days=0.5,dose_mg_per_m2_per_day=200},'
         '{agent="daunorubicin",kind="bolus",days=[1],dose_mg_per_m2=60}')
dfo = (',{agent="deferoxamine",kind="repeated",start_day=1,interval_h=24,count=1,infusion_duration_h=10,'
       'dose_mg_per_kg=40}')
branch_run(out / "base", out / "arm73", ["therapy.events=[" + chemo + "]", "run.days=1.5"], progress=False)
branch_run(out / "base", out / "armdfo", ["therapy.events=[" + chemo + dfo + "]", "run.days=1.5"], progress=False)
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("compare_runs")
    proc = subprocess.run([sys.executable, "-c", _MAKE_RUNS, str(ROOT), str(out)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"base": out / "base", "arm73": out / "arm73", "armdfo": out / "armdfo"}


@pytest.fixture(scope="module")
def report(gl, runs, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("compare_report") / "report"
    cmd = [sys.executable, "-m", "marrow3d", "compare", str(runs["base"]), str(runs["arm73"]), str(runs["armdfo"]),
           "--out", str(out), "--labels", ",".join(LABELS), "--days", "start,therapy", "--size", "320x240"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def _png(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def not_background(img: np.ndarray) -> float:
    """Fraction of pixels that are not the white background."""
    return float(np.mean(np.any(img < 235, axis=-1)))


def _md_table(md: str, heading: str) -> list[list[str]]:
    """Body rows of the first table after ``heading`` in a Markdown text."""
    part = md.split(heading, 1)[1]
    block = []
    for ln in part.splitlines()[1:]:
        if ln.startswith("|"):
            block.append(ln)
        elif block:
            break
    assert block, heading
    return [[c.strip() for c in row.strip("|").split(" | ")] for row in block[2:]]


# ------------------------------------------------------------------ the report
def test_report_files_and_endpoint_table(report):
    out, proc = report
    assert "wrote" in proc.stdout and "report.html" in proc.stdout
    md = (out / "report.md").read_text(encoding="utf-8")
    for heading in ("### Leukemic burden", "### Niches, vessels and oxygen at the end",
                    "### Drug delivery during therapy"):
        rows = _md_table(md, heading)
        assert [r[0] for r in rows] == LABELS, (heading, rows)  # one row per run, in order
    burden = _md_table(md, "### Leukemic burden")
    assert burden[0][3] == "–"  # the untreated run has no therapy start
    assert burden[1][3] not in ("–", "") and burden[2][3] not in ("–", "")
    csv = pd.read_csv(out / "endpoints.csv", index_col="run")
    assert list(csv.index) == LABELS
    assert math.isnan(csv.loc["natural history", "therapy_start_day"])
    for arm in ("7+3", "7+3+DFO"):
        row = csv.loc[arm]
        assert 1.0 <= row["therapy_start_day"] <= 1.1
        assert row["therapy_end_day"] > row["therapy_start_day"]
        assert np.isfinite(row["log10_blast_reduction"]) and row["log10_blast_reduction"] >= 0
        assert row["endosteal_cytarabine_uM"] > 0 and row["blast_cytarabine_uM"] > 0
        assert row["relapse_fold"] == pytest.approx(row["final_burden"] / max(row["min_burden"], 1.0))


def test_markdown_pngs_exist_and_show_something(report):
    from PIL import Image

    out, _ = report
    md = (out / "report.md").read_text(encoding="utf-8")
    names = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    # panel + burden + adjuncts (deferoxamine given) + 3 runs x 2 days x 4 views
    assert {"timeseries.png", "burden.png", "adjuncts.png"} <= set(names)
    tiles = [n for n in names if n.startswith("render_")]
    assert len(tiles) == 3 * 2 * 4, tiles
    # no drug field before dosing: a tile that says so (day 0 of every run, the untreated run throughout)
    explained = {f"render_day0_{s}_drug.png" for s in ("natural_history", "7_3", "7_3_DFO")}
    explained.add("render_day1p5_natural_history_drug.png")
    assert explained <= set(tiles)
    for name in names:
        path = out / name
        assert path.parent == out and path.is_file(), name  # next to report.md
        img = np.asarray(Image.open(path).convert("RGB"))
        assert not_background(img) > (0.002 if name in explained else 0.02), name
        if name.startswith("render_"):
            assert img.shape == (240, 320, 3), name
    assert md.count("no cytarabine data") == 0  # the explanation is in the picture, not the text
    # drawn, not placeholders: a render has colour (placeholders are grey text on white)
    vessels = np.asarray(Image.open(out / tiles[0]).convert("RGB")).astype(int)
    assert (np.abs(vessels[..., 0] - vessels[..., 2]) > 60).mean() > 0.002


def test_html_is_self_contained(report):
    out, _ = report
    text = (out / "report.html").read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    srcs = re.findall(r'src="([^"]+)"', text)
    md_images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (out / "report.md").read_text(encoding="utf-8"))
    assert len(srcs) == len(md_images)
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "href=" not in text and "<link" not in text and "<script" not in text
    for src in srcs[:3]:
        img = _png(base64.b64decode(src.split(",", 1)[1]))
        assert not_background(img) > 0.02
    for label in LABELS:
        assert label in text


def test_days_before_the_branch_come_from_the_parent_and_scales_are_shared(report, runs):
    out, _ = report
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "### Day 0 (start)" in md
    assert "7+3: drawn from base, the run it was branched from at day 1." in md
    # the on-therapy day: the arms' first snapshot after dosing starts (12-hourly snapshots)
    assert "### Day 1.5 (on therapy)" in md
    # the untreated run ends at day 1: its nearest state is noted
    assert "natural history: nearest snapshot: day 1." in md
    # one drug scale for every picture: the highest marrow level drawn, rounded up by < 25%
    m = re.search(r"cytarabine 0–([0-9.]+) µM \(the highest marrow level in the pictures, ([0-9.e-]+) µM, "
                  r"rounded up\)", md)
    assert m, md
    top, level = float(m[1]), float(m[2])
    assert level <= top < 1.25 * level
    from marrow3d.analysis import open_run
    from marrow3d.kernels import codes

    drawn = []  # the arms' day-1.5 state is the only drawn state with cytarabine
    for name in ("arm73", "armdfo"):
        with open_run(runs[name]) as run:
            drawn.append(float(run.array("cytarabine", -1)[run.tissue == codes.MARROW].max()))
    assert level == pytest.approx(max(drawn), rel=5e-3)


# ------------------------------------------------------------------ endpoint definitions
def test_endpoint_definitions_on_a_known_series():
    from marrow3d.analysis.endpoints import compare_endpoints, therapy_window

    t = np.arange(0, 241, 24.0)  # days 0..10
    n = t.size
    plasma = np.zeros(n)
    plasma[3:6] = [0.3, 0.3, 0.3]  # days 3-5
    plasma[6] = 0.002  # below 1% of the peak: the window closes on day 5
    blast = np.array([10, 100, 1000, 1000, 100, 10, 1, 0, 5, 50, 500], float)
    lsc = np.full(n, 20.0)
    lsc[7] = 10.0
    # cumulative exposure: lodged LSCs see 0.1 uM per hour, blasts 0.3, only while dosed (rows 3-5)
    hours_l = np.arange(n) * 24.0 * 4  # 4 lodged LSCs all the time
    hours_b = np.arange(n) * 24.0 * 10
    on = np.r_[0, np.cumsum(plasma[1:] > 0.01)]  # dosed steps so far
    auc_l = on * 24.0 * 4 * 0.1
    auc_b = on * 24.0 * 10 * 0.3
    df = pd.DataFrame({"day": t / 24, "count_lsc": lsc, "count_blast": blast, "plasma_cytarabine_uM": plasma,
                       "plasma_daunorubicin_uM": np.zeros(n), "cytarabine_tissue_uM_mean_endosteal": plasma * 0.5,
                       "cytarabine_uM_h_lsc_lodged": auc_l, "cell_hours_lsc_lodged": hours_l,
                       "cytarabine_uM_h_blast": auc_b, "cell_hours_blast": hours_b,
                       "hsc_niche_share": np.linspace(0.7, 0.4, n), "lsc_niche_share": np.linspace(0, 0.3, n),
                       "arteriole_mean_integrity": np.linspace(1, 0.6, n),
                       "arteriole_fraction_lost": np.linspace(0, .2, n),
                       "o2_hypoxic_fraction": np.full(n, 0.1), "o2_endosteal_hypoxic_fraction": np.full(n, 0.3),
                       "stage": np.ones(n)}, index=pd.Index(t, name="time_h"))
    assert therapy_window(df) == (3, 5)
    ep = compare_endpoints(df)
    assert ep["therapy_start_day"] == 3 and ep["therapy_end_day"] == 5
    assert ep["blast_at_therapy_start"] == 1000  # the row before the first dosed row
    assert ep["min_blast"] == 0 and ep["min_blast_day"] == 7
    assert ep["log10_blast_reduction"] == pytest.approx(3.0)  # 1000 -> 0, floored at one cell
    assert ep["min_burden"] == 10 and ep["min_burden_day"] == 7
    assert ep["final_burden"] == 520 and ep["relapse_fold"] == pytest.approx(52.0)
    assert ep["relapse_day"] == 10  # first day with B > 10 x 10 after the nadir (sweep definition)
    assert ep["endosteal_cytarabine_uM"] == pytest.approx(0.15)
    assert ep["lsc_lodged_cytarabine_uM"] == pytest.approx(0.1 * 3 / 3)  # 3 dosed days of 3 in the window
    assert ep["blast_cytarabine_uM"] == pytest.approx(0.3)
    assert ep["lsc_to_blast_cytarabine"] == pytest.approx(1 / 3)
    assert ep["final_hsc_niche_share"] == pytest.approx(0.4) and ep["final_lsc_niche_share"] == pytest.approx(0.3)
    assert ep["arteriole_mean_integrity"] == pytest.approx(0.6) and ep["arteriole_fraction_lost"] == pytest.approx(0.2)
    assert ep["final_endosteal_hypoxic_fraction"] == pytest.approx(0.3)
    untreated = compare_endpoints(df.assign(plasma_cytarabine_uM=0.0))
    assert math.isnan(untreated["therapy_start_day"]) and math.isnan(untreated["log10_blast_reduction"])
    assert untreated["min_burden"] == 10 and untreated["min_burden_day"] == 7  # over the whole run
    # deferoxamine or plerixafor alone do not open a therapy window
    assert therapy_window(df.assign(plasma_cytarabine_uM=0.0, plasma_deferoxamine_uM=1.0)) is None


def test_matched_exposure_ratio_is_not_fooled_by_cells_that_outlive_a_bolus():
    """Both kinds see the same level at every step; blasts die while it is high.

    The per-cell-hour averages differ (lodged LSCs carry the low-level hours), the matched
    ratio is exactly 1. A second series where lodged LSCs see half the blasts' level at every
    step gives 0.5, whatever the cell counts.
    """
    from marrow3d.analysis.endpoints import compare_endpoints, matched_exposure_ratio

    t = np.arange(0, 11 * 24.0, 24.0)
    n = t.size
    plasma = np.zeros(n)
    plasma[2:9] = [1.0, 0.8, 0.4, 0.2, 0.1, 0.05, 0.02]  # a bolus washing out
    level = plasma.copy()  # tissue level per step, the same for every cell
    lodged = np.full(n, 5.0)
    blasts = np.array([100, 100, 100, 10, 1, 1, 1, 1, 1, 1, 1], float)  # killed by the high levels
    dt = 24.0

    def cum(per_row):
        return np.r_[0.0, np.cumsum(per_row[1:])]

    df = pd.DataFrame({"plasma_daunorubicin_uM": plasma, "plasma_cytarabine_uM": np.zeros(n),
                       "count_blast": blasts, "count_lsc": lodged,
                       "daunorubicin_uM_h_lsc_lodged": cum(lodged * level * dt), "cell_hours_lsc_lodged": cum(lodged * dt),
                       "daunorubicin_uM_h_blast": cum(blasts * level * dt), "cell_hours_blast": cum(blasts * dt)},
                      index=pd.Index(t, name="time_h"))
    assert compare_endpoints(df)["lsc_to_blast_daunorubicin"] == pytest.approx(1.0)
    # the naive ratio of the per-cell-hour averages over the same rows says "sheltered"
    d = lambda c: df[c].iloc[-1] - df[c].iloc[1]  # noqa: E731
    naive = (d("daunorubicin_uM_h_lsc_lodged") / d("cell_hours_lsc_lodged")) / (
        d("daunorubicin_uM_h_blast") / d("cell_hours_blast"))
    assert naive < 0.6
    half = df.assign(**{"daunorubicin_uM_h_lsc_lodged": cum(lodged * 0.5 * level * dt)})
    assert matched_exposure_ratio(half, "daunorubicin", 1, n - 1) == pytest.approx(0.5)
    assert np.isnan(matched_exposure_ratio(df.drop(columns="cell_hours_blast"), "daunorubicin", 1, n - 1))


def test_day_words_and_runs_that_end_on_different_days():
    from types import SimpleNamespace

    from marrow3d.viz.report import CompareError, _resolve_days, parse_days

    def fake(label, end):
        df = pd.DataFrame({"day": [0.0, end]})
        return SimpleNamespace(label=label, df=df, final_day=end, endpoints={"therapy_start_day": float("nan")})

    assert parse_days(None) == ["start", "therapy", "end"]
    assert parse_days(" 3, End ,0.5") == [3.0, "end", 0.5]
    same = [fake("a", 7.0), fake("b", 7.0)]
    # no treated run: the default "therapy" is skipped; equal ends merge into one day
    assert _resolve_days(parse_days(None), same, explicit=False) == [(0.0, "start"), (7.0, "end")]
    assert _resolve_days(["end", 7.0, 3.0, "start", 0.0], same, explicit=True) == [(0.0, "start"), (3.0, ""),
                                                                                 (7.0, "end")]
    differ = [fake("a", 5.0), fake("b", 7.0)]
    assert _resolve_days(["end", 3.0, "start"], differ, explicit=True) == [(0.0, "start"), (3.0, ""),
                                                                          (None, "end of each run")]
    with pytest.raises(CompareError, match="after the end of run 'a'"):
        _resolve_days([6.0], differ, explicit=True)


# ------------------------------------------------------------------ errors
@pytest.fixture(scope="module")
def cli():
    from typer.testing import CliRunner

    from marrow3d.cli.main import app

    def invoke(*args):
        return CliRunner().invoke(app, ["compare", *[str(a) for a in args]])

    return invoke


def _one_line_error(res, needle: str) -> None:
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    assert needle in lines[0], (needle, lines[0])


def test_bad_inputs_are_one_line_errors(cli, runs, tmp_path):
    a, b = runs["arm73"], runs["armdfo"]
    out = tmp_path / "rep"
    afile = tmp_path / "afile"
    afile.write_text("x")
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        ((tmp_path / "nope", b, "--out", out), "does not exist"),
        ((empty, b, "--out", out), "holds no run.h5"),
        ((a, b, "--out", out, "--labels", "only-one"), "1 label(s) for 2 run(s)"),
        ((a, b, "--out", out, "--labels", "x,x"), "given more than once"),
        ((a, b, "--out", out, "--labels", "x,"), "a label is empty"),
        ((a, b, "--out", out, "--days", "0,soon"), "bad --days entry 'soon'"),
        ((a, b, "--out", out, "--days", "-1"), "days are finite numbers >= 0"),
        ((a, b, "--out", out, "--days", "99"), "--days 99 is after the end of run"),
        ((runs["base"], "--out", out, "--days", "therapy"), "no run has cytotoxic therapy"),
        ((a, b, "--out", afile), "is not a folder"),
        ((a, b, "--out", out, "--size", "huge"), "bad --size"),
    ]
    for args, needle in cases:
        _one_line_error(cli(*args), needle)
    assert not out.exists()  # nothing written on bad input


def test_without_renders_no_opengl_is_needed(cli, runs, tmp_path):
    res = cli(runs["arm73"], runs["armdfo"], "--out", tmp_path / "r", "--no-renders")
    assert res.exit_code == 0, res.output
    md = (tmp_path / "r" / "report.md").read_text(encoding="utf-8")
    assert "render_" not in md and "timeseries.png" in md
    assert len(pd.read_csv(tmp_path / "r" / "endpoints.csv")) == 2


def test_help_has_an_example_and_the_command_is_registered(cli):
    res = cli("--help")
    assert res.exit_code == 0 and "Example" in res.output and "marrow3d compare" in res.output
