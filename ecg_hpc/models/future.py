"""The contrastive future-prediction model of the study (the authors' ``CPCSolver``, task ``cpc``).

Inputs ``{"context": (batch, C, frame, 1), "candidates": (batch, K, frame, 1)}``. One shared feature extractor
embeds every frame; the C context embeddings are pooled by attention pooling (learnable token + 3-layer
transformer encoder, d_model = the feature size, 8 heads, dff = 2 d_model, no dropout); the score of each
candidate is the dot product of the pooled context with its embedding, with no projection in between.
Output: ``(batch, K)`` float32 logits; the label is the index of the true next frame among the candidates.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from ecg_hpc.errors import ConfigError
from ecg_hpc.models.architectures import build_feature_extractor
from ecg_hpc.models.transformer import AttentionPooling

keras = tf.keras

NUM_LAYERS = 3
NUM_HEADS = 8


class FrameEmbedding(keras.layers.Layer):
    """Apply a feature extractor to every frame: (batch, n, frame, ch) -> (batch, n, features)."""

    def __init__(self, feature_extractor: keras.Model, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.feature_extractor = feature_extractor

    def call(self, frames: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        """Fold the frames into the batch, embed them, unfold."""
        shape = tf.shape(frames)
        flat = tf.reshape(frames, (-1, *frames.shape[2:]))
        features = self.feature_extractor(flat, training=training)
        return tf.reshape(features, (shape[0], shape[1], features.shape[-1]))


class CandidateScores(keras.layers.Layer):
    """Dot product of the pooled context (batch, d) with each candidate (batch, K, d), in float32."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        """Return (batch, K) scores."""
        context, candidates = inputs
        return tf.einsum("bd,bkd->bk", context, candidates)


def build_future_model(arch: str, frame_size: int, width: float, context_size: int,
                       num_candidates: int | None = None, channels: int = 1) -> keras.Model:
    """Future-prediction model over ``context_size`` frames of ``frame_size`` samples (the task's layout says how
    many); ``num_candidates`` None = any K."""
    if context_size < 1:
        raise ConfigError(f"--context-size must be positive, got {context_size}")
    feature_extractor = build_feature_extractor(arch, (frame_size, channels), width)
    d_model = feature_extractor.spec.feature_dim
    if d_model % NUM_HEADS:
        raise ConfigError(f"--width {width}: {arch} then has {d_model} features, not divisible by "
                          f"{NUM_HEADS} attention heads")
    context = keras.Input((context_size, frame_size, channels), name="context")
    candidates = keras.Input((num_candidates, frame_size, channels), name="candidates")
    embed = FrameEmbedding(feature_extractor, name="frame_embedding")
    pooled = AttentionPooling(d_model, NUM_LAYERS, NUM_HEADS, 2 * d_model, name="context_pooling")(embed(context))
    scores = CandidateScores(name="scores")([pooled, embed(candidates)])
    return keras.Model({"context": context, "candidates": candidates}, scores, name=f"future_{arch}")
