"""Submitit executors for our jobs: one code path for a SLURM cluster and for the local machine.

``add_cluster_arguments`` gives every launcher the same cluster options; ``make_executor`` turns them into a
submitit executor (SLURM when ``sbatch`` is on PATH and ``--local`` is not given, else submitit's local
executor, which starts the same number of worker processes on this machine); ``ModuleJob`` is what gets
submitted: it runs ``python -m MODULE ARGS`` in-process (``ConfigJob``: the module's ``run(config)``), so a
submitted job and a hand-written batch script run the very same entry point. ``describe_dry_run`` and ``follow`` serve ``--dry-run`` and ``--follow``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence, TextIO

from ecg_hpc.compat import executor_parameters, submission_text
from ecg_hpc.errors import ConfigError
from ecg_hpc.hpc.partition import Partition
from ecg_hpc.hpc.pending import stuck_message, stuck_reason
from ecg_hpc.hpc.requeue import request_requeue
from ecg_hpc.interrupt import EXIT_INTERRUPTED
from ecg_hpc.options import check_text, config_argv
from ecg_hpc.records import mark_failed
from ecg_hpc.train.environments import PREEMPTED_EXIT_CODE, detect

if TYPE_CHECKING:
    import submitit

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TIME = "24:00:00"
MAX_SIGNAL_DELAY_S = 300


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options that say where and how a job runs (SLURM resources, container, local, dry run)."""
    group = parser.add_argument_group("cluster", "where the job runs (SLURM when sbatch is on PATH, "
                                                 "else worker processes on this machine)")
    group.add_argument("--nodes", type=int, default=1, help="SLURM nodes (default: 1; local runs need 1)")
    group.add_argument("--gpus-per-node", type=int, default=None,
                       help="GPUs per node (default: what sinfo reports for the partition on SLURM, "
                            "what nvidia-smi lists locally, else 0)")
    group.add_argument("--tasks", type=int, default=None,
                       help="worker processes per node (default: one per GPU; without GPUs 2 on the local "
                            "machine and 1 per SLURM node)")
    group.add_argument("--cpus-per-task", type=int, default=None,
                       help="CPUs per worker process (default on SLURM: the node's CPUs shared among its "
                            "workers; locally: no limit)")
    group.add_argument("--mem", default=None, help="memory per node, e.g. 64G or 500M (default: the cluster's)")
    group.add_argument("--partition", default=None, help="SLURM partition (default: the cluster's default)")
    group.add_argument("--account", default=None, help="SLURM account to charge")
    group.add_argument("--time", default=DEFAULT_TIME,
                       help=f"wall-time limit, [D-]HH:MM[:SS] or minutes (default: {DEFAULT_TIME}); the job gets "
                            f"a warning signal before it and requeues itself from its last checkpoint")
    group.add_argument("--image", default=None, metavar="FILE.sif",
                       help="run the workers inside this Apptainer image (apptainer exec --nv)")
    group.add_argument("--local", action="store_true", help="run on this machine even where SLURM exists")
    group.add_argument("--dry-run", action="store_true",
                       help="print the batch script and the command, submit nothing")
    group.add_argument("--follow", action="store_true", help="stream rank 0's log until the job ends")


def parse_time_minutes(text: str) -> int:
    """Minutes in a SLURM time string (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM[:SS]``), rounded up."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not match:
        raise ConfigError(f"--time {text!r}: expected minutes, HH:MM:SS or D-HH:MM:SS")
    days, a, b, c = match.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        seconds = int(days) * 86400 + int(a) * 3600 + int(b or 0) * 60 + int(c or 0)
    elif c is not None:  # HH:MM:SS
        seconds = int(a) * 3600 + int(b) * 60 + int(c)
    elif b is not None:  # MM:SS
        seconds = int(a) * 60 + int(b)
    else:  # MM
        seconds = int(a) * 60
    if seconds <= 0:
        raise ConfigError(f"--time {text!r}: must be positive")
    return -(-seconds // 60)


def parse_mem_gb(text: str) -> float:
    """Gigabytes in a memory size such as ``64G``, ``64GB``, ``500M``, ``1T`` or ``64`` (GB)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)B?", text.strip().upper())
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(f"--mem {text!r}: expected a size such as 64G or 500M")
    scale = {"K": 1 / 1024 ** 2, "M": 1 / 1024, "G": 1.0, "": 1.0, "T": 1024.0}[match.group(2)]
    return float(match.group(1)) * scale


def slurm_available() -> bool:
    """True when this machine can submit SLURM jobs (``sbatch`` and ``srun`` on PATH)."""
    return shutil.which("sbatch") is not None and shutil.which("srun") is not None


def local_gpu_count() -> int:
    """GPUs this machine shows (``CUDA_VISIBLE_DEVICES`` if set, else ``nvidia-smi -L``), 0 without any."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


@dataclass(frozen=True)
class ClusterPlan:
    """The resolved resources of one job: where it runs and how many workers it starts."""

    cluster: str  # "slurm" or "local"
    nodes: int
    gpus_per_node: int
    tasks_per_node: int
    cpus_per_task: int | None
    mem_gb: float | None
    timeout_min: int
    python: str

    @property
    def world_size(self) -> int:
        """Total number of worker processes."""
        return self.nodes * self.tasks_per_node


def check_cluster_text(args: argparse.Namespace) -> None:
    """ConfigError when a cluster option that goes into the batch script holds a control character."""
    for option in ("partition", "account", "mem", "time"):
        check_text(f"--{option}", getattr(args, option))


def resolve_plan(args: argparse.Namespace, tasks_per_node: int | None = None, array_task: bool = False,
                 partition: Partition | None = None) -> ClusterPlan:
    """Resolve the cluster options (defaults filled in, combinations checked); ``tasks_per_node`` overrides.

    On SLURM the defaults follow the partition (``Partition``): one worker per GPU (1 without GPUs), the node's
    CPUs shared among them, no GPU request where it has none; a request it can never run is a ConfigError (a
    warning on a dry run, which submits nothing). An
    ``array_task`` (one process of a job array) asks for at most one GPU and a GPU's share of the node's CPUs.
    ``partition`` is asked of ``sinfo`` unless given.
    """
    check_cluster_text(args)
    cluster = "slurm" if slurm_available() and not args.local else "local"
    if args.nodes < 1:
        raise ConfigError(f"--nodes {args.nodes}: must be at least 1")
    if cluster == "local" and args.nodes != 1:
        raise ConfigError(f"--nodes {args.nodes}: without SLURM (or with --local) only one node can be used")
    if args.gpus_per_node is not None and args.gpus_per_node < 0:
        raise ConfigError(f"--gpus-per-node {args.gpus_per_node}: must not be negative")
    if args.cpus_per_task is not None and args.cpus_per_task < 1:
        raise ConfigError(f"--cpus-per-task {args.cpus_per_task}: must be at least 1")
    if cluster == "slurm" and partition is None:
        partition = Partition.query(args.partition)
    partition = partition if cluster == "slurm" else None
    gpus = args.gpus_per_node
    if gpus is None:
        gpus = partition.gpus_per_node if partition else local_gpu_count()
        gpus = min(1, gpus) if array_task else gpus
    tasks = tasks_per_node if tasks_per_node is not None else args.tasks
    if tasks is None:
        tasks = gpus if gpus > 0 else (2 if cluster == "local" else 1)
    if tasks < 1:
        raise ConfigError(f"--tasks {tasks}: must be at least 1")
    cpus = args.cpus_per_task
    mem_gb = parse_mem_gb(args.mem) if args.mem else None
    if partition is not None:
        if cpus is None:
            cpus = partition.default_cpus_per_task(max(1, partition.gpus_per_node) if array_task else tasks)
        refusal = partition.refusal(args.nodes, tasks, gpus, cpus, mem_gb)
        if refusal and getattr(args, "dry_run", False):  # a dry run submits nothing: show the job, say it can't run
            print(f"warning: {refusal}: this cluster could never run the job shown; it was not submitted",
                  file=sys.stderr)
        elif refusal:
            raise ConfigError(f"{refusal}: such a job would pend forever, so nothing was submitted")
    python = shlex.quote(sys.executable)
    if args.image:
        if not Path(args.image).is_file():
            raise ConfigError(f"--image {args.image}: no such file")
        python = f"apptainer exec --nv {shlex.quote(str(Path(args.image).resolve()))} python3"
    return ClusterPlan(cluster=cluster, nodes=args.nodes, gpus_per_node=gpus, tasks_per_node=tasks,
                       cpus_per_task=cpus, mem_gb=mem_gb, timeout_min=parse_time_minutes(args.time), python=python)


def _setup_lines() -> list[str]:
    """Batch-script lines run before the workers start: make this source tree importable inside the job."""
    return [f"export PYTHONPATH={shlex.quote(str(REPO_ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}"]


def _local_python(python: str) -> str:
    """The local workers' python command with this source tree on PYTHONPATH (no shell in between, so a
    signal to the job reaches submitit's controller itself)."""
    paths = [str(REPO_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return f"env PYTHONPATH={shlex.quote(os.pathsep.join(paths))} {python}"


def make_executor(args: argparse.Namespace, folder: str | os.PathLike[str], *, job_name: str,
                  tasks_per_node: int | None = None, array_parallelism: int | None = None,
                  array_task: bool = False, partition: Partition | None = None) -> submitit.AutoExecutor:
    """A submitit executor for the cluster options in ``args`` writing its logs to ``folder``.

    SLURM: one job of ``nodes x tasks`` srun tasks, ``--requeue``, a warning signal before the time limit, and
    ``srun --kill-on-bad-exit=1``: a worker that fails ends the others at once instead of leaving them waiting
    for it until the time limit. Local: the same number of worker processes on this machine, restarted when one
    exits with ``PREEMPTED_EXIT_CODE``. ``tasks_per_node`` overrides ``--tasks`` (e.g. 1 for single-process jobs).
    """
    import submitit  # here, not at the top: a launcher's --help need not load it

    plan = resolve_plan(args, tasks_per_node, array_task=array_task, partition=partition)
    executor = submitit.AutoExecutor(folder=folder, cluster=plan.cluster,
                                     slurm_python=plan.python, local_python=_local_python(plan.python))
    params: dict[str, Any] = dict(name=job_name, timeout_min=plan.timeout_min, nodes=plan.nodes,
                                  tasks_per_node=plan.tasks_per_node, stderr_to_stdout=True)
    if plan.gpus_per_node:
        params["gpus_per_node"] = plan.gpus_per_node
    if plan.cpus_per_task:
        params["cpus_per_task"] = plan.cpus_per_task
    if plan.mem_gb:
        params["mem_gb"] = plan.mem_gb
    if plan.cluster == "slurm":
        params.update(slurm_setup=_setup_lines(),
                      slurm_signal_delay_s=min(MAX_SIGNAL_DELAY_S, plan.timeout_min * 60 // 5),
                      slurm_additional_parameters={"requeue": True},
                      slurm_srun_args=["--kill-on-bad-exit=1"])
        if args.partition:
            params["slurm_partition"] = args.partition
        if args.account:
            params["slurm_account"] = args.account
        if array_parallelism:
            params["slurm_array_parallelism"] = array_parallelism
    executor.update_parameters(**params)
    return executor


def submit_jobs(executor: submitit.AutoExecutor, jobs: Sequence["ModuleJob"],
                array: bool = False) -> list[submitit.Job]:
    """Submit one job, or ``jobs`` as one array; a refused submission leaves nothing behind and raises ConfigError.

    submitit writes its batch script and pickles into the log folder before ``sbatch`` answers; when ``sbatch``
    fails (controller down, request refused) those files and any folder created for them are removed again.
    """
    import submitit  # here, not at the top: a launcher's --help need not load it

    folder = Path(executor.folder)
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    before = set(folder.iterdir()) if folder.is_dir() else set()
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # submitit prints sbatch's complaint; the message has it
            return executor.submit_array(list(jobs)) if array else [executor.submit(job) for job in jobs]
    except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError, OSError) as exc:
        for path in (set(folder.iterdir()) if folder.is_dir() else set()) - before:
            path.unlink(missing_ok=True) if not path.is_dir() or path.is_symlink() else shutil.rmtree(path)
        for path in created:  # deepest first
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        lines = [re.sub(r"^sbatch: error: ", "", line.strip()) for line in str(exc).splitlines()
                 if "error" in line.lower()] or [str(exc).strip()]
        raise ConfigError(f"sbatch refused the job ({'; '.join(lines)[:300]}); nothing was submitted") from None


def describe_dry_run(executor: submitit.AutoExecutor, job: ModuleJob) -> str:
    """What submitting ``job`` with ``executor`` would do: the batch script (or local plan) and the command."""
    script, command = submission_text(executor)
    lines = [f"# command each worker runs (in-process, through submitit): {job.command_line()}"]
    if executor.cluster == "slurm":
        lines.append("# batch script submitit would submit with sbatch:")
        lines.append(script)
    else:
        params = executor_parameters(executor)
        lines.append(f"# local run: {params.get('tasks_per_node', 1)} worker process(es) on this machine, "
                     f"time limit {params.get('timeout_min')} min, logs in {executor.folder}; each runs:")
        lines.append(command)
    return "\n".join(lines)


class ModuleJob:
    """A submittable call of ``MODULE.main(argv)``, the same entry point as ``python -m MODULE ARGV``.

    Exit status 0 is success; ``PREEMPTED_EXIT_CODE`` means the job checkpointed on a stop signal: rank 0 asks
    for a requeue (``ecg_hpc.hpc.requeue``) and the worker exits with that status (no result is written, which
    would end the job for submitit); so does ``EXIT_INTERRUPTED`` (stopped by Ctrl-C, checkpoint kept, not
    requeued); any other status is a failure.
    """

    def __init__(self, module: str, argv: Sequence[str]) -> None:
        self.module = module
        self.argv = [str(a) for a in argv]

    def command_line(self) -> str:
        """The equivalent shell command."""
        return shlex.join(["python", "-m", self.module, *self.argv])

    def entry(self) -> int:
        """Run the entry point in this process; its exit status."""
        return int(importlib.import_module(self.module).main(self.argv))

    def not_requeued(self, why: str) -> None:
        """What to do when a preempted job is not requeued (a ``ConfigJob`` marks its run failed)."""

    def __call__(self) -> int:
        """Run the entry point in this worker process and return its exit status 0."""
        launched = detect()  # before the entry point, which exports Horovod's variables for its workers
        status = self.entry()
        if status == PREEMPTED_EXIT_CODE:
            requeue = request_requeue(launched)
            print(f"preempted: {requeue}", flush=True)
            if requeue.startswith(("not requeued", "could not requeue")):  # scancel: nobody resumes it
                self.not_requeued(requeue)
        if status in (PREEMPTED_EXIT_CODE, EXIT_INTERRUPTED):  # checkpointed: requeued, or stopped by Ctrl-C
            raise SystemExit(status)
        if status:
            raise RuntimeError(f"{self.command_line()} exited with status {status} (see the worker logs)")
        return 0


class ConfigJob(ModuleJob):
    """A submittable call of ``MODULE.run(config)``: the launcher's checked config reaches the workers as it is,
    not as arguments to parse again (``command_line`` shows the equivalent command)."""

    def __init__(self, module: str, config: Any) -> None:
        super().__init__(module, config_argv(config))
        self.config = config

    def entry(self) -> int:
        """Run the entry point's ``run(config)`` in this process; its exit status."""
        return int(importlib.import_module(self.module).run(self.config))

    def not_requeued(self, why: str) -> None:
        """Nobody resumes this run (e.g. scancel): its record says failed instead of running."""
        mark_failed(self.config.job_dir, f"stopped by a signal and {why}")


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def interrupt_local_job(job: submitit.Job, timeout_s: float = 300.0, poll_s: float = 1.0) -> bool:
    """Send SIGINT to the workers of a local job (not to submitit's controller) until the job ends.

    Workers that were still importing when Ctrl-C came started with SIGINT ignored, so the signal is repeated
    until each has installed its handler and stopped. True when the job ended within ``timeout_s``.
    """
    controller = getattr(job, "_process", None)
    deadline = time.monotonic() + timeout_s
    while not job.done():
        if time.monotonic() > deadline:
            return False
        for pid in _children(controller.pid) if controller is not None else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
        time.sleep(poll_s)
    return True


def job_log(job: submitit.Job, rank: int = 0) -> Path:
    """The log file (stdout and stderr together) of worker ``rank`` of ``job``."""
    return job.task(rank).paths.stdout if job.num_tasks > 1 else job.paths.stdout


def follow(job: submitit.Job, stream: TextIO | None = None, poll_s: float = 2.0, stuck_every_s: float = 10.0) -> None:
    """Copy rank 0's log to ``stream`` as it grows until the job ends, then raise if the job failed.

    A SLURM job pending for a reason that will not clear (``ecg_hpc.hpc.pending``) is a ConfigError, not a wait.
    """
    import submitit  # here, not at the top: a launcher's --help need not load it

    stream = stream if stream is not None else sys.stdout
    path, offset = job_log(job), 0
    checked = 0.0
    while True:
        finished = job.done()
        if not finished and isinstance(job, submitit.SlurmJob) and time.monotonic() - checked >= stuck_every_s:
            checked = time.monotonic()
            reason = stuck_reason(str(job.job_id))
            if reason:
                raise ConfigError(stuck_message(str(job.job_id), reason))
        if path.is_file():
            with path.open("r", encoding="utf-8", errors="replace") as fh:
                fh.seek(offset)
                chunk = fh.read()
                offset = fh.tell()
            if chunk:
                stream.write(chunk)
                stream.flush()
        if finished:
            break
        time.sleep(poll_s)
    job.results()
