"""Who this worker is in its job, and how workers started without horovodrun find each other.

``detect`` reads the rank, world size and hosts of this process from whatever started it: ``srun`` (SLURM
step variables), submitit's local executor, ``horovodrun`` (Horovod variables already set) or nothing (one
process). ``start_horovod_rendezvous`` must run before ``hvd.init()``: it sets the ``HOROVOD_*`` variables
Horovod's gloo controller reads; rank 0 serves the rendezvous (Horovod's own HTTP server, in a thread) on a
port derived from the job id, and the other ranks wait until that port answers, because Horovod itself gives
up after three quick retries. ``request_requeue`` puts a preempted job back in the queue.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Any, Mapping, MutableMapping

from ecg_hpc.errors import ConfigError

REQUEUE_EXIT_CODE = 144  # submitit's local controller restarts workers that exit with it (LOCAL_REQUEUE_RETURN_CODE)
REQUEUE_BY_SCRIPT_ENV = "ECG_HPC_REQUEUE_BY_SCRIPT"  # set to 1 by slurm/pretrain.sbatch: it requeues on exit 144
PORT_ENV = "ECG_HPC_RENDEZVOUS_PORT"  # overrides the port derived from the job id
ADDR_ENV = "ECG_HPC_RENDEZVOUS_ADDR"  # overrides the rendezvous host (default: the job's first node by name)
_PORT_BASE, _PORT_SPAN = 20000, 30000
LOCALHOST = "127.0.0.1"


@dataclass(frozen=True)
class JobEnv:
    """This worker's place in its job. ``launcher``: ``slurm``, ``submitit-local``, ``horovodrun`` or ``single``."""

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

    def as_dict(self) -> dict[str, Any]:
        """The fields worth recording in run.json."""
        return {"launcher": self.launcher, "world_size": self.size, "hosts": list(self.hosts),
                "job_id": self.job_id, "restart_count": self.restart_count}


def parse_tasks_per_node(text: str) -> list[int]:
    """Expand SLURM's tasks-per-node notation, e.g. ``"2(x3),1"`` -> ``[2, 2, 2, 1]``."""
    counts: list[int] = []
    for part in text.split(","):
        count, _, rest = part.strip().partition("(x")
        repeat = int(rest.rstrip(")")) if rest else 1
        counts.extend([int(count)] * repeat)
    return counts


def _slot_plan(hosts: tuple[str, ...], slots: list[int]) -> list[Any]:
    """Horovod's rank assignment (ranks fill hosts in order, as srun's block distribution does)."""
    from horovod.runner.common.util.hosts import HostInfo, get_host_assignments

    infos = [HostInfo(host, n) for host, n in zip(hosts, slots)]
    return get_host_assignments(infos, sum(slots))


def _detect_slurm(env: Mapping[str, str]) -> JobEnv:
    from submitit.slurm.slurm import _parse_node_list  # SLURM hostlist expansion (submitit 1.5.4, pinned)

    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or socket.gethostname()
    hosts = tuple(_parse_node_list(nodelist))
    slots = parse_tasks_per_node(env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE", "1"))
    size = int(env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS", "1"))
    rank, node = int(env.get("SLURM_PROCID", "0")), int(env.get("SLURM_NODEID", "0"))
    if len(slots) != len(hosts) or sum(slots) != size:
        raise ConfigError(f"SLURM step layout not understood: nodes {nodelist!r}, tasks per node "
                          f"{slots}, {size} tasks")
    slot = _slot_plan(hosts, slots)[rank]
    if slot.hostname != hosts[node] or slot.local_rank != int(env.get("SLURM_LOCALID", "0")):
        raise ConfigError("srun placed tasks out of block order; run with --distribution=block")
    return JobEnv("slurm", rank, size, slot.local_rank, slot.local_size, slot.cross_rank, slot.cross_size,
                  hosts[node], hosts, tuple(slots), env.get("SLURM_JOB_ID"),
                  int(env.get("SLURM_RESTART_COUNT", "0")))


def detect(environ: Mapping[str, str] | None = None) -> JobEnv:
    """This process's rank, world size and hosts, from the variables of whatever started it."""
    env = os.environ if environ is None else environ
    if "HOROVOD_GLOO_RENDEZVOUS_ADDR" in env and "HOROVOD_RANK" in env:
        size, local_size = int(env["HOROVOD_SIZE"]), int(env.get("HOROVOD_LOCAL_SIZE", env["HOROVOD_SIZE"]))
        host = env.get("HOROVOD_HOSTNAME", socket.gethostname())
        return JobEnv("horovodrun", int(env["HOROVOD_RANK"]), size, int(env.get("HOROVOD_LOCAL_RANK", "0")),
                      local_size, int(env.get("HOROVOD_CROSS_RANK", "0")), int(env.get("HOROVOD_CROSS_SIZE", "1")),
                      host, (host,), (local_size,), env.get("SLURM_JOB_ID"),
                      int(env.get("SLURM_RESTART_COUNT", "0")))
    if env.get("SUBMITIT_EXECUTOR") == "local" and "SUBMITIT_LOCAL_GLOBALID" in env:
        size, rank = int(env["SUBMITIT_LOCAL_NTASKS"]), int(env["SUBMITIT_LOCAL_GLOBALID"])
        host = socket.gethostname()
        return JobEnv("submitit-local", rank, size, rank, size, 0, 1, host, (host,), (size,),
                      env.get("SUBMITIT_LOCAL_JOB_ID"), 0)
    if "SLURM_STEP_NUM_TASKS" in env and "SLURM_PROCID" in env:  # a task of an srun step (not the batch shell)
        return _detect_slurm(env)
    host = socket.gethostname()
    return JobEnv("single", 0, 1, 0, 1, 0, 1, host, (host,), (1,), env.get("SLURM_JOB_ID"), 0)


def rendezvous_port(job: JobEnv, environ: Mapping[str, str] | None = None) -> int:
    """The rendezvous port: ``ECG_HPC_RENDEZVOUS_PORT`` if set, else derived from the job id and restart count."""
    env = os.environ if environ is None else environ
    if env.get(PORT_ENV):
        return int(env[PORT_ENV])
    key = f"{job.job_id}:{job.restart_count}".encode()
    return _PORT_BASE + zlib.crc32(key) % _PORT_SPAN


def rendezvous_address(job: JobEnv, environ: Mapping[str, str] | None = None) -> str:
    """Where rank 0 serves the rendezvous: ``ECG_HPC_RENDEZVOUS_ADDR`` if set, else the first host by name
    (loopback when all workers share this machine)."""
    env = os.environ if environ is None else environ
    if env.get(ADDR_ENV):
        return env[ADDR_ENV]
    return LOCALHOST if len(job.hosts) == 1 else job.hosts[0]


def horovod_environment(job: JobEnv, address: str, port: int) -> dict[str, str]:
    """The variables Horovod's gloo controller needs to start without horovodrun."""
    env = {
        "HOROVOD_RANK": str(job.rank), "HOROVOD_SIZE": str(job.size),
        "HOROVOD_LOCAL_RANK": str(job.local_rank), "HOROVOD_LOCAL_SIZE": str(job.local_size),
        "HOROVOD_CROSS_RANK": str(job.cross_rank), "HOROVOD_CROSS_SIZE": str(job.cross_size),
        "HOROVOD_HOSTNAME": job.hostname,
        "HOROVOD_GLOO_RENDEZVOUS_ADDR": address, "HOROVOD_GLOO_RENDEZVOUS_PORT": str(port),
        "HOROVOD_CONTROLLER": "gloo", "HOROVOD_CPU_OPERATIONS": "gloo",
    }
    if address == LOCALHOST:
        env["HOROVOD_GLOO_IFACE"] = "lo"
    return env


class RendezvousServer:
    """Horovod's rendezvous HTTP server on a fixed port, served from a daemon thread of rank 0."""

    def __init__(self, job: JobEnv, address: str, port: int) -> None:
        from horovod.runner.http.http_server import RendezvousHandler, RendezvousHTTPServer

        bind = LOCALHOST if address == LOCALHOST else ""
        try:
            self._httpd = RendezvousHTTPServer((bind, port), RendezvousHandler, 0)
        except OSError as exc:
            raise ConfigError(f"Horovod rendezvous: cannot listen on port {port} ({exc}); "
                              f"set {PORT_ENV} to a free port") from exc
        self._httpd.init(_slot_plan(job.hosts, list(job.slots)))
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="horovod-rendezvous", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._httpd.shutdown()
        self._thread.join()
        self._httpd.server_close()


def wait_for_port(address: str, port: int, timeout_s: float) -> None:
    """Block until something accepts TCP connections on ``address:port``; RuntimeError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((address, port), timeout=2.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no Horovod rendezvous at {address}:{port} after {timeout_s:.0f} s "
                                   f"(did rank 0 start? see its log)") from None
            time.sleep(0.2)


def start_horovod_rendezvous(job: JobEnv, environ: MutableMapping[str, str] | None = None,
                             timeout_s: float = 600.0) -> RendezvousServer | None:
    """Before ``hvd.init()``: export the Horovod variables; rank 0 serves the rendezvous, others wait for it.

    Nothing to do (None) for one process or under horovodrun. Returns rank 0's server, to stop after
    ``hvd.shutdown()``.
    """
    if job.launcher in ("single", "horovodrun") or job.size == 1:
        return None
    env = os.environ if environ is None else environ
    address, port = rendezvous_address(job, env), rendezvous_port(job, env)
    env.update(horovod_environment(job, address, port))
    if job.rank == 0:
        return RendezvousServer(job, address, port)
    wait_for_port(address, port, timeout_s)
    return None


def _slurm_job_state(job_id: str) -> str:
    """The SLURM state of ``job_id`` (e.g. RUNNING, CANCELLED), or "" when scontrol cannot tell."""
    proc = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=60)
    for field in proc.stdout.split():
        if field.startswith("JobState="):
            return field.split("=", 1)[1]
    return ""


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


def request_requeue(job: JobEnv, environ: Mapping[str, str] | None = None) -> str:
    """Put this preempted job back in the queue where its launcher allows it; return what was done.

    Only rank 0 acts. SLURM: ``scontrol requeue`` unless the job is no longer running (a cancelled job stays
    cancelled) or the batch script requeues on exit status ``REQUEUE_EXIT_CODE`` itself. submitit's local
    executor restarts the workers when they exit with that status. Otherwise the user starts the job again.
    """
    env = os.environ if environ is None else environ
    if job.rank != 0:
        return "rank 0 requeues"
    if job.launcher == "submitit-local":
        return f"the local submitit controller restarts the workers (exit status {REQUEUE_EXIT_CODE})"
    if job.job_id and env.get(REQUEUE_BY_SCRIPT_ENV) == "1":
        return f"the batch script requeues SLURM job {job.job_id} on exit status {REQUEUE_EXIT_CODE}"
    if job.job_id and job.launcher == "slurm":
        try:
            state = _slurm_job_state(job.job_id)
            if state != "RUNNING":
                return f"not requeued: SLURM job {job.job_id} is {state or 'unknown'}"
            subprocess.run(["scontrol", "requeue", job.job_id], check=True, capture_output=True, text=True,
                           timeout=60)
        except (OSError, subprocess.SubprocessError) as exc:
            return f"could not requeue SLURM job {job.job_id} ({exc}); submit it again to resume"
        return f"requeued SLURM job {job.job_id}"
    return "not requeued: start the same command again to resume from the last checkpoint"
