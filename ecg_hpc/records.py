"""Run records: what ``run.json`` holds, as frozen dataclasses that the trainers write and analysis reads.

Every job writes one run directory, the one interface between launching, training and analysis; files appear
atomically (``ecg_hpc.atomic``). Its ``run.json`` is one of ``PretrainRun`` or ``FinetuneRun`` (the fine-tuning
run's ``init`` an ``InitSource``), written with ``write_record`` and read with ``read_record``, which refuses a
file that breaks the contract with a ``RecordError`` naming the file and the field. ``schema`` counts the
contract's versions; a run.json without it predates the field and is read as version 1. Fields that are None
are left out of the file (absent means not known or not reached).

Beside run.json, a pretraining run (``runs/pretrain/<name>/``) holds ``epoch_NN/`` checkpoints (NN from 01, each
with ``feature_extractor/``) and ``history.csv`` (one row per epoch); a fine-tuning run
(``runs/finetune/<scenario>/seed_S/``) holds ``history.csv`` (``epoch, loss, val_loss, f1, f1_A, f1_N, f1_O,
f1_~``, F1 on the validation set), ``train|val|test_predictions.csv`` (``record_name, true_A, true_N, true_O,
true_~, prob_A, prob_N, prob_O, prob_~``) and the best weights.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping

from ecg_hpc.atomic import atomic_write_text
from ecg_hpc.errors import DataError
from ecg_hpc.provenance import utc_now

SCHEMA_VERSION = 1
RUN_JSON = "run.json"
STATUSES = ("running", "done", "failed")
RANDOM = "random"
CHECKPOINT = "checkpoint"
CLASSES = ("A", "N", "O", "~")
FEATURE_EXTRACTOR = "feature_extractor"  # a checkpoint's transferable weights, epoch_NN/feature_extractor/
EPOCH_DIR = re.compile(r"epoch_(\d{2,})")  # a pretraining checkpoint folder, epoch_NN (NN from 01)


def epoch_dir_name(epoch: int) -> str:
    """Folder name of the checkpoint after ``epoch`` (1-based): ``epoch_01``, ..., ``epoch_100``."""
    return f"epoch_{epoch:02d}"


class RecordError(DataError):
    """A run.json that breaks the run-record contract (the message names the file or field)."""


def _allowed(hint: Any) -> tuple[type, ...]:
    """The JSON-level Python types a field annotation admits (containers by their outer type)."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    allowed: list[type] = []
    for arg in args:
        origin = typing.get_origin(arg) or arg
        if arg is type(None):
            allowed.append(type(None))
        elif origin is float:
            allowed += [float, int]
        elif origin in (tuple, list):
            allowed += [list, tuple]
        elif origin in (dict, Mapping) or arg is Any:
            allowed.append(dict if arg is not Any else object)
        else:
            allowed.append(origin)
    return tuple(allowed)


class _Record:
    """JSON conversion shared by the records: fields in declaration order, None left out, types checked."""

    kind: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this record (``schema`` and ``kind`` first)."""
        out: dict[str, Any] = {"schema": SCHEMA_VERSION, "kind": self.kind} if self.kind else {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, _Record):
                value = value.to_dict()
            if value is not None:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def to_json(self) -> str:
        """The record as indented JSON text (what ``run.json`` holds)."""
        return json.dumps(self.to_dict(), indent=2, default=str) + "\n"

    @classmethod
    def from_dict(cls, data: Any, where: str = RUN_JSON) -> Any:
        """The record of a parsed JSON object; ``RecordError`` naming ``where`` and the field when it does not fit."""
        if not isinstance(data, dict):
            raise RecordError(f"{where}: expected a JSON object, got {type(data).__name__}")
        data = dict(data)
        if cls.kind:
            schema = data.pop("schema", 1)
            if not isinstance(schema, int) or schema > SCHEMA_VERSION:
                raise RecordError(f"{where}: schema {schema!r} is newer than this code's {SCHEMA_VERSION}; "
                                  "update ecg-hpc to read it")
            kind = data.pop("kind", None)
            if kind != cls.kind:
                raise RecordError(f"{where}: kind is {kind!r}, expected {cls.kind!r}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise RecordError(f"{where}: unknown field(s) {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for name, f in fields.items():
            if name not in data:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise RecordError(f"{where}: field {name!r} is missing")
                continue
            value = data[name]
            nested = hints[name] if isinstance(hints[name], type) and issubclass(hints[name], _Record) else None
            if nested is None:
                for arg in typing.get_args(hints[name]):
                    if isinstance(arg, type) and issubclass(arg, _Record):
                        nested = arg
            if nested is not None and isinstance(value, dict):
                value = nested.from_dict(value, f"{where}: {name}")
            elif not isinstance(value, allowed := _allowed(hints[name])) or (isinstance(value, bool)
                                                                            and bool not in allowed):
                raise RecordError(f"{where}: field {name!r} is {value!r}, not of type {hints[name]}")
            if isinstance(value, float) and not math.isfinite(value):
                raise RecordError(f"{where}: field {name!r} is {value!r}, not a finite number")
            values[name] = tuple(value) if isinstance(value, list) else value
        record = cls(**values)
        record.check(where)
        return record

    def check(self, where: str) -> None:
        """Rules between fields (``RecordError``); the base checks the status."""
        status = getattr(self, "status", None)
        if status is not None and status not in STATUSES:
            raise RecordError(f"{where}: status {status!r} is not one of {', '.join(STATUSES)}")


@dataclass(frozen=True)
class InitSource(_Record):
    """Where a fine-tuned model's weights start: ``random``, or a pretraining checkpoint ``epoch_NN/`` and the
    facts of its pretraining run (None where that run did not record them)."""

    source: str
    checkpoint: str | None = None
    pretrain_run: str | None = None
    pretrain_epoch: int | None = None
    task: str | None = None
    arch: str | None = None
    width: float | None = None
    frame_size: int | None = None
    frac: float | None = None

    def check(self, where: str) -> None:
        """The source is random or checkpoint; a checkpoint init names its checkpoint."""
        if self.source not in (RANDOM, CHECKPOINT):
            raise RecordError(f"{where}: source {self.source!r} is not {RANDOM} or {CHECKPOINT}")
        if self.source == CHECKPOINT and self.checkpoint is None and self.pretrain_run is None:
            raise RecordError(f"{where}: a checkpoint init names neither checkpoint nor pretrain_run")


@dataclass(frozen=True)
class PretrainRun(_Record):
    """``runs/pretrain/<name>/run.json``: one pretraining run (checkpoints ``epoch_NN/``, ``history.csv``).

    ``attempts`` has one entry per start (launcher, job id, restart count, world size, hosts, resume point and,
    when it ended by a stop signal, ``preempted_at``); ``horovod`` says how the learning rate was scaled.
    """

    kind: ClassVar[str] = "pretrain"
    status: str
    seed: int
    task: str
    arch: str
    frame_size: int
    epochs: int
    config: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    started_at: str | None = None
    width: float | None = None
    frac: float | None = None
    n_patients: int | None = None
    epochs_done: int = 0
    world_size: int = 1
    hosts: tuple[str, ...] = ()
    device: str | None = None
    store: dict[str, Any] | None = None
    horovod: dict[str, Any] = field(default_factory=dict)
    epoch_times_s: tuple[float, ...] = ()
    frames_per_s: float | None = None
    sampler: dict[str, Any] | None = None
    attempts: tuple[dict[str, Any], ...] = ()
    weights_sha256: str | None = None
    weights_identical_across_ranks: bool | None = None
    finished_at: str | None = None
    wall_time_s: float | None = None
    error: str | None = None
    failed_rank: int | None = None
    failed_host: str | None = None


@dataclass(frozen=True)
class Scores(_Record):
    """Macro F1 and per-class F1 of one split (the study's prediction rule, ``ecg_hpc.train.metrics``)."""

    macro_f1: float
    f1: dict[str, float]

    def check(self, where: str) -> None:
        """Every class of the challenge has a finite F1."""
        for c in CLASSES:
            value = self.f1.get(c)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise RecordError(f"{where}: f1.{c} is {value!r}, not a finite number")


@dataclass(frozen=True)
class FinetuneRun(_Record):
    """``runs/finetune/<scenario>/seed_S/run.json``: one fine-tuning run (``history.csv`` of validation scores,
    ``train|val|test_predictions.csv``, the best weights). A done run has ``test`` scores and ``epochs_run``."""

    kind: ClassVar[str] = "finetune"
    status: str
    seed: int
    arch: str
    init: InitSource
    config: dict[str, Any] = field(default_factory=dict)
    scenario: str | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    started_at: str | None = None
    width: float | None = None
    label_frac: float = 1.0
    split: dict[str, Any] | None = None
    epochs_run: int | None = None
    best_epoch: int | None = None
    best_val: Scores | None = None
    test: Scores | None = None
    threads: dict[str, Any] | None = None
    jit_compile: bool | None = None
    finished_at: str | None = None
    wall_time_s: float | None = None
    error: str | None = None
    traceback: str | None = None
    failed_rank: int | None = None
    failed_host: str | None = None

    def check(self, where: str) -> None:
        """A known status; a done run has its test scores and epochs run."""
        super().check(where)
        if self.status == "done" and (self.test is None or self.epochs_run is None):
            raise RecordError(f"{where}: done but no 'test' scores or 'epochs_run'")


RunRecord = PretrainRun | FinetuneRun
_KINDS: dict[str, type[_Record]] = {PretrainRun.kind: PretrainRun, FinetuneRun.kind: FinetuneRun}


def record_from_json(text: str, where: str = RUN_JSON) -> RunRecord:
    """The record a run.json text holds, by its ``kind``; ``RecordError`` when it is not one."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(f"{where}: not valid JSON ({exc})") from None
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind not in _KINDS:
        raise RecordError(f"{where}: kind is {kind!r}, not {' or '.join(_KINDS)}")
    return _KINDS[kind].from_dict(data, where)


def read_record(job_dir: str | os.PathLike[str]) -> RunRecord | None:
    """The record in ``job_dir``'s run.json, None when there is none yet; ``RecordError`` when it is broken."""
    path = Path(job_dir) / RUN_JSON
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordError(f"{path}: unreadable ({exc})") from None
    return record_from_json(text, str(path))


def write_record(job_dir: str | os.PathLike[str], record: RunRecord) -> Path:
    """Write ``record`` as ``job_dir``'s run.json atomically, after checking it as a reader would."""
    where = str(Path(job_dir) / RUN_JSON)
    text = record.to_json()
    record_from_json(text, where)
    return atomic_write_text(Path(job_dir) / RUN_JSON, text)


def read_pretrain_run(job_dir: str | os.PathLike[str]) -> PretrainRun | None:
    """The pretraining record of ``job_dir``, None when it has no run.json; ``RecordError`` when it holds
    something else or is broken."""
    record = read_record(job_dir)
    if record is not None and not isinstance(record, PretrainRun):
        raise RecordError(f"{Path(job_dir) / RUN_JSON}: kind {record.kind!r}, not a pretraining run")
    return record


def is_done(job_dir: str | os.PathLike[str]) -> bool:
    """True when ``job_dir`` holds a valid run.json whose status is ``done`` (such a run is never redone)."""
    try:
        record = read_record(job_dir)
    except RecordError:
        return False
    return record is not None and record.status == "done"


def record_failure(job_dir: str | os.PathLike[str], rank: int, host: str, error: str,
                   current: RunRecord | None = None, bare: RunRecord | None = None) -> RunRecord | None:
    """Mark the run in ``job_dir`` failed by worker ``rank`` on ``host`` and return the record as it now stands.

    Starts from ``current`` (rank 0's record in memory), else the run.json there, else ``bare`` (a run that failed
    before it recorded its start); None when there is none of them. Left as they are: a run.json naming a failed
    worker already (the first worker to fail is the cause, the others fail because of it), a done one (its
    results stay valid) and a broken one (returned as None).
    """
    try:
        on_disk = read_record(job_dir)
    except RecordError:
        return None
    if on_disk is not None and (on_disk.status == "done" or
                                (on_disk.status == "failed" and on_disk.failed_rank is not None)):
        return on_disk
    base = current or on_disk or bare
    if base is None:
        return None
    record = dataclasses.replace(base, status="failed", error=error, failed_rank=rank, failed_host=host,
                                 finished_at=utc_now())
    write_record(job_dir, record)
    return record


def mark_failed(job_dir: str | os.PathLike[str], error: str) -> None:
    """Set the record of ``job_dir`` to failed with ``error`` (for a run its launcher will not resume); a missing,
    unreadable or done one is left as it is (a done run's results stay valid)."""
    try:
        record = read_record(job_dir)
    except RecordError:
        return
    if record is not None and record.status != "done":
        write_record(job_dir, dataclasses.replace(record, status="failed", error=error, finished_at=utc_now()))
