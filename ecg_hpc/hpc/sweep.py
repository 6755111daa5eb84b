"""``python -m ecg_hpc.hpc.sweep``: fine-tuning sweeps as a manifest of (init x labelled fraction x seed) tasks,
run one by index.

Commands: ``plan`` (write the manifest; the design is ``ecg_hpc.hpc.design``), ``run-task`` (what each array task
calls), ``status`` (done / failed / running / missing per task). A task runs in its own job directory only; one
whose ``run.json`` says done is skipped, so re-submitting a sweep runs only what is missing or failed.
"""

from __future__ import annotations

import argparse
import sys
import threading
import traceback
from collections import Counter
from pathlib import Path
from typing import Sequence

from ecg_hpc.errors import ConfigError, EcgHpcError, user_error
from ecg_hpc.hpc.array_script import sbatch_line
from ecg_hpc.hpc.design import add_plan_arguments, plan_from_args
from ecg_hpc.hpc.executor import slurm_available
from ecg_hpc.hpc.manifest import Task, read_manifest
from ecg_hpc.hpc.partition import Partition
from ecg_hpc.hpc.pending import stuck_jobs_logging_to, stuck_message
from ecg_hpc.hpc.run_state import DIED, derived_status
from ecg_hpc.interrupt import EXIT_INTERRUPTED, interrupt_raises
from ecg_hpc.records import RecordError, read_record
from ecg_hpc.train import finetune


def task_status(task: Task) -> str:
    """``done``, ``failed``, ``running``, ``died`` (run.json says running but nobody runs it: see
    ``ecg_hpc.hpc.run_state``) or ``missing`` (no run.json yet)."""
    try:
        record = read_record(task.job_dir)
    except RecordError:
        return "failed"
    return "missing" if record is None else derived_status(task.job_dir, record)


def pending(tasks: Sequence[Task]) -> list[Task]:
    """The tasks not done yet (missing, failed, died or interrupted)."""
    return [t for t in tasks if task_status(t) != "done"]


def run_tasks(manifest: str | Path, indices: Sequence[int]) -> int:
    """Run the manifest's tasks at ``indices`` one after another; 0 if all succeeded (or were past the end).

    A task whose run is done (or running elsewhere) is skipped by the trainer; a failed task is recorded in its
    run.json and the others still run. Returns 1 if any task failed, else 0 (the process's exit status); Ctrl-C
    stops the loop with 130, the interrupted task recorded as failed.
    """
    tasks = read_manifest(manifest)
    failed = 0
    if threading.current_thread() is threading.main_thread():
        interrupt_raises()  # a local sweep's worker starts with SIGINT ignored (see ecg_hpc.interrupt)
    for index in indices:
        if not 0 <= index < len(tasks):
            print(f"task index {index} is past the end of {manifest} ({len(tasks)} tasks): nothing to do",
                  flush=True)
            continue
        task = tasks[index]
        print(f"task {index}: {task.scenario} seed {task.seed} -> {task.job_dir}", flush=True)
        try:
            status = finetune.run(task.config)
        except KeyboardInterrupt:  # Ctrl-C: run.json records the task as failed, so submitting again reruns it
            print(f"task {index} interrupted (SIGINT); the tasks after it were not started", flush=True)
            return EXIT_INTERRUPTED
        except Exception as exc:  # recorded in the task's run.json; the next task still runs
            traceback.print_exc()
            print(f"task {index} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            status = 1
        failed += status != 0
    return 1 if failed else 0


def _parse_index(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a task index: {text!r} (is SLURM_ARRAY_TASK_ID set?)") from None


def summarize(tasks: Sequence[Task]) -> str:
    """One line of counts per status, e.g. ``20 tasks: 18 done, 2 failed``."""
    counts = Counter(task_status(t) for t in tasks)
    parts = [f"{counts[s]} {s}" for s in ("done", "failed", "running", DIED, "missing") if counts[s]]
    return f"{len(tasks)} tasks: " + ", ".join(parts)


def submit_hint(manifest: Path, n_tasks: int, max_parallel: int | None) -> str:
    """The sbatch line for the manifest on the SLURM cluster here (its partition checked), or why there is none."""
    if not slurm_available():
        line = sbatch_line(manifest, n_tasks, max_parallel, None)
        return f"no SLURM here; on a GPU cluster submit it with:\n  {line}"
    try:
        partition = Partition.query(None)
    except ConfigError as exc:
        line = sbatch_line(manifest, n_tasks, max_parallel, None)
        return f"submit it with this line once SLURM answers ({exc}):\n  {line}"
    line = sbatch_line(manifest, n_tasks, max_parallel, partition)
    return f"submit it on partition {partition.name} with:\n  {line}"


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m ecg_hpc.hpc.sweep`` with its plan / run-task / status commands."""
    parser = argparse.ArgumentParser(prog="python -m ecg_hpc.hpc.sweep", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    plan = sub.add_parser("plan", help="write or extend a sweep manifest and print the sbatch line that runs it")
    add_plan_arguments(plan)
    plan.add_argument("--max-parallel", type=int, default=None,
                      help="throttle of the printed sbatch line: most array tasks running at once (default: none)")
    run = sub.add_parser("run-task", help="run manifest tasks by index (what each SLURM array task calls)")
    run.add_argument("--manifest", type=Path, required=True, help="the sweep's manifest.jsonl")
    run.add_argument("--index", type=_parse_index, action="append", required=True,
                     help="task index (0-based, e.g. $SLURM_ARRAY_TASK_ID); repeat to run several in turn")
    status = sub.add_parser("status", help="show which tasks are done, failed, running or missing, and SLURM jobs "
                                           "of the sweep pending for a reason that will not clear")
    status.add_argument("--manifest", type=Path, required=True, help="the sweep's manifest.jsonl")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; user errors print one line and give exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "plan":
            if args.max_parallel is not None and args.max_parallel < 1:
                raise ConfigError(f"--max-parallel {args.max_parallel}: must be at least 1")
            path, tasks, _ = plan_from_args(args)
            print(f"{path}: {summarize(tasks)}; array indices 0-{len(tasks) - 1}")
            print(submit_hint(path, len(tasks), args.max_parallel))
            return 0
        if args.command == "run-task":
            return run_tasks(args.manifest, args.index)
        tasks = read_manifest(args.manifest)
        for task in tasks:
            print(f"{task.index:4d}  {task_status(task):8s} {task.scenario}  seed {task.seed}")
        print(summarize(tasks))
        stuck = stuck_jobs_logging_to(args.manifest.parent) if slurm_available() else []
        for job_id, reason in stuck:
            print(f"warning: {stuck_message(job_id, reason)}", file=sys.stderr)
        return 0
    except EcgHpcError as exc:
        return user_error(exc)


if __name__ == "__main__":
    sys.exit(main())
