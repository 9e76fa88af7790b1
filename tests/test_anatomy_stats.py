"""Anatomy statistics: exact values on hand-made anatomies, literature ranges for defaults."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from marrow3d.anatomy import (
    LITERATURE_RANGES,
    Anatomy,
    anatomy_stats,
    check_literature_ranges,
    generate_anatomy,
    stats_table,
)
from marrow3d.config.anatomy import AnatomyConfig, DomainConfig
from marrow3d.kernels import codes


def _hand_made() -> Anatomy:
    """Bone plane at x=0, arteriole line at x=1, sinusoid plane at x=9, marrow between.

    Shape (4, 4, 12) at 10 um; x = 10, 11 are marrow beyond the sinusoid plane.
    """
    t = np.full((4, 4, 12), codes.MARROW, dtype=np.uint8)
    t[:, :, 0] = codes.BONE
    t[:, 1, 1] = codes.ARTERIOLE  # a line along z, touching bone
    t[:, :, 9] = codes.SINUSOID
    niche = np.zeros_like(t)
    niche[0, 0, 1] = codes.NICHE_ENDOSTEAL  # face neighbour of the arteriole at (0, 1, 1)
    niche[2, 2, 8] = codes.NICHE_PERIVASCULAR  # face neighbour of the sinusoid plane
    integrity = np.isin(t, codes.VESSEL_LABELS).astype(np.float32)
    return Anatomy(t, niche, integrity, voxel_um=10.0)


def test_stats_exact_on_hand_made_anatomy():
    a = _hand_made()
    s = anatomy_stats(a)
    n = 4 * 4 * 12
    assert s["volume_fraction"]["bone"] == pytest.approx(16 / n)
    assert s["volume_fraction"]["sinusoid"] == pytest.approx(16 / n)
    assert s["volume_fraction"]["arteriole"] == pytest.approx(4 / n)
    n_cavity = n - 16
    assert s["vascular_volume_fraction"] == pytest.approx(20 / n_cavity)
    # Marrow x-columns 1..8 and 10..11 (minus the arteriole voxels at x=1): distance to the
    # sinusoid plane is |x - 9| voxels.
    d = []
    for x in list(range(1, 9)) + [10, 11]:
        count = 16 - (4 if x == 1 else 0)
        d += [abs(x - 9) * 10.0] * count
    d = np.array(d)
    assert s["distance_to_sinusoid_um"]["q50"] == pytest.approx(np.percentile(d, 50))
    assert s["distance_to_sinusoid_um"]["mean"] == pytest.approx(d.mean())
    assert s["marrow_within_20um_of_sinusoid_fraction"] == pytest.approx(np.mean(d <= 20.0))
    # All arteriole voxels touch bone (10 um away).
    assert s["arteriole_within_100um_of_bone_fraction"] == 1.0
    assert s["arteriole_by_bone_distance"][0]["share"] == 1.0
    assert s["arteriole_diameter_um"] == pytest.approx(10.0)
    # Niches.
    assert s["niche_count"] == {"endosteal": 1, "perivascular": 1, "total": 2}
    marrow_mm3 = a.tissue_counts["marrow"] * 1e-6
    assert s["niche_density_per_mm3"]["total"] == pytest.approx(2 / marrow_mm3)
    assert s["perivascular_niches_within_10um_of_sinusoid_fraction"] == 1.0
    assert s["niches_within_10um_of_sinusoid_fraction"] == 0.5
    assert s["endosteal_niches_within_100um_of_bone_fraction"] == 1.0
    assert s["sinusoid_components"] == 1
    assert s["central_sinus_diameter_um"] is None


def test_stats_without_a_vessel_class_are_none_not_errors():
    a = _hand_made()
    t = a.tissue.copy()
    t[t == codes.ARTERIOLE] = codes.MARROW
    b = Anatomy(t, np.zeros_like(t), np.isin(t, codes.VESSEL_LABELS).astype(np.float32), 10.0)
    s = anatomy_stats(b)
    assert s["distance_to_arteriole_um"]["q50"] is None
    assert s["arteriole_within_100um_of_bone_fraction"] is None
    checks = {c.key: c for c in check_literature_ranges(s)}
    assert checks["arteriole_within_100um_of_bone_fraction"].ok is None
    assert checks["niches_within_10um_of_sinusoid_fraction"].ok is None


def test_niche_shares_of_a_few_slots_are_not_judged():
    s = anatomy_stats(_hand_made())  # two slots: a share of 0.5 means nothing
    c = {c.key: c for c in check_literature_ranges(s)}["niches_within_10um_of_sinusoid_fraction"]
    assert c.value == 0.5 and c.ok is None and "n=2" in c.note


def test_literature_ranges_are_documented_data():
    assert len(LITERATURE_RANGES) >= 10
    for key, rng in LITERATURE_RANGES.items():
        assert rng.low <= rng.high, key
        assert rng.source and rng.basis and rng.unit, key


@pytest.fixture(scope="module")
def default_stats() -> dict[str, dict]:
    """Default box (64^3) and femur (200 x 100 x 100) at 10 um, two seeds each."""
    out = {}
    for kind, shape in (("box", (64, 64, 64)), ("femur", (200, 100, 100))):
        for seed in (1, 2):
            a = generate_anatomy(DomainConfig(kind=kind, shape_voxels=shape), AnatomyConfig(), seed=seed)
            out[f"{kind}-{seed}"] = anatomy_stats(a)
    return out


@pytest.mark.parametrize("case", ["box-1", "box-2", "femur-1", "femur-2"])
def test_defaults_fall_inside_literature_ranges(default_stats, case):
    s = default_stats[case]
    failures = [
        f"{c.key}={c.value} not in [{c.range.low}, {c.range.high}] ({c.range.source})"
        for c in check_literature_ranges(s)
        if c.ok is not True
    ]
    assert not failures, "; ".join(failures)


@pytest.mark.parametrize("case", ["box-1", "femur-1"])
def test_arterioles_concentrate_near_bone(default_stats, case):
    bands = default_stats[case]["arteriole_by_bone_distance"]
    near = bands[0]["density"]
    far = [b["density"] for b in bands[2:] if b["density"] is not None]
    assert near > 0 and all(d < near / 5 for d in far)


def test_femur_has_a_central_sinus(default_stats):
    s = default_stats["femur-1"]
    assert s["volume_fraction"]["central_sinus"] > 0
    assert 60.0 <= s["central_sinus_diameter_um"] <= 90.0  # 40-um radius at 10-um voxels


def test_stats_are_json_serialisable(default_stats):
    text = json.dumps(default_stats["box-1"])
    assert json.loads(text)["kind"] == "box"


def test_stats_table_renders(default_stats):
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(stats_table(default_stats["femur-1"]))
    text = console.export_text()
    assert "vascular volume fraction" in text and "Acar 2015" in text and "PASS" in text
    assert "FAIL" not in text


def test_a_stated_setting_makes_a_miss_deliberate(default_stats):
    """tiny.toml's 20x niche density is a choice the config states, not a failure."""
    s = json.loads(json.dumps(default_stats["box-1"]))
    s["niche_density_per_mm3"]["total"] = 1008.0
    plain = {c.key: c for c in check_literature_ranges(s)}["niche_density_per_mm3.total"]
    assert plain.verdict == "fail"
    settings = {"anatomy.niche_density_per_mm3": (1000.0, 50.0), "anatomy.sinusoid_radius_um": (12.0, 10.0)}
    checks = {c.key: c for c in check_literature_ranges(s, settings=settings)}
    c = checks["niche_density_per_mm3.total"]
    assert c.ok is False and c.verdict == "deliberate"
    assert c.deliberate == "anatomy.niche_density_per_mm3 = 1000 (default 50)"
    assert checks["vascular_volume_fraction"].verdict == "pass"  # in range: a setting changes nothing


def test_stated_settings_of_the_tiny_config():
    from marrow3d.anatomy.stats import stated_settings
    from marrow3d.config import load_config

    tiny = Path(__file__).resolve().parents[1] / "configs" / "tiny.toml"
    assert stated_settings(load_config(tiny)) == {"anatomy.niche_density_per_mm3": (1000.0, 50.0)}
    assert stated_settings(load_config(None)) == {}


def test_cli_table_at_80_columns(tmp_path):
    """configs/tiny.toml: the density row says 'set' and names the setting; no label is cut
    mid-word at 80 columns; --json holds the verdicts."""
    from typer.testing import CliRunner

    from marrow3d.anatomy.stats import _rows
    from marrow3d.cli.main import app

    tiny = Path(__file__).resolve().parents[1] / "configs" / "tiny.toml"
    res = CliRunner().invoke(app, ["anatomy", "stats", str(tiny), "--json", str(tmp_path / "s.json")])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    density = next(i for i, line in enumerate(lines) if line.lstrip().startswith("niche density, total"))
    assert lines[density].rstrip().endswith("set")
    assert "anatomy.niche_density_per_mm3 = 1000 (default 50)" in res.stdout
    words = {w for line in lines for w in line.replace("│", " ").split()}
    data = json.loads((tmp_path / "s.json").read_text())
    for _, label, _ in _rows(data):
        for word in label.split():
            assert word in words, (label, word)
    verdicts = {c["statistic"]: c["verdict"] for c in data["checks"]}
    assert verdicts["niche_density_per_mm3.total"] == "deliberate"
