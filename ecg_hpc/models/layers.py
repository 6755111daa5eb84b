"""Layer factories shared by the 1-D and 2-D ResNets, with the authors' settings in one place."""

from __future__ import annotations

import tensorflow as tf

keras = tf.keras

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def scaled(filters: int, width: float) -> int:
    """Filter count ``filters`` scaled by ``width`` (1.0 = the paper's network), at least 1."""
    return max(1, int(round(filters * width)))


def conv(dims: int, filters: int, kernel_size: int, strides: int, name: str) -> keras.layers.Layer:
    """Convolution as the authors use it: 'same' padding, no bias, VarianceScaling (fan-in) initialiser."""
    layer = keras.layers.Conv1D if dims == 1 else keras.layers.Conv2D
    return layer(filters, kernel_size, strides=strides, padding="same", use_bias=False,
                 kernel_initializer=keras.initializers.VarianceScaling(), name=name)


def subsample(dims: int, strides: int, name: str) -> keras.layers.Layer:
    """Every ``strides``-th sample along each spatial axis (a max-pool of size 1): the stride of a 1x1 conv.

    A 1x1 conv with stride s and 'same' padding equals this followed by the unstrided 1x1 conv (same outputs,
    same weights), which keeps oneDNN's strided 1x1 weight-gradient kernel out of the graph: in TF 2.15.1 on
    x86-64 CPUs it writes past its workspace when the input has fewer channels than its block (8 on AVX2, 16 on
    AVX-512), corrupting the heap (tests/test_models_onednn.py).
    """
    layer = keras.layers.MaxPooling1D if dims == 1 else keras.layers.MaxPooling2D
    return layer(pool_size=1, strides=strides, padding="same", name=name)


def batch_norm(name: str) -> keras.layers.Layer:
    """Batch normalisation with the authors' momentum 0.9 and epsilon 1e-5."""
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)
