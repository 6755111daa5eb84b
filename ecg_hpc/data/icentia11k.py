"""Icentia11k in its published layout: a safe reader and writer, the authors' exact label rules, patient subsets.

Files per patient (``docs/design-facts.md``, "Icentia11k"): ``{pid:05d}_batched.pkl.gz`` (gzip pickle of a float32
``(n_segments, segment_len)`` array) with ``{pid:05d}_batched_lbls.pkl.gz`` (gzip pickle of one dict per segment,
``{'btype': [5 arrays], 'rtype': [6 arrays]}``, array k holding the positions of class k), or the unzipped variant
``{pid:05d}_batched.npy`` with ``{pid:05d}_batched_lbls.npz`` (keys ``btype``/``rtype``: per segment a
``(positions, classes)`` pair, as the authors' ``unzip_patient_data`` writes it).

A pickle is code, so every pickle (including the object arrays inside the ``.npz``) goes through
``restricted_load``, which admits numpy arrays and dtypes, lists, tuples, dicts, numbers and strings only.

The class ids and the priorities of the label rules are here; the rules themselves are in ``ecg_hpc.data.labels``.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Sequence

import numpy as np

from ecg_hpc.errors import ConfigError, DataError
from ecg_hpc.atomic import atomic_write_bytes

FS = 250
SEGMENT_SIZE = 2 ** 20 + 1  # 1,048,577 samples per published segment
MAX_SEGMENTS = 50
MEAN = 0.0018  # dataset mean and std used for normalisation: (x - MEAN) / STD
STD = 1.3711

BEAT_CLASSES = ("undefined", "normal", "pac", "aberrated", "pvc")
RHYTHM_CLASSES = ("undefined", "end", "noise", "normal", "afib", "aflut")
HR_CLASSES = ("tachy", "brady", "normal", "noise")
HR_TACHY, HR_BRADY, HR_NORMAL, HR_NOISE = range(4)

BEAT_HIGH = (2, 3, 4)  # pac / aberrated / pvc win over ...
BEAT_LOW = (0, 1)  # ... undefined / normal
RHYTHM_HIGH = (0, 4, 5)  # undefined / afib / aflut win over ...
RHYTHM_LOW = (1, 2, 3)  # ... end / noise / normal

Labels = tuple[np.ndarray, np.ndarray]  # (positions int64, classes int64), sorted by position

_ALLOWED_GLOBALS = frozenset({
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # protocol-2 pickles spell bytes as _codecs.encode(str, 'latin1')
})
_NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
_READ_ERRORS = (OSError, EOFError, zlib.error, pickle.UnpicklingError, ValueError, TypeError, AttributeError,
                IndexError, KeyError, zipfile.BadZipFile, MemoryError)


@dataclass(frozen=True)
class Patient:
    """One patient: ``signal`` float32 ``(n_segments, segment_len)``; per segment ``beats[s]`` and ``rhythms[s]``."""

    signal: np.ndarray
    beats: list[Labels]
    rhythms: list[Labels]

    @property
    def n_segments(self) -> int:
        """Number of segments (rows of ``signal``)."""
        return int(self.signal.shape[0])


class _RefusedGlobal(Exception):
    """A pickle asked for a global outside the allow-list (raised before anything is called)."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise _RefusedGlobal(f"{module}.{name}")
        return super().find_class(module, name)


def restricted_load(fh: BinaryIO, path: str | os.PathLike[str]) -> Any:
    """Unpickle ``fh`` admitting only numpy arrays/dtypes and plain containers; errors name ``path``."""
    try:
        return _RestrictedUnpickler(fh, encoding="latin1").load()
    except _RefusedGlobal as exc:
        raise DataError(f"{path}: refused pickle global {exc} (only numpy arrays, dtypes, lists, tuples, dicts, "
                        f"numbers and strings are allowed)") from None


def patient_files(db_dir: str | os.PathLike[str], patient_id: int, unzipped: bool = False) -> tuple[Path, Path]:
    """Paths of the signal and label files of ``patient_id`` in the zipped or unzipped published layout."""
    base = Path(db_dir) / f"{int(patient_id):05d}_batched"
    if unzipped:
        return base.with_name(base.name + ".npy"), base.with_name(base.name + "_lbls.npz")
    return base.with_name(base.name + ".pkl.gz"), base.with_name(base.name + "_lbls.pkl.gz")


def find_patient_files(db_dir: str | os.PathLike[str], patient_id: int,
                       unzipped: bool | None = None) -> tuple[Path, Path, bool]:
    """The signal and label paths of ``patient_id`` and whether they are unzipped (``None``: pkl.gz, else npy)."""
    for unzipped in ((False, True) if unzipped is None else (unzipped,)):
        sig, lbl = patient_files(db_dir, patient_id, unzipped)
        if sig.is_file() and lbl.is_file():
            return sig, lbl, unzipped
    sig, lbl = patient_files(db_dir, patient_id)
    raise DataError(f"{db_dir}: no files for patient {patient_id} (expected {sig.name} + {lbl.name} or the "
                    f"unzipped .npy + _lbls.npz)")


def list_patients(db_dir: str | os.PathLike[str]) -> list[int]:
    """Sorted ids of the patients whose signal file (either variant) lies in ``db_dir``."""
    ids = set()
    for entry in Path(db_dir).iterdir():
        stem = entry.name.split("_batched", 1)
        if len(stem) == 2 and stem[0].isdigit() and stem[1] in (".pkl.gz", ".npy"):
            ids.add(int(stem[0]))
    return sorted(ids)


def load_patient(db_dir: str | os.PathLike[str], patient_id: int, unzipped: bool | None = None) -> Patient:
    """Read one patient (pkl.gz, else npy/npz, or the variant named) and check signal and labels agree."""
    sig_path, lbl_path, unzipped = find_patient_files(db_dir, patient_id, unzipped)
    signal = _load_signal_npy(sig_path) if unzipped else _load_signal_pkl(sig_path)
    n_segments, segment_len = signal.shape
    if unzipped:
        beats, rhythms = _load_labels_npz(lbl_path)
    else:
        beats, rhythms = _load_labels_pkl(lbl_path)
    for kind, per_segment in (("beat", beats), ("rhythm", rhythms)):
        if len(per_segment) != n_segments:
            raise DataError(f"{lbl_path}: label/segment mismatch: {len(per_segment)} {kind} label segments for "
                            f"{n_segments} signal segments in {sig_path.name}")
        for s, (positions, _) in enumerate(per_segment):
            if positions.size and (positions[0] < 0 or positions[-1] >= segment_len):
                raise DataError(f"{lbl_path}: segment {s} has {kind} positions outside [0, {segment_len})")
    return Patient(signal=signal, beats=beats, rhythms=rhythms)


def _read_pkl_gz(path: Path, what: str) -> Any:
    """The object of a gzip pickle through the restricted unpickler; DataError naming the file on any failure."""
    try:
        with gzip.open(path, "rb") as fh:
            return restricted_load(fh, path)
    except DataError:
        raise
    except _READ_ERRORS as exc:
        raise DataError(f"{path}: cannot read {what} ({type(exc).__name__}: {exc})") from None


def _load_signal_pkl(path: Path) -> np.ndarray:
    return _check_signal(_read_pkl_gz(path, "signal"), path)


def _load_signal_npy(path: Path) -> np.ndarray:
    try:
        signal = np.load(path, mmap_mode="r", allow_pickle=False)
    except _READ_ERRORS as exc:
        raise DataError(f"{path}: cannot read signal ({type(exc).__name__}: {exc})") from None
    return _check_signal(signal, path)


def _check_signal(signal: Any, path: Path) -> np.ndarray:
    if not isinstance(signal, np.ndarray) or signal.ndim != 2 or signal.dtype != np.float32:
        what = f"{signal.dtype} array of shape {signal.shape}" if isinstance(signal, np.ndarray) else type(signal)
        raise DataError(f"{path}: expected a float32 array (n_segments, segment_len), got {what}")
    if signal.shape[0] == 0 or signal.shape[1] == 0:
        raise DataError(f"{path}: empty signal of shape {signal.shape}")
    return signal


def _load_labels_pkl(path: Path) -> tuple[list[Labels], list[Labels]]:
    raw = _read_pkl_gz(path, "labels")
    if not isinstance(raw, (list, tuple)):
        raise DataError(f"{path}: expected a list of per-segment label dicts, got {type(raw).__name__}")
    beats, rhythms = [], []
    for s, seg in enumerate(raw):
        if not isinstance(seg, dict) or "btype" not in seg or "rtype" not in seg:
            raise DataError(f"{path}: segment {s} is not a dict with 'btype' and 'rtype'")
        beats.append(_flatten(seg["btype"], len(BEAT_CLASSES), path, s, "btype"))
        rhythms.append(_flatten(seg["rtype"], len(RHYTHM_CLASSES), path, s, "rtype"))
    return beats, rhythms


def _flatten(per_class: Any, n_classes: int, path: Path, segment: int, key: str) -> Labels:
    """Turn ``[positions of class 0, positions of class 1, ...]`` into sorted ``(positions, classes)``."""
    if not isinstance(per_class, (list, tuple)) or len(per_class) != n_classes:
        raise DataError(f"{path}: segment {segment} '{key}' must be a list of {n_classes} arrays")
    positions, classes = [], []
    for k, arr in enumerate(per_class):
        arr = np.asarray(arr)
        if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
            raise DataError(f"{path}: segment {segment} '{key}'[{k}] is not a 1-D integer array")
        positions.append(arr.astype(np.int64))
        classes.append(np.full(arr.size, k, dtype=np.int64))
    return _sorted_labels(np.concatenate(positions), np.concatenate(classes))


def _sorted_labels(positions: np.ndarray, classes: np.ndarray) -> Labels:
    order = np.lexsort((classes, positions))
    return positions[order], classes[order]


def _load_labels_npz(path: Path) -> tuple[list[Labels], list[Labels]]:
    try:
        with zipfile.ZipFile(path) as zf:
            arrays = {key: _read_npz_member(zf, key, path) for key in ("btype", "rtype")}
    except DataError:
        raise
    except _READ_ERRORS as exc:
        raise DataError(f"{path}: cannot read labels ({type(exc).__name__}: {exc})") from None
    out = []
    for key, n_classes in (("btype", len(BEAT_CLASSES)), ("rtype", len(RHYTHM_CLASSES))):
        per_segment = []
        for s, pair in enumerate(arrays[key]):
            if len(pair) != 2:
                raise DataError(f"{path}: segment {s} '{key}' is not a (positions, classes) pair")
            positions, classes = (np.asarray(a) for a in pair)
            if positions.ndim != 1 or positions.shape != classes.shape or (
                    positions.size and (positions.dtype.kind not in "iu" or classes.dtype.kind not in "iu")):
                raise DataError(f"{path}: segment {s} '{key}' positions/classes are not equal-length int arrays")
            if classes.size and (classes.min() < 0 or classes.max() >= n_classes):
                raise DataError(f"{path}: segment {s} '{key}' has classes outside 0..{n_classes - 1}")
            per_segment.append(_sorted_labels(positions.astype(np.int64), classes.astype(np.int64)))
        out.append(per_segment)
    return out[0], out[1]


def _read_npz_member(zf: zipfile.ZipFile, key: str, path: Path) -> Any:
    """Read ``key`` from an open .npz; object arrays go through the restricted unpickler."""
    name = f"{key}.npy"
    if name not in zf.namelist():
        raise DataError(f"{path}: missing array '{key}'")
    with zf.open(name) as fh:
        version = np.lib.format.read_magic(fh)
        read_header = _NPY_HEADER_READERS.get(version)
        if read_header is None:
            raise DataError(f"{path}: array '{key}' has unsupported .npy format version {version}")
        _, _, dtype = read_header(fh)
        if dtype.hasobject:
            return restricted_load(fh, path)
    with zf.open(name) as fh:
        return np.lib.format.read_array(fh, allow_pickle=False)


def write_patient(db_dir: str | os.PathLike[str], patient_id: int, signal: np.ndarray, beats: Sequence[Labels],
                  rhythms: Sequence[Labels], unzipped: bool = False) -> tuple[Path, Path]:
    """Write one patient in the published layout (atomically, file by file); return the signal and label paths."""
    signal = np.ascontiguousarray(signal, dtype=np.float32)
    if signal.ndim != 2:
        raise ValueError(f"signal must be 2-D (n_segments, segment_len), got shape {signal.shape}")
    n_segments = signal.shape[0]
    if len(beats) != n_segments or len(rhythms) != n_segments:
        raise ValueError(f"need one beats and one rhythms pair per segment ({n_segments}), got "
                         f"{len(beats)} and {len(rhythms)}")
    beats = [_checked_pair(p, len(BEAT_CLASSES), signal.shape[1], "beats") for p in beats]
    rhythms = [_checked_pair(p, len(RHYTHM_CLASSES), signal.shape[1], "rhythms") for p in rhythms]
    sig_path, lbl_path = patient_files(db_dir, patient_id, unzipped)
    if unzipped:
        buf = io.BytesIO()
        np.save(buf, signal, allow_pickle=False)
        atomic_write_bytes(sig_path, buf.getvalue())
        buf = io.BytesIO()
        np.savez(buf, btype=_pairs_array(beats), rtype=_pairs_array(rhythms), size=np.int64(n_segments))
        atomic_write_bytes(lbl_path, buf.getvalue())
    else:
        raw = [{"btype": [pos[cls == k] for k in range(len(BEAT_CLASSES))],
                "rtype": [rpos[rcls == k] for k in range(len(RHYTHM_CLASSES))]}
               for (pos, cls), (rpos, rcls) in zip(beats, rhythms)]
        atomic_write_bytes(sig_path, gzip.compress(pickle.dumps(signal, protocol=4), compresslevel=6))
        atomic_write_bytes(lbl_path, gzip.compress(pickle.dumps(raw, protocol=4), compresslevel=6))
    return sig_path, lbl_path


def _checked_pair(pair: Labels, n_classes: int, segment_len: int, what: str) -> Labels:
    positions, classes = (np.asarray(a, dtype=np.int64).reshape(-1) for a in pair)
    if positions.shape != classes.shape:
        raise ValueError(f"{what}: positions and classes differ in length")
    if classes.size and (classes.min() < 0 or classes.max() >= n_classes):
        raise ValueError(f"{what}: classes must lie in 0..{n_classes - 1}")
    if positions.size and (positions.min() < 0 or positions.max() >= segment_len):
        raise ValueError(f"{what}: positions must lie in [0, {segment_len})")
    return _sorted_labels(positions, classes)


def _pairs_array(pairs: Sequence[Labels]) -> np.ndarray:
    out = np.empty((len(pairs), 2), dtype=object)
    for s, (positions, classes) in enumerate(pairs):
        out[s, 0], out[s, 1] = positions, classes
    return out


def select_patients(ids: Sequence[int] | np.ndarray, frac: float | None = None, count: int | None = None,
                    seed: int = 0) -> list[int]:
    """A seeded subset of ``ids`` (sorted); nested: for one seed, a smaller subset lies inside every larger one."""
    pool = np.unique(np.asarray(ids, dtype=np.int64))
    if frac is not None and count is not None:
        raise ConfigError("select_patients: give frac or count, not both")
    if frac is not None:
        if not 0 < frac <= 1:
            raise ConfigError(f"frac must lie in (0, 1], got {frac}")
        k = max(1, int(np.floor(frac * pool.size + 0.5)))
    elif count is not None:
        if not 0 < count <= pool.size:
            raise ConfigError(f"count must lie in 1..{pool.size}, got {count}")
        k = int(count)
    else:
        k = pool.size
    chosen = np.random.default_rng(seed).permutation(pool)[:k]
    return sorted(int(i) for i in chosen)
