"""The crash watcher (``ecg_hpc.train.crash_watch``): a worker that dies of a native crash is named in the log and
failed in run.json by its watcher; one that exits or is SIGKILLed leaves no trace, and the watcher never outlives
it. The workers are real child processes that start the watcher, then crash, exit or are killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ecg_hpc.records import PretrainRun, read_record, write_record
from ecg_hpc.train import crash_watch

ROOT = Path(__file__).resolve().parent.parent
ADVICE = "restore the store"
WORKER = textwrap.dedent("""
    import os, signal, sys, time
    from ecg_hpc.records import PretrainRun
    from ecg_hpc.train import crash_watch

    job_dir, how = sys.argv[1], sys.argv[2]
    bare = lambda: PretrainRun(status="running", seed=0, task="beat", arch="resnet18", frame_size=256, epochs=1)
    pid = crash_watch.start(job_dir, 3, "hostX", bare=bare, advice={crash_watch.BUS_ERROR: "restore the store"})
    print(f"watcher {pid}", flush=True)
    if how == "exit":
        sys.exit(0)
    if how == "fork-then-exit":  # a forked child keeps the pipe's write end after the worker is gone
        child = os.fork()
        if child == 0:
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            time.sleep(30)
            os._exit(0)
        print(f"child {child}", flush=True)
        sys.exit(0)
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), getattr(signal, how))
    time.sleep(5)
""")


def _record() -> PretrainRun:
    return PretrainRun(status="running", seed=0, task="beat", arch="resnet18", frame_size=256, epochs=1)


def _worker(job_dir: Path, how: str) -> tuple[subprocess.CompletedProcess, int]:
    """Run a worker that starts its watcher and ends ``how``; wait for its output to close (the watcher's too)."""
    proc = subprocess.run([sys.executable, "-c", WORKER, str(job_dir), how], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    watcher = int(proc.stdout.split("watcher ")[1].split()[0])
    return proc, watcher


def _ended(pid: int) -> bool:
    """True when ``pid`` has ended (a zombie that no init reaped counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def _gone(pid: int, within_s: float = 2.0) -> bool:
    """True when ``pid`` ends within ``within_s`` (its output closes an instant before the process is gone)."""
    deadline = time.monotonic() + within_s
    while not _ended(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.parametrize("sig", ["SIGBUS", "SIGSEGV"])
def test_a_native_crash_is_named_in_the_log_and_run_json(sig: str, tmp_path: Path) -> None:
    write_record(tmp_path, _record())
    proc, watcher = _worker(tmp_path, sig)
    assert proc.returncode == -getattr(signal, sig), proc.stderr
    name, kind = {"SIGBUS": ("Bus error", "a bus error"),
                  "SIGSEGV": ("Segmentation fault", "a segmentation fault")}[sig]
    reports = [line for line in proc.stderr.splitlines() if line.startswith("Fatal Python error:")]
    assert reports == [f"Fatal Python error: {name}"], proc.stderr  # faulthandler's report, copied by the watcher
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"rank 3 on hostX died of {kind} (Fatal Python error: {name}): " in errors[0]
    assert errors[0].endswith(ADVICE if sig == "SIGBUS" else crash_watch.GENERIC_ADVICE), errors[0]
    info = read_record(tmp_path)
    assert info.status == "failed" and info.failed_rank == 3 and info.failed_host == "hostX"
    assert info.error == errors[0].removeprefix("error: ") and info.finished_at
    assert _gone(watcher)


def test_a_crash_before_run_json_exists_writes_the_bare_record(tmp_path: Path) -> None:
    proc, _ = _worker(tmp_path, "SIGBUS")
    assert proc.returncode == -signal.SIGBUS, proc.stderr
    info = read_record(tmp_path)
    assert info.status == "failed" and "died of a bus error" in info.error and info.task == "beat"


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_an_exit_or_sigkill_leaves_no_trace(how: str, tmp_path: Path) -> None:
    write_record(tmp_path, _record())
    proc, watcher = _worker(tmp_path, how)
    assert proc.returncode == (0 if how == "exit" else -signal.SIGKILL)
    assert proc.stderr == "", proc.stderr
    assert read_record(tmp_path).status == "running"  # a SIGKILLed run is derived died, as designed
    assert _gone(watcher)


def test_the_watcher_does_not_outlive_its_worker(tmp_path: Path) -> None:
    began = time.monotonic()
    proc, watcher = _worker(tmp_path, "fork-then-exit")
    child = int(proc.stdout.split("child ")[1].split()[0])
    try:
        assert proc.returncode == 0, proc.stderr
        assert _gone(watcher, 5) and time.monotonic() - began < 5 * crash_watch.POLL_S, "it outlived its worker"
        assert not _ended(child) and not (tmp_path / "run.json").exists()
    finally:
        os.kill(child, signal.SIGKILL)


def test_the_crash_line_names_the_kind() -> None:
    text = "Fatal Python error: Illegal instruction\n\nCurrent thread 0x1 (most recent call first):\n"
    assert crash_watch.crash_line(text, 1, "h") == (f"rank 1 on h died of an illegal instruction (Fatal Python "
                                                    f"error: Illegal instruction): {crash_watch.GENERIC_ADVICE}")
    assert crash_watch.crash_line("garbage", 0, "h").startswith("rank 0 on h died of a native crash: ")
