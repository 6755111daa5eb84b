"""The report on run directories written by the real fine-tuning sweep (tiny synthetic data, width 0.125)."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import numpy as np
import pytest

from analysis.report import main as report_main
from ecg_hpc.hpc import sweep
from ecg_hpc.hpc.manifest import read_manifest
from ecg_hpc.records import read_record
from tests.test_finetune import TINY, make_checkpoint, make_prepared

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
CLASSES = ("A", "N", "O", "~")


def f1_from_predictions(path: Path) -> float:
    """Macro F1 of a predictions CSV by the design-facts rule, counted by hand: predicted = prob >= row max."""
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    true = np.array([[float(r[f"true_{c}"]) for c in CLASSES] for r in rows]) > 0.5
    prob = np.array([[float(r[f"prob_{c}"]) for c in CLASSES] for r in rows])
    pred = prob >= prob.max(axis=1, keepdims=True)
    scores = []
    for k in range(len(CLASSES)):
        tp = np.sum(pred[:, k] & true[:, k])
        fp, fn = np.sum(pred[:, k] & ~true[:, k]), np.sum(~pred[:, k] & true[:, k])
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(scores))


def test_report_of_a_real_sweep(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = make_prepared(tmp_path)
    runs = tmp_path / "runs"
    make_checkpoint(runs / "pretrain" / "beat_tiny")
    assert sweep.main(["plan", "--data", str(data), "--pretrain", str(runs / "pretrain" / "beat_tiny"),
                       "--seeds", "1,2", "--sweep-dir", str(runs / "finetune"), *TINY]) == 0
    manifest = runs / "finetune" / "manifest.jsonl"
    # job_dir is stored relative to the manifest's folder (a copied runs tree still matches)
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert [line["job_dir"] for line in lines] == [f"{t.scenario}/seed_{t.seed}" for t in read_manifest(manifest)]
    tasks = read_manifest(manifest)
    assert len(tasks) == 4
    left_out = tasks[-1]
    ran = [t for t in tasks if t is not left_out]
    assert sweep.main(["run-task", "--manifest", str(runs / "finetune" / "manifest.jsonl"),
                       *(arg for t in ran for arg in ("--index", str(t.index)))]) == 0

    out = tmp_path / "reports"
    assert report_main(["--runs", str(runs), "--out", str(out), "--quiet", "--resamples", "500"]) == 0
    printed = capsys.readouterr().out
    with (out / "table1.csv").open(newline="", encoding="utf-8") as fh:
        table1 = {row["scenario"]: row for row in csv.DictReader(fh)}
    by_scenario: dict[str, list[Path]] = {}
    for t in ran:
        info = read_record(t.job_dir)
        label = "random -> resnet18 x0.125" if info.init.source == "random" else \
            "beat resnet18 f4096 100% ep1 -> resnet18 x0.125"
        by_scenario.setdefault(label, []).append(Path(t.job_dir))
    assert set(table1) == set(by_scenario)
    for label, dirs in by_scenario.items():
        macro = [read_record(d).test.macro_f1 for d in dirs]
        # the report's number is run.json's, which is the design-facts F1 of the run's test predictions
        assert macro == pytest.approx([f1_from_predictions(d / "test_predictions.csv") for d in dirs], abs=1e-9)
        assert int(table1[label]["n"]) == len(dirs)
        assert float(table1[label]["macro_f1_mean"]) == pytest.approx(statistics.mean(macro), abs=1e-12)
    with (out / "epochs.csv").open(newline="", encoding="utf-8") as fh:
        assert {float(r["epochs_run_mean"]) for r in csv.DictReader(fh)} == {2.0}
    with (out / "problems.csv").open(newline="", encoding="utf-8") as fh:
        problems = list(csv.DictReader(fh))
    assert [(p["problem"], p["seed"]) for p in problems] == [("missing", str(left_out.seed))]
    assert left_out.job_dir.endswith(problems[0]["run_dir"])
    assert "missing" in printed
    assert (out / "fig_val_f1.png").stat().st_size > 10_000
