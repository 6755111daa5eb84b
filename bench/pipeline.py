"""Benchmark: Icentia11k pretraining input rate from the shard store vs the authors' one-patient-at-a-time reader.

Writes a few synthetic patients of the published size (50 segments of 1,048,577 samples, from
``ecg_hpc.data.synthetic``) as ``{pid:05d}_batched.pkl.gz`` + labels, converts them to a store, then measures in
one run, for the beat task at frame 4096 and batch 512:

- store: ``ecg_hpc.data.pipeline.make_dataset`` (patient, segment and start uniform across all patients);
- baseline: like the authors' ``pretraining/datasets.py``: a Python generator that loads one patient's pkl.gz
  (gzip + pickle of signal and labels), draws ``samples_per_patient`` frames from it one by one with their beat
  labels and normalisation, fed through ``tf.data.Dataset.from_generator(...).batch(512)``.

Prints both rates (frames/s, after one warm-up batch) and their ratio; asserts nothing. Generated data is kept
in ``--workdir`` when given (and reused by the next run), else in a temporary folder that is removed.

    .venv/bin/python bench/pipeline.py [--patients 3] [--workdir DIR] [--store-batches 100] [--baseline-batches 16]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from ecg_hpc.data import icentia11k  # noqa: E402
from ecg_hpc.data.convert import convert  # noqa: E402
from ecg_hpc.data.labels import beat_label  # noqa: E402
from ecg_hpc.data.pipeline import make_dataset  # noqa: E402
from ecg_hpc.data.synth_icentia import synth_icentia_patient  # noqa: E402
from ecg_hpc.progress import Progress  # noqa: E402
from ecg_hpc.tasks import get_task  # noqa: E402


def write_raw(raw: Path, n_patients: int, n_segments: int, seed: int) -> list[int]:
    """Write (or reuse) ``n_patients`` synthetic patients in the published pkl.gz layout."""
    ids = list(range(n_patients))
    todo = [pid for pid in ids if not all(p.is_file() for p in icentia11k.patient_files(raw, pid))]
    progress = Progress(len(todo), "synthesise pkl.gz patients", unit="patients") if todo else None
    for pid in todo:
        rng = np.random.default_rng([seed, pid])
        signal, beats, rhythms = synth_icentia_patient(rng, n_segments)
        icentia11k.write_patient(raw, pid, signal, beats, rhythms)
        progress.update()
    return ids


def baseline_frames(raw: Path, ids: list[int], frame: int, samples_per_patient: int,
                    seed: int) -> Iterator[tuple[np.ndarray, int]]:
    """The authors' generator: shuffled patients, one pkl.gz at a time, frames drawn one by one."""
    rng = np.random.default_rng(seed)
    while True:
        for pid in rng.permutation(ids):
            patient = icentia11k.load_patient(raw, int(pid), unzipped=False)
            n_segments, segment_len = patient.signal.shape
            for _ in range(samples_per_patient):
                segment = int(rng.integers(n_segments))
                start = int(rng.integers(segment_len - frame))
                x = patient.signal[segment, start:start + frame, None]
                y = beat_label(*patient.beats[segment], start, start + frame)
                yield (x - icentia11k.MEAN) / icentia11k.STD, y


def rate(dataset, batches: int, batch_size: int) -> tuple[float, float]:
    """Frames per wall-clock second and per CPU second of this process, over ``batches`` after a warm-up batch.

    The CPU-second rate does not depend on other load on the machine (useful on shared nodes)."""
    it = iter(dataset)
    next(it)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(it)
    frames = batches * batch_size
    return frames / (time.perf_counter() - wall), frames / (time.process_time() - cpu)


def main(argv: list[str] | None = None) -> int:
    """Parse options, prepare the data, time both input paths and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=3, help="synthetic patients (default 3)")
    parser.add_argument("--segments", type=int, default=icentia11k.MAX_SEGMENTS,
                        help="segments per patient (default 50, the published maximum)")
    parser.add_argument("--frame", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--store-batches", type=int, default=100)
    parser.add_argument("--baseline-batches", type=int, default=16,
                        help="baseline batches to time (8 per patient load at 4096 samples per patient)")
    parser.add_argument("--samples-per-patient", type=int, default=4096,
                        help="baseline frames drawn per loaded patient (the authors' default setting)")
    parser.add_argument("--parallel-batches", type=int, default=1,
                        help="store pipeline generator lanes (default 1: best on 2 busy cores)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep and reuse the generated data here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import tensorflow as tf

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_pipeline_"))
    try:
        raw, store = workdir / "raw", workdir / "store"
        ids = write_raw(raw, args.patients, args.segments, args.seed)
        convert(raw, store, patients=ids)
        ds = make_dataset(store, get_task("beat"), ids, args.frame, args.batch, seed=args.seed, steps=None,
                          parallel_batches=args.parallel_batches)
        store_rate, store_cpu = rate(ds, args.store_batches, args.batch)
        print(f"store pipeline : {store_rate:10.0f} frames/s, {store_cpu:10.0f} frames/CPU-s "
              f"({args.store_batches} batches of {args.batch} x {args.frame})", flush=True)
        baseline = tf.data.Dataset.from_generator(
            lambda: baseline_frames(raw, ids, args.frame, args.samples_per_patient, args.seed),
            output_signature=(tf.TensorSpec((args.frame, 1), tf.float32), tf.TensorSpec((), tf.int32)),
        ).batch(args.batch).prefetch(2)
        baseline_rate, baseline_cpu = rate(baseline, args.baseline_batches, args.batch)
        print(f"baseline pkl.gz: {baseline_rate:10.0f} frames/s, {baseline_cpu:10.0f} frames/CPU-s "
              f"({args.baseline_batches} batches, {args.samples_per_patient} frames per patient load)")
        print(f"ratio          : {store_rate / baseline_rate:10.1f}x wall, {store_cpu / baseline_cpu:.1f}x CPU "
              f"(cpus: {len(os.sched_getaffinity(0))}, load average {os.getloadavg()[0]:.1f}, "
              f"{args.patients} patients x {args.segments} segments)")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
