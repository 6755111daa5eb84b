"""``python -m ecg_hpc.train.finetune``: fine-tune a classifier on prepared PhysioNet/CinC 2017 data.

One run, one job directory: a seeded stratified validation split of the training records (then, for a
label-efficiency run, a stratified nested ``--label-frac`` of the rest to train on), Adam and categorical
cross-entropy, early stopping on ``val_loss``, the weights of the best validation macro F1 kept; then
``history.csv``, ``train|val|test_predictions.csv``, ``best_model.weights.h5`` and ``run.json`` (keys in
``ecg_hpc.records``). A job directory whose run.json says done is left alone (delete it to redo the run).

Determinism: the seed drives the validation split (a ``numpy.random.Generator``) and, through
``tf.keras.utils.set_random_seed`` plus ``tf.config.experimental.enable_op_determinism``, the weight
initialisation, the batch order and every TF op, so the same seed on the same data and the same CPU build gives
the same split and the same predictions with the same thread count (tested, with oneDNN's kernels on; the
threads come from the job's CPUs, ``ecg_hpc.train.threads``, and are recorded in run.json). On a GPU the same
setting selects deterministic kernels (TF raises for an op that has none); its numbers differ from the CPU's.
``set_random_seed`` also seeds Python's and NumPy's global generators, which Keras uses; this code does not.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Iterator

from ecg_hpc.atomic import writing
from ecg_hpc.errors import ConfigError, EcgHpcError, report_native_crashes, user_error
from ecg_hpc.interrupt import interrupts_ignored
from ecg_hpc.options import check_number, check_seed, check_text
from ecg_hpc.provenance import environment_info, utc_now
from ecg_hpc.records import FinetuneRun, InitSource, Scores, is_done, read_record, write_record
from ecg_hpc.runtime import configure_runtime
from ecg_hpc.train.init_source import DEFAULT_ARCH, RANDOM, describe_init, require_checkpoint, scenario_name
from ecg_hpc.train.job_lock import JobDirBusy, job_dir_lock
from ecg_hpc.train.metrics import VAL_METRICS

BEST_WEIGHTS = "best_model.weights.h5"
HISTORY = "history.csv"
SPLITS = ("train", "val", "test")
LABEL_STREAM = 1  # second entropy word of the label-subset generator, beside the run seed
_OUTPUTS = (HISTORY, BEST_WEIGHTS, *(f"{s}_predictions.csv" for s in SPLITS))
# XLA stays off: under op determinism, which the seed's reproducibility needs, TF 2.15 refuses to compile the
# max-pool gradient ("MaxPool gradient ops do not yet have a deterministic XLA implementation"), on CPU and GPU;
# without determinism it cost more on CPU (ResNet-18, batch 8 of 16,384 samples: 3.3-3.6 CPU-s a training step
# against 2.5-2.7 with oneDNN, and twice the first step's).
JIT_COMPILE = False


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """The resolved options of one fine-tuning run (recorded as run.json ``config``)."""

    data: str
    job_dir: str
    init: str = RANDOM
    seed: int = 10
    arch: str | None = None
    width: float | None = None
    batch_size: int = 128
    epochs: int = 200
    patience: int = 50
    val_size: float = 0.0625
    val_metric: str = "f1"
    learning_rate: float = 1e-3
    scenario: str | None = None
    label_frac: float = 1.0

    def __post_init__(self) -> None:
        """ConfigError naming the first option out of range (finite numbers, a seed numpy takes)."""
        for name in ("batch_size", "epochs", "patience"):
            check_number(f"--{name.replace('_', '-')}", getattr(self, name), minimum=1)
        check_number("--width", self.width, positive=True)
        check_number("--learning-rate", self.learning_rate, positive=True)
        check_number("--val-size", self.val_size)
        if not 0.0 < self.val_size < 1.0:
            raise ConfigError(f"--val-size must lie strictly between 0 and 1, got {self.val_size}")
        check_seed("--seed", self.seed)
        check_text("--scenario", self.scenario)
        check_number("--label-frac", self.label_frac, positive=True, maximum=1.0)
        if self.val_metric not in VAL_METRICS:
            raise ConfigError(f"--val-metric {self.val_metric!r}: choose one of {', '.join(VAL_METRICS)}")


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options shared by every run of a sweep (the authors' settings, docs/design-facts.md)."""
    parser.add_argument("--data", required=True, help="prepared challenge data (.npz from prepare-physionet)")
    parser.add_argument("--arch", help="resnet18, resnet34, resnet50 or resnet18_2d (default: the checkpoint's "
                                       "arch, else resnet18)")
    parser.add_argument("--width", type=float,
                        help="channel width multiplier (default: the checkpoint's width, else 1.0)")
    parser.add_argument("--batch-size", type=int, default=128, help="default: %(default)s")
    parser.add_argument("--epochs", type=int, default=200, help="maximum epochs (default: %(default)s)")
    parser.add_argument("--patience", type=int, default=50,
                        help="early stopping patience on val_loss, in epochs (default: %(default)s)")
    parser.add_argument("--val-size", type=float, default=0.0625,
                        help="fraction of the training records held out for validation (default: %(default)s)")
    parser.add_argument("--val-metric", choices=VAL_METRICS, default="f1",
                        help="which validation score picks the kept weights (default: %(default)s)")
    parser.add_argument("--learning-rate", type=float, default=1e-3,
                        help="Adam learning rate (default: %(default)s)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of one fine-tuning run: the shared ones plus job dir, init, seed and scenario."""
    add_training_arguments(parser)
    parser.add_argument("--job-dir", required=True, help="run directory to write (created if missing)")
    parser.add_argument("--init", default=RANDOM,
                        help="'random' or a pretraining checkpoint folder runs/pretrain/<name>/epoch_NN "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=10,
                        help="seed of the split, init and batch order (default: %(default)s)")
    parser.add_argument("--scenario", help="name of the init in a sweep (default: derived from --init/--arch)")
    parser.add_argument("--label-frac", type=float, default=1.0,
                        help="train on this stratified fraction of the training records left after the validation "
                             "split, in (0, 1]; the sets of one seed are nested (default: %(default)s)")


def check_arch(arch: str) -> None:
    """ConfigError naming the known archs when ``arch`` is not one."""
    from ecg_hpc.models.architectures import arch_spec  # imports TensorFlow, so only when needed

    arch_spec(arch)


def config_from_args(args: argparse.Namespace) -> FinetuneConfig:
    """Build the config from parsed arguments, checking ranges and the arch."""
    if args.arch is not None:
        check_arch(args.arch)
    fields = {f.name for f in dataclasses.fields(FinetuneConfig)}
    return FinetuneConfig(**{k: v for k, v in vars(args).items() if k in fields})


def _resolve_model(config: FinetuneConfig, init: InitSource) -> tuple[str, float]:
    """Arch and width: given ones, else the checkpoint's, else resnet18 at width 1; a contradiction is refused."""
    for option, given in (("arch", config.arch), ("width", config.width)):
        recorded = getattr(init, option)
        if given is not None and recorded is not None and given != recorded:
            raise ConfigError(f"--{option} {given} contradicts the checkpoint {init.checkpoint}, pretrained "
                              f"with {option} {recorded}")
    arch = config.arch or init.arch or DEFAULT_ARCH
    width = config.width if config.width is not None else (init.width or 1.0)
    return arch, float(width)


def _seed_tensorflow(seed: int) -> None:
    """Seed Python, NumPy's legacy state and TF (Keras needs all three) and make TF ops deterministic."""
    import tensorflow as tf

    tf.keras.backend.clear_session()  # a fresh graph per run when several run in one process
    tf.keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def _train(config: FinetuneConfig, init: InitSource, arch: str, width: float,
           job_dir: Path) -> dict[str, Any]:
    """Split, build, train, select and predict; write the CSVs and weights; return the record's results."""
    import numpy as np
    import tensorflow as tf

    from ecg_hpc.data.prepare import load_prepared
    from ecg_hpc.models import build_model, load_feature_extractor
    from ecg_hpc.models.weights_file import save_weights_h5
    from ecg_hpc.train.metrics import f1_report, one_hot
    from ecg_hpc.train.nonfinite import TerminateOnNonFinite
    from ecg_hpc.train.predictions import write_predictions
    from ecg_hpc.data.splits import nested_label_subset, stratified_holdout
    from ecg_hpc.train.threads import configure_cpu_threads
    from ecg_hpc.train.validation import ValidationMonitor

    threads = configure_cpu_threads()
    data = load_prepared(config.data)
    classes = [str(c) for c in data.classes]
    keep, held = stratified_holdout(np.asarray(data.y_train), config.val_size, np.random.default_rng(config.seed))
    n_pool = len(keep)
    if config.label_frac < 1.0:  # its own stream of the seed: the validation split stays the same
        keep = keep[nested_label_subset(np.asarray(data.y_train)[keep], config.label_frac,
                                        np.random.default_rng([config.seed, LABEL_STREAM]))]
    sets = {
        "train": (data.x_train[keep], data.y_train[keep], [data.names_train[i] for i in keep]),
        "val": (data.x_train[held], data.y_train[held], [data.names_train[i] for i in held]),
        "test": (data.x_test, data.y_test, list(data.names_test)),
    }
    print(f"split: {len(keep)} train, {len(held)} val, {len(data.y_test)} test records", flush=True)

    _seed_tensorflow(config.seed)
    model = build_model(arch, len(classes), tuple(data.x_train.shape[1:]), head_activation="softmax", width=width)
    if init.source != RANDOM:
        load_feature_extractor(model, require_checkpoint(init))
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=config.learning_rate),
                  loss=tf.keras.losses.CategoricalCrossentropy(), jit_compile=JIT_COMPILE)

    x_tr, y_tr, _ = sets["train"]
    x_va, y_va, _ = sets["val"]
    monitor = ValidationMonitor(x_va, y_va, classes, config.batch_size, config.val_metric, job_dir / HISTORY)
    stopper = tf.keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience)
    guard = TerminateOnNonFinite()  # after the monitor, which logs the val_loss that it and the stopper read
    fit = model.fit(x_tr, one_hot(y_tr, len(classes)).astype(np.float32), batch_size=config.batch_size,
                    epochs=config.epochs, shuffle=True, verbose=2, callbacks=[monitor, guard, stopper])
    guard.raise_if_stopped()
    model.set_weights(monitor.best_weights)

    save_weights_h5(model, job_dir / BEST_WEIGHTS)

    scores = {}
    for split, (x, y, names) in sets.items():
        prob = model.predict(x, batch_size=config.batch_size, verbose=0)
        write_predictions(job_dir / f"{split}_predictions.csv", names, y, prob, classes)
        report = f1_report(y, prob, classes)
        scores[split] = Scores(macro_f1=float(report["macro_f1"]), f1=dict(report["f1"]))  # type: ignore[arg-type]
    return {
        "split": {"test_seed": int(data.test_seed), "test_size": float(data.test_size),
                  "val_size": config.val_size, "fingerprint": str(data.fingerprint),
                  "label_frac": config.label_frac, "n_train_pool": n_pool,
                  "n_train": len(keep), "n_val": len(held), "n_test": len(data.y_test)},
        "epochs_run": len(fit.history["loss"]), "best_epoch": monitor.best_epoch,
        "best_val": scores["val"], "test": scores["test"], "threads": threads, "jit_compile": JIT_COMPILE,
    }


def finetune(config: FinetuneConfig) -> FinetuneRun:
    """Run (or skip, if already done) one fine-tuning job; return its run record.

    The run.json says ``running`` from the start and ``failed`` with the error if anything goes wrong, which is
    then re-raised; only this job directory is written, under its lock (``JobDirBusy`` if another process has
    it, in which case nothing is written).
    """
    job_dir = Path(config.job_dir)
    if is_done(job_dir):  # a done run is never redone, so no lock is needed to see it (works read-only too)
        return _done(job_dir)
    with writing(job_dir):
        job_dir.mkdir(parents=True, exist_ok=True)
    with job_dir_lock(job_dir):
        if is_done(job_dir):
            return _done(job_dir)
        return _run(config, job_dir)


def _done(job_dir: Path) -> FinetuneRun:
    """The record of a run that is done already (it is skipped)."""
    print(f"{job_dir}: already done, skipping", flush=True)
    record = read_record(job_dir)
    if not isinstance(record, FinetuneRun):
        raise ConfigError(f"--job-dir {job_dir}: holds a finished {record.kind if record else '?'} run, not a "
                          "fine-tuning one; use another --job-dir")
    return record


class Terminated(BaseException):
    """SIGTERM arrived (time limit, scancel, preemption): the run is recorded as failed, to be run again."""


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into ``Terminated`` inside the block (main thread only); the old handler comes back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated("terminated by SIGTERM (time limit, scancel or preemption); submit the task again")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(config: FinetuneConfig, job_dir: Path) -> FinetuneRun:
    """The body of ``finetune`` for a job directory that is locked and not done."""
    with writing(job_dir):
        for name in _OUTPUTS:  # leftovers of an interrupted or failed attempt
            (job_dir / name).unlink(missing_ok=True)
    start = time.monotonic()
    # Provisional init and arch, so that even a run failing on a bad --init says what it was meant to be.
    init = (InitSource(RANDOM) if config.init == RANDOM else
            InitSource("checkpoint", checkpoint=config.init, pretrain_run=str(Path(config.init).parent)))
    record = FinetuneRun(status="running", seed=config.seed, config=dataclasses.asdict(config),
                         scenario=config.scenario, environment=environment_info(), started_at=utc_now(),
                         init=init, arch=config.arch or DEFAULT_ARCH, width=config.width,
                         label_frac=config.label_frac)
    write_record(job_dir, record)
    try:
        with _sigterm_raises():
            init = describe_init(config.init)
            record = dataclasses.replace(record, init=init)
            arch, width = _resolve_model(config, init)
            record = dataclasses.replace(record, arch=arch, width=width,
                                         scenario=config.scenario or scenario_name(config.init, arch))
            if init.source != RANDOM:
                require_checkpoint(init)
            record = dataclasses.replace(record, **_train(config, init, arch, width, job_dir), status="done")
    except BaseException as exc:
        with interrupts_ignored():
            error = str(exc) if isinstance(exc, EcgHpcError) else f"{type(exc).__name__}: {exc}"
            record = dataclasses.replace(record, status="failed", error=error,
                                         traceback=None if isinstance(exc, EcgHpcError) else traceback.format_exc())
        raise
    finally:
        with interrupts_ignored():
            record = dataclasses.replace(record, finished_at=utc_now(),
                                         wall_time_s=round(time.monotonic() - start, 3))
            write_record(job_dir, record)
    assert record.test is not None
    print(f"{job_dir}: done, best epoch {record.best_epoch} of {record.epochs_run}, "
          f"test macro F1 {record.test.macro_f1:.4f}", flush=True)
    return record


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``python -m ecg_hpc.train.finetune``."""
    parser = argparse.ArgumentParser(prog="python -m ecg_hpc.train.finetune",
                                     description=__doc__.splitlines()[0].split(": ", 1)[1])
    add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run; a bad option is one line and exit status 2."""
    args = build_parser().parse_args(argv)
    report_native_crashes()
    try:
        config = config_from_args(args)
    except EcgHpcError as exc:
        return user_error(exc)
    return run(config)


def run(config: FinetuneConfig) -> int:
    """Run one fine-tuning job as a process does: its exit status, user errors as one line (status 2)."""
    configure_runtime()
    try:
        finetune(config)
    except JobDirBusy as exc:  # the run is in progress elsewhere: nothing to do here
        print(f"skipping: {exc}", flush=True)
    except Terminated as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 128 + signal.SIGTERM
    except EcgHpcError as exc:
        return user_error(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
