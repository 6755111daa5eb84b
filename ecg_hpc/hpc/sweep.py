"""``python -m ecg_hpc.hpc.sweep``: fine-tuning sweeps as a manifest of (init x labelled fraction x seed) tasks,
run one by index.

A sweep is a file ``<sweep_dir>/manifest.jsonl`` with one JSON object per line: ``index``, ``scenario``,
``seed``, ``label_frac``, ``job_dir`` (``<scenario>/seed_<S>``, relative to the manifest's folder, so a copied
runs tree still matches), ``init``, ``arch``, ``width`` and ``args``, the arguments of
``python -m ecg_hpc.train.finetune`` for that task except ``--job-dir`` (its data and checkpoint paths are
absolute). Scenarios are ``random`` and one per chosen pretraining checkpoint (``<pretrain-name>_epoch_NN``),
with ``_<arch>`` appended when the arch is not resnet18 and ``_labels<F>`` for a labelled fraction F < 1 of the
training records (``--label-fracs``, the label-efficiency axis; the test set is the same for every F).
Re-planning into an existing manifest keeps every task at its index and appends new ones, so an array that is
running keeps its meaning; a task planned again with other options is refused.

A task runs in its own job directory only; one whose ``run.json`` says done is skipped, so re-submitting a
sweep runs only what is missing or failed. Commands: ``plan`` (write the manifest), ``run-task`` (what each
array task calls), ``status`` (done / failed / running / missing per task).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import traceback
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

from ecg_hpc.errors import ConfigError, EcgHpcError, user_error
from ecg_hpc.hpc.array_script import sbatch_line
from ecg_hpc.hpc.executor import slurm_available
from ecg_hpc.hpc.partition import Partition
from ecg_hpc.hpc.pending import stuck_jobs_logging_to, stuck_message
from ecg_hpc.hpc.run_state import DIED, derived_status
from ecg_hpc.interrupt import EXIT_INTERRUPTED, interrupt_raises
from ecg_hpc.options import check_seed
from ecg_hpc.rundir import atomic_write_text, read_run
from ecg_hpc.train import finetune
from ecg_hpc.train.init_source import DEFAULT_ARCH, FEATURE_EXTRACTOR, RANDOM, list_checkpoints, scenario_name

MANIFEST = "manifest.jsonl"
DEFAULT_SWEEP_DIR = Path("runs") / "finetune"
DEFAULT_SEEDS = tuple(range(10, 101, 10))
MAX_SEEDS = 1000
_TRAINING_OPTIONS = ("data", "batch_size", "epochs", "patience", "val_size", "val_metric", "learning_rate")


@dataclass(frozen=True)
class Scenario:
    """One way of initialising the model: its sweep name, ``--init`` value, arch and width."""

    name: str
    init: str
    arch: str
    width: float


@dataclass(frozen=True)
class Task:
    """One line of the manifest: a fine-tuning run of one scenario with one seed (``job_dir`` absolute here)."""

    index: int
    scenario: str
    seed: int
    job_dir: str
    init: str
    arch: str
    width: float
    args: tuple[str, ...]
    label_frac: float = 1.0  # manifests written before the label-efficiency axis lack it

    def to_json(self, base: Path) -> str:
        """The manifest line (without newline), ``job_dir`` relative to ``base`` when inside it."""
        job_dir = Path(self.job_dir)
        shown = job_dir.relative_to(base).as_posix() if job_dir.is_relative_to(base) else str(job_dir)
        return json.dumps({**asdict(self), "job_dir": shown, "args": list(self.args)})

    def trainer_argv(self) -> list[str]:
        """The full argument list of ``python -m ecg_hpc.train.finetune`` for this task."""
        return [*self.args, "--job-dir", self.job_dir]


def parse_seeds(text: str) -> tuple[int, ...]:
    """Seeds from ``10,20,30`` or a range ``10-100:10`` (start-stop:step, stop included); at most ``MAX_SEEDS``,
    each within numpy's range (counted before any is listed, so a huge range is refused at once)."""
    try:
        if "-" in text.lstrip("-"):
            span, _, step = text.partition(":")
            start, stop = (int(v) for v in span.split("-", 1))
            seeds: Sequence[int] = range(start, stop + 1, int(step or 1))
        else:
            seeds = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected a list like 10,20,30 or a range like 10-100:10") from None
    if len(seeds) > MAX_SEEDS:
        raise ConfigError(f"--seeds {text!r}: {len(seeds)} seeds, at most {MAX_SEEDS} per sweep")
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r}: give at least one seed and no seed twice")
    for seed in (min(seeds), max(seeds)):
        check_seed("--seeds", seed)
    return tuple(seeds)


def parse_label_fracs(text: str) -> tuple[float, ...]:
    """Labelled fractions from ``0.01,0.05,1``: each in (0, 1], none twice, kept in the given order."""
    try:
        fracs = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--label-fracs {text!r}: expected fractions like 0.01,0.1,1") from None
    if not fracs or len(set(fracs)) != len(fracs) or not all(0.0 < f <= 1.0 for f in fracs):
        raise ConfigError(f"--label-fracs {text!r}: give fractions in (0, 1], each once")
    return fracs


def labelled_name(scenario: str, label_frac: float) -> str:
    """The sweep name of a scenario fine-tuned on ``label_frac`` of the training records (unchanged at 1)."""
    return scenario if label_frac == 1.0 else f"{scenario}_labels{label_frac:g}"


def select_checkpoints(pretrain_dir: str | Path, which: str) -> list[Path]:
    """Checkpoints of a pretraining run: ``last``, ``all`` or listed epochs like ``1,5,10``.

    ``last`` and ``all`` take the ``epoch_NN`` folders that exist now; listed epochs are taken as named even if
    not written yet (a warning says so), so a sweep can be planned while pretraining runs. Such a task fails
    with a clear error in its own run.json if the checkpoint is still missing when it runs.
    """
    pretrain_dir = Path(pretrain_dir).resolve()
    if which in ("last", "all"):
        found = list_checkpoints(pretrain_dir)
        if not found:
            raise ConfigError(f"--pretrain {pretrain_dir}: no epoch_NN/feature_extractor checkpoints yet")
        return found[-1:] if which == "last" else found
    try:
        epochs = sorted({int(v) for v in which.split(",") if v.strip()})
    except ValueError:
        raise ConfigError(f"--checkpoints {which!r}: expected last, all or epochs like 1,5,10") from None
    if not epochs or epochs[0] < 1:
        raise ConfigError(f"--checkpoints {which!r}: epochs count from 1")
    chosen = [pretrain_dir / f"epoch_{epoch:02d}" for epoch in epochs]
    for path in chosen:
        if not (path / FEATURE_EXTRACTOR).is_dir():
            print(f"warning: {path} does not exist yet; its tasks fail unless it is written before they run",
                  file=sys.stderr)
    return chosen


def _agree(option: str, given: Any, recorded: Any, where: Path) -> Any:
    """The given value, else the one the pretraining run recorded; refuse a contradiction."""
    if given is not None and recorded is not None and given != recorded:
        raise ConfigError(f"--{option} {given} contradicts {where}/run.json, which says {option} {recorded}")
    return given if given is not None else recorded


def random_scenarios(pretrained: Sequence[Scenario], arch: str | None, width: float | None) -> list[Scenario]:
    """Random init for each (arch, width) of ``pretrained`` unless ``arch``/``width`` are given (resnet18, 1.0 when
    there is nothing to follow)."""
    pairs = {(arch or s.arch, float(width if width is not None else s.width)): None for s in pretrained}
    pairs = pairs or {(arch or DEFAULT_ARCH, float(width if width is not None else 1.0)): None}
    per_arch = Counter(a for a, _ in pairs)
    return [Scenario(scenario_name(RANDOM, a) + (f"_w{w:g}" if per_arch[a] > 1 else ""), RANDOM, a, w)
            for a, w in pairs]


def plan_scenarios(pretrain_dirs: Sequence[str | Path], checkpoints: str = "last", include_random: bool = True,
                   arch: str | None = None, width: float | None = None) -> list[Scenario]:
    """Random init (unless excluded) plus the chosen checkpoints of each pretraining run, arch/width resolved.

    A checkpoint scenario takes arch and width from its pretraining run.json; ``arch``/``width`` fill in what
    that run does not record and must not contradict it. Random init is like for like: it takes ``arch``/``width``
    when given, else those of the pretraining runs (one random scenario per distinct pair, named ``_w<width>`` when
    an arch has several), else resnet18 at width 1.0.
    """
    scenarios = []
    for pretrain_dir in pretrain_dirs:
        pretrain_dir = Path(pretrain_dir).resolve()
        try:
            info = read_run(pretrain_dir) or {}
        except ValueError as exc:
            raise ConfigError(f"--pretrain {pretrain_dir}: {exc}") from None
        run_arch = _agree("arch", arch, info.get("arch"), pretrain_dir) or DEFAULT_ARCH
        run_width = _agree("width", width, info.get("width"), pretrain_dir)
        for checkpoint in select_checkpoints(pretrain_dir, checkpoints):
            scenarios.append(Scenario(scenario_name(str(checkpoint), run_arch), str(checkpoint), run_arch,
                                      float(run_width if run_width is not None else 1.0)))
    if include_random:
        scenarios[:0] = random_scenarios(scenarios, arch, width)
    names = Counter(s.name for s in scenarios)
    clashes = sorted(n for n, k in names.items() if k > 1)
    if clashes:
        raise ConfigError(f"scenario names {clashes} occur twice: give each --pretrain run its own name")
    if not scenarios:
        raise ConfigError("nothing to plan: give --pretrain runs or leave random init in")
    return scenarios


def _default_free(label_frac: float) -> tuple[str, ...]:
    """Config fields a task's argv leaves out: the job dir, and the labelled fraction at its default (so a
    manifest planned before the label-efficiency axis existed plans the same arguments)."""
    return ("job_dir",) if label_frac != 1.0 else ("job_dir", "label_frac")


def plan_tasks(scenarios: Sequence[Scenario], seeds: Sequence[int], sweep_dir: str | Path,
               training: dict[str, Any], label_fracs: Sequence[float] = (1.0,)) -> list[Task]:
    """One task per (scenario, labelled fraction, seed) in that order, indices from 0; ``training`` holds the
    shared options.

    Each task's argument list is checked by the trainer's own parser before it is written.
    """
    sweep_dir = Path(sweep_dir).resolve()
    shared = {k: training[k] for k in _TRAINING_OPTIONS if training.get(k) is not None}
    shared["data"] = str(Path(shared["data"]).resolve())
    if not Path(shared["data"]).is_file():
        raise ConfigError(f"--data {shared['data']}: no such file (prepare it with "
                          "python -m ecg_hpc.data prepare-physionet)")
    tasks = []
    for scenario, label_frac in ((s, f) for s in scenarios for f in label_fracs):
        name = labelled_name(scenario.name, label_frac)
        for seed in seeds:
            job_dir = sweep_dir / name / f"seed_{seed}"
            config = finetune.FinetuneConfig(job_dir=str(job_dir), init=scenario.init, seed=seed,
                                             arch=scenario.arch, width=scenario.width, scenario=name,
                                             label_frac=label_frac, **shared)
            task = Task(len(tasks), name, seed, str(job_dir), scenario.init, scenario.arch,
                        scenario.width, tuple(config.to_argv(exclude=_default_free(label_frac))), label_frac)
            finetune.config_from_args(finetune.build_parser().parse_args(task.trainer_argv()))
            tasks.append(task)
    return tasks


def read_manifest(path: str | Path) -> list[Task]:
    """The tasks of a manifest file, checked: one JSON object per line, indices 0..n-1 in order."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ConfigError(f"--manifest {path}: no such file (plan the sweep first)") from None
    tasks = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            task = Task(**{**obj, "job_dir": str(path.parent.resolve() / obj["job_dir"]),
                           "args": tuple(obj["args"])})
        except (json.JSONDecodeError, TypeError, KeyError) as exc:
            raise ConfigError(f"{path}:{number}: not a manifest task ({exc})") from None
        if task.index != len(tasks):
            raise ConfigError(f"{path}:{number}: index {task.index}, expected {len(tasks)}")
        tasks.append(task)
    return tasks


def merge_tasks(existing: Sequence[Task], planned: Iterable[Task]) -> list[Task]:
    """``existing`` unchanged, then the planned tasks whose job dir is new, re-indexed after them.

    A planned task for a job dir already in ``existing`` must have the same arguments (ConfigError otherwise).
    """
    merged = list(existing)
    by_dir = {t.job_dir: t for t in existing}
    for task in planned:
        old = by_dir.get(task.job_dir)
        if old is None:
            new = replace(task, index=len(merged))
            merged.append(new)
            by_dir[new.job_dir] = new
        elif old.args != task.args:
            raise ConfigError(f"task {old.index} ({old.job_dir}) is already planned with other options:\n"
                              f"  manifest: {' '.join(old.args)}\n  now:      {' '.join(task.args)}\n"
                              "use another --sweep-dir, or delete the manifest and those run directories")
    return merged


def write_manifest(path: str | Path, tasks: Sequence[Task]) -> Path:
    """Write the manifest atomically."""
    base = Path(path).parent.resolve()
    return atomic_write_text(path, "".join(t.to_json(base) + "\n" for t in tasks))


def task_status(task: Task) -> str:
    """``done``, ``failed``, ``running``, ``died`` (run.json says running but nobody runs it: see
    ``ecg_hpc.hpc.run_state``) or ``missing`` (no run.json yet)."""
    try:
        info = read_run(task.job_dir)
    except ValueError:
        return "failed"
    return "missing" if info is None else derived_status(task.job_dir, info)


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
            status = finetune.main(task.trainer_argv())
        except KeyboardInterrupt:  # Ctrl-C: run.json records the task as failed, so submitting again reruns it
            print(f"task {index} interrupted (SIGINT); the tasks after it were not started", flush=True)
            return EXIT_INTERRUPTED
        except Exception as exc:  # recorded in the task's run.json; the next task still runs
            traceback.print_exc()
            print(f"task {index} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            status = 1
        failed += status != 0
    return 1 if failed else 0


def _seeds_option(text: str) -> tuple[int, ...]:
    try:
        return parse_seeds(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _label_fracs_option(text: str) -> tuple[float, ...]:
    try:
        return parse_label_fracs(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parse_index(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a task index: {text!r} (is SLURM_ARRAY_TASK_ID set?)") from None


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    """Options that plan a sweep: scenarios, seeds, sweep dir and the trainer's shared options."""
    finetune.add_training_arguments(parser)
    group = parser.add_argument_group("sweep")
    group.add_argument("--pretrain", nargs="*", default=[], metavar="DIR",
                       help="pretraining run directories (runs/pretrain/<name>) whose checkpoints to fine-tune")
    group.add_argument("--checkpoints", default="last",
                       help="which epoch_NN of each pretraining run: last, all, or epochs like 1,5,10 "
                            "(default: %(default)s)")
    group.add_argument("--no-random", action="store_true", help="leave out the random-init scenario")
    group.add_argument("--seeds", type=_seeds_option, default=DEFAULT_SEEDS,
                       help="seeds, a list 10,20,30 or a range 10-100:10 (default: 10,20,...,100)")
    group.add_argument("--label-fracs", type=_label_fracs_option, default=(1.0,),
                       help="label-efficiency axis: fine-tune on these stratified, nested fractions of the training "
                            "records, e.g. 0.01,0.05,0.1,0.25,0.5,1 (default: 1, all of them)")
    group.add_argument("--sweep-dir", type=Path, default=DEFAULT_SWEEP_DIR,
                       help="where the manifest and the run directories go (default: %(default)s)")


def plan_from_args(args: argparse.Namespace, write: bool = True) -> tuple[Path, list[Task], list[Task]]:
    """Plan the sweep of parsed ``plan`` options merged into its manifest (written unless ``write`` is False).

    Returns the manifest path, all its tasks, and the tasks of this plan (with their manifest indices).
    """
    scenarios = plan_scenarios(args.pretrain, args.checkpoints, not args.no_random, args.arch, args.width)
    planned = plan_tasks(scenarios, args.seeds, args.sweep_dir, vars(args), args.label_fracs)
    path = args.sweep_dir.resolve() / MANIFEST
    existing = read_manifest(path) if path.is_file() else []
    tasks = merge_tasks(existing, planned)
    if write:
        write_manifest(path, tasks)
    dirs = {t.job_dir for t in planned}
    return path, tasks, [t for t in tasks if t.job_dir in dirs]


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
