#!/usr/bin/env python
"""Plan and submit a fine-tuning sweep: ``python launch/finetune.py --data DATA.npz --pretrain runs/pretrain/X``.

Plans random init plus the chosen checkpoints of each pretraining run, times the seeds (10, 20, ..., 100), into
``<sweep-dir>/manifest.jsonl`` (extending an existing one; see ``ecg_hpc.hpc.sweep``), then submits the planned
tasks that are not done yet as one SLURM job array through submitit (one process and at most one GPU per task,
``--max-parallel`` at a time). Without SLURM (or with ``--local``) one local job runs them one after another.
Submitting the same sweep again runs only what is missing or failed; ``--dry-run`` shows what would run.
The same manifest can be run by hand with ``sbatch slurm/finetune_array.sh``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

if __name__ == "__main__":  # before the imports: Ctrl-C and a Python without the project's packages get one line
    from ecg_hpc.interrupt import exit_quietly_on_interrupt
    from ecg_hpc.venvcheck import exit_unless_installed
    exit_quietly_on_interrupt("interrupted: nothing was submitted")
    exit_unless_installed(("numpy", "submitit", "tensorflow"))

from ecg_hpc.atomic import writing  # noqa: E402
from ecg_hpc.errors import ConfigError, EcgHpcError, user_error  # noqa: E402
from ecg_hpc.hpc import design, sweep  # noqa: E402
from ecg_hpc.hpc.executor import (ModuleJob, add_cluster_arguments, check_cluster_text,  # noqa: E402
                                  describe_dry_run, interrupt_local_job, job_log, make_executor, submit_jobs)
from ecg_hpc.hpc.manifest import Task, read_manifest  # noqa: E402
from ecg_hpc.hpc.pending import stuck_message, stuck_reason  # noqa: E402
from ecg_hpc.hpc.sweep_progress import progress_line  # noqa: E402
from ecg_hpc.interrupt import interrupt_raises, interrupted, interrupts_ignored  # noqa: E402

RUNNER = "ecg_hpc.hpc.sweep"
DEFAULT_TIME = "04:00:00"


def build_parser() -> argparse.ArgumentParser:
    """Sweep planning, trainer and cluster options."""
    parser = argparse.ArgumentParser(prog="launch/finetune.py", description=__doc__.splitlines()[0],
                                     allow_abbrev=False)
    design.add_plan_arguments(parser)
    add_cluster_arguments(parser)
    parser.set_defaults(time=DEFAULT_TIME)
    parser.add_argument("--max-parallel", type=int, default=None,
                        help="most array tasks running at once on SLURM (default: no limit but the cluster's)")
    return parser


def task_jobs(manifest: Path, indices: list[int], local: bool) -> list[ModuleJob]:
    """One job per array task on SLURM; locally one job that runs the tasks in turn."""
    def job(chunk: list[int]) -> ModuleJob:
        return ModuleJob(RUNNER, ["run-task", "--manifest", str(manifest), *(f"--index={i}" for i in chunk)])
    return [job(indices)] if local else [job([i]) for i in indices]


def _wait(jobs: list, tasks: list[Task], poll_s: float = 2.0, every_s: float = 10.0) -> None:
    """Wait for every submitted job, printing the sweep's progress line when it changes (at most every
    ``every_s`` seconds): tasks done / running (with their epoch) / failed / waiting."""
    if len(jobs) == len(tasks):  # one job per task (a SLURM array)
        logs = {t.index: job_log(j) for t, j in zip(tasks, jobs)}
    else:  # one local job runs the tasks in turn
        logs = {t.index: job_log(jobs[0]) for t in tasks}
    import submitit  # here, not at the top: --help need not load it

    last_line, last_time = "", 0.0
    while True:
        finished = all(j.done() for j in jobs)
        if not finished and isinstance(jobs[0], submitit.SlurmJob) and time.monotonic() - last_time >= every_s:
            reason = stuck_reason(str(jobs[0].job_id))
            if reason:
                raise ConfigError(stuck_message(str(jobs[0].job_id).split("_")[0], reason))
        line = progress_line(tasks, logs)
        if line != last_line and (finished or time.monotonic() - last_time >= every_s):
            print(line, flush=True)
            last_line, last_time = line, time.monotonic()
        if finished:
            return
        time.sleep(poll_s)


def _stopped(cluster: str, jobs: list, manifest: Path, job_id: str) -> int:
    """After Ctrl-C: stop a local sweep (the running task is recorded as failed) or leave a SLURM array running."""
    if cluster != "local":
        return interrupted(f"interrupted: stopped waiting; SLURM array job {job_id} keeps running (python -m "
                           f"ecg_hpc.hpc.sweep status --manifest {manifest}); cancel it with scancel {job_id}")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the recording short
    interrupt_local_job(jobs[0])
    summary = sweep.summarize(read_manifest(manifest))
    return interrupted(f"interrupted: the local sweep stopped ({summary}); finished tasks are kept, the one that "
                       "was running is recorded as failed; run the same command again to run what is left")


def main(argv: list[str] | None = None) -> int:
    """Plan the sweep, then submit (or describe) its pending tasks."""
    args = build_parser().parse_args(argv)
    try:
        check_cluster_text(args)  # before the manifest is written
        if args.max_parallel is not None and args.max_parallel < 1:
            raise ConfigError(f"--max-parallel {args.max_parallel}: must be at least 1")
        manifest, tasks, planned = design.plan_from_args(args, write=not args.dry_run)
        todo = [t.index for t in sweep.pending(planned)]
        print(f"{manifest}: {sweep.summarize(tasks)}")
        if not todo:
            print("nothing to run: every planned task is done")
            return 0
        with writing(manifest.parent):  # submitit creates the log folder
            executor = make_executor(args, manifest.parent / "logs", job_name="finetune", tasks_per_node=1,
                                     array_parallelism=args.max_parallel, array_task=True)
            jobs = task_jobs(manifest, todo, local=executor.cluster == "local")
            if args.dry_run:
                limit = f", at most {args.max_parallel} at once" if args.max_parallel else ""
                print(f"dry run: the manifest is not written; would run {len(todo)} task(s), indices {todo}, as "
                      f"{len(jobs)} {executor.cluster} job(s){limit}; the first one:")
                print(describe_dry_run(executor, jobs[0]))
                return 0
            with interrupts_ignored():  # local workers handle Ctrl-C; submitit's controller must not
                submitted = submit_jobs(executor, jobs, array=True)
    except EcgHpcError as exc:
        return user_error(exc)
    interrupt_raises()
    job_id = submitted[0].job_id.split('_')[0]
    print(f"submitted {len(todo)} task(s): {executor.cluster} job {job_id}, logs in {manifest.parent / 'logs'}")
    if args.follow:
        planned = [t for t in read_manifest(manifest) if t.index in todo]
        try:
            _wait(submitted, planned)
        except KeyboardInterrupt:
            return _stopped(executor.cluster, submitted, manifest, job_id)
        except EcgHpcError as exc:  # pending for good
            return user_error(exc)
        failed = [t for t in read_manifest(manifest) if t.index in todo and sweep.task_status(t) != "done"]
        print(sweep.summarize(read_manifest(manifest)))
        for task in failed:
            print(f"  task {task.index} ({task.scenario} seed {task.seed}) not done: see {task.job_dir}/run.json",
                  file=sys.stderr)
        return 1 if failed else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
