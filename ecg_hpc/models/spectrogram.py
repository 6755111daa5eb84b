"""Spectrogram as a Keras layer, so one 1-D data pipeline feeds the 2-D (spectrogram) ResNet too."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

keras = tf.keras

WINDOW = 256
HOP = 32
BINS = 128


class Spectrogram(keras.layers.Layer):
    """(batch, length, 1) signal -> (batch, time, bins, 1) STFT magnitude (Hann window, lowest ``bins`` bins).

    Computed in float32 whatever the global precision policy (the next layer casts), since the FFT is not
    defined for half precision. ``time = 1 + (length - window) // hop`` (no padding at the end).
    """

    def __init__(self, window: int = WINDOW, hop: int = HOP, bins: int = BINS, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if bins > window // 2 + 1:
            raise ValueError(f"Spectrogram: {bins} bins asked, a window of {window} has {window // 2 + 1}")
        self.window = window
        self.hop = hop
        self.bins = bins

    def build(self, input_shape: tf.TensorShape) -> None:
        """Check the input is one channel and at least one window long."""
        length, channels = input_shape[-2], input_shape[-1]
        if channels != 1:
            raise ValueError(f"Spectrogram: input must have 1 channel, got shape {tuple(input_shape)}")
        if length is not None and length < self.window:
            raise ValueError(f"Spectrogram: input length {length} is shorter than the window {self.window}")
        super().build(input_shape)

    def call(self, signal: tf.Tensor) -> tf.Tensor:
        """Return the magnitude of the short-time Fourier transform, lowest ``bins`` frequencies."""
        stft = tf.signal.stft(signal[..., 0], frame_length=self.window, frame_step=self.hop,
                              fft_length=self.window, window_fn=tf.signal.hann_window)
        return tf.abs(stft[..., : self.bins])[..., None]

    def get_config(self) -> dict[str, Any]:
        """Layer config, for Keras serialisation."""
        return {**super().get_config(), "window": self.window, "hop": self.hop, "bins": self.bins}
