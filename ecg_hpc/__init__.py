"""ecg-hpc: HPC batch system for transfer learning on ECG (Weimann & Conrad, Sci Rep 2021).

Importing the package changes nothing in the process: each entry point sets the runtime it needs
(``ecg_hpc.runtime.configure_runtime``) before TensorFlow is imported.
"""

__version__ = "0.1.0"
