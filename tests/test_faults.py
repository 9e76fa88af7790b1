"""Fault injection: hostile input, damaged files, kills, a full disk, readers and second writers.

Issue 16: whatever is thrown at marrow3d ends in one ``error: ...`` line (exit status 2) or a
correct result; never a traceback, a hang or lost data. One tiny run (the session's
``quick_run``, tests/_runs.py) is the material: copies of its checkpoint and run.h5 are
damaged in every way listed below, in-process. The process-level faults (kill -9 while a
checkpoint, the first checkpoint or the final state is being written; a file-size limit; a
reader holding run.h5 through the run's end; a second writer) run as real CLI subprocesses,
side by side, and every interrupted run must end, once continued, with the /state digest of
the uninterrupted run.

The hostile inputs of this module, beyond the issue's own reproductions, are listed in
:data:`CLI_CASES` (command lines and input files), :data:`CHECKPOINT_DAMAGE` and
:data:`RUN_FILE_DAMAGE` (files), plus two classes swept exhaustively: a flipped bit in the
first chunk of every dataset of each file, and random single-byte flips and truncations.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from _runs import QUICK  # 4 steps of 3 h; snapshots and checkpoints every 6 h (t = 0, steps 2 and 4)

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.toml"
CLI = [sys.executable, "-m", "marrow3d"]


# ---------------------------------------------------------------------------------- helpers
def _set_args(overrides=QUICK) -> list[str]:
    out = []
    for o in overrides:
        out += ["--set", o]
    return out


def _digest(run_dir: Path) -> str:
    from marrow3d.analysis import open_run

    with open_run(run_dir) as run:
        assert run.complete is True
        return run.state_digest()


def _files(directory: Path) -> dict[str, str]:
    """SHA-256 of every file in a directory (the lock file's record of its holder aside)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())
            if p.is_file() and p.name != ".marrow3d.lock"}


def _one_error_line(exit_code: int, stdout: str, stderr: str, *needles: str) -> str:
    text = f"{stdout}\n{stderr}"
    assert exit_code == 2, (exit_code, text[-3000:])
    assert "Traceback" not in text, text[-3000:]
    errors = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, text[-3000:]
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def _invoke(args: list[str]):
    from typer.testing import CliRunner

    from marrow3d.cli.main import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def good(quick_run) -> Path:
    """A finished tiny run: run.h5, checkpoint.h5 (step 4) and checkpoint_000000002.h5 (the
    session's, tests/_runs.py: never written into; every test that damages it copies it)."""
    return quick_run


@pytest.fixture(scope="module")
def reference_digest(good) -> str:
    return _digest(good)


def _copy_run(good: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for name in ("run.h5", "checkpoint.h5", "config.toml"):
        shutil.copyfile(good / name, dst / name)
    return dst


def _edit(path: Path, fn, *, keep_record: bool = True) -> None:
    """Change an HDF5 file in place; ``keep_record=False`` also removes its checksum record,
    so the content checks, not the checksums, must catch the change."""
    with h5py.File(path, "a") as h5:
        fn(h5)
        if not keep_record:
            for key in ("integrity", "integrity_sha256"):
                if key in h5["meta"].attrs:
                    del h5["meta"].attrs[key]


def _flip_chunk(path: Path, dataset: str) -> None:
    """Flip one bit in the middle of the first stored chunk of ``dataset`` (or of its data).

    (One bit: Fletcher-32, HDF5's checksum, catches every single-bit error but cannot tell a
    16-bit word of zeros from one of ones, so inverting whole bytes of zeros may pass.)
    """
    with h5py.File(path, "r") as h5:
        ds = h5[dataset]
        if ds.chunks is not None:
            info = ds.id.get_chunk_info(0)
            offset, size = info.byte_offset, info.size
        else:
            offset, size = ds.id.get_offset(), ds.id.get_storage_size()
    data = bytearray(path.read_bytes())
    data[offset + size // 2] ^= 0x10
    path.write_bytes(bytes(data))


def _datasets(path: Path) -> list[str]:
    names: list[str] = []
    with h5py.File(path, "r") as h5:
        h5.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) and o.size else None)
    return names


# ---------------------------------------------------------------------------------- damaged checkpoints
def _attr_text(path_in_file: str, old: str, new: str):
    def fn(h5):
        grp, attr = path_in_file.split("@")
        text = h5[grp].attrs[attr]
        assert old in text
        h5[grp].attrs[attr] = text.replace(old, new, 1)
    return fn


def _replace(dataset: str, make):
    def fn(h5):
        arr = h5[dataset][()]
        del h5[dataset]
        h5[dataset] = make(arr)
    return fn


def _set_values(dataset: str, where, value):
    def fn(h5):
        arr = h5[dataset][()]
        arr[where(arr, h5)] = value
        h5[dataset][...] = arr
    return fn


def _first_marrow_voxel(h5, code):
    tissue = h5["state/model/anatomy/tissue"][()]
    idx = np.argwhere(tissue == code)[0]
    return tuple(idx)


def _foreign_with_data(dst: Path) -> None:
    with h5py.File(dst, "w") as h5:
        h5.create_dataset("temperature", data=np.arange(10.0))
        h5.attrs["producer"] = "some other simulator"


def _invert_chunk_bytes(src: Path, dst: Path, dataset: str) -> None:
    shutil.copyfile(src, dst)
    with h5py.File(dst, "r") as h5:
        info = h5[dataset].id.get_chunk_info(0)
    data = bytearray(dst.read_bytes())
    for i in range(info.byte_offset + 8, info.byte_offset + 24):
        data[i] ^= 0xFF
    dst.write_bytes(bytes(data))


#: name -> (how to damage checkpoint.h5 (src, dst), words the error line must hold). Every one
#: goes through `marrow3d resume`, which must refuse it and leave run.h5 and config.toml as they were.
CHECKPOINT_DAMAGE = {
    "truncated_half": (lambda s, d: d.write_bytes(s.read_bytes()[: s.stat().st_size // 2]), ["cannot be read"]),
    "truncated_to_superblock": (lambda s, d: d.write_bytes(s.read_bytes()[:48]), ["cannot be read"]),
    "zero_length": (lambda s, d: d.write_bytes(b""), ["not an HDF5 file"]),
    "random_bytes": (lambda s, d: d.write_bytes(np.random.default_rng(3).bytes(70000)), ["not an HDF5 file"]),
    "text_file": (lambda s, d: d.write_text("[run]\ndays = 1\n"), ["not an HDF5 file"]),
    "foreign_hdf5": (lambda s, d: h5py.File(d, "w").close(), ["not a marrow3d checkpoint"]),
    "foreign_hdf5_with_data": (lambda s, d: _foreign_with_data(d), ["not a marrow3d checkpoint"]),
    "device_file": (lambda s, d: d.symlink_to("/dev/zero"), ["not a regular file"]),
    "schema_99": ("edit", lambda h5: h5["meta"].attrs.__setitem__("schema_version", 99), ["schema_version 99", "reads 1"]),
    # issue 16 item 5: each edit is caught by the checksums ...
    "config_days_changed": ("edit", _attr_text("meta@config_toml", "days = 0.5", "days = 3.0"),
                            ["does not match its checksums", "/meta@config_toml"]),
    "clock_iteration_changed": ("edit", lambda h5: h5["state/model/clock"].attrs.__setitem__("iteration", 2),
                                ["/state/model/clock@iteration"]),
    "cell_code_99": ("edit", _set_values("state/model/cells/cells", lambda a, h5: a == 0, 99),
                     ["/state/model/cells/cells"]),
    "history_column_deleted": ("edit", lambda h5: h5["state/model/history"].__delitem__("count_lsc"),
                               ["missing: /state/model/history/count_lsc"]),
    "clock_attribute_deleted": ("edit", lambda h5: h5["state/model/clock"].attrs.__delitem__("iteration"),
                                ["missing: /state/model/clock@iteration"]),
    # ... item 4: a shortened history is refused before run.h5 is touched
    "history_time_shortened": ("edit", _replace("state/model/history/time_h", lambda a: a[:2]),
                               ["/state/model/history/time_h"]),
    "record_damaged": ("edit", _attr_text("meta@integrity", '"sha256"', '"sha257"'), ["integrity record"]),
    "oxygen_wrong_shape": ("edit", _replace("state/model/fields/oxygen", lambda a: a[:, :, :-1]),
                           ["/state/model/fields/oxygen", "has shape"]),
    "cells_dataset_deleted": ("edit", lambda h5: h5["state/model/cells"].__delitem__("cells"),
                              ["missing dataset /state/model/cells/cells"]),
    # 16 bytes inverted in the first stored chunk of a field (Fletcher-32 catches it)
    "oxygen_chunk_corrupted": (lambda s, d: _invert_chunk_bytes(s, d, "state/model/fields/oxygen"),
                               ["cannot be read"]),
    # without the checksum record (an older file, or a record removed with the damage), the
    # content checks catch what is out of range
    "no_record_cell_code_99": ("bare", _set_values("state/model/cells/cells", lambda a, h5: a == 0, 99),
                               ["/state/model/cells/cells", "unknown codes 99"]),
    "no_record_clock_mismatch": ("bare", lambda h5: h5["state/model/clock"].attrs.__setitem__("iteration", 3),
                                 ["/state/model/clock@iteration", "is 3 but /meta@iteration is 4"]),
    "no_record_history_short": ("bare", _replace("state/model/history/time_h", lambda a: a[:2]),
                                ["/state/model/history/time_h", "has shape (2,)"]),
    "no_record_history_2d": ("bare", _replace("state/model/history/count_lsc", lambda a: a[:, None]),
                             ["/state/model/history/count_lsc"]),
    "no_record_oxygen_nan": ("bare", _set_values("state/model/fields/oxygen", lambda a, h5: (0, 0, 0), np.nan),
                             ["/state/model/fields/oxygen", "NaN/Inf"]),
    "no_record_integrity_above_1": ("bare", _set_values("state/model/vessel_integrity",
                                                        lambda a, h5: (0, 0, 0), 1.5),
                                    ["/state/model/vessel_integrity", "above 1"]),
    "no_record_initial_integrity_negative": ("bare", _set_values("state/model/anatomy/integrity",
                                                                 lambda a, h5: (0, 0, 0), -0.5),
                                             ["/state/model/anatomy/integrity", "below 0"]),
    "initial_integrity_wrong_shape": ("edit", _replace("state/model/anatomy/integrity", lambda a: a[:, :, :-1]),
                                      ["/state/model/anatomy/integrity", "has shape"]),
    "no_record_tissue_code_9": ("bare", _set_values("state/model/anatomy/tissue", lambda a, h5: (0, 0, 0), 9),
                                ["/state/model/anatomy/tissue", "unknown codes 9"]),
    "no_record_cell_on_bone": ("bare", _set_values("state/model/cells/cells",
                                                   lambda a, h5: _first_marrow_voxel(h5, 1), 1),
                               ["/state/model/cells/cells", "not marrow"]),
    "no_record_niche_code_7": ("bare", _set_values("state/model/anatomy/niche", lambda a, h5: (0, 0, 0), 7),
                               ["/state/model/anatomy/niche"]),
    "no_record_flags_bit_64": ("bare", _set_values("state/model/cells/flags", lambda a, h5: (0, 0, 0), 64),
                               ["/state/model/cells/flags"]),
    "no_record_negative_counter": ("bare", _set_values("state/model/cells/counters", lambda a, h5: (0, 0), -5),
                                   ["/state/model/cells/counters", "negative"]),
    "no_record_dt_changed": ("bare", lambda h5: h5["state/model/clock"].attrs.__setitem__("dt_h", 2.0),
                             ["/state/model/clock@dt_h"]),
    "no_record_time_h_changed": ("bare", lambda h5: h5["meta"].attrs.__setitem__("time_h", 99.0),
                                 ["/meta@time_h"]),
    "no_record_seed_changed": ("bare", lambda h5: h5["meta"].attrs.__setitem__("seed", 77),
                               ["/meta@seed"]),
    "no_record_lattice_seed_changed": ("bare", _replace("state/model/cells/seed", lambda a: np.uint64(77)),
                                       ["/state/model/cells/seed"]),
    "no_record_config_invalid": ("bare", _attr_text("meta@config_toml", "days = 0.5", "days = -3.0"),
                                 ["/meta@config_toml does not validate", "run.days"]),
    "no_record_config_not_toml": ("bare", lambda h5: h5["meta"].attrs.__setitem__("config_toml", "[[[["),
                                  ["/meta@config_toml", "not valid TOML"]),
    "no_record_voxel_changed": ("bare", lambda h5: h5["state/model/anatomy"].attrs.__setitem__("voxel_um", 5.0),
                                ["/state/model/anatomy@voxel_um"]),
    "no_record_schedule_kind": ("bare", lambda h5: h5["state/writers/run/schedule"].attrs.__setitem__("kind", "x"),
                                ["/state/writers/run/schedule@kind"]),
    "no_record_schedule_nan": ("bare", lambda h5: h5["state/writers/run/schedule"].attrs.__setitem__(
        "next_h", float("nan")), ["/state/writers/run/schedule@next_h"]),
}


def _damage_checkpoint(good: Path, run_dir: Path, case: str) -> None:
    spec = CHECKPOINT_DAMAGE[case]
    dst = run_dir / "checkpoint.h5"
    if callable(spec[0]):
        dst.unlink()
        spec[0](good / "checkpoint.h5", dst)
    else:
        _edit(dst, spec[1], keep_record=spec[0] == "edit")


@pytest.mark.parametrize("case", sorted(CHECKPOINT_DAMAGE))
def test_resume_refuses_a_damaged_checkpoint_and_changes_nothing(good, tmp_path, case, restore_logging):
    run_dir = _copy_run(good, tmp_path / case)
    _damage_checkpoint(good, run_dir, case)
    before = _files(run_dir)
    _one_error_line(*_invoke(["resume", run_dir, "--days", "1"]), str(run_dir / "checkpoint.h5"),
                    *CHECKPOINT_DAMAGE[case][-1])
    assert _files(run_dir) == before  # run.h5 and config.toml byte for byte, nothing added


def test_a_flipped_chunk_in_every_checkpoint_dataset_is_caught(good, tmp_path):
    from marrow3d.errors import CheckpointError
    from marrow3d.output.checkpointer import load_checkpoint

    names = _datasets(good / "checkpoint.h5")
    assert any(n.startswith("state/model/history/") for n in names) and len(names) > 60
    for name in names:
        path = tmp_path / "c.h5"
        shutil.copyfile(good / "checkpoint.h5", path)
        _flip_chunk(path, name)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        assert "\n" not in str(info.value), name


# ---------------------------------------------------------------------------------- damaged run.h5
def _append_garbage(s, d):
    d.write_bytes(s.read_bytes() + b"\x00garbage" * 100)


#: name -> (how to damage run.h5 (src, dst) or ("edit", fn), words of the error line).
RUN_FILE_DAMAGE = {
    "truncated_half": (lambda s, d: d.write_bytes(s.read_bytes()[: s.stat().st_size // 2]), ["truncated"]),
    "truncated_90pc": (lambda s, d: d.write_bytes(s.read_bytes()[: s.stat().st_size * 9 // 10]), ["truncated"]),
    "zero_length": (lambda s, d: d.write_bytes(b""), ["not an HDF5 file"]),
    "random_bytes": (lambda s, d: d.write_bytes(np.random.default_rng(4).bytes(50000)), ["not an HDF5 file"]),
    "device_file": (lambda s, d: d.symlink_to("/dev/zero"), ["holds no run.h5"]),
    "foreign_hdf5": (lambda s, d: h5py.File(d, "w").close(), ["no /meta"]),
    "no_anatomy": ("edit", lambda h5: h5.__delitem__("anatomy"), ["/anatomy/tissue is missing"]),
    "no_timeseries": ("edit", lambda h5: h5.__delitem__("timeseries"), ["/timeseries is missing"]),
    "config_text_edited": ("edit", _attr_text("meta@config_toml", "days = 0.5", "days = 3.0"),
                           ["does not match its checksums", "/meta@config_toml"]),
    "tissue_replaced": ("edit", _replace("anatomy/tissue", lambda a: np.zeros_like(a)), ["/anatomy/tissue"]),
    "niche_wrong_shape": ("edit", _replace("anatomy/niche", lambda a: a[:4, :4, :4]), ["niche"]),
    # issue 16 item 6 (records removed: the reader's own shape check)
    "state_oxygen_4x4x4": ("bare", _replace("state/fields/oxygen", lambda a: a[:4, :4, :4]),
                           ["/state/fields/oxygen", "(4, 4, 4)"]),
    "snapshot_wrong_shape": ("bare", _replace("snapshots/oxygen", lambda a: a[:, :4]),
                             ["/snapshots/oxygen", "one snapshot"]),
    "voxel_size_zero": ("bare", lambda h5: h5["anatomy"].attrs.__setitem__("voxel_um", 0.0), ["voxel_um"]),
    "schema_newer_but_broken": ("bare", lambda h5: (h5["meta"].attrs.__setitem__("schema_version", 99),
                                                    h5.__delitem__("snapshots/time_h")), ["snapshots"]),
    # issue 16 item 6: a flipped snapshot chunk (export --format vtkhdf gave a traceback)
    "snapshot_chunk_flipped": (lambda s, d: (shutil.copyfile(s, d), _flip_chunk(d, "snapshots/oxygen")),
                               ["/snapshots/oxygen"]),
}


def _damage_run_file(good: Path, run_dir: Path, case: str) -> None:
    spec = RUN_FILE_DAMAGE[case]
    dst = run_dir / "run.h5"
    if callable(spec[0]):
        dst.unlink()
        spec[0](good / "run.h5", dst)
    else:
        _edit(dst, spec[1], keep_record=spec[0] == "edit")


def _read_everything(path: Path) -> dict:
    from marrow3d.analysis import open_run

    with open_run(path) as run:
        out = {"meta": run.meta, "ts": run.timeseries.to_numpy(), "tissue": run.tissue, "niche": run.niche,
               "config": run.config.model_dump(), "time_h": run.time_h, "snap_t": run.snapshot_times_h,
               "snap_it": run.snapshot_iterations, "units": run.units}
        for k in range(run.n_snapshots):
            for name in run.array_names(k):
                out[f"{k}/{name}"] = run.array(name, k)
        for name in run.array_names(-1):
            out[f"final/{name}"] = run.array(name, -1)
    return out


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)
    return a == b


@pytest.mark.parametrize("case", sorted(RUN_FILE_DAMAGE))
def test_readers_refuse_a_damaged_run_file_in_one_line(good, tmp_path, case, restore_logging):
    from marrow3d.errors import Marrow3DError

    run_dir = _copy_run(good, tmp_path / case)
    (run_dir / "checkpoint.h5").unlink()  # info and export then read run.h5 only
    _damage_run_file(good, run_dir, case)
    needles = RUN_FILE_DAMAGE[case][-1]
    with pytest.raises(Marrow3DError) as info:
        _read_everything(run_dir)
    assert "\n" not in str(info.value)
    for args in (["info", run_dir], ["export", run_dir, "--format", "csv", "--out", tmp_path / f"{case}.csv"],
                 ["export", run_dir, "--format", "vtkhdf", "--out", tmp_path / f"{case}.vtkhdf"]):
        code, out, err = _invoke(args)
        if code != 0:  # info and csv read less than everything and may rightly succeed
            _one_error_line(code, out, err)
    if case.startswith("truncated"):  # issue 16 item 3: render hung on a truncated run.h5 too
        _one_error_line(*_invoke(["render", run_dir, "--out", tmp_path / f"{case}.png"]), "truncated")
    with pytest.raises(Marrow3DError) as info:
        _read_everything(run_dir)
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))


def test_a_flipped_chunk_in_every_run_file_dataset_is_caught(good, tmp_path):
    """Snapshots, the time series, /state and /anatomy (Fletcher-32 on all of them)."""
    from marrow3d.errors import Marrow3DError

    names = _datasets(good / "run.h5")
    assert {"snapshots/oxygen", "state/fields/oxygen", "timeseries/time_h", "anatomy/tissue"} <= set(names)
    for name in names:
        path = tmp_path / "run.h5"
        shutil.copyfile(good / "run.h5", path)
        _flip_chunk(path, name)
        with pytest.raises(Marrow3DError) as info:
            _read_everything(path)
        assert "\n" not in str(info.value), name


@pytest.mark.parametrize("name", ["run.h5", "checkpoint.h5"])
def test_random_byte_flips_and_truncations_never_pass_unnoticed(good, tmp_path, name):
    """A flipped byte anywhere, or a file cut anywhere: a clean error or exactly the stored data."""
    from marrow3d.errors import Marrow3DError
    from marrow3d.output.checkpointer import load_checkpoint

    read = _read_everything if name == "run.h5" else (lambda p: dict(zip(("meta", "state"), load_checkpoint(p))))
    ref = read(good / name)
    data = (good / name).read_bytes()
    rng = np.random.default_rng(16)
    damaged = [(f"flip@{off}", data[:off] + bytes([data[off] ^ 0xFF]) + data[off + 1:])
               for off in rng.integers(0, len(data), 30)]
    damaged += [(f"cut@{n}", data[:n]) for n in np.linspace(0, len(data) - 1, 10).astype(int)]
    outcomes = {"error": 0, "same": 0}
    for label, blob in damaged:
        path = tmp_path / name
        path.write_bytes(blob)
        try:
            got = read(path)
        except Marrow3DError as exc:
            assert "\n" not in str(exc), label
            outcomes["error"] += 1
            continue
        assert _same(ref, got), f"{label}: the damage changed what was read without an error"
        outcomes["same"] += 1
    assert outcomes["error"] >= 30, outcomes


def test_refused_resume_with_a_damaged_run_file_keeps_it(good, tmp_path, restore_logging):
    """A good checkpoint but an unreadable run.h5: resume refuses, says how to go on, changes nothing."""
    run_dir = _copy_run(good, tmp_path / "r")
    data = (run_dir / "run.h5").read_bytes()
    (run_dir / "run.h5").write_bytes(data[: len(data) // 2])
    before = _files(run_dir)
    _one_error_line(*_invoke(["resume", run_dir, "--days", "1"]), "run.h5", "truncated", "move")
    assert _files(run_dir) == before


def test_resume_with_another_runs_file_is_refused(good, tmp_path, restore_logging):
    run_dir = _copy_run(good, tmp_path / "r")
    _edit(run_dir / "run.h5", lambda h5: h5["meta"].attrs.__setitem__("anatomy_fingerprint", "0" * 16))
    before = _files(run_dir)
    _one_error_line(*_invoke(["resume", run_dir, "--days", "1"]), "another anatomy")
    assert _files(run_dir) == before



@pytest.mark.parametrize("existed", [False, True])
def test_a_failure_after_the_directory_is_claimed_leaves_no_config(taichi_backend, tmp_path, monkeypatch, existed):
    """Issue 16 item 12: an error once the output directory is claimed and config.toml written
    (here the run writer failing to start) leaves no config.toml, and no directory the run made."""
    import marrow3d.runner as runner
    from marrow3d.config import load_config
    from marrow3d.errors import OutputError
    from marrow3d.output.runlock import LOCK_NAME

    def fail(model, cfg, out_dir, *args, **kw):
        assert (out_dir / "config.toml").exists()  # the failure comes after the config is written
        raise OutputError("injected: run.h5 cannot be created")

    monkeypatch.setattr(runner, "make_model", lambda cfg, out_dir=None: object())  # the model is not needed
    monkeypatch.setattr(runner, "build_simulation", fail)
    out = tmp_path / "r"
    if existed:
        out.mkdir()
    with pytest.raises(OutputError, match="injected"):
        runner.run_simulation(load_config(TINY, QUICK), out, progress=False)
    assert out.exists() == existed
    if existed:  # the lock file of a directory the run did not make stays (another process may hold it)
        assert {p.name for p in out.iterdir()} <= {LOCK_NAME}

# ---------------------------------------------------------------------------------- hostile command lines
def _mask(tmp: Path, name: str, arr, **kw) -> Path:
    path = tmp / name
    np.save(path, arr, **kw)
    return path


def _labels(shape=(8, 8, 8), dtype=np.uint8):
    t = np.zeros(shape, dtype=dtype)
    t[0] = 1
    t[4, 4] = 3
    return t


def _fifo(tmp: Path, name: str) -> Path:
    path = tmp / name
    os.mkfifo(path)
    return path


def _mask_cfg(spec) -> list[str]:
    return ["config", "validate", TINY, "--set", 'domain.kind="mask"', "--set", f'domain.mask_path="{spec}"']


def _run_cfg(*sets: str, out: str = "r") -> callable:
    return lambda tmp, good: ["run", TINY, "--out", tmp / out, *[a for s in sets for a in ("--set", s)]]


def _text(tmp: Path, name: str, data: bytes | str) -> Path:
    path = tmp / name
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
    return path


def _h5_mask(tmp: Path) -> Path:
    path = tmp / "seg.h5"
    with h5py.File(path, "w") as h5:
        h5["labels/tissue"] = _labels()
        h5.create_group("group")
    return path


def _started_run(tmp: Path, good: Path) -> Path:
    """A run directory stopped before its first checkpoint: run.h5 and config.toml only."""
    d = tmp / "started"
    d.mkdir()
    shutil.copyfile(good / "run.h5", d / "run.h5")
    shutil.copyfile(good / "config.toml", d / "config.toml")
    return d


def _directory(tmp: Path, name: str) -> Path:
    (tmp / name).mkdir()
    return tmp / name


def _dangling(tmp: Path) -> Path:
    (tmp / "link").symlink_to(tmp / "nowhere")
    return tmp / "link"


def _spec(tmp: Path, text: str) -> Path:
    return _text(tmp, "spec.toml", text)


#: id -> (argv builder (tmp, good run), words the single error line must hold). None of these
#: may create an output directory, leave a config.toml or print a traceback.
CLI_CASES = {
    # config files
    "config_missing": (lambda t, g: ["config", "show", t / "nope.toml"], ["does not exist"]),
    "config_directory": (lambda t, g: ["config", "show", t], ["is a directory"]),
    "config_fifo": (lambda t, g: ["config", "show", _fifo(t, "c.toml")], ["not a regular file"]),
    "config_binary": (lambda t, g: ["config", "show", _text(t, "b.toml", bytes(range(256)))], ["cannot read"]),
    "config_utf16": (lambda t, g: ["config", "show", _text(t, "u.toml", "[run]\ndays = 1\n".encode("utf-16"))],
                     ["cannot read"]),
    "config_bad_toml": (lambda t, g: ["config", "validate", _text(t, "x.toml", "[run\n")], ["not valid TOML"]),
    "config_duplicate_key": (lambda t, g: ["config", "validate", _text(t, "x.toml", "[run]\ndays=1\ndays=2\n")],
                             ["not valid TOML"]),
    "config_unknown_section": (lambda t, g: ["config", "validate", _text(t, "x.toml", "[trasport]\n")],
                               ["trasport"]),
    "config_run_is_a_value": (lambda t, g: ["config", "show", "--set", "run=1"], ["run"]),
    # overrides
    "set_empty_key": (lambda t, g: ["config", "show", "--set", "=1"], ["empty key"]),
    "set_double_dot": (lambda t, g: ["config", "show", "--set", "run..days=1"], ["empty key"]),
    "set_no_equals": (lambda t, g: ["config", "show", "--set", "run.days"], ["section.key=value"]),
    "set_into_a_value": (lambda t, g: ["config", "show", "--set", "run.days.x=1"], ["run.days is a value"]),
    "set_table_for_number": (lambda t, g: ["config", "show", "--set", "run.days={a=1}"],
                             ["run.days = {'a': 1}"]),
    "set_list_for_number": (lambda t, g: ["config", "show", "--set", "run.days=[1,2]"], ["run.days"]),
    "set_empty_value": (lambda t, g: ["config", "show", "--set", "run.days="], ["run.days"]),
    # numbers
    "days_negative": (lambda t, g: ["config", "show", "--set", "run.days=-1"], ["run.days"]),
    "days_nan": (lambda t, g: ["config", "show", "--set", "run.days=nan"], ["run.days", "finite"]),
    "days_inf": (lambda t, g: ["config", "show", "--set", "run.days=inf"], ["run.days", "finite"]),
    "days_overflowing_literal": (lambda t, g: ["config", "show", "--set", "run.days=1e400"], ["finite"]),
    "seed_negative": (lambda t, g: ["config", "show", "--set", "run.seed=-1"], ["run.seed"]),
    "seed_2_to_64": (lambda t, g: ["config", "show", "--set", f"run.seed={2 ** 64}"], ["run.seed"]),
    "seed_huge_literal": (lambda t, g: ["config", "show", "--set", "run.seed=99999999999999999999999"],
                          ["run.seed"]),
    "threads_zero": (lambda t, g: ["config", "show", "--set", "run.threads=0"], ["run.threads"]),
    "backend_unknown": (lambda t, g: ["config", "show", "--set", "run.backend=tpu"], ["run.backend"]),
    "shape_zero": (lambda t, g: ["config", "show", "--set", "domain.shape_voxels=[0,8,8]"], ["shape_voxels"]),
    "shape_float": (lambda t, g: ["config", "show", "--set", "domain.shape_voxels=[8.5,8,8]"], ["shape_voxels"]),
    "shape_2_to_70": (lambda t, g: ["config", "show", "--set", f"domain.shape_voxels=[{2 ** 70},8,8]"],
                      ["shape_voxels"]),
    "shape_two_axes": (lambda t, g: ["config", "show", "--set", "domain.shape_voxels=[8,8]"], ["shape_voxels"]),
    "voxel_zero": (lambda t, g: ["config", "show", "--set", "domain.voxel_um=0"], ["domain.voxel_um"]),
    "voxel_nan": (lambda t, g: ["config", "show", "--set", "domain.voxel_um=nan"], ["domain.voxel_um"]),
    "origin_nan": (lambda t, g: ["config", "show", "--set", "domain.origin_um=[nan,0,0]"], ["origin_um"]),
    "diffusivity_inf": (lambda t, g: ["config", "show", "--set", "transport.oxygen.diffusivity_um2_per_min=inf"],
                        ["diffusivity_um2_per_min", "finite"]),
    "niche_density_inf": (lambda t, g: ["config", "show", "--set", "anatomy.niche_density_per_mm3=inf"],
                          ["niche_density_per_mm3"]),
    "cell_step_tiny": (lambda t, g: ["config", "show", "--set", "run.cell_step_hours=1e-6"], ["cell steps"]),
    "cell_step_zero": (lambda t, g: ["config", "show", "--set", "run.cell_step_hours=0"], ["cell_step_hours"]),
    "snapshot_interval_negative": (lambda t, g: ["config", "show", "--set", "output.snapshot_every_hours=-6"],
                                   ["snapshot_every_hours"]),
    "checkpoints_keep_zero": (lambda t, g: ["config", "show", "--set", "output.checkpoints_keep=0"],
                              ["checkpoints_keep"]),
    "compression_ten": (lambda t, g: ["config", "show", "--set", "output.compression_level=10"],
                        ["compression_level"]),
    "snapshot_field_unknown": (lambda t, g: ["config", "show", "--set", 'output.snapshot_fields=["foo"]'],
                               ["snapshot_fields"]),
    "therapy_agent_unknown": (lambda t, g: ["config", "show", "--set",
                                            'therapy.events=[{agent="aspirin",kind="bolus",days=[1.0],'
                                            'dose_mg_per_m2=1.0}]'], ["aspirin"]),
    "therapy_dose_negative": (lambda t, g: ["config", "show", "--set",
                                            'therapy.events=[{agent="daunorubicin",kind="bolus",days=[1.0],'
                                            'dose_mg_per_m2=-1.0}]'], ["dose_mg_per_m2"]),
    "therapy_dose_nan": (lambda t, g: ["config", "show", "--set",
                                       'therapy.events=[{agent="daunorubicin",kind="bolus",days=[1.0],'
                                       'dose_mg_per_m2=nan}]'], ["finite"]),
    "therapy_day_negative": (lambda t, g: ["config", "show", "--set",
                                           'therapy.events=[{agent="daunorubicin",kind="bolus",days=[-1.0],'
                                           'dose_mg_per_m2=60.0}]'], ["days"]),
    # masks (issue 16 items 9 and 14), through `config validate`
    "mask_kind_without_path": (lambda t, g: ["config", "show", "--set", 'domain.kind="mask"'], ["mask_path"]),
    "mask_missing": (lambda t, g: _mask_cfg(t / "gone.npy"), ["gone.npy", "does not exist"]),
    "mask_directory": (lambda t, g: _mask_cfg(_directory(t, "d.npy")), ["is a directory"]),
    "mask_fifo": (lambda t, g: _mask_cfg(_fifo(t, "m.npy")), ["not a regular file"]),
    "mask_2d": (lambda t, g: _mask_cfg(_mask(t, "m.npy", _labels()[0])), ["2 dimension(s)"]),
    "mask_4d": (lambda t, g: _mask_cfg(_mask(t, "m.npy", _labels()[None])), ["4 dimension(s)"]),
    "mask_object_dtype": (lambda t, g: _mask_cfg(_mask(t, "m.npy", np.array([[[1]]], dtype=object),
                                                       allow_pickle=True)), ["never unpickled"]),
    "mask_float": (lambda t, g: _mask_cfg(_mask(t, "m.npy", _labels().astype(np.float32))), ["float32"]),
    "mask_bool": (lambda t, g: _mask_cfg(_mask(t, "m.npy", _labels().astype(bool))), ["dtype bool"]),
    "mask_label_minus_1": (lambda t, g: _mask_cfg(_mask(t, "m.npy", _labels(dtype=np.int16) - 1)), ["-1"]),
    "mask_label_255": (lambda t, g: _mask_cfg(_mask(t, "m.npy", _labels() + 255)),
                       ["255 = -1 in an unsigned 8-bit file"]),
    "mask_no_marrow": (lambda t, g: _mask_cfg(_mask(t, "m.npy", np.ones((8, 8, 8), np.uint8))), ["no marrow"]),
    "mask_empty": (lambda t, g: _mask_cfg(_mask(t, "m.npy", np.zeros((0, 8, 8), np.uint8))), ["empty"]),
    "mask_truncated": (lambda t, g: _mask_cfg(_text(t, "m.npy", _mask(t, "x.npy", _labels()).read_bytes()[:-40])),
                       ["corrupt"]),
    "mask_zip_renamed": (lambda t, g: _mask_cfg(_text(t, "m.npy", b"PK\x03\x04" + b"\x00" * 40)), ["zip"]),
    "mask_unknown_suffix": (lambda t, g: _mask_cfg(_text(t, "m.png", b"\x89PNG")), ["unknown file type"]),
    "mask_h5_without_dataset": (lambda t, g: _mask_cfg(_h5_mask(t)), ["name the dataset"]),
    "mask_h5_missing_dataset": (lambda t, g: _mask_cfg(f"{_h5_mask(t)}:/nothere"), ["/nothere"]),
    "mask_h5_group": (lambda t, g: _mask_cfg(f"{_h5_mask(t)}:/group"), ["group, not a dataset"]),
    "mask_broken_tiff": (lambda t, g: _mask_cfg(_text(t, "m.tif", b"II*\x00" + b"\xff" * 20)),
                         ["not a readable TIFF"]),
    "diffusivity_map_wrong_shape": (lambda t, g: ["config", "validate", TINY, "--set",
                                                  f'transport.oxygen.diffusivity_map="{_mask(t, "d.npy", np.ones((4, 4, 4)))}"'],
                                    ["diffusivity_map", "(4, 4, 4)"]),
    "diffusivity_map_nan": (lambda t, g: ["config", "validate", TINY, "--set",
                                          f'transport.oxygen.diffusivity_map="{_mask(t, "d.npy", np.full((32, 32, 32), np.nan))}"'],
                            ["NaN"]),
    # masks through `run`: refused before any directory exists
    "run_mask_2d": (lambda t, g: ["run", TINY, "--out", t / "r", "--set", 'domain.kind="mask"', "--set",
                                  f'domain.mask_path="{_mask(t, "m.npy", _labels()[0])}"'], ["2 dimension(s)"]),
    "run_mask_4d": (lambda t, g: ["run", TINY, "--out", t / "r", "--set", 'domain.kind="mask"', "--set",
                                  f'domain.mask_path="{_mask(t, "m.npy", _labels()[None])}"'], ["4 dimension(s)"]),
    "run_mask_missing": (lambda t, g: ["run", TINY, "--out", t / "r", "--set", 'domain.kind="mask"', "--set",
                                       f'domain.mask_path="{t / "gone.npy"}"'], ["does not exist"]),
    # output directories (issue 16 item 8)
    "out_parent_is_file": (lambda t, g: ["run", TINY, "--out", _text(t, "afile", "x") / "sub"],
                           ["is a file, not a directory"]),
    "out_is_file": (lambda t, g: ["run", TINY, "--out", _text(t, "afile", "x")], ["not a directory"]),
    "out_under_proc": (lambda t, g: ["run", TINY, "--out", "/proc/marrow3d-test/x"], ["cannot be created"]),
    "out_under_sys": (lambda t, g: ["run", TINY, "--out", "/sys/kernel/marrow3d-test"], ["cannot be created"]),
    "out_dangling_symlink": (lambda t, g: ["run", TINY, "--out", _dangling(t), "--days", "0"], ["cannot be created"]),
    "out_holds_a_run": (lambda t, g: ["run", TINY, "--out", g], ["already holds a run", "resume"]),
    # resume and branch
    "resume_missing": (lambda t, g: ["resume", t / "nope"], ["does not exist"]),
    "resume_file": (lambda t, g: ["resume", _text(t, "afile", "x")], ["not a directory"]),
    "resume_empty_dir": (lambda t, g: ["resume", t], ["not a marrow3d run directory"]),
    "resume_before_first_checkpoint": (lambda t, g: ["resume", _started_run(t, g)],
                                       ["no checkpoint", "marrow3d run"]),
    "resume_days_negative": (lambda t, g: ["resume", g, "--days", "-5"], ["run.days"]),
    "resume_days_nan": (lambda t, g: ["resume", g, "--days", "nan"], ["run.days"]),
    "resume_backend_unknown": (lambda t, g: ["resume", g, "--backend", "tpu"], ["run.backend"]),
    "branch_into_a_run": (lambda t, g: ["branch", g, g], ["already holds a run"]),
    "branch_into_a_file": (lambda t, g: ["branch", g, _text(t, "afile", "x")], ["not a directory"]),
    "branch_from_nothing": (lambda t, g: ["branch", t / "nope", t / "new"], ["does not exist"]),
    "branch_at_a_day_without_checkpoint": (lambda t, g: ["branch", g, t / "new", "--at-day", "0.3"],
                                           ["no checkpoint at day 0.3"]),
    "branch_changes_the_seed": (lambda t, g: ["branch", g, t / "new", "--set", "run.seed=9"], ["run.seed"]),
    # readers and exports
    "info_missing": (lambda t, g: ["info", t / "nope"], ["does not exist"]),
    "info_empty_dir": (lambda t, g: ["info", t], ["holds no run.h5"]),
    "info_fifo": (lambda t, g: ["info", _fifo(t, "run.h5")], ["not a regular file"]),
    "info_text_file": (lambda t, g: ["info", _text(t, "x.h5", "hello")], ["not an HDF5 file"]),
    "export_unknown_format": (lambda t, g: ["export", g, "--format", "xlsx"], ["unknown export format"]),
    "export_out_parent_is_file": (lambda t, g: ["export", g, "--out", _text(t, "afile", "x") / "r.vtkhdf"],
                                  ["is a file, not a directory"]),
    "export_out_is_directory": (lambda t, g: ["export", g, "--format", "csv", "--out", t], ["is a directory"]),
    "export_out_under_proc": (lambda t, g: ["export", g, "--format", "csv", "--out", "/proc/marrow3d-test.csv"],
                              ["/proc"]),
    "render_unknown_show": (lambda t, g: ["render", g, "--show", "nothing"], ["--show"]),
    "render_step_out_of_range": (lambda t, g: ["render", g, "--step", "99"], ["step 99"]),
    "render_out_parent_is_file": (lambda t, g: ["render", g, "--out", _text(t, "afile", "x") / "p.png"],
                                  ["is a file, not a directory"]),
    "plot_out_parent_is_file": (lambda t, g: ["plot", g, "--out", _text(t, "afile", "x") / "p.png"],
                                ["is a file, not a directory"]),
    "plot_missing_run": (lambda t, g: ["plot", t / "nope"], ["does not exist"]),
    # sweeps (issue 16 item 12)
    "sweep_spec_typo": (lambda t, g: ["sweep", _spec(t, "[sett]\n'run.days' = 1\n"), "--out", t / "sw"],
                        ["did you mean 'set'?"]),
    "sweep_spec_unknown_key": (lambda t, g: ["sweep", _spec(t, "[zzz]\n"), "--out", t / "sw"],
                               ["allowed here: name, base, set, vary"]),
    "sweep_spec_fifo": (lambda t, g: ["sweep", _fifo(t, "s.toml"), "--out", t / "sw"], ["not a regular file"]),
    "sweep_spec_nan": (lambda t, g: ["sweep", _spec(t, "[branch]\nat_day = nan\n"), "--out", t / "sw"],
                       ["finite"]),
    "sweep_workers_zero": (lambda t, g: ["sweep", ROOT / "configs" / "sweeps" / "tiny.toml", "--out", t / "sw",
                                         "--workers", "0"], ["--workers"]),
    "sweep_scheduler_bad": (lambda t, g: ["sweep", ROOT / "configs" / "sweeps" / "tiny.toml", "--out", t / "sw",
                                          "--scheduler", "http://x"], ["tcp://HOST:PORT"]),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_hostile_command_line_gives_one_error_line(good, tmp_path, case, restore_logging):
    make, needles = CLI_CASES[case]
    work = tmp_path / "w"
    work.mkdir()
    before = _files(good)
    _one_error_line(*_invoke(make(work, good)), *needles)
    assert not (work / "r").exists() and not (work / "new").exists() and not (work / "sw").exists()
    assert _files(good) == before


def test_at_least_a_hundred_hostile_inputs_are_listed():
    counted = len(CLI_CASES) + len(CHECKPOINT_DAMAGE) + len(RUN_FILE_DAMAGE)
    assert counted >= 100, counted


# ---------------------------------------------------------------------------------- processes
def _start(args: list[str], env: dict | None = None, limit_bytes: int | None = None) -> subprocess.Popen:
    def limit():  # the child's own file-size limit (`ulimit -f`); Python ignores SIGXFSZ
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.Popen([*CLI, *[str(a) for a in args]], cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=limit if limit_bytes else None)


def _wait_for(predicate, proc: subprocess.Popen, what: str, timeout_s: float = 240) -> None:
    t0 = time.monotonic()
    while not predicate():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (status {proc.returncode}) before {what}:\n{err[-3000:]}")
        if time.monotonic() - t0 > timeout_s:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def _kill9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _final_write_started(path: Path) -> bool:
    from marrow3d.output.h5access import read_superblock

    try:
        sb = read_superblock(path)
    except OSError:
        return False
    return sb is not None and sb.open_for_write and not sb.swmr_writing


@pytest.fixture(scope="module")
def processes(tmp_path_factory, good) -> dict:
    """Every process-level fault at once, as real CLI runs side by side (on 2 cores, started
    together, they take about as long as two in a row); the way forward after each (resume,
    run again) runs in this process, through the same CLI:

    * ``first_checkpoint``, ``mid_checkpoint``, ``final_state``: killed with SIGKILL while the
      t = 0 checkpoint (before any checkpoint exists), the step-2 checkpoint, or the final
      /state of run.h5 is written (a test hook pauses each write so the kill lands there);
    * ``full``: a file-size limit (``ulimit -f``) that run.h5 outgrows before the end;
    * ``pair``: two runs into one directory at the same time; the test of it holds the
      winner's run.h5 open to its end and tries two more writers meanwhile.
    """
    base = tmp_path_factory.mktemp("processes")
    pause = {"MARROW3D_TEST_CHECKPOINT_PAUSE_S": "60"}
    kills = {
        "first_checkpoint": (pause, lambda d: any(d.glob(".checkpoint_000000000.h5.tmp-*"))),
        "mid_checkpoint": ({"MARROW3D_TEST_CHECKPOINT_PAUSE_S": "1"},
                           lambda d: (d / "checkpoint_000000000.h5").exists()
                           and any(d.glob(".checkpoint_000000002.h5.tmp-*"))),
        "final_state": ({"MARROW3D_TEST_FINAL_STATE_PAUSE_S": "60"}, lambda d: _final_write_started(d / "run.h5")),
    }
    procs = {name: _start(["run", TINY, "--out", base / name, *_set_args()], env)
             for name, (env, _) in kills.items()}
    limit = (good / "run.h5").stat().st_size - 100_000  # run.h5 outgrows it at its last snapshot
    procs["full"] = _start(["run", TINY, "--out", base / "full", *_set_args()], limit_bytes=limit)
    for name in ("pair_a", "pair_b"):  # 2 s pauses: the winner runs for 6 s or more
        procs[name] = _start(["run", TINY, "--out", base / "pair", *_set_args()],
                             {"MARROW3D_TEST_CHECKPOINT_PAUSE_S": "2"})
    for name, (_, ready) in kills.items():
        _wait_for(lambda: ready(base / name), procs[name], f"the {name} write")
        _kill9(procs[name])
    yield {"base": base, "procs": procs}
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_two_writers_and_a_reader_holding_run_h5(processes, reference_digest, restore_logging):
    """Issue 16 items 1 and 10. Two runs start into one directory: exactly one writes it, the
    other gets one line. open_run and a plain h5py reader hold the winner's run.h5 until it has
    ended (it still ends with its final state); meanwhile `run --out` the same directory and
    `resume` it are refused in one line naming the writer."""
    from marrow3d.analysis import open_run
    from marrow3d.errors import Marrow3DError

    d = processes["base"] / "pair"
    procs = [processes["procs"]["pair_a"], processes["procs"]["pair_b"]]
    _wait_for(lambda: (d / "run.h5").exists() and (d / ".marrow3d.lock").stat().st_size > 0, procs[0], "run.h5")
    with open_run(d) as live, h5py.File(d / "run.h5", "r", swmr=True) as raw:
        assert live.swmr and live.complete is None
        writer = json.loads((d / ".marrow3d.lock").read_text())["pid"]
        assert writer in {p.pid for p in procs}
        _one_error_line(*_invoke(["run", TINY, "--out", d]), "being written by another marrow3d process")
        _one_error_line(*_invoke(["resume", d]), "being written by another marrow3d process", f"pid {writer}")
        results = [_finish(p) for p in procs]
        assert raw["timeseries/time_h"].shape[0] >= 1
        try:  # a SWMR view held across the run's final write reads on, or fails in one line
            assert len(live.timeseries) >= 1
        except Marrow3DError as exc:
            assert "\n" not in str(exc)
    assert sorted(r.returncode for r in results) == [0, 2], [(r.returncode, r.stderr[-2000:]) for r in results]
    loser = next(r for r in results if r.returncode == 2)
    line = _one_error_line(loser.returncode, loser.stdout, loser.stderr, str(d))
    assert "being written by another" in line or "already holds a run" in line, line
    assert _digest(d) == reference_digest


def test_kill_before_the_first_checkpoint_then_run_again(processes, reference_digest, restore_logging):
    """Issue 16 item 11: the directory is readable, resume says what to do, and run accepts it."""
    from marrow3d.analysis import open_run

    d = processes["base"] / "first_checkpoint"
    assert not (d / "checkpoint.h5").exists() and (d / "run.h5").exists()
    with open_run(d) as run:  # flagged open by the dead writer: read through the recovered view
        assert run.access == "recovered" and run.complete is None and len(run.timeseries) == 1
    _one_error_line(*_invoke(["resume", d]), "no checkpoint", f"marrow3d run {d / 'config.toml'} --out {d}")
    code, out, err = _invoke(["run", d / "config.toml", "--out", d])
    assert code == 0 and "Traceback" not in err, err[-3000:]
    assert _digest(d) == reference_digest
    assert not list(d.glob(".*.tmp-*"))


@pytest.mark.parametrize("where", ["mid_checkpoint", "final_state"])
def test_kill_during_a_write_then_resume_equals_the_direct_run(processes, reference_digest, where,
                                                              restore_logging):
    d = processes["base"] / where
    code, out, err = _invoke(["resume", d])
    assert code == 0 and "Traceback" not in err, err[-3000:]
    assert _digest(d) == reference_digest
    assert not list(d.glob(".*.tmp-*"))


def test_file_size_limit_ends_in_one_line_and_resumes(processes, reference_digest, restore_logging):
    """Issue 16 item 2: a full disk (here RLIMIT_FSIZE, `ulimit -f`) stops the run with one error
    line naming the checkpoint kept; no traceback, no crash; resume with room finishes it."""
    first = _finish(processes["procs"]["full"])
    _one_error_line(first.returncode, first.stdout, first.stderr, "run.h5", "file size limit",
                    "checkpoint.h5 (step", "is kept", "marrow3d resume")
    code, out, err = _invoke(["resume", processes["base"] / "full"])
    assert code == 0, err[-3000:]
    assert _digest(processes["base"] / "full") == reference_digest
