"""Statistics for comparing two sets of runs: percentile bootstrap CI of a mean difference, Welch's t-test."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats as _scipy_stats


@dataclass(frozen=True)
class Difference:
    """mean(a) - mean(b) with its bootstrap confidence interval and Welch's two-sided p-value (NaN when a
    group has fewer than two runs, where neither is defined)."""

    diff: float
    ci_low: float
    ci_high: float
    p_value: float


def bootstrap_ci(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, resamples: int = 10_000,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(a) - mean(b), resampling each group with replacement on its own."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mean_a = a[rng.integers(0, a.size, size=(resamples, a.size))].mean(axis=1)
    mean_b = b[rng.integers(0, b.size, size=(resamples, b.size))].mean(axis=1)
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(mean_a - mean_b, [tail, 100.0 - tail])
    return float(low), float(high)


def welch_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value of Welch's t-test (unequal variances); NaN when it is undefined."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # zero variance in both groups: scipy says NaN anyway
        return float(_scipy_stats.ttest_ind(a, b, equal_var=False).pvalue)


def compare(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, resamples: int = 10_000,
            level: float = 0.95) -> Difference:
    """Difference of means of ``a`` and ``b`` with a bootstrap CI and Welch's p-value (both need n >= 2)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        raise ValueError("compare needs at least one value in each group")
    diff = float(a.mean() - b.mean())
    if min(a.size, b.size) < 2:
        return Difference(diff, float("nan"), float("nan"), float("nan"))
    low, high = bootstrap_ci(a, b, rng, resamples, level)
    return Difference(diff, low, high, welch_p(a, b))


def mean_ci_halfwidth(sd: np.ndarray, n: np.ndarray, level: float = 0.95) -> np.ndarray:
    """Half-width of Student's t confidence interval of a mean from sample sds (ddof=1) and sizes (NaN for n < 2)."""
    sd, n = np.asarray(sd, dtype=np.float64), np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = _scipy_stats.t.ppf(0.5 + level / 2.0, np.where(n >= 2, n - 1, np.nan))
        return t * sd / np.sqrt(n)
