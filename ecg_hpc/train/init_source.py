"""Where a fine-tuned model's weights start from: ``random`` or a pretraining checkpoint ``epoch_NN/``.

A checkpoint is a folder ``runs/pretrain/<name>/epoch_NN/`` holding ``feature_extractor/``; its pretraining
run's ``run.json`` (one level up) says the task, arch, width, frame size and fraction of patients. This module
reads those facts without importing TensorFlow, so planning a sweep stays fast.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ecg_hpc.errors import ConfigError
from ecg_hpc.rundir import read_run

RANDOM = "random"
DEFAULT_ARCH = "resnet18"
FEATURE_EXTRACTOR = "feature_extractor"
_EPOCH_DIR = re.compile(r"^epoch_(\d+)$")


def checkpoint_epoch(checkpoint: str | Path) -> int:
    """The epoch number N of a checkpoint folder named ``epoch_NN``."""
    match = _EPOCH_DIR.match(Path(checkpoint).name)
    if not match:
        raise ConfigError(f"--init {checkpoint}: a checkpoint must be an epoch_NN folder of a pretraining run")
    return int(match.group(1))


def list_checkpoints(pretrain_dir: str | Path) -> list[Path]:
    """The ``epoch_NN`` folders of a pretraining run that hold a feature extractor, oldest first."""
    pretrain_dir = Path(pretrain_dir)
    if not pretrain_dir.is_dir():
        raise ConfigError(f"--pretrain {pretrain_dir}: no such pretraining run directory")
    found = [p for p in pretrain_dir.iterdir()
             if _EPOCH_DIR.match(p.name) and (p / FEATURE_EXTRACTOR).is_dir()]
    return sorted(found, key=checkpoint_epoch)


def describe_init(init: str) -> dict[str, Any]:
    """The run.json ``init`` record of ``--init`` (``random`` or an ``epoch_NN`` path); the path need not exist.

    The checkpoint's pretraining run.json, when present, supplies task, arch, width, frame size and fraction;
    keys it lacks are recorded as None. ``require_checkpoint`` checks that the weights are there.
    """
    if init == RANDOM:
        return {"source": RANDOM}
    checkpoint = Path(init)
    epoch = checkpoint_epoch(checkpoint)
    pretrain_run = checkpoint.parent
    try:
        info = read_run(pretrain_run) or {}
    except ValueError as exc:
        raise ConfigError(f"--init {checkpoint}: cannot read the pretraining run.json ({exc})") from exc
    return {"source": "checkpoint", "checkpoint": str(checkpoint), "pretrain_run": str(pretrain_run),
            "pretrain_epoch": epoch,
            **{key: info.get(key) for key in ("task", "arch", "width", "frame_size", "frac")}}


def require_checkpoint(init: dict[str, Any]) -> Path:
    """The ``feature_extractor`` folder of a checkpoint init record; ConfigError naming it when missing."""
    folder = Path(init["checkpoint"]) / FEATURE_EXTRACTOR
    if not folder.is_dir():
        raise ConfigError(f"--init {init['checkpoint']}: checkpoint not found (no folder {folder})")
    return folder


def scenario_name(init: str, arch: str) -> str:
    """The sweep's name for an init: ``random`` or ``<pretrain-name>_epoch_NN``, plus ``_<arch>`` if not resnet18."""
    if init == RANDOM:
        name = RANDOM
    else:
        checkpoint = Path(init)
        name = f"{checkpoint.parent.name}_epoch_{checkpoint_epoch(checkpoint):02d}"
    return name if arch == DEFAULT_ARCH else f"{name}_{arch}"
