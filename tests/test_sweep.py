"""Fine-tuning sweeps: planning the manifest, re-planning safely, and a real array on the test SLURM."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ecg_hpc.errors import ConfigError
from ecg_hpc.hpc import sweep
from ecg_hpc.rundir import read_run
from ecg_hpc.train import finetune
from tests.test_cluster_slurm import _wait
from tests.test_finetune import make_checkpoint, make_prepared, visible_files

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = ROOT / "launch" / "finetune.py"
ARRAY_SCRIPT = ROOT / "slurm" / "finetune_array.sh"
TINY = ["--width", "0.125", "--epochs", "1", "--batch-size", "16", "--val-size", "0.25"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Prepared synthetic data and a pretraining run with checkpoints epoch_01..03 (02 and 03 copies of 01)."""
    root = tmp_path_factory.mktemp("sweep")
    pretrain = root / "pretrain" / "beat_tiny"
    first = make_checkpoint(pretrain)
    for epoch in (2, 3):
        shutil.copytree(first, pretrain / f"epoch_{epoch:02d}")
    return {"root": root, "data": make_prepared(root), "pretrain": pretrain}


def plan(world: dict[str, Path], sweep_dir: Path, *extra: str) -> int:
    return sweep.main(["plan", "--data", str(world["data"]), "--sweep-dir", str(sweep_dir), *TINY, *extra])


def lines(manifest: Path) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text().splitlines()]


def test_plan_writes_one_task_per_scenario_and_seed(world, tmp_path, capsys):
    assert plan(world, tmp_path, "--pretrain", str(world["pretrain"]), "--checkpoints", "all",
                "--seeds", "1,2") == 0
    assert "8 tasks: 8 missing; array indices 0-7" in capsys.readouterr().out
    tasks = lines(tmp_path / "manifest.jsonl")
    assert [t["index"] for t in tasks] == list(range(8))
    assert [(t["scenario"], t["seed"]) for t in tasks] == [
        (s, seed) for s in ("random", "beat_tiny_epoch_01", "beat_tiny_epoch_02", "beat_tiny_epoch_03")
        for seed in (1, 2)]
    for task, read in zip(tasks, sweep.read_manifest(tmp_path / "manifest.jsonl")):
        assert task["job_dir"] == f"{task['scenario']}/seed_{task['seed']}"  # relative to the manifest
        assert read.job_dir == str(tmp_path.resolve() / task["job_dir"])
        assert "--job-dir" not in task["args"]
        config = finetune.config_from_args(finetune.build_parser().parse_args(read.trainer_argv()))
        assert (config.job_dir, config.seed, config.scenario, config.init) == (
            read.job_dir, task["seed"], task["scenario"], task["init"])
        assert (config.arch, config.width, config.epochs, config.data) == (
            "resnet18", 0.125, 1, str(world["data"].resolve()))
    assert tasks[2]["init"] == str(world["pretrain"].resolve() / "epoch_01")


@pytest.mark.parametrize("which, scenarios", [("last", ["beat_tiny_epoch_03"]),
                                               ("3,1", ["beat_tiny_epoch_01", "beat_tiny_epoch_03"])])
def test_checkpoint_selection(world, which, scenarios):
    chosen = sweep.plan_scenarios([world["pretrain"]], which, include_random=False)
    assert [s.name for s in chosen] == scenarios
    assert all((s.arch, s.width) == ("resnet18", 0.125) for s in chosen)  # from the pretraining run.json


def test_listed_missing_epoch_is_planned_with_a_warning(world, capsys):
    chosen = sweep.plan_scenarios([world["pretrain"]], "9", include_random=False)
    assert [s.name for s in chosen] == ["beat_tiny_epoch_09"]
    assert "epoch_09 does not exist yet" in capsys.readouterr().err


def test_contradicting_arch_and_bad_options_are_refused(world, tmp_path, capsys):
    assert plan(world, tmp_path, "--pretrain", str(world["pretrain"]), "--arch", "resnet34") == 2
    assert "--arch resnet34 contradicts" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        plan(world, tmp_path, "--seeds", "1,1")
    assert "--seeds '1,1': give at least one seed and no seed twice" in capsys.readouterr().err
    assert plan(world, tmp_path, "--val-size", "1.5") == 2
    assert "--val-size must lie strictly between 0 and 1" in capsys.readouterr().err
    assert sweep.main(["plan", "--data", str(tmp_path / "nope.npz"), "--sweep-dir", str(tmp_path)]) == 2
    assert "nope.npz: no such file" in capsys.readouterr().err
    assert not (tmp_path / "manifest.jsonl").exists()


def test_replanning_keeps_indices_appends_and_refuses_changed_options(world, tmp_path, capsys):
    manifest = tmp_path / "manifest.jsonl"
    assert plan(world, tmp_path, "--seeds", "1,2") == 0
    first = manifest.read_text()
    assert plan(world, tmp_path, "--seeds", "1,2") == 0
    assert manifest.read_text() == first  # idempotent
    assert plan(world, tmp_path, "--seeds", "2,3", "--pretrain", str(world["pretrain"])) == 0
    tasks = lines(manifest)
    assert manifest.read_text().startswith(first)
    assert [(t["index"], t["scenario"], t["seed"]) for t in tasks] == [
        (0, "random", 1), (1, "random", 2), (2, "random", 3), (3, "beat_tiny_epoch_03", 2),
        (4, "beat_tiny_epoch_03", 3)]
    capsys.readouterr()
    assert plan(world, tmp_path, "--seeds", "1", "--patience", "7") == 2
    assert "already planned with other options" in capsys.readouterr().err
    assert manifest.read_text() == "".join(json.dumps(t) + "\n" for t in tasks)


def test_a_copied_sweep_resolves_its_job_dirs_in_the_copy(world, tmp_path):
    assert plan(world, tmp_path / "a", "--seeds", "1,2") == 0
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert [t.job_dir for t in sweep.read_manifest(tmp_path / "b" / "manifest.jsonl")] == [
        str(tmp_path.resolve() / "b" / "random" / f"seed_{seed}") for seed in (1, 2)]


def test_default_array_fits_the_default_sweep(world, tmp_path):
    assert sweep.parse_seeds("10-100:10") == sweep.DEFAULT_SEEDS == tuple(range(10, 101, 10))
    assert sweep.main(["plan", "--data", str(world["data"]), "--sweep-dir", str(tmp_path),
                       "--pretrain", str(world["pretrain"])]) == 0
    n = len(lines(tmp_path / "manifest.jsonl"))
    assert n == 20
    match = re.search(r"^#SBATCH --array=0-(\d+)$", ARRAY_SCRIPT.read_text(), re.MULTILINE)
    assert match and int(match.group(1)) == n - 1
    assert re.search(r"^#SBATCH --output=runs/finetune/slurm-%A_%a\.out$", ARRAY_SCRIPT.read_text(), re.MULTILINE)


def test_run_task_past_the_end_exits_cleanly_and_status_lists_tasks(world, tmp_path, capsys):
    assert plan(world, tmp_path, "--seeds", "1") == 0
    assert sweep.main(["status", "--manifest", str(tmp_path / "manifest.jsonl")]) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == ["   0  missing  random  seed 1", "1 tasks: 1 missing"]
    assert sweep.main(["run-task", "--manifest", str(tmp_path / "manifest.jsonl"), "--index", "5"]) == 0
    assert "past the end" in capsys.readouterr().out
    assert sweep.main(["run-task", "--manifest", str(tmp_path / "missing.jsonl"), "--index", "0"]) == 2


def test_launch_dry_run_submits_nothing_and_writes_no_manifest(world, tmp_path):
    proc = subprocess.run([sys.executable, str(LAUNCH), "--data", str(world["data"]), "--sweep-dir", str(tmp_path),
                           "--seeds", "1,2", "--local", "--dry-run", *TINY],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "would run 2 task(s), indices [0, 1]" in proc.stdout
    assert "ecg_hpc.hpc.sweep run-task" in proc.stdout
    assert [p.name for p in tmp_path.iterdir()] in ([], ["logs"])  # submitit makes its (empty) log folder


def _statuses(sweep_dir: Path) -> dict[int, str]:
    return {t.index: sweep.task_status(t) for t in sweep.read_manifest(sweep_dir / "manifest.jsonl")}


@pytest.mark.slurm
@pytest.mark.slow
def test_sweep_array_on_slurm(world, slurm_cluster, tmp_path):
    """random + epoch_01 + a missing epoch_02... x 2 seeds as one array; failures stay alone; re-submits skip."""
    pretrain = tmp_path / "pretrain" / "beat_tiny"  # its own run: epoch_01 only, epoch_02 is never written
    shutil.copytree(world["pretrain"] / "epoch_01", pretrain / "epoch_01")
    shutil.copy(world["pretrain"] / "run.json", pretrain / "run.json")
    sweep_dir = tmp_path / "sweep"
    common = [sys.executable, str(LAUNCH), "--data", str(world["data"]), "--sweep-dir", str(sweep_dir),
              "--pretrain", str(pretrain), "--seeds", "1,2", "--partition", slurm_cluster.partition,
              "--cpus-per-task", "1", "--time", "20", *TINY]
    proc = subprocess.run([*common, "--checkpoints", "1,2", "--follow"], capture_output=True, text=True,
                          cwd=ROOT, timeout=900)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the two tasks of the missing checkpoint failed
    assert "slurm job" in proc.stdout
    assert _statuses(sweep_dir) == {0: "done", 1: "done", 2: "done", 3: "done", 4: "failed", 5: "failed"}
    tasks = sweep.read_manifest(sweep_dir / "manifest.jsonl")
    for task in tasks[:4]:
        job = Path(task.job_dir)
        assert {"history.csv", "train_predictions.csv", "val_predictions.csv", "test_predictions.csv",
                "run.json", finetune.BEST_WEIGHTS} <= {p.name for p in job.iterdir()}
        assert read_run(job)["environment"]["slurm"]["SLURM_ARRAY_TASK_ID"]
    for task in tasks[4:]:
        info = read_run(task.job_dir)
        assert "checkpoint not found" in info["error"] and "epoch_02" in info["error"]
        assert visible_files(Path(task.job_dir)) == ["run.json"]
    # random and pretrained with the same seed: the same validation split, different curves
    random_dir, pretrained_dir = Path(tasks[0].job_dir), Path(tasks[2].job_dir)
    assert tasks[0].seed == tasks[2].seed and tasks[2].scenario == "beat_tiny_epoch_01"
    assert [line.split(",")[0] for line in (random_dir / "val_predictions.csv").read_text().splitlines()] == \
        [line.split(",")[0] for line in (pretrained_dir / "val_predictions.csv").read_text().splitlines()]
    assert (random_dir / "history.csv").read_text() != (pretrained_dir / "history.csv").read_text()

    # Re-submit by hand with the sbatch script, indices past the end included: done tasks are skipped.
    def outputs() -> dict[str, bytes]:
        return {f"{t.job_dir}/{name}": (Path(t.job_dir) / name).read_bytes()
                for t in tasks[:4] for name in visible_files(Path(t.job_dir))}

    done_files = outputs()
    env = {**os.environ, "ECG_HPC_MANIFEST": str(sweep_dir / "manifest.jsonl"), "ECG_HPC_PYTHON": sys.executable}
    job_id = subprocess.run(["sbatch", "--parsable", "--array=0-7", "--gres=none", "--cpus-per-task=1",
                             f"--partition={slurm_cluster.partition}", f"--output={sweep_dir}/slurm-%A_%a.out",
                             str(ARRAY_SCRIPT)], capture_output=True, text=True, check=True, cwd=ROOT,
                            env=env).stdout.strip().split(";")[0]
    states = _wait(job_id, expect=8, timeout=300)
    assert {k: s for k, (s, _) in states.items()} == {
        f"{job_id}_{i}": ("FAILED" if i in (4, 5) else "COMPLETED") for i in range(8)}
    logs = {i: (sweep_dir / f"slurm-{job_id}_{i}.out").read_text() for i in range(8)}
    assert all("already done" in logs[i] for i in range(4))
    assert all("checkpoint not found" in logs[i] for i in (4, 5))
    assert all("past the end" in logs[i] for i in (6, 7))
    assert outputs() == done_files

    # Submitting the four-task sweep again through the launcher runs nothing.
    proc = subprocess.run([*common, "--checkpoints", "1"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "nothing to run" in proc.stdout


def test_random_init_takes_the_pretraining_arch_and_width(world):
    random, *pretrained = sweep.plan_scenarios([world["pretrain"]], "last")
    assert (random.name, random.init, random.arch, random.width) == ("random", "random", "resnet18", 0.125)
    assert [(s.arch, s.width) for s in pretrained] == [("resnet18", 0.125)]
    assert sweep.plan_scenarios([], "last")[0].width == 1.0  # nothing to follow: the authors' network
    with pytest.raises(ConfigError, match="--width 1.0 contradicts"):
        sweep.plan_scenarios([world["pretrain"]], "last", width=1.0)
