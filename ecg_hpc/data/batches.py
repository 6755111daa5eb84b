"""What both samplers (``pipeline.BatchSampler``, ``pool.PoolSampler``) share: the argument check, the raw batch
layouts (labelled frames, future prediction), the label search keys into packed labels, and the normalisation.

A raw batch keeps the stored values (int16, or float32 for a patient off the int16 grid) with a multiplier per
frame; ``normalise`` turns it into ``(x - MEAN) / STD`` float32, in numpy here and as tf ops in the pipeline.
"""

from __future__ import annotations

import numpy as np

from ecg_hpc.data import icentia11k as ic
from ecg_hpc.data.layout import BatchLayout
from ecg_hpc.data.store import CLASS_BITS
from ecg_hpc.errors import ConfigError

OFFSET = np.float32(ic.MEAN / ic.STD)  # normalised = value * (scale / STD) - OFFSET


def check_sampler_arguments(frame_size: int, batch_size: int, rank: int, world_size: int, n_patients: int) -> None:
    """ConfigError naming the first sampler argument out of range (shared by both samplers)."""
    if frame_size < 2 or batch_size < 1:
        raise ConfigError(f"frame size ({frame_size}) must be >= 2 and batch size ({batch_size}) >= 1")
    if not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} must lie in [0, world_size={world_size})")
    if n_patients == 0:
        raise ConfigError("no patients selected")


def normalised_batch(layout: BatchLayout, raw: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """A sampler's raw batch (int16/float32 values and multipliers) as the dataset yields it: frames normalised
    float32 with a channel axis, a future-prediction context split into its frames."""
    if layout.future:
        context, candidates, m_context, m_candidates, labels = raw
        context = normalise(context, m_context).reshape(context.shape[0], layout.context_frames, -1)
        return context[..., None], normalise(candidates, m_candidates)[..., None], labels
    values, multiplier, labels = raw
    return normalise(values, multiplier)[..., None], labels

def future_batch(rng: np.random.Generator, window: np.ndarray, negatives: np.ndarray, m_window: np.ndarray,
                 m_negatives: np.ndarray, context_frames: int) -> tuple[np.ndarray, ...]:
    """Split ``window`` (context + true next frame) and place the true frame at a random one of the candidates.

    ``negatives`` holds ``num_negatives`` frames per row, ``m_*`` their patients' multipliers. Returns
    ``(context, candidates, m_context, m_candidates, labels)``, the layout both samplers hand to the future task.
    """
    b = window.shape[0]
    f = window.shape[1] // (context_frames + 1)
    k = negatives.shape[0] // b
    labels = rng.integers(0, k + 1, b)
    is_positive = np.arange(k + 1)[None, :] == labels[:, None]
    candidates = np.empty((b, k + 1, f), window.dtype)
    candidates[is_positive] = window[:, context_frames * f:]
    candidates[~is_positive] = negatives
    m_candidates = np.empty((b, k + 1), np.float32)
    m_candidates[is_positive] = m_window
    m_candidates[~is_positive] = m_negatives
    return window[:, :context_frames * f], candidates, m_window, m_candidates, labels.astype(np.int32)

def label_keys(rhythm: bool, start: np.ndarray, frame: int, dtype: np.dtype) -> tuple[np.ndarray, int]:
    """Search keys ``(B, 2)`` into a segment's packed labels and the count to drop at each end, so that
    ``labels[lo + skip:hi + 1 - skip]`` (``lo, hi = labels.searchsorted(key)``) are the labels of the frame that
    matter: complete beats of ``[start, start + frame]``, or the rhythm episode ends after ``start`` up to the first
    at or after the frame end."""
    keys = (np.stack([start + 1, start + frame], axis=1) if rhythm
            else np.stack([start, start + frame + 1], axis=1)) << CLASS_BITS
    return keys.astype(dtype), 0 if rhythm else 1


def normalise(values: np.ndarray, multiplier: np.ndarray) -> np.ndarray:
    """``values * multiplier - MEAN / STD`` in float32 (``multiplier = scale / STD`` per row): normalised frames."""
    out = values.astype(np.float32)
    out *= multiplier[..., None]
    out -= OFFSET
    return out
