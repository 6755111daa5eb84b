"""An exclusive lock on a run directory, so that two processes never write the same run.

That happens when a sweep is submitted again while its first array still runs: the second copy of a task
must leave the running one alone. The lock is ``flock`` on ``<job_dir>/.run.lock``; the kernel drops it when
the process ends, however it ends, so a killed job never leaves a stale lock (on NFS this needs working
``lockd``, as usual on clusters; the file records who holds it, for the message).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path
from typing import Iterator

from ecg_hpc.errors import EcgHpcError
from ecg_hpc.rundir import writing

LOCK_FILE = ".run.lock"


class JobDirBusy(EcgHpcError):
    """Another process holds the run directory's lock (the message names the directory and the holder)."""


@contextlib.contextmanager
def job_dir_lock(job_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the exclusive lock of an existing ``job_dir`` for the block; JobDirBusy if someone else has it,
    StorageError when the folder is read-only or forbidden."""
    path = Path(job_dir) / LOCK_FILE
    with writing(job_dir):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = path.read_text(encoding="utf-8", errors="replace").strip() or "another process"
            raise JobDirBusy(f"{job_dir}: already being run by {holder}; not starting it twice") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        yield
    finally:
        os.close(fd)  # releases the lock
