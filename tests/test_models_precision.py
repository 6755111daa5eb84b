"""Precision options: mixed bfloat16/float16 build and train a step on CPU without NaN, logits in float32."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from ecg_hpc.errors import ConfigError
from ecg_hpc.models import PRECISIONS, build_model, configure_precision
from ecg_hpc.tasks import get_task


@pytest.fixture
def restore_policy():
    """Put the global float32 policy back whatever the test did."""
    yield
    configure_precision("float32")


@pytest.mark.parametrize("precision, arch", [("mixed_bfloat16", "resnet18"), ("mixed_float16", "resnet18_2d")])
def test_mixed_precision_classifier_trains_without_nan(restore_policy, precision, arch):
    tf.random.set_seed(0)
    policy = configure_precision(precision)
    assert policy.compute_dtype == precision.split("_")[1] and policy.variable_dtype == "float32"
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 512, 1)).astype(np.float32)
    y = rng.integers(0, 5, 8)
    task = get_task("beat")
    model = task.build_model(arch, 512, width=0.125)
    assert model.get_layer("feature_extractor").get_layer("stem_conv").compute_dtype == policy.compute_dtype
    model = task.compile_model(model, tf.keras.optimizers.Adam(1e-3))
    before = [w.numpy().copy() for w in model.trainable_weights]
    losses = []
    for _ in range(3):
        # float16 with dynamic loss scaling may skip a step on overflow (and halve the scale); not more.
        losses.append(model.train_on_batch(x, y)[0])
        if any(not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights)):
            break
    else:
        pytest.fail(f"{precision}: three steps left every weight unchanged")
    assert np.isfinite(losses).all() and losses[-1] < 10
    assert all(np.isfinite(w.numpy()).all() for w in model.weights)
    assert all(w.dtype == tf.float32 for w in model.weights)
    assert model(x).dtype == tf.float32
    if precision == "mixed_float16":
        assert isinstance(model.optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
        assert np.isfinite(float(model.optimizer.loss_scale))


def test_softmax_head_stays_float32_under_mixed_precision(restore_policy):
    configure_precision("mixed_bfloat16")
    probs = build_model("resnet18", 4, (512, 1), head_activation="softmax", width=0.125)(
        np.zeros((2, 512, 1), np.float32))
    assert probs.dtype == tf.float32
    np.testing.assert_allclose(probs.numpy().sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.slow
def test_mixed_precision_future_model_trains_a_step_with_float32_scores(restore_policy):
    configure_precision("mixed_bfloat16")
    task = get_task("future")
    model = task.compile_model(task.build_model("resnet18", 256, width=0.125), tf.keras.optimizers.Adam(1e-3))
    rng = np.random.default_rng(1)
    inputs = {"context": rng.standard_normal((4, 8, 256, 1)).astype(np.float32),
              "candidates": rng.standard_normal((4, 3, 256, 1)).astype(np.float32)}
    assert np.isfinite(model.train_on_batch(inputs, np.array([0, 1, 2, 0]))[0])
    assert model(inputs).dtype == tf.float32
    assert all(np.isfinite(w.numpy()).all() for w in model.weights)


def test_precision_names_are_checked(restore_policy):
    assert PRECISIONS == ("float32", "mixed_bfloat16", "mixed_float16")
    with pytest.raises(ConfigError, match="--precision"):
        configure_precision("float16")
    assert configure_precision("float32").name == "float32"


@pytest.fixture
def op_determinism_off():
    """XLA has no deterministic MaxPool gradient; fine-tuning tests earlier in the session switch determinism on."""
    from tensorflow.python.framework import config as tf_config  # the public API can only switch it on

    was_on = tf_config.is_op_determinism_enabled()
    tf_config.disable_op_determinism()
    yield
    if was_on:
        tf_config.enable_op_determinism()


@pytest.mark.slow
def test_xla_compiled_training_step_matches_the_plain_one(op_determinism_off):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 256, 1)).astype(np.float32)
    y = rng.integers(0, 4, 8)
    task = get_task("hr")
    losses, initial = [], None
    for jit in (False, True):
        model = task.compile_model(task.build_model("resnet18", 256, width=0.125), tf.keras.optimizers.Adam(1e-3),
                                   jit_compile=jit)
        initial = initial or model.get_weights()
        model.set_weights(initial)
        losses.append([model.train_on_batch(x, y)[0] for _ in range(2)])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-3)
