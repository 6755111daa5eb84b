"""Benchmark: conversion cost per patient from each published layout, store size against the source, projection.

Takes ``--patients`` synthetic patients of the published size (``bench/pipeline.py``'s pkl.gz generator, reused
from ``--workdir``), writes the same patients in the unzipped (.npy + _lbls.npz) and the PhysioNet WFDB layouts,
then converts each layout with one worker (``convert-icentia --workers 1``) and prints, per layout: source MB and
store MB per patient, CPU and wall seconds per patient, and the projected wall time for 11,000 patients on 100
array tasks of one core each (``11,000 / 100 x s per patient``, from the CPU seconds, which a task owning its core
gets, and from the wall seconds measured here; I/O assumed to scale with the tasks). Data lives
in ``--workdir`` (reused) or a temporary folder removed at the end; asserts nothing.

    .venv/bin/python bench/convert.py [--patients 2] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ecg_hpc.data import icentia11k, icentia_wfdb  # noqa: E402
from ecg_hpc.data.convert import convert  # noqa: E402
from ecg_hpc.data.synthetic import ICENTIA_LSB  # noqa: E402
from pipeline import write_raw  # noqa: E402  (bench/pipeline.py)

ALL_PATIENTS, ARRAY_TASKS = 11_000, 100


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_layouts(raw: Path, ids: list[int], workdir: Path) -> dict[str, Path]:
    """The pkl.gz patients again as .npy/_lbls.npz and as PhysioNet WFDB records (reused when present)."""
    npy, wfdb = workdir / "raw-npy", workdir / "raw-wfdb"
    for pid in ids:
        if not icentia11k.patient_files(npy, pid, unzipped=True)[1].is_file() or \
                not icentia_wfdb.patient_folder(wfdb, pid).is_dir():
            patient = icentia11k.load_patient(raw, pid, unzipped=False)
            icentia11k.write_patient(npy, pid, patient.signal, patient.beats, patient.rhythms, unzipped=True)
            digital = np.rint(patient.signal / np.float32(ICENTIA_LSB)).astype(np.int16)
            icentia_wfdb.write_wfdb_patient(wfdb, pid, digital, patient.beats, patient.rhythms)
    return {"pkl": raw, "npy": npy, "wfdb": wfdb}


def main(argv: list[str] | None = None) -> int:
    """Prepare the three layouts, convert each, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_convert_"))
    try:
        ids = write_raw(workdir / "raw", args.patients, icentia11k.MAX_SEGMENTS, args.seed)
        layouts = write_layouts(workdir / "raw", ids, workdir)
        print(f"{len(ids)} published-size patients (50 x 1,048,577 samples); cpus {len(os.sched_getaffinity(0))}, "
              f"load average {os.getloadavg()[0]:.1f}")
        print("layout  source MB/patient  store MB/patient  store/source  CPU s/patient  wall s/patient  "
              "11,000 on 100 tasks: h (from CPU s) h (from wall s)")
        for fmt, src in layouts.items():
            dst = workdir / f"store-{fmt}"
            shutil.rmtree(dst, ignore_errors=True)
            source = sum(folder_bytes(src) if fmt == "wfdb" else
                         sum(p.stat().st_size for p in icentia11k.patient_files(src, pid, unzipped=fmt == "npy"))
                         for pid in ids) / len(ids)
            cpu, wall = time.process_time(), time.perf_counter()
            convert(src, dst, fmt=fmt, patients=ids, show_progress=False)
            cpu, wall = (time.process_time() - cpu) / len(ids), (time.perf_counter() - wall) / len(ids)
            stored = folder_bytes(dst / "patients") / len(ids)
            per_task = ALL_PATIENTS / ARRAY_TASKS / 3600
            print(f"{fmt:6s} {source / 1e6:18.1f} {stored / 1e6:17.1f} {stored / source:13.2f} {cpu:14.1f} "
                  f"{wall:15.1f} {per_task * cpu:22.2f} {per_task * wall:16.2f}")
            shutil.rmtree(dst)
        print(f"load average {os.getloadavg()[0]:.1f}")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
