"""The prediction rule, F1 scores and the stratified validation split used by fine-tuning."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from ecg_hpc.errors import ConfigError
from ecg_hpc.train.metrics import f1_report, per_class_f1, predict_indicator
from ecg_hpc.data.splits import stratified_holdout

CLASSES = ("A", "N", "O", "~")


def test_prediction_marks_all_tied_maxima():
    prob = np.array([[0.1, 0.7, 0.1, 0.1], [0.4, 0.4, 0.1, 0.1]])
    assert predict_indicator(prob).tolist() == [[False, True, False, False], [True, True, False, False]]


def test_f1_hand_computed():
    labels = np.array([0, 1, 1, 2])
    prob = np.array([[.9, .1, 0, 0], [.1, .9, 0, 0], [.6, .4, 0, 0], [0, 0, .2, .8]])
    # A: tp1 fp1 fn0 -> 2/3; N: tp1 fn1 -> 2/3; O: fn1 -> 0; ~: fp1 -> 0
    report = f1_report(labels, prob, CLASSES)
    assert report["f1"] == pytest.approx({"A": 2 / 3, "N": 2 / 3, "O": 0.0, "~": 0.0})
    assert report["macro_f1"] == pytest.approx(1 / 3)


def test_f1_matches_scikit_learn_on_random_scores_with_ties():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, 300)
    prob = rng.integers(0, 3, (300, 4)).astype(float)  # many ties on purpose
    true = np.eye(4, dtype=int)[labels]
    expected = f1_score(true, predict_indicator(prob).astype(int), average=None, zero_division=0)
    np.testing.assert_allclose(per_class_f1(labels, prob), expected)


def test_f1_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="labels"):
        per_class_f1(np.array([0, 1]), np.ones((3, 4)))
    with pytest.raises(ValueError, match="class indices"):
        per_class_f1(np.array([0, 4]), np.ones((2, 4)))


def test_split_is_stratified_disjoint_and_complete():
    labels = np.repeat([0, 1, 2, 3], [60, 500, 240, 20])
    keep, held = stratified_holdout(labels, 0.0625, np.random.default_rng(7))
    assert len(held) == round(0.0625 * len(labels))
    assert np.intersect1d(keep, held).size == 0
    assert np.array_equal(np.sort(np.concatenate([keep, held])), np.arange(len(labels)))
    assert np.bincount(labels[held], minlength=4).tolist() == [4, 31, 15, 1]


def test_split_depends_only_on_seed():
    labels = np.random.default_rng(0).integers(0, 4, 200)
    a = stratified_holdout(labels, 0.1, np.random.default_rng(10))
    b = stratified_holdout(labels, 0.1, np.random.default_rng(10))
    c = stratified_holdout(labels, 0.1, np.random.default_rng(20))
    assert np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


@pytest.mark.parametrize("fraction", [0.0, 1.0, 0.001])
def test_split_rejects_empty_sides(fraction):
    with pytest.raises(ConfigError, match="--val-size"):
        stratified_holdout(np.zeros(50, dtype=int), fraction, np.random.default_rng(0))
