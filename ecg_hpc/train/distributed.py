"""Horovod data-parallel training for Keras: start the workers, share state, scale the learning rate, average.

One code path for any world size: a single process is a world of one (``hvd.init()`` alone). ``start`` finds
this worker's place (``ecg_hpc.train.environments``), serves or waits for the rendezvous when needed
(``ecg_hpc.train.rendezvous``), initialises
Horovod and gives each local rank its own GPU (or its share of the CPU threads). The learning rate is scaled
by the number of workers (Goyal et al., 2017) and warmed up linearly from the single-worker rate over the
first steps; the schedule is a function of the optimizer's step counter, so a resumed run follows exactly
the schedule of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import tensorflow as tf

from ecg_hpc.train import preflight, rendezvous
from ecg_hpc.train.environments import JobEnv, detect
from ecg_hpc.train.threads import configure_cpu_threads, worker_cpus

keras = tf.keras


@dataclass
class World:
    """The running Horovod world as seen by this worker."""

    job: JobEnv
    rank: int
    size: int
    local_rank: int
    device: str
    cpu_threads: int  # CPU threads this worker may use (its SLURM CPUs per task, else its share of the machine)
    _server: rendezvous.RendezvousServer | None = None

    @property
    def is_chief(self) -> bool:
        """True on rank 0, the one worker that writes the job directory."""
        return self.rank == 0


def _assign_device(local_rank: int, local_size: int) -> str:
    """Give this worker one GPU by local rank, else its share of the CPU threads; describe the choice."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        gpu = gpus[local_rank % len(gpus)]
        tf.config.set_visible_devices(gpu, "GPU")
        tf.config.experimental.set_memory_growth(gpu, True)
        return gpu.name
    threads = configure_cpu_threads(local_size)
    return f"CPU ({threads['intra_op_threads']} threads, from {threads['cpus_from']})"


def _preflight(job: JobEnv, shared_dir: Path | None) -> Path | None:
    """Before the rendezvous of a multi-node job: this node's name, the rendezvous host and (given ``shared_dir``)
    that the job folder is one folder on every node; rank 0 returns the token it wrote there."""
    if len(job.hosts) < 2 or not job.needs_rendezvous:
        return None
    preflight.check_node_name(socket.gethostname())
    preflight.check_rendezvous_host(rendezvous.rendezvous_address(job), job.hostname, rendezvous.ADDR_ENV)
    if shared_dir is None:
        return None
    if job.rank == 0:
        return preflight.write_shared_token(shared_dir, job.job_id, job.restart_count, job.hostname)
    preflight.wait_for_shared_token(shared_dir, job.job_id, job.restart_count, job.rank, job.hostname, job.hosts[0])
    return None


def start(job: JobEnv | None = None, shared_dir: Path | None = None) -> World:
    """Initialise Horovod for this worker (checks and rendezvous first where no horovodrun did it) and pick its
    device. ``shared_dir``: a folder every node must see as the same one (the job folder), checked first."""
    job = job if job is not None else detect()
    token = _preflight(job, shared_dir)
    server = rendezvous.start_horovod_rendezvous(job)
    import horovod.tensorflow.keras as hvd

    hvd.init()
    if token is not None:  # every rank has passed its check once all of them reached the rendezvous
        token.unlink(missing_ok=True)
    if job.launcher == "single" and hvd.size() > 1:  # started by mpirun / horovodrun with MPI: trust Horovod
        job = dataclasses.replace(job, launcher="mpi", rank=hvd.rank(), size=hvd.size(), local_rank=hvd.local_rank(),
                                  local_size=hvd.local_size(), cross_rank=hvd.cross_rank(),
                                  cross_size=hvd.cross_size())
    if hvd.size() != job.size or hvd.rank() != job.rank:
        raise RuntimeError(f"Horovod started rank {hvd.rank()} of {hvd.size()}, expected {job.rank} of {job.size}")
    device = _assign_device(hvd.local_rank(), hvd.local_size())
    threads, _ = worker_cpus(hvd.local_size())
    return World(job=job, rank=hvd.rank(), size=hvd.size(), local_rank=hvd.local_rank(), device=device,
                 cpu_threads=threads, _server=server)


def stop(world: World) -> None:
    """Shut Horovod down and stop rank 0's rendezvous server."""
    import horovod.tensorflow.keras as hvd

    hvd.shutdown()
    if world._server is not None:
        world._server.stop()
        world._server = None


@keras.saving.register_keras_serializable(package="ecg_hpc")  # hvd.DistributedOptimizer rebuilds from config
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """``base * (1 + (scale - 1) * min(1, step / warmup_steps))``: linear warm-up to ``base * scale``."""

    def __init__(self, base_lr: float, scale: float, warmup_steps: int) -> None:
        super().__init__()
        self.base_lr, self.scale, self.warmup_steps = float(base_lr), float(scale), int(warmup_steps)

    def __call__(self, step: Any) -> tf.Tensor:
        step = tf.cast(step, tf.float32)
        progress = tf.minimum(1.0, step / float(max(1, self.warmup_steps))) if self.warmup_steps > 0 else 1.0
        return self.base_lr * (1.0 + (self.scale - 1.0) * progress)

    def get_config(self) -> dict[str, Any]:
        """Keras serialisation."""
        return {"base_lr": self.base_lr, "scale": self.scale, "warmup_steps": self.warmup_steps}


LR_SCALING_RULES = {  # --lr-scaling: how the learning rate grows with the number of workers
    "linear": "base_lr x world_size (Goyal et al. 2017), the authors' setting",
    "sqrt": "base_lr x sqrt(world_size), gentler for Adam at large worker counts",
    "none": "base_lr whatever the world size",
}


def lr_scale(world_size: int, scaling: str) -> float:
    """The factor ``scaling`` (one of ``LR_SCALING_RULES``) applies to the single-worker learning rate."""
    if scaling == "linear":
        return float(world_size)
    if scaling == "sqrt":
        return math.sqrt(world_size)
    return 1.0


def learning_rate(base_lr: float, world_size: int, scaling: str, warmup_steps: int) -> WarmupSchedule:
    """The schedule for ``world_size`` workers under ``scaling`` (see ``LR_SCALING_RULES``), warmed up."""
    scale = lr_scale(world_size, scaling)
    return WarmupSchedule(base_lr, scale, warmup_steps if scale != 1.0 else 0)


def lr_record(schedule: WarmupSchedule, world_size: int, scaling: str) -> dict[str, Any]:
    """What run.json says about the learning rate under Horovod: the rule, its factor and the warm-up."""
    return {"world_size": world_size, "lr_scaling": scaling, "lr_rule": LR_SCALING_RULES[scaling],
            "lr_scale": schedule.scale, "base_lr": schedule.base_lr,
            "scaled_lr": schedule.base_lr * schedule.scale, "warmup_steps": schedule.warmup_steps,
            "warmup": "linear in optimizer steps from base_lr to scaled_lr"}


def distributed_optimizer(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """Wrap ``optimizer`` so that gradients are averaged over all workers before each update."""
    import horovod.tensorflow.keras as hvd

    return hvd.DistributedOptimizer(optimizer)


def broadcast_state(model: keras.Model, optimizer: keras.optimizers.Optimizer) -> None:
    """Give every worker rank 0's weights, BN statistics and optimizer state (slots and step counter)."""
    import horovod.tensorflow as hvd_tf

    optimizer.build(model.trainable_variables)
    hvd_tf.broadcast_variables(model.variables, root_rank=0)
    hvd_tf.broadcast_variables(optimizer.variables, root_rank=0)


def average(values: Mapping[str, float]) -> dict[str, float]:
    """The mean over all workers of each value (same keys on every worker), e.g. an epoch's metrics."""
    import horovod.tensorflow as hvd_tf

    return {key: float(hvd_tf.allreduce(tf.constant(float(values[key]), tf.float64), op=hvd_tf.Average,
                                        name=f"average.{key}"))
            for key in sorted(values)}


def any_worker(flag: bool) -> bool:
    """True on every worker when ``flag`` is true on at least one (e.g. "a stop signal arrived")."""
    return any_workers((flag,))[0]


def any_workers(flags: tuple[bool, ...]) -> tuple[bool, ...]:
    """For each of ``flags``, True on every worker when it is true on at least one (one allreduce for all)."""
    import horovod.tensorflow as hvd_tf

    counts = hvd_tf.allreduce(tf.constant([1 if f else 0 for f in flags], tf.int32), op=hvd_tf.Sum,
                              name=f"any_workers.{len(flags)}")
    return tuple(bool(c > 0) for c in counts.numpy())


def barrier() -> None:
    """Wait until every worker gets here (an allreduce that all must join)."""
    any_worker(False)


def weights_fingerprint(model: keras.Model) -> str:
    """SHA-256 of the trainable weights' bytes: equal on every worker when data parallelism is in sync."""
    digest = hashlib.sha256()
    for weight in model.trainable_weights:
        digest.update(weight.numpy().tobytes())
    return digest.hexdigest()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` (any picklable value) on every worker."""
    import horovod.tensorflow as hvd_tf

    return hvd_tf.broadcast_object(obj, root_rank=0)


def gather(obj: Any) -> list[Any]:
    """``obj`` of every worker, in rank order, on every worker."""
    import horovod.tensorflow as hvd_tf

    return list(hvd_tf.allgather_object(obj))
