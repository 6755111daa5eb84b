"""``train|val|test_predictions.csv``: one row per record with its true one-hot label and class probabilities.

Layout (the authors' published one, see ``ecg_hpc.records``): ``record_name, true_A, true_N, true_O, true_~,
prob_A, prob_N, prob_O, prob_~`` with the class order of the prepared data. Probabilities are written with the
shortest repr that round-trips the float32 value, so equal predictions give byte-identical files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ecg_hpc.atomic import atomic_write_csv
from ecg_hpc.train.metrics import one_hot


def prediction_header(classes: Sequence[str]) -> list[str]:
    """The CSV header for ``classes``."""
    return ["record_name", *(f"true_{c}" for c in classes), *(f"prob_{c}" for c in classes)]


def write_predictions(path: str | Path, names: Sequence[str], labels: np.ndarray, prob: np.ndarray,
                      classes: Sequence[str]) -> Path:
    """Write one predictions CSV atomically; ``labels`` are class indices, ``prob`` is (n, len(classes))."""
    prob = np.asarray(prob, dtype=np.float32)
    if prob.shape != (len(names), len(classes)) or len(labels) != len(names):
        raise ValueError(f"{path}: {len(names)} names, {len(labels)} labels and probabilities of shape "
                         f"{prob.shape} do not match {len(classes)} classes")
    true = one_hot(labels, len(classes)).astype(int)
    rows = ([str(name), *t.tolist(), *(str(p) for p in ps)]
            for name, t, ps in zip(names, true, prob))
    return atomic_write_csv(path, prediction_header(classes), rows)
