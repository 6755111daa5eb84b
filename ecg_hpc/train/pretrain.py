"""``python -m ecg_hpc.train.pretrain``: Horovod data-parallel pretraining of one task on the shard store.

This module is the entry point: the options, parsed into a ``PretrainConfig`` (``ecg_hpc.train.pretrain_config``),
and ``run(config)``; both free of TensorFlow so that launchers build and check a config in a fraction of a
second. The training itself is ``ecg_hpc.train.pretraining``.
Runs as one process, under ``horovodrun``, or as the tasks of an ``srun`` step / submitit job (ranks from the
job environment, rendezvous served by rank 0; see ``ecg_hpc.train.distributed``). ``--batch-size`` is per
worker; the learning rate is scaled by the number of workers with a linear warm-up, as run.json records.
Without ``--job-dir`` a run goes to ``runs/pretrain/<job_dir_name>`` (the one naming rule of the launcher,
``slurm/pretrain.sbatch`` and the demo).

Rank 0 alone writes the job directory: ``epoch_NN/`` checkpoints (``ecg_hpc.train.checkpoints``),
``history.csv`` (one row per epoch: ``epoch``, the metrics averaged over workers, ``time_s``, ``frames_per_s``,
``lr``) and ``run.json`` (``ecg_hpc.records.PretrainRun``, with ``attempts``, one per start).

Resume: starting again with the same job directory continues after the last checkpoint and ends with the same
epochs; the data of (seed, epoch, rank) is fixed, so a resumed run trains on what an uninterrupted one would.
On SIGUSR1/SIGUSR2 (SLURM's and submitit's warning before the time limit) or SIGTERM, every worker finishes
its step, rank 0 writes ``preempted/`` and the workers exit with status ``PREEMPTED_EXIT_CODE``; whoever
launched them decides whether to requeue (``ecg_hpc.hpc.requeue``, ``slurm/pretrain.sbatch``). A run whose
run.json says done is left alone. A worker that dies of a native crash (a bus error on a store file truncated
while memory-mapped, a segfault) is named in the log and run.json by its crash watcher (``crash_watch``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import traceback

from ecg_hpc.data.pool import DEFAULT_POOL_MB, DEFAULT_READ_RATIO, DEFAULT_READERS
from ecg_hpc.errors import EcgHpcError, user_error
from ecg_hpc.interrupt import EXIT_INTERRUPTED
from ecg_hpc.names import ARCHS, PRECISIONS, TASKS
from ecg_hpc.runtime import configure_runtime
from ecg_hpc.train import crash_watch
from ecg_hpc.train.environments import PREEMPTED_EXIT_CODE
from ecg_hpc.train.pretrain_config import LR_SCALINGS, PRETRAIN_ROOT, SAMPLERS, PretrainConfig, bare_record, job_dir_name

# what a bus error means here: the uniform sampler reads the store through memory maps
STORE_CHANGED = ("a store file changed or was truncated while memory-mapped; restore the store, or resume with "
                 "--allow-store-change")


def add_arguments(parser: argparse.ArgumentParser, store_required: bool = True) -> None:
    """The trainer's options (the authors' defaults, docs/design-facts.md) on ``parser`` or an argument group;
    launchers find ``--store`` themselves (``store_required=False``: no default, see ``ecg_hpc.project_config``)."""
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
                        help="steps per epoch (default: 1024 unless --samples-per-patient is given)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of one worker (default: 1e-3)")
    parser.add_argument("--lr-scaling", choices=LR_SCALINGS, default="linear",
                        help="how the learning rate grows with the number of workers: linear (x workers, the "
                             "authors'), sqrt (x sqrt(workers), gentler for Adam with many workers) or none "
                             "(default: linear); run.json records the rule")
    parser.add_argument("--warmup-epochs", type=float, default=1.0,
                        help="epochs of linear warm-up to the scaled learning rate (default: 1)")
    parser.add_argument("--precision", default="float32", choices=PRECISIONS, help="dtype policy (default: float32)")
    parser.add_argument("--deterministic", action="store_true",
                        help="deterministic TF ops (slower on GPUs; exact resume checks)")
    parser.add_argument("--job-dir", default=None,
                        help="job directory (default: runs/pretrain/TASK_ARCH_fFRAME_fracFRAC_sSEED)")
    parser.add_argument("--allow-store-change", action="store_true",
                        help="resume even when the store's patients or files changed since the run started "
                             "(recorded in run.json)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the patient subset, weights and data (default: 0)")
    parser.add_argument("--sampler", choices=SAMPLERS, default="pool",
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


def config_from_args(args: argparse.Namespace, name: str | None = None) -> PretrainConfig:
    """The checked config of parsed options: the job directory ``--job-dir``, else ``runs/pretrain/NAME`` with
    ``name`` or the run's ``job_dir_name`` (the store is checked where it is used: ``check_store``)."""
    fields = {f.name for f in dataclasses.fields(PretrainConfig)} - {"job_dir"}
    given = {k: v for k, v in vars(args).items() if k in fields}
    job_dir = args.job_dir or str(PRETRAIN_ROOT / (name or job_dir_name(args.task, args.arch, args.frame_size,
                                                                        args.frac, args.seed)))
    return PretrainConfig(job_dir=job_dir, **given)


def watch_crashes(config: PretrainConfig) -> int | None:
    """Start this worker's crash watcher (``ecg_hpc.train.crash_watch``), so that a bus error or segfault ends
    with a line in the log and a failed run.json; its pid. Call before TensorFlow is imported and the lock taken."""
    rank, host = crash_watch.worker_identity()
    return crash_watch.start(config.job_dir, rank, host, bare=lambda: bare_record(config),
                             advice={crash_watch.BUS_ERROR: STORE_CHANGED})


def run(config: PretrainConfig) -> int:
    """Train (or resume) ``config`` on this worker: 0 when done, ``PREEMPTED_EXIT_CODE`` when preempted, 130 when
    interrupted (Ctrl-C: checkpoint kept, not requeued), 2 on a user error, 1 on any other failure (its traceback
    printed); a native crash is recorded by the crash watcher."""
    configure_runtime()
    watch_crashes(config)
    try:
        config.check_store()
        from ecg_hpc.train.pretraining import train  # TensorFlow: only once the runtime is set

        status = train(config)
    except EcgHpcError as exc:
        return user_error(exc)
    except Exception:
        traceback.print_exc()
        return 1
    return {"preempted": PREEMPTED_EXIT_CODE, "interrupted": EXIT_INTERRUPTED}.get(status, 0)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = argparse.ArgumentParser(prog="python -m ecg_hpc.train.pretrain", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, build the config and train (exit statuses of ``run``)."""
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except EcgHpcError as exc:
        return user_error(exc)
    return run(config)


if __name__ == "__main__":
    sys.exit(main())
