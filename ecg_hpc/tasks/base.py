"""What every pretraining task provides: its classes, how a sample is labelled, its model, loss and metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import tensorflow as tf

from ecg_hpc.models.architectures import build_model as build_classifier

keras = tf.keras


@dataclass(frozen=True)
class Task:
    """A pretraining task. Pretraining heads output logits; the loss is sparse categorical CE from logits.

    ``label_function`` is the data layer's pure function that labels a frame (None when the data pipeline's
    sample layout is the label, as for ``future``); ``num_classes`` is None when the number of outputs is
    set by the input (the candidates of ``future``).
    """

    name: str
    num_classes: int | None
    class_names: tuple[str, ...]
    label_function: Callable[..., int] | None
    description: str

    def build_model(self, arch: str, frame_size: int, width: float = 1.0) -> keras.Model:
        """Model of this task on frames of ``frame_size`` samples (one lead) with ``arch`` features."""
        return build_classifier(arch, self.num_classes, (frame_size, 1), head_activation=None, width=width,
                                name=f"{self.name}_{arch}")

    def loss(self) -> keras.losses.Loss:
        """Sparse categorical cross-entropy from logits (integer labels)."""
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def metrics(self) -> list[keras.metrics.Metric]:
        """Accuracy over the integer labels, logged as ``acc`` like the authors' trainer."""
        return [keras.metrics.SparseCategoricalAccuracy(name="acc")]

    def compile_model(self, model: keras.Model, optimizer: keras.optimizers.Optimizer,
                      jit_compile: bool = False) -> keras.Model:
        """Compile ``model`` with this task's loss and metrics (``jit_compile=True`` = XLA); return it."""
        model.compile(optimizer=optimizer, loss=self.loss(), metrics=self.metrics(), jit_compile=jit_compile)
        return model
