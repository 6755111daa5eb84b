"""The Icentia11k shard store: per-patient memory-mappable signals and label indices, written atomically.

Layout of a store directory (one sub-directory per patient, which appears by an atomic rename when complete)::

    STORE/manifest.json                  all patients' meta records and per-patient means (store and source bytes,
                                         conversion CPU s); rewritten at the end of each conversion
    STORE/patients/00042/meta.json       shapes, dtypes, scale, sha256 and sizes of the files, source file sizes
    STORE/patients/00042/signal.npy      int16 (n_segments, segment_len) with ``scale``, or float32 (scale 1.0)
    STORE/patients/00042/beats.npy       int32 packed labels of all segments: position * 8 + class, sorted
    STORE/patients/00042/rhythms.npy     int32 packed rhythm labels, same packing
    STORE/patients/00042/offsets.npy     int64 (2, n_segments + 1): segment s of beats/rhythms is [off[s], off[s+1])

The signal is lossless: int16 only when every float32 sample equals ``float32(k * scale)`` (checked exactly),
else float32. Packing a class (< 8) into the low 3 bits keeps one sorted array per kind, so the pipeline finds
the labels of a frame with one ``searchsorted`` (``position * 8`` bounds) and reads classes as ``packed & 7``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ecg_hpc.data.icentia11k import Labels
from ecg_hpc.errors import DataError
from ecg_hpc.atomic import atomic_dir, atomic_write_json, check_free_space, file_sha256
from ecg_hpc.provenance import utc_now

STORE_FORMAT = "ecg-hpc-icentia11k-store"
STORE_VERSION = 1
CLASS_BITS = 3
CLASS_MASK = (1 << CLASS_BITS) - 1
BEATS, RHYTHMS = 0, 1  # rows of a patient's packed labels: beats.npy, rhythms.npy and their offsets
MAX_SEGMENT_LEN = (2 ** 31 - 1) >> CLASS_BITS
PATIENTS_DIR = "patients"
MANIFEST = "manifest.json"
_FILES = ("signal.npy", "beats.npy", "rhythms.npy", "offsets.npy")


def patient_dir(store: str | os.PathLike[str], patient_id: int) -> Path:
    """Directory of one converted patient inside ``store``."""
    return Path(store) / PATIENTS_DIR / f"{int(patient_id):05d}"


def encode_signal(signal: np.ndarray) -> tuple[np.ndarray, float]:
    """Losslessly encode float32 ``signal`` as ``(int16 k, scale)`` with ``float32(k * scale) == signal``.

    The grid step is estimated from the values, the scale is then the shortest decimal in the interval of scales
    that reproduce every sample exactly (a function of the values only, so equal inputs give equal stores), and
    the reconstruction is verified. When no such scale exists, returns ``(signal as float32, 1.0)``.
    """
    signal = np.asarray(signal, dtype=np.float32)
    fallback = (signal, 1.0)
    if not np.all(np.isfinite(signal)):
        return fallback
    if not signal.any():
        return np.zeros(signal.shape, np.int16), 1.0
    step = _grid_step(signal)
    if step is None:
        return fallback
    k = np.empty(signal.shape, np.int16)
    lo, hi = 0.0, np.inf
    for row, out in zip(signal.reshape(-1, signal.shape[-1]), k.reshape(-1, signal.shape[-1])):
        q = row.astype(np.float64) / step
        kr = np.rint(q)
        if np.abs(q - kr).max() > 0.01 or np.abs(kr).max() > 32767:
            return fallback
        out[...] = kr
        row_lo, row_hi = _scale_interval(row, kr)
        lo, hi = max(lo, row_lo), min(hi, row_hi)
    if not lo <= hi:
        return fallback
    scale = _simplest_in(lo, hi) if np.isfinite(hi) else step
    for row, values in zip(signal.reshape(-1, signal.shape[-1]), k.reshape(-1, signal.shape[-1])):
        if not np.array_equal(decode_signal(values, scale), row):  # row by row: bounded temporary memory
            return fallback
    return k, scale


def _simplest_in(lo: float, hi: float) -> float:
    """The shortest decimal in ``[lo, hi]`` (so a grid of 2**-10 or 0.005 is stored as exactly that)."""
    for digits in range(1, 18):
        candidate = float(f"{(lo + hi) / 2:.{digits}g}")
        if lo <= candidate <= hi:
            return candidate
    return (lo + hi) / 2


def decode_signal(values: np.ndarray, scale: float) -> np.ndarray:
    """The float32 signal that an encoded ``(values, scale)`` stands for (exact inverse of ``encode_signal``)."""
    if values.dtype == np.float32:
        return np.asarray(values)
    return (values.astype(np.float64) * scale).astype(np.float32)


def _grid_step(signal: np.ndarray) -> float | None:
    """Estimate the grid step from the smallest gap between distinct values of a sample, refined by least squares."""
    flat = signal.reshape(-1)
    sample = flat[:: max(1, flat.size // 2_000_000)].astype(np.float64)
    values = np.unique(np.abs(sample[sample != 0]))
    if values.size == 0:
        return None
    gaps = np.diff(np.concatenate(([0.0], values)))
    step = float(gaps.min())
    if step <= 0:
        return None
    k = np.rint(values / step)
    if k.max() > 32767:
        return None
    return float(np.dot(k, values) / np.dot(k, k))


def _scale_interval(row: np.ndarray, k: np.ndarray) -> tuple[float, float]:
    """Scales c (an interval) with ``float32(k * c) == row`` for all nonzero k (half-ulp rounding bounds)."""
    nz = k != 0
    x = row[nz]
    kk = k[nz]
    if x.size == 0:
        return 0.0, np.inf
    below = np.nextafter(x, np.float32(-np.inf)).astype(np.float64)
    above = np.nextafter(x, np.float32(np.inf)).astype(np.float64)
    x64 = x.astype(np.float64)
    lo_val, hi_val = (x64 + below) / 2, (x64 + above) / 2
    c1, c2 = lo_val / kk, hi_val / kk
    return float(np.minimum(c1, c2).max()), float(np.maximum(c1, c2).min())


def pack_labels(per_segment: Sequence[Labels], segment_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate per-segment ``(positions, classes)`` into packed int32 ``position * 8 + class`` and offsets."""
    if segment_len > MAX_SEGMENT_LEN:
        raise ValueError(f"segment length {segment_len} exceeds the packable maximum {MAX_SEGMENT_LEN}")
    packed = [np.sort(np.asarray(p, np.int64) << CLASS_BITS | np.asarray(c, np.int64)) for p, c in per_segment]
    offsets = np.zeros(len(per_segment) + 1, np.int64)
    offsets[1:] = np.cumsum([a.size for a in packed])
    flat = np.concatenate(packed) if packed else np.zeros(0, np.int64)
    return flat.astype(np.int32), offsets


def unpack_labels(packed: np.ndarray) -> Labels:
    """Positions and classes (int64) of a packed label array."""
    packed = np.asarray(packed, np.int64)
    return packed >> CLASS_BITS, packed & CLASS_MASK


def write_patient(store: str | os.PathLike[str], patient_id: int, signal: np.ndarray, beats: Sequence[Labels],
                  rhythms: Sequence[Labels], source: dict[str, Any]) -> dict[str, Any]:
    """Encode and write one patient into ``store`` atomically (temp dir + rename); return its meta record."""
    began = time.process_time()
    signal = np.asarray(signal)
    n_segments, segment_len = signal.shape
    values, scale = encode_signal(signal)
    beat_packed, beat_off = pack_labels(beats, segment_len)
    rhythm_packed, rhythm_off = pack_labels(rhythms, segment_len)
    arrays = {"signal.npy": values, "beats.npy": beat_packed, "rhythms.npy": rhythm_packed,
              "offsets.npy": np.stack([beat_off, rhythm_off])}
    final = patient_dir(store, patient_id)
    with atomic_dir(final, prefix=f".tmp-{int(patient_id):05d}-") as tmp:
        check_free_space(tmp, sum(a.nbytes for a in arrays.values()))
        files = {}
        for name, array in arrays.items():
            path = tmp / name
            _save_npy(path, array)
            files[name] = {"dtype": str(array.dtype), "shape": list(array.shape), "bytes": path.stat().st_size,
                           "offset": npy_data_offset(path), "sha256": file_sha256(path)}
        meta = {"patient_id": int(patient_id), "n_segments": int(n_segments), "segment_len": int(segment_len),
                "signal_dtype": str(values.dtype), "scale": scale, "n_beats": int(beat_packed.size),
                "n_rhythms": int(rhythm_packed.size), "files": files, "source": source, "converted_at": utc_now(),
                "write_cpu_s": round(time.process_time() - began, 3)}
        atomic_write_json(tmp / "meta.json", meta)
    return meta


def _save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` (format 1.0, C order) through Python's file object, so that a full disk raises OSError ENOSPC
    (numpy's own ``tofile`` says only "N requested and M written", with no error number)."""
    array = np.ascontiguousarray(array)
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, np.lib.format.header_data_from_array_1_0(array))
        fh.write(memoryview(array.reshape(-1)).cast("B"))


def npy_data_offset(path: str | os.PathLike[str]) -> int:
    """Byte offset of the array data in a ``.npy`` file (the header's length)."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                np.lib.format.read_array_header_1_0(fh)
            else:
                np.lib.format.read_array_header_2_0(fh)
            return fh.tell()
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npy file ({exc})") from None


def remove_stale_temps(store: str | os.PathLike[str], patient_id: int) -> None:
    """Delete leftovers of an interrupted conversion of ``patient_id`` (only that patient's temp dirs)."""
    parent = Path(store) / PATIENTS_DIR
    if parent.is_dir():
        for entry in parent.glob(f".tmp-{int(patient_id):05d}-*"):
            shutil.rmtree(entry, ignore_errors=True)


def done_patients(store: str | os.PathLike[str]) -> list[int]:
    """Sorted ids of the patients completely converted into ``store``."""
    parent = Path(store) / PATIENTS_DIR
    if not parent.is_dir():
        return []
    return sorted(int(e.name) for e in os.scandir(parent) if e.name.isdigit() and e.is_dir())


def write_manifest(store: str | os.PathLike[str]) -> Path:
    """Rewrite ``manifest.json`` from the meta records of all converted patients."""
    metas = [read_meta(store, pid) for pid in done_patients(store)]
    return atomic_write_json(Path(store) / MANIFEST, {
        "format": STORE_FORMAT, "version": STORE_VERSION, "written_at": utc_now(), "n_patients": len(metas),
        "n_segments": sum(m["n_segments"] for m in metas), "per_patient": _per_patient(metas), "patients": metas})


def _per_patient(metas: list[dict[str, Any]]) -> dict[str, float | None]:
    """Mean store and source bytes and conversion CPU seconds (reading the source, encoding, writing) per patient."""
    def mean(values: list[float]) -> float | None:
        return round(sum(values) / len(values), 3) if values else None
    return {"store_bytes": mean([sum(f["bytes"] for f in m["files"].values()) for m in metas]),
            "source_bytes": mean([sum(m["source"]["files"].values()) for m in metas if m.get("source")]),
            "convert_cpu_s": mean([m["source"]["read_cpu_s"] + m["write_cpu_s"] for m in metas
                                   if "read_cpu_s" in m.get("source", {}) and "write_cpu_s" in m])}


def read_meta(store: str | os.PathLike[str], patient_id: int) -> dict[str, Any]:
    """The meta record of one converted patient, checked to list every file with its dtype, shape and size."""
    path = patient_dir(store, patient_id) / "meta.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read patient meta ({exc})") from None
    files = meta.get("files") if isinstance(meta, dict) else None
    missing = [n for n in _FILES if not isinstance(files, dict) or not isinstance(files.get(n), dict)
               or not {"dtype", "shape", "bytes"} <= set(files[n])]
    if missing or not {"n_segments", "segment_len", "scale"} <= set(meta):
        what = ", ".join(missing) or "n_segments/segment_len/scale"
        raise DataError(f"{path}: not a patient meta record (no dtype/shape/bytes of {what}); delete the patient "
                        "folder and re-run convert-icentia")
    return meta


def read_manifest(store: str | os.PathLike[str]) -> dict[str, Any]:
    """``manifest.json`` of ``store`` (empty when there is none yet: a store being converted); DataError naming it
    when it is unreadable or not this project's store format and version."""
    path = Path(store) / MANIFEST
    if not path.is_file():
        return {}
    rewrite = "rewrite it with `python -m ecg_hpc.data convert-icentia --manifest-only` on this store"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        found = (manifest.get("format"), manifest.get("version"))
    except (OSError, ValueError, AttributeError) as exc:
        raise DataError(f"{path}: not a store manifest ({type(exc).__name__}); {rewrite}") from None
    if found != (STORE_FORMAT, STORE_VERSION):
        raise DataError(f"{path}: format {found[0]!r} version {found[1]!r}, this code reads {STORE_FORMAT!r} "
                        f"version {STORE_VERSION}; convert the data again with this version")
    try:
        for m in manifest["patients"]:
            int(m["patient_id"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a store manifest (patients: {type(exc).__name__}); {rewrite}") from None
    return manifest


def file_sizes(store: str | os.PathLike[str], patient_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """The current size of every file of ``patient_ids`` (-1 for a missing one): cheap to take every epoch."""
    sizes = {}
    for pid in patient_ids:
        folder = patient_dir(store, pid)
        sizes[int(pid)] = {}
        for name in _FILES:
            try:
                sizes[int(pid)][name] = (folder / name).stat().st_size
            except OSError:
                sizes[int(pid)][name] = -1
    return sizes


def check_sizes(store: "Store", patient_ids: Sequence[int]) -> None:
    """DataError naming the first file of ``patient_ids`` whose size differs from its meta record (a file
    truncated or replaced under a running job; found before a memory map of it could fault)."""
    metas = store.metas(patient_ids)
    for pid, sizes in file_sizes(store.path, patient_ids).items():
        for name, size in sizes.items():
            expected = int(metas[pid]["files"][name]["bytes"])
            if size != expected:
                raise DataError(f"{patient_dir(store.path, pid) / name}: {size} bytes, meta.json says {expected}: "
                                "the store changed under this run; restore it, or convert the patient again and "
                                "start a new run")


def patients_fingerprint(store: "Store", patient_ids: Sequence[int]) -> dict[str, Any]:
    """What a run records of the patients it trains on: their ids and one sha256 over each file's recorded
    checksum and current size, so a resumed run can tell a changed patient set or changed files (cheaply: the
    files are stat'ed, not read)."""
    metas = store.metas(patient_ids)
    sizes = file_sizes(store.path, patient_ids)
    digest = hashlib.sha256()
    for pid in sorted(int(p) for p in patient_ids):
        for name in _FILES:
            digest.update(f"{pid}/{name}:{metas[pid]['files'][name].get('sha256')}:{sizes[pid][name]};".encode())
    return {"path": str(store.path.resolve()), "n_patients": len(patient_ids),
            "patients": sorted(int(p) for p in patient_ids), "files_sha256": digest.hexdigest()}


def verify_patient(store: str | os.PathLike[str], patient_id: int) -> None:
    """Check the sha256 and size of every file of one patient against its meta record."""
    meta = read_meta(store, patient_id)
    for name, info in meta["files"].items():
        path = patient_dir(store, patient_id) / name
        if not path.is_file() or path.stat().st_size != info["bytes"] or file_sha256(path) != info["sha256"]:
            raise DataError(f"{path}: checksum or size differs from meta.json (corrupt store)")


@dataclass(frozen=True)
class StorePatient:
    """Memory-mapped arrays of one patient: ``signal`` (int16/float32), ``scale``, packed labels and offsets."""

    patient_id: int
    signal: np.ndarray
    scale: float
    beats: np.ndarray
    rhythms: np.ndarray
    offsets: np.ndarray

    def float_signal(self, segment: int) -> np.ndarray:
        """Exact float32 samples of one segment."""
        return decode_signal(np.asarray(self.signal[segment]), self.scale)

    def segment_beats(self, segment: int) -> Labels:
        """``(positions, classes)`` of the beats of one segment."""
        return unpack_labels(self.beats[self.offsets[0, segment]:self.offsets[0, segment + 1]])

    def segment_rhythms(self, segment: int) -> Labels:
        """``(positions, classes)`` of the rhythm episode ends of one segment."""
        return unpack_labels(self.rhythms[self.offsets[1, segment]:self.offsets[1, segment + 1]])


class Store:
    """Read-only view of a converted store: ``patient_ids`` and memory-mapped ``patient(pid)`` arrays."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not (self.path / PATIENTS_DIR).is_dir():
            raise DataError(f"{self.path}: not an Icentia11k store (no '{PATIENTS_DIR}/' folder); "
                            f"create one with `python -m ecg_hpc.data convert-icentia`")
        read_manifest(self.path)
        self._cache: dict[int, StorePatient] = {}

    @cached_property
    def patient_ids(self) -> list[int]:
        """Sorted ids of the converted patients."""
        return done_patients(self.path)

    def meta(self, patient_id: int) -> dict[str, Any]:
        """The meta record (shapes, dtypes, scale, checksums, source) of one patient."""
        return read_meta(self.path, patient_id)

    def patient(self, patient_id: int) -> StorePatient:
        """Memory-mapped arrays of one patient (opened once, then cached)."""
        cached = self._cache.get(patient_id)
        if cached is None:
            cached = self._cache[patient_id] = self._open(patient_id)
        return cached

    def _open(self, patient_id: int) -> StorePatient:
        folder = patient_dir(self.path, patient_id)
        if not folder.is_dir():
            raise DataError(f"{folder}: patient {patient_id} is not in the store")
        meta = self.meta(patient_id)
        arrays = {}
        for name in _FILES:
            path = folder / name
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise DataError(f"{path}: cannot open ({exc})") from None
            info = meta["files"][name]
            if str(arr.dtype) != info["dtype"] or list(arr.shape) != info["shape"]:
                raise DataError(f"{path}: dtype/shape {arr.dtype}{arr.shape} differ from meta.json")
            arrays[name] = arr.view(np.ndarray)
        return StorePatient(patient_id=patient_id, signal=arrays["signal.npy"], scale=float(meta["scale"]),
                            beats=arrays["beats.npy"], rhythms=arrays["rhythms.npy"],
                            offsets=np.asarray(arrays["offsets.npy"]))

    def manifest(self) -> dict[str, Any]:
        """``manifest.json`` (see ``read_manifest``)."""
        return read_manifest(self.path)

    def metas(self, patient_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """Meta records of ``patient_ids``: from ``manifest.json`` (one read) where it lists them, else meta.json."""
        listed = {int(m["patient_id"]): m for m in self.manifest().get("patients", [])}
        out = {}
        for pid in map(int, patient_ids):
            if not patient_dir(self.path, pid).is_dir():
                raise DataError(f"{patient_dir(self.path, pid)}: patient {pid} is not in the store")
            out[pid] = listed.get(pid) or self.meta(pid)
        return out


@dataclass(frozen=True)
class PatientLayout:
    """Where one patient's arrays lie in its files, for plain positional reads."""

    patient_id: int
    folder: Path
    n_segments: int
    segment_len: int
    dtype: np.dtype
    scale: float
    data_offsets: dict[str, int]
    label_offsets: np.ndarray  # int64 (2, n_segments + 1): segment s of beats/rhythms is [off[s], off[s+1])


class SegmentReader:
    """Reads pieces of store patients with one ``preadv`` each (signal chunks, one segment's labels), no mmap.

    Plain reads fetch exactly the bytes asked for in one system call, so a chunk of megabytes costs one I/O
    operation, whereas a memory map faults page by page (with readahead the kernel may evict before use).
    Up to ``max_open`` files stay open; the offsets come from the manifest/meta (or the .npy headers)."""

    LABEL_FILES = ("beats.npy", "rhythms.npy")

    def __init__(self, store: Store, metas: dict[int, dict[str, Any]], max_open: int = 64) -> None:
        self.store, self.metas, self.max_open = store, metas, int(max_open)
        self._layouts: dict[int, PatientLayout] = {}
        self._fds: dict[Path, int] = {}

    def layout(self, patient_id: int) -> PatientLayout:
        """The layout of one patient (its label offsets read once, with one read)."""
        found = self._layouts.get(patient_id)
        if found is None:
            found = self._layouts[patient_id] = self._load_layout(patient_id)
        return found

    def _load_layout(self, patient_id: int) -> PatientLayout:
        meta, folder = self.metas[patient_id], patient_dir(self.store.path, patient_id)
        files = meta["files"]
        offsets = {}
        for name in _FILES:
            path = folder / name
            offsets[name] = int(files[name]["offset"]) if "offset" in files[name] else npy_data_offset(path)
            expected = offsets[name] + int(np.prod(files[name]["shape"])) * np.dtype(files[name]["dtype"]).itemsize
            size = os.fstat(self._fd(path)).st_size
            if size < expected:
                raise DataError(f"{path}: truncated ({size} bytes, meta.json says {expected}); delete the patient "
                                f"folder and re-run convert-icentia")
        label_offsets = np.empty(files["offsets.npy"]["shape"], np.int64)
        self._pread(folder / "offsets.npy", offsets["offsets.npy"], label_offsets)
        return PatientLayout(patient_id, folder, int(meta["n_segments"]), int(meta["segment_len"]),
                             np.dtype(meta["signal_dtype"]), float(meta["scale"]), offsets, label_offsets)

    def read_signal(self, patient_id: int, segment: int, start: int, out: np.ndarray) -> None:
        """Fill ``out`` (1-D, the patient's dtype) with samples ``start ..`` of ``segment``: one read."""
        lay = self.layout(patient_id)
        if not (0 <= segment < lay.n_segments and 0 <= start and start + out.size <= lay.segment_len):
            raise ValueError(f"patient {patient_id}: samples [{start}, {start + out.size}) of segment {segment} "
                             f"lie outside ({lay.n_segments}, {lay.segment_len})")
        offset = lay.data_offsets["signal.npy"] + (segment * lay.segment_len + start) * lay.dtype.itemsize
        self._pread(lay.folder / "signal.npy", offset, out)

    def read_labels(self, patient_id: int, kind: int, segment: int) -> np.ndarray:
        """Packed labels (int32) of one segment, ``kind`` ``BEATS`` or ``RHYTHMS``: one read."""
        lay = self.layout(patient_id)
        first, last = int(lay.label_offsets[kind, segment]), int(lay.label_offsets[kind, segment + 1])
        name = self.LABEL_FILES[kind]
        out = np.empty(last - first, np.dtype(self.metas[patient_id]["files"][name]["dtype"]))
        if out.size:
            self._pread(lay.folder / name, lay.data_offsets[name] + first * out.itemsize, out)
        return out

    def _fd(self, path: Path) -> int:
        fd = self._fds.pop(path, None)
        if fd is None:
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError as exc:
                raise DataError(f"{path}: cannot open ({exc.strerror})") from None
            if len(self._fds) >= self.max_open:
                os.close(self._fds.pop(next(iter(self._fds))))  # least recently used
        self._fds[path] = fd
        return fd

    def _pread(self, path: Path, offset: int, out: np.ndarray) -> None:
        view, got = memoryview(out).cast("B"), 0
        fd = self._fd(path)
        while got < view.nbytes:  # one call unless the kernel returns a short read
            try:
                n = os.preadv(fd, [view[got:]], offset + got)
            except OSError as exc:
                raise DataError(f"{path}: read failed ({exc.strerror})") from None
            if n == 0:
                raise DataError(f"{path}: truncated (read {got} of {view.nbytes} bytes at offset {offset}); "
                                f"delete the patient folder and re-run convert-icentia")
            got += n

    def close(self) -> None:
        """Close the open files."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
