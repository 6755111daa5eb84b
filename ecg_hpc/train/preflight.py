"""Checks a multi-node job makes before Horovod starts, each failing at once with one line that says the fix.

What breaks a multi-node Horovod job on a real cluster shows up late and far from its cause otherwise:
- a node whose own name resolves to a loopback address (Debian's default ``127.0.1.1`` line in /etc/hosts):
  Horovod 0.28.1's gloo binds to the address of ``gethostname()`` whatever ``HOROVOD_GLOO_IFACE`` says, so the
  other nodes are told to connect to loopback and the job hangs;
- a rendezvous host that does not resolve: rank 0 aborts inside ``hvd.init()`` and the other ranks retry for
  minutes before blaming rank 0;
- a job folder that is not the same folder on every node: rank 0 alone writes it, so the checkpoints and run.json
  another node reads are not the ones rank 0 wrote. Rank 0 writes a token file named after the job and its
  restart; every other rank waits (bounded) until it sees that file in its own view of the folder.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from pathlib import Path

from ecg_hpc.errors import ConfigError
from ecg_hpc.atomic import writing

SHARED_WAIT_ENV = "ECG_HPC_SHARED_DIR_WAIT_S"  # how long ranks > 0 wait for rank 0's token (default 30 s)
DEFAULT_SHARED_WAIT_S = 30.0


def resolve(name: str) -> list[str]:
    """The IPv4/IPv6 addresses ``name`` resolves to on this node (empty when it does not resolve)."""
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return []
    return sorted({str(info[4][0]) for info in infos})


def check_node_name(hostname: str) -> None:
    """ConfigError when this node's own name resolves to nothing or to a loopback address."""
    addresses = resolve(hostname)
    if not addresses:
        raise ConfigError(f"this node's name {hostname!r} does not resolve here; a multi-node Horovod job needs "
                          f"node names that resolve to addresses the other nodes reach (fix /etc/hosts or DNS)")
    loopback = [a for a in addresses if ipaddress.ip_address(a).is_loopback]
    if loopback:
        raise ConfigError(f"this node's name {hostname!r} resolves to the loopback address {loopback[0]} "
                          f"(/etc/hosts); Horovod's gloo binds to it and the other nodes cannot connect: map "
                          f"{hostname} to an address the other nodes reach")


def check_rendezvous_host(address: str, hostname: str, env_name: str) -> None:
    """ConfigError when the rendezvous host ``address`` does not resolve on this node (``hostname``), or resolves
    to loopback on another node than its own."""
    addresses = resolve(address)
    if not addresses:
        raise ConfigError(f"the Horovod rendezvous host {address!r} (rank 0's node) does not resolve on "
                          f"{hostname}: fix name resolution between the nodes or set {env_name} to an address "
                          f"of rank 0's node")
    if address != hostname and any(ipaddress.ip_address(a).is_loopback for a in addresses):
        raise ConfigError(f"the Horovod rendezvous host {address!r} (rank 0's node) resolves to loopback on "
                          f"{hostname}: fix name resolution between the nodes or set {env_name} to an address "
                          f"of rank 0's node")


def shared_token(folder: Path, job_id: str | None, restart_count: int) -> Path:
    """The file rank 0 writes into the job folder for this start of the job."""
    return folder / f".ecg-hpc-shared-{job_id or 'nojob'}-{restart_count}"


def write_shared_token(folder: Path, job_id: str | None, restart_count: int, hostname: str) -> Path:
    """Rank 0: create the job folder and put this start's token in it; return the token's path."""
    token = shared_token(folder, job_id, restart_count)
    with writing(folder):  # a read-only or full job folder is one line
        folder.mkdir(parents=True, exist_ok=True)
        token.write_text(f"{hostname}\n", encoding="utf-8")
    return token


def wait_for_shared_token(folder: Path, job_id: str | None, restart_count: int, rank: int, hostname: str,
                          first_host: str, timeout_s: float | None = None) -> None:
    """Ranks > 0: wait until rank 0's token shows up in ``folder``; ConfigError naming the folder if it does not."""
    if timeout_s is None:
        timeout_s = float(os.environ.get(SHARED_WAIT_ENV, DEFAULT_SHARED_WAIT_S))
    token = shared_token(folder, job_id, restart_count)
    deadline = time.monotonic() + timeout_s
    while not token.is_file():
        if time.monotonic() > deadline:
            raise ConfigError(f"--job-dir {folder}: rank {rank} on {hostname} does not see the file rank 0 wrote "
                              f"there on {first_host} within {timeout_s:.0f} s; the job folder must be one folder "
                              f"on a file system every node shares, not a node-local one (the wait is {SHARED_WAIT_ENV})")
        time.sleep(0.2)
