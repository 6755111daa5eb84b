"""A worker's native crash (a bus error, a segfault) recorded in run.json and the log by a small watcher process.

Why a second process: a process cannot record its own SIGBUS. The fault is synchronous, a Python signal handler
would only run between bytecodes of the main thread, which never resumes, and ``faulthandler`` can only print its
report before the process dies. So early in ``run(config)`` (before TensorFlow is imported and before the run's
lock is taken, which the watcher must not inherit) the worker creates a pipe and forks a watcher that reads it;
the worker points ``faulthandler`` at the pipe's write end and keeps it open for its life. The watcher copies what
arrives to stderr (the log keeps the crash report). When the worker ends the pipe reaches EOF: with crash text
read, the watcher records the failure (``records.record_failure``: rank, host, one error line naming the kind of
crash), prints that line and exits; a normal exit or a SIGKILL writes nothing and the watcher leaves silently (a
SIGKILLed run stays "running" and is derived "died"). The pipe's ends are not inheritable, so exec'd children never
hold the write end; the watcher also checks every ``POLL_S`` that its parent lives, so a forked child holding the
write end cannot keep it beyond the worker. The stop signals are ignored in the watcher: the worker handles them.
"""

from __future__ import annotations

import faulthandler
import os
import re
import select
import signal
import socket
import sys
from typing import Callable, Mapping

from ecg_hpc.errors import report_native_crashes
from ecg_hpc.records import RUN_JSON, RunRecord, record_failure
from ecg_hpc.train.environments import detect

POLL_S = 1.0  # how often the watcher checks that the worker still lives (bounds how long it can outlive it)
BUS_ERROR = "Bus error"
# faulthandler's names of the fatal signals (the header "Fatal Python error: NAME"), as the error line says them
KINDS = {BUS_ERROR: "a bus error", "Segmentation fault": "a segmentation fault",
         "Floating point exception": "a floating-point exception", "Aborted": "an abort",
         "Illegal instruction": "an illegal instruction"}
GENERIC_ADVICE = "a native crash in a library; the log above holds its Python stack"
IGNORED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP)
_HEADER = re.compile(r"Fatal Python error: ([^\n]+)")
_MPI_RANKS = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "MV2_COMM_WORLD_RANK")


def worker_identity() -> tuple[int, str]:
    """This worker's rank and host as far as the job's variables tell before Horovod starts (an ``mpirun`` rank
    from MPI's variables); rank 0 on this host where they say nothing usable."""
    try:
        job = detect()
    except Exception:  # a broken job environment: the trainer says so itself, the watcher needs a guess only
        return 0, socket.gethostname()
    rank = job.rank
    if job.launcher == "single":
        rank = next((int(os.environ[v]) for v in _MPI_RANKS if os.environ.get(v, "").isdigit()), rank)
    return rank, job.hostname


def crash_line(text: str, rank: int, host: str, advice: Mapping[str, str] | None = None) -> str:
    """The one-line error of worker ``rank`` on ``host`` that died with faulthandler's report ``text``: the kind
    of crash, faulthandler's header, and what to do (``advice`` by faulthandler's signal name)."""
    match = _HEADER.search(text)
    name = match.group(1).strip() if match else None
    kind = KINDS.get(name or "", "a native crash")
    header = f" ({match.group(0).strip()})" if match else ""
    hint = (advice or {}).get(name or "", GENERIC_ADVICE)
    return f"rank {rank} on {host} died of {kind}{header}: {hint}"


def start(job_dir: str | os.PathLike[str], rank: int, host: str, bare: Callable[[], RunRecord] | None = None,
          advice: Mapping[str, str] | None = None) -> int | None:
    """Fork the crash watcher of this worker and point faulthandler at it; its pid, or None where it could not
    start (faulthandler then prints to stderr, as before). ``bare`` builds the record of a run without run.json."""
    for stream in (sys.stdout, sys.stderr):  # nothing buffered twice in the copy fork makes
        try:
            stream.flush()
        except (AttributeError, ValueError, OSError):
            pass
    try:
        read_fd, write_fd = os.pipe()  # non-inheritable: exec'd children never hold them
    except OSError:
        return _fallback()
    worker = os.getpid()
    try:
        pid = os.fork()
    except OSError:
        os.close(read_fd)
        os.close(write_fd)
        return _fallback()
    if pid == 0:  # the watcher: never returns into the caller's code
        status = 0
        try:
            os.close(write_fd)
            _ignore_stop_signals()
            text = _copy_until_worker_ends(read_fd, worker)
            if text:
                _record(text.decode("utf-8", "replace"), job_dir, rank, host, bare, advice)
        except BaseException:  # the watcher ends here, whatever happens
            status = 1
        finally:
            os._exit(status)
    os.close(read_fd)
    try:
        faulthandler.enable(file=write_fd)  # an int: nothing owns it, it stays open for the process's life
    except (ValueError, OSError):
        os.close(write_fd)
        return _fallback()
    return pid


def _fallback() -> None:
    """No watcher: faulthandler prints to stderr only (the run is then derived died)."""
    report_native_crashes()


def _ignore_stop_signals() -> None:
    """The watcher outlives no stop signal on its own: the worker handles them, the watcher waits for its end."""
    for sig in IGNORED_SIGNALS:
        try:
            signal.signal(sig, signal.SIG_IGN)
        except (ValueError, OSError):
            pass


def _write_stderr(data: bytes) -> None:
    """Write ``data`` to fd 2 in full (unbuffered: the watcher shares no Python buffer with the worker)."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(2, view):]
        except OSError:
            return


def _copy_until_worker_ends(read_fd: int, worker: int) -> bytes:
    """Copy the pipe to stderr until EOF or until the worker is gone (checked every ``POLL_S``); what was read."""
    text = bytearray()
    while True:
        ready, _, _ = select.select([read_fd], [], [], POLL_S)
        if ready:
            chunk = os.read(read_fd, 65536)
            if not chunk:
                return bytes(text)
            text += chunk
            _write_stderr(chunk)
        elif os.getppid() != worker:  # orphaned while someone else holds the write end: take what is there
            os.set_blocking(read_fd, False)
            try:
                while chunk := os.read(read_fd, 65536):
                    text += chunk
                    _write_stderr(chunk)
            except BlockingIOError:
                pass
            return bytes(text)


def _record(text: str, job_dir: str | os.PathLike[str], rank: int, host: str,
            bare: Callable[[], RunRecord] | None, advice: Mapping[str, str] | None) -> None:
    """Say the crash in one line on stderr and record it in run.json (a record that cannot be written is said)."""
    line = crash_line(text, rank, host, advice)
    _write_stderr(f"error: {line}\n".encode())
    try:
        base = bare() if bare is not None and not os.path.isfile(os.path.join(job_dir, RUN_JSON)) else None
        record_failure(job_dir, rank, host, line, bare=base)
    except Exception as exc:  # the line above is the user's record then
        where = os.path.join(job_dir, RUN_JSON)
        _write_stderr(f"error: could not record the crash in {where} ({type(exc).__name__}: {exc})\n".encode())
