"""Label efficiency: stratified nested subsets of the training records, the sweep axis, the trainer's record of it,
and a tiny label-efficiency sweep end to end (local processes, and the test SLURM when one runs) with its report."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ecg_hpc.data.splits import nested_label_subset
from ecg_hpc.errors import ConfigError
from ecg_hpc.hpc import sweep
from ecg_hpc.hpc.manifest import read_manifest
from ecg_hpc.options import config_argv
from ecg_hpc.records import read_record
from tests.test_finetune import make_checkpoint, make_prepared

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--width", "0.125", "--epochs", "1", "--batch-size", "16", "--val-size", "0.25"]


def test_subsets_are_stratified_nested_and_seeded() -> None:
    labels = np.repeat([0, 1, 2, 3], [50, 300, 150, 20])
    fracs = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0)
    subsets = [nested_label_subset(labels, f, np.random.default_rng(7)) for f in fracs]
    for frac, subset in zip(fracs, subsets):
        counts = np.bincount(labels[subset], minlength=4)
        assert counts.tolist() == [int(np.ceil(frac * n)) for n in (50, 300, 150, 20)]  # every class kept
    for small, large in zip(subsets, subsets[1:]):
        assert set(small) < set(large)  # the 5 % set contains the 1 % set, and so on
    assert np.array_equal(subsets[-1], np.arange(labels.size))
    again = nested_label_subset(labels, 0.1, np.random.default_rng(7))
    other = nested_label_subset(labels, 0.1, np.random.default_rng(8))
    assert np.array_equal(again, subsets[2]) and not np.array_equal(other, subsets[2])
    with pytest.raises(ConfigError, match="--label-frac"):
        nested_label_subset(labels, 0.0, np.random.default_rng(7))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("label_eff")
    return {"root": root, "data": make_prepared(root, records=64), "pretrain": make_checkpoint(
        root / "pretrain" / "beat_tiny").parent}


def test_plan_has_a_label_fraction_axis(world, tmp_path, capsys) -> None:
    assert sweep.main(["plan", "--data", str(world["data"]), "--sweep-dir", str(tmp_path), *TINY, "--seeds", "1,2",
                       "--pretrain", str(world["pretrain"]), "--label-fracs", "0.25,1"]) == 0
    assert "8 tasks" in capsys.readouterr().out
    tasks = read_manifest(tmp_path / "manifest.jsonl")
    assert [(t.scenario, t.label_frac, t.seed) for t in tasks] == [
        (name, frac, seed) for base in ("random", "beat_tiny_epoch_01")
        for name, frac in ((f"{base}_labels0.25", 0.25), (base, 1.0)) for seed in (1, 2)]
    assert "--label-frac 0.25" in " ".join(config_argv(tasks[0].config))
    # planning the default fraction again changes nothing
    assert sweep.main(["plan", "--data", str(world["data"]), "--sweep-dir", str(tmp_path), *TINY, "--seeds", "1,2",
                       "--pretrain", str(world["pretrain"])]) == 0
    assert len(read_manifest(tmp_path / "manifest.jsonl")) == 8


@pytest.mark.parametrize("value", ["0", "1.5", "0.1,0.1", "a"])
def test_bad_label_fractions_are_refused_in_one_line(world, tmp_path, capsys, value) -> None:
    with pytest.raises(SystemExit) as caught:
        sweep.main(["plan", "--data", str(world["data"]), "--sweep-dir", str(tmp_path), "--label-fracs", value])
    assert caught.value.code == 2 and "--label-fracs" in capsys.readouterr().err
    assert not (tmp_path / "manifest.jsonl").exists()


def _names(path: Path) -> list[str]:
    with path.open(newline="") as fh:
        return [row["record_name"] for row in csv.DictReader(fh)]


@pytest.mark.slow
@pytest.mark.slurm
def test_tiny_label_efficiency_sweep_end_to_end(world, tmp_path, slurm_cluster) -> None:
    """random + a checkpoint x labelled fractions 0.25, 1 x seeds 1, 2 through launch/finetune.py on the test
    SLURM (the local path runs the same tasks: tests/test_interrupt.py), then the report: the label-efficiency
    table, the same test records for every fraction, nested training records."""
    cluster = ["--partition", slurm_cluster.partition, "--cpus-per-task", "1", "--time", "20"]
    sweep_dir = tmp_path / "runs" / "finetune"
    proc = subprocess.run([sys.executable, str(ROOT / "launch" / "finetune.py"), "--data", str(world["data"]),
                           "--sweep-dir", str(sweep_dir), "--pretrain", str(world["pretrain"]), "--seeds", "1,2",
                           "--label-fracs", "0.25,1", *TINY, *cluster, "--follow"],
                          capture_output=True, text=True, cwd=ROOT, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    tasks = read_manifest(sweep_dir / "manifest.jsonl")
    assert len(tasks) == 8 and all(sweep.task_status(t) == "done" for t in tasks)
    by_key = {(t.scenario, t.seed): Path(t.job_dir) for t in tasks}
    for seed in (1, 2):
        small, full = by_key[("random_labels0.25", seed)], by_key[("random", seed)]
        small_info, full_info = read_record(small), read_record(full)
        assert small_info.label_frac == 0.25 and full_info.label_frac == 1.0
        assert small_info.split["n_train"] < full_info.split["n_train"]
        assert small_info.split["n_train_pool"] == full_info.split["n_train"]
        assert _names(small / "test_predictions.csv") == _names(full / "test_predictions.csv")
        assert _names(small / "val_predictions.csv") == _names(full / "val_predictions.csv")
        assert set(_names(small / "train_predictions.csv")) < set(_names(full / "train_predictions.csv"))
        # the same seed draws the same subset whatever the init
        assert _names(small / "train_predictions.csv") == \
            _names(by_key[("beat_tiny_epoch_01_labels0.25", seed)] / "train_predictions.csv")
    out = tmp_path / "reports"
    report = subprocess.run([sys.executable, "-m", "analysis.report", "--runs", str(tmp_path / "runs"), "--out",
                             str(out), "--quiet", "--resamples", "200", "--summary", str(out / "summary.md")],
                            capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert report.returncode == 0, report.stdout + report.stderr
    text = (out / "report.md").read_text(encoding="utf-8")
    assert "## Label efficiency" in text and "| random init | 25% | 2 |" in text
    assert "| beat, 100 % of patients, epoch 1 | 100% | 2 |" in text
    assert "Label efficiency" in (out / "summary.md").read_text(encoding="utf-8")
    assert (out / "fig_label_efficiency.png").stat().st_size > 10_000
