#!/usr/bin/env python
"""Convert Icentia11k into the store as a SLURM job array: ``python launch/convert.py --src SRC --dst STORE``.

Splits the patients (all of ``--src``, or ``--patients``) into ``--array-tasks`` contiguous blocks, the same on every
run, and submits one array task per block that still has patients missing from ``--dst`` (at most
``--max-parallel`` at once, SLURM's ``%N``), each running ``python -m ecg_hpc.data convert-icentia --patients
MISSING --no-manifest``, then one job after the array (``afterany``) that writes ``manifest.json``. Patients appear
in the store by an atomic rename, so a killed task leaves no half patient, and the same command again submits only
the blocks of the killed tasks, with only their missing patients. Without SLURM (or with ``--local``) one local job
converts everything with ``--workers`` processes and writes the manifest. ``--dry-run`` prints the plan and the
first batch script.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

if __name__ == "__main__":  # before the imports: Ctrl-C and a Python without the project's packages get one line
    from ecg_hpc.interrupt import exit_quietly_on_interrupt
    from ecg_hpc.venvcheck import exit_unless_installed
    exit_quietly_on_interrupt("interrupted: nothing was submitted")
    exit_unless_installed(("numpy", "submitit"))

from ecg_hpc.data import convert, store  # noqa: E402
from ecg_hpc.errors import ConfigError, EcgHpcError, user_error  # noqa: E402
from ecg_hpc.hpc.executor import (ModuleJob, add_cluster_arguments, describe_dry_run, follow,  # noqa: E402
                                  make_executor, submit_jobs)
from ecg_hpc.interrupt import interrupt_raises, interrupted, interrupts_ignored  # noqa: E402

RUNNER = "ecg_hpc.data.__main__"
DEFAULT_TIME = "04:00:00"


def build_parser() -> argparse.ArgumentParser:
    """Source, store, array and cluster options."""
    parser = argparse.ArgumentParser(prog="launch/convert.py", description=__doc__.splitlines()[0],
                                     allow_abbrev=False)
    parser.add_argument("--src", required=True, type=Path, help="folder of the release (any of the three layouts)")
    parser.add_argument("--dst", required=True, type=Path, help="store folder to create or complete")
    parser.add_argument("--format", choices=convert.FORMATS, default="auto", help="source layout (default: detect)")
    parser.add_argument("--patients", default=None, help="ids to convert, e.g. '0-99,105' (default: all)")
    parser.add_argument("--array-tasks", type=int, default=100,
                        help="blocks of patients, one array task each (default 100); a re-run submits only the "
                             "blocks with patients missing from the store")
    parser.add_argument("--max-parallel", type=int, default=None, help="array tasks running at once (SLURM %%N)")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes per array task, and of the local job (default 1)")
    add_cluster_arguments(parser)
    parser.set_defaults(time=DEFAULT_TIME)
    return parser


def blocks(ids: list[int], n: int) -> list[list[int]]:
    """``ids`` in at most ``n`` contiguous, near-equal, non-empty blocks."""
    n = min(n, len(ids))
    bounds = [len(ids) * i // n for i in range(n + 1)]
    return [ids[a:b] for a, b in zip(bounds, bounds[1:])]


def missing_blocks(wanted: list[int], todo: list[int], n: int) -> list[tuple[int, list[int]]]:
    """``(index, ids of todo)`` of each of the ``n`` blocks of ``wanted`` that holds patients of ``todo``.

    The blocks depend on ``wanted`` only, so after a killed task the same command plans that task's block again
    (only its missing patients) and no block whose patients are all converted.
    """
    missing = set(todo)
    return [(i, [pid for pid in block if pid in missing]) for i, block in enumerate(blocks(wanted, n))
            if missing.intersection(block)]


def pending(args: argparse.Namespace) -> tuple[list[int], list[int]]:
    """Patients of the source (or ``--patients``), and those of them that the store does not hold yet."""
    fmt = convert.detect_format(args.src) if args.format == "auto" else args.format
    available = convert.source_patients(args.src, fmt)
    wanted = sorted(available) if args.patients is None else convert.parse_ids(args.patients)
    missing = [pid for pid in wanted if pid not in available]
    if missing:
        raise ConfigError(f"--patients: {args.src} has no {fmt} files for {convert.format_ids(missing)}")
    done = set(store.done_patients(args.dst))
    return wanted, [pid for pid in wanted if pid not in done]


def main(argv: list[str] | None = None) -> int:
    """Plan the blocks, then submit (or describe) the array and the manifest job."""
    args = build_parser().parse_args(argv)
    try:
        if args.array_tasks < 1 or args.workers < 1:
            raise ConfigError("--array-tasks and --workers must be at least 1")
        if args.max_parallel is not None and args.max_parallel < 1:
            raise ConfigError(f"--max-parallel {args.max_parallel}: must be at least 1")
        wanted, todo = pending(args)
        if not todo:
            if (args.dst / store.PATIENTS_DIR).is_dir():
                store.write_manifest(args.dst)
            print(f"{args.dst}: every patient is converted; manifest.json rewritten, nothing submitted")
            return 0
        base = ["convert-icentia", "--src", str(args.src.resolve()), "--dst", str(args.dst.resolve()),
                "--format", args.format, "--workers", str(args.workers)]
        logs = args.dst.resolve().parent / f"{args.dst.name}-convert-logs"
        if args.gpus_per_node is None:
            args.gpus_per_node = 0  # conversion runs on CPUs
        executor = make_executor(args, logs, job_name="convert-icentia", tasks_per_node=1,
                                 array_parallelism=args.max_parallel, array_task=True)
        if executor.cluster == "local":
            jobs = [ModuleJob(RUNNER, base + ["--patients", convert.format_ids(todo)])]
        else:
            planned = missing_blocks(wanted, todo, args.array_tasks)
            jobs = [ModuleJob(RUNNER, base + ["--patients", convert.format_ids(b), "--no-manifest"])
                    for _, b in planned]
            n_blocks = min(args.array_tasks, len(wanted))
            if len(planned) < n_blocks:
                which = convert.format_ids([i for i, _ in planned])
                print(f"block(s) {which} of 0-{n_blocks - 1} have patients missing; the other blocks are complete")
        print(f"{len(todo)} patient(s) to convert into {args.dst} as {len(jobs)} {executor.cluster} task(s)")
        if args.dry_run:
            print(describe_dry_run(executor, jobs[0]))
            return 0
        with interrupts_ignored():  # a local conversion finishes its patient; the launcher line says so
            submitted = submit_jobs(executor, jobs, array=True)
        array_id = submitted[0].job_id.split("_")[0]
        print(f"submitted {executor.cluster} job {array_id} ({len(submitted)} task(s)), logs in {logs}")
        if executor.cluster == "slurm":
            final = ModuleJob(RUNNER, ["convert-icentia", "--dst", str(args.dst.resolve()), "--manifest-only"])
            after = make_executor(args, logs, job_name="convert-icentia-manifest", tasks_per_node=1, array_task=True)
            after.update_parameters(slurm_additional_parameters={"requeue": True,
                                                                 "dependency": f"afterany:{array_id}"})
            submitted += submit_jobs(after, [final])
            print(f"submitted manifest job {submitted[-1].job_id} (runs after job {array_id})")
    except EcgHpcError as exc:
        return user_error(exc)
    interrupt_raises()
    if args.follow:
        failed = 0
        try:
            for job in submitted:
                try:
                    follow(job)
                except Exception as exc:  # a task failed: its message is in the log just streamed
                    print(f"job {job.job_id} failed: {str(exc).strip().splitlines()[-1]}", file=sys.stderr)
                    failed += 1
        except KeyboardInterrupt:
            return interrupted(f"interrupted: stopped following; {executor.cluster} job {array_id} keeps running "
                               f"(complete patients stay; run the same command again to convert what is left)")
        return 1 if failed else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
