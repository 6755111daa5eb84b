#!/usr/bin/env python
"""Submit a pretraining job: ``python launch/pretrain.py --nodes 2 --frac 0.1 --task beat --store STORE``.

On a SLURM cluster: one job of nodes x tasks-per-node workers (one per GPU) running the pretraining entry point
(``python -m ecg_hpc.train.pretrain``) through submitit; without SLURM (or with ``--local``) the same workers
start on this machine. The options are parsed and checked once, here, into a ``PretrainConfig`` that the workers
receive as it is. Prints the job id, the log files and the job directory; ``--follow`` streams rank 0's log;
``--dry-run`` prints the batch script and the command instead of submitting. A job directory whose run.json says
done is not submitted again; one holding checkpoints resumes from them.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from ecg_hpc.errors import EcgHpcError, user_error
from ecg_hpc.hpc.executor import (ConfigJob, add_cluster_arguments, describe_dry_run, follow, job_log,
                                  make_executor)
from ecg_hpc.train import pretrain  # the configuration only: no TensorFlow

TRAINER = "ecg_hpc.train.pretrain"


def build_parser() -> argparse.ArgumentParser:
    """Launcher options plus every trainer option (shown by --help, checked before submitting)."""
    parser = argparse.ArgumentParser(prog="launch/pretrain.py", description=__doc__.splitlines()[0],
                                     allow_abbrev=False)
    add_cluster_arguments(parser)
    parser.add_argument("--name", default=None,
                        help="run name; the job directory defaults to runs/pretrain/NAME "
                             "(default name: TASK_ARCH_fFRAME_fracFRAC_sSEED)")
    pretrain.add_arguments(parser.add_argument_group(f"training (python -m {TRAINER})"))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse and check once, then submit (or describe) the pretraining job."""
    args = build_parser().parse_args(argv)
    try:
        config = pretrain.config_from_args(args, name=args.name)
        config = dataclasses.replace(config, job_dir=str(Path(config.job_dir).resolve()),
                                     store=str(Path(config.store).resolve()))
        if pretrain.finished(config.job_dir, config.epochs):
            print(f"{config.job_dir}: run.json says done; not submitted (delete the folder to redo the run)")
            return 0
        job = ConfigJob(TRAINER, config)
        job_dir = Path(config.job_dir)
        executor = make_executor(args, job_dir / "logs", job_name=f"pretrain-{job_dir.name}")
        if args.dry_run:
            print(describe_dry_run(executor, job))
            return 0
        submitted = executor.submit(job)
    except EcgHpcError as exc:
        return user_error(exc)
    print(f"submitted {executor.cluster} job {submitted.job_id} "
          f"({submitted.num_tasks} worker{'s' if submitted.num_tasks > 1 else ''})")
    print(f"  rank 0 log: {job_log(submitted)}")
    print(f"  job dir:    {config.job_dir}")
    if args.follow:
        try:
            follow(submitted)
        except Exception as exc:  # the job failed: its traceback is in the log just streamed
            print(f"job {submitted.job_id} failed: {str(exc).strip().splitlines()[-1]}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
