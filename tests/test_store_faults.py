"""A store that changes under a run: refused on resume, caught between epochs, named in one line.

The store is the real one: synthetic patients in the published Icentia11k format converted by the real CLI;
the pretraining runs are real single-worker runs of ``python -m ecg_hpc.train.pretrain``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from ecg_hpc.data.store import MANIFEST, Store, check_sizes, patient_dir, patients_fingerprint, read_meta
from ecg_hpc.errors import DataError
from ecg_hpc.records import read_record, write_record
from ecg_hpc.train.job_lock import lock_is_held
from tests.test_pretrain import synthetic_store

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
TINY = ["--task", "beat", "--width", "0.125", "--frame-size", "256", "--batch-size", "8", "--steps-per-epoch", "5",
        "--seed", "3", "--deterministic"]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_store(tmp_path_factory.mktemp("store_faults"), patients=6)


@pytest.fixture
def store(pristine: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "store"))


def test_nonsense_manifest_is_refused_on_open(store: Path) -> None:
    (store / MANIFEST).write_text(json.dumps({"format": "zip", "version": 9}))
    with pytest.raises(DataError, match=f"{store / MANIFEST}: format 'zip' version 9, this code reads"):
        Store(store)
    (store / MANIFEST).write_text("[1, 2")
    with pytest.raises(DataError, match=f"{store / MANIFEST}: not a store manifest"):
        Store(store)


def test_meta_without_its_file_list_is_named(store: Path) -> None:
    path = patient_dir(store, 0) / "meta.json"
    meta = json.loads(path.read_text())
    del meta["files"]["signal.npy"]
    path.write_text(json.dumps(meta))
    with pytest.raises(DataError, match=f"{path}: not a patient meta record .no dtype/shape/bytes of signal.npy"):
        read_meta(store, 0)


def test_sizes_and_fingerprint_see_a_changed_store(store: Path) -> None:
    opened = Store(store)
    before = patients_fingerprint(opened, opened.patient_ids)
    check_sizes(opened, opened.patient_ids)
    signal = patient_dir(store, 2) / "signal.npy"
    os.truncate(signal, signal.stat().st_size // 2)
    with pytest.raises(DataError, match=f"{signal}: .* bytes, meta.json says .*the store changed under this run"):
        check_sizes(opened, opened.patient_ids)
    assert patients_fingerprint(opened, opened.patient_ids)["files_sha256"] != before["files_sha256"]


def _pretrain(store: Path, job: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecg_hpc.train.pretrain", "--store", str(store), "--job-dir",
                           str(job), *TINY, *extra], capture_output=True, text=True, timeout=600, cwd=ROOT, env=ENV)


@pytest.mark.horovod
def test_resume_on_a_changed_patient_set_is_refused(store: Path, tmp_path: Path) -> None:
    job = tmp_path / "job"
    first = _pretrain(store, job, "--epochs", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    recorded = read_record(job).store
    assert recorded["n_patients"] == 6 and recorded["patients"] == list(range(6))
    shutil.rmtree(patient_dir(store, 4))  # deleted between a preemption and the requeue
    refused = _pretrain(store, job, "--epochs", "2")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-3000:]
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "the store changed since the run" in errors[0], refused.stderr[-3000:]
    assert "5 patients now, 6 when it started (gone: [4])" in errors[0] and "--allow-store-change" in errors[0]
    info = read_record(job)  # the finished 1-epoch run stays as it was
    assert info.status == "done" and info.epochs_done == 1 and not (job / "epoch_02").exists()
    write_record(job, replace(info, status="running"))  # as if preempted in epoch 2
    refused = _pretrain(store, job, "--epochs", "2")
    assert refused.returncode == 2 and "the store changed since the run" in refused.stderr
    info = read_record(job)
    assert info.status == "failed" and "store changed" in info.error
    allowed = _pretrain(store, job, "--epochs", "2", "--allow-store-change")
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    info = read_record(job)
    assert info.status == "done" and info.store["n_patients"] == 5 and info.config["allow_store_change"]


@pytest.mark.horovod
def test_a_signal_file_truncated_while_mapped_fails_with_a_line(store: Path, tmp_path: Path) -> None:
    # The uniform sampler reads every frame through the memory map, so the truncation ends the worker with a
    # SIGBUS at its next read of the lost pages; its crash watcher names it in the log and in run.json.
    job, out, err = tmp_path / "job", tmp_path / "out.log", tmp_path / "err.log"
    argv = [sys.executable, "-m", "ecg_hpc.train.pretrain", "--store", str(store), "--job-dir", str(job), *TINY,
            "--steps-per-epoch", "200000", "--epochs", "1", "--sampler", "uniform"]  # the last one wins
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(argv, stdout=stdout, stderr=stderr, cwd=ROOT, env=ENV)
    try:
        deadline = time.monotonic() + 60
        while "training epochs" not in out.read_text() and proc.poll() is None:
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.1)
        assert proc.poll() is None, err.read_text()[-3000:]
        time.sleep(1.0)  # a few steps into the epoch
        os.truncate(patient_dir(store, 0) / "signal.npy", 64)
        assert proc.wait(timeout=60) == -signal.SIGBUS  # faulthandler re-raises the signal
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 10  # the watcher records the crash an instant after the worker is gone
    while read_record(job).status == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    log = err.read_text()
    assert [line for line in log.splitlines() if line.startswith("Fatal Python error:")] == \
        ["Fatal Python error: Bus error"], log[-3000:]
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "rank 0 on " in errors[0] and "died of a bus error" in errors[0], log[-3000:]
    assert "--allow-store-change" in errors[0]
    info = read_record(job)
    assert info.status == "failed" and "bus error" in info.error and info.failed_rank == 0
    assert info.error == errors[0].removeprefix("error: ") and info.store["n_patients"] == 6
    assert not lock_is_held(job)
