"""The project stands alone: its real-data tests pass from a clone with nothing beside it; nothing reads ../shared."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REAL_DATA, ROOT

# Something that reaches out of the checkout to a sibling folder: "../shared", or a path built from the repository's
# parent (ROOT.parent / "shared", REPO.parent / ...).
OUTSIDE = re.compile(r"\.\./shared|\.parent\s*/\s*[\"']shared[\"']")


def _tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / name for name in out.split("\0") if name]


def _real_data_tests() -> list[str]:
    """The test modules that read the records in tests/data (through the ``real_data`` fixture)."""
    return sorted(p.name for p in (ROOT / "tests").glob("test_*.py")
                  if p.name != Path(__file__).name and "real_data" in p.read_text(encoding="utf-8"))


def test_real_records_and_their_licence_are_in_the_repository() -> None:
    readme = (REAL_DATA / "README.md").read_text(encoding="utf-8")
    assert "ODC-BY 1.0" in readme and "Clifford GD" in readme and "Moody GB" in readme
    records = (REAL_DATA / "physionet2017-validation" / "RECORDS").read_text().split()
    assert len(records) == 300
    assert all((REAL_DATA / "physionet2017-validation" / f"{r}.mat").is_file() for r in records)
    assert {p.name for p in (REAL_DATA / "mitdb-100").iterdir()} >= {"100.hea", "100.dat", "100.atr"}


def test_no_tracked_file_reads_outside_the_checkout() -> None:
    offenders = []
    for path in _tracked_files():
        if path.suffix in {".py", ".sh", ".md", ".toml", ".def", ""} and path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            offenders += [f"{path.relative_to(ROOT)}:{n}" for n, line in enumerate(text.splitlines(), 1)
                          if OUTSIDE.search(line) and path != Path(__file__)]
    assert offenders == []


@pytest.mark.slow
def test_real_data_tests_pass_from_a_clone_with_nothing_beside_it(tmp_path: Path) -> None:
    """``git clone`` the checkout (committed files only) into an empty folder and run the real-data tests there."""
    modules = _real_data_tests()
    assert "test_physionet2017.py" in modules and "test_prepare.py" in modules
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(clone)], check=True)
    assert not (tmp_path / "shared").exists()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PYTEST"))}
    env["PYTHONPATH"] = str(clone)  # the clone's own packages, before any installed copy
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slurm",
                           *(f"tests/{m}" for m in modules)], cwd=clone, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert re.search(r"\d+ passed", proc.stdout) and "error" not in proc.stdout.splitlines()[-1]
