"""Classification scores of the study: the prediction rule and macro/per-class F1 (docs/design-facts.md).

A prediction is the one-hot of ``prob >= row max`` (ties mark every tied class, as in the authors' code); F1 is
computed per class on those indicator matrices and averaged without weights (macro). A class that is neither
true nor predicted anywhere scores 0, as scikit-learn's ``f1_score`` does by default. The PhysioNet/CinC 2017
challenge scored the mean F1 of N, A and O only (noise excluded): ``challenge_f1``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

VAL_METRICS = ("f1", "loss")  # scores that can pick the kept weights of a fine-tuning run
CHALLENGE_CLASSES = ("N", "A", "O")  # the classes the 2017 challenge averaged


def predict_indicator(prob: np.ndarray) -> np.ndarray:
    """Boolean (n, k) matrix marking, per row, the classes whose probability equals the row maximum."""
    prob = np.asarray(prob)
    if prob.ndim != 2:
        raise ValueError(f"probabilities must be a 2-D (records, classes) array, got shape {prob.shape}")
    return prob >= prob.max(axis=1, keepdims=True)


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Boolean (n, num_classes) one-hot matrix of integer class indices."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be a 1-D array of class indices, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"class indices must lie in [0, {num_classes}), got {labels.min()}..{labels.max()}")
    out = np.zeros((labels.size, num_classes), dtype=bool)
    out[np.arange(labels.size), labels.astype(np.int64)] = True
    return out


def per_class_f1(labels: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """F1 of each class (length k) for integer ``labels`` and (n, k) probabilities, with the study's rule."""
    pred = predict_indicator(prob)
    true = one_hot(labels, pred.shape[1])
    if true.shape[0] != pred.shape[0]:
        raise ValueError(f"{true.shape[0]} labels but {pred.shape[0]} rows of probabilities")
    tp = np.sum(true & pred, axis=0)
    fp = np.sum(~true & pred, axis=0)
    fn = np.sum(true & ~pred, axis=0)
    denom = 2 * tp + fp + fn
    return np.divide(2.0 * tp, denom, out=np.zeros(len(tp), dtype=np.float64), where=denom > 0)


def confusion_counts(labels: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """(k, k) counts of true class (rows) against predicted class (columns) under the study's rule; a record
    whose maximum is tied between classes counts 1/m in each of its m predicted columns, so rows sum to the
    number of records of their class."""
    pred = predict_indicator(prob)
    true = one_hot(labels, pred.shape[1])
    share = pred / pred.sum(axis=1, keepdims=True)
    return true.T.astype(np.float64) @ share


def challenge_f1(f1: Mapping[str, float]) -> float:
    """The challenge's score: mean of the per-class F1 of N, A and O (KeyError naming a missing class)."""
    return float(np.mean([f1[c] for c in CHALLENGE_CLASSES]))


def f1_report(labels: np.ndarray, prob: np.ndarray, classes: Sequence[str]) -> dict[str, object]:
    """``{"macro_f1": x, "challenge_f1": x, "f1": {class: x}}``: the scores written to run.json and history.csv
    (``challenge_f1`` only when the classes include N, A and O)."""
    scores = per_class_f1(labels, prob)
    if len(classes) != len(scores):
        raise ValueError(f"{len(classes)} class names for {len(scores)} probability columns")
    per_class = {name: float(s) for name, s in zip(classes, scores)}
    report: dict[str, object] = {"macro_f1": float(scores.mean()), "f1": per_class}
    if set(CHALLENGE_CLASSES) <= set(per_class):
        report["challenge_f1"] = challenge_f1(per_class)
    return report
