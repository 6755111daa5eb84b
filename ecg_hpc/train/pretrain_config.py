"""The configuration of a pretraining run, free of TensorFlow: ``PretrainConfig``, checked when built, and the one
rule that names a run's job directory.

Launchers build and check it in a fraction of a second and submit it as it is (``ecg_hpc.train.pretrain`` is the
entry point that runs it, ``ecg_hpc.train.pretraining`` the loop that trains it).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ecg_hpc.data.pool import DEFAULT_POOL_MB, DEFAULT_READ_RATIO, DEFAULT_READERS, PoolOptions
from ecg_hpc.errors import ConfigError, DataError
from ecg_hpc.names import ARCHS, PRECISIONS, TASKS
from ecg_hpc.options import check_number, check_seed
from ecg_hpc.provenance import environment_info, utc_now
from ecg_hpc.records import PretrainRun, is_done, read_pretrain_run

PRETRAIN_ROOT = Path("runs") / "pretrain"
LR_SCALINGS = ("linear", "sqrt", "none")  # the rules of ecg_hpc.train.distributed.learning_rate
SAMPLERS = ("pool", "uniform")
MAX_STEPS_PER_EPOCH = 10 ** 7  # beyond any real run (the paper's epochs have ~10^4 steps): a typo, refused
MAX_EPOCHS = 10 ** 4


def job_dir_name(task: str, arch: str, frame_size: int, frac: float, seed: int) -> str:
    """The name of a pretraining run directory, from the options that define the run: TASK_ARCH_fFRAME_fracFRAC_sSEED
    (``beat_resnet18_f4096_frac0.1_s0``)."""
    return f"{task}_{arch}_f{frame_size}_frac{frac:g}_s{seed}"


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """The resolved options of one pretraining run (recorded as run.json ``config``), checked when built."""

    store: str
    job_dir: str
    task: str = "beat"
    arch: str = "resnet18"
    width: float = 1.0
    frac: float = 1.0
    frame_size: int = 4096
    samples_per_patient: int | None = None
    batch_size: int = 512
    epochs: int = 16
    steps_per_epoch: int | None = None
    lr: float = 1e-3
    lr_scaling: str = "linear"
    warmup_epochs: float = 1.0
    precision: str = "float32"
    deterministic: bool = False
    allow_store_change: bool = False
    seed: int = 0
    sampler: str = "pool"
    pool_mb: float = DEFAULT_POOL_MB
    chunk_samples: int | None = None
    read_ratio: float = DEFAULT_READ_RATIO
    pool_readers: int = DEFAULT_READERS
    stage_dir: str | None = None

    def __post_init__(self) -> None:
        """ConfigError naming the first option out of range: finite, positive, a seed numpy takes, a sane size
        (the store is checked by ``check_store``)."""
        for name, known in (("task", TASKS), ("arch", ARCHS), ("precision", PRECISIONS), ("lr_scaling", LR_SCALINGS),
                            ("sampler", SAMPLERS)):
            if getattr(self, name) not in known:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)!r}: choose one of "
                                  f"{', '.join(known)}")
        positive = ("width", "frame_size", "samples_per_patient", "batch_size", "epochs", "steps_per_epoch", "lr")
        for name in positive:
            check_number(f"--{name.replace('_', '-')}", getattr(self, name), positive=True)
        check_number("--steps-per-epoch", self.steps_per_epoch, maximum=MAX_STEPS_PER_EPOCH)
        check_number("--epochs", self.epochs, maximum=MAX_EPOCHS)
        if not 0 < self.frac <= 1:
            raise ConfigError(f"--frac {self.frac}: must lie in (0, 1]")
        check_number("--warmup-epochs", self.warmup_epochs, minimum=0)
        check_seed("--seed", self.seed)
        self.pool_options()

    def pool_options(self) -> PoolOptions | None:
        """The pool sampler's options (checked), or None for ``--sampler uniform``."""
        if self.sampler != "pool":
            return None
        options = PoolOptions(pool_mb=self.pool_mb, chunk_samples=self.chunk_samples, read_ratio=self.read_ratio,
                              readers=self.pool_readers)
        options.check()
        return options

    def check_store(self) -> None:
        """DataError when the store is not a directory."""
        if not Path(self.store).is_dir():
            raise DataError(f"--store {self.store}: no such directory")

    def as_record(self) -> dict[str, Any]:
        """The config as run.json records it (keys sorted)."""
        return dict(sorted(dataclasses.asdict(self).items()))


def finished(job_dir: str | Path, epochs: int) -> bool:
    """True when ``job_dir`` holds a run that is done with at least ``epochs`` epochs (asking for more resumes it)."""
    record = read_pretrain_run(job_dir) if is_done(job_dir) else None
    return record is not None and record.epochs_done >= epochs


def bare_record(config: PretrainConfig) -> PretrainRun:
    """The record of a run that failed before rank 0 recorded its start (what the config alone says)."""
    return PretrainRun(status="running", seed=config.seed, task=config.task, arch=config.arch,
                       frame_size=config.frame_size, epochs=config.epochs, width=config.width, frac=config.frac,
                       config=config.as_record(), environment=environment_info(), started_at=utc_now())
