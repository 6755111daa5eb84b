"""ecg-hpc: HPC batch system for transfer learning on ECG (Weimann & Conrad, Sci Rep 2021)."""

import os as _os

# TF 2.15.1 with oneDNN on corrupts the heap on CPU in a strided 1x1 Conv1D (the ResNet shortcut): "free(): invalid
# size" inside fit. Off by default for every entry point (it must be set before TensorFlow is imported); it also
# keeps CPU results reproducible. Export TF_ENABLE_ONEDNN_OPTS=1 to override.
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

__version__ = "0.1.0"
