"""``convert-icentia``: convert Icentia11k (pkl.gz, npy/npz or PhysioNet WFDB) into the shard store.

Each patient is written atomically (see ``ecg_hpc.data.store``), so a re-run skips finished patients (``--verify``
checks their sha256) and an interrupted one leaves no partial patient. ``--shard I/N`` converts every N-th
patient starting at I. A run ends by rewriting ``manifest.json`` from all patients finished so far, unless
``--no-manifest`` (the tasks of a job array: ``launch/convert.py`` submits them and one manifest job after them;
``--manifest-only`` is that job). Progress shows patients and the source MB/s read.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from ecg_hpc.data import icentia11k, icentia_wfdb, store
from ecg_hpc.errors import ConfigError, DataError, StorageError
from ecg_hpc.progress import Progress

FORMATS = ("auto", "pkl", "npy", "wfdb")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m ecg_hpc.data convert-icentia``."""
    parser.add_argument("--src", type=Path,
                        help="folder of the release: {pid:05d}_batched.pkl.gz (+ _lbls), the unzipped .npy/.npz, "
                             "or the PhysioNet WFDB tree pNN/pXXXXX/pXXXXX_sYY")
    parser.add_argument("--dst", required=True, type=Path, help="store folder to create or complete")
    parser.add_argument("--format", choices=FORMATS, default="auto",
                        help="source layout (default: detected from the files in --src)")
    parser.add_argument("--patients", default=None,
                        help="ids to convert, e.g. '0-99,105' (default: all patients found in --src)")
    parser.add_argument("--workers", type=int, default=1, help="parallel worker processes (default 1)")
    parser.add_argument("--shard", default="0/1",
                        help="I/N: convert every N-th patient starting at I, e.g. $SLURM_ARRAY_TASK_ID/16 "
                             "(default 0/1: all)")
    parser.add_argument("--verify", action="store_true",
                        help="also check the sha256 of every file of the patients already in the store")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.add_argument("--no-manifest", action="store_true",
                        help="do not rewrite manifest.json at the end (job-array tasks; one job writes it after)")
    parser.add_argument("--manifest-only", action="store_true",
                        help="only rewrite manifest.json from the patients in --dst (no --src needed)")


def run(args: argparse.Namespace) -> None:
    """Run the conversion from parsed options and print a one-line summary."""
    if args.manifest_only:
        if not (args.dst / store.PATIENTS_DIR).is_dir():
            raise DataError(f"--dst {args.dst}: not a store (no '{store.PATIENTS_DIR}/' folder)")
        path = store.write_manifest(args.dst)
        print(f"convert-icentia: {path} lists {len(store.done_patients(args.dst))} patients")
        return
    if args.src is None:
        raise ConfigError("--src is required (unless --manifest-only)")
    summary = convert(args.src, args.dst, fmt=args.format, patients=parse_ids(args.patients),
                      workers=args.workers, shard=parse_shard(args.shard), verify=args.verify,
                      show_progress=not args.quiet, manifest=not args.no_manifest)
    print(f"convert-icentia: {len(summary.converted)} converted, {len(summary.skipped)} already done, "
          f"store {args.dst} holds {summary.total_in_store} patients")


@dataclass
class Summary:
    """What one conversion run did."""

    converted: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    total_in_store: int = 0


def parse_ids(spec: str | None) -> list[int] | None:
    """``'0-9,12'`` -> ``[0, ..., 9, 12]``; ``None`` stays ``None`` (all patients)."""
    if spec is None:
        return None
    ids: set[int] = set()
    try:
        for part in filter(None, (p.strip() for p in spec.split(","))):
            first, _, last = part.partition("-")
            lo, hi = int(first), int(last or first)
            if lo < 0 or hi < lo:
                raise ValueError(part)
            ids.update(range(lo, hi + 1))
    except ValueError:
        raise ConfigError(f"--patients: cannot parse {spec!r} (expected ids and ranges like '0-99,105')") from None
    if not ids:
        raise ConfigError(f"--patients: no ids in {spec!r}")
    return sorted(ids)


def format_ids(ids: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``'0-2,5'``: the inverse of ``parse_ids`` (compact for job-array command lines)."""
    parts, ids = [], sorted(set(map(int, ids)))
    for i, pid in enumerate(ids):
        if i and pid == ids[i - 1] + 1:
            parts[-1][1] = pid
        else:
            parts.append([pid, pid])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in parts)


def parse_shard(spec: str) -> tuple[int, int]:
    """``'I/N'`` -> ``(I, N)`` with ``0 <= I < N``."""
    try:
        index, count = (int(x) for x in spec.split("/"))
    except ValueError:
        raise ConfigError(f"--shard: expected I/N, got {spec!r}") from None
    if not 0 <= index < count:
        raise ConfigError(f"--shard: need 0 <= I < N, got {spec!r}")
    return index, count


def detect_format(src: Path) -> str:
    """``pkl``, ``npy`` or ``wfdb`` from the files in ``src``."""
    if not src.is_dir():
        raise DataError(f"{src}: source folder does not exist")
    entries = os.listdir(src)
    if any(e.endswith("_batched.pkl.gz") for e in entries):
        return "pkl"
    if any(e.endswith("_batched.npy") for e in entries):
        return "npy"
    if icentia_wfdb.list_wfdb_patients(src):
        return "wfdb"
    raise DataError(f"{src}: no Icentia11k patients found (no *_batched.pkl.gz, *_batched.npy or "
                    f"pNN/pXXXXX/pXXXXX_sYY.hea)")


def source_patients(src: Path, fmt: str) -> dict[int, Path]:
    """Patient id -> the folder holding its files, for source layout ``fmt``."""
    if fmt == "wfdb":
        return icentia_wfdb.list_wfdb_patients(src)
    ids = icentia11k.list_patients(src)
    return {pid: src for pid in ids
            if icentia11k.patient_files(src, pid, unzipped=(fmt == "npy"))[0].is_file()}


def convert(src: str | os.PathLike[str], dst: str | os.PathLike[str], fmt: str = "auto",
            patients: Sequence[int] | None = None, workers: int = 1, shard: tuple[int, int] = (0, 1),
            verify: bool = False, show_progress: bool = True, manifest: bool = True) -> Summary:
    """Convert the chosen patients of ``src`` into the store ``dst`` (``verify``: checksum those already done;
    ``manifest``: rewrite manifest.json at the end); raise DataError naming every failure."""
    src, dst = Path(src), Path(dst)
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {FORMATS}, got {fmt!r}")
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    fmt = detect_format(src) if fmt == "auto" else fmt
    available = source_patients(src, fmt)
    wanted = sorted(available) if patients is None else sorted(set(patients))
    missing = [pid for pid in wanted if pid not in available]
    if missing:
        raise DataError(f"{src}: no {fmt} files for patients {_short(missing)}")
    mine = wanted[shard[0]::shard[1]]
    done = set(store.done_patients(dst))
    summary = Summary(skipped=[pid for pid in mine if pid in done])
    if verify:
        for pid in summary.skipped:
            try:
                store.verify_patient(dst, pid)
            except DataError as exc:
                summary.failed[pid] = str(exc)
    todo = [pid for pid in mine if pid not in done]
    progress = Progress(len(todo), f"convert-icentia {fmt} -> {dst}", unit="patients") if show_progress else None
    jobs = [(fmt, available[pid], dst, pid) for pid in todo]
    try:
        for pid, error, nbytes in _map(_convert_one, jobs, workers):
            if error is None:
                summary.converted.append(pid)
            else:
                summary.failed[pid] = error
            if progress:
                progress.update(nbytes=nbytes)
    except StorageError as exc:  # a full or read-only store: every further patient would fail the same way
        if manifest:
            _try_manifest(dst)
        raise StorageError(f"{exc} ({len(summary.converted)} patients converted before; a re-run continues "
                           "after the last complete one)") from None
    if manifest and dst.is_dir():
        store.write_manifest(dst)
    summary.total_in_store = len(store.done_patients(dst))
    if summary.failed:
        lines = "; ".join(summary.failed[pid] for pid in sorted(summary.failed)[:5])
        raise DataError(f"{len(summary.failed)} of {len(mine)} patients failed ({lines}"
                        f"{'; ...' if len(summary.failed) > 5 else ''}); {len(summary.converted)} converted; "
                        f"re-run to retry failed conversions, delete corrupt patient folders to redo them")
    return summary


def _try_manifest(dst: Path) -> None:
    """Rewrite the manifest of the complete patients where the store still takes that small file."""
    try:
        if dst.is_dir():
            store.write_manifest(dst)
    except StorageError:
        pass


def _map(fn, jobs: list[tuple], workers: int) -> Iterable[tuple[int, str | None, int]]:
    if workers == 1 or len(jobs) <= 1:
        yield from map(fn, jobs)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for future in as_completed([pool.submit(fn, job) for job in jobs]):
            yield future.result()


def _convert_one(job: tuple[str, Path, Path, int]) -> tuple[int, str | None, int]:
    """Read one patient and write it to the store; return ``(pid, None or error message, source bytes)``."""
    fmt, folder, dst, pid = job
    store.remove_stale_temps(dst, pid)
    began = time.process_time()
    try:
        if fmt == "wfdb":
            patient = icentia_wfdb.load_wfdb_patient(folder, pid)
            files = sorted(folder.iterdir())
        else:
            patient = icentia11k.load_patient(folder, pid, unzipped=(fmt == "npy"))
            files = list(icentia11k.patient_files(folder, pid, unzipped=(fmt == "npy")))
        source = {"format": fmt, "folder": str(folder.resolve()),
                  "files": {f.name: f.stat().st_size for f in files},
                  "read_cpu_s": round(time.process_time() - began, 3)}
        store.write_patient(dst, pid, patient.signal, patient.beats, patient.rhythms, source)
    except DataError as exc:
        return pid, str(exc), 0
    return pid, None, sum(source["files"].values())


def _short(ids: list[int]) -> str:
    return ", ".join(map(str, ids[:10])) + (f" (+{len(ids) - 10} more)" if len(ids) > 10 else "")
