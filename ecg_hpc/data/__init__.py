"""ecg_hpc.data package."""
