"""Provenance of a run: when it ran, on what, with which code and package versions (recorded in run.json).

The run records themselves are ``ecg_hpc.records``; atomic files are ``ecg_hpc.atomic``.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

_PACKAGES = ("ecg-hpc", "tensorflow-cpu", "tensorflow", "horovod", "submitit", "numpy", "scipy", "pandas",
             "scikit-learn", "wfdb")


def utc_now() -> str:
    """Current time as an ISO 8601 UTC string (second resolution), the format used in run.json."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def code_version() -> str:
    """Git commit of the installed source tree (with ``-dirty`` when modified), else the package version."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        from ecg_hpc import __version__
        return __version__


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide a run's numbers (absent ones are left out)."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def environment_info() -> dict[str, Any]:
    """What ran the job: host, Python, code and package versions, and the SLURM job ids if any."""
    slurm = {k: v for k, v in os.environ.items()
             if k in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_NODELIST",
                      "SLURM_NTASKS", "SLURM_RESTART_COUNT")}
    return {
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "code_version": code_version(),
        "packages": package_versions(),
        "slurm": slurm,
    }
