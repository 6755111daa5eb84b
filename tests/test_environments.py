"""Cluster environments: ranks and hosts from SLURM / submitit / horovodrun variables, the Horovod rendezvous,
and requeueing a preempted job."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ecg_hpc.errors import ConfigError
from ecg_hpc.hpc import requeue
from ecg_hpc.train import environments, rendezvous


def test_parse_tasks_per_node() -> None:
    assert environments.parse_tasks_per_node("4") == [4]
    assert environments.parse_tasks_per_node("2(x3),1") == [2, 2, 2, 1]
    assert environments.parse_tasks_per_node("8(x2)") == [8, 8]


def test_single_process_when_nothing_started_us() -> None:
    job = environments.detect({})
    assert (job.launcher, job.rank, job.size, job.local_size) == ("single", 0, 1, 1)
    assert rendezvous.start_horovod_rendezvous(job, environ={}) is None


def test_batch_shell_without_srun_is_a_single_process() -> None:
    # The batch script itself has SLURM_NTASKS of the allocation but is no task of a step.
    job = environments.detect({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4", "SLURM_PROCID": "0",
                         "SLURM_JOB_NODELIST": "gpu[01-02]"})
    assert (job.launcher, job.size, job.job_id) == ("single", 1, "7")


def _slurm_env(procid: int, nodeid: int, localid: int, **extra: str) -> dict[str, str]:
    env = {"SLURM_JOB_ID": "4711", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "4",
           "SLURM_STEP_NODELIST": "gpu[07-08]", "SLURM_STEP_TASKS_PER_NODE": "2(x2)",
           "SLURM_PROCID": str(procid), "SLURM_NODEID": str(nodeid), "SLURM_LOCALID": str(localid)}
    env.update(extra)
    return env


def test_slurm_two_nodes_two_tasks_each() -> None:
    jobs = [environments.detect(_slurm_env(r, r // 2, r % 2)) for r in range(4)]
    assert [j.launcher for j in jobs] == ["slurm"] * 4
    assert [j.rank for j in jobs] == [0, 1, 2, 3]
    assert [(j.local_rank, j.local_size) for j in jobs] == [(0, 2), (1, 2), (0, 2), (1, 2)]
    assert [(j.cross_rank, j.cross_size) for j in jobs] == [(0, 2), (0, 2), (1, 2), (1, 2)]
    assert [j.hostname for j in jobs] == ["gpu07", "gpu07", "gpu08", "gpu08"]
    assert jobs[0].hosts == ("gpu07", "gpu08") and jobs[0].slots == (2, 2)
    assert rendezvous.rendezvous_address(jobs[3]) == "gpu07"
    env = rendezvous.horovod_environment(jobs[3], "gpu07", 23456)
    assert env["HOROVOD_RANK"] == "3" and env["HOROVOD_SIZE"] == "4" and env["HOROVOD_CROSS_RANK"] == "1"
    assert env["HOROVOD_GLOO_RENDEZVOUS_ADDR"] == "gpu07" and env["HOROVOD_GLOO_RENDEZVOUS_PORT"] == "23456"
    assert env["HOROVOD_CONTROLLER"] == "gloo" and "HOROVOD_GLOO_IFACE" not in env


def test_slurm_cyclic_placement_is_refused() -> None:
    # Rank 1 on the second node is what --distribution=cyclic does; Horovod's plan assumes block order.
    with pytest.raises(ConfigError, match="block"):
        environments.detect(_slurm_env(1, 1, 0))


def test_submitit_local_and_horovodrun() -> None:
    job = environments.detect({"SUBMITIT_EXECUTOR": "local", "SUBMITIT_LOCAL_GLOBALID": "1",
                         "SUBMITIT_LOCAL_NTASKS": "2", "SUBMITIT_LOCAL_JOB_ID": "999"})
    assert (job.launcher, job.rank, job.size, job.local_rank, job.job_id) == ("submitit-local", 1, 2, 1, "999")
    assert rendezvous.rendezvous_address(job) == rendezvous.LOCALHOST
    assert rendezvous.horovod_environment(job, rendezvous.LOCALHOST, 1)["HOROVOD_GLOO_IFACE"] == "lo"
    hvd = environments.detect({"HOROVOD_GLOO_RENDEZVOUS_ADDR": "h", "HOROVOD_RANK": "1", "HOROVOD_SIZE": "2",
                         "HOROVOD_LOCAL_RANK": "1", "HOROVOD_LOCAL_SIZE": "2", "SLURM_PROCID": "0"})
    assert (hvd.launcher, hvd.rank, hvd.size) == ("horovodrun", 1, 2)
    assert rendezvous.start_horovod_rendezvous(hvd, environ={}) is None


def test_rendezvous_port_is_derived_from_job_and_restart() -> None:
    env = _slurm_env(0, 0, 0)
    first = rendezvous.rendezvous_port(environments.detect(env), environ={})
    again = rendezvous.rendezvous_port(environments.detect(env), environ={})
    requeued = rendezvous.rendezvous_port(environments.detect(dict(env, SLURM_RESTART_COUNT="1")), environ={})
    assert first == again and first != requeued
    assert 20000 <= first < 50000 and 20000 <= requeued < 50000
    assert rendezvous.rendezvous_port(environments.detect(env), environ={rendezvous.PORT_ENV: "31313"}) == 31313


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((rendezvous.LOCALHOST, 0))
        return sock.getsockname()[1]


def test_rank0_serves_the_rendezvous_and_others_wait_for_it() -> None:
    port = _free_port()
    local = {"SUBMITIT_EXECUTOR": "local", "SUBMITIT_LOCAL_NTASKS": "2", "SUBMITIT_LOCAL_JOB_ID": "5",
             rendezvous.PORT_ENV: str(port)}
    rank1 = environments.detect(dict(local, SUBMITIT_LOCAL_GLOBALID="1"))
    with pytest.raises(RuntimeError, match="no Horovod rendezvous"):
        rendezvous.start_horovod_rendezvous(rank1, environ=dict(local), timeout_s=0.5)
    env0: dict[str, str] = dict(local)
    rank0 = environments.detect(dict(local, SUBMITIT_LOCAL_GLOBALID="0"))
    server = rendezvous.start_horovod_rendezvous(rank0, environ=env0)
    assert server is not None
    try:
        assert env0["HOROVOD_RANK"] == "0" and env0["HOROVOD_GLOO_RENDEZVOUS_PORT"] == str(port)
        env1: dict[str, str] = dict(local)
        assert rendezvous.start_horovod_rendezvous(rank1, environ=env1, timeout_s=10) is None
        assert env1["HOROVOD_RANK"] == "1"
        # It is Horovod's key-value rendezvous: a PUT in a scope can be read back.
        url = f"http://{rendezvous.LOCALHOST}:{port}/global/probe"
        urllib.request.urlopen(urllib.request.Request(url, data=b"v", method="PUT"), timeout=5)
        assert urllib.request.urlopen(url, timeout=5).read() == b"v"
    finally:
        server.stop()


def test_requeue_outside_slurm_tells_the_user() -> None:
    assert "start the same command again" in requeue.request_requeue(environments.detect({}))
    local = environments.detect({"SUBMITIT_EXECUTOR": "local", "SUBMITIT_LOCAL_GLOBALID": "0",
                           "SUBMITIT_LOCAL_NTASKS": "2"})
    assert str(environments.PREEMPTED_EXIT_CODE) in requeue.request_requeue(local)
    assert requeue.request_requeue(environments.detect(_slurm_env(1, 0, 1))) == "rank 0 requeues"


def _submit_probe(partition: str, tmp_path: Path, probe: str) -> tuple[str, Path]:
    """sbatch a requeueable one-task job running Python ``probe`` through srun; return its id and log path."""
    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "probe-%j.out"
    proc = subprocess.run(["sbatch", "--parsable", f"--partition={partition}", "--requeue",
                           "--open-mode=append", f"--output={out}", "--time=5",
                           f"--wrap=srun -n 1 {sys.executable} -c \"{probe}\""],
                          capture_output=True, text=True, cwd=root, env=dict(os.environ, PYTHONPATH=str(root)),
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip().split(";")[0]
    return job_id, Path(str(out).replace("%j", job_id))


@pytest.mark.slurm
def test_rank0_requeues_a_running_slurm_job(slurm_cluster, tmp_path: Path) -> None:
    probe = ("from ecg_hpc.hpc import requeue; from ecg_hpc.train import environments; "
             "job = environments.detect(); "
             "print(f'{job.launcher} restart {job.restart_count} size {job.size}', flush=True); "
             "print(requeue.request_requeue(job) if job.restart_count == 0 else 'second run', flush=True)")
    _, log = _submit_probe(slurm_cluster.partition, tmp_path, probe)
    deadline = time.monotonic() + 600  # queue wait and the requeue delay
    while not (log.is_file() and "second run" in log.read_text()):
        assert time.monotonic() < deadline, log.read_text() if log.is_file() else "no output"
        time.sleep(1)
    text = log.read_text()
    # scontrol requeue ends the running job at once, so the first run may not live to report it.
    assert "slurm restart 0 size 1" in text and "slurm restart 1 size 1" in text


@pytest.mark.slurm
def test_a_cancelled_slurm_job_is_not_requeued(slurm_cluster, tmp_path: Path) -> None:
    probe = ("import signal, time; from ecg_hpc.hpc import requeue; from ecg_hpc.train import environments; "
             "job = environments.detect(); "
             "signal.signal(signal.SIGTERM, lambda *a: print(requeue.request_requeue(job), flush=True)); "
             "print('ready', flush=True); time.sleep(60)")
    job_id, log = _submit_probe(slurm_cluster.partition, tmp_path, probe)
    deadline = time.monotonic() + 600  # the job may wait in the queue
    while not (log.is_file() and "ready" in log.read_text()):
        assert time.monotonic() < deadline, "the probe did not start"
        time.sleep(0.5)
    subprocess.run(["scancel", job_id], check=True, timeout=60)
    while "not requeued" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.5)
    assert f"not requeued: SLURM job {job_id} is " in log.read_text()  # CANCELLED or COMPLETING
    time.sleep(3)
    state = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "State"], capture_output=True,
                           text=True).stdout.strip().splitlines()
    assert state and state[-1].startswith("CANCELLED")  # "CANCELLED by 0", and never requeued
