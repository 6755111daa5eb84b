# ecg-hpc: the two commands a new user and CI run.
#   make demo   set up (container/install.sh), then run the whole study at small scale on this machine
#               (SEEDS=0,1,2 picks the fine-tuning seeds)
#   make test   set up, then run the full test suite (starts the project's own test SLURM; needs root)
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo demo-real test test-quick slurm-start slurm-stop

setup:
	ECG_HPC_VENV=$(VENV) bash container/install.sh

demo: setup
	$(PY) launch/demo.py $(if $(SEEDS),--seeds $(SEEDS),)

demo-real: setup
	$(PY) launch/demo.py --real $(if $(RECORDS),--records $(RECORDS),)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-quick: setup
	$(PY) -m pytest -m "not slurm and not horovod and not e2e and not slow" $(PYTEST_ARGS)

slurm-start:
	tests/cluster/slurm.sh start

slurm-stop:
	tests/cluster/slurm.sh stop
