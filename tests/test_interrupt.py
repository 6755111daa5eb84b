"""Ctrl-C (SIGINT to the command's process group, as a terminal sends it) on a local pretraining, a local sweep and
the demo: exit status 130, one line on stderr, no traceback, nothing half-written; running again resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from tests.test_finetune import make_checkpoint, make_prepared

pytestmark = [pytest.mark.slow, pytest.mark.horovod, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parent.parent
TINY_PRETRAIN = ["--task", "beat", "--width", "0.125", "--frame-size", "256", "--batch-size", "8", "--epochs", "2",
                 "--steps-per-epoch", "200", "--seed", "3"]
TINY_SWEEP = ["--width", "0.125", "--epochs", "3", "--batch-size", "16", "--val-size", "0.25", "--seeds", "1,2"]


def _env(tmp_path: Path) -> dict[str, str]:
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1",
                ECG_HPC_CONFIG=str(tmp_path / "ecg-hpc.toml"))


def _run_and_interrupt(cmd: list[str], tmp_path: Path, name: str, ready: Callable[[str], bool],
                       timeout_s: float = 600) -> tuple[int, str, str]:
    """Start ``cmd`` in its own session, send SIGINT to its process group once ``ready(stdout so far)``; return
    the exit status, stdout and stderr (through files: local workers inherit the launcher's output)."""
    out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
    with out.open("w") as fo, err.open("w") as fe:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(tmp_path), stdout=fo, stderr=fe, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while not ready(out.read_text()):
            assert proc.poll() is None, f"ended before the interrupt:\n{out.read_text()[-3000:]}{err.read_text()}"
            assert time.monotonic() < deadline, "never got ready to be interrupted"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        status = proc.wait(timeout=timeout_s)
    return status, out.read_text(), err.read_text()


def _assert_one_line(status: int, out: str, err: str, starts: str) -> str:
    assert status == 130, out[-3000:] + err[-3000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(starts), err
    assert "Traceback" not in out + err
    return lines[0]


def _no_temporary_files(folder: Path) -> None:
    assert not [p for p in folder.rglob(".*.tmp")], "a half-written file was left behind"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("interrupt_store")
    for cmd in (["synth-icentia", "--dst", str(base / "release"), "--patients", "4", "--segments", "2",
                 "--segment-size", "20000", "--seed", "1"],
                ["convert-icentia", "--src", str(base / "release"), "--dst", str(base / "store"), "--quiet"]):
        proc = subprocess.run([sys.executable, "-m", "ecg_hpc.data", *cmd], capture_output=True, text=True,
                              timeout=300, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-2000:]
    return base / "store"


def test_ctrl_c_on_a_local_pretraining_checkpoints_and_resumes(store: Path, tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    cmd = [sys.executable, "launch/pretrain.py", "--local", "--tasks", "2", "--time", "30", "--store", str(store),
           "--job-dir", str(job_dir), *TINY_PRETRAIN, "--follow"]
    status, out, err = _run_and_interrupt(cmd, tmp_path, "pretrain", lambda text: "epoch 1/2:" in text)
    line = _assert_one_line(status, out, err, "interrupted: the local pretraining stopped; checkpoints kept in")
    assert "run the same command again to resume" in line
    info = json.loads((job_dir / "run.json").read_text())
    assert info["status"] == "running" and info["attempts"][-1].get("preempted_at")  # checkpointed, not failed
    assert any(p.name.startswith(("epoch_", "preempted")) for p in job_dir.iterdir())
    _no_temporary_files(job_dir)
    again = subprocess.run(cmd, cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resuming" in again.stdout
    assert json.loads((job_dir / "run.json").read_text())["status"] == "done"


def test_ctrl_c_on_a_local_sweep_keeps_finished_tasks_and_resumes(tmp_path: Path) -> None:
    data = make_prepared(tmp_path)
    pretrain = tmp_path / "pretrain" / "beat_tiny"
    make_checkpoint(pretrain)
    sweep_dir = tmp_path / "sweep"
    cmd = [sys.executable, "launch/finetune.py", "--local", "--data", str(data), "--pretrain", str(pretrain),
           "--sweep-dir", str(sweep_dir), *TINY_SWEEP, "--follow"]

    def second_task_running(_: str) -> bool:
        return (sweep_dir / "random" / "seed_2" / "run.json").is_file()

    status, out, err = _run_and_interrupt(cmd, tmp_path, "sweep", second_task_running)
    line = _assert_one_line(status, out, err, "interrupted: the local sweep stopped (4 tasks: 1 done, 1 failed")
    assert "run the same command again" in line
    assert json.loads((sweep_dir / "random" / "seed_2" / "run.json").read_text())["status"] == "failed"
    _no_temporary_files(sweep_dir)
    again = subprocess.run(cmd, cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "submitted 3 task(s)" in again.stdout  # the finished task is not run again
    assert "sweep: 3/3 done, 0 running, 0 failed, 0 waiting" in again.stdout  # progress of what was submitted
    assert again.stdout.rstrip().endswith("4 tasks: 4 done")


@pytest.mark.e2e
def test_ctrl_c_on_the_demo_and_running_it_again_resumes(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    cmd = [sys.executable, str(ROOT / "launch" / "demo.py"), "--scale", "tiny", "--local", "--workdir", str(work)]
    status, out, err = _run_and_interrupt(cmd, tmp_path, "demo", lambda text: "=== [3] pretrain" in text)
    line = _assert_one_line(status, out, err, "interrupted: the demo stopped during stage [3] pretrain")
    assert f"finished stages are kept in {work}" in line
    _no_temporary_files(work)
    status, out, err = _run_and_interrupt(cmd, tmp_path, "demo-again", lambda text: "=== [3] pretrain" in text)
    assert out.count("already done, skipped") >= 1  # stage 1 is not redone
    _assert_one_line(status, out, err, "interrupted: the demo stopped during stage [3]")
