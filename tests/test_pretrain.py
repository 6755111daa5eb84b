"""Pretraining: learning-rate schedule, checkpoints and resume point, and real multi-worker runs.

The worker tests start real Horovod workers through ``launch/pretrain.py --local`` (submitit's local executor,
no horovodrun) on a synthetic store written in the published format and converted by the real CLIs. With
``--deterministic`` the CPU kernels are deterministic, so a preempted or killed run that resumes must end with
bit-identical weights to an uninterrupted one (tolerance: none).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from ecg_hpc.errors import ConfigError, DataError
from ecg_hpc.options import config_argv
from ecg_hpc.records import read_record, write_record
from ecg_hpc.tasks import get_task
from ecg_hpc.train import checkpoints, distributed, pretrain, pretraining
from ecg_hpc.train.pretrain_config import PretrainConfig

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = ROOT / "launch" / "pretrain.py"
TINY = ["--task", "beat", "--width", "0.125", "--frame-size", "256", "--batch-size", "8", "--epochs", "2",
        "--steps-per-epoch", "30", "--seed", "3", "--deterministic"]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


# -- fast unit tests ----------------------------------------------------------------------------------------------
def test_linear_scaling_with_warmup() -> None:
    schedule = distributed.learning_rate(1e-3, 4, "linear", warmup_steps=10)
    values = [float(schedule(step)) for step in (0, 5, 10, 1000)]
    np.testing.assert_allclose(values, [1e-3, 2.5e-3, 4e-3, 4e-3], rtol=1e-6)
    record = distributed.lr_record(schedule, 4, "linear")
    assert record["scaled_lr"] == pytest.approx(4e-3) and record["warmup_steps"] == 10
    flat = distributed.learning_rate(1e-3, 4, "none", warmup_steps=10)
    assert float(flat(0)) == pytest.approx(1e-3) and float(flat(50)) == pytest.approx(1e-3)
    assert flat.warmup_steps == 0


def test_square_root_scaling_is_an_option_and_run_json_names_the_rule() -> None:
    schedule = distributed.learning_rate(1e-3, 16, "sqrt", warmup_steps=10)
    assert float(schedule(1000)) == pytest.approx(4e-3)
    record = distributed.lr_record(schedule, 16, "sqrt")
    assert record["lr_scaling"] == "sqrt" and record["lr_scale"] == pytest.approx(4.0)
    assert "sqrt" in record["lr_rule"] and "Goyal" in distributed.lr_record(
        distributed.learning_rate(1e-3, 16, "linear", 10), 16, "linear")["lr_rule"]
    parse = pretrain.build_parser().parse_args
    assert parse(["--store", "s", "--job-dir", "j"]).lr_scaling == "linear"
    assert parse(["--store", "s", "--job-dir", "j", "--lr-scaling", "sqrt"]).lr_scaling == "sqrt"


def test_partial_epoch_metrics_combine_by_steps() -> None:
    combined = pretraining._combine({"loss": 2.0, "acc": 0.5, "lr": 9.0}, 3, {"loss": 1.0, "acc": 1.0}, 1)
    assert combined == {"loss": pytest.approx(1.75), "acc": pytest.approx(0.625)}


def _config(*argv: str) -> PretrainConfig:
    return pretrain.config_from_args(pretrain.build_parser().parse_args(list(argv)))


def test_steps_per_epoch_resolution(tmp_path: Path) -> None:
    base = ["--store", str(tmp_path), "--task", "beat", "--job-dir", "j"]
    assert pretraining.steps_per_epoch(_config(*base), 100, 4) == pretraining.DEFAULT_STEPS
    assert pretraining.steps_per_epoch(_config(*base, "--steps-per-epoch", "7"), 100, 4) == 7
    # 100 patients x 4096 frames / (512 per step x 4 workers) = 200 steps
    assert pretraining.steps_per_epoch(_config(*base, "--samples-per-patient", "4096"), 100, 4) == 200


def test_argument_errors_and_the_one_job_dir_name(tmp_path: Path) -> None:
    base = ["--store", str(tmp_path), "--task", "beat"]
    with pytest.raises(ConfigError, match="--frac"):
        _config(*base, "--frac", "1.5")
    with pytest.raises(ConfigError, match="--batch-size"):
        _config(*base, "--batch-size", "0")
    with pytest.raises(DataError, match="--store"):
        _config("--store", str(tmp_path / "none"), "--task", "beat", "--job-dir", "j").check_store()
    with pytest.raises(ConfigError, match="--pool-mb"):
        _config(*base, "--pool-mb", "0")
    assert _config(*base, "--sampler", "uniform").pool_options() is None
    config = _config(*base, "--frac", "1.0", "--arch", "resnet34")
    assert config.job_dir == str(Path("runs") / "pretrain" / "beat_resnet34_f4096_frac1_s0")
    assert _config(*config_argv(config)) == config  # what a dry run shows is the config itself


def _model_and_optimizer(width: float = 0.125) -> tuple[tf.keras.Model, tf.keras.optimizers.Optimizer]:
    tf.keras.utils.set_random_seed(0)
    task = get_task("beat")
    model = task.build_model("resnet18", 256, width=width)
    optimizer = tf.keras.optimizers.Adam(distributed.learning_rate(1e-3, 2, "linear", warmup_steps=30))
    task.compile_model(model, optimizer)
    optimizer.build(model.trainable_variables)
    return model, optimizer


def _train_steps(model: tf.keras.Model, steps: int) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8 * steps, 256, 1)).astype("float32")
    y = rng.integers(0, 5, size=8 * steps).astype("int32")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)


def test_checkpoints_save_restore_and_resume_point(tmp_path: Path) -> None:
    job = tmp_path / "job"
    model, optimizer = _model_and_optimizer()
    assert checkpoints.resume_point(job) is None
    _train_steps(model, 2)
    first = checkpoints.save(job, model, optimizer, epoch=1, steps_done=5, steps_per_epoch=5,
                             logs={"loss": 1.5}, epoch_time_s=2.0)
    assert first.name == "epoch_01" and (first / "feature_extractor" / "meta.json").is_file()
    _train_steps(model, 1)
    partial = checkpoints.save(job, model, optimizer, epoch=2, steps_done=3, steps_per_epoch=5,
                               logs={"loss": 1.2}, epoch_time_s=1.0)
    assert partial.name == checkpoints.PREEMPTED_DIR
    # Left-overs of an interrupted write are not checkpoints.
    (job / ".epoch_02.abc.tmp").mkdir()
    (job / "epoch_03").mkdir()
    assert [c.epoch for c in checkpoints.complete_epochs(job)] == [1]
    point = checkpoints.resume_point(job)
    assert point is not None and point.path == partial and point.epoch == 2 and point.steps_done == 3
    assert not point.complete and point.logs == {"loss": 1.2}

    fresh, fresh_opt = _model_and_optimizer()
    checkpoints.restore(point, fresh, fresh_opt)
    assert int(fresh_opt.iterations) == int(optimizer.iterations) == 3
    assert distributed.weights_fingerprint(fresh) == distributed.weights_fingerprint(model)
    for a, b in zip(fresh.weights, model.weights):  # BN moving statistics too
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for a, b in zip(fresh_opt.variables, optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    # Completing epoch 2 makes the preempted checkpoint obsolete.
    checkpoints.save(job, model, optimizer, epoch=2, steps_done=5, steps_per_epoch=5, logs={"loss": 1.0},
                     epoch_time_s=3.0)
    assert not (job / checkpoints.PREEMPTED_DIR).exists()
    assert checkpoints.resume_point(job).path.name == "epoch_02"

    wider, wider_opt = _model_and_optimizer(width=0.25)
    with pytest.raises(DataError, match="does not match"):
        checkpoints.restore(checkpoints.resume_point(job), wider, wider_opt)


# -- real workers ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-patient synthetic store: published pkl.gz format -> convert-icentia, through the real CLIs."""
    return synthetic_store(tmp_path_factory.mktemp("pretrain_data"), patients=4)


def synthetic_store(base: Path, patients: int) -> Path:
    """``patients`` synthetic patients (2 x 20,000 samples) in the published pkl.gz format under ``base``, converted
    to ``base/store`` through the real CLIs; returns the store."""
    for cmd in (["synth-icentia", "--dst", str(base / "release"), "--patients", str(patients), "--segments", "2",
                 "--segment-size", "20000", "--seed", "1"],
                ["convert-icentia", "--src", str(base / "release"), "--dst", str(base / "store"), "--quiet"]):
        proc = subprocess.run([sys.executable, "-m", "ecg_hpc.data", *cmd], capture_output=True, text=True,
                              timeout=300, cwd=ROOT, env=ENV)
        assert proc.returncode == 0, proc.stderr[-2000:]
    return base / "store"


def _launch(store: Path, job_dir: Path, *extra: str, follow: bool = True) -> tuple[int, str]:
    """Run the launcher; return its exit status and output. The output goes through a file, not a pipe:
    submitit's local controller inherits the launcher's stdout, so a pipe would stay open until the job ends."""
    cmd = [sys.executable, str(LAUNCH), "--local", "--tasks", "2", "--time", "20", "--store", str(store),
           "--job-dir", str(job_dir), *TINY, *extra] + (["--follow"] if follow else [])
    out = job_dir.parent / f"launch-{time.monotonic_ns()}.out"
    with out.open("w") as fh:
        status = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=600, env=ENV, cwd=ROOT).returncode
    return status, out.read_text()


def _job_id(launch_stdout: str) -> int:
    line = next(line for line in launch_stdout.splitlines() if line.startswith("submitted local job"))
    return int(line.split()[3])


def _wait_for(predicate, timeout_s: float, what: str, poll_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(poll_s)


def _rank_fingerprints(job_dir: Path) -> dict[str, str]:
    """The last 'trainable weights sha256' line each rank printed, from the per-rank logs."""
    found = {}
    for log in sorted((job_dir / "logs").glob("*_log.out")):
        for line in log.read_text().splitlines():
            if "trainable weights sha256" in line:
                rank, _, digest = line.partition(": trainable weights sha256 ")
                found[rank] = digest.strip()
    return found


@pytest.fixture(scope="module")
def reference(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted two-worker run of TINY."""
    job_dir = tmp_path_factory.mktemp("reference") / "job"
    status, output = _launch(store, job_dir)
    assert status == 0, output[-4000:]
    return job_dir


@pytest.mark.slow
@pytest.mark.horovod
def test_two_local_workers_train_in_sync(reference: Path) -> None:
    info = read_record(reference)
    assert info.status == "done" and info.world_size == 2 and info.epochs_done == 2
    assert info.sampler["sampler"] == "pool" and info.sampler["memory_bound_bytes"] == 1024 * 2 ** 20
    assert info.store["per_patient"]["store_bytes"] > 0 and info.store["per_patient"]["convert_cpu_s"] > 0
    assert info.attempts[0]["launcher"] == "submitit-local"
    assert info.horovod["scaled_lr"] == pytest.approx(2e-3) and info.horovod["warmup_steps"] == 30
    assert len(info.epoch_times_s) == 2 and info.frames_per_s > 0
    assert info.weights_identical_across_ranks is True
    history = (reference / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,") and [row.split(",")[0] for row in history[1:]] == ["1", "2"]
    for epoch in (1, 2):
        folder = reference / f"epoch_{epoch:02d}"
        assert checkpoints.read_info(folder).complete
        assert (folder / "feature_extractor" / "weights.h5").is_file()
    # Both ranks printed the same weights, and rank 0's last checkpoint holds exactly those weights.
    prints = _rank_fingerprints(reference)
    assert set(prints) == {"rank 0", "rank 1"} and prints["rank 0"] == prints["rank 1"] == info.weights_sha256
    model, optimizer = _model_and_optimizer()
    checkpoints.restore(checkpoints.resume_point(reference), model, optimizer)
    assert distributed.weights_fingerprint(model) == info.weights_sha256
    assert int(optimizer.iterations) == 60


@pytest.mark.slow
@pytest.mark.horovod
def test_sigterm_mid_epoch_checkpoints_requeues_and_matches(store: Path, reference: Path, tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    status, output = _launch(store, job_dir, follow=False)
    assert status == 0, output[-3000:]
    controller = _job_id(output)
    rank0_log = job_dir / "logs" / f"{controller}_0_log.out"
    _wait_for(lambda: rank0_log.is_file() and "training epochs" in rank0_log.read_text(), 300, "training to start")
    os.kill(controller, signal.SIGTERM)  # submitit's local controller forwards it to both workers
    _wait_for(lambda: (job_dir / "run.json").is_file()
              and read_record(job_dir).status == "done", 400, "the resumed run", 0.5)
    info = read_record(job_dir)
    log = rank0_log.read_text()
    assert "received SIGTERM" in log and "the local submitit controller restarts the workers" in log
    assert len(info.attempts) == 2 and info.attempts[0]["preempted_at"]
    assert info.attempts[1]["resumed_from"].endswith(checkpoints.PREEMPTED_DIR)
    assert "epoch 1 from step " in log and "(epoch 1 from step 0), resuming" not in log
    assert not (job_dir / checkpoints.PREEMPTED_DIR).exists()
    assert info.epochs_done == 2 and info.weights_identical_across_ranks is True
    assert info.weights_sha256 == read_record(reference).weights_sha256


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


@pytest.mark.slow
@pytest.mark.horovod
def test_killed_after_first_epoch_resumes_to_the_same_weights(store: Path, reference: Path, tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    status, output = _launch(store, job_dir, follow=False)
    assert status == 0, output[-3000:]
    controller = _job_id(output)
    _wait_for(lambda: (job_dir / "epoch_01" / checkpoints.INFO_FILE).is_file(), 300, "epoch 1", 0.02)
    for worker in _children(controller):
        os.kill(worker, signal.SIGKILL)  # no chance to checkpoint: the hard way a node dies
    # The checkpoint is the truth: run.json may not have caught up with it when the workers died.
    assert read_record(job_dir).status == "running"
    status, output = _launch(store, job_dir)
    assert status == 0, output[-4000:]
    info = read_record(job_dir)
    assert info.status == "done" and info.epochs_done == 2 and len(info.attempts) == 2
    assert Path(info.attempts[1]["resumed_from"]).name in ("epoch_01", "epoch_02")
    assert info.weights_sha256 == read_record(reference).weights_sha256
    assert len((job_dir / "history.csv").read_text().splitlines()) == 3


@pytest.mark.slow
@pytest.mark.horovod
def test_truncated_last_checkpoint_falls_back_to_the_intact_one(store: Path, reference: Path,
                                                                 tmp_path: Path) -> None:
    # The reference run killed after writing epoch_02 but before marking itself done, then epoch_02's state
    # file truncated to half (a full quota or a failing disk): the resume says so in one line, falls back to
    # epoch_01, records it, and ends with the uninterrupted run's weights.
    job_dir = tmp_path / "job"
    shutil.copytree(reference, job_dir, ignore=shutil.ignore_patterns("logs", "launch-*"))
    write_record(job_dir, replace(read_record(job_dir), status="running"))
    state = next((job_dir / "epoch_02" / "state").glob("ckpt.data-*"))
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    status, output = _launch(store, job_dir)
    assert status == 0, output[-4000:]
    log = next((job_dir / "logs").glob("*_0_log.out")).read_text()
    warnings = [line for line in log.splitlines() if "damaged checkpoint" in line]
    assert len(warnings) == 1 and "epoch_02 (state/ckpt.data-" in warnings[0]
    assert warnings[0].endswith("resuming from epoch_01 instead")
    info = read_record(job_dir)
    assert info.status == "done" and info.epochs_done == 2
    attempt = info.attempts[-1]
    assert Path(attempt["resumed_from"]).name == "epoch_01"
    assert [Path(d["checkpoint"]).name for d in attempt["damaged_checkpoints"]] == ["epoch_02"]
    assert checkpoints.verify(job_dir / "epoch_02") is None  # rewritten intact
    assert info.weights_sha256 == read_record(reference).weights_sha256
    assert not [p for p in job_dir.iterdir() if p.name.startswith(".") and p.name != ".run.lock"]


@pytest.mark.slow
@pytest.mark.horovod
def test_no_intact_checkpoint_stops_with_one_line(store: Path, reference: Path, tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    shutil.copytree(reference, job_dir, ignore=shutil.ignore_patterns("logs", "launch-*"))
    write_record(job_dir, replace(read_record(job_dir), status="running"))
    for epoch in ("epoch_01", "epoch_02"):
        next((job_dir / epoch / "state").glob("ckpt.data-*")).write_bytes(b"")
    proc = subprocess.run([sys.executable, "-m", "ecg_hpc.train.pretrain", "--store", str(store), "--job-dir",
                           str(job_dir), *TINY], capture_output=True, text=True, timeout=300, env=ENV, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no intact checkpoint" in errors[0] and "Traceback" not in proc.stderr
    assert "epoch_02: state/ckpt.data-" in errors[0] and "epoch_01: state/ckpt.data-" in errors[0]
    info = read_record(job_dir)
    assert info.status == "failed" and "no intact checkpoint" in info.error
    assert (job_dir / "epoch_01").is_dir() and (job_dir / "epoch_02").is_dir()


# -- through the real test SLURM ------------------------------------------------------------------------------------
def _launch_slurm(store: Path, job_dir: Path, partition: str, follow: bool) -> tuple[int, str]:
    cmd = [sys.executable, str(LAUNCH), "--nodes", "1", "--tasks", "2", "--cpus-per-task", "1", "--partition",
           partition, "--time", "20", "--store", str(store), "--job-dir", str(job_dir), *TINY]
    out = job_dir.parent / f"launch-{time.monotonic_ns()}.out"
    with out.open("w") as fh:
        status = subprocess.run(cmd + (["--follow"] if follow else []), stdout=fh, stderr=subprocess.STDOUT,
                                timeout=900, env=ENV, cwd=ROOT).returncode
    return status, out.read_text()


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.horovod
def test_slurm_job_of_two_workers(slurm_cluster, store: Path, reference: Path, tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    status, output = _launch_slurm(store, job_dir, slurm_cluster.partition, follow=True)
    assert status == 0, output[-4000:]
    assert "submitted slurm job" in output
    info = read_record(job_dir)
    assert info.status == "done" and info.world_size == 2 and info.epochs_done == 2
    attempt = info.attempts[0]
    assert attempt["launcher"] == "slurm" and attempt["job_id"] and attempt["world_size"] == 2
    assert info.environment["slurm"]["SLURM_JOB_ID"] == attempt["job_id"]
    assert info.weights_identical_across_ranks is True
    # Same seed, same deterministic CPU kernels: srun-launched workers end where the local ones did.
    assert info.weights_sha256 == read_record(reference).weights_sha256


def _sacct_state(job_id: str) -> str:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "State"], capture_output=True, text=True)
    return out.stdout.strip().split("\n")[-1] if out.stdout.strip() else ""


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.horovod
def test_sbatch_script_checkpoints_on_usr1_and_requeues(slurm_cluster, store: Path, reference: Path,
                                                        tmp_path: Path) -> None:
    job_dir, log = tmp_path / "job", tmp_path / "slurm-%j.out"
    env = dict(ENV, STORE=str(store), TASK="beat", FRAME_SIZE="256", BATCH_SIZE="8", EPOCHS="2",
               STEPS_PER_EPOCH="30", SEED="3", JOB_DIR=str(job_dir), PYTHON=sys.executable,
               EXTRA_ARGS="--width 0.125 --deterministic")
    proc = subprocess.run(["sbatch", "--parsable", f"--partition={slurm_cluster.partition}", "--ntasks-per-node=2",
                           "--gpus-per-node=0", "--cpus-per-task=1", "--time=20", f"--output={log}",
                           str(ROOT / "slurm" / "pretrain.sbatch")],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip().split(";")[0]
    out = Path(str(log).replace("%j", job_id))
    _wait_for(lambda: out.is_file() and "training epochs" in out.read_text(), 900, "training to start", 0.2)
    # What SLURM sends 300 s before the time limit (--signal=USR1@300), to every task of the step.
    subprocess.run(["scancel", "--signal=USR1", job_id], check=True, timeout=60)
    _wait_for(lambda: _sacct_state(job_id) in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), 600,
              "the requeued job to end", 1.0)
    text = out.read_text()
    assert _sacct_state(job_id) == "COMPLETED", text[-4000:]
    assert "received SIGUSR1" in text and "preempted: requeueing job" in text
    info = read_record(job_dir)
    assert info.status == "done" and info.world_size == 2 and len(info.attempts) == 2
    assert [a["restart_count"] for a in info.attempts] == [0, 1]
    assert info.attempts[1]["resumed_from"].endswith(checkpoints.PREEMPTED_DIR)
    assert info.weights_sha256 == read_record(reference).weights_sha256
