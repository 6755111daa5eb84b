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
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

if __name__ == "__main__":  # before the imports: Ctrl-C and a Python without the project's packages get one line
    from ecg_hpc.interrupt import exit_quietly_on_interrupt
    from ecg_hpc.venvcheck import exit_unless_installed
    exit_quietly_on_interrupt("interrupted: nothing was submitted")
    exit_unless_installed(("numpy", "submitit", "tensorflow"))

from ecg_hpc.atomic import writing  # noqa: E402
from ecg_hpc.errors import ConfigError, EcgHpcError, user_error  # noqa: E402
from ecg_hpc.hpc.executor import (ConfigJob, add_cluster_arguments, describe_dry_run, follow,  # noqa: E402
                                  interrupt_local_job, job_log, make_executor, submit_jobs)
from ecg_hpc.hpc.run_state import died  # noqa: E402
from ecg_hpc.interrupt import interrupt_raises, interrupted, interrupts_ignored  # noqa: E402
from ecg_hpc.options import check_text  # noqa: E402
from ecg_hpc.project_config import resolve_store  # noqa: E402
from ecg_hpc.train import pretrain  # noqa: E402  (the options and the config only: no TensorFlow)
from ecg_hpc.train.pretrain_config import finished  # noqa: E402

TRAINER = "ecg_hpc.train.pretrain"


def build_parser() -> argparse.ArgumentParser:
    """Launcher options plus every trainer option (shown by --help, checked before submitting)."""
    parser = argparse.ArgumentParser(prog="launch/pretrain.py", description=__doc__.splitlines()[0],
                                     allow_abbrev=False)
    add_cluster_arguments(parser)
    parser.add_argument("--name", default=None,
                        help="run name; the job directory defaults to runs/pretrain/NAME "
                             "(default name: TASK_ARCH_fFRAME_fracFRAC_sSEED)")
    pretrain.add_arguments(parser.add_argument_group(f"training (python -m {TRAINER})"), store_required=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse and check once, then submit (or describe) the pretraining job."""
    args = build_parser().parse_args(argv)
    try:
        check_text("--name", args.name)
        store, source = resolve_store(args.store)
        if store is None and not args.dry_run:
            raise ConfigError(source)
        config = pretrain.config_from_args(argparse.Namespace(**{**vars(args), "store": str(store or "STORE")}),
                                           name=args.name)
        config = dataclasses.replace(config, job_dir=str(Path(config.job_dir).resolve()))
        job_dir = Path(config.job_dir)
        if store is not None and store.is_dir() or not args.dry_run:
            config.check_store()
        else:  # a dry run shows the job without a store; every other option is still checked
            print(f"note: {source if store is None else f'the store {store} (from {source}) does not exist'}; "
                  "the job below would fail until it does", file=sys.stderr)
        if finished(job_dir, config.epochs):
            print(f"{job_dir}: run.json says done; not submitted (delete the folder to redo the run)")
            return 0
        if died(job_dir):
            print(f"note: {job_dir}: its last attempt died (run.json says running, but no process holds the run "
                  "and its job has ended); submitting it again resumes from its last intact checkpoint")
        job = ConfigJob(TRAINER, config)
        with writing(job_dir):  # submitit creates the log folder: a read-only or full job folder is one line
            executor = make_executor(args, job_dir / "logs", job_name=f"pretrain-{job_dir.name}")
            if args.dry_run:
                print(describe_dry_run(executor, job))
                return 0
            with interrupts_ignored():  # local workers handle Ctrl-C; submitit's controller must not
                submitted = submit_jobs(executor, [job])[0]
    except EcgHpcError as exc:
        return user_error(exc)
    interrupt_raises()
    try:
        print(f"submitted {executor.cluster} job {submitted.job_id} "
              f"({submitted.num_tasks} worker{'s' if submitted.num_tasks > 1 else ''})")
        print(f"  rank 0 log: {job_log(submitted)}")
        print(f"  job dir:    {job_dir}")
        if args.follow:
            follow(submitted)
    except KeyboardInterrupt:
        return stop_message(executor.cluster, submitted, job_dir)
    except EcgHpcError as exc:  # e.g. pending for good
        return user_error(exc)
    except Exception as exc:  # the job failed: its traceback is in the log just streamed
        print(f"job {submitted.job_id} failed: {str(exc).strip().splitlines()[-1]}", file=sys.stderr)
        return 1
    return 0


def stop_message(cluster: str, job: Any, job_dir: Path) -> int:
    """After Ctrl-C: stop a local job (its workers checkpoint) or leave a SLURM job running; say which, in one line."""
    if cluster != "local":
        return interrupted(f"interrupted: stopped following; SLURM job {job.job_id} keeps running (log "
                           f"{job_log(job)}); cancel it with scancel {job.job_id}")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the checkpoint short
    ended = interrupt_local_job(job)
    kept = sorted(p.name for p in job_dir.glob("epoch_*"))[-1:] + [p.name for p in job_dir.glob("preempted")]
    what = f"checkpoints kept in {job_dir} ({' and '.join(kept)})" if kept else f"no checkpoint yet in {job_dir}"
    state = "stopped" if ended else "still stopping (its workers finish their step)"
    return interrupted(f"interrupted: the local pretraining {state}; {what}; run the same command again to resume")


if __name__ == "__main__":
    sys.exit(main())
