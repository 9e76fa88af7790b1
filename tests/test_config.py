"""Configuration: defaults, overrides, round trips and the embedded default config."""

from __future__ import annotations

from pathlib import Path

import pytest

from marrow3d.config import SimulationConfig, config_from_toml_text, load_config
from marrow3d.config.loader import apply_overrides, default_config_text, parse_override
from marrow3d.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_embedded_default_is_mirrored_in_configs():
    assert default_config_text() == (ROOT / "configs" / "default.toml").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ["default.toml", "tiny.toml", "femur.toml"])
def test_shipped_configs_validate(name):
    cfg = load_config(ROOT / "configs" / name)
    assert isinstance(cfg, SimulationConfig)


def test_tiny_and_femur_sizes():
    assert tuple(load_config(ROOT / "configs/tiny.toml").domain.shape_voxels) == (32, 32, 32)
    femur = load_config(ROOT / "configs/femur.toml")
    assert femur.domain.kind == "femur"
    nz, ny, nx = femur.domain.shape_voxels
    assert nz * femur.domain.voxel_um >= 10_000 and ny == nx == 110


def test_round_trip_through_toml():
    cfg = load_config(None, ["run.days=3", "transport.oxygen.km_mmHg=2.5", "run.threads=2"])
    again = config_from_toml_text(cfg.to_toml())
    assert again == cfg
    assert again.to_toml() == cfg.to_toml()


def test_overrides_parse_toml_literals():
    assert parse_override("run.days=1e-1") == (["run", "days"], 0.1)
    assert parse_override("domain.shape_voxels=[8, 9, 10]") == (["domain", "shape_voxels"], [8, 9, 10])
    assert parse_override("run.backend=cpu") == (["run", "backend"], "cpu")
    assert parse_override('run.backend="cpu"') == (["run", "backend"], "cpu")
    data = apply_overrides({"run": {"days": 1.0}}, ["run.days=2", "output.snapshot_every_hours=6"])
    assert data == {"run": {"days": 2}, "output": {"snapshot_every_hours": 6}}


def test_overrides_win_in_order():
    cfg = load_config(None, ["run.seed=3", "run.seed=9"])
    assert cfg.run.seed == 9


def test_default_is_a_quick_box_with_leukemia_seeded():
    cfg = load_config(None)
    assert cfg.domain.kind == "box"
    assert cfg.cells.initial.lsc_count > 0
    assert cfg.run.days > 0


def _leaves(d, prefix=""):
    for k, v in d.items():
        path = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            yield from _leaves(v, path)
        else:
            yield path, v


def test_units_are_in_the_names():
    """Every float of the transport section names its unit in its path (or is dimensionless)."""
    units = ("_um", "_per_", "_mmHg", "_uM", "_su", "_amol")
    dimensionless = ("leak.", "tolerance")
    for path, value in _leaves(SimulationConfig().transport.model_dump()):
        if not isinstance(value, float):
            continue
        assert any(u in path for u in units) or any(d in path for d in dimensionless), path


def test_error_for_unknown_top_level_section_suggests():
    with pytest.raises(ConfigError, match=r"unknown key 'rnu'.*did you mean 'run'"):
        load_config(None, ["rnu.days=1"])


def test_partial_table_keeps_sibling_defaults():
    cfg = load_config(None, ["transport.oxygen.blood_pO2_mmHg.arteriole=40"])
    default = load_config(None)
    assert cfg.transport.oxygen.blood_pO2_mmHg.arteriole == 40
    assert cfg.transport.oxygen.blood_pO2_mmHg.sinusoid == default.transport.oxygen.blood_pO2_mmHg.sinusoid > 0
    cfg = load_config(None, ["cells.death_rate_per_day.blast=0.5"])
    assert cfg.cells.death_rate_per_day.hsc == default.cells.death_rate_per_day.hsc > 0
