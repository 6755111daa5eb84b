"""Atomic files and folders: a reader never sees half a file, and a crash leaves no partial output.

A file is written to a temporary name in its own folder, flushed and renamed over the target; a folder is built
beside its final name and swapped in when complete. Both get the umask's permissions, so results stay readable by
colleagues on a shared cluster. A full, over-quota, read-only or forbidden folder becomes one StorageError naming it.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from ecg_hpc.errors import StorageError


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
