"""Shared pytest fixtures: the project's real single-node and two-node SLURM, quiet TensorFlow, the real records in
tests/data."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
REAL_DATA = ROOT / "tests" / "data"
SLURM_SCRIPT = ROOT / "tests" / "cluster" / "slurm.sh"
MULTINODE_SCRIPT = ROOT / "tests" / "cluster" / "multinode.sh"


@dataclass(frozen=True)
class SlurmCluster:
    """A running test cluster: its partition and the folder holding its state and logs."""

    partition: str
    state_dir: Path


@dataclass(frozen=True)
class MultinodeCluster:
    """The running two-node test cluster. Slurm clients must run inside it: ``run`` starts them on its login node."""

    script: Path
    nodes: tuple[str, ...]

    def command(self, *argv: str) -> list[str]:
        """``argv`` as a command line that runs on the login node (``multinode.sh exec``)."""
        return [str(self.script), "exec", *argv]

    def run(self, *argv: str, timeout: float = 600, **kwargs: object) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` on the login node from the repository root; capture its output as text."""
        kwargs.setdefault("cwd", ROOT)
        return subprocess.run(self.command(*argv), capture_output=True, text=True, timeout=timeout,
                              **kwargs)  # type: ignore[call-overload]


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _cluster_running() -> bool:
    return subprocess.run([str(SLURM_SCRIPT), "status"], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def real_data() -> Path:
    """``tests/data``: the real PhysioNet records kept in the repository (see its README), which tests read only."""
    return REAL_DATA


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """Start the real single-node SLURM for the session (reuse one already running; stop what we started).

    Under CI a cluster that cannot start fails the test run; elsewhere the SLURM tests are skipped with the reason.
    """
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
    state_dir = subprocess.run([str(SLURM_SCRIPT), "state-dir"], capture_output=True, text=True).stdout.strip()
    yield SlurmCluster(partition="debug", state_dir=Path(state_dir))
    if started and not os.environ.get("ECG_HPC_KEEP_SLURM"):
        subprocess.run([str(SLURM_SCRIPT), "stop"], capture_output=True)


@pytest.fixture(scope="session")
def multinode_cluster() -> Iterator[MultinodeCluster]:
    """Start the two-node test SLURM (tests/cluster/multinode.sh) for the session, reuse a running one, and stop
    what this session started. Under CI a cluster that cannot start fails the run; elsewhere its tests skip."""
    started = False
    if subprocess.run([str(MULTINODE_SCRIPT), "status"], capture_output=True).returncode != 0:
        if os.geteuid() != 0 and not _in_ci():
            pytest.skip("the two-node test SLURM needs root (tests/cluster/multinode.sh start)")
        proc = subprocess.run([str(MULTINODE_SCRIPT), "start"], capture_output=True, text=True)
        if proc.returncode != 0:
            message = f"tests/cluster/multinode.sh start failed:\n{proc.stdout}\n{proc.stderr}"
            if _in_ci():
                pytest.fail(message)
            pytest.skip(message)
        started = True
    try:
        yield MultinodeCluster(script=MULTINODE_SCRIPT, nodes=("node1", "node2"))
    finally:
        if started and not os.environ.get("ECG_HPC_KEEP_MULTINODE"):
            subprocess.run([str(MULTINODE_SCRIPT), "stop"], capture_output=True)
