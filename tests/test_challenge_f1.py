"""Challenge F1 (mean F1 of N, A, O) and 4-class macro F1 of a hand-made predictions CSV, against a worked example."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from analysis.collect import collect
from ecg_hpc.records import RANDOM, FinetuneRun, InitSource, Scores, write_record
from ecg_hpc.train.metrics import challenge_f1, confusion_counts, f1_report
from ecg_hpc.train.predictions import read_predictions

# Twelve test records; a prediction marks every class whose probability equals the row maximum (DESIGN.md).
#   record  true  predicted      record  true  predicted
#   r01     A     A              r07     N     O
#   r02     A     A              r08     O     O
#   r03     A     N              r09     O     N
#   r04     N     N              r10     ~     O
#   r05     N     N              r11     ~     ~
#   r06     N     N              r12     N     N and O (tie 0.45 / 0.45)
PREDICTIONS = """record_name,true_A,true_N,true_O,true_~,prob_A,prob_N,prob_O,prob_~
r01,1,0,0,0,0.7,0.1,0.1,0.1
r02,1,0,0,0,0.6,0.2,0.1,0.1
r03,1,0,0,0,0.3,0.5,0.1,0.1
r04,0,1,0,0,0.1,0.8,0.05,0.05
r05,0,1,0,0,0.05,0.9,0.03,0.02
r06,0,1,0,0,0.2,0.4,0.3,0.1
r07,0,1,0,0,0.1,0.3,0.5,0.1
r08,0,0,1,0,0.1,0.2,0.6,0.1
r09,0,0,1,0,0.1,0.5,0.3,0.1
r10,0,0,0,1,0.1,0.2,0.4,0.3
r11,0,0,0,1,0.1,0.1,0.1,0.7
r12,0,1,0,0,0.05,0.45,0.45,0.05
"""
# Worked by hand, F1 = 2 TP / (2 TP + FP + FN):
#   A: TP r01 r02 = 2, FP none = 0, FN r03 = 1            -> 4 / 5  = 0.8
#   N: TP r04 r05 r06 r12 = 4, FP r03 r09 = 2, FN r07 = 1 -> 8 / 11 = 0.727272...
#   O: TP r08 = 1, FP r07 r10 r12 = 3, FN r09 = 1         -> 2 / 6  = 0.333333...
#   ~: TP r11 = 1, FP none = 0, FN r10 = 1                -> 2 / 3  = 0.666666...
# 4-class macro F1  = (0.8 + 8/11 + 1/3 + 2/3) / 4 = 0.631818...
# challenge F1      = (8/11 + 0.8 + 1/3) / 3       = 0.620202...  (noise excluded, as the challenge scored)
F1 = {"A": 4 / 5, "N": 8 / 11, "O": 2 / 6, "~": 2 / 3}
MACRO = (4 / 5 + 8 / 11 + 2 / 6 + 2 / 3) / 4
CHALLENGE = (8 / 11 + 4 / 5 + 2 / 6) / 3


@pytest.fixture()
def predictions_csv(tmp_path: Path) -> Path:
    path = tmp_path / "test_predictions.csv"
    path.write_text(PREDICTIONS, encoding="utf-8")
    return path


def test_challenge_and_macro_f1_of_the_worked_example(predictions_csv: Path) -> None:
    names, labels, prob, classes = read_predictions(predictions_csv)
    assert classes == ["A", "N", "O", "~"] and names[0] == "r01" and len(names) == 12
    report = f1_report(labels, prob, classes)
    assert report["f1"] == pytest.approx(F1, abs=1e-12)
    assert report["macro_f1"] == pytest.approx(MACRO, abs=1e-12)
    assert report["challenge_f1"] == pytest.approx(CHALLENGE, abs=1e-12)
    assert challenge_f1(report["f1"]) == pytest.approx(0.6202020202, abs=1e-9)
    assert MACRO == pytest.approx(0.6318181818, abs=1e-9)


def test_confusion_counts_split_a_tie_and_keep_row_totals(predictions_csv: Path) -> None:
    _, labels, prob, _ = read_predictions(predictions_csv)
    counts = confusion_counts(labels, prob)
    # rows true A N O ~, columns predicted A N O ~; r12 (true N) counts half as N and half as O
    expected = np.array([[2, 1, 0, 0], [0, 3.5, 1.5, 0], [0, 1, 1, 0], [0, 0, 1, 1]])
    np.testing.assert_allclose(counts, expected)
    np.testing.assert_allclose(counts.sum(axis=1), np.bincount(labels, minlength=4))


def test_report_reads_challenge_f1_and_confusion_from_a_run(predictions_csv: Path, tmp_path: Path) -> None:
    run = tmp_path / "runs" / "random" / "seed_1"
    run.mkdir(parents=True)
    (run / "test_predictions.csv").write_text(PREDICTIONS, encoding="utf-8")
    _, labels, prob, classes = read_predictions(predictions_csv)
    report = f1_report(labels, prob, classes)
    write_record(run, FinetuneRun(status="done", seed=1, arch="resnet18", init=InitSource(RANDOM), epochs_run=1,
                                  test=Scores(float(report["macro_f1"]), dict(report["f1"]))))
    collection = collect(tmp_path / "runs", progress=False)
    row = collection.runs.iloc[0]
    assert row["challenge_f1"] == pytest.approx(CHALLENGE, abs=1e-12) and row["macro_f1"] == pytest.approx(MACRO)
    cell = collection.confusion.query("true == 'N' and pred == 'O'")["count"]
    assert cell.tolist() == [1.5]


@pytest.mark.parametrize("text, message", [
    ("record_name,true_A,prob_B\nr1,1,0.5\n", "header"),
    ("record_name,true_A,true_N,prob_A,prob_N\nr1,1,1,0.5,0.5\n", "exactly one true_"),
    ("record_name,true_A,true_N,prob_A,prob_N\nr1,1,0,x,0.5\n", "non-numeric"),
])
def test_a_broken_predictions_csv_is_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "test_predictions.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message) as caught:
        read_predictions(path)
    assert str(path) in str(caught.value)
