"""Private APIs of pinned third-party packages, all in one place, each behind a check of the version it was
written against: a newer submitit or wfdb fails with one line naming the function and the pin to re-check
instead of a deep AttributeError. Imports happen on first use, so importing this module costs nothing.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

from ecg_hpc.errors import EcgHpcError

# The versions whose private functions are used below (pyproject.toml pins the same).
PINNED = {"submitit": "1.5.4", "wfdb": "4.3.1"}


class CompatError(EcgHpcError, RuntimeError):
    """An installed package is not the version whose private API this project relies on."""


def check_version(package: str, use: str) -> None:
    """CompatError naming ``use`` when ``package`` is not installed at its pinned version."""
    try:
        installed = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        installed = "not installed"
    if installed != PINNED[package]:
        raise CompatError(f"{use} relies on a private API of {package} {PINNED[package]}, but {package} is "
                          f"{installed}: check ecg_hpc/compat.py against it, then update PINNED and pyproject.toml")


def parse_slurm_node_list(nodelist: str) -> list[str]:
    """SLURM's compressed host list expanded (``gpu[01-02],cpu7`` -> three names), by submitit's parser."""
    check_version("submitit", "SLURM host list expansion")
    from submitit.slurm.slurm import _parse_node_list

    return list(_parse_node_list(nodelist))


def submission_text(executor: Any) -> tuple[str, str]:
    """The batch script a submitit SLURM executor would submit and the command each worker runs; for a local
    executor the script is empty. ``executor`` is a ``submitit.AutoExecutor``."""
    check_version("submitit", "--dry-run (the batch script submitit would write)")
    inner = executor._executor  # the concrete SlurmExecutor or LocalExecutor behind the AutoExecutor
    command = inner._submitit_command_str
    script = inner._make_submission_file_text(command, "dry-run") if executor.cluster == "slurm" else ""
    return script, command


def executor_parameters(executor: Any) -> dict[str, Any]:
    """The parameters a ``submitit.AutoExecutor`` passes to its concrete executor (e.g. ``tasks_per_node``)."""
    check_version("submitit", "--dry-run (the executor's parameters)")
    return dict(executor._executor.parameters)


def parse_wfdb_record_line(line: str) -> dict[str, Any]:
    """The fields of a WFDB header's record line by wfdb's own parser (the challenge's headers defeat
    ``wfdb.rdrecord``, its line parsers read them); ValueError when the line is malformed."""
    check_version("wfdb", "the PhysioNet 2017 header reader")
    from wfdb.io import _header

    try:
        return dict(_header._parse_record_line(line))
    except _header.HeaderSyntaxError as exc:
        raise ValueError(str(exc)) from exc


def parse_wfdb_signal_lines(lines: list[str]) -> dict[str, Any]:
    """The per-signal fields of a WFDB header's signal lines by wfdb's parser; ValueError when malformed."""
    check_version("wfdb", "the PhysioNet 2017 header reader")
    from wfdb.io import _header

    try:
        return dict(_header._parse_signal_lines(lines))
    except _header.HeaderSyntaxError as exc:
        raise ValueError(str(exc)) from exc
