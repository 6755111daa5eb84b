"""A run's state derived, not trusted: a run.json that says "running" is believed only while someone runs it.

A process killed with SIGKILL (the OOM killer, ``scancel`` after its grace time, a node that dies) cannot write
its final state, so its run.json says "running" for ever. The run's lock (``ecg_hpc.train.job_lock``) is held
by the process that runs it and dropped by the kernel when that process ends, however it ends; where the run
recorded a SLURM job, the job must also have left the queue (a requeued job waits there without a process).
Such a run is "died": ``sweep status``, the report and the launchers say so, and a re-submission redoes it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Mapping

from ecg_hpc.rundir import read_run
from ecg_hpc.train.job_lock import lock_is_held

DIED = "died"
_ALIVE_SLURM_STATES = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
                       "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED"}


def recorded_slurm_job(info: Mapping[str, Any]) -> str | None:
    """The SLURM job id a run.json records for its latest attempt (pretraining ``attempts``, else its environment)."""
    attempts = info.get("attempts")
    if isinstance(attempts, list) and attempts and isinstance(attempts[-1], dict):
        job_id = attempts[-1].get("job_id")
        if job_id and attempts[-1].get("launcher") == "slurm":
            return str(job_id)
    slurm = (info.get("environment") or {}).get("slurm") if isinstance(info.get("environment"), dict) else None
    if isinstance(slurm, dict) and slurm.get("SLURM_JOB_ID"):
        return str(slurm["SLURM_JOB_ID"])
    return None


def slurm_job_alive(job_id: str) -> bool | None:
    """True while SLURM still has ``job_id`` queued or running, False once it has left; None when SLURM cannot be
    asked from here (no ``squeue``, or it fails)."""
    if shutil.which("squeue") is None:
        return None
    try:
        proc = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:  # squeue exits 1 for a job it no longer knows
        return False if "Invalid job id" in proc.stderr else None
    return any(state.strip() in _ALIVE_SLURM_STATES for state in proc.stdout.splitlines())


def derived_status(job_dir: str | os.PathLike[str], info: Mapping[str, Any]) -> str:
    """``info``'s status, except "died" for a "running" run whose lock is free and whose SLURM job has ended."""
    status = str(info.get("status"))
    if status != "running" or lock_is_held(Path(job_dir)):
        return status
    job_id = recorded_slurm_job(info)
    if job_id is not None and slurm_job_alive(job_id):
        return status
    return DIED


def died(job_dir: str | os.PathLike[str]) -> bool:
    """True when ``job_dir``'s run.json says running but the run died (see ``derived_status``)."""
    try:
        info = read_run(job_dir)
    except ValueError:
        return False
    return bool(info) and derived_status(job_dir, info) == DIED
