"""The scaled-down demo end to end: synthetic data -> store -> pretraining on two fractions through the test SLURM
-> fine-tuning sweep as a job array -> report, through the same commands a user runs."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from ecg_hpc.hpc.manifest import read_manifest
from ecg_hpc.records import read_record
from ecg_hpc.train.pretrain import job_dir_name

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "launch" / "demo.py"
TINY = runpy.run_path(str(DEMO))["SCALES"]["tiny"]
pytestmark = [pytest.mark.e2e, pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(2400)]


def test_tiny_demo_runs_end_to_end_through_slurm(slurm_cluster, tmp_path: Path) -> None:
    work = tmp_path / "demo"
    env = dict(os.environ, ECG_HPC_CONFIG=str(tmp_path / "ecg-hpc.toml"))  # not the checkout's own settings
    proc = subprocess.run([sys.executable, str(DEMO), "--scale", "tiny", "--workdir", str(work)],
                          cwd=REPO, capture_output=True, text=True, timeout=1500, env=env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "jobs run on the SLURM cluster" in proc.stdout
    # Two pretraining runs with two Horovod workers each, finished.
    for frac in (0.5, 1.0):
        run_dir = work / "runs" / "pretrain" / job_dir_name("beat", "resnet18", TINY.frame_size, frac, seed=0)
        info = read_record(run_dir)
        assert info.status == "done" and info.world_size == 2 and info.frac == frac
        assert (run_dir / "epoch_01" / "feature_extractor").is_dir()
    # random + 2 checkpoints, on half of the labelled records, x 2 seeds, all done with their predictions.
    manifest = read_manifest(work / "runs" / "finetune" / "manifest.jsonl")
    assert len(manifest) == 6 and len({(t.scenario, t.seed) for t in manifest}) == 6
    assert {t.label_frac for t in manifest} == {0.5}
    for task in manifest:
        run = read_record(task.job_dir)
        assert run.status == "done", run
        assert (Path(task.job_dir) / "test_predictions.csv").is_file()
    report = (work / "reports" / "report.md").read_text()
    assert "Table 1" in report and "beat, 50 % of patients, epoch 1" in report
    summary = (work / "reports" / "summary.md").read_text()
    assert "random init" in summary and "Pretrained vs random init" in summary and "Generated" not in summary
    for fig in ("fig_val_f1.png", "fig_fraction.png", "fig_per_class.png", "fig_confusion.pdf"):
        assert (work / "reports" / fig).stat().st_size > 1000
    # Running it again finds every stage done and runs no job.
    again = subprocess.run([sys.executable, str(DEMO), "--scale", "tiny", "--workdir", str(work)],
                           cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    assert "nothing to run: every planned task is done" in again.stdout
    assert "submitted" not in again.stdout
