"""Where the launcher finds the store (--store, $ECG_HPC_STORE, ecg-hpc.toml), what it says without one, and the one
line a Python without the project's packages gets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ecg_hpc.errors import ConfigError
from ecg_hpc.project_config import read_config, resolve_store, update_config

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = Path("/usr/bin/python3")


def test_store_comes_from_the_option_then_the_environment_then_the_settings_file(tmp_path: Path,
                                                                                  monkeypatch) -> None:
    config = tmp_path / "ecg-hpc.toml"
    monkeypatch.delenv("ECG_HPC_STORE", raising=False)
    store, message = resolve_store(None, config)
    assert store is None
    assert message == (f"no shard store given: pass --store STORE, set $ECG_HPC_STORE, or run `make demo` (it names "
                       f"its store in {config}); make a store with python -m ecg_hpc.data convert-icentia --src "
                       "ICENTIA11K_DIR --dst STORE")
    update_config({"store": tmp_path / 'demo "x"' / "store"}, config)
    assert read_config(config) == {"store": str(tmp_path / 'demo "x"' / "store")}
    assert resolve_store(None, config) == (tmp_path / 'demo "x"' / "store", str(config))
    monkeypatch.setenv("ECG_HPC_STORE", str(tmp_path / "env"))
    assert resolve_store(None, config) == (tmp_path / "env", "$ECG_HPC_STORE")
    assert resolve_store(str(tmp_path / "opt"), config) == (tmp_path / "opt", "--store")
    config.write_text("store = [unclosed\n")
    with pytest.raises(ConfigError, match=f"{config}: not a valid settings file"):
        read_config(config)


def _launch(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ECG_HPC_STORE"}
    env.update(ECG_HPC_CONFIG=str(tmp_path / "none.toml"), TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, str(ROOT / "launch" / "pretrain.py"), "--local", *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)


def test_without_a_store_one_line_and_a_dry_run_still_shows_the_job(tmp_path: Path) -> None:
    proc = _launch(tmp_path, "--frac", "0.1")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [f"error: no shard store given: pass --store STORE, set $ECG_HPC_STORE, or "
                                        f"run `make demo` (it names its store in {tmp_path / 'none.toml'}); make a "
                                        "store with python -m ecg_hpc.data convert-icentia --src ICENTIA11K_DIR "
                                        "--dst STORE"]
    dry = _launch(tmp_path, "--frac", "0.1", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stderr.splitlines()[0].startswith("note: no shard store given")
    command = next(line for line in dry.stdout.splitlines() if "python -m ecg_hpc.train.pretrain" in line)
    assert "--store STORE" in command and "--frac 0.1" in command and "--job-dir" in command
    assert not [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]  # nothing written


def _lacks_packages(python: Path) -> bool:
    return python.exists() and subprocess.run([str(python), "-c", "import numpy"], capture_output=True).returncode != 0


@pytest.mark.skipif(not _lacks_packages(SYSTEM_PYTHON), reason="needs a system python3 without the packages")
@pytest.mark.parametrize("command", [["launch/pretrain.py", "--nodes", "2", "--frac", "0.1"],
                                     ["launch/finetune.py", "--data", "x.npz"], ["-m", "analysis.report"]])
def test_a_python_without_the_packages_gets_one_line(command: list[str]) -> None:
    proc = subprocess.run([str(SYSTEM_PYTHON), *command], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"error: this Python ({SYSTEM_PYTHON}) lacks the project's packages (")
    assert line.endswith("run `source .venv/bin/activate` and try again") or "make -C" in line
