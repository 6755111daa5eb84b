"""A sweep manifest: ``<sweep_dir>/manifest.jsonl``, one fine-tuning task per line, read by index.

Each line is a JSON object: ``index`` (0, 1, ... in order: the SLURM array index), ``job_dir``
(``<scenario>/seed_<S>``, relative to the manifest's folder, so a copied runs tree still matches) and
``config``, the task's ``FinetuneConfig`` without its job dir (data and checkpoint paths absolute). Re-planning
keeps every task at its index and appends new ones, so an array that is running keeps its meaning.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from ecg_hpc.atomic import atomic_write_text
from ecg_hpc.errors import ConfigError
from ecg_hpc.train.finetune import FinetuneConfig

MANIFEST = "manifest.jsonl"


@dataclass(frozen=True)
class Task:
    """One line of the manifest: a fine-tuning run of one scenario with one seed (``config.job_dir`` absolute)."""

    index: int
    config: FinetuneConfig

    @property
    def job_dir(self) -> str:
        """The task's run directory (absolute)."""
        return self.config.job_dir

    @property
    def scenario(self) -> str | None:
        """The sweep's name for the task's init."""
        return self.config.scenario

    @property
    def label_frac(self) -> float:
        """The fraction of the training records the task fine-tunes on."""
        return self.config.label_frac

    @property
    def seed(self) -> int:
        """The task's seed."""
        return self.config.seed

    def to_json(self, base: Path) -> str:
        """The manifest line (without newline), ``job_dir`` relative to ``base`` when inside it."""
        job_dir = Path(self.job_dir)
        shown = job_dir.relative_to(base).as_posix() if job_dir.is_relative_to(base) else str(job_dir)
        config = {k: v for k, v in dataclasses.asdict(self.config).items() if k != "job_dir"}
        return json.dumps({"index": self.index, "job_dir": shown, "config": config})

    @classmethod
    def from_json(cls, line: str, base: Path) -> "Task":
        """The task of a manifest line whose relative ``job_dir`` is below ``base``; ValueError when malformed."""
        obj: Any = json.loads(line)
        if not isinstance(obj, dict) or set(obj) != {"index", "job_dir", "config"}:
            raise ValueError("expected an object with index, job_dir and config")
        if not isinstance(obj["index"], int) or not isinstance(obj["config"], dict):
            raise ValueError("index must be an integer and config an object")
        config = FinetuneConfig(**{**obj["config"], "job_dir": str(base / obj["job_dir"])})
        return cls(obj["index"], config)


def iter_manifest(path: str | Path) -> Iterator[tuple[int, Task | str]]:
    """``(line number, task)`` for each line of the manifest, or ``(line number, problem)`` where a line is not a
    task; ConfigError when the file cannot be read."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ConfigError(f"--manifest {path}: no such file (plan the sweep first)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--manifest {path}: unreadable ({exc})") from None
    base = path.parent.resolve()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield number, Task.from_json(line, base)
        except (ValueError, TypeError) as exc:
            yield number, f"not a manifest task ({exc})"


def read_manifest(path: str | Path) -> list[Task]:
    """The tasks of a manifest file, checked: one task per line, indices 0..n-1 in order."""
    tasks: list[Task] = []
    for number, task in iter_manifest(path):
        if isinstance(task, str):
            raise ConfigError(f"{path}:{number}: {task}")
        if task.index != len(tasks):
            raise ConfigError(f"{path}:{number}: index {task.index}, expected {len(tasks)}")
        tasks.append(task)
    return tasks


def merge_tasks(existing: Sequence[Task], planned: Iterable[Task]) -> list[Task]:
    """``existing`` unchanged, then the planned tasks whose job dir is new, re-indexed after them.

    A planned task for a job dir already in ``existing`` must have the same config (ConfigError otherwise).
    """
    merged = list(existing)
    by_dir = {t.job_dir: t for t in existing}
    for task in planned:
        old = by_dir.get(task.job_dir)
        if old is None:
            new = replace(task, index=len(merged))
            merged.append(new)
            by_dir[new.job_dir] = new
        elif old.config != task.config:
            changed = {f.name: (getattr(old.config, f.name), getattr(task.config, f.name))
                       for f in dataclasses.fields(FinetuneConfig)
                       if getattr(old.config, f.name) != getattr(task.config, f.name)}
            shown = ", ".join(f"{name} {was!r} -> {now!r}" for name, (was, now) in changed.items())
            raise ConfigError(f"task {old.index} ({old.job_dir}) is already planned with other options ({shown}); "
                              "use another --sweep-dir, or delete the manifest and those run directories")
    return merged


def write_manifest(path: str | Path, tasks: Sequence[Task]) -> Path:
    """Write the manifest atomically."""
    base = Path(path).parent.resolve()
    return atomic_write_text(path, "".join(t.to_json(base) + "\n" for t in tasks))
