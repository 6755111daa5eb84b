"""Future prediction (contrastive): which of K candidate frames follows the context frames.

A sample is ``{"context": (C, frame, 1), "candidates": (K, frame, 1)}`` (C and K - 1 from the layout,
``ecg_hpc.data.layout.future_prediction``) with label = the index of the true next frame among the candidates
(the others are frames from random segments of other patients). Model: ``ecg_hpc.models.future`` (shared feature
extractor, attention pooling with a 3-layer transformer, dot-product scores); loss: sparse softmax cross-entropy
over the candidates' scores (logits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ecg_hpc.data.layout import future_prediction
from ecg_hpc.tasks.base import Task

if TYPE_CHECKING:
    import tensorflow as tf


@dataclass(frozen=True)
class FutureTask(Task):
    """The future-prediction task: outputs one score per candidate."""

    def build_model(self, arch: str, frame_size: int, width: float = 1.0,
                    num_candidates: int | None = None) -> "tf.keras.Model":
        """Future-prediction model over this layout's context; ``num_candidates`` None accepts any number."""
        from ecg_hpc.models.future import build_future_model

        return build_future_model(arch, frame_size, width, context_size=self.layout.context_frames,
                                  num_candidates=num_candidates)


TASK = FutureTask(name="future", layout=future_prediction(),
                  description="index of the true next frame among the candidates")
