"""CPU threads from the job's CPUs: SLURM's per-task count, else the affinity share; recorded in run.json."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ecg_hpc.records import read_record
from ecg_hpc.train.threads import onednn_enabled, worker_cpus
from tests.test_finetune import TINY, make_prepared

ROOT = Path(__file__).resolve().parent.parent


def test_slurm_cpus_per_task_is_one_worker_s_share():
    assert worker_cpus(1, {"SLURM_CPUS_PER_TASK": "6"}) == (6, "SLURM_CPUS_PER_TASK")
    assert worker_cpus(4, {"SLURM_CPUS_PER_TASK": "6"}) == (6, "SLURM_CPUS_PER_TASK")  # per task already


def test_without_slurm_the_affinity_mask_is_shared_by_the_local_workers():
    visible = len(os.sched_getaffinity(0))
    assert worker_cpus(1, {}) == (visible, "affinity")
    assert worker_cpus(2, {"SLURM_CPUS_PER_TASK": ""}) == (max(1, visible // 2), "affinity")
    assert worker_cpus(visible * 4, {}) == (1, "affinity")


def test_onednn_is_on_unless_switched_off():
    assert onednn_enabled({"TF_ENABLE_ONEDNN_OPTS": "0"}) is False
    assert onednn_enabled({"TF_ENABLE_ONEDNN_OPTS": "false"}) is False
    assert onednn_enabled({"TF_ENABLE_ONEDNN_OPTS": "1"}) is True


def test_a_finetuning_job_sizes_tensorflow_to_its_cpus_and_records_it(tmp_path):
    data = make_prepared(tmp_path, records=32)
    job = tmp_path / "job"
    probe = ("import sys, tensorflow as tf; from ecg_hpc.train import finetune; code = finetune.main(sys.argv[1:]); "
             "print('threads', tf.config.threading.get_intra_op_parallelism_threads(), "
             "tf.config.threading.get_inter_op_parallelism_threads()); sys.exit(code)")
    env = {**os.environ, "SLURM_CPUS_PER_TASK": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", probe, "--data", str(data), "--job-dir", str(job), *TINY],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "threads 1 1" in proc.stdout  # TensorFlow's pools as the run left them
    info = read_record(job)
    threads = info.threads
    assert info.jit_compile is False
    assert threads == {"cpus": 1, "cpus_from": "SLURM_CPUS_PER_TASK", "local_workers": 1, "applied": True,
                       "intra_op_threads": 1, "inter_op_threads": 1, "onednn": onednn_enabled()}
