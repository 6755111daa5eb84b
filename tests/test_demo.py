"""The scaled-down demo end to end: synthetic data -> store -> pretraining on two fractions through the test SLURM
-> fine-tuning sweep as a job array -> report, through the same commands a user runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ecg_hpc.demo import REPO
from ecg_hpc.hpc.sweep import read_manifest

pytestmark = [pytest.mark.e2e, pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(2400)]


def test_tiny_demo_runs_end_to_end_through_slurm(slurm_cluster, tmp_path: Path) -> None:
    work = tmp_path / "demo"
    env = dict(os.environ, ECG_HPC_CONFIG=str(tmp_path / "ecg-hpc.toml"))  # not the checkout's own settings
    proc = subprocess.run([sys.executable, "-m", "ecg_hpc.demo", "--scale", "tiny", "--workdir", str(work)],
                          cwd=REPO, capture_output=True, text=True, timeout=1500, env=env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "jobs run on the SLURM cluster" in proc.stdout
    # Two pretraining runs with two Horovod workers each, finished.
    for frac in ("0.5", "1"):
        info = json.loads((work / "runs" / "pretrain" / f"beat_frac{frac}" / "run.json").read_text())
        assert info["status"] == "done" and info["world_size"] == 2 and info["frac"] == float(frac)
        assert (work / "runs" / "pretrain" / f"beat_frac{frac}" / "epoch_01" / "feature_extractor").is_dir()
    # random + 2 checkpoints, on half of the labelled records, x 2 seeds, all done with their predictions.
    manifest = read_manifest(work / "runs" / "finetune" / "manifest.jsonl")
    assert len(manifest) == 6 and len({(t.scenario, t.seed) for t in manifest}) == 6
    assert {t.label_frac for t in manifest} == {0.5}
    for task in manifest:
        run = json.loads((Path(task.job_dir) / "run.json").read_text())
        assert run["status"] == "done", run
        assert (Path(task.job_dir) / "test_predictions.csv").is_file()
    report = (work / "reports" / "report.md").read_text()
    assert "Table 1" in report and "beat, 50 % of patients, epoch 1" in report
    summary = (work / "reports" / "summary.md").read_text()
    assert "random init" in summary and "Pretrained vs random init" in summary and "Generated" not in summary
    for fig in ("fig_val_f1.png", "fig_fraction.png", "fig_per_class.png", "fig_confusion.pdf"):
        assert (work / "reports" / fig).stat().st_size > 1000
    # Running it again finds every stage done and runs no job.
    again = subprocess.run([sys.executable, "-m", "ecg_hpc.demo", "--scale", "tiny", "--workdir", str(work)],
                           cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    assert "nothing to run: every planned task is done" in again.stdout
    assert "submitted" not in again.stdout
