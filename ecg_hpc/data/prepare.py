"""``prepare-physionet``: challenge records -> preprocessed, stratified train/test arrays in one cached ``.npz``.

The ``.npz`` holds ``x_train``/``x_test`` (float32 ``(n, 16384, 1)``), ``y_train``/``y_test`` (int64 indices into
``classes`` = A, N, O, ~), ``names_train``/``names_test``, ``test_size``, ``test_seed`` and ``fingerprint`` (a hash
of the source files' names, sizes and modification times and of the parameters). Re-running with the same
fingerprint reuses the file; anything else rebuilds it. The validation split is made per run by fine-tuning.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecg_hpc.data.physionet2017 import CLASSES, INPUT_SIZE, load_records, preprocess
from ecg_hpc.errors import ConfigError, DataError
from ecg_hpc.progress import Progress
from ecg_hpc.atomic import atomic_write_bytes
from ecg_hpc.data.splits import stratified_holdout

FORMAT_VERSION = 1  # bump when preprocessing changes, so old caches are rebuilt
_KEYS = ("x_train", "y_train", "names_train", "x_test", "y_test", "names_test", "classes", "test_size",
         "test_seed", "fingerprint")


@dataclass(frozen=True)
class Prepared:
    """The prepared challenge data: train and test arrays, class names, and how the split was made."""

    x_train: np.ndarray
    y_train: np.ndarray
    names_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    names_test: np.ndarray
    classes: tuple[str, ...]
    test_size: float
    test_seed: int
    fingerprint: str


def source_fingerprint(src_dir: str | os.PathLike[str], test_size: float, seed: int) -> str:
    """SHA-256 over the names, sizes and mtimes of the folder's record files and over the parameters."""
    src_dir = Path(src_dir)
    if not src_dir.is_dir():
        raise DataError(f"{src_dir}: not a folder of challenge records")
    files = sorted(p for p in src_dir.iterdir()
                   if p.is_file() and (p.suffix in (".hea", ".mat") or p.name in ("RECORDS", "REFERENCE.csv")))
    listing = [(p.name, st.st_size, st.st_mtime_ns) for p in files for st in [p.stat()]]
    params = {"format": FORMAT_VERSION, "test_size": test_size, "seed": seed, "files": listing}
    return hashlib.sha256(json.dumps(params).encode()).hexdigest()


def load_prepared(path: str | os.PathLike[str]) -> Prepared:
    """Read a prepared ``.npz`` (no pickles), checking that every array is there with the expected shape."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in _KEYS if k not in npz.files]
            if missing:
                raise DataError(f"{path}: not a prepared challenge file (missing {', '.join(missing)})")
            d = {k: npz[k] for k in _KEYS}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: cannot read prepared data ({exc})") from exc
    for part in ("train", "test"):
        x, y, names = d[f"x_{part}"], d[f"y_{part}"], d[f"names_{part}"]
        if x.ndim != 3 or x.shape[1:] != (INPUT_SIZE, 1) or x.shape[0] != y.shape[0] or y.shape != names.shape:
            raise DataError(f"{path}: inconsistent {part} arrays {x.shape}, {y.shape}, {names.shape}")
    return _from_arrays(d)


def _from_arrays(d: dict[str, np.ndarray]) -> Prepared:
    return Prepared(
        x_train=d["x_train"], y_train=d["y_train"], names_train=d["names_train"], x_test=d["x_test"],
        y_test=d["y_test"], names_test=d["names_test"], classes=tuple(str(c) for c in d["classes"]),
        test_size=float(d["test_size"]), test_seed=int(d["test_seed"]), fingerprint=str(d["fingerprint"]))


def prepare(src_dir: str | os.PathLike[str], dst: str | os.PathLike[str], test_size: float = 0.2,
            seed: int = 2017, progress: bool = False) -> tuple[Prepared, str]:
    """Build ``dst`` from ``src_dir``, or reuse it when its fingerprint matches; return it and what happened:
    ``"reused"``, ``"built"`` (no usable file) or ``"rebuilt"`` (sources or options changed)."""
    if not 0.0 < test_size < 1.0:
        raise ConfigError(f"--test-size must lie strictly between 0 and 1, got {test_size}")
    dst = Path(dst)
    fingerprint = source_fingerprint(src_dir, test_size, seed)
    status = "built"
    if dst.is_file():
        try:
            cached = load_prepared(dst)
        except DataError:
            cached = None
        if cached is not None and cached.fingerprint == fingerprint:
            return cached, "reused"
        status = "rebuilt" if cached is not None else "built"
    names, signals, labels = load_records(src_dir, progress=progress)
    n_test = int(round(test_size * len(names)))
    if not 0 < n_test < len(names):
        raise ConfigError(f"--test-size {test_size} of {len(names)} records leaves an empty train or test set")
    bar = Progress(len(names), "preprocessing", unit="records") if progress else None
    x = np.empty((len(names), INPUT_SIZE, 1), dtype=np.float32)
    for i, signal in enumerate(signals):
        x[i, :, 0] = preprocess(signal)
        if bar:
            bar.update()
    del signals
    train, test = stratified_holdout(labels, n_test / len(names), np.random.default_rng(seed))
    names_arr = np.array(names)
    arrays = {"x_train": x[train], "y_train": labels[train], "names_train": names_arr[train],
              "x_test": x[test], "y_test": labels[test], "names_test": names_arr[test],
              "classes": np.array(CLASSES), "test_size": np.float64(test_size), "test_seed": np.int64(seed),
              "fingerprint": np.array(fingerprint)}
    del x
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(dst, buf.getbuffer())
    return _from_arrays(arrays), status


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m ecg_hpc.data prepare-physionet``."""
    parser.add_argument("--src", required=True, type=Path,
                        help="folder with A0xxxx.mat/.hea, REFERENCE.csv and RECORDS (the challenge training set)")
    parser.add_argument("--dst", required=True, type=Path, help="output .npz (reused if sources and options match)")
    parser.add_argument("--test-size", type=float, default=0.2, help="share of records in the test set (0.2)")
    parser.add_argument("--seed", type=int, default=2017, help="seed of the stratified train/test split (2017)")


def run(args: argparse.Namespace) -> None:
    """Prepare (or reuse) the file and say which happened, with the split's class counts."""
    data, status = prepare(args.src, args.dst, args.test_size, args.seed, progress=True)
    counts = {part: dict(zip(data.classes, np.bincount(y, minlength=len(data.classes)).tolist()))
              for part, y in (("train", data.y_train), ("test", data.y_test))}
    what = {"reused": "reused (sources and options unchanged)", "built": "built",
            "rebuilt": "rebuilt (sources or options changed)"}[status]
    print(f"{args.dst}: {what}; train {len(data.y_train)} {counts['train']}, test {len(data.y_test)} "
          f"{counts['test']}, test seed {data.test_seed}")
