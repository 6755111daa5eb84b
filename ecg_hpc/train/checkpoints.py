"""Checkpoints of a pretraining job: what rank 0 writes after each epoch or on preemption, and resume.

``JOB_DIR/epoch_NN/`` (NN = 01, 02, ...) holds, once complete:

- ``state/ckpt.*``: a ``tf.train.Checkpoint`` of the whole model (weights and BN statistics) and the optimizer
  (slots and step counter), everything a resumed run needs;
- ``feature_extractor/``: the transferable part, written by ``ecg_hpc.models.save_feature_extractor``;
- ``checkpoint.json``: epoch, steps done in the epoch, the epoch's averaged metrics and wall time;
- ``manifest.json``, written last: the size and sha256 of every other file, so that a resume can tell an intact
  checkpoint from one damaged later (a truncated or flipped file on a failing disk or a full quota).

``JOB_DIR/preempted/`` has the same layout, written when a stop signal arrives mid-epoch: ``steps_done`` says
how far into the epoch it got and ``partial_logs`` hold the metric means over those steps, so the resumed run
finishes that epoch exactly as an uninterrupted one would. Every checkpoint is built in a hidden temporary
folder and renamed into place, so a folder with a ``checkpoint.json`` is complete. A resume verifies the newest
checkpoint against its manifest and falls back to the newest intact one (``find_resume``).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from ecg_hpc.errors import DataError
from ecg_hpc.models import save_feature_extractor
from ecg_hpc.rundir import atomic_dir, atomic_write_json, check_free_space, file_sha256, storage_error, writing

keras = tf.keras

INFO_FILE = "checkpoint.json"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "ecg-hpc-checkpoint"
MANIFEST_VERSION = 1
STATE_PREFIX = "state/ckpt"
FEATURE_EXTRACTOR_DIR = "feature_extractor"
PREEMPTED_DIR = "preempted"
_EPOCH_RE = re.compile(r"epoch_(\d{2,})")


def epoch_dir_name(epoch: int) -> str:
    """Folder name of the checkpoint after ``epoch`` (1-based): ``epoch_01``, ..., ``epoch_100``."""
    return f"epoch_{epoch:02d}"


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
        match = _EPOCH_RE.fullmatch(child.name)
        if match and (child / INFO_FILE).is_file():
            info = read_info(child)
            if info.epoch != int(match.group(1)):
                raise DataError(f"{child / INFO_FILE}: records epoch {info.epoch}, folder says {match.group(1)}")
            found.append(info)
    return sorted(found, key=lambda info: info.epoch)


@dataclass(frozen=True)
class Damaged:
    """A checkpoint folder that failed verification, and why (for the user's line and run.json)."""

    path: Path
    problem: str

    def record(self) -> dict[str, str]:
        """The run.json form: ``{"checkpoint": PATH, "problem": ...}``."""
        return {"checkpoint": str(self.path), "problem": self.problem}


def write_manifest(folder: str | os.PathLike[str]) -> Path:
    """Record size and sha256 of every file under ``folder`` in its ``manifest.json`` (call it last)."""
    folder = Path(folder)
    files = {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": file_sha256(p)}
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST_FILE}
    return atomic_write_json(folder / MANIFEST_FILE, {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION,
                                                      "files": files})


def verify(folder: str | os.PathLike[str]) -> str | None:
    """None when every file of checkpoint ``folder`` has its manifest's size and sha256, else what is wrong."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
        files = manifest["files"]
        if manifest.get("format") != MANIFEST_FORMAT or not isinstance(files, dict) or not files:
            return f"{MANIFEST_FILE} is not a checkpoint manifest"
    except FileNotFoundError:
        return f"no {MANIFEST_FILE} (incomplete, or written by an older version)"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{MANIFEST_FILE} unreadable ({exc})"
    for name, expected in files.items():
        path = folder / name
        try:
            size = path.stat().st_size
            if size != expected["size"]:
                return f"{name} has {size} bytes, the manifest says {expected['size']}"
            if file_sha256(path) != expected["sha256"]:
                return f"{name} differs from its checksum"
        except FileNotFoundError:
            return f"{name} is missing"
        except (OSError, KeyError, TypeError) as exc:
            return f"{name} unreadable ({exc})"
    return None


def _candidates(job_dir: Path) -> list[Path]:
    """Checkpoint folders to resume from, newest first: ``preempted/``, then ``epoch_NN`` by falling epoch."""
    if not job_dir.is_dir():
        return []
    epochs = sorted((int(m.group(1)), child) for child in job_dir.iterdir()
                    if (m := _EPOCH_RE.fullmatch(child.name)) and child.is_dir())
    preempted = job_dir / PREEMPTED_DIR
    return ([preempted] if preempted.is_dir() else []) + [child for _, child in reversed(epochs)]


def find_resume(job_dir: str | os.PathLike[str]) -> tuple[CheckpointInfo | None, tuple[Damaged, ...]]:
    """The newest intact checkpoint to resume from (None: start from scratch) and the damaged ones newer than it.

    A preempted checkpoint counts only inside the epoch after the newest intact complete one. DataError naming
    every damaged checkpoint when checkpoints exist but none is intact: starting over would silently lose them.
    """
    damaged: list[Damaged] = []
    preempted: CheckpointInfo | None = None
    for folder in _candidates(Path(job_dir)):
        problem = verify(folder)
        if problem is None:
            try:
                info = read_info(folder)
            except DataError as exc:
                problem = str(exc)
        if problem is not None:
            damaged.append(Damaged(folder, problem))
            continue
        if not info.complete:
            preempted = info if 0 < info.steps_done else None
            continue
        if folder.name != epoch_dir_name(info.epoch):
            damaged.append(Damaged(folder, f"{INFO_FILE} records epoch {info.epoch}"))
            continue
        if preempted is not None and preempted.epoch == info.epoch + 1:
            return preempted, tuple(damaged)
        return info, tuple(damaged)
    if damaged:
        listed = "; ".join(f"{d.path.name}: {d.problem}" for d in damaged)
        raise DataError(f"{job_dir}: no intact checkpoint to resume from ({listed}); move the job folder aside "
                        "or delete those checkpoints to start over")
    if preempted is not None and preempted.epoch == 1:
        return preempted, ()
    return None, ()


def resume_point(job_dir: str | os.PathLike[str]) -> CheckpointInfo | None:
    """The checkpoint ``find_resume`` picks (damaged newer ones are skipped)."""
    return find_resume(job_dir)[0]


def discard(damaged: tuple[Damaged, ...]) -> None:
    """Delete damaged checkpoints (rank 0, after falling back): their epochs are trained again and rewritten."""
    for item in damaged:
        shutil.rmtree(item.path, ignore_errors=True)


def save(job_dir: str | os.PathLike[str], model: keras.Model, optimizer: keras.optimizers.Optimizer, *,
         epoch: int, steps_done: int, steps_per_epoch: int, logs: dict[str, float],
         epoch_time_s: float) -> Path:
    """Write a checkpoint of ``model`` and ``optimizer`` after ``steps_done`` steps of ``epoch`` (rank 0 only).

    A complete epoch goes to ``epoch_NN/``, a partial one to ``preempted/``; return the folder.
    """
    job_dir = Path(job_dir)
    complete = steps_done >= steps_per_epoch
    final = job_dir / (epoch_dir_name(epoch) if complete else PREEMPTED_DIR)
    state_bytes = sum(v.shape.num_elements() * v.dtype.size for v in (*model.variables, *optimizer.variables))
    with writing(job_dir):
        check_free_space(job_dir, 2 * state_bytes)  # the state, then the feature extractor's copy of the weights
    with atomic_dir(final) as tmp:
        try:
            tf.train.Checkpoint(model=model, optimizer=optimizer).write(str(tmp / STATE_PREFIX))
        except tf.errors.OpError as exc:  # TF's own writer reports a full or read-only disk in its message
            errno_of = {"No space left": errno.ENOSPC, "Disk quota": errno.EDQUOT,
                        "Read-only file system": errno.EROFS, "Permission denied": errno.EACCES}
            code = next((code for text, code in errno_of.items() if text in exc.message), None)
            if code is None:
                raise
            raise storage_error(OSError(code, exc.message), job_dir) from None
        save_feature_extractor(model, tmp / FEATURE_EXTRACTOR_DIR)
        atomic_write_json(tmp / INFO_FILE, {"epoch": epoch, "steps_done": steps_done,
                                            "steps_per_epoch": steps_per_epoch, "logs": logs,
                                            "epoch_time_s": epoch_time_s})
        write_manifest(tmp)
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
