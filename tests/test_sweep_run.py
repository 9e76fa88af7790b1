"""Sweeps end to end: local Dask cluster, equality with plain runs, resumption, failures,
a separately started scheduler, branching, and the report (tiny config, a few hours each)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.toml"
TINY_SWEEP = ROOT / "configs" / "sweeps" / "tiny.toml"


def _cli(*args: str, cwd: Path, ok: tuple[int, ...] = (0,), timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "marrow3d", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)
    assert proc.returncode in ok, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _same_run(a: Path, b: Path) -> None:
    """Final state and every time series bit-identical."""
    with h5py.File(a / "run.h5", "r") as x, h5py.File(b / "run.h5", "r") as y:
        for name in ("state/cells", "state/lodged", "state/vessel_integrity", "state/fields/oxygen"):
            assert x[name][()].tobytes() == y[name][()].tobytes(), name
        assert set(x["timeseries"]) == set(y["timeseries"])
        for name in x["timeseries"]:
            np.testing.assert_array_equal(x["timeseries"][name][()], y["timeseries"][name][()], err_msg=name)


def _mtimes(d: Path) -> dict[str, int]:
    return {str(p.relative_to(d)): p.stat().st_mtime_ns for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory) -> Path:
    """The 4-member tiny sweep (2 LSC counts x 2 seeds, 6 h each) on 2 local worker processes."""
    tmp = tmp_path_factory.mktemp("sweep")
    proc = _cli("sweep", str(TINY_SWEEP), "--out", str(tmp / "sw"), "--workers", "2", "--threads", "1", cwd=tmp)
    assert "4 of 4 members done" in proc.stdout
    return tmp / "sw"


def test_local_cluster_sweep_writes_one_done_row_per_member(tiny_sweep):
    for name in ("summary.csv", "summary.parquet"):
        df = pd.read_csv(tiny_sweep / name) if name.endswith("csv") else pd.read_parquet(tiny_sweep / name)
        assert list(df["member_id"]) == ["p000_s1", "p000_s2", "p001_s1", "p001_s2"]
        assert (df["status"] == "done").all() and df["error"].isna().all()
        assert list(df["seed"]) == [1, 2, 1, 2]
        assert list(df["cells.initial.lsc_count"]) == [4, 4, 40, 40]
        assert (df["final_day"] == 0.25).all() and (df["wall_s"] > 0).all()
        # Burden at least the seeded LSCs; more seeded LSCs, more leukemia.
        assert (df["min_burden"] >= 4).all()
        assert (df.loc[df["cells.initial.lsc_count"] == 40, "final_lsc"] >= 30).all()
        assert (df.loc[df["cells.initial.lsc_count"] == 4, "final_lsc"] <= 10).all()
    for mid in ("p000_s1", "p001_s2"):
        st = json.loads((tiny_sweep / "members" / mid / "status.json").read_text())
        assert st["status"] == "done" and st["backend"] == "cpu" and st["wall_s"] > 0
    # Each member ran in a process of its own (Taichi is initialised there, never in the driver).
    pids = {json.loads((tiny_sweep / "members" / m / "status.json").read_text())["pid"]
            for m in ("p000_s1", "p000_s2", "p001_s1", "p001_s2")}
    assert len(pids) == 4


def test_members_equal_plain_runs_with_the_same_seeds_and_overrides(tiny_sweep, tmp_path):
    plan = json.loads((tiny_sweep / "sweep.json").read_text())
    procs = {}
    for m in plan["members"]:
        args = ["run", str(TINY), "--out", str(tmp_path / m["member_id"]), "--seed", str(m["seed"])]
        for ov in m["overrides"]:
            if not ov.startswith("run.seed="):
                args += ["--set", ov]
        procs[m["member_id"]] = subprocess.Popen([sys.executable, "-m", "marrow3d", *args], cwd=tmp_path,
                                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if len(procs) % 2 == 0:  # two at a time: 2 cores
            for p in procs.values():
                p.wait(timeout=300)
    for mid, p in procs.items():
        assert p.wait(timeout=300) == 0, p.stderr.read()[-2000:]
        _same_run(tiny_sweep / "members" / mid, tmp_path / mid)


def _done_members(sw: Path) -> list[str]:
    out = []
    for d in sorted((sw / "members").glob("*")) if (sw / "members").exists() else []:
        try:
            if json.loads((d / "status.json").read_text())["status"] == "done":
                out.append(d.name)
        except (OSError, ValueError, KeyError):
            pass
    return out


def test_a_sweep_killed_midway_resumes_with_only_the_missing_members(tiny_sweep, tmp_path):
    # The tiny sweep's first design point (4 seeded LSCs) with 3 seeds: p000_s1..p000_s3.
    spec = tmp_path / "spec.toml"
    spec.write_text(TINY_SWEEP.read_text().replace("[4, 40]", "[4]").replace("seeds = [1, 2]", "seeds = [1, 2, 3]")
                    .replace('base = "../tiny.toml"', f'base = "{TINY.as_posix()}"'))
    sw = tmp_path / "sw"
    args = [sys.executable, "-m", "marrow3d", "sweep", str(spec), "--out", str(sw), "--threads", "1"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not _done_members(sw) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the driver and its worker processes
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    done_before = _done_members(sw)
    assert done_before and len(done_before) < 3, (done_before, err[-2000:])
    assert proc.returncode == 130, err[-2000:]
    before = {m: _mtimes(sw / "members" / m) for m in done_before}
    time.sleep(0.05)
    out = _cli("sweep", str(spec), "--out", str(sw), "--threads", "1", cwd=tmp_path).stdout
    n = len(done_before)
    assert f"3 of 3 members done ({3 - n} run now, {n} already done)" in out
    for m, times in before.items():
        assert _mtimes(sw / "members" / m) == times, f"{m} was rerun"
    for m in ("p000_s1", "p000_s2"):  # killed or not, the same results as the uninterrupted sweep
        _same_run(sw / "members" / m, tiny_sweep / "members" / m)
    df = pd.read_csv(sw / "summary.csv")
    assert (df["status"] == "done").all() and len(df) == 3


def test_failing_members_are_recorded_and_the_others_finish(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(f"""
base = "{TINY.as_posix()}"
[set]
"run.days" = 0.125
[vary]
lists = [
  {{ name = "ok" }},
  {{ name = "invalid", "cells.initial.lsc_count" = -5 }},
  {{ name = "crashes", "transport.oxygen.diffusivity_map" = "{(tmp_path / 'missing.npy').as_posix()}" }},
]
""")
    proc = _cli("sweep", str(spec), "--out", str(tmp_path / "sw"), "--threads", "1", cwd=tmp_path, ok=(1,))
    assert "1 of 3 members done" in proc.stdout
    df = pd.read_csv(tmp_path / "sw" / "summary.csv").set_index("label")
    assert df.loc["ok", "status"] == "done" and df.loc["ok", "final_day"] == 0.125
    assert df.loc["invalid", "status"] == "failed"
    assert "cells.initial.lsc_count = -5 is invalid" in df.loc["invalid", "error"]
    assert df.loc["crashes", "status"] == "failed" and "missing.npy" in df.loc["crashes", "error"]
    assert np.isnan(df.loc["crashes", "final_lsc"])
    st = json.loads((tmp_path / "sw" / "members" / "p002_s1" / "status.json").read_text())
    assert st["status"] == "failed" and "missing.npy" in st["error"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process's session (it and the worker processes it started), SIGKILL after 20 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever of the session is left
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def test_sweep_through_a_separately_started_scheduler(tmp_path):
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask_exe = Path(sys.executable).parent / "dask"
    if not dask_exe.exists():
        pytest.skip("the `dask` command line is not installed next to this Python")
    dask_cli = [str(dask_exe)]
    logs = tmp_path / "logs"
    logs.mkdir()
    procs: list[subprocess.Popen] = []
    try:
        procs.append(subprocess.Popen([*dask_cli, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                       "--no-dashboard"], stdout=open(logs / "scheduler.log", "w"),
                                      stderr=subprocess.STDOUT, start_new_session=True))
        procs.append(subprocess.Popen([*dask_cli, "worker", address, "--nworkers", "2", "--nthreads", "1",
                                       "--host", "127.0.0.1", "--no-dashboard", "--death-timeout", "60"],
                                      stdout=open(logs / "worker.log", "w"), stderr=subprocess.STDOUT,
                                      start_new_session=True))
        spec = tmp_path / "spec.toml"
        spec.write_text(f'base = "{TINY.as_posix()}"\n[set]\n"run.days" = 0.125\n[replicates]\nseeds = [5, 6]\n')
        proc = _cli("sweep", str(spec), "--out", str(tmp_path / "sw"), "--scheduler", address,
                    "--threads", "1", cwd=tmp_path)
        assert f"scheduler {address}" in proc.stderr
        df = pd.read_csv(tmp_path / "sw" / "summary.csv")
        assert list(df["member_id"]) == ["p000_s5", "p000_s6"]
        assert (df["status"] == "done").all() and (df["final_day"] == 0.125).all()
    finally:
        for p in reversed(procs):
            _stop(p)
    assert all(p.poll() is not None for p in procs)


def test_branching_sweep_runs_the_prefix_once_and_arms_share_it(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(f"""
base = "{TINY.as_posix()}"
[set]
"run.days" = 0.25
[vary]
lists = [
  {{ name = "control" }},
  {{ name = "cytarabine", "therapy.events" = [
      {{ agent = "cytarabine", kind = "infusion", start_day = 0.125, duration_h = 3, dose_mg_per_m2_per_day = 2000 }},
  ] }},
]
[replicates]
seeds = [3]
[branch]
at_day = 0.125
[experiment]
control = "control"
induction_start_day = 0.125
end_of_induction_day = 0.1875
followup_days = 0.0625
columns = ["hsc_niche_share", "no_such_readout"]
""")
    _cli("sweep", str(spec), "--out", str(tmp_path / "sw"), "--threads", "1", cwd=tmp_path)
    sw = tmp_path / "sw"
    assert [p.name for p in (sw / "prefixes").iterdir()] == ["prefix_s3"]
    with h5py.File(sw / "prefixes" / "prefix_s3" / "run.h5", "r") as p, \
            h5py.File(sw / "members" / "p000_s3" / "run.h5", "r") as a, \
            h5py.File(sw / "members" / "p001_s3" / "run.h5", "r") as b:
        assert list(p["timeseries/time_h"][()]) == [0, 1, 2, 3]
        assert list(a["timeseries/time_h"][()]) == list(b["timeseries/time_h"][()]) == [0, 1, 2, 3, 4, 5, 6]
        for name in p["timeseries"]:
            pre = p["timeseries"][name][()]
            np.testing.assert_array_equal(a["timeseries"][name][:4], pre, err_msg=name)
            np.testing.assert_array_equal(b["timeseries"][name][:4], pre, err_msg=name)
        assert b["meta"].attrs["branch_time_h"] == 3.0
        assert Path(str(b["meta"].attrs["branched_from"])) == (sw / "prefixes" / "prefix_s3").resolve()
        assert np.all(a["timeseries/plasma_cytarabine_uM"][()] == 0)
        assert np.all(b["timeseries/plasma_cytarabine_uM"][4:] > 0)
    df = pd.read_csv(sw / "summary.csv").set_index("label")
    assert (df["status"] == "done").all()
    assert df.loc["cytarabine", "treatment_start_day"] == 0.125 and np.isnan(df.loc["control", "treatment_start_day"])
    # Rerunning a finished branching sweep runs nothing, not even the prefix.
    before = _mtimes(sw / "prefixes")
    proc = _cli("sweep", str(spec), "--out", str(sw), "--threads", "1", cwd=tmp_path)
    assert "(0 run now, 2 already done)" in proc.stdout and _mtimes(sw / "prefixes") == before
    # The paired report of the [experiment] table: arm minus control on the one seed, read
    # from the runs' time series on the stated days; absent readouts are n/a with the reason.
    proc = _cli("sweep-report", str(sw), cwd=tmp_path)
    assert "paired.md (" in proc.stdout
    members = pd.read_parquet(sw / "paired_members.parquet").set_index("arm")
    with h5py.File(sw / "members" / "p001_s3" / "run.h5", "r") as b:
        ts = {k: b["timeseries"][k][()] for k in ("time_h", "count_lsc", "lodged_lsc")}
    row = int(np.flatnonzero(ts["time_h"] <= 0.1875 * 24)[-1])  # day 0.1875 = 4.5 h: the 4-h row
    assert members.loc["cytarabine", "lsc_eoi"] == ts["count_lsc"][row]
    assert members.loc["cytarabine", "lsc_free_fu"] == ts["count_lsc"][-1] - ts["lodged_lsc"][-1]
    assert np.isnan(members.loc["control", "relapse_free_days"])  # untreated: no relapse to time
    paired = pd.read_csv(sw / "paired.csv").set_index("endpoint")
    assert (paired["arm"] == "cytarabine").all() and (paired["control"] == "control").all()
    assert paired.loc["lsc_eoi", "n"] == 1 and paired.loc["lsc_eoi", "mean_diff"] == (
        members.loc["cytarabine", "lsc_eoi"] - members.loc["control", "lsc_eoi"])
    assert paired.loc["no_such_readout_fu", "n"] == 0
    assert "n/a: no run has the time-series column 'no_such_readout'" in (sw / "paired.md").read_text()
    proc = _cli("sweep-report", str(sw), "--paired", "contrl", cwd=tmp_path, ok=(2,))
    assert proc.stderr.count("\n") == 1 and "control arm 'contrl': no finished member" in proc.stderr


def test_report_draws_the_endpoints(tiny_sweep, tmp_path):
    out = tmp_path / "fig.png"
    proc = _cli("sweep-report", str(tiny_sweep), "--out", str(out), cwd=tmp_path)
    assert "written" in proc.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    # Without a summary the report rebuilds it from sweep.json and the member folders.
    sw = tmp_path / "sw"
    shutil.copytree(tiny_sweep, sw)
    (sw / "summary.csv").unlink()
    (sw / "summary.parquet").unlink()
    _cli("sweep-report", str(sw), cwd=tmp_path)
    assert (sw / "report.png").exists() and len(pd.read_csv(sw / "summary.csv")) == 4


def test_a_second_sweep_command_on_the_same_folder_is_refused(tiny_sweep, tmp_path):
    import fcntl

    sw = tmp_path / "sw"
    shutil.copytree(tiny_sweep, sw)
    with open(sw / ".sweep.lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = _cli("sweep", str(TINY_SWEEP), "--out", str(sw), cwd=tmp_path, ok=(2,))
    assert "another sweep command is running" in proc.stderr


def _listening_ports() -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket of this host (Linux /proc/net)."""
    import ipaddress

    out = set()
    for name, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            hexaddr, hexport = fields[1].split(":")
            raw = bytes.fromhex(hexaddr)
            # /proc stores the address as 32-bit words in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            out.add((str(ipaddress.ip_address(raw)), int(hexport, 16)))
    return out


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net")
def test_local_cluster_listens_on_loopback_only_and_serves_no_dashboard():
    """Issue 16 item 12: no dashboard on 127.0.0.1:8787 although the code says there is none."""
    import urllib.error
    import urllib.request

    from marrow3d.sweep.cluster import open_client

    before = _listening_ports()
    with open_client(workers=1) as (client, _):
        opened = _listening_ports() - before
        assert opened and all(addr == "127.0.0.1" for addr, _ in opened), opened
        assert 8787 not in {port for _, port in opened}
        port = int(client.dashboard_link.rsplit(":", 1)[1].split("/")[0])
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10)
        assert info.value.code == 404
        assert client.submit(sum, [1, 2]).result(timeout=60) == 3
