"""Shared pytest fixtures: the project's real single-node SLURM, quiet TensorFlow, the shared data folder."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from ecg_hpc.runtime import configure_runtime

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
configure_runtime()  # the test session is an entry point too: set before any test imports TensorFlow

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
SLURM_SCRIPT = ROOT / "tests" / "cluster" / "slurm.sh"


@dataclass(frozen=True)
class SlurmCluster:
    """A running test cluster: its partition and the folder holding its state and logs."""

    partition: str
    state_dir: Path


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _cluster_running() -> bool:
    return subprocess.run([str(SLURM_SCRIPT), "status"], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the repository (real PhysioNet records), which tests read only."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"{SHARED_DATA} is missing: clone the project with ../shared beside it")
    return SHARED_DATA


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """Start the real single-node SLURM for the session (reuse one already running; stop what we started).

    Under CI a cluster that cannot start fails the test run; elsewhere the SLURM tests are skipped with the reason.
    """
    state_dir = Path(os.environ.get("ECG_HPC_SLURM_DIR", "/tmp/ecg-hpc-slurm"))
    started = False
    if not _cluster_running():
        if os.geteuid() != 0 and not _in_ci():
            pytest.skip("the test SLURM needs root (tests/cluster/slurm.sh start)")
        proc = subprocess.run([str(SLURM_SCRIPT), "start"], capture_output=True, text=True)
        if proc.returncode != 0:
            message = f"tests/cluster/slurm.sh start failed:\n{proc.stdout}\n{proc.stderr}"
            if _in_ci():
                pytest.fail(message)
            pytest.skip(message)
        started = True
    yield SlurmCluster(partition="debug", state_dir=state_dir)
    if started and not os.environ.get("ECG_HPC_KEEP_SLURM"):
        subprocess.run([str(SLURM_SCRIPT), "stop"], capture_output=True)
