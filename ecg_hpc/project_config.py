"""The project's own settings file, ``ecg-hpc.toml`` at the repository root (not tracked; ``make demo`` writes it;
``$ECG_HPC_CONFIG`` names another, e.g. for tests).

It names what a later command would otherwise have to be told, so the commands typed after the demo work as
printed: ``store`` (the shard store pretraining reads) and ``runs`` (where the demo's run directories are). Lookups
go option, then environment variable, then this file; ``resolve_store`` says which one answered.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Mapping

from ecg_hpc.errors import ConfigError
from ecg_hpc.rundir import atomic_write_text

REPO = Path(__file__).resolve().parent.parent
CONFIG_NAME = "ecg-hpc.toml"
CONFIG_ENV = "ECG_HPC_CONFIG"
STORE_ENV = "ECG_HPC_STORE"
CONVERT_HINT = "python -m ecg_hpc.data convert-icentia --src ICENTIA11K_DIR --dst STORE"


def config_path() -> Path:
    """``$ECG_HPC_CONFIG``, else ``ecg-hpc.toml`` at the repository root."""
    return Path(os.environ.get(CONFIG_ENV) or REPO / CONFIG_NAME)


def read_config(path: Path | None = None) -> dict[str, str]:
    """The settings in ``path`` (default ``config_path()``; {} when it does not exist); ConfigError naming the file
    when it is malformed."""
    path = path or config_path()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a valid settings file ({exc}); fix or delete it") from None
    return {str(k): str(v) for k, v in data.items()}


def update_config(settings: Mapping[str, str | Path], path: Path | None = None) -> Path:
    """Merge ``settings`` into ``path`` (default ``config_path()``; written atomically, paths as TOML strings)."""
    path = path or config_path()
    merged = {**read_config(path), **{k: str(v) for k, v in settings.items()}}
    lines = ["# Written by the ecg-hpc demo; read by launch/pretrain.py (store) and analysis.report (runs).\n"]
    lines += [f"{key} = {_toml_string(value)}\n" for key, value in sorted(merged.items())]
    return atomic_write_text(path, "".join(lines))


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def resolve_store(given: str | None, path: Path | None = None) -> tuple[Path | None, str]:
    """The store to use and where it came from: ``--store``, else ``$ECG_HPC_STORE``, else ``store`` in ``path``.

    Returns ``(None, message)`` when none of the three names one; the message names all three and the convert
    command.
    """
    if given:
        return Path(given).resolve(), "--store"
    if os.environ.get(STORE_ENV):
        return Path(os.environ[STORE_ENV]).resolve(), f"${STORE_ENV}"
    path = path or config_path()
    configured = read_config(path).get("store")
    if configured:
        return Path(configured), str(path)
    return None, (f"no shard store given: pass --store STORE, set ${STORE_ENV}, or run `make demo` (it names its "
                  f"store in {path}); make a store with {CONVERT_HINT}")
