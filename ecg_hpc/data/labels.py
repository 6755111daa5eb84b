"""The frame label rules of the labelled pretraining tasks (beat, rhythm, heart rate), each in two forms side by side.

The scalar form labels one frame from a segment's annotations (``positions`` and ``classes``, as
``ecg_hpc.data.icentia11k`` reads them): it is the authors' rule, written for reading, and the reference the
tests hold the other form to. The vectorised form labels a whole batch at once from the shard store's packed
labels (``position << CLASS_BITS | class``, ``ecg_hpc.data.store``), as the samplers hand them over: the labels
that matter for each frame concatenated (``flat``), the frame each belongs to (``frame_id``) and the count per
frame. A frame is the closed interval ``[start, end]`` of sample indices; the authors (and the samplers) use
``end = start + frame_size``. The rules are in docs/design-facts.md.

A ``LabelRule`` bundles the two forms with the packed labels it reads (``BEATS`` or ``RHYTHMS``) and its class
names; a pretraining task (``ecg_hpc.tasks``) names its rule, so a new labelled task is a new rule here and a task
module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ecg_hpc.data.icentia11k import (BEAT_CLASSES, BEAT_HIGH, BEAT_LOW, FS, HR_BRADY, HR_CLASSES, HR_NOISE,
                                     HR_NORMAL, HR_TACHY, RHYTHM_CLASSES, RHYTHM_HIGH, RHYTHM_LOW)
from ecg_hpc.data.store import BEATS, CLASS_BITS, CLASS_MASK, RHYTHMS

ScalarRule = Callable[[np.ndarray, np.ndarray, int, int], int]
VectorisedRule = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def complete_beats(positions: np.ndarray, start: int, end: int) -> slice:
    """Slice of the beats complete in ``[start, end]``: of those with index in the frame, all but the first."""
    if start >= end:
        raise ValueError("`end` must be greater than `start`")
    lo = int(np.searchsorted(positions, start, side="left")) + 1
    hi = int(np.searchsorted(positions, end, side="right"))
    return slice(lo, max(lo, hi))


# -- priority: the class of the largest total, high-priority classes first --------------------------------------

def _priority_argmax(totals: np.ndarray, high: tuple[int, ...], low: tuple[int, ...]) -> int:
    """The class of the largest positive total among ``high``, else among ``low``, else 0 (ties: lowest id)."""
    for group in (high, low):
        values = totals[list(group)]
        best = int(np.argmax(values))  # first maximum: ties go to the lowest class id
        if values[best] > 0:
            return group[best]
    return 0


def _priority_rows(totals: np.ndarray, high: tuple[int, ...], low: tuple[int, ...]) -> np.ndarray:
    """``_priority_argmax`` over each row of per-class totals."""
    hi, lo = totals[:, list(high)], totals[:, list(low)]
    hi_best, lo_best = hi.argmax(axis=1), lo.argmax(axis=1)
    label = np.where(lo.max(axis=1) > 0, np.asarray(low)[lo_best], 0)
    return np.where(hi.max(axis=1) > 0, np.asarray(high)[hi_best], label).astype(np.int32)


# -- beat: count the complete beats per class --------------------------------------------------------------------

def beat_label(positions: np.ndarray, classes: np.ndarray, start: int, end: int) -> int:
    """Beat label of frame ``[start, end]``: most frequent pac/aberrated/pvc, else of undefined/normal, else 0."""
    counts = np.bincount(classes[complete_beats(positions, start, end)], minlength=len(BEAT_CLASSES))
    return _priority_argmax(counts, BEAT_HIGH, BEAT_LOW)


def beat_labels(flat: np.ndarray, frame_id: np.ndarray, counts: np.ndarray, start: np.ndarray,
                end: np.ndarray) -> np.ndarray:
    """``beat_label`` of each frame, from the packed complete beats of the frames."""
    totals = np.bincount(frame_id * 8 + (flat & CLASS_MASK), minlength=len(counts) * 8).reshape(-1, 8)
    return _priority_rows(totals, BEAT_HIGH, BEAT_LOW)


# -- rhythm: the time each class covers ---------------------------------------------------------------------------

def rhythm_label(positions: np.ndarray, classes: np.ndarray, start: int, end: int) -> int:
    """Rhythm label of frame ``[start, end]``: longest of undefined/afib/aflut, else of end/noise/normal, else 0.

    Episode ends after ``start`` up to the first at/after ``end``; the first duration runs from ``start``, the last
    is cut at ``end`` (also when no end reaches ``end``). No end after ``start`` gives 0 (the authors' code fails).
    """
    if start >= end:
        raise ValueError("`end` must be greater than `start`")
    lo = int(np.searchsorted(positions, start, side="right"))
    hi = int(np.searchsorted(positions, end, side="left")) + 1
    ends = positions[lo:hi]
    if ends.size == 0:
        return 0
    durations = np.diff(np.concatenate(([start], ends[:-1], [end])))
    totals = np.bincount(classes[lo:hi], weights=durations, minlength=len(RHYTHM_CLASSES))
    return _priority_argmax(totals, RHYTHM_HIGH, RHYTHM_LOW)


def rhythm_labels(flat: np.ndarray, frame_id: np.ndarray, counts: np.ndarray, start: np.ndarray,
                  end: np.ndarray) -> np.ndarray:
    """``rhythm_label`` of each frame, from the packed episode ends of the frames."""
    positions = flat >> CLASS_BITS
    first = np.cumsum(counts) - counts
    previous = np.empty_like(positions)
    previous[1:] = positions[:-1]
    has = counts > 0
    previous[first[has]] = start[has]
    last = first[has] + counts[has] - 1
    positions[last] = end[has]  # the last episode is cut at the frame end
    durations = positions - previous
    totals = np.bincount(frame_id * 8 + (flat & CLASS_MASK), weights=durations,
                         minlength=len(counts) * 8).reshape(-1, 8)
    return _priority_rows(totals, RHYTHM_HIGH, RHYTHM_LOW)


# -- heart rate: the mean RR of the complete beats ---------------------------------------------------------------

def hr_label(positions: np.ndarray, classes: np.ndarray, start: int, end: int, fs: int = FS) -> int:
    """Heart-rate label of window ``[start, end]``: bpm of its complete beats < 60 brady, <= 100 normal, else tachy.

    Fewer than two complete beats -> noise; the beat classes do not matter. bpm = 60 / mean RR = 60 * fs * (n - 1)
    / (last - first); the thresholds are compared exactly (integer arithmetic for integer ``fs``).
    """
    beats = positions[complete_beats(positions, start, end)]
    if beats.size < 2:
        return HR_NOISE
    span, intervals = int(beats[-1] - beats[0]), beats.size - 1
    if span > fs * intervals:  # bpm < 60
        return HR_BRADY
    if 3 * fs * intervals <= 5 * span:  # bpm <= 100
        return HR_NORMAL
    return HR_TACHY


def hr_labels(flat: np.ndarray, frame_id: np.ndarray, counts: np.ndarray, start: np.ndarray,
              end: np.ndarray) -> np.ndarray:
    """``hr_label`` of each frame (at ``FS``), from the packed complete beats of the frames."""
    positions = flat >> CLASS_BITS
    first = np.cumsum(counts) - counts
    ok = counts >= 2
    span = np.zeros(len(counts), np.int64)
    span[ok] = positions[first[ok] + counts[ok] - 1] - positions[first[ok]]
    rate = FS * (counts - 1)  # bpm = 60 * rate / span, compared exactly as in ``hr_label``
    labels = np.where(span > rate, HR_BRADY, np.where(3 * rate <= 5 * span, HR_NORMAL, HR_TACHY))
    return np.where(ok, labels, HR_NOISE).astype(np.int32)


# -- the rules as objects ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LabelRule:
    """One label rule: the packed labels it reads (the store's ``BEATS`` or ``RHYTHMS`` row), its classes, and its
    two forms."""

    name: str
    kind: int
    class_names: tuple[str, ...]
    scalar: ScalarRule
    vectorised: VectorisedRule

    def batch(self, chunks: list[np.ndarray], start: np.ndarray, end: np.ndarray) -> np.ndarray:
        """Labels (int32) of frames ``[start, end]`` from each frame's packed labels that matter (the complete
        beats, or the episode ends after ``start`` up to the first at or after ``end``)."""
        counts = np.fromiter((c.size for c in chunks), np.int64, len(chunks))
        flat = np.concatenate(chunks).astype(np.int64) if counts.sum() else np.zeros(0, np.int64)
        return self.vectorised(flat, np.repeat(np.arange(len(chunks)), counts), counts, start, end)


BEAT = LabelRule("beat", BEATS, BEAT_CLASSES, beat_label, beat_labels)
RHYTHM = LabelRule("rhythm", RHYTHMS, RHYTHM_CLASSES, rhythm_label, rhythm_labels)
HR = LabelRule("hr", BEATS, HR_CLASSES, hr_label, hr_labels)
