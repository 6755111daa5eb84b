"""Pretraining tasks, one module each: ``beat`` (5 classes), ``rhythm`` (6), ``hr`` (4), ``future``."""

from __future__ import annotations

import importlib

from ecg_hpc.errors import ConfigError
from ecg_hpc.names import TASKS
from ecg_hpc.tasks.base import Task


def get_task(name: str) -> Task:
    """The task called ``name``; ConfigError listing the known tasks when unknown."""
    if name not in TASKS:
        raise ConfigError(f"--task: unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return importlib.import_module(f"ecg_hpc.tasks.{name}").TASK


__all__ = ["TASKS", "Task", "get_task"]
