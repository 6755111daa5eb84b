"""Transformer encoder and attention pooling, as in the authors' ``transplant/modules/{transformer,attn_pool}.py``.

Post-norm encoder layers (self-attention - residual - LayerNorm - Dense(dff) - ReLU - Dense(d_model) - residual -
LayerNorm). The encoder first scales its input by sqrt(d_model) and adds sinusoidal position encodings. Two
details of the authors' code are kept on purpose: attention logits are divided by sqrt(d_model) (not by the
per-head depth), and the future-prediction model uses dropout 0, so there are no dropout layers. Attention
softmax is computed in float32 under mixed precision.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

keras = tf.keras


def position_encoding(length: int, d_model: int) -> np.ndarray:
    """Sinusoidal position encodings ``(length, d_model)``: sin on even, cos on odd feature indices."""
    positions = np.arange(length)[:, None]
    index = np.arange(d_model)[None, :]
    angles = positions / np.power(10000.0, (2 * (index // 2)) / d_model)
    angles[:, 0::2] = np.sin(angles[:, 0::2])
    angles[:, 1::2] = np.cos(angles[:, 1::2])
    return angles.astype(np.float32)


class SelfAttention(keras.layers.Layer):
    """Multi-head self-attention with query/key/value/output projections Dense(d_model) (with bias)."""

    def __init__(self, d_model: int, num_heads: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if d_model % num_heads:
            raise ValueError(f"d_model {d_model} is not divisible by {num_heads} heads")
        self.d_model = d_model
        self.num_heads = num_heads
        self.query = keras.layers.Dense(d_model, name="query")
        self.key = keras.layers.Dense(d_model, name="key")
        self.value = keras.layers.Dense(d_model, name="value")
        self.output_projection = keras.layers.Dense(d_model, name="output")

    def _split_heads(self, x: tf.Tensor) -> tf.Tensor:
        """(batch, seq, d_model) -> (batch, heads, seq, depth)."""
        x = tf.reshape(x, (tf.shape(x)[0], -1, self.num_heads, self.d_model // self.num_heads))
        return tf.transpose(x, (0, 2, 1, 3))

    def call(self, x: tf.Tensor) -> tf.Tensor:
        """Attend every position to every position; return (batch, seq, d_model)."""
        q, k, v = (self._split_heads(f(x)) for f in (self.query, self.key, self.value))
        logits = tf.matmul(q, k, transpose_b=True) / tf.cast(tf.sqrt(float(self.d_model)), q.dtype)
        weights = tf.cast(tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1), v.dtype)
        attended = tf.transpose(tf.matmul(weights, v), (0, 2, 1, 3))
        attended = tf.reshape(attended, (tf.shape(x)[0], -1, self.d_model))
        return self.output_projection(attended)

    def get_config(self) -> dict[str, Any]:
        """Layer config, for Keras serialisation."""
        return {**super().get_config(), "d_model": self.d_model, "num_heads": self.num_heads}


class EncoderLayer(keras.layers.Layer):
    """One post-norm transformer encoder layer."""

    def __init__(self, d_model: int, num_heads: int, dff: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.d_model, self.num_heads, self.dff = d_model, num_heads, dff
        self.attention = SelfAttention(d_model, num_heads, name="attention")
        self.norm1 = keras.layers.LayerNormalization(name="norm1")
        self.ff1 = keras.layers.Dense(dff, activation="relu", name="ff1")
        self.ff2 = keras.layers.Dense(d_model, name="ff2")
        self.norm2 = keras.layers.LayerNormalization(name="norm2")

    def call(self, x: tf.Tensor) -> tf.Tensor:
        """Self-attention and feed-forward sublayers, each with a residual and LayerNorm."""
        x = self.norm1(x + self.attention(x))
        return self.norm2(x + self.ff2(self.ff1(x)))

    def get_config(self) -> dict[str, Any]:
        """Layer config, for Keras serialisation."""
        return {**super().get_config(), "d_model": self.d_model, "num_heads": self.num_heads, "dff": self.dff}


class AttentionPooling(keras.layers.Layer):
    """Pool (batch, seq, d_model) to (batch, d_model): prepend a learnable token, encode, keep the token.

    The token starts truncated-normal (stddev 1) as in the authors' code.
    """

    def __init__(self, d_model: int, num_layers: int = 3, num_heads: int = 8, dff: int | None = None,
                 max_len: int = 512, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.d_model, self.num_layers, self.num_heads = d_model, num_layers, num_heads
        self.dff = dff or 2 * d_model
        self.max_len = max_len
        self.positions = tf.constant(position_encoding(max_len, d_model))
        self.encoder_layers = [EncoderLayer(d_model, num_heads, self.dff, name=f"encoder{i + 1}")
                               for i in range(num_layers)]

    def build(self, input_shape: tf.TensorShape) -> None:
        """Create the pool token."""
        if input_shape[-1] != self.d_model:
            raise ValueError(f"AttentionPooling: inputs have {input_shape[-1]} features, d_model is {self.d_model}")
        if input_shape[1] is not None and input_shape[1] + 1 > self.max_len:
            raise ValueError(f"AttentionPooling: {input_shape[1]} steps plus the token exceed max_len {self.max_len}")
        self.token = self.add_weight(name="pool_token", shape=(self.d_model,),
                                     initializer=keras.initializers.TruncatedNormal(stddev=1.0))
        super().build(input_shape)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        """Return the encoded pool token for each sequence of the batch."""
        token = tf.tile(tf.cast(self.token, x.dtype)[None, None, :], (tf.shape(x)[0], 1, 1))
        x = tf.concat([token, x], axis=1)
        x = x * tf.cast(tf.sqrt(float(self.d_model)), x.dtype)
        x = x + tf.cast(self.positions[: tf.shape(x)[1]], x.dtype)[None]
        for layer in self.encoder_layers:
            x = layer(x)
        return x[:, 0, :]

    def get_config(self) -> dict[str, Any]:
        """Layer config, for Keras serialisation."""
        return {**super().get_config(), "d_model": self.d_model, "num_layers": self.num_layers,
                "num_heads": self.num_heads, "dff": self.dff, "max_len": self.max_len}
