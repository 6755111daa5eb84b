"""The commands a user runs: submit pretraining and fine-tuning jobs, run the demo (``python launch/NAME.py``
or the ``ecg-hpc-*`` console scripts)."""
