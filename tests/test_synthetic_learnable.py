"""Synthetic challenge classes are learnable from rhythm (RR intervals) but not trivial, nor given by amplitude."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import balanced_accuracy_score, recall_score
from sklearn.model_selection import cross_val_predict

from ecg_hpc.data import synth_physionet
from ecg_hpc.data.physionet2017 import CLASSES, FS

PER_CLASS = 60
pytestmark = pytest.mark.slow  # 240 records and two 5-fold random forests: a few CPU seconds


@pytest.fixture(scope="module")
def features() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RR-interval features, amplitude/length features and labels of 60 synthetic records per class."""
    rng = np.random.default_rng(2017)
    rr_feats, amp_feats, labels = [], [], []
    for i in range(PER_CLASS * len(CLASSES)):
        label = i % len(CLASSES)
        val, positions, _ = synth_physionet.physionet_record(rng, CLASSES[label])
        rr = np.diff(positions) / FS
        step = np.abs(np.diff(rr))
        rr_feats.append([rr.mean(), rr.std() / rr.mean(), np.sqrt(np.mean(step ** 2)) / rr.mean(),
                         np.mean(step > 0.05), rr.min() / rr.mean(), rr.max() / rr.mean()])
        mv = val / 1000.0
        amp_feats.append([mv.std(), np.abs(mv).max(), np.percentile(mv, 99) - np.percentile(mv, 1), mv.size / FS])
        labels.append(label)
    return np.array(rr_feats), np.array(amp_feats), np.array(labels)


def _cv_predict(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return cross_val_predict(RandomForestClassifier(n_estimators=100, random_state=0), x, y, cv=5)


def test_rr_features_beat_chance_but_are_not_perfect(features) -> None:
    rr, _, y = features
    score = balanced_accuracy_score(y, _cv_predict(rr, y))
    print(f"\nRR-interval classifier, balanced accuracy {score:.2f} (chance 0.25)")
    assert 0.45 < score < 0.9


def test_amplitude_and_length_do_not_identify_the_rhythm_classes(features) -> None:
    rr, amp, y = features
    pred = _cv_predict(amp, y)
    recall = dict(zip(CLASSES, recall_score(y, pred, average=None)))
    score = balanced_accuracy_score(y, pred)
    print(f"\namplitude/length classifier, balanced accuracy {score:.2f}, recall {recall}")
    assert all(recall[c] < 0.5 for c in "ANO")  # near chance for the rhythm classes
    assert score < balanced_accuracy_score(y, _cv_predict(rr, y)) - 0.1
