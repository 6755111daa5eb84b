"""Icentia11k as released on PhysioNet in WFDB format: ``pNN/pXXXXX/pXXXXX_sYY`` records with ``.atr`` annotations.

The release was made by the dataset authors' ``icentia11k_make_wfdb.py`` (shawntan/icentia-ecg), which maps
classes to annotations as follows, and this module inverts that mapping:

- beats: symbols ``Q N S a V`` for beat classes 0-4 (undefined, normal, pac, aberrated, pvc);
- rhythms: each run of equal rhythm classes normal/afib/aflut becomes a zone ``+ (N``, ``+ (AFIB``, ``+ (AFL``
  at its first episode end and ``+ )`` at its last (``(X)`` when the run is a single episode end). Classes
  undefined/end/noise are not written at all, so the release cannot tell them apart: episode ends outside
  every zone are read back as **noise** (``RHYTHM_GAP``).

Rhythm episode ends are read back at every beat and zone mark; an episode end inside a zone gets the zone's class.
The signal is 16-bit with a gain per record; samples become ``float32((digital - baseline) / gain)``, as the
``wfdb`` library computes physical units.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from ecg_hpc.data.icentia11k import FS, Labels, Patient
from ecg_hpc.errors import DataError

BEAT_SYMBOLS = ("Q", "N", "S", "a", "V")  # index = beat class
RHYTHM_ZONES = {"(N": 3, "(AFIB": 4, "(AFL": 5}  # aux note -> rhythm class
RHYTHM_GAP = 2  # episode ends outside every zone: noise (undefined/end/noise are not in the release)
WFDB_GAIN = (2 ** 15 - 1) * 6 / (0.9375 * 2820)  # adc gain used by the authors' conversion (~74.36 / mV)
_RECORD = re.compile(r"^p(\d{5})_s(\d{2})\.hea$")


def patient_folder(root: str | os.PathLike[str], patient_id: int) -> Path:
    """Folder of a patient in the PhysioNet layout, ``root/pNN/pXXXXX`` (NN = id // 1000)."""
    return Path(root) / f"p{int(patient_id) // 1000:02d}" / f"p{int(patient_id):05d}"


def list_wfdb_patients(root: str | os.PathLike[str]) -> dict[int, Path]:
    """Patient id -> folder for ``root/pNN/pXXXXX`` (PhysioNet) and ``root/pXXXXX`` (the authors' script output)."""
    found: dict[int, Path] = {}
    root = Path(root)
    for folder in list(root.glob("p[0-9][0-9]/p[0-9][0-9][0-9][0-9][0-9]")) + \
            list(root.glob("p[0-9][0-9][0-9][0-9][0-9]")):
        if folder.is_dir() and any(folder.glob(f"{folder.name}_s*.hea")):
            found.setdefault(int(folder.name[1:]), folder)
    return dict(sorted(found.items()))


def load_wfdb_patient(folder: str | os.PathLike[str], patient_id: int) -> Patient:
    """Read all segment records of one patient folder into a ``Patient`` (classes as in the pkl release)."""
    import wfdb

    folder = Path(folder)
    segments = sorted(int(m.group(2)) for m in map(_RECORD.match, os.listdir(folder))
                      if m and int(m.group(1)) == int(patient_id))
    if not segments:
        raise DataError(f"{folder}: no records p{int(patient_id):05d}_sYY.hea")
    if segments != list(range(len(segments))):
        raise DataError(f"{folder}: segment records are not numbered 00..{len(segments) - 1}: {segments}")
    signals, beats, rhythms = [], [], []
    for s in segments:
        record = folder / f"p{int(patient_id):05d}_s{s:02d}"
        try:
            rec = wfdb.rdrecord(str(record), physical=False)
        except Exception as exc:  # wfdb raises many types for malformed headers/data files
            raise DataError(f"{record}.hea: cannot read record ({type(exc).__name__}: {exc})") from None
        if rec.d_signal is None or rec.d_signal.ndim != 2 or rec.d_signal.shape[1] != 1:
            raise DataError(f"{record}.hea: expected one signal channel")
        if rec.fs != FS:
            raise DataError(f"{record}.hea: sampling frequency {rec.fs}, expected {FS}")
        digital = rec.d_signal[:, 0].astype(np.float64)
        signals.append(((digital - rec.baseline[0]) / rec.adc_gain[0]).astype(np.float32))
        if signals[-1].size != signals[0].size:
            raise DataError(f"{record}.hea: {signals[-1].size} samples, but segment 00 has {signals[0].size}")
        segment_beats, segment_rhythms = _read_annotations(wfdb, record, signals[-1].size)
        beats.append(segment_beats)
        rhythms.append(segment_rhythms)
    return Patient(signal=np.stack(signals), beats=beats, rhythms=rhythms)


def _read_annotations(wfdb, record: Path, segment_len: int) -> tuple[Labels, Labels]:
    """Beats and rhythm episode ends of one record (no ``.atr``: no annotations, as the authors' script skips)."""
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    if not Path(f"{record}.atr").is_file():
        return empty, empty
    try:
        ann = wfdb.rdann(str(record), "atr")
    except Exception as exc:
        raise DataError(f"{record}.atr: cannot read annotations ({type(exc).__name__}: {exc})") from None
    samples = np.asarray(ann.sample, np.int64)
    symbols = list(ann.symbol)
    notes = [(n or "").rstrip("\x00") for n in (ann.aux_note or [""] * len(symbols))]
    if samples.size and (samples.min() < 0 or samples.max() >= segment_len):
        raise DataError(f"{record}.atr: annotation samples outside [0, {segment_len})")
    beat_pos, beat_cls, marks, zones, open_zone = [], [], [], [], None
    for sample, symbol, note in zip(samples.tolist(), symbols, notes):
        if symbol != "+":
            if symbol not in BEAT_SYMBOLS:
                raise DataError(f"{record}.atr: unknown beat symbol {symbol!r} at sample {sample}")
            beat_pos.append(sample)
            beat_cls.append(BEAT_SYMBOLS.index(symbol))
            continue
        marks.append(sample)
        if note == ")":
            if open_zone is None:
                raise DataError(f"{record}.atr: rhythm zone closed at sample {sample} without an opening")
            zones.append((open_zone[0], sample, open_zone[1]))
            open_zone = None
        elif note.rstrip(")") in RHYTHM_ZONES and open_zone is None:
            if note.endswith(")"):
                zones.append((sample, sample, RHYTHM_ZONES[note[:-1]]))
            else:
                open_zone = (sample, RHYTHM_ZONES[note])
        else:
            raise DataError(f"{record}.atr: unexpected rhythm note {note!r} at sample {sample}")
    if open_zone is not None:
        zones.append((open_zone[0], segment_len - 1, open_zone[1]))
    beats = (np.asarray(beat_pos, np.int64), np.asarray(beat_cls, np.int64))
    order = np.lexsort((beats[1], beats[0]))
    rhythm_pos = np.unique(np.asarray(beat_pos + marks, np.int64))
    rhythm_cls = np.full(rhythm_pos.size, RHYTHM_GAP, np.int64)
    for first, last, cls in zones:
        rhythm_cls[(rhythm_pos >= first) & (rhythm_pos <= last)] = cls
    return (beats[0][order], beats[1][order]), (rhythm_pos, rhythm_cls)


def write_wfdb_patient(root: str | os.PathLike[str], patient_id: int, digital: np.ndarray,
                       beats: Sequence[Labels], rhythms: Sequence[Labels], gain: float = WFDB_GAIN) -> Path:
    """Write one patient in the PhysioNet layout with the ``wfdb`` library, annotating as the authors' script does.

    ``digital`` is int16 ``(n_segments, segment_len)``; rhythm classes undefined/end/noise are left out (as in
    the release). Returns the patient folder. Used by tests and the synthetic generator.
    """
    import wfdb

    folder = patient_folder(root, patient_id)
    folder.mkdir(parents=True, exist_ok=True)
    for s, samples in enumerate(np.asarray(digital)):
        name = f"p{int(patient_id):05d}_s{s:02d}"
        wfdb.wrsamp(name, fs=FS, units=["mV"], sig_name=["ecg"], d_signal=samples.astype(np.int16).reshape(-1, 1),
                    fmt=["16"], adc_gain=[gain], baseline=[0], write_dir=str(folder))
        ann = [(int(p), 0, BEAT_SYMBOLS[int(c)], "") for p, c in zip(*beats[s])]
        ann += _zone_marks(*rhythms[s])
        if ann:
            ann.sort()
            wfdb.wrann(name, "atr", np.asarray([a[0] for a in ann]), symbol=[a[2] for a in ann],
                       aux_note=[a[3] for a in ann], write_dir=str(folder))
    return folder


def _zone_marks(positions: np.ndarray, classes: np.ndarray) -> list[tuple[int, int, str, str]]:
    """``+`` annotations opening/closing each run of equal normal/afib/aflut episode ends."""
    notes = {cls: note for note, cls in RHYTHM_ZONES.items()}
    marks, run_start, run_cls, prev = [], None, None, None
    for pos, cls in list(zip(positions.tolist(), classes.tolist())) + [(None, None)]:
        if run_cls is not None and cls != run_cls:
            if run_start == prev:
                marks.append((run_start, 1, "+", notes[run_cls] + ")"))
            else:
                marks += [(run_start, 1, "+", notes[run_cls]), (prev, 1, "+", ")")]
            run_cls = None
        if cls in notes and cls != run_cls:
            run_start, run_cls = pos, cls
        prev = pos
    return marks
