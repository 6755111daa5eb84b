"""Smoke tests of the project's real single-node SLURM: sbatch, arrays, srun, sacct, scancel and submitit."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"}


def _sbatch(*args: str) -> str:
    out = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True, check=True).stdout
    return out.strip().split(";")[0]


def _states(job_id: str) -> dict[str, tuple[str, str]]:
    """Accounting state and exit code per job (array tasks appear as ID_INDEX)."""
    out = subprocess.run(["sacct", "-X", "-P", "-n", "-j", job_id, "-o", "JobID,State,ExitCode"],
                         capture_output=True, text=True, check=True).stdout
    rows = (line.split("|") for line in out.splitlines() if line.strip())
    return {jid: (state.split()[0], code) for jid, state, code in rows}


def _wait(job_id: str, expect: int = 1, timeout: float = 90.0) -> dict[str, tuple[str, str]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = _states(job_id)
        if len(states) >= expect and all(s in TERMINAL for s, _ in states.values()):
            return states
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} not finished after {timeout}s: {_states(job_id)}")


def test_sbatch_completed_and_failed_states(slurm_cluster, tmp_path: Path) -> None:
    ok = _sbatch("-o", str(tmp_path / "ok.out"), "--wrap", "echo hello-from-slurm")
    bad = _sbatch("-o", str(tmp_path / "bad.out"), "--wrap", "exit 3")
    assert _wait(ok) == {ok: ("COMPLETED", "0:0")}
    assert _wait(bad) == {bad: ("FAILED", "3:0")}
    assert (tmp_path / "ok.out").read_text().strip() == "hello-from-slurm"


def test_array_runs_every_index(slurm_cluster, tmp_path: Path) -> None:
    job = _sbatch("--array=0-3", "-o", str(tmp_path / "a_%a.out"), "--wrap", "echo $SLURM_ARRAY_TASK_ID")
    states = _wait(job, expect=4)
    assert sorted(states) == [f"{job}_{i}" for i in range(4)]
    assert all(state == "COMPLETED" for state, _ in states.values())
    assert [(tmp_path / f"a_{i}.out").read_text().strip() for i in range(4)] == ["0", "1", "2", "3"]


def test_two_tasks_with_srun(slurm_cluster, tmp_path: Path) -> None:
    job = _sbatch("-n", "2", "-o", str(tmp_path / "srun.out"), "--wrap",
                  "srun bash -c 'echo rank=$SLURM_PROCID of $SLURM_NTASKS'")
    assert _wait(job)[job][0] == "COMPLETED"
    lines = sorted(line for line in (tmp_path / "srun.out").read_text().splitlines() if line.startswith("rank="))
    assert lines == ["rank=0 of 2", "rank=1 of 2"]


def test_scancel_cancels_a_running_job(slurm_cluster, tmp_path: Path) -> None:
    job = _sbatch("-o", str(tmp_path / "sleep.out"), "--wrap", "sleep 300")
    deadline = time.monotonic() + 30
    while _states(job).get(job, ("PENDING", ""))[0] != "RUNNING":
        assert time.monotonic() < deadline, "job never started"
        time.sleep(0.3)
    subprocess.run(["scancel", job], check=True)
    assert _wait(job)[job][0] == "CANCELLED"


def _square(x: int) -> int:
    return x * x


def _fail() -> None:
    raise RuntimeError("deliberate failure inside a SLURM job")


def test_submitit_submit_result_and_map_array(slurm_cluster, tmp_path: Path) -> None:
    submitit = pytest.importorskip("submitit")
    executor = submitit.AutoExecutor(folder=tmp_path / "logs")
    assert executor.cluster == "slurm"
    executor.update_parameters(timeout_min=5, slurm_partition=slurm_cluster.partition, cpus_per_task=1)
    assert executor.submit(_square, 7).result() == 49
    jobs = executor.map_array(_square, [1, 2, 3])
    assert [j.result() for j in jobs] == [1, 4, 9]
    failing = executor.submit(_fail)
    with pytest.raises(submitit.core.utils.FailedJobError, match="deliberate failure"):
        failing.result()
