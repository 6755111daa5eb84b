"""Executors: cluster options, resource plan, the batch script of a dry run, ModuleJob's exit statuses."""

from __future__ import annotations

import argparse
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ecg_hpc.errors import ConfigError
from ecg_hpc.hpc import executor
from ecg_hpc.hpc.partition import Partition, controller_addresses
from ecg_hpc.train import pretrain
from ecg_hpc.train.environments import PREEMPTED_EXIT_CODE

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
    gpu_cluster = Partition(name="gpu", nodes=8, cpus_per_node=64, gpus_per_node=4, mem_mb_per_node=512_000,
                            max_nodes_per_job=None)
    ex = executor.make_executor(args, tmp_path / "logs", job_name="pretrain-x", partition=gpu_cluster)
    assert ex.cluster == "slurm"
    script = executor.describe_dry_run(ex, executor.ModuleJob("ecg_hpc.train.pretrain", ["--frac", "0.1"]))
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=200GB", "#SBATCH --partition=gpu",
                 "#SBATCH --account=proj42", "#SBATCH --time=120", "#SBATCH --requeue",
                 "#SBATCH --signal=USR2@300", "#SBATCH --job-name=pretrain-x"):
        assert line in script, line
    assert f"apptainer exec --nv {image} python3 -u -m submitit.core._submit" in script
    assert "srun" in script and "python -m ecg_hpc.train.pretrain --frac 0.1" in script


def test_module_job_statuses(capsys: pytest.CaptureFixture) -> None:
    assert executor.ModuleJob("tests.test_executor", ["0"])() == 0
    with pytest.raises(SystemExit) as exited:
        executor.ModuleJob("tests.test_executor", [str(PREEMPTED_EXIT_CODE)])()
    assert exited.value.code == PREEMPTED_EXIT_CODE
    # the launcher, not the trainer, decides about the requeue: outside SLURM and submitit the user restarts
    assert "preempted: not requeued: start the same command again" in capsys.readouterr().out
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
    # the command shown is the checked config the workers receive, complete: parsed again it is the same config
    shown = next(line for line in proc.stdout.splitlines() if "python -m ecg_hpc.train.pretrain " in line)
    argv = shlex.split(shown.split("python -m ecg_hpc.train.pretrain ", 1)[1])
    config = pretrain.config_from_args(pretrain.build_parser().parse_args(argv))
    assert (config.store, config.job_dir, config.task, config.epochs) == (str(store), str(job_dir), "beat", 3)
    assert "worker process(es)" in proc.stdout
    assert not (job_dir / "run.json").exists() and not list((job_dir / "logs").glob("*.pkl"))


# ----------------------------------------------------------------- the request checked against the partition
CPU_NODE = Partition(name="debug", nodes=1, cpus_per_node=2, gpus_per_node=0, mem_mb_per_node=1800,
                     max_nodes_per_job=None)


def test_partition_from_sinfo_lines() -> None:
    out = "debug*|1|2|1800|(null)|1-infinite\ngpu|4|64|512000|gpu:a100:4(S:0-1)|1-2\ngpu|2|32|256000|gpu:2|1-2\n"
    assert Partition.parse(out, None) == CPU_NODE
    gpu = Partition.parse(out, "gpu")
    assert (gpu.nodes, gpu.cpus_per_node, gpu.gpus_per_node, gpu.max_nodes_per_job) == (6, 32, 2, 2)
    with pytest.raises(ConfigError, match="--partition big: no such partition .*debug, gpu"):
        Partition.parse(out, "big")


def test_requests_that_can_never_run_are_refused_in_one_line() -> None:
    assert CPU_NODE.refusal(1, 1, 0, 2, None) is None
    assert CPU_NODE.refusal(2, 1, 0, 1, None) == "--nodes 2: partition debug has 1 node"
    assert "--gpus-per-node 1: partition debug has 0 GPUs per node" in CPU_NODE.refusal(1, 1, 1, 1, None)
    assert CPU_NODE.refusal(1, 1, 0, 4, None) == "--tasks 1 x --cpus-per-task 4 = 4 CPUs per node: partition " \
                                                 "debug has 2"
    assert CPU_NODE.refusal(1, 1, 0, 1, 64.0).startswith("--mem 64G")


@pytest.mark.skipif(not executor.slurm_available(), reason="needs sbatch and srun on PATH")
def test_slurm_defaults_follow_the_partition(capsys: pytest.CaptureFixture[str]) -> None:
    plan = executor.resolve_plan(_args(), partition=CPU_NODE)
    assert (plan.gpus_per_node, plan.tasks_per_node, plan.cpus_per_task) == (0, 1, 2)
    gpu_node = Partition(name="gpu", nodes=2, cpus_per_node=64, gpus_per_node=4, mem_mb_per_node=512_000,
                         max_nodes_per_job=None)
    plan = executor.resolve_plan(_args("--nodes", "2"), partition=gpu_node)
    assert (plan.gpus_per_node, plan.tasks_per_node, plan.cpus_per_task, plan.world_size) == (4, 4, 16, 8)
    array = executor.resolve_plan(_args(), tasks_per_node=1, array_task=True, partition=gpu_node)
    assert (array.gpus_per_node, array.tasks_per_node, array.cpus_per_task) == (1, 1, 16)
    with pytest.raises(ConfigError, match="^--nodes 2: partition debug has 1 node: such a job would pend forever"):
        executor.resolve_plan(_args("--nodes", "2"), partition=CPU_NODE)
    plan = executor.resolve_plan(_args("--nodes", "2", "--dry-run"), partition=CPU_NODE)  # shown, with a warning
    assert plan.nodes == 2
    assert capsys.readouterr().err == ("warning: --nodes 2: partition debug has 1 node: this cluster could never run "
                                       "the job shown; it was not submitted\n")


def test_a_dead_controller_is_noticed_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a loopback port nobody listens on once this socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    conf = tmp_path / "slurm.conf"
    conf.write_text(f"ClusterName=x\nSlurmctldHost=head(127.0.0.1)\nSlurmctldPort={port}\n")
    monkeypatch.setenv("SLURM_CONF", str(conf))
    assert controller_addresses(conf) == [("127.0.0.1", port)]
    start = time.monotonic()
    with pytest.raises(ConfigError, match=f"controller \\(127.0.0.1:{port}, from {conf}\\) does not answer"):
        Partition.query(None)
    assert time.monotonic() - start < 3.0


@pytest.mark.slurm
def test_a_refused_submission_leaves_nothing_on_disk(slurm_cluster, tmp_path: Path, capfd) -> None:
    # A partition description that lets --mem through our own check, so that sbatch itself refuses it.
    roomy = Partition(name=slurm_cluster.partition, nodes=1, cpus_per_node=2, gpus_per_node=0,
                      mem_mb_per_node=1 << 40, max_nodes_per_job=None)
    ex = executor.make_executor(_args("--mem", "100000G", "--partition", slurm_cluster.partition),
                                tmp_path / "job" / "logs", job_name="refused", partition=roomy)
    with pytest.raises(ConfigError, match=r"^sbatch refused the job \(Memory specification can not be satisfied; "
                                          r"Batch job submission failed: .*\); nothing was submitted$"):
        executor.submit_jobs(ex, [executor.ModuleJob("tests.test_executor", ["0"])])
    assert not (tmp_path / "job").exists()
    assert capfd.readouterr().err == ""  # the message above is all a user sees
