"""ecg_hpc.train package."""
