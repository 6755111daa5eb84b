"""PhysioNet/CinC Challenge 2017 records: reading (with ``wfdb``'s header parser), writing, preprocessing.

A record is ``A0xxxx.hea`` (WFDB header) plus ``A0xxxx.mat`` (MATLAB v4 holding the int16 ``val`` array, gain
1000/mV, 300 Hz); a folder holds ``RECORDS`` (names) and ``REFERENCE.csv`` (``name,label``, label in A/N/O/~).

The published headers write the record line as ``A00001 1 300 9000 2014-05-08 05:05:15`` (date before time,
ISO date), which ``wfdb.rdrecord`` cannot parse (``unconverted data remains``). The reader moves the time before
the date in WFDB's own ``DD/MM/YYYY`` form, parses the fields with ``wfdb``'s header parser, reads the signal from
the ``.mat`` with ``scipy.io.loadmat``, and says so once per folder with a ``HeaderRepairWarning``.
"""

from __future__ import annotations

import datetime as _dt
import io
import os
import re
import warnings
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np
import scipy.io
import scipy.signal

from ecg_hpc.compat import parse_wfdb_record_line, parse_wfdb_signal_lines
from ecg_hpc.errors import DataError
from ecg_hpc.progress import Progress
from ecg_hpc.atomic import atomic_write_bytes, atomic_write_text

CLASSES = ("A", "N", "O", "~")
FS = 300
GAIN = 1000.0  # ADC units per mV
MEAN_MV = 0.0075  # standardisation of the study: (x - MEAN_MV) / STD_MV
STD_MV = 0.2373
TARGET_FS = 250
INPUT_SIZE = 16384

_DATE_FIRST = re.compile(r"^(?P<head>.*?)\s+(?P<y>\d{4})-(?P<m>\d{2})-(?P<d>\d{2})\s+(?P<time>\d{1,2}:\d{2}:\d{2})\s*$")


class HeaderRepairWarning(UserWarning):
    """Headers had to be repaired before ``wfdb`` could parse them (emitted once per folder read)."""


@dataclass(frozen=True)
class RecordHeader:
    """The fields of a one-signal challenge header that the reader checks and uses."""

    record_name: str
    fs: float
    sig_len: int
    file_name: str
    adc_gain: float
    baseline: int
    units: str
    base_datetime: _dt.datetime | None
    repaired: bool  # True when the record line had the date before the time


def read_header(path: str | os.PathLike[str]) -> RecordHeader:
    """Parse a challenge ``.hea`` with ``wfdb``'s parser, moving a date-before-time record line into WFDB order."""
    path = Path(path)
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="ascii").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read header ({exc})") from exc
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        raise DataError(f"{path}: empty header")
    record_line, repaired = lines[0], False
    match = _DATE_FIRST.match(record_line)
    if match:
        record_line = f"{match['head']} {match['time']} {match['d']}/{match['m']}/{match['y']}"
        repaired = True
    try:
        rec = parse_wfdb_record_line(record_line)
        sig = parse_wfdb_signal_lines(lines[1:2]) if rec["n_sig"] == 1 and len(lines) == 2 else None
    except ValueError as exc:
        raise DataError(f"{path}: malformed WFDB header ({exc})") from exc
    if sig is None:
        raise DataError(f"{path}: expected one signal line, header declares {rec['n_sig']} "
                        f"and has {len(lines) - 1}")
    return RecordHeader(
        record_name=rec["record_name"], fs=float(rec["fs"]), sig_len=int(rec["sig_len"] or 0),
        file_name=sig["file_name"][0], adc_gain=float(sig["adc_gain"][0]),
        baseline=int(sig["baseline"][0] or 0), units=sig["units"][0], base_datetime=rec.get("base_datetime"),
        repaired=repaired)


def read_signal(src_dir: str | os.PathLike[str], name: str) -> tuple[np.ndarray, RecordHeader]:
    """Return record ``name``'s signal in mV (float32) and its header, checking fs, length and int16 data."""
    src_dir = Path(src_dir)
    hea = src_dir / f"{name}.hea"
    if not hea.is_file():
        raise DataError(f"record {name}: header {hea} is missing")
    try:
        header = read_header(hea)
    except DataError as exc:
        raise DataError(f"record {name}: {exc}") from exc
    if header.record_name != name:
        raise DataError(f"record {name}: header {hea} names record {header.record_name!r}")
    if header.fs != FS:
        raise DataError(f"record {name}: header {hea} gives {header.fs:g} Hz, expected {FS} Hz")
    mat = src_dir / header.file_name
    if not mat.is_file():
        raise DataError(f"record {name}: signal file {mat} is missing")
    try:
        val = scipy.io.loadmat(str(mat)).get("val")
    except (OSError, ValueError, TypeError) as exc:
        raise DataError(f"record {name}: {mat} is not a readable MATLAB file ({exc})") from exc
    if val is None or val.dtype != np.int16:
        got = "no 'val' variable" if val is None else f"'val' of type {val.dtype}"
        raise DataError(f"record {name}: {mat} holds {got}, expected int16 'val'")
    if val.size == 0 or val.ndim != 2 or val.shape[0] != 1:
        raise DataError(f"record {name}: {mat} 'val' has shape {val.shape}, expected a non-empty (1, n) array")
    if header.sig_len and val.shape[1] != header.sig_len:
        raise DataError(f"record {name}: {mat} has {val.shape[1]} samples, header {hea} says {header.sig_len}")
    if header.adc_gain <= 0 or header.units != "mV":
        raise DataError(f"record {name}: header {hea} gives gain {header.adc_gain:g}/{header.units}, "
                        "expected a positive gain per mV")
    return ((val[0].astype(np.float32) - header.baseline) / np.float32(header.adc_gain)), header


def read_reference(src_dir: str | os.PathLike[str]) -> tuple[list[str], list[str]]:
    """Record names and labels from ``REFERENCE.csv``, checked against ``RECORDS`` when that file exists."""
    src_dir = Path(src_dir)
    ref = src_dir / "REFERENCE.csv"
    if not ref.is_file():
        raise DataError(f"{ref} is missing (expected 'name,label' lines, label in {'/'.join(CLASSES)})")
    names, labels = [], []
    for lineno, line in enumerate(ref.read_text(encoding="ascii", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2 or not parts[0]:
            raise DataError(f"{ref}, line {lineno}: expected 'name,label', got {line!r}")
        if parts[1] not in CLASSES:
            raise DataError(f"record {parts[0]}: label {parts[1]!r} in {ref} is not one of {'/'.join(CLASSES)}")
        names.append(parts[0])
        labels.append(parts[1])
    if len(set(names)) != len(names):
        raise DataError(f"{ref} lists a record more than once")
    records = src_dir / "RECORDS"
    if records.is_file():
        listed = [ln.strip() for ln in records.read_text(encoding="ascii", errors="replace").splitlines()
                  if ln.strip()]
        unlabelled = sorted(set(listed) - set(names))
        if unlabelled:
            raise DataError(f"record {unlabelled[0]}: listed in {records} but has no label in {ref}")
        unlisted = sorted(set(names) - set(listed))
        if unlisted:
            raise DataError(f"record {unlisted[0]}: labelled in {ref} but not listed in {records}")
    if not names:
        raise DataError(f"{ref} lists no records")
    return names, labels


def load_records(src_dir: str | os.PathLike[str], progress: bool = False
                 ) -> tuple[list[str], list[np.ndarray], np.ndarray]:
    """All records of a challenge folder: (names, signals in mV, labels as int64 indices into ``CLASSES``)."""
    names, letters = read_reference(src_dir)
    bar = Progress(len(names), f"reading {src_dir}", unit="records") if progress else None
    signals, repaired = [], 0
    for name in names:
        signal, header = read_signal(src_dir, name)
        signals.append(signal)
        repaired += header.repaired
        if bar:
            bar.update()
    if repaired:
        warnings.warn(f"{repaired} of {len(names)} headers in {src_dir} put the date before the time on the record "
                      "line (e.g. '... 9000 2014-05-08 05:05:15'), which wfdb.rdrecord cannot parse; read them with "
                      "wfdb's header parser after rewriting that as 'HH:MM:SS DD/MM/YYYY', and the signals from the "
                      "MATLAB v4 .mat files (int16 'val', header gain)", HeaderRepairWarning, stacklevel=2)
    return names, signals, np.array([CLASSES.index(x) for x in letters], dtype=np.int64)


def preprocess(signal_mv: np.ndarray, fs: int = FS) -> np.ndarray:
    """Standardise, resample ``fs`` -> 250 Hz (polyphase) and zero-pad at the front (or keep the last samples)
    to ``INPUT_SIZE``: the study's input, float32 of length 16,384."""
    x = (np.asarray(signal_mv, dtype=np.float64) - MEAN_MV) / STD_MV
    g = gcd(TARGET_FS, int(fs))
    if fs != TARGET_FS:
        x = scipy.signal.resample_poly(x, TARGET_FS // g, int(fs) // g)
    out = np.zeros(INPUT_SIZE, dtype=np.float32)
    x = x[-INPUT_SIZE:]
    out[INPUT_SIZE - x.size:] = x
    return out


def write_record(dst_dir: str | os.PathLike[str], name: str, val: np.ndarray, base_datetime: _dt.datetime,
                 fs: int = FS) -> None:
    """Write ``name.mat`` (MATLAB v4 int16 ``val``) and ``name.hea`` exactly as the challenge files are laid out."""
    val = np.asarray(val)
    if val.dtype != np.int16 or val.ndim != 1 or val.size == 0:
        raise ValueError(f"record {name}: val must be a non-empty 1-D int16 array, got {val.dtype} {val.shape}")
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"val": val[None, :]}, format="4")
    atomic_write_bytes(Path(dst_dir) / f"{name}.mat", buf.getvalue())
    # Same layout as the published headers: CRLF, a trailing space, date before time, byte offset 24 (the
    # MATLAB v4 header and variable name), first sample as the initial value, checksum 0.
    header = (f"{name} 1 {fs} {val.size} {base_datetime:%Y-%m-%d %H:%M:%S} \r\n"
              f"{name}.mat 16+24 {GAIN:g}/mV 16 0 {int(val[0])} 0 0 ECG \r\n")
    atomic_write_text(Path(dst_dir) / f"{name}.hea", header)


def write_index(dst_dir: str | os.PathLike[str], names: list[str], labels: list[str]) -> None:
    """Write ``RECORDS`` (LF, no final newline) and ``REFERENCE.csv`` (CRLF), as in the published folders."""
    atomic_write_text(Path(dst_dir) / "RECORDS", "\n".join(names))
    atomic_write_text(Path(dst_dir) / "REFERENCE.csv", "".join(f"{n},{c}\r\n" for n, c in zip(names, labels)))
