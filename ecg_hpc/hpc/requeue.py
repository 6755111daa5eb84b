"""Requeueing a preempted job: the launcher's decision, taken after the trainer exits preempted.

The trainer checkpoints on a stop signal and exits with ``PREEMPTED_EXIT_CODE``; ``ModuleJob`` (submitit) then
calls ``request_requeue``, and ``slurm/pretrain.sbatch`` runs ``scontrol requeue`` itself.
"""

from __future__ import annotations

import subprocess

from ecg_hpc.train.environments import PREEMPTED_EXIT_CODE, JobEnv


def _slurm_job_state(job_id: str) -> str:
    """The SLURM state of ``job_id`` (e.g. RUNNING, CANCELLED), or "" when scontrol cannot tell."""
    proc = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=60)
    for field in proc.stdout.split():
        if field.startswith("JobState="):
            return field.split("=", 1)[1]
    return ""


def request_requeue(job: JobEnv) -> str:
    """Put a job whose workers stopped preempted back in the queue where its launcher allows it; say what was
    done.

    Only rank 0 acts. SLURM: ``scontrol requeue`` unless the job is no longer running (a cancelled job stays
    cancelled). submitit's local executor restarts the workers itself when they exit with
    ``PREEMPTED_EXIT_CODE``. Otherwise the user starts the job again.
    """
    if job.rank != 0:
        return "rank 0 requeues"
    if job.launcher == "submitit-local":
        return f"the local submitit controller restarts the workers (exit status {PREEMPTED_EXIT_CODE})"
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
