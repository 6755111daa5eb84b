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


class BatchNormalization(keras.layers.BatchNormalization):
    """Keras batch normalisation that runs TensorFlow's fused kernel on 1-D feature maps as well.

    Keras fuses batch normalisation only for rank-4/5 inputs; on a Conv1D output (batch, length, channels) it
    falls back to a chain of separate reductions and element-wise ops, forward and backward, which took most of
    a ResNet-18 training step on CPU. This layer normalises such an input as (batch, 1, length, channels), the
    layout Conv1D itself uses internally: same statistics over batch and length, same variables (gamma, beta,
    moving mean and variance, shaped (channels,)), same weight names, so checkpoints and the authors' weights
    load unchanged. TF's fused op raises an epsilon below 1.001e-5 to that (1e-5 becomes 1.001e-5).
    """

    def build(self, input_shape: tf.TensorShape) -> None:
        """Build as for (batch, 1, length, channels) when the input is 1-D; the input spec stays rank 3."""
        shape = tf.TensorShape(input_shape)
        self._as_2d = shape.rank == 3
        if self._as_2d:
            shape = tf.TensorShape([shape[0], 1, shape[1], shape[2]])
        super().build(shape)
        if self._as_2d:
            self.input_spec = keras.layers.InputSpec(ndim=3, axes={-1: int(shape[-1])})

    def call(self, inputs: tf.Tensor, training: bool | None = None, mask: tf.Tensor | None = None) -> tf.Tensor:
        """Normalise; a 1-D input goes through the fused kernel with a unit height axis added and removed."""
        if not self._as_2d:
            return super().call(inputs, training=training, mask=mask)
        return tf.squeeze(super().call(tf.expand_dims(inputs, 1), training=training), 1)

    def compute_output_shape(self, input_shape: tf.TensorShape) -> tf.TensorShape:
        """The input's shape."""
        return tf.TensorShape(input_shape)


def batch_norm(name: str) -> keras.layers.Layer:
    """Batch normalisation with the authors' momentum 0.9 and epsilon 1e-5 (fused also on 1-D inputs)."""
    return BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)
