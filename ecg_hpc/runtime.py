"""Process-wide settings that must be in place before TensorFlow is imported, set once by each entry point.

Every command that may import TensorFlow calls ``configure_runtime()`` first thing in its ``main``; nothing sets
them at import time, so importing a module never changes the process.
"""

from __future__ import annotations

import os

ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"


def configure_runtime() -> None:
    """oneDNN off unless the user exported ``TF_ENABLE_ONEDNN_OPTS``: with it TF 2.15.1 corrupts the heap on CPU in a
    strided 1x1 Conv1D (the ResNet shortcut, "free(): invalid size" inside fit), and off keeps CPU results
    reproducible. Has an effect only before TensorFlow is imported."""
    os.environ.setdefault(ONEDNN_ENV, "0")
