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
import time
from pathlib import Path
from typing import Iterator

from ecg_hpc.errors import EcgHpcError
from ecg_hpc.rundir import writing

LOCK_FILE = ".run.lock"


class JobDirBusy(EcgHpcError):
    """Another process holds the run directory's lock (the message names the directory and the holder)."""


def _try_lock(fd: int, kind: int, tries: int = 5) -> bool:
    """Take ``flock`` ``kind`` without waiting for a holder, retrying briefly: ``lock_is_held`` holds it for an
    instant, which must not make a starting run think that another one runs."""
    for attempt in range(tries):
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt + 1 < tries:
                time.sleep(0.1)
    return False


@contextlib.contextmanager
def job_dir_lock(job_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the exclusive lock of an existing ``job_dir`` for the block; JobDirBusy if someone else has it,
    StorageError when the folder is read-only or forbidden."""
    path = Path(job_dir) / LOCK_FILE
    with writing(job_dir):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_lock(fd, fcntl.LOCK_EX):
            holder = path.read_text(encoding="utf-8", errors="replace").strip() or "another process"
            raise JobDirBusy(f"{job_dir}: already being run by {holder}; not starting it twice") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        yield
    finally:
        os.close(fd)  # releases the lock


def lock_is_held(job_dir: str | os.PathLike[str]) -> bool:
    """True while some process holds ``job_dir``'s lock (asked without taking it for long; works read-only)."""
    try:
        fd = os.open(Path(job_dir) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False
    try:
        return not _try_lock(fd, fcntl.LOCK_SH, tries=1)
    except OSError:
        return False
    finally:
        os.close(fd)
