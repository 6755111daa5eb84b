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


def read_predictions(path: str | Path) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """A predictions CSV as (record names, class indices, (n, k) probabilities, class names); ValueError naming
    the file when its header or values do not follow the layout."""
    import pandas as pd

    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype={"record_name": str}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: unreadable ({exc})") from None
    classes = [c[len("true_"):] for c in frame.columns if c.startswith("true_")]
    if not classes or list(frame.columns) != prediction_header(classes):
        raise ValueError(f"{path}: header is not record_name, true_<class>..., prob_<class>...")
    try:
        true = frame[[f"true_{c}" for c in classes]].to_numpy(dtype=np.float64)
        prob = frame[[f"prob_{c}" for c in classes]].to_numpy(dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"{path}: non-numeric values ({exc})") from None
    if not (np.isin(true, (0.0, 1.0)).all() and (true.sum(axis=1) == 1).all()) or not np.isfinite(prob).all():
        raise ValueError(f"{path}: each row needs exactly one true_ class set to 1 and finite probabilities")
    return frame["record_name"].tolist(), true.argmax(axis=1), prob, classes
