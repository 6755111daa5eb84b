"""Models: the authors' networks parameter for parameter, output shapes, spectrogram, a tiny overfit per family."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from ecg_hpc.errors import ConfigError
from ecg_hpc.models import ARCHS, build_feature_extractor, build_model
from ecg_hpc.models.spectrogram import Spectrogram


def conv(k: int, c_in: int, c_out: int, dims: int = 1) -> int:
    """Weights of a bias-free convolution with a k (or k x k) kernel."""
    return k ** dims * c_in * c_out


def bn(c: int) -> int:
    """gamma, beta, moving mean, moving variance."""
    return 4 * c


def test_resnet18_parameter_count_matches_the_authors_network_by_hand():
    # transplant/modules/resnet1d.py + finetuning/utils.py: stem conv(64, 7, s2, no bias) + BN; stages
    # (64, k7), (128, k5), (256, k5), (512, k3), two basic blocks each; 1x1 conv + BN shortcut where the
    # channels or the stride change (first block of stages 2-4 only: stage 1 keeps 64 channels, stride 1).
    stem = 7 * 1 * 64 + 4 * 64                                       # 704
    stage1 = 2 * (7 * 64 * 64 + 4 * 64 + 7 * 64 * 64 + 4 * 64)          # 115,712
    stage2 = (5 * 64 * 128 + 4 * 128 + 5 * 128 * 128 + 4 * 128 + 1 * 64 * 128 + 4 * 128) \
        + (5 * 128 * 128 + 4 * 128) * 2                               # 132,608 + 164,864
    stage3 = (5 * 128 * 256 + 4 * 256 + 5 * 256 * 256 + 4 * 256 + 1 * 128 * 256 + 4 * 256) \
        + (5 * 256 * 256 + 4 * 256) * 2                               # 527,360 + 657,408
    stage4 = (3 * 256 * 512 + 4 * 512 + 3 * 512 * 512 + 4 * 512 + 1 * 256 * 512 + 4 * 512) \
        + (3 * 512 * 512 + 4 * 512) * 2                               # 1,316,864 + 1,576,960
    head = 512 * 4 + 4
    expected = stem + stage1 + stage2 + stage3 + stage4 + head
    assert expected == 4_494_532
    model = build_model("resnet18", 4, (4096, 1), head_activation="softmax")
    assert model.count_params() == expected
    bn_channels = 64 + 2 * 2 * 64 + sum(5 * c for c in (128, 256, 512))   # BN layers' channels, all of them
    non_trainable = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    assert non_trainable == 2 * bn_channels


def _resnet_params(blocks, kernels, bottleneck: bool, dims: int, num_classes: int) -> int:
    """Parameter count of the authors' ResNet layout (stem, stages, shortcut rule, Dense head)."""
    total = conv(7, 1, 64, dims) + bn(64)
    channels = 64
    for stage, (n, k, f) in enumerate(zip(blocks, kernels, (64, 128, 256, 512))):
        for b in range(n):
            stride = 2 if b == 0 and stage > 0 else 1
            out = 4 * f if bottleneck else f
            if bottleneck:
                total += conv(1, channels, f, dims) + conv(k, f, f, dims) + conv(1, f, out, dims)
                total += 2 * bn(f) + bn(out)
            else:
                total += conv(k, channels, f, dims) + conv(k, f, f, dims) + 2 * bn(f)
            if channels != out or stride > 1:
                total += conv(1, channels, out, dims) + bn(out)
            channels = out
    return total + channels * num_classes + num_classes


@pytest.mark.parametrize("arch, blocks, kernels, bottleneck, dims", [
    ("resnet18", (2, 2, 2, 2), (7, 5, 5, 3), False, 1),
    ("resnet34", (3, 4, 6, 3), (7, 5, 5, 3), False, 1),
    ("resnet50", (3, 4, 6, 3), (7, 5, 5, 3), True, 1),
    ("resnet18_2d", (2, 2, 2, 2), (3, 3, 3, 3), False, 2),
])
def test_every_arch_builds_for_both_frame_sizes_with_the_authors_parameter_count(arch, blocks, kernels,
                                                                                  bottleneck, dims):
    expected = _resnet_params(blocks, kernels, bottleneck, dims, num_classes=4)
    for length in (4096, 16384):
        model = build_model(arch, 4, (length, 1), head_activation="softmax")
        assert model.output_shape == (None, 4)
        assert model.count_params() == expected
        feature_extractor = model.get_layer("feature_extractor")
        assert feature_extractor.output_shape == (None, 2048 if bottleneck else 512)
        assert feature_extractor.spec.arch == arch and feature_extractor.spec.dims == dims


def test_the_arch_list_is_the_study_s_four_networks():
    assert ARCHS == ("resnet18", "resnet34", "resnet50", "resnet18_2d")


def test_resnet50_count_is_the_known_value():
    # Cross-check of the generic formula against the bottleneck net summed by hand: stem 704, stages
    # 194,048 + 964,608 + 5,545,984 + 10,268,672, head 2048 * 4 + 4.
    assert 704 + 194_048 + 964_608 + 5_545_984 + 10_268_672 + 8_196 == 16_982_212
    assert _resnet_params((3, 4, 6, 3), (7, 5, 5, 3), True, 1, 4) == 16_982_212


def test_forward_pass_on_a_long_frame_gives_probabilities():
    model = build_model("resnet18", 4, (16384, 1), head_activation="softmax")
    probs = model(np.zeros((1, 16384, 1), np.float32), training=False).numpy()
    assert probs.shape == (1, 4)
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-5)


def test_width_scales_every_filter_count():
    full = build_feature_extractor("resnet34", (4096, 1))
    small = build_feature_extractor("resnet34", (4096, 1), width=0.125)
    assert small.output_shape == (None, 64)
    assert small.get_layer("stem_conv").filters == 8
    assert small.get_layer("stage4_block1_conv1").filters == 64
    assert full.get_layer("stage4_block1_conv1").filters == 512
    assert small.spec.width == 0.125


def test_spectrogram_layer_is_the_hann_stft_magnitude_of_the_lowest_128_bins():
    rng = np.random.default_rng(0)
    signal = rng.standard_normal((2, 1024)).astype(np.float32)
    out = Spectrogram()(signal[..., None]).numpy()
    frames = 1 + (1024 - 256) // 32
    assert out.shape == (2, frames, 128, 1)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(256) / 256)   # periodic Hann
    for t in (0, 7, frames - 1):
        segment = signal[:, t * 32: t * 32 + 256] * window
        expected = np.abs(np.fft.rfft(segment, axis=-1))[:, :128]
        np.testing.assert_allclose(out[:, t, :, 0], expected, rtol=1e-3, atol=1e-3)
    assert Spectrogram()(np.zeros((1, 4096, 1), np.float32)).shape == (1, 121, 128, 1)


def test_bad_arch_and_input_give_config_errors():
    with pytest.raises(ConfigError, match="resnet18, resnet34"):
        build_model("resnet101", 4, (4096, 1))
    with pytest.raises(ConfigError, match="shorter than the spectrogram window"):
        build_feature_extractor("resnet18_2d", (128, 1))
    with pytest.raises(ConfigError, match="1 channel"):
        build_feature_extractor("resnet18_2d", (4096, 12))
    with pytest.raises(ConfigError, match="length, channels"):
        build_feature_extractor("resnet18", (4096,))
    with pytest.raises(ConfigError, match="width"):
        build_feature_extractor("resnet18", (4096, 1), width=0)


def _separable(rng: np.random.Generator, n: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Two classes of noisy sinusoids, 4 vs 16 cycles per frame, random phase."""
    y = np.arange(n) % 2
    t = np.arange(length) / length
    cycles = np.where(y == 0, 4, 16)
    x = np.sin(2 * np.pi * cycles[:, None] * t + rng.uniform(0, 2 * np.pi, (n, 1)))
    x += 0.1 * rng.standard_normal((n, length))
    return x[..., None].astype(np.float32), y


@pytest.mark.parametrize("arch, length", [("resnet18", 256), ("resnet18_2d", 512)])
def test_tiny_model_of_each_family_overfits_a_separable_set(arch, length):
    tf.random.set_seed(0)
    x, y = _separable(np.random.default_rng(1), 32, length)
    model = build_model(arch, 2, (length, 1), width=0.125)
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    first = model.evaluate(x, y, verbose=0)
    model.fit(x, y, batch_size=16, epochs=25, verbose=0, shuffle=False)
    logits = model(x, training=False).numpy()
    assert (logits.argmax(axis=1) == y).all()
    assert model.evaluate(x, y, verbose=0) < 0.1 < first


@pytest.mark.parametrize("dims, shape", [(1, (3, 37, 5)), (2, (2, 11, 9, 5))])
def test_subsampled_shortcut_equals_the_strided_1x1_conv_outputs_and_gradients(dims, shape):
    from ecg_hpc.models.layers import conv, subsample

    x = tf.constant(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    strided, plain = conv(dims, 7, 1, 2, "strided"), conv(dims, 7, 1, 1, "plain")
    strided.build(x.shape)
    plain.build(x[..., ::2, :].shape if dims == 1 else x[:, ::2, ::2, :].shape)
    plain.kernel.assign(strided.kernel)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        want = strided(x)
        got = plain(subsample(dims, 2, "sub")(x))
        losses = [tf.reduce_sum(tf.square(y) * tf.range(1.0, 8.0)) for y in (want, got)]
    assert got.shape == want.shape and want.shape[1] == (shape[1] + 1) // 2  # odd lengths too ('same')
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(tape.gradient(losses[1], plain.kernel).numpy(),
                               tape.gradient(losses[0], strided.kernel).numpy(), rtol=1e-5)
    np.testing.assert_allclose(tape.gradient(losses[1], x).numpy(), tape.gradient(losses[0], x).numpy(),
                               rtol=1e-5, atol=1e-6)


def test_strided_shortcuts_subsample_before_an_unstrided_1x1_conv():
    model = build_feature_extractor("resnet18", (4096, 1))
    for stage in (2, 3, 4):
        prefix = f"stage{stage}_block1_proj"
        assert model.get_layer(f"{prefix}_conv").strides == (1,)
        assert model.get_layer(f"{prefix}_subsample").strides == (2,)
        assert model.get_layer(f"{prefix}_subsample").pool_size == (1,)
    assert not any(layer.name.startswith("stage1") and "proj" in layer.name for layer in model.layers)


def test_batch_norm_on_1d_maps_runs_fused_and_matches_keras_plain_batch_norm():
    """The 1-D ResNets' batch norm runs TF's fused kernel (as (batch, 1, length, channels)) with the same variables,
    outputs, gradients and moving statistics as Keras' unfused layer, in training and inference."""
    from ecg_hpc.models.layers import BN_EPSILON, BN_MOMENTUM, batch_norm

    x = tf.constant(np.random.default_rng(0).normal(2.0, 3.0, (4, 50, 6)).astype(np.float32))
    ours = batch_norm("bn")
    plain = tf.keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, fused=False)
    ours.build(x.shape)
    plain.build(x.shape)
    assert ours.fused and not plain.fused
    assert [w.shape for w in ours.weights] == [w.shape for w in plain.weights] == [(6,)] * 4
    assert [w.name.split("/")[-1] for w in ours.weights] == [w.name.split("/")[-1] for w in plain.weights]
    plain.set_weights([np.linspace(0.5, 1.5, 6, dtype=np.float32), np.linspace(-1, 1, 6, dtype=np.float32),
                       np.zeros(6, np.float32), np.ones(6, np.float32)])
    ours.set_weights(plain.get_weights())
    grads = []
    for layer in (ours, plain):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = layer(x, training=True)
            loss = tf.reduce_sum(out * tf.range(50, dtype=tf.float32)[None, :, None])
        grads.append([out, *tape.gradient(loss, [x, layer.gamma, layer.beta])])
    for got, want in zip(*grads):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)
    # One update of the moving statistics: the same mean; the fused kernel (as on every rank-4 map, e.g. the 2-D
    # ResNets) folds the batch variance in with Bessel's correction n / (n - 1), n = batch x length (200 here;
    # 64 x 512 and more in the ResNets' 1-D maps, a relative 3e-5 at most).
    n = x.shape[0] * x.shape[1]
    var = np.var(x.numpy(), axis=(0, 1))
    np.testing.assert_allclose(ours.moving_mean.numpy(), plain.moving_mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(plain.moving_variance.numpy(), BN_MOMENTUM + (1 - BN_MOMENTUM) * var, rtol=1e-5)
    np.testing.assert_allclose(ours.moving_variance.numpy(), BN_MOMENTUM + (1 - BN_MOMENTUM) * var * n / (n - 1),
                               rtol=1e-5)
    plain.set_weights(ours.get_weights())  # inference with the same moving statistics
    np.testing.assert_allclose(ours(x, training=False).numpy(), plain(x, training=False).numpy(),
                               rtol=1e-5, atol=1e-5)
