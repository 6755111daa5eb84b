"""The exact ``sbatch ... slurm/finetune_array.sh`` line that runs a sweep's manifest on the cluster at hand.

The script's ``#SBATCH`` header keeps the defaults of a GPU cluster (one GPU and 4 CPUs per task, the default
sweep's 20 tasks, logs in ``runs/finetune``). ``sbatch_line`` adds what this sweep and this partition need: the array
range and throttle, the manifest and log folder of a non-default sweep, and overrides of header lines the partition
could never satisfy (``--gres=none`` without GPUs, fewer CPUs than the header asks for).
"""

from __future__ import annotations

import re
import shlex
import shutil
import sys
from pathlib import Path

from ecg_hpc.hpc.partition import Partition, gres_gpus

REPO = Path(__file__).resolve().parents[2]
ARRAY_SCRIPT = REPO / "slurm" / "finetune_array.sh"


def header_options(script: Path = ARRAY_SCRIPT) -> dict[str, str]:
    """The ``#SBATCH --key=value`` lines of ``script`` as {key: value}."""
    text = script.read_text(encoding="utf-8")
    return dict(re.findall(r"^#SBATCH\s+--([\w-]+)=(\S+)", text, re.M))


def resource_overrides(partition: Partition, header: dict[str, str]) -> list[str]:
    """sbatch options replacing header resources that no node of ``partition`` offers."""
    options = []
    if gres_gpus(header.get("gres", "")) > partition.gpus_per_node:
        options.append("--gres=none" if partition.gpus_per_node == 0 else f"--gres=gpu:{partition.gpus_per_node}")
    if partition.cpus_per_node and int(header.get("cpus-per-task", "1")) > partition.cpus_per_node:
        options.append(f"--cpus-per-task={partition.default_cpus_per_task(max(1, partition.gpus_per_node))}")
    return options


def _relative(path: Path) -> str:
    """``path`` relative to the working directory (where sbatch is typed) when below it, else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())


def _script_python() -> Path | None:
    """The bin folder of the interpreter the script picks when typed from here: ./.venv's, else python3's on PATH
    (folders, not binaries: a venv's python links outside the venv)."""
    venv = Path.cwd() / ".venv" / "bin"
    if (venv / "python").exists():
        return venv.resolve()
    python3 = shutil.which("python3")
    return Path(python3).absolute().parent.resolve() if python3 else None


def sbatch_line(manifest: Path, n_tasks: int, max_parallel: int | None, partition: Partition | None,
                script: Path = ARRAY_SCRIPT) -> str:
    """The command that submits every task of ``manifest`` with ``script`` here (typed from the working directory).

    ``ECG_HPC_MANIFEST`` and ``--output`` appear when the manifest is not the header's; ``ECG_HPC_PYTHON`` when the
    interpreter the script would pick (``./.venv``, else ``python3`` on PATH) is not this one.
    """
    header = header_options(script)
    env = []
    default_manifest = (REPO / "runs" / "finetune" / "manifest.jsonl").resolve()
    if manifest.resolve() != default_manifest or Path.cwd().resolve() != REPO:
        env.append(f"ECG_HPC_MANIFEST={shlex.quote(_relative(manifest))}")
    if _script_python() != Path(sys.executable).absolute().parent.resolve():
        env.append(f"ECG_HPC_PYTHON={shlex.quote(sys.executable)}")
    array = f"--array=0-{n_tasks - 1}" + (f"%{max_parallel}" if max_parallel else "")
    options = [array]
    if "ECG_HPC_MANIFEST" in " ".join(env):
        options.append(f"--output={shlex.quote(_relative(manifest.parent / 'slurm-%A_%a.out'))}")
    if partition is not None:
        options += resource_overrides(partition, header)
    return " ".join([*env, "sbatch", *options, shlex.quote(_relative(script))])
