"""A SLURM job that can never start (2 nodes on the 1-node test cluster, submitted by hand) is reported by
``--follow`` and ``sweep status`` in one line instead of being waited on."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
import submitit

from ecg_hpc.errors import ConfigError
from ecg_hpc.hpc import sweep
from ecg_hpc.hpc.executor import follow
from ecg_hpc.hpc.manifest import Task, write_manifest
from ecg_hpc.hpc.pending import stuck_jobs_logging_to, stuck_reason
from ecg_hpc.train.finetune import FinetuneConfig

pytestmark = pytest.mark.slurm


@pytest.fixture
def stuck_job(slurm_cluster, tmp_path: Path):
    """A two-node job logging below ``tmp_path/sweep``; cancelled (by its id) after the test."""
    (tmp_path / "sweep").mkdir()
    out = subprocess.run(["sbatch", "--parsable", f"--partition={slurm_cluster.partition}", "--nodes=2",
                          f"--output={tmp_path}/sweep/slurm-%j.out", "--wrap", "true"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"this SLURM refuses the job at submission instead: {out.stderr.strip()}")
    job_id = out.stdout.strip().split(";")[0]
    try:
        deadline = time.monotonic() + 30
        while stuck_reason(job_id) is None:  # the scheduler sets the reason on its first pass
            assert time.monotonic() < deadline, "no pending reason after 30 s"
            time.sleep(0.5)
        yield job_id
    finally:
        subprocess.run(["scancel", job_id], capture_output=True)


def test_stuck_job_is_reported_by_follow_and_sweep_status(stuck_job: str, tmp_path: Path, capsys) -> None:
    reason = stuck_reason(stuck_job)
    assert reason in ("PartitionNodeLimit", "PartitionConfig")  # Slurm 22.05 says the latter for too many nodes
    assert [job for job, _ in stuck_jobs_logging_to(tmp_path / "sweep")] == [stuck_job]
    assert stuck_jobs_logging_to(tmp_path / "elsewhere") == []
    job = submitit.SlurmJob(folder=tmp_path / "sweep", job_id=stuck_job)
    started = time.monotonic()
    with pytest.raises(ConfigError, match=f"SLURM job {stuck_job} is pending for Partition(NodeLimit|Config), which "
                                          f"waiting will not clear .* scancel {stuck_job}"):
        follow(job, poll_s=0.2)
    assert time.monotonic() - started < 30
    manifest = tmp_path / "sweep" / "manifest.jsonl"
    config = FinetuneConfig(data=str(tmp_path / "data.npz"), job_dir=str(tmp_path / "sweep" / "random" / "seed_1"),
                            seed=1, scenario="random")
    write_manifest(manifest, [Task(0, config)])
    assert sweep.main(["status", "--manifest", str(manifest)]) == 0
    (line,) = capsys.readouterr().err.strip().splitlines()  # the reason may flip between the two on each pass
    assert re.fullmatch(f"warning: SLURM job {stuck_job} is pending for (PartitionNodeLimit|PartitionConfig), which "
                        r"waiting will not clear \(the request exceeds what the partition offers, or it is "
                        f"unusable\\): cancel it with scancel {stuck_job} and submit again with a request that fits",
                        line), line
