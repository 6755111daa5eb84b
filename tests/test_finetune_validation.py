"""One validation pass per epoch: the monitor's val_loss and F1 equal what Keras's own pass plus a second
prediction give, early stopping reads them, and a fine-tuning run predicts the validation set once an epoch."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tensorflow as tf

from ecg_hpc.models import build_model
from ecg_hpc.train import finetune
from ecg_hpc.train.metrics import f1_report, one_hot
from ecg_hpc.train.validation import ValidationMonitor
from tests.test_finetune import TINY, make_prepared

CLASSES = ("A", "N", "O", "~")


class Record(tf.keras.callbacks.Callback):
    """Copies ``logs`` at the end of every epoch and, if given data, scores its own fresh prediction of it."""

    def __init__(self, x: np.ndarray | None = None, y: np.ndarray | None = None) -> None:
        super().__init__()
        self.x, self.y, self.logs, self.reports = x, y, [], []

    def on_epoch_end(self, epoch, logs=None):
        self.logs.append(dict(logs))
        if self.x is not None:
            self.reports.append(f1_report(self.y, self.model.predict(self.x, verbose=0), CLASSES))


def test_one_pass_gives_keras_val_loss_and_the_f1_of_a_second_pass(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 512, 1)).astype(np.float32)
    y = np.arange(40) % 4
    x_tr, y_tr, x_va, y_va = x[:28], y[:28], x[28:], y[28:]
    tf.keras.utils.set_random_seed(0)
    model = build_model("resnet18", 4, (512, 1), head_activation="softmax", width=0.125)
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3), loss=tf.keras.losses.CategoricalCrossentropy())
    keras_pass, second_pass = Record(), Record(x_va, y_va)
    monitor = ValidationMonitor(x_va, y_va, CLASSES, 8, "f1", tmp_path / "history.csv")
    # Keras's validation pass fills val_loss first; the monitor then overwrites it with its own
    model.fit(x_tr, one_hot(y_tr, 4).astype(np.float32), batch_size=8, epochs=3, verbose=0,
              validation_data=(x_va, one_hot(y_va, 4).astype(np.float32)),
              callbacks=[keras_pass, monitor, second_pass])
    with (tmp_path / "history.csv").open(newline="") as fh:
        history = list(csv.DictReader(fh))
    assert len(history) == 3
    for row, two, own in zip(history, keras_pass.logs, second_pass.reports):
        assert float(row["val_loss"]) == pytest.approx(two["val_loss"], rel=1e-5)
        assert float(row["f1"]) == pytest.approx(own["macro_f1"], abs=1e-12)
        assert [float(row[f"f1_{c}"]) for c in CLASSES] == pytest.approx(list(own["f1"].values()), abs=1e-12)
    assert [log["val_loss"] for log in second_pass.logs] == [float(r["val_loss"]) for r in history]


def test_early_stopping_reads_the_monitor_s_val_loss(tmp_path):
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((16, 256, 1)).astype(np.float32), np.arange(16) % 4
    model = build_model("resnet18", 4, (256, 1), head_activation="softmax", width=0.125)
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3), loss=tf.keras.losses.CategoricalCrossentropy())
    monitor = ValidationMonitor(x, y, CLASSES, 8, "loss", tmp_path / "history.csv")
    stopper = tf.keras.callbacks.EarlyStopping(monitor="val_loss", patience=1, min_delta=1e9)  # nothing improves
    fit = model.fit(x, one_hot(y, 4).astype(np.float32), batch_size=8, epochs=5, verbose=0,
                    callbacks=[monitor, stopper])
    assert len(fit.history["loss"]) == 2 and stopper.stopped_epoch == 1  # stopped: it saw val_loss
    assert fit.history["val_loss"] == [row[2] for row in monitor.rows]  # History reads it too


def test_a_finetuning_run_predicts_the_validation_set_once_per_epoch(tmp_path, monkeypatch):
    data = make_prepared(tmp_path, records=32)
    calls = {"predict": 0, "evaluate": 0}
    for name in calls:
        original = getattr(tf.keras.Model, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(tf.keras.Model, name, counted)
    job = tmp_path / "job"
    assert finetune.main(["--data", str(data), "--job-dir", str(job), "--seed", "3", *TINY]) == 0
    assert calls == {"predict": 2 + 3, "evaluate": 0}  # one per epoch, then train/val/test predictions
    with (job / "history.csv").open(newline="") as fh:
        history = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in history] == [1, 2]
    assert all(float(r["val_loss"]) > 0 and 0 <= float(r["f1"]) <= 1 for r in history)
