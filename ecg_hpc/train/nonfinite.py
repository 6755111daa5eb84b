"""The NaN guard: a non-finite loss stops training and fails the run instead of training on into NaN weights.

Like Keras's ``TerminateOnNaN``, but the stop becomes ``NonFiniteLoss`` (a user error: one line, run.json
"failed" with the reason), so a diverged run never ends "done" with NaN checkpoints or a macro F1 of 0 that
enters the tables. Pretraining checks the same condition per step and agrees on it across workers.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import tensorflow as tf

from ecg_hpc.errors import EcgHpcError

ADVICE = "lower the learning rate, or check the data for NaN/inf samples"


class NonFiniteLoss(EcgHpcError):
    """The loss became NaN or infinite; the message says where and what to try."""


def nonfinite(logs: Mapping[str, Any] | None, keys: tuple[str, ...] = ("loss", "val_loss")) -> str | None:
    """``"loss nan"`` (the first of ``keys`` in ``logs`` that is not finite), else None."""
    for key in keys:
        value = (logs or {}).get(key)
        if value is not None and not math.isfinite(float(value)):
            return f"{key} {float(value)}"
    return None


class TerminateOnNonFinite(tf.keras.callbacks.Callback):
    """Stops ``fit`` after the first batch (or epoch) with a non-finite loss; ``raise_if_stopped`` then fails."""

    def __init__(self) -> None:
        super().__init__()
        self.problem: str | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Remember the epoch for the message."""
        self._epoch = epoch + 1

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """Stop at a non-finite training loss."""
        self._check(logs, f"epoch {self._epoch} step {batch + 1}")

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Stop at a non-finite validation loss."""
        self._check(logs, f"epoch {epoch + 1}")

    def _check(self, logs: dict[str, Any] | None, where: str) -> None:
        problem = nonfinite(logs)
        if problem is not None and self.problem is None:
            self.problem = f"{where}: {problem}"
            self.model.stop_training = True

    def raise_if_stopped(self) -> None:
        """NonFiniteLoss when training was stopped by a non-finite loss."""
        if self.problem is not None:
            raise NonFiniteLoss(f"{self.problem}: training stopped ({ADVICE})")
