"""Run directories with chosen values, built through the run records (``ecg_hpc.records``), for the report's
tests and benchmark.

A fine-tuning run gets ``run.json`` and ``history.csv``; no ``*_predictions.csv`` (the report takes test F1 from
run.json, and predictions that realise arbitrary chosen F1 values do not exist). A pretraining run gets
``run.json``, ``history.csv`` and empty ``epoch_NN/`` checkpoint folders.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ecg_hpc.atomic import atomic_write_csv
from ecg_hpc.records import (CLASSES, FEATURE_EXTRACTOR, FinetuneRun, InitSource, PretrainRun, Scores,
                             epoch_dir_name, write_record)
from ecg_hpc.provenance import environment_info, utc_now

RANDOM_INIT = InitSource("random")


def checkpoint_init(pretrain_dir: str | os.PathLike[str], epoch: int, task: str = "beat", arch: str = "resnet18",
                    frame_size: int = 4096, frac: float = 1.0) -> InitSource:
    """The init of a fine-tuning run that starts from epoch ``epoch`` of a pretraining run."""
    checkpoint = Path(pretrain_dir) / epoch_dir_name(epoch) / FEATURE_EXTRACTOR
    return InitSource("checkpoint", checkpoint=str(checkpoint), pretrain_run=str(pretrain_dir),
                      pretrain_epoch=epoch, task=task, arch=arch, frame_size=frame_size, frac=frac)


def write_finetune_run(job_dir: str | os.PathLike[str], *, seed: int, init: InitSource,
                       f1: dict[str, float] | None = None, macro_f1: float | None = None,
                       epochs_run: int = 3, best_epoch: int | None = None, val_f1: Sequence[float] | None = None,
                       arch: str = "resnet18", status: str = "done", error: str | None = None,
                       scenario: str | None = None, width: float | None = None, label_frac: float = 1.0) -> Path:
    """Write a fine-tuning run directory; ``macro_f1`` defaults to the mean of ``f1`` and the validation
    curve ``val_f1`` (one value per epoch) to a rising line; a run not done gets only run.json."""
    job_dir = Path(job_dir)
    record = FinetuneRun(
        status=status, seed=seed, arch=arch, width=width, label_frac=label_frac, init=init,
        scenario=scenario or job_dir.parent.name,
        config={"arch": arch, "width": width, "seed": seed, "batch_size": 128, "epochs": 200, "patience": 50},
        environment=environment_info(), started_at=utc_now(),
        split={"test_seed": 0, "n_train": 6477, "n_val": 341, "n_test": 1706},
        error=(error or "RuntimeError: synthetic failure") if status == "failed" else None)
    if status == "done":
        f1 = dict(f1 or {"A": 0.7, "N": 0.9, "O": 0.7, "~": 0.6})
        curve = list(val_f1) if val_f1 is not None else list(np.linspace(0.3, 0.3 + 0.01 * epochs_run, epochs_run))
        record = dataclasses.replace(
            record, finished_at=utc_now(), wall_time_s=1.0, epochs_run=epochs_run,
            best_epoch=best_epoch if best_epoch is not None else int(np.argmax(curve)) + 1,
            test=Scores(float(np.mean(list(f1.values()))) if macro_f1 is None else macro_f1, f1))
        rows = [[epoch, 1.0 / epoch, 1.1 / epoch, value, *(value for _ in CLASSES)]
                for epoch, value in enumerate(curve, start=1)]
        atomic_write_csv(job_dir / "history.csv",
                         ["epoch", "loss", "val_loss", "f1", *(f"f1_{c}" for c in CLASSES)], rows)
    write_record(job_dir, record)
    return job_dir


def write_pretrain_run(job_dir: str | os.PathLike[str], *, task: str = "beat", arch: str = "resnet18",
                       frame_size: int = 4096, frac: float | None = 1.0, epochs: int = 2, status: str = "done",
                       error: str | None = None) -> Path:
    """Write a pretraining run directory with ``epochs`` empty checkpoint folders."""
    job_dir = Path(job_dir)
    for epoch in range(1, epochs + 1):
        (job_dir / epoch_dir_name(epoch)).mkdir(parents=True, exist_ok=True)
    atomic_write_csv(job_dir / "history.csv", ["epoch", "loss"], [[e, 1.0 / e] for e in range(1, epochs + 1)])
    record = PretrainRun(
        status=status, seed=0, task=task, arch=arch, frame_size=frame_size, frac=frac, epochs=epochs,
        epochs_done=epochs, config={"task": task, "arch": arch}, environment=environment_info(),
        started_at=utc_now(), hosts=("localhost",), epoch_times_s=(1.0,) * epochs,
        error=(error or "RuntimeError: synthetic failure") if status == "failed" else None)
    write_record(job_dir, record)
    return job_dir
