"""The study's networks by name: feature extractors and classifiers with a Dense head.

A classifier is ``Input -> feature_extractor (nested keras.Model named "feature_extractor") -> Dense head``;
the nested model is what weight transfer moves (see ``ecg_hpc.models.transfer``). The authors' settings
(``finetuning/utils.py``): kernels (7, 5, 5, 3) for all 1-D nets, blocks (2, 2, 2, 2) for ResNet-18 and
(3, 4, 6, 3) for ResNet-34 and ResNet-50 (bottleneck). ``resnet18_2d`` is the spectrogram ablation: a Keras
spectrogram layer (Hann 256, hop 32, 128 lowest bins, magnitude) in front of a 2-D ResNet-18 with 3x3 kernels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import tensorflow as tf

from ecg_hpc.errors import ConfigError
from ecg_hpc.names import ARCHS
from ecg_hpc.models.resnet import ResNetSpec, resnet_body
from ecg_hpc.models.spectrogram import WINDOW, Spectrogram

keras = tf.keras

FEATURE_EXTRACTOR = "feature_extractor"
HEAD = "head"

_SPECS = {
    "resnet18": ResNetSpec(blocks=(2, 2, 2, 2), kernels=(7, 5, 5, 3), bottleneck=False, dims=1),
    "resnet34": ResNetSpec(blocks=(3, 4, 6, 3), kernels=(7, 5, 5, 3), bottleneck=False, dims=1),
    "resnet50": ResNetSpec(blocks=(3, 4, 6, 3), kernels=(7, 5, 5, 3), bottleneck=True, dims=1),
    "resnet18_2d": ResNetSpec(blocks=(2, 2, 2, 2), kernels=(3, 3, 3, 3), bottleneck=False, dims=2),
}  # one per name of ecg_hpc.names.ARCHS


@dataclass(frozen=True)
class FeatureSpec:
    """What a feature extractor is, for checking a weight transfer: arch, width, input channels, dims."""

    arch: str
    width: float
    input_channels: int
    dims: int
    feature_dim: int


def arch_spec(arch: str) -> ResNetSpec:
    """The ResNet layout of ``arch``; ConfigError naming the known ones when unknown."""
    try:
        return _SPECS[arch]
    except KeyError:
        raise ConfigError(f"--arch: unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}") from None


def _check_input_shape(arch: str, input_shape: Sequence[int | None], width: float) -> tuple[int | None, int]:
    """Validate ``(length, channels)`` for ``arch`` and ``width``; return it as a tuple."""
    if len(input_shape) != 2:
        raise ConfigError(f"input shape must be (length, channels), got {tuple(input_shape)}")
    length, channels = input_shape
    if not channels or channels < 1:
        raise ConfigError(f"input shape {tuple(input_shape)}: channels must be a positive number")
    if not width > 0:
        raise ConfigError(f"--width must be positive, got {width}")
    if arch_spec(arch).dims == 2:
        if channels != 1:
            raise ConfigError(f"{arch} takes a single-lead signal (1 channel), got {channels} channels")
        if length is not None and length < WINDOW:
            raise ConfigError(f"{arch}: frame size {length} is shorter than the spectrogram window {WINDOW}")
    return length, int(channels)


def build_feature_extractor(arch: str, input_shape: Sequence[int | None], width: float = 1.0) -> keras.Model:
    """Network of ``arch`` without head, ``(batch, length, channels) -> (batch, features)``.

    ``width`` scales every filter count (1.0 = the paper's network; tests and demos use e.g. 0.125). The model
    is named ``feature_extractor`` and carries a ``spec`` (``FeatureSpec``) for weight-transfer checks.
    """
    spec = arch_spec(arch)
    shape = _check_input_shape(arch, input_shape, width)
    inputs = keras.Input(shape, name="signal")
    x = Spectrogram(name="spectrogram")(inputs) if spec.dims == 2 else inputs
    features = resnet_body(x, spec, width)
    model = keras.Model(inputs, features, name=FEATURE_EXTRACTOR)
    model.spec = FeatureSpec(arch=arch, width=float(width), input_channels=shape[1], dims=spec.dims,
                             feature_dim=spec.feature_dim(width))
    return model


def build_model(arch: str, num_classes: int, input_shape: Sequence[int | None],
                head_activation: str | None = None, width: float = 1.0, name: str | None = None) -> keras.Model:
    """Classifier: feature extractor of ``arch`` plus ``Dense(num_classes)`` named ``head``.

    ``head_activation=None`` gives logits (pretraining, loss from logits); ``"softmax"`` gives probabilities
    (fine-tuning). Head and activation always compute in float32, also under a mixed-precision policy.
    """
    if num_classes < 1:
        raise ConfigError(f"number of classes must be positive, got {num_classes}")
    feature_extractor = build_feature_extractor(arch, input_shape, width)
    inputs = keras.Input(tuple(input_shape), name="ecg")
    outputs = keras.layers.Dense(num_classes, dtype="float32", name=HEAD)(feature_extractor(inputs))
    if head_activation is not None:
        outputs = keras.layers.Activation(head_activation, dtype="float32", name="probabilities")(outputs)
    return keras.Model(inputs, outputs, name=name or f"{arch}_classifier")
