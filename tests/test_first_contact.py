"""A new user's first contact, from a fresh clone, against the project's test SLURM: the tiny demo end to end (its
runs, report and summary; a second run finds everything done), then the three commands of the design card typed
literally, with a plain PATH (no venv activated) and then as the README says (venv activated). Each runs, or prints
one line naming the fix; ``--nodes 2`` on the 1-node cluster is refused before anything is submitted; the sbatch
line ``sweep plan`` prints runs as printed. The demo runs once, for all of these (it is the suite's longest step)."""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import time
from pathlib import Path

import pytest

from ecg_hpc.hpc.manifest import read_manifest
from ecg_hpc.records import read_record
from ecg_hpc.train.pretrain_config import job_dir_name
from tests.conftest import ROOT
from tests.test_cluster_slurm import _wait

pytestmark = [pytest.mark.e2e, pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(3600)]

VENV = Path(os.environ.get("ECG_HPC_VENV") or ROOT / ".venv").absolute()
# TensorFlow's C++ start-up notes (it is imported by the launcher until that no longer needs it); not ours.
TF_NOTE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IW] tensorflow/|To enable the following instructions)")


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not TF_NOTE.match(line)]


@pytest.fixture(scope="module")
def clone(slurm_cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clone of this checkout with the project's venv in place (as `make setup` leaves it), after the tiny demo."""
    if not (VENV / "bin" / "python").exists():
        pytest.skip(f"no project venv at {VENV} (make setup)")
    clone = tmp_path_factory.mktemp("first_contact") / "ecg-hpc"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    (clone / ".venv").symlink_to(VENV)
    demo = subprocess.run([str(clone / ".venv" / "bin" / "python"), "launch/demo.py", "--scale", "tiny"],
                          cwd=clone, capture_output=True, text=True, timeout=2400,
                          env={k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "ECG_HPC"))})
    assert demo.returncode == 0, demo.stdout[-4000:] + demo.stderr[-4000:]
    assert "jobs run on the SLURM cluster" in demo.stdout
    assert (clone / "ecg-hpc.toml").is_file()
    return clone


def test_the_tiny_demo_ran_end_to_end_through_slurm(clone: Path) -> None:
    work = clone / "demo"
    tiny = runpy.run_path(str(clone / "launch" / "demo.py"))["SCALES"]["tiny"]
    # Two pretraining runs with two Horovod workers each, finished, named by the trainer's one rule.
    for frac in (0.5, 1.0):
        run_dir = work / "runs" / "pretrain" / job_dir_name("beat", "resnet18", tiny.frame_size, frac, seed=0)
        info = read_record(run_dir)
        assert info.status == "done" and info.world_size == 2 and info.frac == frac
        assert (run_dir / "epoch_01" / "feature_extractor").is_dir()
    # random + 2 checkpoints, on half of the labelled records, x 2 seeds, all done with their predictions.
    manifest = read_manifest(work / "runs" / "finetune" / "manifest.jsonl")
    assert len(manifest) == 6 and len({(t.scenario, t.seed) for t in manifest}) == 6
    assert {t.label_frac for t in manifest} == {0.5}
    for task in manifest:
        assert read_record(task.job_dir).status == "done"
        assert (Path(task.job_dir) / "test_predictions.csv").is_file()
    report = (work / "reports" / "report.md").read_text()
    assert "Table 1" in report and "beat, 50 % of patients, epoch 1" in report
    summary = (work / "reports" / "summary.md").read_text()
    assert "random init" in summary and "Pretrained vs random init" in summary and "Generated" not in summary
    for fig in ("fig_val_f1.png", "fig_fraction.png", "fig_per_class.png", "fig_confusion.pdf"):
        assert (work / "reports" / fig).stat().st_size > 1000
    # Running it again finds every stage done and runs no job.
    again = subprocess.run([str(clone / ".venv" / "bin" / "python"), "launch/demo.py", "--scale", "tiny"],
                           cwd=clone, capture_output=True, text=True, timeout=600,
                           env={k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "ECG_HPC"))})
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    assert "nothing to run: every planned task is done" in again.stdout and "submitted" not in again.stdout


def _typed(clone: Path, command: str, tmp_path: Path, activated: bool) -> subprocess.CompletedProcess:
    """``command`` typed in a login shell with a plain PATH whose ``python`` lacks the project's packages (the
    system's), after ``source .venv/bin/activate`` when ``activated``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if not (bin_dir / "python").exists():
        (bin_dir / "python").symlink_to("/usr/bin/python3")
    env = {"PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"),
           "LANG": "C.UTF-8"}
    script = ("source .venv/bin/activate && " if activated else "") + command
    return subprocess.run(["bash", "-c", script], cwd=clone, env=env, capture_output=True, text=True, timeout=1200)


def _jobs() -> set[str]:
    return set(subprocess.run(["squeue", "-h", "-o", "%A"], capture_output=True, text=True).stdout.split())


def test_the_three_commands_typed_literally(clone: Path, tmp_path: Path) -> None:
    # 1. Pretraining on 2 nodes: a plain Python says how to activate; the venv's is refused before submitting.
    plain = _typed(clone, "python launch/pretrain.py --nodes 2 --frac 0.1", tmp_path, activated=False)
    assert plain.returncode == 2 and plain.stdout == ""
    assert _lines(plain.stderr) == [line for line in plain.stderr.splitlines() if line]
    (line,) = _lines(plain.stderr)
    assert "lacks the project's packages" in line and "source .venv/bin/activate" in line

    before = _jobs()
    venv = _typed(clone, "python launch/pretrain.py --nodes 2 --frac 0.1", tmp_path, activated=True)
    assert venv.returncode == 2 and _lines(venv.stdout) == []
    assert _lines(venv.stderr) == ["error: --nodes 2: partition debug has 1 node: such a job would pend forever, "
                                   "so nothing was submitted"]
    assert _jobs() <= before and not (clone / "runs").exists()  # nothing submitted, nothing on disk

    # The dry run of the same command finds the demo's store through ecg-hpc.toml.
    dry = _typed(clone, "python launch/pretrain.py --frac 0.1 --dry-run", tmp_path, activated=True)
    assert dry.returncode == 0, dry.stderr
    assert f"--store {clone / 'demo' / 'store'}" in dry.stdout

    # 2. The sweep: plan it (venv), then type the printed sbatch line in the plain shell.
    pretrain = clone / "demo" / "runs" / "pretrain"
    plan = _typed(clone, f"python -m ecg_hpc.hpc.sweep plan --data demo/challenge.npz --pretrain {pretrain}/* "
                         "--no-random --seeds 7 --epochs 1 --batch-size 32 --val-size 0.2 --sweep-dir runs/ft-check",
                  tmp_path, activated=True)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    printed = plan.stdout.strip().splitlines()[-1].strip()
    assert printed.endswith("sbatch --array=0-1 --output=runs/ft-check/slurm-%A_%a.out --gres=none "
                            "--cpus-per-task=2 slurm/finetune_array.sh"), plan.stdout
    submitted = _typed(clone, printed.replace("sbatch ", "sbatch --parsable ", 1), tmp_path, activated=False)
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip().split(";")[0]
    states = _wait(job, expect=2, timeout=900)
    assert {s for s, _ in states.values()} == {"COMPLETED"}, states
    status = _typed(clone, "python -m ecg_hpc.hpc.sweep status --manifest runs/ft-check/manifest.jsonl", tmp_path,
                    activated=True)
    assert status.stdout.strip().splitlines()[-1] == "2 tasks: 2 done"

    # 3. The report: a plain Python says how to activate; the venv's finds the demo's runs (no runs/ of results).
    plain = _typed(clone, "python -m analysis.report", tmp_path, activated=False)
    assert plain.returncode == 2 and len(_lines(plain.stderr)) == 1 and "source .venv/bin/activate" in plain.stderr
    (clone / "runs" / "ft-check").rename(clone / "ft-check")  # leave no runs/ here: the report looks for the demo's
    (clone / "runs").rmdir()
    started = time.monotonic()
    report = _typed(clone, "python -m analysis.report", tmp_path, activated=True)
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    assert f"reading the demo's runs in {clone / 'demo' / 'runs'}" in report.stderr
    assert (clone / "reports" / "report.md").is_file() and time.monotonic() - started < 600
