"""Static checks of the Apptainer recipe and of the install script (Apptainer itself cannot run here)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEF = ROOT / "container" / "ecg_hpc.def"


def _sections(text: str) -> dict[str, str]:
    parts = re.split(r"^%(\w+)\s*$", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def test_recipe_has_every_section_and_uses_the_install_script() -> None:
    text = DEF.read_text()
    header = text.split("%", 1)[0]
    assert re.search(r"^Bootstrap:\s*docker\s*$", header, re.M)
    assert re.search(r"^From:\s*tensorflow/tensorflow:2\.15\.0-gpu\s*$", header, re.M)
    sections = _sections(text)
    for name in ("labels", "files", "post", "environment", "runscript", "test"):
        assert sections.get(name, "").strip(), f"section %{name} missing or empty"
    assert re.search(r"container/install\.sh\s+--gpu", sections["post"])
    assert "python3" in sections["runscript"] and '"$@"' in sections["runscript"]
    assert "import ecg_hpc" in sections["test"] and "horovodrun --check-build" in sections["test"]
    assert re.search(r"version\s+\S+", sections["labels"]) and re.search(r"source\s+\S+", sections["labels"])
    copied = {line.split()[0] for line in sections["files"].strip().splitlines()}
    assert {"pyproject.toml", "ecg_hpc", "container"} <= copied
    for path in copied:
        assert (ROOT / path).exists(), f"%files copies {path}, which is not in the repository"


def test_base_image_tensorflow_matches_the_pin() -> None:
    base = re.search(r"^From:\s*tensorflow/tensorflow:(\d+)\.(\d+)\.(\d+)-gpu", DEF.read_text(), re.M)
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["cpu"]
    pin = re.fullmatch(r"tensorflow-cpu==(\d+)\.(\d+)\.(\d+)", pins[0])
    assert base and pin
    # Same release series (2.15): the image reuses its own TF, the CPU environment pins the 2.15 patch release.
    assert base.group(1, 2) == pin.group(1, 2) == ("2", "15")


def test_build_script_fails_clearly_without_apptainer() -> None:
    env = dict(os.environ, PATH="/usr/bin:/bin")
    proc = subprocess.run(["bash", str(ROOT / "container" / "build.sh")], capture_output=True, text=True, env=env)
    assert proc.returncode == 1
    assert "apptainer is not installed" in proc.stderr


def test_install_script_is_a_no_op_when_nothing_changed() -> None:
    """The environment running the tests was made by install.sh: a second run must do nothing, in seconds."""
    if not (Path(sys.prefix) / ".ecg-hpc-install.stamp").is_file():
        pytest.skip(f"{sys.prefix} was not made by container/install.sh")
    env = dict(os.environ, ECG_HPC_VENV=sys.prefix)
    start = time.monotonic()
    proc = subprocess.run(["bash", str(ROOT / "container" / "install.sh")], capture_output=True, text=True,
                          env=env, timeout=300)
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "up to date" in proc.stdout
    assert elapsed < 60, f"no-op install took {elapsed:.0f}s"
