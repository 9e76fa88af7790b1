"""The integrated model: step order, fields, determinism across thread counts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from marrow3d.config import load_config
from marrow3d.errors import NonFiniteError
from marrow3d.transport import oxygen_tables, oxygen_vmax_mmHg_per_min

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.toml"


def test_oxygen_consumption_unit_conversion():
    # 1 amol/s in a (10 um)^3 voxel: 1e-18 mol/s / 1e-12 L = 1e-6 M/s = 60 uM/min -> / 1.3 uM/mmHg
    assert oxygen_vmax_mmHg_per_min(1.0, 10.0, 1.3) == pytest.approx(60.0 / 1.3, rel=1e-12)
    # halving the voxel edge packs the same cell into 1/8 of the volume
    assert oxygen_vmax_mmHg_per_min(1.0, 5.0, 1.3) == pytest.approx(8 * 60.0 / 1.3, rel=1e-12)


def test_oxygen_exchange_is_perfusion_limited():
    cfg = load_config(None)
    tables = oxygen_tables(cfg.transport.oxygen, 10.0, np.array([0.0, 1.0, 3.0]), 0.2)
    assert np.all(tables.leak_by_class == 0.0)


@pytest.fixture(scope="module")
def tiny_model(taichi_backend):
    from marrow3d.runner import make_model

    cfg = load_config(TINY, ["cells.initial.lsc_count=20"])
    return make_model(cfg)


def test_undosed_drugs_have_no_field(tiny_model):
    assert set(tiny_model.fields) == {"oxygen", "signal", "cxcl12"}  # CXCL12 is on by default


def test_step_advances_clock_and_history(tiny_model):
    n = len(tiny_model.history["time_h"])
    it = tiny_model.clock.iteration
    tiny_model.time_step()
    assert tiny_model.clock.iteration == it + 1
    assert tiny_model.history["time_h"][-1] == pytest.approx(tiny_model.clock.time_h)
    assert all(len(v) == n + 1 for v in tiny_model.history.values())
    o2 = tiny_model.fields["oxygen"].to_numpy()
    assert np.all(o2 >= 0)
    marrow = tiny_model.anatomy.tissue == 0
    assert o2[marrow].max() < 32.0  # Spencer 2014: < 32 mmHg everywhere in the tissue


def test_nonfinite_field_is_detected(tiny_model):
    saved = tiny_model.fields["signal"].to_numpy()
    bad = saved.copy()
    bad[0, 0, 0] = np.nan
    tiny_model.fields["signal"].from_numpy(bad)
    with pytest.raises(NonFiniteError, match="signal"):
        tiny_model.check_finite()
    tiny_model.fields["signal"].from_numpy(saved)


def _run(tmp: Path, name: str, threads: int) -> Path:
    out = tmp / name
    proc = subprocess.run(
        [sys.executable, "-m", "marrow3d", "run", str(TINY), "--days", "1", "--threads", str(threads),
         "--out", str(out), "--set", "cells.initial.lsc_count=30"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out / "run.h5"


def test_whole_model_identical_for_one_and_two_threads(tmp_path):
    a, b = _run(tmp_path, "t1", 1), _run(tmp_path, "t2", 2)
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        for name in ("state/cells", "state/lodged", "state/vessel_integrity", "state/fields/oxygen",
                     "state/fields/signal", "snapshots/cells"):
            assert fa[name][()].tobytes() == fb[name][()].tobytes(), name
        assert set(fa["timeseries"]) == set(fb["timeseries"])
        for name in fa["timeseries"]:
            np.testing.assert_array_equal(fa["timeseries"][name][()], fb["timeseries"][name][()], err_msg=name)
        assert fa["timeseries/count_blast"][-1] + fa["timeseries/count_lsc"][-1] > 0


def test_time_interval_equal_to_the_step_fires_every_step():
    from marrow3d.model import Clock
    from marrow3d.schedules import TimeInterval

    class M:
        clock = Clock(0, 12.0)

    sched = TimeInterval(12.0)
    sched.prime(M)
    fired = []
    for _ in range(4):
        M.clock.iteration += 1
        fired.append(sched(M))
    assert fired == [True, True, True, True]


@pytest.mark.parametrize(
    "array, needle",
    [
        (np.ones((4, 4, 4)), "has shape (4, 4, 4)"),
        (np.full((32, 32, 32), np.nan), "NaN or Inf"),
        (np.full((32, 32, 32), -1.0), "negative"),
    ],
)
def test_bad_diffusivity_map_is_refused_naming_the_key(tmp_path, array, needle):
    from marrow3d.errors import ConfigError
    from marrow3d.runner import _load_diffusivity_map

    path = tmp_path / "d.npy"
    np.save(path, array)
    cfg = load_config(TINY, [f'transport.oxygen.diffusivity_map="{path}"'])
    with pytest.raises(ConfigError, match="transport.oxygen.diffusivity_map") as err:
        _load_diffusivity_map(cfg, (32, 32, 32))
    assert needle in str(err.value)


def test_profiled_steps_report_every_phase(tiny_model, tmp_path):
    """``run --profile``: the model's and the loop's phases, counted and written to JSON."""
    import json

    from marrow3d.runner import _profiled, build_simulation
    from marrow3d.schedules import TimeInterval

    sim = build_simulation(tiny_model, tiny_model.config, tmp_path, "cpu",
                           stop_time_h=tiny_model.clock.time_h + 3 * tiny_model.clock.dt_h, progress=False)
    sim.output_writers["run"].schedule = TimeInterval(2 * tiny_model.clock.dt_h)
    result = _profiled(sim, tmp_path, {"grid": list(tiny_model.shape)})
    summary = json.loads((tmp_path / "profile.json").read_text())["summary"]
    assert summary == json.loads(json.dumps(result.profile))
    assert summary["steps"]["profiled"] == 2 and summary["steps"]["output"] == 1
    phases = list(summary["phases"])
    assert phases[:5] == ["pk", "solve:oxygen", "solve:signal", "solve:cxcl12", "cells"]
    assert {"vessels", "readouts", "finite", "output", "other"} <= set(phases)
    per_step = summary["per_step"]
    assert per_step["launches"] == sum(p["launches"] for p in summary["phases"].values())
    assert summary["phases"]["solve:oxygen"]["launches"] > 5 and per_step["syncs"] >= 2
    assert "solve:oxygen" in result.profile_table
    assert tiny_model.probe is sim.probe and not sim.probe.active  # the null probe is back
