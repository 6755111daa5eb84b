"""Residual networks in 1-D and 2-D, layer for layer as in the authors' ``transplant/modules/resnet1d.py``.

Stem: conv(64, k=7, s=2) - BN - ReLU - max-pool(3, s=2, same). Then four stages of filters (64, 128, 256, 512);
the first block of stages 2-4 has stride 2. A block's shortcut is a 1x1 conv + BN (with the block's stride,
taken as a subsampling before the conv, which computes the same) whenever the channel count or the stride
changes, else the identity; the sum goes through a ReLU. The body ends in global average pooling, so any input
length (or spectrogram length) gives the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass
import tensorflow as tf

from ecg_hpc.models.layers import batch_norm, conv, scaled, subsample

keras = tf.keras

STAGE_FILTERS = (64, 128, 256, 512)
STEM_FILTERS = 64
STEM_KERNEL = 7
BOTTLENECK_EXPANSION = 4


@dataclass(frozen=True)
class ResNetSpec:
    """Shape of one residual network: blocks and kernel size per stage, block type, 1-D or 2-D."""

    blocks: tuple[int, ...]
    kernels: tuple[int, ...]
    bottleneck: bool
    dims: int

    def feature_dim(self, width: float = 1.0) -> int:
        """Size of the pooled feature vector: the last stage's output channels."""
        expansion = BOTTLENECK_EXPANSION if self.bottleneck else 1
        return scaled(STAGE_FILTERS[-1], width) * expansion


def _shortcut(x: tf.Tensor, out_channels: int, strides: int, spec: ResNetSpec, name: str) -> tf.Tensor:
    """Identity, or 1x1 conv + BN when the block changes the channel count or the resolution.

    The conv's stride is applied as a subsampling before it (see ``layers.subsample``): the same function and
    weights as the authors' strided 1x1 conv, without the oneDNN kernel that corrupts the heap.
    """
    if x.shape[-1] == out_channels and strides == 1:
        return x
    if strides > 1:
        x = subsample(spec.dims, strides, f"{name}_proj_subsample")(x)
    x = conv(spec.dims, out_channels, 1, 1, f"{name}_proj_conv")(x)
    return batch_norm(f"{name}_proj_bn")(x)


def _basic_block(x: tf.Tensor, filters: int, kernel: int, strides: int, spec: ResNetSpec,
                 name: str) -> tf.Tensor:
    """conv(k, s) - BN - ReLU - conv(k) - BN, plus shortcut, then ReLU."""
    shortcut = _shortcut(x, filters, strides, spec, name)
    x = conv(spec.dims, filters, kernel, strides, f"{name}_conv1")(x)
    x = batch_norm(f"{name}_bn1")(x)
    x = keras.layers.ReLU(name=f"{name}_relu1")(x)
    x = conv(spec.dims, filters, kernel, 1, f"{name}_conv2")(x)
    x = batch_norm(f"{name}_bn2")(x)
    x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def _bottleneck_block(x: tf.Tensor, filters: int, kernel: int, strides: int, spec: ResNetSpec,
                      name: str) -> tf.Tensor:
    """conv1x1 - BN - ReLU - conv(k, s) - BN - ReLU - conv1x1(4 f) - BN, plus shortcut, then ReLU."""
    out_channels = filters * BOTTLENECK_EXPANSION
    shortcut = _shortcut(x, out_channels, strides, spec, name)
    x = conv(spec.dims, filters, 1, 1, f"{name}_conv1")(x)
    x = batch_norm(f"{name}_bn1")(x)
    x = keras.layers.ReLU(name=f"{name}_relu1")(x)
    x = conv(spec.dims, filters, kernel, strides, f"{name}_conv2")(x)
    x = batch_norm(f"{name}_bn2")(x)
    x = keras.layers.ReLU(name=f"{name}_relu2")(x)
    x = conv(spec.dims, out_channels, 1, 1, f"{name}_conv3")(x)
    x = batch_norm(f"{name}_bn3")(x)
    x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def resnet_body(x: tf.Tensor, spec: ResNetSpec, width: float = 1.0) -> tf.Tensor:
    """Apply stem, residual stages and global average pooling to ``x``; return the feature vector."""
    pool = keras.layers.MaxPooling1D if spec.dims == 1 else keras.layers.MaxPooling2D
    gap = keras.layers.GlobalAveragePooling1D if spec.dims == 1 else keras.layers.GlobalAveragePooling2D
    block = _bottleneck_block if spec.bottleneck else _basic_block
    x = conv(spec.dims, scaled(STEM_FILTERS, width), STEM_KERNEL, 2, "stem_conv")(x)
    x = batch_norm("stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    x = pool(3, 2, padding="same", name="stem_pool")(x)
    for stage, (num_blocks, kernel) in enumerate(zip(spec.blocks, spec.kernels)):
        filters = scaled(STAGE_FILTERS[stage], width)
        for index in range(num_blocks):
            strides = 2 if index == 0 and stage > 0 else 1
            x = block(x, filters, kernel, strides, spec, name=f"stage{stage + 1}_block{index + 1}")
    return gap(name="global_pool")(x)

