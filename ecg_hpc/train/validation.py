"""Per-epoch validation for fine-tuning: one prediction pass gives ``val_loss`` and the F1 scores, logs them,
writes ``history.csv`` and keeps the best weights.

The authors select the fine-tuned model by validation macro F1 (``--val-metric f1``) while early stopping
watches ``val_loss``; both come from the same predictions here, so ``fit`` gets no ``validation_data`` (Keras
would evaluate the validation set a second time) and EarlyStopping, placed after this callback, reads the
logged ``val_loss``. The best weights are held in memory (the model is small) and written once at the end;
``history.csv`` is rewritten atomically after every epoch so an interrupted run still shows its curve.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from ecg_hpc.rundir import atomic_write_csv
from ecg_hpc.train.metrics import VAL_METRICS, f1_report, one_hot


def history_header(classes: Sequence[str]) -> list[str]:
    """Columns of ``history.csv``: epoch, losses, then validation macro and per-class F1."""
    return ["epoch", "loss", "val_loss", "f1", *(f"f1_{c}" for c in classes)]


class ValidationMonitor(tf.keras.callbacks.Callback):
    """Predicts the validation set once per epoch, logs ``val_loss`` (the compiled loss on those predictions)
    and ``f1``/``f1_<class>``, keeps the best weights. Goes before any callback that reads these logs."""

    def __init__(self, x_val: np.ndarray, y_val: np.ndarray, classes: Sequence[str], batch_size: int,
                 metric: str, history_path: str | Path) -> None:
        super().__init__()
        if metric not in VAL_METRICS:
            raise ValueError(f"validation metric must be one of {VAL_METRICS}, got {metric!r}")
        self.x_val, self.y_val, self.classes = x_val, y_val, list(classes)
        self.y_val_one_hot = one_hot(y_val, len(self.classes)).astype(np.float32)
        self.batch_size, self.metric, self.history_path = batch_size, metric, Path(history_path)
        self.rows: list[list[Any]] = []
        self.best_score = -np.inf
        self.best_epoch = 0
        self.best_weights: list[np.ndarray] | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Add ``val_loss`` and the F1 scores to ``logs``, append and write the history row, keep improved weights."""
        logs = logs if logs is not None else {}
        prob = self.model.predict(self.x_val, batch_size=self.batch_size, verbose=0)
        logs["val_loss"] = float(self.model.loss(self.y_val_one_hot, prob))
        report = f1_report(self.y_val, prob, self.classes)
        logs["f1"] = report["macro_f1"]
        logs.update({f"f1_{c}": report["f1"][c] for c in self.classes})
        self.rows.append([epoch + 1, float(logs["loss"]), float(logs["val_loss"]), logs["f1"],
                          *(logs[f"f1_{c}"] for c in self.classes)])
        atomic_write_csv(self.history_path, history_header(self.classes), self.rows)
        score = logs["f1"] if self.metric == "f1" else -float(logs["val_loss"])
        if score > self.best_score:
            self.best_score, self.best_epoch = score, epoch + 1
            self.best_weights = [w.copy() for w in self.model.get_weights()]
        print(f"epoch {epoch + 1}: loss {logs['loss']:.4f} val_loss {logs['val_loss']:.4f} "
              f"val_f1 {logs['f1']:.4f} (best {self.best_epoch})", flush=True)
