"""The headline command of the README, ``python launch/pretrain.py --nodes 2 --frac 0.1``, as a user types it."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _launch(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "launch/pretrain.py", *args], cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.mark.slurm
def test_headline_command_takes_the_store_from_the_environment(slurm_cluster, tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    env = dict(os.environ, ECG_HPC_STORE=str(store))
    proc = _launch("--nodes", "2", "--frac", "0.1", "--dry-run", "--job-dir", str(tmp_path / "run"), env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "#SBATCH --nodes=2" in proc.stdout
    command = next(line for line in proc.stdout.splitlines() if "python -m ecg_hpc.train.pretrain" in line)
    assert "--frac 0.1" in command and f"--store {store}" in command
    assert not (tmp_path / "run" / "run.json").exists()  # a dry run submits and writes nothing


def test_headline_command_without_a_store_says_what_is_missing(tmp_path: Path) -> None:
    """A dry run without any store still shows the job, and says in one line where a store comes from."""
    env = {k: v for k, v in os.environ.items() if k != "ECG_HPC_STORE"}
    env["ECG_HPC_CONFIG"] = str(tmp_path / "no-such-ecg-hpc.toml")  # no project config names a store either
    proc = _launch("--local", "--frac", "0.1", "--dry-run", "--job-dir", str(tmp_path / "run"), env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    notes = [line for line in proc.stderr.splitlines() if line.startswith("note: no shard store given")]
    assert len(notes) == 1 and "--store" in notes[0] and "$ECG_HPC_STORE" in notes[0]
    assert "Traceback" not in proc.stderr
    assert "--frac 0.1" in proc.stdout and not (tmp_path / "run" / "run.json").exists()


@pytest.mark.parametrize("script", ["pretrain.py", "finetune.py", "demo.py"])
def test_launcher_help_imports_no_tensorflow(script: str) -> None:
    probe = ("import runpy, sys; sys.argv = [sys.argv[1], '--help']\n"
             "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
             "except SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
             "heavy = sorted(m for m in ('tensorflow', 'horovod', 'submitit', 'pandas') if m in sys.modules)\n"
             "print('heavy modules:', heavy, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", probe, str(ROOT / "launch" / script)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout and "heavy modules: []" in proc.stderr


def test_console_scripts_name_the_cli_functions() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert {"ecg-hpc-pretrain", "ecg-hpc-finetune", "ecg-hpc-demo", "ecg-hpc-report"} <= set(scripts)
    for name, target in scripts.items():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), name
