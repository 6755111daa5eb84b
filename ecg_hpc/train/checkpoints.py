"""Checkpoints of a pretraining job: what rank 0 writes after each epoch or on preemption, and resume.

``JOB_DIR/epoch_NN/`` (NN = 01, 02, ...) holds, once complete:

- ``state/ckpt.*``: a ``tf.train.Checkpoint`` of the whole model (weights and BN statistics) and the optimizer
  (slots and step counter), everything a resumed run needs;
- ``feature_extractor/``: the transferable part, written by ``ecg_hpc.models.save_feature_extractor``;
- ``checkpoint.json``: epoch, steps done in the epoch, the epoch's averaged metrics and wall time.

``JOB_DIR/preempted/`` has the same layout, written when a stop signal arrives mid-epoch: ``steps_done`` says
how far into the epoch it got and ``partial_logs`` hold the metric means over those steps, so the resumed run
finishes that epoch exactly as an uninterrupted one would. Every checkpoint is built in a hidden temporary
folder and renamed into place, so a folder with a ``checkpoint.json`` is complete.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from ecg_hpc.errors import DataError
from ecg_hpc.models import save_feature_extractor
from ecg_hpc.atomic import atomic_dir, atomic_write_json
from ecg_hpc.records import EPOCH_DIR, FEATURE_EXTRACTOR, epoch_dir_name

keras = tf.keras

INFO_FILE = "checkpoint.json"
STATE_PREFIX = "state/ckpt"
PREEMPTED_DIR = "preempted"


@dataclass(frozen=True)
class CheckpointInfo:
    """What ``checkpoint.json`` records: ``epoch`` (1-based) and how many of its steps were done."""

    path: Path
    epoch: int
    steps_done: int
    steps_per_epoch: int
    logs: dict[str, float]
    epoch_time_s: float

    @property
    def complete(self) -> bool:
        """True when the epoch was finished (an ``epoch_NN`` checkpoint)."""
        return self.steps_done >= self.steps_per_epoch


def read_info(path: str | os.PathLike[str]) -> CheckpointInfo:
    """The ``checkpoint.json`` of checkpoint folder ``path``; DataError when missing or malformed."""
    path = Path(path)
    try:
        raw = json.loads((path / INFO_FILE).read_text(encoding="utf-8"))
        return CheckpointInfo(path, int(raw["epoch"]), int(raw["steps_done"]), int(raw["steps_per_epoch"]),
                              {k: float(v) for k, v in raw["logs"].items()}, float(raw["epoch_time_s"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path / INFO_FILE}: not a readable checkpoint record ({exc})") from exc


def complete_epochs(job_dir: str | os.PathLike[str]) -> list[CheckpointInfo]:
    """The complete ``epoch_NN`` checkpoints of ``job_dir`` in epoch order (half-written ones are ignored)."""
    found = []
    root = Path(job_dir)
    if not root.is_dir():
        return []
    for child in root.iterdir():
        match = EPOCH_DIR.fullmatch(child.name)
        if match and (child / INFO_FILE).is_file():
            info = read_info(child)
            if info.epoch != int(match.group(1)):
                raise DataError(f"{child / INFO_FILE}: records epoch {info.epoch}, folder says {match.group(1)}")
            found.append(info)
    return sorted(found, key=lambda info: info.epoch)


def resume_point(job_dir: str | os.PathLike[str]) -> CheckpointInfo | None:
    """The checkpoint to resume from: a preempted one inside the epoch after the last complete one, else the
    last complete epoch, else None (start from scratch)."""
    epochs = complete_epochs(job_dir)
    last = epochs[-1] if epochs else None
    preempted = Path(job_dir) / PREEMPTED_DIR
    if (preempted / INFO_FILE).is_file():
        info = read_info(preempted)
        if info.epoch == (last.epoch if last else 0) + 1 and 0 < info.steps_done < info.steps_per_epoch:
            return info
    return last


def save(job_dir: str | os.PathLike[str], model: keras.Model, optimizer: keras.optimizers.Optimizer, *,
         epoch: int, steps_done: int, steps_per_epoch: int, logs: dict[str, float],
         epoch_time_s: float) -> Path:
    """Write a checkpoint of ``model`` and ``optimizer`` after ``steps_done`` steps of ``epoch`` (rank 0 only).

    A complete epoch goes to ``epoch_NN/``, a partial one to ``preempted/``; return the folder.
    """
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    complete = steps_done >= steps_per_epoch
    final = job_dir / (epoch_dir_name(epoch) if complete else PREEMPTED_DIR)
    with atomic_dir(final) as tmp:
        tf.train.Checkpoint(model=model, optimizer=optimizer).write(str(tmp / STATE_PREFIX))
        save_feature_extractor(model, tmp / FEATURE_EXTRACTOR)
        atomic_write_json(tmp / INFO_FILE, {"epoch": epoch, "steps_done": steps_done,
                                            "steps_per_epoch": steps_per_epoch, "logs": logs,
                                            "epoch_time_s": epoch_time_s})
    if complete:
        shutil.rmtree(job_dir / PREEMPTED_DIR, ignore_errors=True)
    return final


def restore(info: CheckpointInfo, model: keras.Model, optimizer: keras.optimizers.Optimizer) -> None:
    """Load the model and optimizer state of checkpoint ``info`` (the optimizer must be built)."""
    prefix = info.path / STATE_PREFIX
    try:
        status = tf.train.Checkpoint(model=model, optimizer=optimizer).read(str(prefix))
        status.assert_existing_objects_matched()
    except (tf.errors.OpError, AssertionError, ValueError) as exc:
        raise DataError(f"{info.path}: checkpoint does not match this model/optimizer ({exc})") from exc
