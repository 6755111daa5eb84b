"""One progress line for a sweep being waited on: tasks done / running / failed / waiting, and the running
tasks' epochs (the last ``Epoch k/n`` line Keras wrote to their job logs)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Mapping, Sequence

from ecg_hpc.hpc.run_state import DIED
from ecg_hpc.hpc.sweep import Task, task_status

_EPOCH = re.compile(r"^Epoch (\d+)/(\d+)\s*$", re.M)
_TAIL_BYTES = 65536


def latest_epoch(log: Path) -> str | None:
    """``k/n`` of the last ``Epoch k/n`` line in the end of ``log`` (None when there is none yet)."""
    try:
        with log.open("rb") as fh:
            fh.seek(max(0, log.stat().st_size - _TAIL_BYTES))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    found = _EPOCH.findall(text)
    return f"{found[-1][0]}/{found[-1][1]}" if found else None


def progress_line(tasks: Sequence[Task], logs: Mapping[int, Path]) -> str:
    """``sweep: 3/9 done, 1 running (task 3 random seed 2: epoch 4/10), 0 failed, 5 waiting``.

    ``logs`` maps a task index to the log of the job running it (a local sweep's tasks share one log).
    """
    statuses = {t.index: task_status(t) for t in tasks}
    counts = Counter(statuses.values())
    running = []
    for task in tasks:
        if statuses[task.index] == "running":
            epoch = latest_epoch(logs[task.index]) if task.index in logs else None
            running.append(f"task {task.index} {task.scenario} seed {task.seed}" + (f": epoch {epoch}" if epoch
                                                                                      else ": starting"))
    shown = f" ({'; '.join(running)})" if running else ""
    return (f"sweep: {counts['done']}/{len(tasks)} done, {counts['running']} running{shown}, "
            f"{counts['failed']} failed{f', {counts[DIED]} died' if counts[DIED] else ''}, {counts['missing']} waiting")
