"""What every pretraining task provides, from data to loss: its batch layout (and with it the label rule), its
model head and its loss and metrics. Importing a task loads no TensorFlow; building its model does."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ecg_hpc.data.layout import BatchLayout

if TYPE_CHECKING:
    import tensorflow as tf


@dataclass(frozen=True)
class Task:
    """A labelled pretraining task: frames labelled by ``layout.rule``, a classifier head with one logit per class,
    sparse categorical cross-entropy from logits. ``ecg_hpc.tasks.future`` overrides the model for its layout."""

    name: str
    layout: BatchLayout
    description: str

    @property
    def class_names(self) -> tuple[str, ...]:
        """The classes the head predicts (none for future prediction, whose outputs are the candidates)."""
        return self.layout.rule.class_names if self.layout.rule is not None else ()

    def build_model(self, arch: str, frame_size: int, width: float = 1.0) -> "tf.keras.Model":
        """Model of this task on frames of ``frame_size`` samples (one lead) with ``arch`` features."""
        from ecg_hpc.models.architectures import build_model as build_classifier

        return build_classifier(arch, len(self.class_names), (frame_size, 1), head_activation=None, width=width,
                                name=f"{self.name}_{arch}")

    def loss(self) -> Any:
        """Sparse categorical cross-entropy from logits (integer labels)."""
        import tensorflow as tf

        return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def metrics(self) -> list[Any]:
        """Accuracy over the integer labels, logged as ``acc`` like the authors' trainer."""
        import tensorflow as tf

        return [tf.keras.metrics.SparseCategoricalAccuracy(name="acc")]

    def compile_model(self, model: "tf.keras.Model", optimizer: Any, jit_compile: bool = False) -> "tf.keras.Model":
        """Compile ``model`` with this task's loss and metrics (``jit_compile=True`` = XLA); return it."""
        model.compile(optimizer=optimizer, loss=self.loss(), metrics=self.metrics(), jit_compile=jit_compile)
        return model
