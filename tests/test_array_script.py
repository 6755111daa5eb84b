"""The sbatch line `sweep plan` prints: array range and throttle, manifest and logs, overrides for this partition."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from ecg_hpc.hpc.array_script import ARRAY_SCRIPT, REPO, header_options, resource_overrides, sbatch_line
from ecg_hpc.hpc.partition import Partition

CPU_NODE = Partition(name="debug", nodes=1, cpus_per_node=2, gpus_per_node=0, mem_mb_per_node=1800,
                     max_nodes_per_job=None)
GPU_NODE = Partition(name="gpu", nodes=4, cpus_per_node=64, gpus_per_node=4, mem_mb_per_node=512_000,
                     max_nodes_per_job=None)


def test_the_header_keeps_the_gpu_cluster_defaults() -> None:
    header = header_options()
    assert (header["gres"], header["cpus-per-task"], header["array"]) == ("gpu:1", "4", "0-19")
    assert header["output"] == "runs/finetune/slurm-%A_%a.out"


def test_overrides_only_what_the_partition_cannot_run() -> None:
    header = header_options()
    assert resource_overrides(GPU_NODE, header) == []
    assert resource_overrides(CPU_NODE, header) == ["--gres=none", "--cpus-per-task=2"]
    big_cpu = Partition("cpu", 10, 48, 0, 100_000, None)
    assert resource_overrides(big_cpu, header) == ["--gres=none"]


def test_default_sweep_from_the_repository_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")  # activated
    line = sbatch_line(REPO / "runs" / "finetune" / "manifest.jsonl", 20, None, GPU_NODE)
    assert line == "sbatch --array=0-19 slurm/finetune_array.sh"


@pytest.mark.skipif(not (REPO / ".venv" / "bin" / "python").exists(), reason="needs the project's .venv")
def test_other_sweep_folder_throttle_and_cpu_partition(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # not activated: the script still picks ./.venv
    manifest = tmp_path / "sweep" / "manifest.jsonl"
    line = sbatch_line(manifest, 6, 2, CPU_NODE)
    assert line == (f"ECG_HPC_MANIFEST={manifest} sbatch --array=0-5%2 --output={manifest.parent}/slurm-%A_%a.out "
                    "--gres=none --cpus-per-task=2 slurm/finetune_array.sh")
    monkeypatch.chdir(tmp_path)  # typed elsewhere (no .venv, python3 not this one): relative paths, the interpreter
    assert sbatch_line(manifest, 6, None, None) == (
        f"ECG_HPC_MANIFEST=sweep/manifest.jsonl ECG_HPC_PYTHON={sys.executable} sbatch --array=0-5 "
        f"--output=sweep/slurm-%A_%a.out {ARRAY_SCRIPT}")
