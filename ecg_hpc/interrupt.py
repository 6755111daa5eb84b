"""Ctrl-C in the user commands: one line saying what stopped, what was kept and how to resume; exit status 130.

A terminal sends SIGINT to every process of the foreground job: the launcher, submitit's local controller and the
workers. The launcher decides what to say; the workers decide how to stop (pretraining checkpoints, a sweep task
records that it was interrupted); submitit's controller must not react at all (it would print a traceback and
kill the workers one second later), so it is started with SIGINT ignored, a disposition a new process inherits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Any, Iterator

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C


def exit_quietly_on_interrupt(message: str) -> None:
    """Until another handler is installed, Ctrl-C prints ``message`` as one line and exits 130 at once.

    For the start of a command (imports, checks), when nothing has been written or submitted yet.
    """
    def handler(signum: int, frame: Any) -> None:
        print(message, file=sys.stderr, flush=True)
        os._exit(EXIT_INTERRUPTED)

    signal.signal(signal.SIGINT, handler)


def interrupt_raises() -> None:
    """From now on Ctrl-C raises KeyboardInterrupt (Python's default), e.g. in a worker that inherited "ignore"."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


@contextlib.contextmanager
def interrupts_ignored() -> Iterator[None]:
    """SIGINT is ignored inside the block, and this process's handler restored after it (main thread only;
    elsewhere nothing changes). For two things: processes started inside the block begin with SIGINT ignored
    (workers that handle it install a handler; submitit's local controller must not react), and recording how a
    run ended is not cut short by the repeated SIGINT that stops a local job's workers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def interrupted(message: str) -> int:
    """Print the one line of an interrupted command and return its exit status (130)."""
    print(message, file=sys.stderr, flush=True)
    return EXIT_INTERRUPTED
