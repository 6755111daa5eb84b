"""``synth-icentia`` and ``synth-physionet``: write synthetic data sets in the two published formats.

Each patient or record draws from its own generator, seeded by ``(seed, index)``, so a patient does not depend
on how many others are written. The challenge folder is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import time
from pathlib import Path

import numpy as np

from ecg_hpc.data import icentia11k, physionet2017, synth_icentia, synth_physionet
from ecg_hpc.errors import ConfigError
from ecg_hpc.progress import Progress
from ecg_hpc.atomic import atomic_dir


def add_synth_icentia_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m ecg_hpc.data synth-icentia``."""
    parser.add_argument("--dst", required=True, type=Path, help="output folder (created if missing)")
    parser.add_argument("--patients", type=int, default=4, help="number of patients, ids 0..N-1 (4)")
    parser.add_argument("--segments", type=int, default=2, help="segments per patient, 1..50 (2)")
    parser.add_argument("--segment-size", type=int, default=icentia11k.SEGMENT_SIZE,
                        help=f"samples per segment at 250 Hz ({icentia11k.SEGMENT_SIZE}, as published)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("--unzipped", action="store_true",
                        help="write the unzipped variant (.npy + .npz) instead of .pkl.gz")


def run_synth_icentia(args: argparse.Namespace) -> None:
    """Generate and write the patients, with a progress line and the generation rate at the end."""
    if args.patients < 1:
        raise ConfigError(f"--patients must be at least 1, got {args.patients}")
    if not 1 <= args.segments <= icentia11k.MAX_SEGMENTS:
        raise ConfigError(f"--segments must lie in 1..{icentia11k.MAX_SEGMENTS}, got {args.segments}")
    if args.segment_size < 2 * icentia11k.FS:
        raise ConfigError(f"--segment-size must be at least {2 * icentia11k.FS} samples, got {args.segment_size}")
    bar = Progress(args.patients, "synth-icentia", unit="patients")
    gen_s = 0.0
    for pid in range(args.patients):
        t0 = time.perf_counter()
        signal, beats, rhythms = synth_icentia.synth_icentia_patient(np.random.default_rng([args.seed, pid]),
                                                                 args.segments, args.segment_size)
        gen_s += time.perf_counter() - t0
        icentia11k.write_patient(args.dst, pid, signal, beats, rhythms, unzipped=args.unzipped)
        bar.update()
    total = args.patients * args.segments * args.segment_size
    print(f"{args.dst}: {args.patients} patients x {args.segments} segments x {args.segment_size} samples; "
          f"generated {total / max(gen_s, 1e-9) / 1e6:.1f} M samples/s")


def add_synth_physionet_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m ecg_hpc.data synth-physionet``."""
    parser.add_argument("--dst", required=True, type=Path, help="output folder (must not exist or be empty)")
    parser.add_argument("--records", type=int, default=100, help="number of records A00001.. (100)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("--balanced", action="store_true",
                        help="as many records of each class (default: the class mix of the real training set)")


def physionet_labels(n: int, seed: int, balanced: bool = False) -> list[str]:
    """Labels of ``n`` records in the class mix of the real training set (or equal shares), in a seeded random
    order."""
    shares = dict.fromkeys(synth_physionet.PHYSIONET_SHARES, 1.0) if balanced else synth_physionet.PHYSIONET_SHARES
    counts = synth_physionet.class_counts(n, shares)
    labels = [c for c, k in counts.items() for _ in range(k)]
    return [labels[i] for i in np.random.default_rng([seed, n]).permutation(n)]


def run_synth_physionet(args: argparse.Namespace) -> None:
    """Write the records, RECORDS and REFERENCE.csv into a temporary folder, then rename it to ``--dst``."""
    if args.records < 1:
        raise ConfigError(f"--records must be at least 1, got {args.records}")
    dst: Path = args.dst
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise ConfigError(f"--dst {dst} exists and is not an empty folder; choose a new path")
    labels = physionet_labels(args.records, args.seed, args.balanced)
    names = [f"A{i + 1:05d}" for i in range(args.records)]
    with atomic_dir(dst) as tmp:
        bar = Progress(args.records, "synth-physionet", unit="records")
        epoch = _dt.datetime(2013, 9, 1)
        for i, (name, label) in enumerate(zip(names, labels)):
            rng = np.random.default_rng([args.seed, i])
            val = synth_physionet.synth_physionet_record(rng, label)
            start = epoch + _dt.timedelta(seconds=int(rng.integers(0, 300 * 86400)))
            physionet2017.write_record(tmp, name, val, start)
            bar.update()
        physionet2017.write_index(tmp, names, labels)
    counts = {c: labels.count(c) for c in physionet2017.CLASSES}
    print(f"{dst}: {args.records} records {counts}")
