"""Bad numbers and names are refused when parsed, in one line, and a diverging loss fails the run.

The refusals go through the real CLIs (trainers, launchers, ``sweep plan``) as a user types them; the NaN guard
runs a real fine-tuning whose loss overflows to inf/NaN and checks that the run ends "failed", not "done" with a
macro F1 of 0 that would enter the tables.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ecg_hpc.records import read_record
from ecg_hpc.train import finetune

from tests.test_finetune import TINY, make_prepared, visible_files

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


def _cli(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=ENV)


def _one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, (proc.stdout + proc.stderr)[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and all(n in lines[0] for n in needles), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_prepared(tmp_path_factory.mktemp("options"))


@pytest.mark.parametrize("option,value,needle", [("--lr", "nan", "--lr nan: must be a finite number"),
                                                 ("--lr", "inf", "--lr inf: must be a finite number"),
                                                 ("--seed", "-5", "--seed -5: seeds must lie in 0..4294967295"),
                                                 ("--seed", "4294967296", "--seed 4294967296"),
                                                 ("--warmup-epochs", "inf", "--warmup-epochs inf"),
                                                 ("--width", "nan", "--width nan"),
                                                 ("--steps-per-epoch", "1000000000000", "must be at most")])
def test_pretraining_launcher_refuses_bad_numbers(tmp_path: Path, option: str, value: str, needle: str) -> None:
    (tmp_path / "store" / "patients").mkdir(parents=True)
    job = tmp_path / "job"
    proc = _cli("launch/pretrain.py", "--local", "--dry-run", "--store", str(tmp_path / "store"), "--job-dir",
                str(job), option, value)
    _one_error_line(proc, needle)
    assert not job.exists()


@pytest.mark.parametrize("option", ["--name", "--account", "--partition"])
def test_launchers_refuse_control_characters(tmp_path: Path, option: str) -> None:
    (tmp_path / "store" / "patients").mkdir(parents=True)
    proc = _cli("launch/pretrain.py", "--local", "--dry-run", "--store", str(tmp_path / "store"),
                option, "a\n#SBATCH --x")
    _one_error_line(proc, option, "control characters")
    assert not (ROOT / "runs" / "pretrain" / "a\n#SBATCH --x").exists()


def test_finetune_launcher_refuses_a_newline_before_planning(data: Path, tmp_path: Path) -> None:
    proc = _cli("launch/finetune.py", "--local", "--data", str(data), "--sweep-dir",
                str(tmp_path / "sweep"), "--partition", "gpu\nrm -rf /")
    _one_error_line(proc, "--partition", "control characters")
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("option,value,needle", [("--learning-rate", "nan", "--learning-rate nan"),
                                                 ("--seed", "-5", "--seed -5"),
                                                 ("--val-size", "nan", "--val-size nan")])
def test_finetune_trainer_refuses_bad_numbers(data: Path, tmp_path: Path, option: str, value: str,
                                              needle: str) -> None:
    job = tmp_path / "job"
    _one_error_line(_cli("-m", "ecg_hpc.train.finetune", "--data", str(data), "--job-dir", str(job), option, value),
                    needle)
    assert not job.exists()


@pytest.mark.parametrize("extra,needle", [(["--learning-rate", "nan"], "--learning-rate nan"),
                                          (["--seeds=-5,10"], "--seeds -5"),
                                          (["--seeds", "1-2000000"], "2000000 seeds, at most 1000")])
def test_sweep_plan_refuses_quickly(data: Path, tmp_path: Path, extra: list[str], needle: str) -> None:
    began = time.monotonic()
    proc = _cli("-m", "ecg_hpc.hpc.sweep", "plan", "--data", str(data), "--sweep-dir", str(tmp_path / "sweep"),
                *extra)
    assert time.monotonic() - began < 60
    if proc.stderr.startswith("usage"):  # --seeds is checked by argparse's type: its one error line
        assert proc.returncode == 2 and needle in proc.stderr.splitlines()[-1], proc.stderr
        assert "Traceback" not in proc.stderr
    else:
        _one_error_line(proc, needle)
    assert not (tmp_path / "sweep").exists()


def test_a_diverging_loss_fails_the_finetuning_run(data: Path, tmp_path: Path, capsys) -> None:
    job = tmp_path / "job"
    assert finetune.main(["--data", str(data), "--job-dir", str(job), "--learning-rate", "1e38", *TINY]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "training stopped (lower the learning rate" in err[0], err
    assert "loss nan" in err[0] or "loss inf" in err[0]
    info = read_record(job)
    assert info.status == "failed" and "training stopped" in info.error and info.test is None
    assert finetune.BEST_WEIGHTS not in visible_files(job)


@pytest.mark.horovod
def test_a_diverging_loss_fails_the_pretraining_run(tmp_path: Path) -> None:
    for cmd in (["synth-icentia", "--dst", str(tmp_path / "release"), "--patients", "2", "--segments", "2",
                 "--segment-size", "20000", "--seed", "1"],
                ["convert-icentia", "--src", str(tmp_path / "release"), "--dst", str(tmp_path / "store"), "--quiet"]):
        assert _cli("-m", "ecg_hpc.data", *cmd, timeout=300).returncode == 0
    job = tmp_path / "job"
    proc = _cli("-m", "ecg_hpc.train.pretrain", "--store", str(tmp_path / "store"), "--job-dir", str(job),
                "--task", "beat", "--width", "0.125", "--frame-size", "256", "--batch-size", "8", "--epochs", "2",
                "--steps-per-epoch", "5", "--lr", "1e38", "--warmup-epochs", "0", timeout=600)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]  # besides progress lines
    assert len(errors) == 1 and "epoch 1 step " in errors[0], proc.stderr[-2000:]
    assert "training stopped, the last checkpoint is kept" in errors[0]
    assert "loss nan" in errors[0] or "loss inf" in errors[0]
    info = read_record(job)
    assert info.status == "failed" and "training stopped" in info.error and info.epochs_done == 0
    assert not list(job.glob("epoch_*")) and not (job / "preempted").exists()  # no NaN checkpoint


def test_slurm_durations_parse_as_squeue_prints_them() -> None:
    from ecg_hpc.train.environments import parse_slurm_duration

    assert parse_slurm_duration("1-02:03:04") == 93784 and parse_slurm_duration("2:00:00") == 7200
    assert parse_slurm_duration("12:34") == 754 and parse_slurm_duration("UNLIMITED") is None
