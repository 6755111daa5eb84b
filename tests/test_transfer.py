"""Weight transfer: a pretrained feature extractor initialises a fine-tuning classifier, and only that."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from ecg_hpc.errors import ConfigError
from ecg_hpc.models import build_model, find_feature_extractor, load_feature_extractor, save_feature_extractor
from ecg_hpc.tasks import get_task

WIDTH = 0.125


def _pretrained(task: str, arch: str = "resnet18", frame: int = 4096) -> tf.keras.Model:
    """A task model whose weights, BN statistics included, differ from any fresh initialisation."""
    model = get_task(task).build_model(arch, frame, width=WIDTH)
    rng = np.random.default_rng(3)
    for w in model.weights:
        w.assign(rng.normal(0.5, 0.1, w.shape).astype(np.float32))
    return model


@pytest.mark.parametrize("task", ["beat", "future"])
def test_transfer_from_4096_frames_to_a_16384_classifier_copies_every_feature_weight_and_no_head(tmp_path, task):
    pretrained = _pretrained(task)
    saved = save_feature_extractor(pretrained, tmp_path / "epoch_03" / "feature_extractor")
    assert sorted(p.name for p in saved.iterdir()) == ["meta.json", "weights.h5"]
    assert [p.name for p in saved.parent.iterdir()] == ["feature_extractor"]   # no temporary left behind
    meta = json.loads((saved / "meta.json").read_text())
    assert (meta["arch"], meta["width"], meta["input_channels"], meta["dims"], meta["frame_size"]) == \
        ("resnet18", WIDTH, 1, 1, 4096)

    finetune = build_model("resnet18", 4, (16384, 1), head_activation="softmax", width=WIDTH)
    head_before = [w.numpy().copy() for w in finetune.get_layer("head").weights]
    load_feature_extractor(finetune, saved)

    source, target = find_feature_extractor(pretrained).weights, find_feature_extractor(finetune).weights
    assert len(source) == len(target) > 0
    for s, t in zip(source, target):
        np.testing.assert_array_equal(s.numpy(), t.numpy(), err_msg=t.name)
    head_after = [w.numpy() for w in finetune.get_layer("head").weights]
    for before, after in zip(head_before, head_after):
        np.testing.assert_array_equal(before, after)
    assert not np.allclose(head_after[0], 0.5, atol=0.3)   # glorot-fresh, not the pretrained values
    np.testing.assert_array_equal(head_after[1], 0.0)


def test_the_2d_network_transfers_too_and_saving_again_replaces_the_directory(tmp_path):
    pretrained = _pretrained("hr", "resnet18_2d", 512)
    path = tmp_path / "feature_extractor"
    save_feature_extractor(get_task("hr").build_model("resnet18_2d", 512, width=WIDTH), path)
    save_feature_extractor(pretrained, path)
    assert [p.name for p in tmp_path.iterdir()] == ["feature_extractor"]
    finetune = build_model("resnet18_2d", 4, (16384, 1), head_activation="softmax", width=WIDTH)
    load_feature_extractor(finetune, path)
    for s, t in zip(find_feature_extractor(pretrained).weights, find_feature_extractor(finetune).weights):
        np.testing.assert_array_equal(s.numpy(), t.numpy())


@pytest.mark.parametrize("arch, width, channels, words", [
    ("resnet34", WIDTH, 1, ["resnet18 (width 0.125", "resnet34 (width 0.125"]),
    ("resnet18_2d", WIDTH, 1, ["1-D", "resnet18_2d", "2-D"]),
    ("resnet18", 0.25, 1, ["width 0.125", "width 0.25"]),
    ("resnet18", WIDTH, 12, ["1 input channel", "12 input channel"]),
])
def test_incompatible_targets_fail_with_a_config_error_naming_both_sides(tmp_path, arch, width, channels, words):
    path = save_feature_extractor(_pretrained("rhythm"), tmp_path / "fe")
    target = build_model(arch, 4, (16384, channels), head_activation="softmax", width=width)
    before = [w.numpy().copy() for w in target.weights]
    with pytest.raises(ConfigError) as error:
        load_feature_extractor(target, path)
    for word in words:
        assert word in str(error.value)
    assert str(path) in str(error.value)
    for b, w in zip(before, target.weights):
        np.testing.assert_array_equal(b, w.numpy())


def test_missing_or_broken_directories_fail_with_a_config_error_naming_them(tmp_path):
    target = build_model("resnet18", 4, (4096, 1), head_activation="softmax", width=WIDTH)
    with pytest.raises(ConfigError, match="no such directory"):
        load_feature_extractor(target, tmp_path / "nowhere")
    broken = tmp_path / "broken"
    broken.mkdir()
    with pytest.raises(ConfigError, match="meta.json: missing"):
        load_feature_extractor(target, broken)
    (broken / "meta.json").write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable"):
        load_feature_extractor(target, broken)
    saved = save_feature_extractor(_pretrained("beat"), tmp_path / "fe")
    meta = json.loads((saved / "meta.json").read_text())
    meta["weights"][0][1] = [7, 1, 9]
    (saved / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=r"shape \(7, 1, 9\), the model's .* has shape \(7, 1, 8\)"):
        load_feature_extractor(target, saved)
    (saved / "weights.h5").unlink()
    with pytest.raises(ConfigError, match="weights.h5: missing"):
        load_feature_extractor(target, saved)
