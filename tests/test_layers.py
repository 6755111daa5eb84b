"""The floors of the code (docs/architecture.md): no module imports from a higher floor, and the packages that share
a floor do not import each other. Imports are read from the source (ast), TensorFlow is never loaded."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# floor of each part; ``ecg_hpc`` alone stands for the package's top-level modules (errors, records, atomic, ...)
FLOORS = {"ecg_hpc": 0, "ecg_hpc.data": 1, "ecg_hpc.models": 1, "ecg_hpc.tasks": 2, "ecg_hpc.train": 3,
          "ecg_hpc.hpc": 4, "launch": 5, "analysis": 5}


def part_of(module: str) -> str | None:
    """The part (key of FLOORS) a dotted module name belongs to, None outside the project."""
    parts = module.split(".")
    if parts[0] in ("launch", "analysis"):
        return parts[0]
    if parts[0] != "ecg_hpc":
        return None
    return f"ecg_hpc.{parts[1]}" if len(parts) > 1 and f"ecg_hpc.{parts[1]}" in FLOORS else "ecg_hpc"


def module_name(path: Path, root: Path) -> str:
    """The dotted name of a source file below ``root`` (``launch/x.py`` -> ``launch.x``)."""
    return ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import in ``path``, at any depth (lazy imports inside functions count)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def violations(files: list[Path], root: Path = ROOT) -> list[str]:
    """Every import of a higher floor, or of a sibling package on the same floor, as ``file:line: a -> b``."""
    bad = []
    for path in files:
        here = part_of(module_name(path, root))
        for line, target in imports_of(path):
            there = part_of(target)
            if here is None or there is None or there == here:
                continue
            if FLOORS[there] > FLOORS[here] or (FLOORS[there] == FLOORS[here] and here != "ecg_hpc"):
                bad.append(f"{path.relative_to(root)}:{line}: {here} (floor {FLOORS[here]}) imports {target} "
                           f"(floor {FLOORS[there]})")
    return bad


def project_files() -> list[Path]:
    return sorted(p for folder in ("ecg_hpc", "launch", "analysis") for p in (ROOT / folder).rglob("*.py"))


def test_no_module_imports_a_higher_floor() -> None:
    assert violations(project_files()) == []


@pytest.mark.parametrize("source, target", [("ecg_hpc/train/x.py", "ecg_hpc.hpc.jobenv"),
                                            ("ecg_hpc/data/x.py", "ecg_hpc.train.splits"),
                                            ("ecg_hpc/data/x.py", "ecg_hpc.models"),
                                            ("ecg_hpc/records.py", "ecg_hpc.data.store")])
def test_the_walk_catches_an_upward_import(tmp_path: Path, source: str, target: str) -> None:
    path = tmp_path / source
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"def f():\n    import {target}\n", encoding="utf-8")
    assert len(violations([path], tmp_path)) == 1
    path.write_text("import ecg_hpc.errors\nfrom ecg_hpc import atomic\n", encoding="utf-8")
    assert violations([path], tmp_path) == []


def test_readme_layout_table_matches_the_tree() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("| path | holds |", 1)[1].split("\n\n", 1)[0]
    listed = re.findall(r"^\| `([^`]+)` \|", table, re.MULTILINE)
    for path in listed:
        assert list(ROOT.glob(path.rstrip("/"))), f"README lists {path}, which is not in the tree"
    folders = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")
               and any(p.rglob("*.*"))} - {"__pycache__", "runs", "demo"}
    packages = {f"ecg_hpc/{p.name}/" for p in (ROOT / "ecg_hpc").iterdir() if (p / "__init__.py").is_file()}
    named = {p.split("/")[0] for p in listed}
    assert folders - named == set(), "top-level folders missing from the README's layout table"
    assert packages - set(listed) == set(), "packages missing from the README's layout table"


def test_architecture_page_names_every_floor() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    for part, floor in FLOORS.items():
        folder = "ecg_hpc/*.py" if part == "ecg_hpc" else part.replace(".", "/") + "/"
        assert re.search(rf"^\| {floor} \| [^|]*`{re.escape(folder)}`", page, re.MULTILINE), (part, floor)
