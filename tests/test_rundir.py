"""Run-directory helpers: atomic writes with normal permissions, run.json status rules, environment info."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ecg_hpc import rundir


def test_atomic_write_leaves_no_temp_file_and_uses_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = rundir.atomic_write_text(tmp_path / "sub" / "a.txt", "hello")
    finally:
        os.umask(old)
    assert path.read_text() == "hello"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["a.txt"]


def test_write_run_refuses_unknown_status_and_is_done_reads_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="status"):
        rundir.write_run(tmp_path, {"status": "finished"})
    assert not (tmp_path / "run.json").exists()
    rundir.write_run(tmp_path, {"status": "running"})
    assert not rundir.is_done(tmp_path)
    rundir.write_run(tmp_path, {"status": "done", "seed": 3})
    assert rundir.is_done(tmp_path) and rundir.read_run(tmp_path)["seed"] == 3
    (tmp_path / "run.json").write_text("{broken")
    assert not rundir.is_done(tmp_path)
    with pytest.raises(ValueError, match="not valid JSON"):
        rundir.read_run(tmp_path)


def test_the_first_failed_worker_is_recorded(tmp_path: Path) -> None:
    # no run.json yet (a worker failed before rank 0 wrote one): a bare record names it
    rundir.record_failure(tmp_path, "pretrain", 1, "node2", "DataError: no store")
    info = rundir.read_run(tmp_path)
    assert (info["kind"], info["status"], info["failed_rank"], info["failed_host"]) == ("pretrain", "failed", 1,
                                                                                         "node2")
    assert info["error"] == "DataError: no store" and info["finished_at"]
    # a worker failing because of it later does not take its place
    assert rundir.record_failure(tmp_path, "pretrain", 0, "node1", "HorovodInternalError")["failed_rank"] == 1
    assert rundir.read_run(tmp_path)["failed_rank"] == 1
    # a running record keeps its fields and gains the failure
    rundir.write_run(tmp_path, {"kind": "pretrain", "status": "running", "epochs_done": 1})
    rundir.record_failure(tmp_path, "pretrain", 0, "node1", "ValueError: x", info={"kind": "pretrain",
                                                                                     "status": "running", "seed": 4})
    info = rundir.read_run(tmp_path)
    assert (info["status"], info["failed_rank"], info["seed"]) == ("failed", 0, 4) and "epochs_done" not in info
    # a done run keeps its results
    rundir.write_run(tmp_path, {"kind": "pretrain", "status": "done"})
    assert rundir.record_failure(tmp_path, "pretrain", 1, "node2", "late")["status"] == "done"
    assert rundir.read_run(tmp_path) == {"kind": "pretrain", "status": "done"}


def test_csv_and_environment_info(tmp_path: Path) -> None:
    path = rundir.atomic_write_csv(tmp_path / "h.csv", ["epoch", "f1"], [(1, 0.5), (2, 0.75)])
    assert path.read_text() == "epoch,f1\n1,0.5\n2,0.75\n"
    env = rundir.environment_info()
    assert env["host"] and env["python"].startswith("3.11")
    assert "numpy" in env["packages"] and env["code_version"]
