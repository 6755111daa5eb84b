"""Numeric precision and compilation options for training on GPUs.

``configure_precision(name)`` sets the Keras global dtype policy; call it BEFORE building a model (a model
keeps the policy it was built under). ``float32`` is the default and what the study used. ``mixed_bfloat16``
(A100/H100) and ``mixed_float16`` (V100 and later) compute in half precision with float32 variables; the
models here keep the head, the logits, any softmax and the spectrogram in float32 regardless. Under
``mixed_float16`` ``keras.Model.compile`` wraps the optimizer in a ``LossScaleOptimizer`` by itself (dynamic loss
scaling, needed against float16 gradient underflow); bfloat16 needs no loss scaling.

XLA: pass ``jit_compile=True`` to ``model.compile`` (the tasks' ``compile_model`` takes it) to compile the
training step with XLA; it fuses the BN/ReLU/add chains of the ResNets and typically speeds up GPU training,
at the cost of a compile at the first step and whenever an input shape changes (keep the last batch full,
e.g. ``drop_remainder=True``). It is off by default.
"""

from __future__ import annotations

import tensorflow as tf

from ecg_hpc.errors import ConfigError
from ecg_hpc.names import PRECISIONS

keras = tf.keras


def configure_precision(name: str = "float32") -> keras.mixed_precision.Policy:
    """Set the global Keras dtype policy to ``name`` (one of ``PRECISIONS``) and return it."""
    if name not in PRECISIONS:
        raise ConfigError(f"--precision: unknown {name!r}; choose one of {', '.join(PRECISIONS)}")
    keras.mixed_precision.set_global_policy(name)
    return keras.mixed_precision.global_policy()
