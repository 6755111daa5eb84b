"""Where a fine-tuned model's weights start from: ``random`` or a pretraining checkpoint ``epoch_NN/``.

A checkpoint is a folder ``runs/pretrain/<name>/epoch_NN/`` holding ``feature_extractor/``; its pretraining
run's ``run.json`` (one level up) says the task, arch, width, frame size and fraction of patients. This module
reads those facts without importing TensorFlow, so planning a sweep stays fast.
"""

from __future__ import annotations

from pathlib import Path
from ecg_hpc.errors import ConfigError
from ecg_hpc.records import EPOCH_DIR, FEATURE_EXTRACTOR, RANDOM, InitSource, RecordError, read_pretrain_run

DEFAULT_ARCH = "resnet18"


def checkpoint_epoch(checkpoint: str | Path) -> int:
    """The epoch number N of a checkpoint folder named ``epoch_NN``."""
    match = EPOCH_DIR.fullmatch(Path(checkpoint).name)
    if not match:
        raise ConfigError(f"--init {checkpoint}: a checkpoint must be an epoch_NN folder of a pretraining run")
    return int(match.group(1))


def list_checkpoints(pretrain_dir: str | Path) -> list[Path]:
    """The ``epoch_NN`` folders of a pretraining run that hold a feature extractor, oldest first."""
    pretrain_dir = Path(pretrain_dir)
    if not pretrain_dir.is_dir():
        raise ConfigError(f"--pretrain {pretrain_dir}: no such pretraining run directory")
    found = [p for p in pretrain_dir.iterdir()
             if EPOCH_DIR.fullmatch(p.name) and (p / FEATURE_EXTRACTOR).is_dir()]
    return sorted(found, key=checkpoint_epoch)


def describe_init(init: str) -> InitSource:
    """The run record's ``init`` of ``--init`` (``random`` or an ``epoch_NN`` path); the path need not exist.

    The checkpoint's pretraining run.json, when present, supplies task, arch, width, frame size and fraction;
    what it lacks stays None. ``require_checkpoint`` checks that the weights are there.
    """
    if init == RANDOM:
        return InitSource(RANDOM)
    checkpoint = Path(init)
    epoch = checkpoint_epoch(checkpoint)
    pretrain_run = checkpoint.parent
    try:
        run = read_pretrain_run(pretrain_run)
    except RecordError as exc:
        raise ConfigError(f"--init {checkpoint}: cannot read the pretraining run.json ({exc})") from exc
    facts = {} if run is None else {"task": run.task, "arch": run.arch, "width": run.width,
                                    "frame_size": run.frame_size, "frac": run.frac}
    return InitSource("checkpoint", checkpoint=str(checkpoint), pretrain_run=str(pretrain_run),
                      pretrain_epoch=epoch, **facts)


def require_checkpoint(init: InitSource) -> Path:
    """The ``feature_extractor`` folder of a checkpoint init; ConfigError naming it when missing."""
    folder = Path(str(init.checkpoint)) / FEATURE_EXTRACTOR
    if not folder.is_dir():
        raise ConfigError(f"--init {init.checkpoint}: checkpoint not found (no folder {folder})")
    return folder


def scenario_name(init: str, arch: str) -> str:
    """The sweep's name for an init: ``random`` or ``<pretrain-name>_epoch_NN``, plus ``_<arch>`` if not resnet18."""
    if init == RANDOM:
        name = RANDOM
    else:
        checkpoint = Path(init)
        name = f"{checkpoint.parent.name}_epoch_{checkpoint_epoch(checkpoint):02d}"
    return name if arch == DEFAULT_ARCH else f"{name}_{arch}"
