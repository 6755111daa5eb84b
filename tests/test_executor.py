"""Executors: cluster options, resource plan, the batch script of a dry run, ModuleJob's exit statuses."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from ecg_hpc.errors import ConfigError
from ecg_hpc.hpc import executor
from ecg_hpc.hpc.jobenv import REQUEUE_EXIT_CODE

ROOT = Path(__file__).resolve().parent.parent


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    executor.add_cluster_arguments(parser)
    return parser.parse_args(list(argv))


def main(argv: list[str]) -> int:
    """Entry point for ModuleJob tests: exits with the status given as the only argument."""
    return int(argv[0])


@pytest.mark.parametrize("text,minutes", [("90", 90), ("01:30", 2), ("02:00:00", 120), ("00:00:30", 1),
                                          ("1-00:00:00", 1440), ("2-06", 3240), ("0-00:10", 10)])
def test_parse_time_minutes(text: str, minutes: int) -> None:
    assert executor.parse_time_minutes(text) == minutes


@pytest.mark.parametrize("bad", ["", "1h", "0", "00:00:00", "-5"])
def test_parse_time_refuses(bad: str) -> None:
    with pytest.raises(ConfigError, match="--time"):
        executor.parse_time_minutes(bad)


def test_parse_mem_gb() -> None:
    assert executor.parse_mem_gb("64G") == 64.0
    assert executor.parse_mem_gb("64gb") == 64.0
    assert executor.parse_mem_gb("512M") == 0.5
    assert executor.parse_mem_gb("1T") == 1024.0
    with pytest.raises(ConfigError, match="--mem"):
        executor.parse_mem_gb("lots")


def test_slurm_workers_share_out_their_nodes_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(executor, "slurm_available", lambda: True)
    monkeypatch.setattr(executor, "slurm_cpus_per_node", lambda partition: 64)
    monkeypatch.setattr(executor, "slurm_gpus_per_node", lambda partition: 4)
    assert executor.resolve_plan(_args(), whole_nodes=True).cpus_per_task == 16  # 64 CPUs / 4 GPU workers
    assert executor.resolve_plan(_args("--tasks", "3"), whole_nodes=True).cpus_per_task == 21
    assert executor.resolve_plan(_args("--cpus-per-task", "5"), whole_nodes=True).cpus_per_task == 5
    assert executor.resolve_plan(_args(), tasks_per_node=1).cpus_per_task is None  # array tasks: cluster default
    monkeypatch.setattr(executor, "slurm_cpus_per_node", lambda partition: 0)  # sinfo could not tell
    assert executor.resolve_plan(_args(), whole_nodes=True).cpus_per_task is None


def test_local_plan_defaults_to_two_cpu_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    plan = executor.resolve_plan(_args("--local", "--time", "30"))
    assert (plan.cluster, plan.nodes, plan.gpus_per_node, plan.tasks_per_node) == ("local", 1, 0, 2)
    assert plan.world_size == 2 and plan.timeout_min == 30
    assert executor.resolve_plan(_args("--local"), tasks_per_node=1).tasks_per_node == 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    assert executor.resolve_plan(_args("--local")).tasks_per_node == 3


def test_plan_refusals(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--nodes"):
        executor.resolve_plan(_args("--local", "--nodes", "2"))
    with pytest.raises(ConfigError, match="--image"):
        executor.resolve_plan(_args("--local", "--image", str(tmp_path / "missing.sif")))
    with pytest.raises(ConfigError, match="--tasks"):
        executor.resolve_plan(_args("--local", "--tasks", "0"))


def test_local_dry_run_describes_the_workers(tmp_path: Path) -> None:
    ex = executor.make_executor(_args("--local", "--tasks", "2", "--time", "15"), tmp_path / "logs", job_name="t")
    text = executor.describe_dry_run(ex, executor.ModuleJob("ecg_hpc.train.pretrain", ["--task", "beat"]))
    assert "python -m ecg_hpc.train.pretrain --task beat" in text
    assert "2 worker process(es)" in text and "time limit 15 min" in text
    assert f"PYTHONPATH={ROOT}" in text and "submitit.core._submit" in text


@pytest.mark.skipif(not executor.slurm_available(), reason="needs sbatch and srun on PATH")
def test_slurm_batch_script(tmp_path: Path) -> None:
    image = tmp_path / "ecg.sif"
    image.write_bytes(b"not a real image; only its path goes into the script")
    args = _args("--nodes", "2", "--gpus-per-node", "4", "--cpus-per-task", "8", "--mem", "200G",
                 "--partition", "gpu", "--account", "proj42", "--time", "2:00:00", "--image", str(image))
    ex = executor.make_executor(args, tmp_path / "logs", job_name="pretrain-x")
    assert ex.cluster == "slurm"
    script = executor.describe_dry_run(ex, executor.ModuleJob("ecg_hpc.train.pretrain", ["--frac", "0.1"]))
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=200GB", "#SBATCH --partition=gpu",
                 "#SBATCH --account=proj42", "#SBATCH --time=120", "#SBATCH --requeue",
                 "#SBATCH --signal=USR2@300", "#SBATCH --job-name=pretrain-x"):
        assert line in script, line
    assert f"apptainer exec --nv {image} python3 -u -m submitit.core._submit" in script
    assert "srun" in script and "python -m ecg_hpc.train.pretrain --frac 0.1" in script


def test_module_job_statuses() -> None:
    assert executor.ModuleJob("tests.test_executor", ["0"])() == 0
    with pytest.raises(SystemExit) as exited:
        executor.ModuleJob("tests.test_executor", [str(REQUEUE_EXIT_CODE)])()
    assert exited.value.code == REQUEUE_EXIT_CODE
    with pytest.raises(RuntimeError, match="exited with status 3"):
        executor.ModuleJob("tests.test_executor", ["3"])()
    assert executor.ModuleJob("m", ["--a", "x y"]).command_line() == "python -m m --a 'x y'"


def test_launcher_dry_run_submits_nothing(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    job_dir = tmp_path / "job"
    proc = subprocess.run([sys.executable, str(ROOT / "launch" / "pretrain.py"), "--local", "--dry-run",
                           "--store", str(store), "--task", "beat", "--job-dir", str(job_dir), "--epochs", "3"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"python -m ecg_hpc.train.pretrain --store {store} --task beat --job-dir {job_dir} --epochs 3" \
        in proc.stdout
    assert "worker process(es)" in proc.stdout
    assert not (job_dir / "run.json").exists() and not list((job_dir / "logs").glob("*.pkl"))
