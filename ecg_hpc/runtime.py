"""Process-wide settings that must be in place before TensorFlow is imported, set once by each entry point.

Every command that may import TensorFlow calls ``configure_runtime()`` first thing in its ``main``; nothing sets
them at import time, so importing a module never changes the process. The CPU thread pools are sized later, per
worker, from the job's CPUs (``ecg_hpc.train.threads``).
"""

from __future__ import annotations

import os

LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"


def configure_runtime() -> None:
    """TensorFlow's C++ log at warnings and above (its info lines drown the progress lines); oneDNN left at
    TensorFlow's default (on for x86-64: the ResNet shortcut avoids the faulty strided 1x1 kernel). A value the
    user exported wins. Has an effect only before TensorFlow is imported."""
    os.environ.setdefault(LOG_LEVEL_ENV, "1")
