"""The pretraining loop: one worker's share of a Horovod data-parallel run of ``PretrainConfig`` (TensorFlow).

``ecg_hpc.train.pretrain`` is the entry point and the configuration; this module builds the model, data and
checkpoints, trains the remaining epochs, writes the run record on rank 0 and stops every worker at the same step
after a stop signal (see the entry point's docstring for the job directory, resume and preemption).
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import statistics
import time
from pathlib import Path
from typing import Any

import tensorflow as tf

from ecg_hpc.atomic import atomic_write_csv, writing
from ecg_hpc.data.icentia11k import select_patients
from ecg_hpc.data.pipeline import make_dataset
from ecg_hpc.data.pool import stage_patients
from ecg_hpc.data.store import Store, check_sizes, patients_fingerprint
from ecg_hpc.errors import ConfigError, DataError, EcgHpcError, WorkerFailed
from ecg_hpc.models import configure_precision
from ecg_hpc.progress import Progress
from ecg_hpc.provenance import environment_info, utc_now
from ecg_hpc.records import PretrainRun, RecordError, read_pretrain_run, record_failure, write_record
from ecg_hpc.tasks import get_task
from ecg_hpc.train import checkpoints, distributed
from ecg_hpc.train.environments import PREEMPTED_EXIT_CODE, REQUEUEING_LAUNCHERS, time_left_s
from ecg_hpc.train.job_lock import JobDirBusy, job_dir_lock
from ecg_hpc.train.nonfinite import ADVICE, NonFiniteLoss, nonfinite
from ecg_hpc.train.pretrain_config import PretrainConfig, bare_record, finished

HISTORY = "history.csv"
DEFAULT_STEPS = 1024
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT)  # SIGINT: stop, do not requeue
# Options that decide what a run computes: a resumed run must agree on them with the run.json it continues.
_FIXED = ("task", "arch", "width", "frac", "frame_size", "samples_per_patient", "batch_size",
          "steps_per_epoch", "seed", "precision", "lr", "lr_scaling", "warmup_epochs", "sampler", "pool_mb",
          "chunk_samples", "read_ratio")


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

    def __init__(self, config: PretrainConfig, world: Any) -> None:
        self.config, self.world = config, world
        self.job_dir = Path(config.job_dir)
        self.record: PretrainRun | None = None
        self.steps = 0  # steps per epoch, resolved once the patients are known
        self.damaged: tuple[checkpoints.Damaged, ...] = ()

    # -- setup -------------------------------------------------------------------------------------------------
    def build(self) -> None:
        """Select the patients, build and compile the model, restore the resume point, share rank 0's state."""
        config = self.config
        tf.keras.utils.set_random_seed(config.seed)
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
        configure_precision(config.precision)
        self.store = Store(config.store)
        if not self.store.patient_ids:
            raise DataError(f"--store {config.store}: holds no converted patients")
        self.patients = select_patients(self.store.patient_ids, frac=config.frac, seed=config.seed)
        self.store_record = self.check_store_unchanged()
        if config.stage_dir:
            stage_patients(self.store, self.patients, config.stage_dir, (self.world.job.local_rank,
                                                                       self.world.job.local_size))
            distributed.barrier()
            self.store = Store(config.stage_dir)
        self.steps = steps_per_epoch(config, len(self.patients), self.world.size)
        self.task = get_task(config.task)
        self.model = self.task.build_model(config.arch, config.frame_size, width=config.width)
        warmup_steps = round(config.warmup_epochs * self.steps)
        self.schedule = distributed.learning_rate(config.lr, self.world.size, config.lr_scaling, warmup_steps)
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
        if self.world.is_chief and not self.config.allow_store_change:
            try:
                previous = read_pretrain_run(self.job_dir)
            except RecordError:
                previous = None
            before = previous.store if previous is not None else None
            if isinstance(before, dict) and before.get("files_sha256") != record["files_sha256"]:
                old, new = set(before.get("patients") or []), set(record["patients"])
                change = (f"{len(new)} patients now, {len(old)} when it started"
                          + (f" (gone: {sorted(old - new)[:5]})" if old - new else "")
                          + (f" (new: {sorted(new - old)[:5]})" if new - old else "")) if old != new else \
                    "the same patients, but their files changed"
                problem = (f"--store {self.config.store}: the store changed since the run in {self.job_dir} started: "
                           f"{change}; restore it, use another --job-dir, or pass --allow-store-change")
        problem = distributed.broadcast_object(problem)
        if problem is not None:
            raise DataError(problem)
        return record

    def check_store_sizes(self) -> None:
        """Before each epoch: every worker checks its files' sizes; all stop with one DataError if one changed
        (between the checks, a file truncated while memory-mapped ends the worker with a bus error, which its crash
        watcher records: ``ecg_hpc.train.crash_watch``)."""
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
        config = self.config
        return make_dataset(self.store, self.task, self.patients, frame_size=config.frame_size,
                            batch_size=config.batch_size, seed=config.seed, epoch=epoch, rank=self.world.rank,
                            world_size=self.world.size, steps=self.steps, start_step=skip_steps,
                            parallel_batches=self.world.cpu_threads, pool=config.pool_options())

    # -- job directory (rank 0) ---------------------------------------------------------------------------------
    def start_record(self) -> None:
        """Check a previous run.json agrees with these options, then record this start (status running)."""
        config = self.config
        try:
            previous = read_pretrain_run(self.job_dir)
        except RecordError as exc:
            raise DataError(f"--job-dir {self.job_dir}: {exc}; use another --job-dir") from None
        old_config = previous.config if previous is not None else {}
        recorded = self.config_record()
        for key in _FIXED:
            if key in old_config and old_config[key] != recorded[key]:
                raise ConfigError(f"--{key.replace('_', '-')} {recorded[key]!r}: the run in {self.job_dir} "
                                  f"used {old_config[key]!r}; use another --job-dir")
        job = self.world.job
        attempt = {"started_at": utc_now(), "launcher": job.launcher, "job_id": job.job_id,
                   "restart_count": job.restart_count, "world_size": self.world.size, "hosts": list(job.hosts),
                   "resumed_from": str(self.resume.path) if self.resume else None}
        if self.damaged:
            attempt["damaged_checkpoints"] = [d.record() for d in self.damaged]
        pool = config.pool_options()
        self.record = PretrainRun(
            status="running", seed=config.seed, config=recorded, environment=environment_info(),
            started_at=previous.started_at if previous is not None else attempt["started_at"],
            task=config.task, arch=config.arch, width=config.width, frame_size=config.frame_size, frac=config.frac,
            n_patients=len(self.patients), epochs=config.epochs, world_size=self.world.size, hosts=tuple(job.hosts),
            device=self.world.device,
            store=dict(self.store_record, per_patient=self.store.manifest().get("per_patient")),
            horovod=distributed.lr_record(self.schedule, self.world.size, config.lr_scaling),
            sampler=pool.record() if pool is not None else {"sampler": "uniform"},
            attempts=(*(previous.attempts if previous is not None else ()), attempt))
        self.write_history()

    def config_record(self) -> dict[str, Any]:
        """The config as run.json records it, with the resolved steps per epoch."""
        return dataclasses.replace(self.config, steps_per_epoch=self.steps).as_record()

    def write_history(self) -> None:
        """Rebuild history.csv and the per-epoch run.json fields from the complete checkpoints."""
        epochs = [c for c in checkpoints.complete_epochs(self.job_dir) if c.epoch <= self.config.epochs]
        metric_names = sorted({k for c in epochs for k in c.logs} - {"frames_per_s"})
        rows = [[c.epoch, *(c.logs.get(k, "") for k in metric_names), round(c.epoch_time_s, 3),
                 round(c.logs.get("frames_per_s", 0.0), 2)] for c in epochs]
        atomic_write_csv(self.job_dir / HISTORY, ["epoch", *metric_names, "time_s", "frames_per_s"], rows)
        self.update(epochs_done=len(epochs), epoch_times_s=tuple(row[-2] for row in rows),
                    frames_per_s=statistics.median([row[-1] for row in rows]) if rows else None)

    def update(self, **changes: Any) -> None:
        """Replace fields of the run record and write it (rank 0)."""
        assert self.record is not None, "start_record first"
        self.record = dataclasses.replace(self.record, **changes)
        write_record(self.job_dir, self.record)

    def finish_record(self, status: str, error: str | None = None) -> None:
        """Mark the run done or failed (``finished_at``, ``wall_time_s`` = summed epoch times), or preempted."""
        assert self.record is not None, "start_record first"
        if status == "preempted":
            *earlier, last = self.record.attempts
            self.update(attempts=(*earlier, {**last, "preempted_at": utc_now()}))
        else:
            self.update(status=status, finished_at=utc_now(), wall_time_s=round(sum(self.record.epoch_times_s), 3),
                        error=error)

    # -- training ---------------------------------------------------------------------------------------------
    def fit(self, stop: StopFlag) -> str:
        """Train the remaining epochs; return ``"done"``, or ``"preempted"`` after a stop signal."""
        config, world = self.config, self.world
        start_epoch, skip, prior_logs = 1, 0, {}
        if self.resume is not None:
            start_epoch = self.resume.epoch + (1 if self.resume.complete else 0)
            if not self.resume.complete:
                skip, prior_logs = self.resume.steps_done, dict(self.resume.logs)
        if world.is_chief:
            origin = f"resuming {self.resume.path.name}" if self.resume else "from scratch"
            print(f"training epochs {start_epoch}..{config.epochs} (epoch {start_epoch} from step {skip}), {origin}, "
                  f"{world.size} worker(s) on {world.device}, {len(self.patients)} patients", flush=True)
        for epoch in range(start_epoch, config.epochs + 1):
            self.check_store_sizes()
            steps = self.steps - skip
            watcher = StepWatcher(stop, steps, f"epoch {epoch}/{config.epochs}" if world.is_chief else None, epoch)
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
            logs["frames_per_s"] = done_steps * config.batch_size * world.size / epoch_time
            if world.is_chief and epoch == start_epoch and epoch < config.epochs:
                warn_if_beyond_time_limit(world.job, elapsed / max(watcher.steps, 1),
                                          (config.epochs - epoch) * self.steps)
            if world.is_chief:
                record = dict(logs, _time_s=epoch_time) if done_steps < self.steps else logs
                checkpoints.save(self.job_dir, self.model, self.optimizer, epoch=epoch, steps_done=done_steps,
                                 steps_per_epoch=self.steps, logs=record, epoch_time_s=epoch_time)
                self.write_history()
                metrics = ", ".join(f"{k} {v:.4g}" for k, v in logs.items())
                print(f"epoch {epoch}/{config.epochs}: {done_steps} steps, {epoch_time:.1f} s, {metrics}", flush=True)
            distributed.barrier()
            if watcher.stopped and (done_steps < self.steps or epoch < config.epochs):
                return "preempted"
            skip, prior_logs = 0, {}
        return "done"

    def check_in_sync(self) -> None:
        """Log this worker's weight fingerprint; rank 0 records whether all workers hold the same weights."""
        mine = distributed.weights_fingerprint(self.model)
        print(f"rank {self.world.rank}: trainable weights sha256 {mine}", flush=True)
        every = distributed.gather(mine)
        if self.world.is_chief:
            self.update(weights_sha256=mine, weights_identical_across_ranks=len(set(every)) == 1)


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


def steps_per_epoch(config: PretrainConfig, n_patients: int, world_size: int) -> int:
    """``--steps-per-epoch``, else the steps that draw ``--samples-per-patient`` frames per patient, else 1024."""
    if config.steps_per_epoch is not None:
        return int(config.steps_per_epoch)
    if config.samples_per_patient is not None:
        return max(1, -(-n_patients * config.samples_per_patient // (config.batch_size * world_size)))
    return DEFAULT_STEPS


def train(config: PretrainConfig) -> str:
    """Run (or resume) the pretraining job of ``config`` on this worker; return ``"done"``, ``"preempted"`` or
    ``"interrupted"`` (SIGINT: checkpointed like a preemption, but not requeued).

    Rank 0 alone reads and writes the job folder (the others learn from it whether the run is done already); a
    worker that fails records itself in run.json (``records.record_failure``) before it exits.
    """
    world = distributed.start(shared_dir=Path(config.job_dir))
    run = _Run(config, world)
    lock = contextlib.ExitStack()
    try:
        if distributed.broadcast_object(finished(config.job_dir, config.epochs) if world.is_chief else None):
            if world.is_chief:
                print(f"{config.job_dir}: run.json says done with {config.epochs} epochs; nothing to do", flush=True)
            return "done"
        _hold_lock(lock, world, Path(config.job_dir))
        with StopFlag() as stop:
            run.build()
            if world.is_chief:
                run.start_record()
            status = run.fit(stop)
            run.check_in_sync()
        if status == "preempted":
            by_user = stop.signal_name == "SIGINT"
            # Every worker exits with PREEMPTED_EXIT_CODE; the TERM that srun --kill-on-bad-exit sends the others
            # when the first one exits must not turn theirs into 143 (the sbatch script requeues on 144).
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            if world.is_chief:
                _record_preemption(run, stop.signal_name or "a signal", by_user)
            distributed.barrier()  # no worker exits before rank 0 has recorded the preemption
            return "interrupted" if by_user else status
        if world.is_chief:
            run.finish_record("done")
            print(f"done: {config.job_dir}", flush=True)
        return status
    except BaseException as exc:
        if not isinstance(exc, JobDirBusy):  # a busy run belongs to its holder
            reason = str(exc) if isinstance(exc, EcgHpcError) else f"{type(exc).__name__}: {exc}"
            current = run.record if world.is_chief else None
            if current is not None:
                current = dataclasses.replace(current, wall_time_s=round(sum(current.epoch_times_s), 3))
            record = record_failure(config.job_dir, world.rank, world.job.hostname, reason, current=current,
                                    bare=bare_record(config))
            if (record is not None and record.failed_rank not in (None, world.rank)
                    and isinstance(exc, Exception)):
                raise WorkerFailed(f"rank {record.failed_rank} on {record.failed_host} failed first "
                                   f"({record.error}); rank {world.rank} stopped with it") from exc
        raise
    finally:
        lock.close()
        distributed.stop(world)


def _record_preemption(run: _Run, signal_name: str, by_user: bool) -> None:
    """Rank 0 after a stop signal: Ctrl-C keeps the checkpoint for the user; under a launcher that requeues
    (SLURM, submitit) the attempt is marked preempted and the exit status asks the launcher to requeue; a run
    that nobody requeues (a plain process, horovodrun, MPI) says failed with the reason, not running for ever."""
    job_dir = run.config.job_dir
    if by_user:
        run.finish_record("preempted")
        print(f"interrupted by SIGINT: checkpoint kept in {job_dir}; start the same command again to resume",
              flush=True)
    elif run.world.job.launcher in REQUEUEING_LAUNCHERS:
        run.finish_record("preempted")
        print(f"preempted by {signal_name}: checkpointed; exit status {PREEMPTED_EXIT_CODE} leaves the requeue to "
              "the launcher", flush=True)
    else:
        why = "not requeued: start the same command again to resume from the last checkpoint"
        run.finish_record("failed", f"stopped by {signal_name} and {why}")
        print(f"preempted by {signal_name}: {why}", flush=True)


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
