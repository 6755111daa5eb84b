"""ecg_hpc.models package."""
