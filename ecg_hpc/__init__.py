"""ecg-hpc: HPC batch system for transfer learning on ECG (Weimann & Conrad, Sci Rep 2021)."""

__version__ = "0.1.0"
