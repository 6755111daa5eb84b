"""Future prediction (contrastive): which of K candidate frames follows 8 context frames.

A sample is ``{"context": (8, frame, 1), "candidates": (K, frame, 1)}`` with label = the index of the true next
frame among the candidates (the others are frames from random segments of other buffered patients); the data
pipeline builds it, so there is no label function. Model: ``ecg_hpc.models.future`` (shared feature extractor,
attention pooling with a 3-layer transformer, dot-product scores); loss: sparse softmax cross-entropy over the
candidates' scores (logits).
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from ecg_hpc.models.future import CONTEXT_SIZE, build_future_model
from ecg_hpc.tasks.base import Task

keras = tf.keras


@dataclass(frozen=True)
class FutureTask(Task):
    """The future-prediction task: outputs one score per candidate."""

    def build_model(self, arch: str, frame_size: int, width: float = 1.0, context_size: int = CONTEXT_SIZE,
                    num_candidates: int | None = None) -> keras.Model:
        """Future-prediction model; ``num_candidates`` None accepts any number of candidates."""
        return build_future_model(arch, frame_size, width, context_size=context_size,
                                  num_candidates=num_candidates)


TASK = FutureTask(
    name="future",
    num_classes=None,
    class_names=(),
    label_function=None,
    description="index of the true next frame among the candidates",
)
