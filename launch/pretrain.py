#!/usr/bin/env python
"""Submit a pretraining job: ``python launch/pretrain.py --nodes 2 --frac 0.1 --task beat --store STORE``.

On a SLURM cluster: one job of nodes x tasks-per-node workers (one per GPU) running
``python -m ecg_hpc.train.pretrain`` through submitit; without SLURM (or with ``--local``) the same workers
start on this machine. Prints the job id, the log files and the job directory; ``--follow`` streams rank 0's
log; ``--dry-run`` prints the batch script and the command instead of submitting. A job directory whose
run.json says done is not submitted again; one holding checkpoints resumes from them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ecg_hpc.errors import EcgHpcError, user_error  # noqa: E402
from ecg_hpc.hpc.executor import (ModuleJob, add_cluster_arguments, describe_dry_run, follow, job_log,  # noqa: E402
                                  make_executor)
from ecg_hpc.train import pretrain  # noqa: E402

TRAINER = "ecg_hpc.train.pretrain"


def _launcher_parser(add_help: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="launch/pretrain.py", description=__doc__.splitlines()[0],
                                     add_help=add_help, allow_abbrev=False)
    add_cluster_arguments(parser)
    parser.add_argument("--name", default=None,
                        help="run name; the job directory defaults to runs/pretrain/NAME "
                             "(default name: TASK_ARCH_fFRAME_fracFRAC_sSEED)")
    return parser


def build_parser() -> argparse.ArgumentParser:
    """Launcher options plus every trainer option (shown by --help, checked before submitting)."""
    parser = _launcher_parser(add_help=True)
    pretrain.add_arguments(parser.add_argument_group("training (python -m ecg_hpc.train.pretrain)"),
                           job_dir_required=False)
    return parser


def default_job_dir(args: argparse.Namespace) -> Path:
    """``runs/pretrain/NAME`` with NAME from ``--name`` or the options that define the run."""
    name = args.name or f"{args.task}_{args.arch}_f{args.frame_size}_frac{args.frac:g}_s{args.seed}"
    return Path("runs") / "pretrain" / name


def main(argv: list[str] | None = None) -> int:
    """Parse, then submit (or describe) the pretraining job."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    _, trainer_argv = _launcher_parser(add_help=False).parse_known_args(argv)
    job_dir = Path(args.job_dir or default_job_dir(args)).resolve()
    if not args.job_dir:
        trainer_argv += ["--job-dir", str(job_dir)]
    if not any(a == "--store" or a.startswith("--store=") for a in trainer_argv):  # from $ECG_HPC_STORE
        trainer_argv += ["--store", str(Path(args.store).resolve())]
    try:
        trainer_args = pretrain.build_parser().parse_args(trainer_argv)
        pretrain.check_arguments(trainer_args)
        if pretrain.finished(job_dir, trainer_args.epochs):
            print(f"{job_dir}: run.json says done; not submitted (delete the folder to redo the run)")
            return 0
        job = ModuleJob(TRAINER, trainer_argv)
        executor = make_executor(args, job_dir / "logs", job_name=f"pretrain-{job_dir.name}", whole_nodes=True)
        if args.dry_run:
            print(describe_dry_run(executor, job))
            return 0
        submitted = executor.submit(job)
    except EcgHpcError as exc:
        return user_error(exc)
    print(f"submitted {executor.cluster} job {submitted.job_id} "
          f"({submitted.num_tasks} worker{'s' if submitted.num_tasks > 1 else ''})")
    print(f"  rank 0 log: {job_log(submitted)}")
    print(f"  job dir:    {job_dir}")
    if args.follow:
        try:
            follow(submitted)
        except Exception as exc:  # the job failed: its traceback is in the log just streamed
            print(f"job {submitted.job_id} failed: {str(exc).strip().splitlines()[-1]}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
