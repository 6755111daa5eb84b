"""Who this worker is in its job: one class per launcher that can start it, each recognising its own variables.

``detect`` asks each environment in turn (``horovodrun``, submitit's local executor, an ``srun`` step, else a
single process) and returns this process's ``JobEnv``: rank, world size, hosts and the job's id and restart
count. Workers started by ``horovodrun`` (or ``mpirun``) are already connected; the others meet through the
rendezvous rank 0 serves (``ecg_hpc.train.rendezvous``), which ``needs_rendezvous`` says.
"""

from __future__ import annotations

import os
import socket
import subprocess
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

from ecg_hpc.compat import parse_slurm_node_list
from ecg_hpc.errors import ConfigError

# A worker that stopped on a signal and checkpointed exits with this status; whoever launched it decides whether
# to requeue. submitit's local controller restarts workers that exit with it (LOCAL_REQUEUE_RETURN_CODE).
PREEMPTED_EXIT_CODE = 144
REQUEUEING_LAUNCHERS = ("slurm", "submitit-local")  # launchers that act on PREEMPTED_EXIT_CODE (see hpc.requeue)


@dataclass(frozen=True)
class JobEnv:
    """This worker's place in its job. ``launcher``: ``slurm``, ``submitit-local``, ``horovodrun``, ``mpi`` or
    ``single``."""

    launcher: str
    rank: int
    size: int
    local_rank: int
    local_size: int
    cross_rank: int
    cross_size: int
    hostname: str
    hosts: tuple[str, ...]
    slots: tuple[int, ...]  # workers per host, in rank order
    job_id: str | None
    restart_count: int

    @property
    def needs_rendezvous(self) -> bool:
        """True when the workers must meet through rank 0's rendezvous before ``hvd.init()``."""
        return self.launcher in REQUEUEING_LAUNCHERS and self.size > 1


class ClusterEnvironment(ABC):
    """A launcher that can start workers: ``detect`` says whether it started this process, ``job`` reads where."""

    name: ClassVar[str]

    @staticmethod
    @abstractmethod
    def detect(env: Mapping[str, str]) -> bool:
        """True when this launcher started the process whose variables are ``env``."""

    @classmethod
    @abstractmethod
    def job(cls, env: Mapping[str, str]) -> JobEnv:
        """This process's place in its job, from ``env`` (only called when ``detect(env)``)."""


class HorovodRunEnvironment(ClusterEnvironment):
    """Started by ``horovodrun`` with gloo: Horovod's own variables are set and the rendezvous is running."""

    name = "horovodrun"

    @staticmethod
    def detect(env: Mapping[str, str]) -> bool:
        """horovodrun exports its rendezvous address and each worker's rank."""
        return "HOROVOD_GLOO_RENDEZVOUS_ADDR" in env and "HOROVOD_RANK" in env

    @classmethod
    def job(cls, env: Mapping[str, str]) -> JobEnv:
        """Ranks and sizes from the ``HOROVOD_*`` variables."""
        size, local_size = int(env["HOROVOD_SIZE"]), int(env.get("HOROVOD_LOCAL_SIZE", env["HOROVOD_SIZE"]))
        host = env.get("HOROVOD_HOSTNAME", socket.gethostname())
        return JobEnv(cls.name, int(env["HOROVOD_RANK"]), size, int(env.get("HOROVOD_LOCAL_RANK", "0")),
                      local_size, int(env.get("HOROVOD_CROSS_RANK", "0")), int(env.get("HOROVOD_CROSS_SIZE", "1")),
                      host, (host,), (local_size,), env.get("SLURM_JOB_ID"), int(env.get("SLURM_RESTART_COUNT", "0")))


class SubmititLocalEnvironment(ClusterEnvironment):
    """Started by submitit's local executor: all workers on this machine, ranks from its variables."""

    name = "submitit-local"

    @staticmethod
    def detect(env: Mapping[str, str]) -> bool:
        """submitit's local executor names itself and each worker's global id."""
        return env.get("SUBMITIT_EXECUTOR") == "local" and "SUBMITIT_LOCAL_GLOBALID" in env

    @classmethod
    def job(cls, env: Mapping[str, str]) -> JobEnv:
        """Every worker on this host; the job id is submitit's."""
        size, rank = int(env["SUBMITIT_LOCAL_NTASKS"]), int(env["SUBMITIT_LOCAL_GLOBALID"])
        host = socket.gethostname()
        return JobEnv(cls.name, rank, size, rank, size, 0, 1, host, (host,), (size,),
                      env.get("SUBMITIT_LOCAL_JOB_ID"), 0)


def parse_tasks_per_node(text: str) -> list[int]:
    """Expand SLURM's tasks-per-node notation, e.g. ``"2(x3),1"`` -> ``[2, 2, 2, 1]``."""
    counts: list[int] = []
    for part in text.split(","):
        count, _, rest = part.strip().partition("(x")
        repeat = int(rest.rstrip(")")) if rest else 1
        counts.extend([int(count)] * repeat)
    return counts


def slot_plan(hosts: tuple[str, ...], slots: list[int]) -> list[Any]:
    """Horovod's rank assignment (ranks fill hosts in order, as srun's block distribution does)."""
    from horovod.runner.common.util.hosts import HostInfo, get_host_assignments

    infos = [HostInfo(host, n) for host, n in zip(hosts, slots)]
    return get_host_assignments(infos, sum(slots))


class SlurmEnvironment(ClusterEnvironment):
    """A task of an ``srun`` step (not the batch shell, which has no step variables): ranks from SLURM."""

    name = "slurm"

    @staticmethod
    def detect(env: Mapping[str, str]) -> bool:
        """srun sets the step's task count and each task's id."""
        return "SLURM_STEP_NUM_TASKS" in env and "SLURM_PROCID" in env

    @classmethod
    def job(cls, env: Mapping[str, str]) -> JobEnv:
        """Hosts and ranks of the step; ConfigError when srun did not place the tasks in block order."""
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or socket.gethostname()
        hosts = tuple(parse_slurm_node_list(nodelist))
        slots = parse_tasks_per_node(env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE", "1"))
        size = int(env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS", "1"))
        rank, node = int(env.get("SLURM_PROCID", "0")), int(env.get("SLURM_NODEID", "0"))
        if len(slots) != len(hosts) or sum(slots) != size:
            raise ConfigError(f"SLURM step layout not understood: nodes {nodelist!r}, tasks per node "
                              f"{slots}, {size} tasks")
        slot = slot_plan(hosts, slots)[rank]
        if slot.hostname != hosts[node] or slot.local_rank != int(env.get("SLURM_LOCALID", "0")):
            raise ConfigError("srun placed tasks out of block order; run with --distribution=block")
        return JobEnv(cls.name, rank, size, slot.local_rank, slot.local_size, slot.cross_rank, slot.cross_size,
                      hosts[node], hosts, tuple(slots), env.get("SLURM_JOB_ID"),
                      int(env.get("SLURM_RESTART_COUNT", "0")))


class SingleProcessEnvironment(ClusterEnvironment):
    """Nothing started several workers: a world of one (also a SLURM batch shell outside ``srun``)."""

    name = "single"

    @staticmethod
    def detect(env: Mapping[str, str]) -> bool:
        """Always: the last resort."""
        return True

    @classmethod
    def job(cls, env: Mapping[str, str]) -> JobEnv:
        """Rank 0 of 1 on this host (an ``mpirun`` start is recognised once Horovod is up)."""
        host = socket.gethostname()
        return JobEnv(cls.name, 0, 1, 0, 1, 0, 1, host, (host,), (1,), env.get("SLURM_JOB_ID"), 0)


def parse_slurm_duration(text: str) -> float | None:
    """Seconds in a SLURM duration (``[D-]HH:MM:SS``, ``MM:SS``, ``MM``); None for ``UNLIMITED`` or unparsable."""
    days, _, clock = text.strip().rpartition("-")
    try:
        parts = [int(p) for p in clock.split(":")]
        seconds = sum(v * m for v, m in zip(reversed(parts), (1, 60, 3600)))
        return float(seconds + (int(days) * 86400 if days else 0))
    except ValueError:
        return None


def time_left_s(job: JobEnv) -> float | None:
    """Seconds this SLURM job has left before its time limit (``squeue %L``); None elsewhere or when unknown."""
    if job.launcher != "slurm" or not job.job_id:
        return None
    try:
        proc = subprocess.run(["squeue", "-h", "-j", job.job_id, "-o", "%L"], capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_slurm_duration(proc.stdout.strip().splitlines()[0]) if proc.stdout.strip() else None


ENVIRONMENTS: tuple[type[ClusterEnvironment], ...] = (HorovodRunEnvironment, SubmititLocalEnvironment,
                                                      SlurmEnvironment, SingleProcessEnvironment)


def detect(environ: Mapping[str, str] | None = None) -> JobEnv:
    """This process's rank, world size and hosts, from the variables of whatever started it."""
    env = os.environ if environ is None else environ
    environment = next(e for e in ENVIRONMENTS if e.detect(env))
    return environment.job(env)
