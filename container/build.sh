#!/usr/bin/env bash
# Build the Apptainer image of ecg-hpc: container/build.sh [OUTPUT.sif]   (default ecg_hpc.sif)
# Needs apptainer (https://apptainer.org) with network access to Docker Hub; run it on a login or build node.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-ecg_hpc.sif}"
if ! command -v apptainer >/dev/null; then
    echo "build.sh: error: apptainer is not installed or not on PATH." >&2
    echo "  Install Apptainer (e.g. 'module load apptainer' on a cluster) and run again;" >&2
    echo "  the recipe is $ROOT/container/ecg_hpc.def." >&2
    exit 1
fi
cd "$ROOT"
echo "building $OUT from container/ecg_hpc.def"
apptainer build --fakeroot "$OUT" container/ecg_hpc.def
apptainer test "$OUT"
echo "built $OUT; use it with: python launch/pretrain.py --image $OUT ..."
