"""SLURM jobs pending for a reason that waiting will not clear (the request exceeds the partition, the partition is
down, a dependency failed), so ``--follow`` and ``sweep status`` say so instead of waiting forever."""

from __future__ import annotations

import subprocess
from pathlib import Path

PENDING_FOREVER = ("PartitionNodeLimit", "PartitionConfig", "PartitionTimeLimit", "PartitionDown",
                   "PartitionInactive", "BadConstraints", "InvalidAccount", "InvalidQOS", "QOSMaxNodePerJobLimit",
                   "QOSMaxGRESPerJob", "QOSMaxCpuPerJobLimit", "AssocMaxNodesPerJob", "DependencyNeverSatisfied")


def _squeue(*args: str) -> list[list[str]]:
    try:
        out = subprocess.run(["squeue", "-h", *args], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.split("|") for line in out.splitlines() if line.count("|") == 2]


def stuck_reason(job_id: str) -> str | None:
    """The pending reason of SLURM job ``job_id`` (array tasks included) when it will not clear, else None."""
    for _, state, reason in _squeue("-j", job_id.split("_")[0], "-o", "%i|%T|%r"):
        if state == "PENDING" and reason in PENDING_FOREVER:
            return reason
    return None


def stuck_message(job_id: str, reason: str) -> str:
    """One line: the job, why it will never start, and how to cancel it."""
    return (f"SLURM job {job_id} is pending for {reason}, which waiting will not clear (the request exceeds what "
            f"the partition offers, or it is unusable): cancel it with scancel {job_id.split('_')[0]} and submit "
            "again with a request that fits")


def stuck_jobs_logging_to(folder: str | Path) -> list[tuple[str, str]]:
    """(job id, reason) of the pending jobs stuck for good whose log file lies below ``folder``."""
    folder = Path(folder).resolve()
    found = []
    for job_id, _, reason in _squeue("-t", "PENDING", "-o", "%i|%T|%r"):
        if reason not in PENDING_FOREVER:
            continue
        try:
            shown = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True,
                                   timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        stdout = next((f.split("=", 1)[1] for f in shown.split() if f.startswith("StdOut=")), "")
        if stdout and Path(stdout).resolve().is_relative_to(folder):
            found.append((job_id, reason))
    return found
