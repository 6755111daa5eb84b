"""Run directories: the one interface between launching, training and analysis.

Every job writes one directory holding ``run.json`` (config, seed, code and package versions, host, world
size, wall times, status) next to its CSVs and checkpoints. Files appear atomically (written to a temporary
name in the same folder, then renamed), so a reader never sees half a file; a full, over-quota, read-only or
forbidden folder raises a one-line ``StorageError`` naming it, large writes check the free space first, and no
temporary file stays behind.

``run.json`` keys shared by all kinds of run (kind-specific keys are documented where they are written):

- ``kind``: ``"pretrain"`` or ``"finetune"``
- ``status``: one of ``STATUSES``; ``error`` holds the message when ``"failed"``, and ``failed_rank`` /
  ``failed_host`` the worker that failed first (see ``record_failure``). A ``"running"`` run that nobody runs
  any more is reported as ``"died"`` (derived, never written: ``ecg_hpc.hpc.run_state``)
- ``seed``, ``config`` (the full resolved options), ``environment`` (see ``environment_info``)
- ``started_at``, ``finished_at`` (ISO 8601 UTC), ``wall_time_s``

Pretraining runs (``runs/pretrain/<name>/``) add ``task``, ``arch``, ``frame_size``, ``frac``, ``epochs``,
``epochs_done``, ``world_size``, ``hosts``, ``horovod`` (lr scaling and warm-up), ``epoch_times_s`` and
``sampler`` (``{"sampler": "uniform"}`` or the pool's options with ``memory_bound_bytes`` per worker), ``store``
(``path``, ``n_patients``, ``patients``, ``files_sha256``: what a resume checks; ``per_patient``: the manifest's
mean store and source bytes and conversion CPU seconds per patient) and ``attempts`` (one per start,
with ``damaged_checkpoints`` when a resume skipped any); their
checkpoints are ``epoch_NN/`` folders (NN from 01) and ``history.csv`` has one row per epoch.

Fine-tuning runs (``runs/finetune/<scenario>/seed_S/``) add:

- ``arch``; ``init``: ``{"source": "random"}`` or ``{"source": "checkpoint", "checkpoint": PATH,
  "pretrain_run": PATH, "pretrain_epoch": N, "task": ..., "arch": ..., "frame_size": ..., "frac": ...}``
- ``scenario`` (the sweep's name for the init), ``label_frac`` (fraction of the training records it trained on,
  1 = all), ``split`` (``test_seed``, ``n_train``, ``n_val``, ``n_test``, ``label_frac``, ``n_train_pool``)
- ``epochs_run``, ``best_epoch``, ``test``: ``{"macro_f1": x, "f1": {"A": .., "N": .., "O": .., "~": ..}}``
- ``threads``: the CPU threads set from the job's CPUs (``ecg_hpc.train.threads.configure_cpu_threads``:
  ``cpus``, ``cpus_from``, ``intra_op_threads``, ``inter_op_threads``, ``applied``, ``onednn``);
  ``jit_compile`` (whether the training step was XLA-compiled)
- files ``history.csv`` (``epoch, loss, val_loss, f1, f1_A, f1_N, f1_O, f1_~`` where ``f1*`` are on the
  validation set), ``train|val|test_predictions.csv`` (``record_name, true_A, true_N, true_O, true_~,
  prob_A, prob_N, prob_O, prob_~``) and the best weights.
"""

from __future__ import annotations

import csv
import datetime as _dt
import errno
import hashlib
import importlib.metadata
import io
import json
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from ecg_hpc.errors import StorageError

RUN_JSON = "run.json"
STATUSES = ("running", "done", "failed")
_PACKAGES = ("ecg-hpc", "tensorflow-cpu", "tensorflow", "horovod", "submitit", "numpy", "scipy", "pandas",
             "scikit-learn", "wfdb")


def utc_now() -> str:
    """Current time as an ISO 8601 UTC string (second resolution), the format used in run.json."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


_STORAGE_FAULTS = {errno.ENOSPC: ("no space left on the device", "free space there"),
                   errno.EDQUOT: ("disk quota exceeded", "free space within your quota"),
                   errno.EROFS: ("read-only file system", "choose a writable folder"),
                   errno.EACCES: ("permission denied", "fix the folder's permissions or choose another one"),
                   errno.EPERM: ("operation not permitted", "fix the folder's permissions or choose another one")}
LARGE_WRITE = 1 << 20  # writes at least this big check the free space first
SPACE_MARGIN = 1 << 20  # and leave this much free, so that run.json can still say what happened


def storage_error(exc: OSError, folder: str | os.PathLike[str]) -> StorageError | None:
    """The one-line StorageError for a full, over-quota, read-only or forbidden ``folder``; None for other errors."""
    fault = _STORAGE_FAULTS.get(exc.errno or 0)
    if fault is None:
        return None
    error = StorageError(f"{folder}: cannot write ({fault[0]}); {fault[1]}, then run again")
    error.errno = exc.errno
    return error


@contextmanager
def writing(folder: str | os.PathLike[str]) -> Iterator[None]:
    """Turn a full, read-only or forbidden ``folder`` met inside the block into a StorageError naming it."""
    try:
        yield
    except StorageError:
        raise
    except OSError as exc:
        error = storage_error(exc, folder)
        if error is None:
            raise
        raise error from None


def check_free_space(folder: str | os.PathLike[str], nbytes: int) -> None:
    """StorageError naming ``folder`` when it has less than ``nbytes`` plus a margin free (checked where the file
    system can tell: before large writes, so that no writer meets a full disk half-way)."""
    if nbytes < LARGE_WRITE:
        return
    try:
        stat = os.statvfs(folder)
    except OSError:
        return
    free = stat.f_bavail * stat.f_frsize
    if free < nbytes + SPACE_MARGIN:
        error = StorageError(f"{folder}: cannot write {nbytes / 2 ** 20:.1f} MiB (no space left on the device: "
                             f"{free / 2 ** 20:.1f} MiB free); free space there, then run again")
        error.errno = errno.ENOSPC
        raise error


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename; return the path.

    A full, read-only or forbidden folder raises a StorageError naming it; the temporary file never stays.
    """
    path = Path(path)
    tmp: str | None = None
    with writing(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
        check_free_space(path.parent, len(data))
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; colleagues on a cluster must read results
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return path


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in 4 MiB chunks (checksums of store files and checkpoints)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` atomically (see ``atomic_write_bytes``)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], data: Mapping[str, Any]) -> Path:
    """Write ``data`` as indented JSON atomically."""
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def atomic_write_csv(path: str | os.PathLike[str], header: Sequence[str],
                     rows: Iterable[Sequence[Any]]) -> Path:
    """Write a CSV with ``header`` and ``rows`` atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def replace_dir(tmp: str | os.PathLike[str], final: str | os.PathLike[str]) -> None:
    """Move the finished folder ``tmp`` to ``final`` (same file system), replacing any older one there."""
    tmp, final = Path(tmp), Path(final)
    old = final.parent / f".{final.name}.{uuid.uuid4().hex[:8]}.old" if final.exists() else None
    if old is not None:
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_dir(final: str | os.PathLike[str], prefix: str | None = None) -> Iterator[Path]:
    """Yield a new empty folder beside ``final``; when the block succeeds it replaces ``final``, else it is removed.

    A full, read-only or forbidden folder met in the block raises a StorageError naming ``final``'s parent.

    The folder gets the umask's permissions (unlike ``mkdtemp``'s 0700), so results stay readable by the group.
    """
    final = Path(final)
    tmp = final.parent / f"{prefix or f'.{final.name}.'}{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    with writing(final.parent):
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        try:
            yield tmp
            replace_dir(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def read_run(job_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Return the parsed ``run.json`` of ``job_dir``, or None when there is none yet."""
    path = Path(job_dir) / RUN_JSON
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc


def write_run(job_dir: str | os.PathLike[str], info: Mapping[str, Any]) -> Path:
    """Write ``info`` as ``run.json`` of ``job_dir`` atomically, checking that its status is known."""
    status = info.get("status")
    if status not in STATUSES:
        raise ValueError(f"run.json status must be one of {STATUSES}, got {status!r}")
    return atomic_write_json(Path(job_dir) / RUN_JSON, info)


def record_failure(job_dir: str | os.PathLike[str], kind: str, rank: int, host: str, error: str,
                   info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Mark the run in ``job_dir`` failed by worker ``rank`` on ``host`` (starting from ``info``, else the run.json
    there, else a bare record of ``kind``) and return the record as it now stands. Left as they are: a run.json
    naming a failed worker already (the first worker to fail is the cause, the others fail because of it), a
    done one (its results stay valid) and an unreadable one."""
    try:
        on_disk = read_run(job_dir)
    except ValueError:
        return {"status": "failed", "error": error, "failed_rank": rank, "failed_host": host}
    if on_disk and (on_disk.get("status") == "done" or
                    (on_disk.get("status") == "failed" and "failed_rank" in on_disk)):
        return on_disk
    record = dict(info if info is not None else on_disk or {"kind": kind})
    record.update(status="failed", error=error, failed_rank=rank, failed_host=host, finished_at=utc_now())
    write_run(job_dir, record)
    return record


def is_done(job_dir: str | os.PathLike[str]) -> bool:
    """True when ``job_dir`` holds a run.json whose status is ``done`` (such a run is never redone)."""
    try:
        info = read_run(job_dir)
    except ValueError:
        return False
    return bool(info) and info.get("status") == "done"


def code_version() -> str:
    """Git commit of the installed source tree (with ``-dirty`` when modified), else the package version."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        from ecg_hpc import __version__
        return __version__


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide a run's numbers (absent ones are left out)."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def environment_info() -> dict[str, Any]:
    """What ran the job: host, Python, code and package versions, and the SLURM job ids if any."""
    slurm = {k: v for k, v in os.environ.items()
             if k in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_NODELIST",
                      "SLURM_NTASKS", "SLURM_RESTART_COUNT")}
    return {
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "code_version": code_version(),
        "packages": package_versions(),
        "slurm": slurm,
    }
