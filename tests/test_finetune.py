"""Fine-tuning end to end on tiny synthetic challenge data: run directory, determinism, transfer, failures.

The data are written in the challenge's published format (``synth-physionet``) and prepared with
``prepare-physionet``; the checkpoint is a real saved feature extractor beside a pretraining run.json. The models
are ResNets at width 0.125, trained 2 epochs, so the whole module takes well under a minute or two on 2 cores.
"""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ecg_hpc.data.__main__ import main as data_main
from ecg_hpc.records import InitSource, PretrainRun, read_record, write_record
from ecg_hpc.train import finetune
from ecg_hpc.train.job_lock import job_dir_lock
from ecg_hpc.train.metrics import f1_report

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ("A", "N", "O", "~")
TINY = ["--width", "0.125", "--epochs", "2", "--batch-size", "16", "--val-size", "0.25"]


def make_prepared(folder: Path, records: int = 48, seed: int = 1) -> Path:
    """Synthetic challenge records in the published format, prepared into a cached .npz."""
    src, dst = folder / "challenge", folder / "prepared.npz"
    assert data_main(["synth-physionet", "--dst", str(src), "--records", str(records), "--seed", str(seed)]) == 0
    assert data_main(["prepare-physionet", "--src", str(src), "--dst", str(dst)]) == 0
    return dst


def make_checkpoint(pretrain_dir: Path, epoch: int = 1, width: float = 0.125, seed: int = 99) -> Path:
    """A pretraining run directory with a run.json and one saved feature extractor ``epoch_NN``."""
    import tensorflow as tf

    from ecg_hpc.models import build_model, save_feature_extractor

    tf.keras.utils.set_random_seed(seed)
    model = build_model("resnet18", 5, (4096, 1), width=width)
    checkpoint = pretrain_dir / f"epoch_{epoch:02d}"
    save_feature_extractor(model, checkpoint / "feature_extractor")
    write_record(pretrain_dir, PretrainRun(status="done", seed=seed, task="beat", arch="resnet18", width=width,
                                           frame_size=4096, frac=1.0, epochs=epoch, epochs_done=epoch))
    return checkpoint


def visible_files(folder: Path) -> list[str]:
    """Names in ``folder`` except hidden ones (the run lock)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three runs on the same data: random seed 1 twice, and from a checkpoint with seed 1."""
    root = tmp_path_factory.mktemp("finetune")
    data = make_prepared(root)
    checkpoint = make_checkpoint(root / "pretrain" / "beat_tiny")
    dirs = {"data": data, "checkpoint": checkpoint}
    for name, init in (("random", "random"), ("random_again", "random"), ("pretrained", str(checkpoint))):
        dirs[name] = root / name
        assert finetune.main(["--data", str(data), "--job-dir", str(dirs[name]), "--init", init, "--seed", "1",
                              *TINY]) == 0
    return dirs


def test_run_directory_has_the_published_files_and_run_json(runs):
    job = runs["random"]
    info = read_record(job)
    assert info.kind == "finetune" and info.status == "done"
    assert info.init == InitSource("random") and info.scenario == "random"
    assert info.arch == "resnet18" and info.width == 0.125 and info.seed == 1
    assert info.split["n_train"] + info.split["n_val"] == 38 and info.split["n_test"] == 10
    assert info.split["test_seed"] == 2017 and info.split["n_val"] == round(0.25 * 38)
    assert info.epochs_run == 2 and info.wall_time_s > 0 and info.finished_at
    assert (job / finetune.BEST_WEIGHTS).stat().st_size > 0

    history = read_csv(job / "history.csv")
    assert list(history[0]) == ["epoch", "loss", "val_loss", "f1", "f1_A", "f1_N", "f1_O", "f1_~"]
    assert [int(r["epoch"]) for r in history] == [1, 2]
    f1s = [float(r["f1"]) for r in history]
    assert info.best_epoch == 1 + int(np.argmax(f1s))  # the first epoch with the best validation macro F1

    names = {}
    for split in ("train", "val", "test"):
        rows = read_csv(job / f"{split}_predictions.csv")
        assert list(rows[0]) == ["record_name", *(f"true_{c}" for c in CLASSES), *(f"prob_{c}" for c in CLASSES)]
        true = np.array([[int(r[f"true_{c}"]) for c in CLASSES] for r in rows])
        prob = np.array([[float(r[f"prob_{c}"]) for c in CLASSES] for r in rows])
        assert (true.sum(axis=1) == 1).all()
        np.testing.assert_allclose(prob.sum(axis=1), 1.0, atol=1e-5)
        names[split] = [r["record_name"] for r in rows]
        if split == "test":  # run.json's test scores are those of the written predictions
            report = f1_report(true.argmax(axis=1), prob, CLASSES)
            assert report["macro_f1"] == pytest.approx(info.test.macro_f1)
            assert report["f1"] == pytest.approx(info.test.f1)
    assert len(names["train"]) == info.split["n_train"] and len(names["val"]) == info.split["n_val"]
    assert not set(names["train"]) & set(names["val"]) and not set(names["val"]) & set(names["test"])


def test_same_seed_same_data_gives_the_same_split_and_predictions(runs):
    a, b = runs["random"], runs["random_again"]
    for name in ("train_predictions.csv", "val_predictions.csv", "test_predictions.csv", "history.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_pretrained_init_changes_the_training_curves(runs):
    info = read_record(runs["pretrained"])
    assert info.status == "done"
    assert info.init.source == "checkpoint" and info.init.pretrain_epoch == 1
    assert info.init.task == "beat" and info.init.pretrain_run == str(runs["checkpoint"].parent)
    assert info.scenario == "beat_tiny_epoch_01"
    # same seed, so same split and head initialisation: only the transferred weights differ
    same_split = [r["record_name"] for r in read_csv(runs["random"] / "val_predictions.csv")]
    assert [r["record_name"] for r in read_csv(runs["pretrained"] / "val_predictions.csv")] == same_split
    random_curve = [(float(r["loss"]), float(r["val_loss"])) for r in read_csv(runs["random"] / "history.csv")]
    pretrained_curve = [(float(r["loss"]), float(r["val_loss"]))
                        for r in read_csv(runs["pretrained"] / "history.csv")]
    assert len(random_curve) == len(pretrained_curve) == 2
    assert all(abs(x - y) > 1e-4 for p, q in zip(random_curve, pretrained_curve) for x, y in zip(p, q))


def test_a_done_run_is_not_redone(runs, capsys):
    job = runs["random"]
    before = {name: (job / name).stat().st_mtime_ns for name in visible_files(job)}
    assert finetune.main(["--data", str(runs["data"]), "--job-dir", str(job), "--seed", "1", *TINY]) == 0
    assert "already done" in capsys.readouterr().out
    assert {name: (job / name).stat().st_mtime_ns for name in visible_files(job)} == before


def test_a_run_in_progress_elsewhere_is_left_alone(runs, tmp_path, capsys):
    job = tmp_path / "busy"
    job.mkdir()
    with job_dir_lock(job):  # as if another process were running this task
        assert finetune.main(["--data", str(runs["data"]), "--job-dir", str(job), *TINY]) == 0
    out = capsys.readouterr().out
    assert "skipping" in out and "already being run by pid" in out
    assert visible_files(job) == []


def test_sigterm_records_a_failed_run(runs, tmp_path):
    job = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "ecg_hpc.train.finetune", "--data", str(runs["data"]),
                             "--job-dir", str(job), *TINY[:2], "--epochs", "200", *TINY[4:]],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (job / "history.csv").is_file():  # written after the first epoch: training is under way
            assert proc.poll() is None and time.monotonic() < deadline, "training never got going"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM
    assert "terminated by SIGTERM" in err
    info = read_record(job)
    assert info.status == "failed" and "terminated by SIGTERM" in info.error and info.finished_at
    assert info.epochs_run is None and (job / "history.csv").is_file()


def test_missing_checkpoint_fails_with_a_clear_error_in_run_json(runs, tmp_path, capsys):
    missing = runs["checkpoint"].parent / "epoch_07"
    job = tmp_path / "job"
    assert finetune.main(["--data", str(runs["data"]), "--job-dir", str(job), "--init", str(missing),
                          "--seed", "3", *TINY]) == 2
    err = capsys.readouterr().err
    assert "checkpoint not found" in err and str(missing) in err
    info = read_record(job)
    assert info.status == "failed" and "checkpoint not found" in info.error
    assert info.init.source == "checkpoint" and info.init.pretrain_epoch == 7
    assert info.init.task == "beat"  # read from the pretraining run.json, so the report can name it
    assert visible_files(job) == ["run.json"]


def test_bad_data_file_fails_naming_it(tmp_path, capsys):
    bad = tmp_path / "not_prepared.npz"
    bad.write_bytes(b"not a zip file")
    assert finetune.main(["--data", str(bad), "--job-dir", str(tmp_path / "job"), *TINY]) == 2
    assert str(bad) in capsys.readouterr().err
    info = read_record(tmp_path / "job")
    assert info.status == "failed" and str(bad) in info.error


def test_arch_contradicting_the_checkpoint_is_refused(runs, tmp_path, capsys):
    job = tmp_path / "job"
    assert finetune.main(["--data", str(runs["data"]), "--job-dir", str(job), "--init", str(runs["checkpoint"]),
                          "--arch", "resnet34", *TINY]) == 2
    assert "resnet34" in read_record(job).error and "resnet18" in read_record(job).error


@pytest.mark.slow
def test_spectrogram_2d_arch_fine_tunes(runs, tmp_path):
    job = tmp_path / "job2d"
    options = [*TINY[:2], "--epochs", "1", *TINY[4:]]
    assert finetune.main(["--data", str(runs["data"]), "--job-dir", str(job), "--arch", "resnet18_2d",
                          "--seed", "2", *options]) == 0
    info = read_record(job)
    assert info.status == "done" and info.arch == "resnet18_2d" and info.scenario == "random_resnet18_2d"
    assert len(read_csv(job / "test_predictions.csv")) == 10
