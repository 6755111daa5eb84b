"""How workers started without horovodrun find each other: the Horovod rendezvous that rank 0 serves.

``start_horovod_rendezvous`` must run before ``hvd.init()``: it sets the ``HOROVOD_*`` variables Horovod's gloo
controller reads; rank 0 serves the rendezvous (Horovod's own HTTP server, in a thread) on a port derived from the
job id, and the other ranks wait until that port answers, because Horovod itself gives up after three quick
retries.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import zlib
from typing import Mapping, MutableMapping

from ecg_hpc.errors import ConfigError
from ecg_hpc.train.environments import JobEnv, slot_plan

PORT_ENV = "ECG_HPC_RENDEZVOUS_PORT"  # overrides the port derived from the job id
ADDR_ENV = "ECG_HPC_RENDEZVOUS_ADDR"  # overrides the rendezvous host (default: the job's first node by name)
_PORT_BASE, _PORT_SPAN = 20000, 30000
LOCALHOST = "127.0.0.1"


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
        self._httpd.init(slot_plan(job.hosts, list(job.slots)))
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
    if not job.needs_rendezvous:
        return None
    env = os.environ if environ is None else environ
    address, port = rendezvous_address(job, env), rendezvous_port(job, env)
    env.update(horovod_environment(job, address, port))
    if job.rank == 0:
        return RendezvousServer(job, address, port)
    wait_for_port(address, port, timeout_s)
    return None
