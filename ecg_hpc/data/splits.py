"""Seeded stratified hold-out split: the test set of the prepared challenge data and the validation set of
fine-tuning (6.25 % of train, docs/design-facts.md)."""

from __future__ import annotations

import numpy as np

from ecg_hpc.errors import ConfigError


def stratified_holdout(labels: np.ndarray, fraction: float, rng: np.random.Generator,
                       option: str = "--val-size") -> tuple[np.ndarray, np.ndarray]:
    """Split indices of ``labels`` into (keep, holdout), ``round(fraction * n)`` held out, per class in proportion.

    Each class gives the floor of its exact share; the records still missing go to the classes with the largest
    remainders (ties to the lower class index). Which records of a class are held out is drawn from ``rng``, so
    the same labels and the same generator state give the same split. Both index arrays come back sorted.
    ``option`` names the user's option for ``fraction`` in error messages.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"{option} must lie strictly between 0 and 1, got {fraction}")
    n = labels.size
    n_holdout = int(round(fraction * n))
    if n_holdout < 1 or n_holdout >= n:
        raise ConfigError(f"{option} {fraction} of {n} records leaves one side of the split empty; use more "
                          "records or another fraction")
    classes, counts = np.unique(labels, return_counts=True)
    exact = n_holdout * counts / n
    share = np.floor(exact).astype(np.int64)
    missing = n_holdout - int(share.sum())
    order = sorted(range(len(classes)), key=lambda i: (-(exact[i] - share[i]), i))
    for i in order[:missing]:
        share[i] += 1
    holdout = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, share)]
    holdout_idx = np.sort(np.concatenate(holdout))
    keep = np.ones(n, dtype=bool)
    keep[holdout_idx] = False
    return np.flatnonzero(keep), holdout_idx


def nested_label_subset(labels: np.ndarray, fraction: float, rng: np.random.Generator,
                        option: str = "--label-frac") -> np.ndarray:
    """Sorted indices of a stratified ``fraction`` of ``labels`` (label-efficiency runs), nested across fractions.

    Each class keeps ``ceil(fraction * its count)`` records (so every class present stays present), the first ones
    of one permutation per class drawn from ``rng``. A given generator state gives one order per class whatever the
    fraction, and the kept counts grow with it, so a smaller fraction's set lies inside a larger one's.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"{option} must lie in (0, 1], got {fraction}")
    chosen = []
    for c in np.unique(labels):  # classes in sorted order: one permutation each, in a fixed sequence
        members = rng.permutation(np.flatnonzero(labels == c))
        chosen.append(members[:int(np.ceil(fraction * members.size - 1e-9))])
    return np.sort(np.concatenate(chosen))
