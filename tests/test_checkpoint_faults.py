"""Damaged checkpoints: a manifest written last lets a resume tell intact from truncated or flipped ones.

Unit level here (real checkpoints of a real model, damaged on disk the way a failing disk or a full quota does);
the resume of real workers that falls back and ends with the uninterrupted run's weights is in test_pretrain.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tensorflow as tf

from ecg_hpc.errors import DataError
from ecg_hpc.tasks import get_task
from ecg_hpc.train import checkpoints, distributed


def _model_and_optimizer() -> tuple[tf.keras.Model, tf.keras.optimizers.Optimizer]:
    tf.keras.utils.set_random_seed(0)
    task = get_task("beat")
    model = task.build_model("resnet18", 256, width=0.125)
    optimizer = tf.keras.optimizers.Adam(1e-3)
    task.compile_model(model, optimizer)
    optimizer.build(model.trainable_variables)
    return model, optimizer


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A job folder with intact ``epoch_01`` and ``epoch_02`` checkpoints."""
    job = tmp_path_factory.mktemp("ckpt") / "job"
    model, optimizer = _model_and_optimizer()
    for epoch in (1, 2):
        model.layers[-1].kernel.assign_add(tf.ones_like(model.layers[-1].kernel))  # epochs differ
        checkpoints.save(job, model, optimizer, epoch=epoch, steps_done=4, steps_per_epoch=4,
                         logs={"loss": 1.0 / epoch}, epoch_time_s=1.0)
    return job


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _state_data(folder: Path) -> Path:
    return next((folder / "state").glob("ckpt.data-*"))


def _truncate_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _truncate_zero(path: Path) -> None:
    path.write_bytes(b"")


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_manifest_is_written_with_every_file(two_epochs: Path) -> None:
    manifest = json.loads((two_epochs / "epoch_02" / checkpoints.MANIFEST_FILE).read_text())
    assert manifest["format"] == checkpoints.MANIFEST_FORMAT and manifest["version"] == 1
    on_disk = {p.relative_to(two_epochs / "epoch_02").as_posix()
               for p in (two_epochs / "epoch_02").rglob("*") if p.is_file()} - {checkpoints.MANIFEST_FILE}
    assert set(manifest["files"]) == on_disk and checkpoints.INFO_FILE in on_disk
    assert checkpoints.verify(two_epochs / "epoch_02") is None
    point, damaged = checkpoints.find_resume(two_epochs)
    assert point.path.name == "epoch_02" and damaged == ()


@pytest.mark.parametrize("damage,expect", [(_truncate_half, "bytes, the manifest says"),
                                           (_truncate_zero, "has 0 bytes"),
                                           (_flip_byte, "differs from its checksum")])
def test_damaged_newest_falls_back_to_the_intact_one(two_epochs: Path, tmp_path: Path, damage, expect: str) -> None:
    job = _copy(two_epochs, tmp_path / "job")
    target = _state_data(job / "epoch_02")
    damage(target)
    point, damaged = checkpoints.find_resume(job)
    assert point is not None and point.path.name == "epoch_01"
    assert [d.path.name for d in damaged] == ["epoch_02"] and expect in damaged[0].problem
    assert target.relative_to(job / "epoch_02").as_posix() in damaged[0].problem
    assert damaged[0].record() == {"checkpoint": str(job / "epoch_02"), "problem": damaged[0].problem}
    # The fallback restores epoch 1's weights exactly.
    model, optimizer = _model_and_optimizer()
    checkpoints.restore(point, model, optimizer)
    reference, reference_opt = _model_and_optimizer()
    checkpoints.restore(checkpoints.read_info(two_epochs / "epoch_01"), reference, reference_opt)
    assert distributed.weights_fingerprint(model) == distributed.weights_fingerprint(reference)
    checkpoints.discard(damaged)
    assert not (job / "epoch_02").exists() and (job / "epoch_01").is_dir()


def test_a_damaged_checkpoint_json_or_missing_manifest_is_damaged(two_epochs: Path, tmp_path: Path) -> None:
    job = _copy(two_epochs, tmp_path / "job")
    _flip_byte(job / "epoch_02" / checkpoints.INFO_FILE)
    (job / "epoch_01" / checkpoints.MANIFEST_FILE).unlink()
    with pytest.raises(DataError) as info:
        checkpoints.find_resume(job)
    message = str(info.value)
    assert "\n" not in message and "no intact checkpoint" in message
    assert "epoch_02: checkpoint.json differs from its checksum" in message
    assert "epoch_01: no manifest.json" in message
    assert (job / "epoch_02").is_dir() and (job / "epoch_01").is_dir()  # nothing deleted when none is intact


def test_nonsense_manifest_is_named(two_epochs: Path, tmp_path: Path) -> None:
    job = _copy(two_epochs, tmp_path / "job")
    (job / "epoch_02" / checkpoints.MANIFEST_FILE).write_text('{"format": "zip", "files": []}')
    assert checkpoints.verify(job / "epoch_02") == "manifest.json is not a checkpoint manifest"
    (job / "epoch_02" / checkpoints.MANIFEST_FILE).write_text("{trunc")
    assert checkpoints.verify(job / "epoch_02").startswith("manifest.json unreadable")
    assert checkpoints.find_resume(job)[0].path.name == "epoch_01"
