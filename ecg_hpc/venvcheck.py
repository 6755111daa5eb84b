"""Entry points run by a Python without the project's packages say, in one line, how to get the right one.

Uses only the standard library and imports nothing it checks (``importlib.util.find_spec``), so a command can call
it before its own imports and before TensorFlow would take seconds to load.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def missing_packages(names: tuple[str, ...]) -> list[str]:
    """The distributions among ``names`` (import names) that this interpreter cannot import."""
    return [name for name in names if importlib.util.find_spec(name) is None]


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when below it (``""`` for the directory itself), else absolute."""
    try:
        relative = path.relative_to(Path.cwd())
    except ValueError:
        return str(path)
    return "" if relative == Path() else str(relative)


def activation_hint(missing: list[str]) -> str:
    """One line: which packages this Python lacks and the command that activates (or creates) the project's venv."""
    venv = Path(os.environ.get("ECG_HPC_VENV") or REPO / ".venv")
    venv = venv if venv.is_absolute() else REPO / venv
    activate = f"source {_shown(venv / 'bin' / 'activate')}"
    how = activate if (venv / "bin" / "python").exists() else f"make -C {_shown(REPO) or '.'} setup && {activate}"
    return (f"error: this Python ({sys.executable}) lacks the project's packages ({', '.join(missing)}): "
            f"run `{how}` and try again")


def exit_unless_installed(names: tuple[str, ...]) -> None:
    """Return if every package in ``names`` is importable; else print ``activation_hint`` and exit with status 2."""
    missing = missing_packages(names)
    if missing:
        print(activation_hint(missing), file=sys.stderr, flush=True)
        raise SystemExit(2)
