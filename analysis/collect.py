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
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ecg_hpc.errors import DataError
from ecg_hpc.hpc.run_state import DIED, derived_status
from ecg_hpc.progress import Progress
from ecg_hpc.rundir import RUN_JSON, STATUSES, read_run
from ecg_hpc.train.metrics import challenge_f1, confusion_counts
from ecg_hpc.train.predictions import read_predictions

CLASSES = ("A", "N", "O", "~")
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
_EPOCH_DIR = re.compile(r"epoch_(\d+)")


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
    """Planned tasks of a sweep manifest (job_dir resolved, scenario, seed) and problems with its lines."""
    planned, problems = [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        return [], [_problem("malformed", "manifest", _shown(path, root), f"unreadable ({exc})")]
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            task = json.loads(line)
            job_dir = Path(task["job_dir"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            problems.append(_problem("malformed", "manifest", f"{_shown(path, root)}:{number}",
                                     f"line is not a JSON object with a job_dir ({exc})"))
            continue
        if not job_dir.is_absolute():  # the sweep stores job dirs relative to the manifest's folder
            job_dir = path.parent / job_dir
        planned.append({"job_dir": job_dir, "scenario": task.get("scenario"), "seed": task.get("seed"),
                        "source": f"{_shown(path, root)}:{number}"})
    return planned, problems


def _pretrain_info(init: dict[str, Any], root: Path) -> dict[str, Any]:
    """The run.json of the pretraining run an init names, when it can be found and read, else {}."""
    name = init.get("pretrain_run")
    if not isinstance(name, str):
        return {}
    path = Path(name)
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, root / path, root.parent / path]
    for candidate in candidates:
        try:
            info = read_run(candidate)
        except (ValueError, OSError):
            continue
        if isinstance(info, dict):
            return info
    return {}


def _number(value: Any, what: str) -> float:
    """``value`` as a finite float, else ``_Malformed`` naming ``what``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _Malformed(f"{what} is {value!r}, not a number") from None
    if not math.isfinite(number):
        raise _Malformed(f"{what} is {value!r}, not a finite number")
    return number


def _key(info: dict[str, Any], root: Path) -> dict[str, Any]:
    """The scenario key of a fine-tuning run.json (see the module docstring)."""
    config = info.get("config") if isinstance(info.get("config"), dict) else {}
    arch = _first(info.get("arch"), config.get("arch"))
    if not isinstance(arch, str):
        raise _Malformed("no fine-tune 'arch'")
    width = _first(info.get("width"), config.get("width"))
    init = info.get("init")
    if not isinstance(init, dict) or init.get("source") not in ("random", "checkpoint"):
        raise _Malformed(f"'init' must be an object with source random or checkpoint, got {init!r}")
    key: dict[str, Any] = {"init": init["source"], "task": None, "pretrain_arch": None, "frame_size": None,
                           "frac": None, "pretrain_epoch": None, "arch": arch,
                           "width": _number(width, "width") if not is_missing(width) else None}
    label_frac = _first(info.get("label_frac"), config.get("label_frac"), 1.0)
    key["label_frac"] = _number(label_frac, "label_frac")
    if init["source"] == "random":
        return key
    pre = _pretrain_info(init, root)
    key["task"] = _first(init.get("task"), pre.get("task"))
    if not isinstance(key["task"], str):
        raise _Malformed("checkpoint init names no pretraining 'task' (nor a readable pretrain_run)")
    key["pretrain_arch"] = _first(init.get("arch"), pre.get("arch"))
    frame = _first(init.get("frame_size"), pre.get("frame_size"))
    key["frame_size"] = int(_number(frame, "init.frame_size")) if frame is not None else None
    key["frac"] = _number(_first(init.get("frac"), pre.get("frac"), 1.0), "init.frac")
    epoch = init.get("pretrain_epoch")
    if epoch is None and isinstance(init.get("checkpoint"), str):
        match = _EPOCH_DIR.search(init["checkpoint"])
        epoch = match.group(1) if match else None
    key["pretrain_epoch"] = int(_number(epoch, "init.pretrain_epoch")) if epoch is not None else None
    return key


def _finetune_row(info: dict[str, Any], run_dir: str, root: Path) -> dict[str, Any]:
    """One tidy row from a fine-tuning run.json whose status is known (test metrics only when done)."""
    status = info["status"]
    row: dict[str, Any] = dict.fromkeys(RUN_COLUMNS)
    row.update(_key(info, root))
    row.update(status=status, seed=info.get("seed"), run_dir=run_dir, sweep_scenario=info.get("scenario"),
               finished_at=info.get("finished_at"))
    row["scenario"] = scenario_label(row)
    if status == "failed":
        row["error"] = str(info.get("error") or "(run.json gives no error message)")
    if status != "done":
        return row
    test = info.get("test")
    if not isinstance(test, dict) or not isinstance(test.get("f1"), dict):
        raise _Malformed("done but no 'test' object with 'macro_f1' and 'f1'")
    row["macro_f1"] = _number(test.get("macro_f1"), "test.macro_f1")
    for c in CLASSES:
        row[f"f1_{c}"] = _number(test["f1"].get(c), f"test.f1.{c}")
    row["challenge_f1"] = challenge_f1({c: row[f"f1_{c}"] for c in CLASSES})
    row["epochs_run"] = int(_number(info.get("epochs_run"), "epochs_run"))
    if not is_missing(info.get("best_epoch")):
        row["best_epoch"] = int(_number(info["best_epoch"], "best_epoch"))
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


def _read_pretrain_history(run_dir: Path, info: dict[str, Any]) -> pd.DataFrame | None:
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
    return long.dropna().assign(task=info.get("task"), arch=info.get("arch"), frac=info.get("frac"),
                                frame_size=info.get("frame_size"))


def _running_detail(info: dict[str, Any]) -> str:
    """When a running run started and how long ago (a job killed by SLURM stays 'running' for ever)."""
    started = info.get("started_at")
    try:
        since = _dt.datetime.now(_dt.timezone.utc) - _dt.datetime.fromisoformat(str(started))
        return f"started {started}, {since.total_seconds() / 3600:.1f} h ago (stale if its job has ended)"
    except (TypeError, ValueError):
        return f"started {started or '?'}"


def _status_problem(info: dict[str, Any], kind: str, shown: str, scenario: Any, seed: Any,
                    run_dir: Path | None = None) -> dict[str, Any] | None:
    """The problem a failed, running or died run states (None for a finished run); "died" is a run.json that
    says running while nobody runs it (``ecg_hpc.hpc.run_state``)."""
    if info.get("status") == "failed":
        return _problem("failed", kind, shown, str(info.get("error") or "(run.json gives no error message)"),
                        scenario, seed)
    if info.get("status") == "running":
        if run_dir is not None and derived_status(run_dir, info) == DIED:
            return _problem(DIED, kind, shown, f"run.json says running but no process holds the run and its job "
                            f"has ended ({_running_detail(info)}); submit it again to redo it", scenario, seed)
        return _problem("running", kind, shown, _running_detail(info), scenario, seed)
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
        info = read_run(run_dir)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        problems.append(_problem("malformed", "?", shown, f"{RUN_JSON} unreadable ({exc})"))
        return None
    kind = info.get("kind") if isinstance(info, dict) else None
    if kind not in ("pretrain", "finetune"):
        problems.append(_problem("malformed", "?", shown, f"{RUN_JSON} kind is {kind!r}, not pretrain/finetune"))
        return None
    if info.get("status") not in STATUSES:
        problems.append(_problem("malformed", kind, shown, f"{RUN_JSON} status {info.get('status')!r} is not "
                                 f"one of {', '.join(STATUSES)}", info.get("scenario"), info.get("seed")))
        return None
    if kind == "pretrain":
        problem = _status_problem(info, kind, shown, None, info.get("seed"), run_dir)
        problems += [problem] if problem else []
        history = _read_pretrain_history(run_dir, info)
        if history is not None:
            got.pretrain.append(history.assign(run_dir=shown))
        return kind
    try:
        row = _finetune_row(info, shown, root)
    except _Malformed as exc:
        # a job that failed (or is still starting) before it recorded its init is listed as what it is
        problem = _status_problem(info, kind, shown, info.get("scenario"), info.get("seed"), run_dir)
        problems.append(problem or _problem("malformed", kind, shown, f"{RUN_JSON}: {exc}", info.get("scenario"),
                                            info.get("seed")))
        return kind
    rows.append(row)
    problem = _status_problem(info, kind, shown, row["scenario"], row["seed"], run_dir)
    if problem:
        problems.append(problem)
        return kind
    try:
        curves.append(_read_history(run_dir).assign(scenario=row["scenario"], run_dir=shown))
    except _Malformed as exc:
        problems.append(_problem("incomplete", kind, shown, f"{exc} (left out of the curves)", row["scenario"],
                                 row["seed"]))
    try:
        confusion = _read_confusion(run_dir)
    except _Malformed as exc:
        problems.append(_problem("incomplete", kind, shown, f"{exc} (left out of the confusion matrices)",
                                 row["scenario"], row["seed"]))
    else:
        if confusion is not None:
            got.confusion.append(confusion.assign(scenario=row["scenario"], run_dir=shown))
    return kind


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
