"""Overrides of ``configs/tiny.toml`` for a short run dosed with cytarabine, snapshotting the drug.

Shared by the analysis and export tests, which both read such a run back.
"""

from pathlib import Path

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.toml"
DOSED = [
    "run.days=1.0",
    "run.cell_step_hours=4.0",
    "output.snapshot_every_hours=8.0",
    "output.checkpoint_every_wall_seconds=1000000.0",
    'output.snapshot_fields=["oxygen","signal","cytarabine","cells","lodged","integrity"]',
    'therapy.events=[{agent="cytarabine",kind="infusion",start_day=0.0,duration_days=1.0,dose_mg_per_m2_per_day=100.0}]',
]
