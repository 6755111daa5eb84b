"""``python -m ecg_hpc.train.pretrain``: Horovod data-parallel pretraining of one task on the shard store.

Runs as one process, under ``horovodrun``, or as the tasks of an ``srun`` step / submitit job (ranks from the
job environment, rendezvous served by rank 0; see ``ecg_hpc.train.distributed``). ``--batch-size`` is per
worker; the learning rate is scaled by the number of workers with a linear warm-up, as run.json records.

Rank 0 alone writes the job directory: ``epoch_NN/`` checkpoints (``ecg_hpc.train.checkpoints``),
``history.csv`` (one row per epoch: ``epoch``, the metrics averaged over workers, ``time_s``, ``frames_per_s``,
``lr``) and ``run.json`` (keys documented in ``ecg_hpc.rundir`` plus ``attempts``, one per start).

Resume: starting again with the same ``--job-dir`` continues after the newest intact checkpoint (damaged newer
ones are named in one line, deleted and listed in the attempt's ``damaged_checkpoints``) and ends with the same
epochs; the data of (seed, epoch, rank) is fixed, so a resumed run trains on what an uninterrupted one would.
On SIGUSR1/SIGUSR2 (SLURM's and submitit's warning before the time limit) or SIGTERM, every worker finishes
its step, rank 0 writes ``preempted/``, the job asks to be requeued and the workers exit with status
``REQUEUE_EXIT_CODE``; on SIGINT (Ctrl-C) they checkpoint the same way but exit with 130 and are not requeued.
A run whose run.json says done is left alone. run.json ``store`` records the patients and a checksum over their
files' recorded checksums and sizes: a resume on a changed store is refused in one line unless
``--allow-store-change``, and each epoch first checks the files' sizes (a file truncated while memory-mapped
would otherwise end the process with a bus error).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import tensorflow as tf

from ecg_hpc.data.icentia11k import select_patients
from ecg_hpc.data.pipeline import make_dataset
from ecg_hpc.data.pool import DEFAULT_POOL_MB, DEFAULT_READ_RATIO, DEFAULT_READERS, PoolOptions, stage_patients
from ecg_hpc.data.store import Store, check_sizes, patients_fingerprint
from ecg_hpc.errors import ConfigError, DataError, EcgHpcError, WorkerFailed, report_native_crashes, user_error
from ecg_hpc.hpc.jobenv import REQUEUE_EXIT_CODE, request_requeue, time_left_s
from ecg_hpc.interrupt import EXIT_INTERRUPTED
from ecg_hpc.models import ARCHS, PRECISIONS, configure_precision
from ecg_hpc.options import check_number, check_seed
from ecg_hpc.progress import Progress
from ecg_hpc.rundir import (atomic_write_csv, environment_info, is_done, read_run, record_failure, utc_now,
                            write_run, writing)
from ecg_hpc.tasks import TASKS, get_task
from ecg_hpc.train import checkpoints, distributed
from ecg_hpc.train.job_lock import JobDirBusy, job_dir_lock
from ecg_hpc.train.nonfinite import ADVICE, NonFiniteLoss, nonfinite

HISTORY = "history.csv"
DEFAULT_STEPS = 1024
MAX_STEPS_PER_EPOCH = 10 ** 7  # beyond any real run (the paper's epochs have ~10^4 steps): a typo, refused
MAX_EPOCHS = 10 ** 4
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT)  # SIGINT: stop, do not requeue
# Options that decide what a run computes: a resumed run must agree on them with the run.json it continues.
_FIXED = ("task", "arch", "width", "frac", "frame_size", "samples_per_patient", "batch_size",
          "steps_per_epoch", "seed", "precision", "lr", "lr_scaling", "warmup_epochs", "sampler", "pool_mb",
          "chunk_samples", "read_ratio")


def add_arguments(parser: argparse.ArgumentParser, job_dir_required: bool = True,
                  store_required: bool = True) -> None:
    """The trainer's options (the authors' defaults, docs/design-facts.md); launchers may derive ``--job-dir`` and
    find ``--store`` themselves (``store_required=False``: no default, see ``ecg_hpc.project_config``)."""
    store = os.environ.get("ECG_HPC_STORE") if store_required else None
    where = (f"$ECG_HPC_STORE{f', now {store}' if store else ', which is not set'}" if store_required
             else "$ECG_HPC_STORE, else the store named in ecg-hpc.toml, which make demo writes")
    parser.add_argument("--store", required=store_required and store is None, default=store,
                        help="Icentia11k shard store made by python -m ecg_hpc.data convert-icentia "
                             f"(default: {where})")
    parser.add_argument("--task", default="beat", choices=TASKS,
                        help="pretraining task (default: beat, the paper's main one)")
    parser.add_argument("--arch", default="resnet18", choices=ARCHS, help="network (default: resnet18)")
    parser.add_argument("--width", type=float, default=1.0, help="channel width multiplier (default: 1.0)")
    parser.add_argument("--frac", type=float, default=1.0,
                        help="fraction of the store's patients to train on, seeded and nested (default: 1.0)")
    parser.add_argument("--frame-size", type=int, default=4096, help="samples per frame (default: 4096)")
    parser.add_argument("--samples-per-patient", type=int, default=None,
                        help="size an epoch as this many frames per selected patient (the authors' 4096): "
                             "steps = patients x this / (batch size x workers); used when --steps-per-epoch "
                             "is not given")
    parser.add_argument("--batch-size", type=int, default=512, help="frames per step and worker (default: 512)")
    parser.add_argument("--epochs", type=int, default=16, help="epochs in all, resumed ones included (default: 16)")
    parser.add_argument("--steps-per-epoch", type=int, default=None,
                        help=f"steps per epoch (default: {DEFAULT_STEPS} unless --samples-per-patient is given)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of one worker (default: 1e-3)")
    parser.add_argument("--lr-scaling", choices=tuple(distributed.LR_SCALING_RULES), default="linear",
                        help="how the learning rate grows with the number of workers: linear (x workers, the "
                             "authors'), sqrt (x sqrt(workers), gentler for Adam with many workers) or none "
                             "(default: linear); run.json records the rule")
    parser.add_argument("--warmup-epochs", type=float, default=1.0,
                        help="epochs of linear warm-up to the scaled learning rate (default: 1)")
    parser.add_argument("--precision", default="float32", choices=PRECISIONS, help="dtype policy (default: float32)")
    parser.add_argument("--deterministic", action="store_true",
                        help="deterministic TF ops (slower on GPUs; exact resume checks)")
    parser.add_argument("--job-dir", required=job_dir_required, help="job directory, e.g. runs/pretrain/NAME")
    parser.add_argument("--allow-store-change", action="store_true",
                        help="resume even when the store's patients or files changed since the run started "
                             "(recorded in run.json)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the patient subset, weights and data (default: 0)")
    parser.add_argument("--sampler", choices=("pool", "uniform"), default="pool",
                        help="pool: each worker reads whole segments of its share of the patients into memory and "
                             "draws frames there (sequential reads; for stores larger than the page cache); "
                             "uniform: every frame from a random place of the memory-mapped store (default: pool)")
    parser.add_argument("--pool-mb", type=float, default=DEFAULT_POOL_MB,
                        help=f"signal memory of the pool per worker, MiB (default: {DEFAULT_POOL_MB})")
    parser.add_argument("--chunk-samples", type=int, default=None,
                        help="read pieces of this many samples instead of whole segments (default: whole)")
    parser.add_argument("--read-ratio", type=float, default=DEFAULT_READ_RATIO,
                        help=f"samples read into the pool per sample drawn (default: {DEFAULT_READ_RATIO})")
    parser.add_argument("--pool-readers", type=int, default=DEFAULT_READERS,
                        help=f"reads in flight at once per worker (default: {DEFAULT_READERS}; the data do not "
                             f"depend on it)")
    parser.add_argument("--stage-dir", default=None,
                        help="copy the selected patients to this node-local folder first, e.g. $SLURM_TMPDIR")


def check_arguments(args: argparse.Namespace) -> None:
    """ConfigError naming the first option out of range (finite, positive, a seed numpy takes, a sane size)."""
    positive = ("width", "frame_size", "samples_per_patient", "batch_size", "epochs", "steps_per_epoch", "lr")
    for name in positive:
        check_number(f"--{name.replace('_', '-')}", getattr(args, name), positive=True)
    check_number("--steps-per-epoch", args.steps_per_epoch, maximum=MAX_STEPS_PER_EPOCH)
    check_number("--epochs", args.epochs, maximum=MAX_EPOCHS)
    if not 0 < args.frac <= 1:
        raise ConfigError(f"--frac {args.frac}: must lie in (0, 1]")
    check_number("--warmup-epochs", args.warmup_epochs, minimum=0)
    check_seed("--seed", args.seed)
    if not Path(args.store).is_dir():
        raise DataError(f"--store {args.store}: no such directory")
    pool_options(args)


def pool_options(args: argparse.Namespace) -> PoolOptions | None:
    """The pool sampler's options (checked), or None for ``--sampler uniform``."""
    if args.sampler != "pool":
        return None
    options = PoolOptions(pool_mb=args.pool_mb, chunk_samples=args.chunk_samples, read_ratio=args.read_ratio,
                          readers=args.pool_readers)
    options.check()
    return options


def config_of(args: argparse.Namespace) -> dict[str, Any]:
    """The resolved options as recorded in run.json ``config``."""
    return {k: v for k, v in sorted(vars(args).items()) if not k.startswith("_")}


class StopFlag:
    """Records that a stop signal arrived; installed for ``STOP_SIGNALS`` while training, restored after."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopFlag":
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name
            print(f"received {self.signal_name}: finishing the current step, then checkpointing", flush=True)

    @property
    def raised(self) -> bool:
        """True once a stop signal arrived."""
        return self.signal_name is not None


def _combine(first: dict[str, float], n_first: int, second: dict[str, float], n_second: int) -> dict[str, float]:
    """Step-weighted means of two runs of the same epoch (batches are equal-sized, so this is exact)."""
    total = n_first + n_second
    return {k: (first.get(k, 0.0) * n_first + second[k] * n_second) / total for k in second}


class _Run:
    """One pretraining run of this worker: model, data, checkpoints and the job directory."""

    def __init__(self, args: argparse.Namespace, world: Any) -> None:
        self.args, self.world = args, world
        self.job_dir = Path(args.job_dir)
        self.info: dict[str, Any] = {}
        self.damaged: tuple[checkpoints.Damaged, ...] = ()

    # -- setup -------------------------------------------------------------------------------------------------
    def build(self) -> None:
        """Select the patients, build and compile the model, restore the resume point, share rank 0's state."""
        args = self.args
        tf.keras.utils.set_random_seed(args.seed)
        if args.deterministic:
            tf.config.experimental.enable_op_determinism()
        configure_precision(args.precision)
        self.store = Store(args.store)
        if not self.store.patient_ids:
            raise DataError(f"--store {args.store}: holds no converted patients")
        self.patients = select_patients(self.store.patient_ids, frac=args.frac, seed=args.seed)
        self.store_record = self.check_store_unchanged()
        if args.stage_dir:
            stage_patients(self.store, self.patients, args.stage_dir, (self.world.job.local_rank,
                                                                       self.world.job.local_size))
            distributed.barrier()
            self.store = Store(args.stage_dir)
        args.steps_per_epoch = steps_per_epoch(args, len(self.patients), self.world.size)
        self.task = get_task(args.task)
        self.model = self.task.build_model(args.arch, args.frame_size, width=args.width)
        warmup_steps = round(args.warmup_epochs * args.steps_per_epoch)
        self.schedule = distributed.learning_rate(args.lr, self.world.size, args.lr_scaling, warmup_steps)
        adam = tf.keras.optimizers.Adam(self.schedule, beta_1=0.9, beta_2=0.98, epsilon=1e-9)
        self.optimizer = distributed.distributed_optimizer(adam)
        self.task.compile_model(self.model, self.optimizer)
        self.optimizer.build(self.model.trainable_variables)
        self.resume, self.damaged = self.find_resume()
        if self.resume is not None and self.world.is_chief:
            checkpoints.restore(self.resume, self.model, self.optimizer)
        distributed.broadcast_state(self.model, self.optimizer)

    def check_store_unchanged(self) -> dict[str, Any]:
        """The store record of this run's patients; rank 0 refuses (on every worker) to continue a run whose
        patient set or files changed since it started, unless ``--allow-store-change``."""
        record = patients_fingerprint(self.store, self.patients)
        problem = None
        if self.world.is_chief and not self.args.allow_store_change:
            try:
                before = (read_run(self.job_dir) or {}).get("store")
            except ValueError:
                before = None
            if isinstance(before, dict) and before.get("files_sha256") != record["files_sha256"]:
                old, new = set(before.get("patients") or []), set(record["patients"])
                change = (f"{len(new)} patients now, {len(old)} when it started"
                          + (f" (gone: {sorted(old - new)[:5]})" if old - new else "")
                          + (f" (new: {sorted(new - old)[:5]})" if new - old else "")) if old != new else \
                    "the same patients, but their files changed"
                problem = (f"--store {self.args.store}: the store changed since the run in {self.job_dir} started: "
                           f"{change}; restore it, use another --job-dir, or pass --allow-store-change")
        problem = distributed.broadcast_object(problem)
        if problem is not None:
            raise DataError(problem)
        return record

    def check_store_sizes(self) -> None:
        """Before each epoch: every worker checks its files' sizes; all stop with one DataError if one changed
        (a file truncated while memory-mapped would otherwise end the process with a bare bus error)."""
        try:
            check_sizes(self.store, self.patients)
            problem = None
        except DataError as exc:
            problem = str(exc)
        if distributed.any_worker(problem is not None):
            raise DataError(problem or "the store changed under this run (another worker found which file)")

    def find_resume(self) -> tuple[checkpoints.CheckpointInfo | None, tuple[checkpoints.Damaged, ...]]:
        """Rank 0 picks the newest intact checkpoint, says in one line which damaged ones it skips and deletes
        them; every worker gets the choice, or the same DataError when no checkpoint is intact."""
        found: Any = None
        if self.world.is_chief:
            try:
                found = checkpoints.find_resume(self.job_dir)
            except DataError as exc:
                found = str(exc)
        found = distributed.broadcast_object(found)
        if isinstance(found, str):
            raise DataError(found)
        resume, damaged = found
        if damaged and self.world.is_chief:
            skipped = "; ".join(f"{d.path.name} ({d.problem})" for d in damaged)
            print(f"warning: damaged checkpoint {skipped} in {self.job_dir}; resuming from {resume.path.name} "
                  "instead", flush=True)
            checkpoints.discard(damaged)
        return resume, damaged

    def dataset(self, epoch: int, skip_steps: int) -> tf.data.Dataset:
        """This worker's batches of ``epoch`` (a function of seed, epoch and rank) from step ``skip_steps`` on."""
        args = self.args
        return make_dataset(self.store, args.task, self.patients, frame_size=args.frame_size,
                            batch_size=args.batch_size, seed=args.seed, epoch=epoch, rank=self.world.rank,
                            world_size=self.world.size, steps=args.steps_per_epoch, start_step=skip_steps,
                            parallel_batches=self.world.cpu_threads, pool=pool_options(args))

    # -- job directory (rank 0) ---------------------------------------------------------------------------------
    def start_record(self) -> None:
        """Check a previous run.json agrees with these options, then record this start (status running)."""
        previous = read_run(self.job_dir) or {}
        old_config = previous.get("config", {})
        for key in _FIXED:
            if key in old_config and old_config[key] != getattr(self.args, key):
                raise ConfigError(f"--{key.replace('_', '-')} {getattr(self.args, key)!r}: the run in {self.job_dir} "
                                  f"used {old_config[key]!r}; use another --job-dir")
        job = self.world.job
        attempt = {"started_at": utc_now(), "launcher": job.launcher, "job_id": job.job_id,
                   "restart_count": job.restart_count, "world_size": self.world.size, "hosts": list(job.hosts),
                   "resumed_from": str(self.resume.path) if self.resume else None}
        if self.damaged:
            attempt["damaged_checkpoints"] = [d.record() for d in self.damaged]
        self.info = {
            "kind": "pretrain", "status": "running", "seed": self.args.seed, "config": config_of(self.args),
            "environment": environment_info(), "started_at": previous.get("started_at", attempt["started_at"]),
            "task": self.args.task, "arch": self.args.arch, "width": self.args.width,
            "frame_size": self.args.frame_size, "frac": self.args.frac, "n_patients": len(self.patients),
            "epochs": self.args.epochs, "epochs_done": 0, "world_size": self.world.size, "hosts": list(job.hosts),
            "device": self.world.device,
            "store": dict(self.store_record, per_patient=self.store.manifest().get("per_patient")),
            "horovod": distributed.lr_record(self.schedule, self.world.size, self.args.lr_scaling),
            "epoch_times_s": [], "frames_per_s": None,
            "sampler": (pool_options(self.args).record() if self.args.sampler == "pool"
                        else {"sampler": "uniform"}),
            "attempts": previous.get("attempts", []) + [attempt],
        }
        self.write_history()

    def write_history(self) -> None:
        """Rebuild history.csv and the per-epoch run.json fields from the complete checkpoints."""
        epochs = [c for c in checkpoints.complete_epochs(self.job_dir) if c.epoch <= self.args.epochs]
        metric_names = sorted({k for c in epochs for k in c.logs} - {"frames_per_s"})
        rows = [[c.epoch, *(c.logs.get(k, "") for k in metric_names), round(c.epoch_time_s, 3),
                 round(c.logs.get("frames_per_s", 0.0), 2)] for c in epochs]
        atomic_write_csv(self.job_dir / HISTORY, ["epoch", *metric_names, "time_s", "frames_per_s"], rows)
        self.info.update(epochs_done=len(epochs), epoch_times_s=[row[-2] for row in rows],
                         frames_per_s=statistics.median([row[-1] for row in rows]) if rows else None)
        write_run(self.job_dir, self.info)

    def finish_record(self, status: str, error: str | None = None) -> None:
        """Mark the run done or failed (``finished_at``, ``wall_time_s`` = summed epoch times), or preempted."""
        if status == "preempted":
            self.info["attempts"][-1]["preempted_at"] = utc_now()
        else:
            self.info.update(status=status, finished_at=utc_now(),
                             wall_time_s=round(sum(self.info.get("epoch_times_s") or []), 3))
        if error:
            self.info["error"] = error
        write_run(self.job_dir, self.info)

    # -- training ---------------------------------------------------------------------------------------------
    def fit(self, stop: StopFlag) -> str:
        """Train the remaining epochs; return ``"done"``, or ``"preempted"`` after a stop signal."""
        args, world = self.args, self.world
        start_epoch, skip, prior_logs = 1, 0, {}
        if self.resume is not None:
            start_epoch = self.resume.epoch + (1 if self.resume.complete else 0)
            if not self.resume.complete:
                skip, prior_logs = self.resume.steps_done, dict(self.resume.logs)
        if world.is_chief:
            origin = f"resuming {self.resume.path.name}" if self.resume else "from scratch"
            print(f"training epochs {start_epoch}..{args.epochs} (epoch {start_epoch} from step {skip}), {origin}, "
                  f"{world.size} worker(s) on {world.device}, {len(self.patients)} patients", flush=True)
        for epoch in range(start_epoch, args.epochs + 1):
            self.check_store_sizes()
            steps = args.steps_per_epoch - skip
            watcher = StepWatcher(stop, steps, f"epoch {epoch}/{args.epochs}" if world.is_chief else None, epoch)
            began = time.monotonic()
            history = self.model.fit(self.dataset(epoch, skip), epochs=1, steps_per_epoch=steps, verbose=0,
                                     callbacks=[watcher])
            watcher.raise_if_diverged()
            elapsed = time.monotonic() - began
            local = {k: float(v[-1]) for k, v in history.history.items()}
            logs = distributed.average(_combine(prior_logs, skip, local, watcher.steps))
            done_steps = skip + watcher.steps
            epoch_time = float(prior_logs.get("_time_s", 0.0)) + elapsed
            logs["lr"] = float(self.schedule(self.optimizer.iterations))
            logs["frames_per_s"] = done_steps * args.batch_size * world.size / epoch_time
            if world.is_chief and epoch == start_epoch and epoch < args.epochs:
                warn_if_beyond_time_limit(world.job, elapsed / max(watcher.steps, 1),
                                          (args.epochs - epoch) * args.steps_per_epoch)
            if world.is_chief:
                record = dict(logs, _time_s=epoch_time) if done_steps < args.steps_per_epoch else logs
                checkpoints.save(self.job_dir, self.model, self.optimizer, epoch=epoch, steps_done=done_steps,
                                 steps_per_epoch=args.steps_per_epoch, logs=record, epoch_time_s=epoch_time)
                self.write_history()
                metrics = ", ".join(f"{k} {v:.4g}" for k, v in logs.items())
                print(f"epoch {epoch}/{args.epochs}: {done_steps} steps, {epoch_time:.1f} s, {metrics}", flush=True)
            distributed.barrier()
            if watcher.stopped and (done_steps < args.steps_per_epoch or epoch < args.epochs):
                return "preempted"
            skip, prior_logs = 0, {}
        return "done"

    def check_in_sync(self) -> None:
        """Log this worker's weight fingerprint; rank 0 records whether all workers hold the same weights."""
        mine = distributed.weights_fingerprint(self.model)
        print(f"rank {self.world.rank}: trainable weights sha256 {mine}", flush=True)
        every = distributed.gather(mine)
        if self.world.is_chief:
            self.info.update(weights_sha256=mine, weights_identical_across_ranks=len(set(every)) == 1)


class StepWatcher(tf.keras.callbacks.Callback):
    """Counts steps, shows progress on rank 0, and stops all workers at the same step after a signal or when
    any worker's loss is not finite (``nonfinite`` then says where, on every worker)."""

    def __init__(self, stop: StopFlag, total: int, label: str | None, epoch: int = 1) -> None:
        super().__init__()
        self.stop, self.steps, self.stopped, self.epoch = stop, 0, False, epoch
        self.nonfinite: str | None = None
        self.progress = Progress(total, label, unit="steps", interval=10.0) if label else None

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """After each step: count it, and agree with the other workers whether to stop now."""
        self.steps += 1
        if self.progress is not None:
            self.progress.update()
        mine = nonfinite(logs, ("loss",))
        signalled, diverged = distributed.any_workers((self.stop.raised, mine is not None))
        if diverged:
            self.nonfinite = f"epoch {self.epoch} step {self.steps}: {mine or 'loss not finite on another worker'}"
            self.model.stop_training = True
        elif signalled:
            self.stopped = True
            self.model.stop_training = True

    def raise_if_diverged(self) -> None:
        """NonFiniteLoss (on every worker) when a non-finite loss stopped the epoch; nothing is checkpointed."""
        if self.nonfinite is not None:
            raise NonFiniteLoss(f"{self.nonfinite}: training stopped, the last checkpoint is kept ({ADVICE})")


def warn_if_beyond_time_limit(job: Any, seconds_per_step: float, steps_left: int) -> None:
    """One warning line when the remaining steps at the measured speed need more time than the job has left
    (``--time``): the run then goes on by checkpointing and requeueing, which the user should expect."""
    left = time_left_s(job)
    needed = seconds_per_step * steps_left
    if left is not None and needed > left:
        print(f"warning: the remaining {steps_left} steps need about {needed / 3600:.1f} h at "
              f"{seconds_per_step:.3g} s/step, the job has {left / 3600:.1f} h left (--time): it will checkpoint "
              "and requeue at its time limit", flush=True)


def steps_per_epoch(args: argparse.Namespace, n_patients: int, world_size: int) -> int:
    """``--steps-per-epoch``, else the steps that draw ``--samples-per-patient`` frames per patient, else 1024."""
    if args.steps_per_epoch is not None:
        return int(args.steps_per_epoch)
    if args.samples_per_patient is not None:
        return max(1, -(-n_patients * args.samples_per_patient // (args.batch_size * world_size)))
    return DEFAULT_STEPS


def finished(job_dir: str | Path, epochs: int) -> bool:
    """True when ``job_dir`` holds a run that is done with at least ``epochs`` epochs (asking for more resumes it)."""
    info = read_run(job_dir) if is_done(job_dir) else None
    return bool(info) and int(info.get("epochs_done", 0)) >= epochs


def train(args: argparse.Namespace) -> str:
    """Run (or resume) the pretraining job of ``args`` on this worker; return ``"done"``, ``"preempted"`` or
    ``"interrupted"`` (SIGINT: checkpointed like a preemption, but not requeued).

    Rank 0 alone reads and writes the job folder (the others learn from it whether the run is done already); a
    worker that fails records itself in run.json (``rundir.record_failure``) before it exits.
    """
    check_arguments(args)
    world = distributed.start(shared_dir=Path(args.job_dir))
    run = _Run(args, world)
    lock = contextlib.ExitStack()
    try:
        if distributed.broadcast_object(finished(args.job_dir, args.epochs) if world.is_chief else None):
            if world.is_chief:
                print(f"{args.job_dir}: run.json says done with {args.epochs} epochs; nothing to do", flush=True)
            return "done"
        _hold_lock(lock, world, Path(args.job_dir))
        with StopFlag() as stop:
            run.build()
            if world.is_chief:
                run.start_record()
            status = run.fit(stop)
            run.check_in_sync()
        if status == "preempted":
            by_user = stop.signal_name == "SIGINT"
            # Every worker exits with REQUEUE_EXIT_CODE; the TERM that srun --kill-on-bad-exit sends the others
            # when the first one exits must not turn theirs into 143 (the sbatch script requeues on 144).
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            if world.is_chief:
                requeue = "" if by_user else request_requeue(world.job)
                if requeue.startswith(("not requeued", "could not requeue")):  # scancel: nobody resumes it
                    run.finish_record("failed", f"stopped by {stop.signal_name} and {requeue}")
                else:
                    run.finish_record("preempted")
                print(f"interrupted by SIGINT: checkpoint kept in {args.job_dir}; start the same command again to "
                      f"resume" if by_user else f"preempted by {stop.signal_name}: {requeue}", flush=True)
            distributed.barrier()  # no worker exits (ending the step) before rank 0 has asked for the requeue
            return "interrupted" if by_user else status
        if world.is_chief:
            run.finish_record("done")
            print(f"done: {args.job_dir}", flush=True)
        return status
    except BaseException as exc:
        if not isinstance(exc, JobDirBusy):  # a busy run belongs to its holder
            reason = str(exc) if isinstance(exc, EcgHpcError) else f"{type(exc).__name__}: {exc}"
            if world.is_chief and run.info:
                run.info["wall_time_s"] = round(sum(run.info["epoch_times_s"] or []), 3)
            record = record_failure(args.job_dir, "pretrain", world.rank, world.job.hostname, reason,
                                    info=run.info if world.is_chief and run.info else None)
            if record.get("failed_rank", world.rank) != world.rank and isinstance(exc, Exception):
                raise WorkerFailed(f"rank {record['failed_rank']} on {record['failed_host']} failed first "
                                   f"({record['error']}); rank {world.rank} stopped with it") from exc
        raise
    finally:
        lock.close()
        distributed.stop(world)


def _hold_lock(stack: contextlib.ExitStack, world: Any, job_dir: Path) -> None:
    """Rank 0 holds the run's lock until the run ends (so a run that dies is seen as died, and a second copy
    of the job stops); every worker raises the same JobDirBusy when another process has it."""
    busy = None
    if world.is_chief:
        try:
            with writing(job_dir):
                job_dir.mkdir(parents=True, exist_ok=True)
            stack.enter_context(job_dir_lock(job_dir))
        except JobDirBusy as exc:
            busy = str(exc)
    busy = distributed.broadcast_object(busy)
    if busy is not None:
        raise JobDirBusy(busy)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = argparse.ArgumentParser(prog="python -m ecg_hpc.train.pretrain", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and train: 0 when done, ``REQUEUE_EXIT_CODE`` when preempted, 130 when interrupted (Ctrl-C,
    checkpoint kept, not requeued), 2 on a user error."""
    args = build_parser().parse_args(argv)
    report_native_crashes()
    try:
        status = train(args)
    except EcgHpcError as exc:
        return user_error(exc)
    except Exception:
        traceback.print_exc()
        return 1
    return {"preempted": REQUEUE_EXIT_CODE, "interrupted": EXIT_INTERRUPTED}.get(status, 0)


if __name__ == "__main__":
    sys.exit(main())
