#!/usr/bin/env bash
# The one install recipe of ecg-hpc, used by a laptop, CI and the Apptainer image alike.
#
#   container/install.sh            CPU environment in .venv (tensorflow-cpu, Horovod with Gloo)
#   container/install.sh --gpu      GPU environment: reuse the TensorFlow already installed (the image's),
#                                   build Horovod with NCCL for GPU allreduce
#
# Environment: ECG_HPC_VENV (virtual environment, default .venv in the repository; "system" installs into the
# current Python instead, as the image does), PYTHON (interpreter that creates it, default python3.11 or python3),
# ECG_HPC_FORCE=1 (reinstall even when nothing changed).
#
# Steps: create or reuse the environment; install the pinned dependencies from pyproject.toml (Horovod excluded);
# build Horovod from source against that TensorFlow with the flags that fit the machine; install the project in
# editable mode; verify that `horovodrun --check-build` lists TensorFlow and Gloo. A stamp of the inputs makes a
# second run with nothing changed a no-op that takes seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODE=cpu
for arg in "$@"; do
    case "$arg" in
        --gpu) MODE=gpu ;;
        --cpu) MODE=cpu ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown option '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

say() { echo "[install] $*"; }
die() { echo "[install] error: $*" >&2; exit 1; }

# with_heartbeat WHAT CMD...: run CMD, saying every minute that WHAT is still going; CMD's exit status.
with_heartbeat() {
    local what="$1" start=$SECONDS pid next=60
    shift
    "$@" &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        sleep 2
        if (( SECONDS - start >= next )); then
            say "$what: $(( (SECONDS - start) / 60 )) min so far"
            next=$((next + 60))
        fi
    done
    wait "$pid"
}

VENV="${ECG_HPC_VENV:-$ROOT/.venv}"
if [ "$VENV" = system ]; then
    PY="${PYTHON:-python3}"
else
    BASE_PY="${PYTHON:-$(command -v python3.11 || command -v python3 || true)}"
    [ -n "$BASE_PY" ] || die "no python3.11 found; install Python 3.11 or set PYTHON"
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating virtual environment $VENV"
        flags=()
        # The GPU image brings TensorFlow in the system site-packages: let the venv see it.
        [ "$MODE" = gpu ] && flags+=(--system-site-packages)
        "$BASE_PY" -m venv "${flags[@]}" "$VENV" || die "could not create $VENV with $BASE_PY"
    fi
    PY="$VENV/bin/python"
fi
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' 2>/dev/null \
    || die "$PY is $("$PY" -V 2>&1), ecg-hpc needs Python 3.11"

# Horovod build flags: TensorFlow and Gloo always; MPI where an MPI compiler exists; NCCL where a CUDA toolkit exists.
export HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1
if command -v mpicxx >/dev/null; then export HOROVOD_WITH_MPI=1; else export HOROVOD_WITHOUT_MPI=1; fi
if [ "$MODE" = gpu ]; then
    command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ] \
        || die "--gpu needs a CUDA toolkit (nvcc) to build Horovod with NCCL"
    export HOROVOD_GPU_OPERATIONS=NCCL PATH="/usr/local/cuda/bin:$PATH"
fi
export MAKEFLAGS="-j$(nproc)"

STAMP="$("$PY" - "$ROOT" "$MODE" <<'EOF'
import hashlib, pathlib, sys, os
root, mode = pathlib.Path(sys.argv[1]), sys.argv[2]
h = hashlib.sha256()
for name in ("pyproject.toml", "container/install.sh"):
    h.update((root / name).read_bytes())
h.update(mode.encode())
h.update(" ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("HOROVOD_")).encode())
h.update(sys.version.encode())
print(h.hexdigest())
EOF
)"
STAMP_FILE="$("$PY" -c 'import sys; print(sys.prefix)')/.ecg-hpc-install.stamp"

quick_check() {
    "$PY" - <<'EOF' 2>/dev/null
import horovod.tensorflow as hvd, ecg_hpc, tensorflow as tf
assert hvd.gloo_built() and tf.__version__.startswith("2.15.")
EOF
}

if [ "${ECG_HPC_FORCE:-0}" != 1 ] && [ -f "$STAMP_FILE" ] && [ "$(cat "$STAMP_FILE")" = "$STAMP" ]; then
    if TF_CPP_MIN_LOG_LEVEL=3 quick_check; then
        say "up to date ($MODE, $PY): nothing to do"
        exit 0
    fi
    say "stamp matches but the environment is broken: reinstalling"
fi

say "mode $MODE, python $PY"
"$PY" -m pip install -q --upgrade "pip>=23.2" "setuptools>=68,<81" wheel || die "could not upgrade pip/setuptools"

# Pinned requirements come from pyproject.toml (the single source of the pins); Horovod is built below.
mapfile -t REQS < <("$PY" - "$ROOT/pyproject.toml" "$MODE" <<'EOF'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
extras = project["optional-dependencies"]
reqs = list(project["dependencies"]) + extras["test"]
if sys.argv[2] == "cpu":
    reqs += extras["cpu"]
for req in reqs:
    if not req.lower().startswith("horovod"):
        print(req)
EOF
)
HVD_REQ="$("$PY" -c 'import sys,tomllib; print(next(r for r in tomllib.load(open(sys.argv[1],"rb"))["project"]["dependencies"] if r.startswith("horovod")))' "$ROOT/pyproject.toml")"

if [ "$MODE" = gpu ]; then
    "$PY" -c 'import tensorflow as tf; assert tf.__version__.startswith("2.15.")' 2>/dev/null \
        || die "--gpu reuses the installed TensorFlow 2.15 (the image's), but $PY has none or another version"
fi
say "installing ${#REQS[@]} pinned requirements"
"$PY" -m pip install -q "${REQS[@]}" || die "pip install of the pinned requirements failed"

if "$PY" -c 'import horovod.tensorflow as h; assert h.gloo_built()' 2>/dev/null \
        && [ "$("$PY" -c 'import horovod; print(horovod.__version__)')" = "${HVD_REQ#horovod==}" ] \
        && { [ "$MODE" = cpu ] || "$PY" -c 'import horovod.tensorflow as h; assert h.nccl_built()' 2>/dev/null; }; then
    say "$HVD_REQ already built with TensorFlow and Gloo"
else
    # Measured: about 8 minutes on 2 cores (the C++ compile dominates), so about 16 core-minutes.
    cores="$(nproc 2>/dev/null || echo 2)"
    say "building $HVD_REQ from source: about $(( (16 + cores - 1) / cores < 2 ? 2 : (16 + cores - 1) / cores )) min" \
        "on these $cores cores, quiet until done (flags: $(env | grep ^HOROVOD_ | sort | tr '\n' ' '))"
    with_heartbeat "building Horovod" \
        "$PY" -m pip install -q --no-build-isolation --no-binary horovod --force-reinstall --no-deps "$HVD_REQ" \
        || die "building Horovod failed (it needs g++, cmake and the TensorFlow installed above)"
    "$PY" -m pip install -q "$HVD_REQ" || die "installing Horovod's dependencies failed"
fi

say "installing ecg-hpc in editable mode"
"$PY" -m pip install -q --no-deps --no-build-isolation -e "$ROOT" || die "editable install of $ROOT failed"

say "verifying: horovodrun --check-build"
HVDRUN="$(dirname "$PY")/horovodrun"
[ -x "$HVDRUN" ] || HVDRUN="$(command -v horovodrun || true)"
[ -n "$HVDRUN" ] || die "horovodrun not found after the install"
CHECK="$(TF_CPP_MIN_LOG_LEVEL=3 "$HVDRUN" --check-build 2>/dev/null)" || die "horovodrun --check-build failed"
grep -q '\[X\] TensorFlow' <<<"$CHECK" || die "Horovod was built without TensorFlow:\n$CHECK"
grep -q '\[X\] Gloo' <<<"$CHECK" || die "Horovod was built without Gloo:\n$CHECK"
if [ "$MODE" = gpu ]; then grep -q '\[X\] NCCL' <<<"$CHECK" || die "Horovod was built without NCCL:\n$CHECK"; fi
echo "$STAMP" >"$STAMP_FILE"
say "done: $("$PY" -c 'import tensorflow as t, horovod as h; print(f"TensorFlow {t.__version__}, Horovod {h.__version__}")' 2>/dev/null); activate with: source ${VENV%/}/bin/activate"
