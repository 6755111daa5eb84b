"""CPU threads of a TensorFlow worker from the CPUs its job was given, and the record of that choice for run.json.

A batch job may run on a node with far more cores than it was allotted; TensorFlow sizes its thread pools by
the cores it can see, so it oversubscribes the job's share whenever SLURM does not bind tasks to their CPUs.
A worker's CPUs are SLURM's ``SLURM_CPUS_PER_TASK`` when set (each worker is one task), else its share of the
process's affinity mask (what ``taskset``, cgroups or SLURM's binding left it) among the workers on the node.
oneDNN's kernels run on TensorFlow's intra-op pool, so this sizes them too.
"""

from __future__ import annotations

import os
import platform
from typing import Any, Mapping

_FALSE = ("0", "false")


def worker_cpus(local_workers: int = 1, environ: Mapping[str, str] | None = None) -> tuple[int, str]:
    """CPUs for one of ``local_workers`` workers on this node, and where the number comes from."""
    environ = os.environ if environ is None else environ
    value = environ.get("SLURM_CPUS_PER_TASK", "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value), "SLURM_CPUS_PER_TASK"
    return max(1, len(os.sched_getaffinity(0)) // max(1, local_workers)), "affinity"


def onednn_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether TensorFlow 2.15 runs oneDNN's CPU kernels: on by default on x86-64, off by TF_ENABLE_ONEDNN_OPTS=0."""
    environ = os.environ if environ is None else environ
    setting = environ.get("TF_ENABLE_ONEDNN_OPTS")
    if setting is not None:
        return setting.strip().lower() not in _FALSE
    return platform.machine().lower() in ("x86_64", "amd64")


def configure_cpu_threads(local_workers: int = 1, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Size TensorFlow's thread pools to this worker's CPUs; return the run.json record of the setting.

    Takes effect only before TensorFlow executes its first op (the pools are created then); later, as for a
    second run in one process, the pools stay as they are and the record says so (``applied`` false, the
    threads in effect, 0 meaning TensorFlow's default of one per visible core). Intra-op threads get the
    worker's CPUs; inter-op threads at most 2, since these models are one chain of ops.
    """
    import tensorflow as tf

    cpus, source = worker_cpus(local_workers, environ)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(cpus)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, cpus))
        applied = True
    except RuntimeError:  # "cannot be modified after initialization"
        applied = False
    return {"cpus": cpus, "cpus_from": source, "local_workers": local_workers, "applied": applied,
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "onednn": onednn_enabled(environ)}
