"""Read run directories (run.json + CSVs, never job logs) into tidy pandas tables.

A fine-tuning run's scenario is what its ``run.json`` says, not its folder name: the init source, and for a
pretrained init the pretraining task, arch, frame size, fraction of patients and epoch, plus the fine-tune arch
and width. Fields a run.json's ``init`` lacks are taken from the pretraining run's own run.json when it can be
found (``init.pretrain_run``), the epoch from an ``epoch_NN`` checkpoint path; a fraction still absent means all
patients; ``label_frac`` (the labelled fraction of the training records) absent means all of them. Macro F1 and
per-class F1 of a run are its run.json ``test`` values (the trainer computes them from ``test_predictions.csv``
with the rule of docs/design-facts.md), the challenge F1 the mean of the N, A and O values; epochs to early stop
are ``epochs_run``. Confusion counts come from ``test_predictions.csv`` and pretraining curves from the
pretraining runs' ``history.csv``; a run without them is only left out of those figures.

Nothing is dropped silently: failed, running and died runs, malformed run.json or CSVs (a non-finite score
included, so it is never averaged), finished runs that repeat a (scenario, seed) of a newer one (counted once),
planned tasks of a sweep manifest (``*manifest*.jsonl`` with a ``job_dir`` per line) without a run.json, and
``seed_*`` folders without one are rows of ``Collection.problems``. Symbolic links to run folders are followed.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ecg_hpc.errors import ConfigError, DataError
from ecg_hpc.hpc.manifest import iter_manifest
from ecg_hpc.hpc.run_state import DIED, derived_status
from ecg_hpc.progress import Progress
from ecg_hpc.records import (CLASSES, EPOCH_DIR, RANDOM, RUN_JSON, FinetuneRun, InitSource, PretrainRun, RecordError,
                             RunRecord, read_pretrain_run, read_record)
from ecg_hpc.train.metrics import challenge_f1, confusion_counts
from ecg_hpc.train.predictions import read_predictions

KEY_COLUMNS = ("init", "task", "pretrain_arch", "frame_size", "frac", "pretrain_epoch", "arch", "width",
               "label_frac")
RUN_COLUMNS = ("scenario", *KEY_COLUMNS, "seed", "status", "macro_f1", "challenge_f1",
               *(f"f1_{c}" for c in CLASSES), "epochs_run", "best_epoch", "sweep_scenario", "run_dir", "error",
               "finished_at")
HISTORY_COLUMNS = ("scenario", "run_dir", "epoch", "f1")
CONFUSION_COLUMNS = ("scenario", "run_dir", "true", "pred", "count")
PRETRAIN_COLUMNS = ("run_dir", "task", "arch", "frac", "frame_size", "epoch", "metric", "value")
PREDICTIONS_CSV = "test_predictions.csv"
PROBLEM_COLUMNS = ("problem", "kind", "run_dir", "scenario", "seed", "detail")
HISTORY_CSV = "history.csv"
MANIFEST_PATTERN = "*manifest*.jsonl"
SUPERSEDED = "superseded"  # a finished run that repeats a (scenario, seed) of a newer one: listed, not counted
_SEED_DIR = re.compile(r"seed_\d+")


class _Malformed(Exception):
    """A run directory whose files break the run-directory contract (the message says how)."""


@dataclass(frozen=True)
class Collection:
    """Everything read from a runs tree: one row per fine-tuning run, validation curves, and problems."""

    root: Path
    runs: pd.DataFrame
    history: pd.DataFrame
    problems: pd.DataFrame
    n_pretrain: int
    confusion: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(CONFUSION_COLUMNS)))
    pretrain_history: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(PRETRAIN_COLUMNS)))

    @property
    def done(self) -> pd.DataFrame:
        """The finished fine-tuning runs, the only ones the tables use."""
        return self.runs[self.runs["status"] == "done"].reset_index(drop=True)


def is_missing(value: Any) -> bool:
    """True for None, NaN and pandas' NA, the ways an absent value reaches the report (JSON objects and lists
    count as present)."""
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def _first(*values: Any) -> Any:
    """The first present value, else None."""
    return next((v for v in values if not is_missing(v)), None)


def percent(frac: float) -> str:
    """A fraction of patients as a short percentage: 0.1 -> '10%'."""
    return f"{100.0 * float(frac):.4g}%"


def scenario_label(row: dict[str, Any] | pd.Series, omit: tuple[str, ...] = ()) -> str:
    """Readable unique name of a scenario key, e.g. 'random -> resnet18', 'beat resnet18 f4096 10% ep5 ->
    resnet18' (a width other than 1 is appended to the fine-tune arch as 'x0.25', a labelled fraction other than
    1 as ', 5% labels'); key fields named in ``omit`` are left out, which names the family of scenarios that
    differ only in them."""
    target = str(row["arch"])
    if not is_missing(row["width"]) and float(row["width"]) != 1.0:
        target += f" x{float(row['width']):g}"
    label_frac = row.get("label_frac")
    if "label_frac" not in omit and not is_missing(label_frac) and float(label_frac) != 1.0:
        target += f", {percent(label_frac)} labels"
    if row["init"] == "random":
        return f"random -> {target}"
    fields = {"task": str(row["task"]),
              "pretrain_arch": str(row["pretrain_arch"]) if not is_missing(row["pretrain_arch"]) else "?",
              "frame_size": f"f{int(row['frame_size'])}" if not is_missing(row["frame_size"]) else "f?",
              "frac": percent(row["frac"]) if not is_missing(row["frac"]) else "?%",
              "pretrain_epoch": f"ep{int(row['pretrain_epoch'])}" if not is_missing(row["pretrain_epoch"]) else "ep?"}
    return f"{' '.join(text for name, text in fields.items() if name not in omit)} -> {target}"


def sort_scenarios(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows ordered as in the paper: per fine-tune arch, random first, then by task, arch, frame, fraction, epoch."""
    order = frame.assign(_pretrained=frame["init"] != "random")
    order = order.sort_values(["arch", "width", "_pretrained", "task", "pretrain_arch", "frame_size", "frac",
                               "pretrain_epoch", "scenario"], na_position="first", kind="stable")
    return order.drop(columns="_pretrained").reset_index(drop=True)


def _walk(root: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """Run directories (holding run.json), ``seed_*`` folders without one, and sweep manifests under ``root``.

    Symbolic links to folders are followed (runs are often linked in from scratch space), each real folder once:
    a link back up the tree, or two links to one run, neither loops nor counts it twice."""
    run_dirs, bare_seed_dirs, manifests = [], [], []
    seen: set[Path] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        here = Path(dirpath)
        real = here.resolve()
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and (here / d).resolve() not in seen)
        manifests += [here / f for f in sorted(filenames) if fnmatch.fnmatch(f, MANIFEST_PATTERN)]
        if RUN_JSON in filenames:
            run_dirs.append(here)
            dirnames[:] = []  # checkpoints live below a run directory; no run nests in another
        elif _SEED_DIR.fullmatch(here.name):
            bare_seed_dirs.append(here)
    return run_dirs, bare_seed_dirs, manifests


def _shown(path: Path, root: Path) -> str:
    """``path`` relative to the runs root when inside it (how the report names a run), else as is."""
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _problem(problem: str, kind: str, run_dir: str, detail: str, scenario: Any = None,
             seed: Any = None) -> dict[str, Any]:
    """One row of the problems table (seed as text: it is shown, never computed with)."""
    return {"problem": problem, "kind": kind, "run_dir": run_dir, "scenario": scenario,
            "seed": str(seed) if not is_missing(seed) else None, "detail": detail}


def _read_manifest(path: Path, root: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Planned tasks of a sweep manifest (job_dir, scenario, seed) and problems with its lines."""
    planned, problems = [], []
    try:
        for number, task in iter_manifest(path):
            if isinstance(task, str):
                problems.append(_problem("malformed", "manifest", f"{_shown(path, root)}:{number}", task))
            else:
                planned.append({"job_dir": Path(task.job_dir), "scenario": task.scenario, "seed": task.seed,
                                "source": f"{_shown(path, root)}:{number}"})
    except ConfigError as exc:
        return [], [_problem("malformed", "manifest", _shown(path, root), str(exc))]
    return planned, problems


def _pretrain_run(init: InitSource, root: Path) -> PretrainRun | None:
    """The record of the pretraining run an init names, when it can be found and read, else None."""
    if init.pretrain_run is None:
        return None
    path = Path(init.pretrain_run)
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, root / path, root.parent / path]
    for candidate in candidates:
        try:
            run = read_pretrain_run(candidate)
        except RecordError:
            continue
        if run is not None:
            return run
    return None


def _key(run: FinetuneRun, root: Path) -> dict[str, Any]:
    """The scenario key of a fine-tuning run (see the module docstring)."""
    init = run.init
    key: dict[str, Any] = {"init": init.source, "task": None, "pretrain_arch": None, "frame_size": None,
                           "frac": None, "pretrain_epoch": None, "arch": run.arch,
                           "width": float(run.width) if run.width is not None else None,
                           "label_frac": float(run.label_frac)}
    if init.source == RANDOM:
        return key
    pre = _pretrain_run(init, root)
    key["task"] = _first(init.task, pre.task if pre else None)
    if key["task"] is None:
        raise _Malformed("checkpoint init names no pretraining 'task' (nor a readable pretrain_run)")
    key["pretrain_arch"] = _first(init.arch, pre.arch if pre else None)
    key["frame_size"] = _first(init.frame_size, pre.frame_size if pre else None)
    key["frac"] = float(_first(init.frac, pre.frac if pre else None, 1.0))
    epoch = init.pretrain_epoch
    if epoch is None and init.checkpoint is not None:
        match = EPOCH_DIR.search(init.checkpoint)
        epoch = int(match.group(1)) if match else None
    key["pretrain_epoch"] = epoch
    return key


def _finetune_row(run: FinetuneRun, run_dir: str, root: Path) -> dict[str, Any]:
    """One tidy row from a fine-tuning record (test metrics only when done)."""
    row: dict[str, Any] = dict.fromkeys(RUN_COLUMNS)
    row.update(_key(run, root))
    row.update(status=run.status, seed=run.seed, run_dir=run_dir, sweep_scenario=run.scenario,
               finished_at=run.finished_at)
    row["scenario"] = scenario_label(row)
    if run.status == "failed":
        row["error"] = run.error or "(run.json gives no error message)"
    if run.status != "done" or run.test is None:
        return row
    row["macro_f1"] = float(run.test.macro_f1)
    for c in CLASSES:
        row[f"f1_{c}"] = float(run.test.f1[c])
    row["challenge_f1"] = challenge_f1({c: row[f"f1_{c}"] for c in CLASSES})
    row.update(epochs_run=run.epochs_run, best_epoch=run.best_epoch)
    return row


def _read_history(run_dir: Path) -> pd.DataFrame:
    """Epoch and validation macro F1 of a run's history.csv (``_Malformed`` when absent or broken)."""
    path = run_dir / HISTORY_CSV
    if not path.is_file():
        raise _Malformed(f"no {HISTORY_CSV}")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise _Malformed(f"{HISTORY_CSV} unreadable ({exc})") from None
    missing = [c for c in ("epoch", "f1") if c not in frame.columns]
    if missing:
        raise _Malformed(f"{HISTORY_CSV} lacks column(s) {', '.join(missing)}")
    frame = frame[["epoch", "f1"]].apply(pd.to_numeric, errors="coerce")
    if frame.isna().any().any():
        raise _Malformed(f"{HISTORY_CSV} has empty or non-numeric epoch/f1 values")
    return frame


def _read_confusion(run_dir: Path) -> pd.DataFrame | None:
    """Confusion counts (true, pred, count) of a run's test predictions; None without the file."""
    path = run_dir / PREDICTIONS_CSV
    if not path.is_file():
        return None
    try:
        _, labels, prob, classes = read_predictions(path)
    except ValueError as exc:
        raise _Malformed(str(exc).replace(str(path), PREDICTIONS_CSV)) from None
    counts = confusion_counts(labels, prob)
    return pd.DataFrame([{"true": t, "pred": p, "count": counts[i, j]} for i, t in enumerate(classes)
                         for j, p in enumerate(classes)])


_PRETRAIN_NOT_METRICS = ("epoch", "time_s", "frames_per_s")


def _read_pretrain_history(run_dir: Path, run: PretrainRun) -> pd.DataFrame | None:
    """A pretraining run's per-epoch metrics (loss, accuracy, ...) as long rows; None when it has no readable
    history.csv (a run that has not finished an epoch)."""
    try:
        frame = pd.read_csv(run_dir / HISTORY_CSV)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return None
    if "epoch" not in frame.columns or frame.empty:
        return None
    metrics = [c for c in frame.columns if c not in _PRETRAIN_NOT_METRICS]
    long = frame.melt(id_vars=["epoch"], value_vars=metrics, var_name="metric", value_name="value")
    long["value"] = pd.to_numeric(long["value"], errors="coerce")
    return long.dropna().assign(task=run.task, arch=run.arch, frac=run.frac, frame_size=run.frame_size)


def _running_detail(started: str | None) -> str:
    """When a running run started and how long ago (a job killed by SLURM stays 'running' for ever)."""
    try:
        since = _dt.datetime.now(_dt.timezone.utc) - _dt.datetime.fromisoformat(str(started))
        return f"started {started}, {since.total_seconds() / 3600:.1f} h ago (stale if its job has ended)"
    except (TypeError, ValueError):
        return f"started {started or '?'}"


def _status_problem(run: RunRecord, shown: str, scenario: Any, run_dir: Path | None = None
                    ) -> dict[str, Any] | None:
    """The problem a failed, running or died run states (None for a finished run); "died" is a run.json that
    says running while nobody runs it (``ecg_hpc.hpc.run_state``)."""
    if run.status == "failed":
        return _problem("failed", run.kind, shown, run.error or "(run.json gives no error message)", scenario,
                        run.seed)
    if run.status == "running":
        if run_dir is not None and derived_status(run_dir, run) == DIED:
            return _problem(DIED, run.kind, shown, f"run.json says running but no process holds the run and its "
                            f"job has ended ({_running_detail(run.started_at)}); submit it again to redo it",
                            scenario, run.seed)
        return _problem("running", run.kind, shown, _running_detail(run.started_at), scenario, run.seed)
    return None


@dataclass
class _Gathered:
    """What reading the run directories accumulates (lists of rows and frames)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    curves: list[pd.DataFrame] = field(default_factory=list)
    confusion: list[pd.DataFrame] = field(default_factory=list)
    pretrain: list[pd.DataFrame] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)


def _read_one(run_dir: Path, root: Path, got: _Gathered) -> str | None:
    """Read one run directory into ``got``; return its kind when it was understood."""
    rows, curves, problems = got.rows, got.curves, got.problems
    shown = _shown(run_dir, root)
    try:
        run = read_record(run_dir)
    except RecordError as exc:
        problems.append(_problem("malformed", "?", shown, str(exc)))
        return None
    if run is None:  # removed while the tree was read
        return None
    if isinstance(run, PretrainRun):
        problem = _status_problem(run, shown, None, run_dir)
        problems += [problem] if problem else []
        history = _read_pretrain_history(run_dir, run)
        if history is not None:
            got.pretrain.append(history.assign(run_dir=shown))
        return run.kind
    try:
        row = _finetune_row(run, shown, root)
    except _Malformed as exc:
        # a job that failed (or is still starting) before it recorded its init is listed as what it is
        problem = _status_problem(run, shown, run.scenario, run_dir)
        problems.append(problem or _problem("malformed", run.kind, shown, f"{RUN_JSON}: {exc}", run.scenario,
                                            run.seed))
        return run.kind
    rows.append(row)
    problem = _status_problem(run, shown, row["scenario"], run_dir)
    if problem:
        problems.append(problem)
        return run.kind
    try:
        curves.append(_read_history(run_dir).assign(scenario=row["scenario"], run_dir=shown))
    except _Malformed as exc:
        problems.append(_problem("incomplete", run.kind, shown, f"{exc} (left out of the curves)", row["scenario"],
                                 row["seed"]))
    try:
        confusion = _read_confusion(run_dir)
    except _Malformed as exc:
        problems.append(_problem("incomplete", run.kind, shown, f"{exc} (left out of the confusion matrices)",
                                 row["scenario"], row["seed"]))
    else:
        if confusion is not None:
            got.confusion.append(confusion.assign(scenario=row["scenario"], run_dir=shown))
    return run.kind


def _duplicates(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Count each (scenario, seed) once: of finished runs that repeat a pair, the newest (``finished_at``, then
    the run directory's name) keeps status done; the others become ``superseded`` and are listed as problems."""
    done = runs[(runs["status"] == "done") & runs["seed"].notna()]
    repeated = done[done.duplicated(["scenario", "seed"], keep=False)]
    if repeated.empty:
        return runs, []
    ordered = repeated.assign(_when=repeated["finished_at"].fillna("")).sort_values(["_when", "run_dir"])
    newest = ordered.groupby(["scenario", "seed"], sort=False).tail(1)
    older = ordered.drop(index=newest.index)
    winner = {(r.scenario, r.seed): r.run_dir for r in newest.itertuples()}
    runs = runs.copy()
    runs.loc[older.index, "status"] = SUPERSEDED
    problems = [_problem("duplicate", "finetune", r.run_dir, f"another finished run has this scenario and seed; "
                         f"the newest, {winner[(r.scenario, r.seed)]}, is counted", r.scenario, r.seed)
                for r in older.itertuples()]
    return runs, problems


def _reconcile(run_dirs: list[Path], bare_seed_dirs: list[Path], planned: list[dict[str, Any]], root: Path
               ) -> tuple[list[Path], list[dict[str, Any]]]:
    """Run directories to read (those found, plus planned ones outside ``root``) and the 'missing' problems:
    planned tasks without a run.json, and ``seed_*`` folders without one that no manifest plans."""
    run_dirs = list(run_dirs)
    known = {d.resolve() for d in run_dirs}
    seen_planned = set()
    missing = []
    for task in planned:
        where = task["job_dir"].resolve()
        if where in seen_planned:
            continue
        seen_planned.add(where)
        if not (task["job_dir"] / RUN_JSON).is_file():
            missing.append(_problem("missing", "finetune", _shown(task["job_dir"], root),
                                    f"planned in {task['source']}, no {RUN_JSON}", task["scenario"], task["seed"]))
        elif where not in known:
            run_dirs.append(task["job_dir"])
            known.add(where)
    missing += [_problem("missing", "finetune", _shown(d, root), f"no {RUN_JSON}") for d in bare_seed_dirs
                if d.resolve() not in seen_planned]
    return run_dirs, missing


def collect(root: str | os.PathLike[str], progress: bool = True) -> Collection:
    """Read every run directory under ``root`` (and the job dirs its sweep manifests plan) into a Collection;
    DataError when ``root`` is not a directory or holds no run directory at all."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such directory (expected a runs tree with {RUN_JSON} files)")
    run_dirs, bare_seed_dirs, manifests = _walk(root)
    problems: list[dict[str, Any]] = []
    planned: list[dict[str, Any]] = []
    for manifest in manifests:
        lines, bad = _read_manifest(manifest, root)
        planned += lines
        problems += bad
    run_dirs, missing = _reconcile(run_dirs, bare_seed_dirs, planned, root)
    problems += missing
    if not run_dirs and not planned:
        raise DataError(f"{root}: no run directories (no {RUN_JSON} found below it)")
    got = _Gathered(problems=problems)
    bar = Progress(len(run_dirs), "reading run directories", unit="runs") if progress and run_dirs else None
    n_pretrain = 0
    for run_dir in run_dirs:
        n_pretrain += _read_one(run_dir, root, got) == "pretrain"
        if bar:
            bar.update()
    runs = pd.DataFrame(got.rows, columns=list(RUN_COLUMNS))
    for column in ("seed", "epochs_run", "best_epoch"):  # integers even where a run lacks them
        values = pd.to_numeric(runs[column], errors="coerce")
        runs[column] = values.where(values == values.round()).astype("Int64")  # a non-integer seed is NA
    runs = sort_scenarios(runs) if len(runs) else runs
    runs, repeated = _duplicates(runs)
    problems += repeated
    superseded = set(runs.loc[runs["status"] == SUPERSEDED, "run_dir"])

    def current(frame: pd.DataFrame) -> pd.DataFrame:  # each (scenario, seed) once
        return frame[~frame["run_dir"].isin(superseded)].reset_index(drop=True)
    problem_frame = pd.DataFrame(problems, columns=list(PROBLEM_COLUMNS))
    problem_frame = problem_frame.sort_values(["problem", "run_dir"], kind="stable").reset_index(drop=True)
    return Collection(root=root, runs=runs, history=current(_frame(got.curves, HISTORY_COLUMNS)),
                      problems=problem_frame, n_pretrain=n_pretrain,
                      confusion=current(_frame(got.confusion, CONFUSION_COLUMNS)),
                      pretrain_history=_frame(got.pretrain, PRETRAIN_COLUMNS))


def _frame(parts: list[pd.DataFrame], columns: tuple[str, ...]) -> pd.DataFrame:
    """The parts stacked with ``columns`` in order (an empty frame with them when there are none)."""
    return pd.concat(parts, ignore_index=True)[list(columns)] if parts else pd.DataFrame(columns=list(columns))
