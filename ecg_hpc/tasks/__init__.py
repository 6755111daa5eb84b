"""ecg_hpc.tasks package."""
