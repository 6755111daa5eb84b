"""Experiment design of a fine-tuning sweep: which inits (scenarios), labelled fractions and seeds, as manifest tasks.

Scenarios are ``random`` and one per chosen pretraining checkpoint (``<pretrain-name>_epoch_NN``), with ``_<arch>``
appended when the arch is not resnet18 and ``_labels<F>`` for a labelled fraction F < 1 of the training records
(``--label-fracs``, the label-efficiency axis; the test set is the same for every F); each (scenario, labelled
fraction, seed) is one task of the manifest (``ecg_hpc.hpc.manifest``).
Re-planning into an existing manifest keeps every task at its index and appends new ones; a task planned again
with other options is refused.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ecg_hpc.errors import ConfigError
from ecg_hpc.hpc.manifest import MANIFEST, Task, merge_tasks, read_manifest, write_manifest
from ecg_hpc.options import argparse_type, check_seed
from ecg_hpc.records import FEATURE_EXTRACTOR, RecordError, epoch_dir_name, read_pretrain_run
from ecg_hpc.train import finetune
from ecg_hpc.train.init_source import DEFAULT_ARCH, RANDOM, list_checkpoints, scenario_name

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
    chosen = [pretrain_dir / epoch_dir_name(epoch) for epoch in epochs]
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
            run = read_pretrain_run(pretrain_dir)
        except RecordError as exc:
            raise ConfigError(f"--pretrain {pretrain_dir}: {exc}") from None
        run_arch = _agree("arch", arch, run.arch if run else None, pretrain_dir) or DEFAULT_ARCH
        run_width = _agree("width", width, run.width if run else None, pretrain_dir)
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


def plan_tasks(scenarios: Sequence[Scenario], seeds: Sequence[int], sweep_dir: str | Path,
               training: dict[str, Any], label_fracs: Sequence[float] = (1.0,)) -> list[Task]:
    """One task per (scenario, labelled fraction, seed) in that order, indices from 0; ``training`` holds the
    shared options (each config is checked as it is built)."""
    sweep_dir = Path(sweep_dir).resolve()
    shared = {k: training[k] for k in _TRAINING_OPTIONS if training.get(k) is not None}
    shared["data"] = str(Path(shared["data"]).resolve())
    if not Path(shared["data"]).is_file():
        raise ConfigError(f"--data {shared['data']}: no such file (prepare it with "
                          "python -m ecg_hpc.data prepare-physionet)")
    for arch in sorted({s.arch for s in scenarios}):
        finetune.check_arch(arch)
    tasks = []
    for scenario, label_frac in ((s, f) for s in scenarios for f in label_fracs):
        name = labelled_name(scenario.name, label_frac)
        for seed in seeds:
            job_dir = sweep_dir / name / f"seed_{seed}"
            config = finetune.FinetuneConfig(job_dir=str(job_dir), init=scenario.init, seed=seed,
                                             arch=scenario.arch, width=scenario.width, scenario=name,
                                             label_frac=label_frac, **shared)
            tasks.append(Task(len(tasks), config))
    return tasks


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
    group.add_argument("--seeds", type=argparse_type(parse_seeds), default=DEFAULT_SEEDS,
                       help="seeds, a list 10,20,30 or a range 10-100:10 (default: 10,20,...,100)")
    group.add_argument("--label-fracs", type=argparse_type(parse_label_fracs), default=(1.0,),
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
