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
    units = ("_um", "_per_", "_mmHg", "_uM", "_nM", "_min", "_su", "_amol")
    dimensionless = ("leak.", "tolerance", "chemotactic_sensitivity")
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


# ---------------------------------------------------------------------------------- non-finite values
def _float_leaves(node, path=()):
    """Every float in a config dump: (path, value), through tables, lists and tuples."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _float_leaves(v, (*path, k))
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _float_leaves(v, (*path, i))
    elif isinstance(node, float):
        yield path, node


def _config_with_every_event_kind() -> dict:
    """The default config plus a therapy event of every kind, dumped as plain data."""
    cfg = load_config(ROOT / "configs" / "scenarios" / "clearance_transplant.toml", [
        'therapy.events=[{agent="cytarabine",kind="infusion",start_day=1.0,duration_days=1.0,'
        'dose_mg_per_m2_per_day=100.0},{agent="daunorubicin",kind="bolus",days=[1.0],dose_mg_per_m2=60.0},'
        '{agent="deferoxamine",kind="repeated",start_day=1.0,interval_h=24.0,count=2,infusion_duration_h=10.0,'
        'dose_mg_per_kg=40.0},'
        '{agent="hsc_transplant",day=2.0,cells=10}]',
    ])
    return cfg.model_dump(mode="json", exclude_none=True)


def _set(data: dict, path: tuple, value) -> dict:
    import copy

    out = copy.deepcopy(data)
    node = out
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return out


def test_every_float_key_refuses_inf_and_nan():
    """The whole class (issue 16, item 7): inf, -inf and nan in any float of any section,
    table, tuple or therapy event are refused with one line naming the key."""
    from marrow3d.config.loader import validate_dict

    data = _config_with_every_event_kind()
    leaves = list(_float_leaves(data))
    assert len(leaves) > 90, len(leaves)  # every section contributes (about 90 keys in issue 16)
    assert validate_dict(SimulationConfig, data)  # the config itself is valid
    for path, _ in leaves:
        key = str(path[-1]) if not isinstance(path[-1], int) else str(path[-2])
        for bad in (float("inf"), float("-inf"), float("nan")):
            with pytest.raises(ConfigError) as info:
                validate_dict(SimulationConfig, _set(data, path, bad), "cfg")
            msg = str(info.value)
            assert "finite" in msg and key in msg and "\n" not in msg, (path, msg)


@pytest.mark.parametrize("override, key", [
    ("transport.oxygen.diffusivity_um2_per_min=inf", "transport.oxygen.diffusivity_um2_per_min"),
    ("anatomy.niche_density_per_mm3=inf", "anatomy.niche_density_per_mm3"),
    ("domain.origin_um=[nan, 0, 0]", "domain.origin_um.0"),
    ("run.days=nan", "run.days"),
    ("run.days=1e400", "run.days"),  # TOML reads an overflowing literal as inf
])
def test_non_finite_overrides_name_the_key(override, key):
    with pytest.raises(ConfigError, match="finite") as info:
        load_config(None, [override])
    assert key in str(info.value) and "3650" not in str(info.value)


def test_absurd_step_count_is_refused():
    """run.cell_step_hours = 1e-6 would take millions of steps: refused naming both keys."""
    from marrow3d.config import MAX_CELL_STEPS

    with pytest.raises(ConfigError) as info:
        load_config(None, ["run.cell_step_hours=1e-6"])
    msg = str(info.value)
    assert "run.cell_step_hours" in msg and "run.days" in msg and "cell steps" in msg
    ok = load_config(None, ["run.days=3650", "run.cell_step_hours=1.0"])
    assert ok.n_cell_steps == 87_600 <= MAX_CELL_STEPS
