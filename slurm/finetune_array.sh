#!/usr/bin/env bash
# Fine-tuning sweep as one SLURM job array: array task I runs line I of the sweep's manifest.
#
#   python -m ecg_hpc.hpc.sweep plan --data data/physionet2017.npz --pretrain runs/pretrain/NAME
#   sbatch slurm/finetune_array.sh                      # runs runs/finetune/manifest.jsonl, tasks 0-19
#   sbatch --array=0-39%8 slurm/finetune_array.sh       # another sweep size, at most 8 tasks at once
#   ECG_HPC_MANIFEST=runs/ft2/manifest.jsonl sbatch --output='runs/ft2/slurm-%A_%a.out' slurm/finetune_array.sh
#
# The #SBATCH lines below are the defaults of a GPU cluster: one GPU and 4 CPUs per task, the default sweep's 20
# tasks (random init plus the last checkpoint of one pretraining run, seeds 10..100), logs beside
# runs/finetune/manifest.jsonl. `python -m ecg_hpc.hpc.sweep plan` prints the exact line for the sweep it wrote and
# the cluster it runs on: the array range (and --max-parallel throttle), ECG_HPC_MANIFEST and --output for another
# sweep folder, and overrides where this header cannot run (`--gres=none` without GPUs, fewer CPUs), e.g.
#   ECG_HPC_MANIFEST=demo/runs/finetune/manifest.jsonl sbatch --array=0-8 \
#       --output=demo/runs/finetune/slurm-%A_%a.out --gres=none --cpus-per-task=2 slurm/finetune_array.sh
# Options on the sbatch command line override the lines below. Submit from the repository root: the paths here are
# relative to it. A task whose run.json says done exits at once, so submitting again runs only what is missing or
# failed; an index past the end of the manifest exits cleanly with a message. A container: ECG_HPC_IMAGE=FILE.sif;
# another interpreter: ECG_HPC_PYTHON (default: the checkout's .venv/bin/python when there is one, else python3).
#
#SBATCH --job-name=ecg-finetune
#SBATCH --array=0-19
#SBATCH --output=runs/finetune/slurm-%A_%a.out
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=4
#SBATCH --gres=gpu:1
#SBATCH --time=04:00:00
set -euo pipefail

MANIFEST="${ECG_HPC_MANIFEST:-runs/finetune/manifest.jsonl}"

cd "${SLURM_SUBMIT_DIR:-.}"
if [ -z "${SLURM_ARRAY_TASK_ID:-}" ]; then
    echo "error: SLURM_ARRAY_TASK_ID is not set: submit this script with sbatch (it is an array job)" >&2
    exit 2
fi
if [ -n "${ECG_HPC_IMAGE:-}" ]; then
    PYTHON=(apptainer exec --nv "$ECG_HPC_IMAGE" python3)
elif [ -n "${ECG_HPC_PYTHON:-}" ]; then
    PYTHON=("$ECG_HPC_PYTHON")
elif [ -x .venv/bin/python ]; then  # the project's venv (make setup), even when the shell has not activated it
    PYTHON=(.venv/bin/python)
else
    PYTHON=(python3)
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

echo "array task ${SLURM_ARRAY_JOB_ID:-?}_${SLURM_ARRAY_TASK_ID} on $(hostname): $MANIFEST line $SLURM_ARRAY_TASK_ID"
exec "${PYTHON[@]}" -m ecg_hpc.hpc.sweep run-task --manifest "$MANIFEST" --index "$SLURM_ARRAY_TASK_ID"
