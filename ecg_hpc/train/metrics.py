"""Classification scores of the study: the prediction rule and macro/per-class F1 (docs/design-facts.md).

A prediction is the one-hot of ``prob >= row max`` (ties mark every tied class, as in the authors' code); F1 is
computed per class on those indicator matrices and averaged without weights (macro). A class that is neither
true nor predicted anywhere scores 0, as scikit-learn's ``f1_score`` does by default.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

VAL_METRICS = ("f1", "loss")  # scores that can pick the kept weights of a fine-tuning run


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


def f1_report(labels: np.ndarray, prob: np.ndarray, classes: Sequence[str]) -> dict[str, object]:
    """``{"macro_f1": x, "f1": {class: x}}``: the scores written to run.json and history.csv."""
    scores = per_class_f1(labels, prob)
    if len(classes) != len(scores):
        raise ValueError(f"{len(classes)} class names for {len(scores)} probability columns")
    return {"macro_f1": float(scores.mean()), "f1": {name: float(s) for name, s in zip(classes, scores)}}
