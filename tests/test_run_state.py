"""Dead runs look dead: a run.json that says running while nobody runs it is "died", and a re-run redoes it.

A real fine-tuning task of a real sweep is killed with SIGKILL (what the OOM killer or a dying node does): it
cannot write its final state, so its run.json keeps saying running; ``sweep status``, the report and the
sweep's summary must say "died", and running the task again must redo it to "done".
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from ecg_hpc.hpc import sweep
from ecg_hpc.hpc.manifest import MANIFEST, read_manifest
from ecg_hpc.hpc.run_state import DIED, derived_status, recorded_slurm_job
from ecg_hpc.options import config_argv
from ecg_hpc.records import FinetuneRun, InitSource, PretrainRun, read_record, write_record
from ecg_hpc.train.job_lock import job_dir_lock, lock_is_held

from tests.test_finetune import make_prepared

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


def test_lock_decides_between_running_and_died(tmp_path: Path) -> None:
    job = tmp_path / "job"
    job.mkdir()
    info = FinetuneRun(status="running", seed=1, arch="resnet18", init=InitSource("random"),
                       environment={"slurm": {}})
    write_record(job, info)
    assert not lock_is_held(job) and derived_status(job, info) == DIED
    with job_dir_lock(job):
        assert lock_is_held(job) and derived_status(job, info) == "running"
    assert derived_status(job, replace(info, status="failed")) == "failed"


def test_recorded_slurm_job_ids() -> None:
    run = FinetuneRun(status="running", seed=1, arch="resnet18", init=InitSource("random"),
                      environment={"slurm": {"SLURM_JOB_ID": "42"}})
    assert recorded_slurm_job(run) == "42"
    pretrain = PretrainRun(status="running", seed=0, task="beat", arch="resnet18", frame_size=256, epochs=1)
    assert recorded_slurm_job(replace(pretrain, attempts=({"launcher": "slurm", "job_id": "7"},))) == "7"
    assert recorded_slurm_job(replace(pretrain, attempts=({"launcher": "submitit-local", "job_id": "9"},))) is None


def _wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


def test_sigkilled_finetuning_task_is_died_and_redone(tmp_path: Path) -> None:
    data = make_prepared(tmp_path)
    sweep_dir = tmp_path / "sweep"
    plan = subprocess.run([sys.executable, "-m", "ecg_hpc.hpc.sweep", "plan", "--data", str(data), "--sweep-dir",
                           str(sweep_dir), "--seeds", "1", "--width", "0.125", "--epochs", "200", "--batch-size",
                           "16", "--val-size", "0.25"], capture_output=True, text=True, cwd=ROOT, env=ENV,
                          timeout=300)
    assert plan.returncode == 0, plan.stderr
    manifest = sweep_dir / MANIFEST
    job = Path(read_manifest(manifest)[0].job_dir)
    proc = subprocess.Popen([sys.executable, "-m", "ecg_hpc.hpc.sweep", "run-task", "--manifest", str(manifest),
                             "--index", "0"], cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: (job / "history.csv").is_file(), 300, "the first epoch")
        assert lock_is_held(job) and sweep.task_status(read_manifest(manifest)[0]) == "running"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert read_record(job).status == "running"  # what the killed process left: it could not say otherwise
    status = subprocess.run([sys.executable, "-m", "ecg_hpc.hpc.sweep", "status", "--manifest", str(manifest)],
                            capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=120)
    assert status.returncode == 0 and "   0  died" in status.stdout and "1 tasks: 1 died" in status.stdout, status.stdout

    from analysis.collect import collect

    problems = collect(sweep_dir, progress=False).problems
    row = problems[problems["problem"] == DIED]
    assert len(row) == 1 and "submit it again" in row.iloc[0]["detail"]

    # A re-submission redoes it (a shorter run this time, so the test stays quick).
    redo = subprocess.run([sys.executable, "-m", "ecg_hpc.train.finetune",
                           *config_argv(replace(read_manifest(manifest)[0].config, epochs=1))], capture_output=True, text=True, cwd=ROOT,
                          env=ENV, timeout=600)
    assert redo.returncode == 0, redo.stderr[-2000:]
    info = read_record(job)
    assert info.status == "done" and sweep.task_status(read_manifest(manifest)[0]) == "done"


@pytest.mark.slurm
def test_slurm_job_alive_follows_the_real_queue(slurm_cluster, tmp_path: Path) -> None:
    from ecg_hpc.hpc.run_state import slurm_job_alive

    proc = subprocess.run(["sbatch", "--parsable", f"--partition={slurm_cluster.partition}", "--time=2",
                           f"--output={tmp_path / 'sleep-%j.out'}", "--wrap", "sleep 120"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip().split(";")[0]
    try:
        assert slurm_job_alive(job_id) is True  # pending or running: a run of this job is not dead
        info = FinetuneRun(status="running", seed=1, arch="resnet18", init=InitSource("random"),
                           environment={"slurm": {"SLURM_JOB_ID": job_id}})
        assert derived_status(tmp_path, info) == "running"  # no lock here, but its job is still queued
    finally:
        subprocess.run(["scancel", job_id], timeout=60)
    _wait_for(lambda: slurm_job_alive(job_id) is False, 120, "the cancelled job to leave the queue")
    assert derived_status(tmp_path, info) == DIED


@pytest.mark.horovod
def test_sigterm_that_nobody_requeues_records_failed(tmp_path: Path) -> None:
    # A plain process (no SLURM, no submitit): SIGTERM, as scancel sends it, checkpoints and stops; since nobody
    # requeues the run, run.json says failed with the reason, not running for ever.
    for cmd in (["synth-icentia", "--dst", str(tmp_path / "release"), "--patients", "2", "--segments", "2",
                 "--segment-size", "20000", "--seed", "1"],
                ["convert-icentia", "--src", str(tmp_path / "release"), "--dst", str(tmp_path / "store"), "--quiet"]):
        assert subprocess.run([sys.executable, "-m", "ecg_hpc.data", *cmd], cwd=ROOT, env=ENV, capture_output=True,
                              timeout=300).returncode == 0
    job = tmp_path / "job"
    log = tmp_path / "out.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ecg_hpc.train.pretrain", "--store", str(tmp_path / "store"),
                                 "--job-dir", str(job), "--task", "beat", "--width", "0.125", "--frame-size", "256",
                                 "--batch-size", "8", "--epochs", "50", "--steps-per-epoch", "20"],
                                cwd=ROOT, env=ENV, stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_for(lambda: (job / "epoch_01").is_dir(), 400, "the first epoch")
            assert lock_is_held(job) and derived_status(job, read_record(job)) == "running"
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=300)
        finally:
            proc.kill()
    text = log.read_text()
    assert "received SIGTERM" in text and "not requeued" in text, text[-2000:]
    info = read_record(job)
    assert info.status == "failed" and "stopped by SIGTERM and not requeued" in info.error
    assert not lock_is_held(job) and derived_status(job, info) == "failed"
    assert (job / "preempted").is_dir() or info.epochs_done >= 1  # its work is kept for a resume


@pytest.mark.slurm
def test_an_eta_beyond_the_job_s_time_limit_is_warned_once(slurm_cluster, tmp_path: Path, capsys) -> None:
    """The warning reads the real queue's time left (``squeue %L``) of a job with ``--time=2``."""
    from ecg_hpc.train.environments import JobEnv, time_left_s
    from ecg_hpc.train.pretraining import warn_if_beyond_time_limit

    proc = subprocess.run(["sbatch", "--parsable", f"--partition={slurm_cluster.partition}", "--time=2",
                           f"--output={tmp_path / 'sleep-%j.out'}", "--wrap", "sleep 120"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip().split(";")[0]
    job = JobEnv("slurm", 0, 1, 0, 1, 0, 1, "vm", ("vm",), (1,), job_id, 0)
    try:
        _wait_for(lambda: (time_left_s(job) or 0) > 0, 60, "the job to start")
        assert 0 < time_left_s(job) <= 120
        warn_if_beyond_time_limit(job, seconds_per_step=0.5, steps_left=1000)  # ~8 min of steps, 2 min left
        warn_if_beyond_time_limit(job, seconds_per_step=0.5, steps_left=10)  # fits
    finally:
        subprocess.run(["scancel", job_id], timeout=60)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert len(lines) == 1 and "the remaining 1000 steps need about 0.1 h" in lines[0] and "(--time)" in lines[0]
    assert warn_if_beyond_time_limit(replace(job, launcher="single"), 0.5, 10 ** 9) is None  # no limit: no word
    assert capsys.readouterr().out == ""
