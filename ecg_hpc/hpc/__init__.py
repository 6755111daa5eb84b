"""ecg_hpc.hpc package."""
