"""Synthetic PhysioNet/CinC 2017 records: the shared physiology (``ecg_hpc.data.synthetic``) in the
challenge's format, one record per class label (A, N, O, ~) with the class mix of the training set.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ecg_hpc.data.physionet2017 import CLASSES, FS as PHYSIONET_FS, GAIN as PHYSIONET_GAIN
from ecg_hpc.data.synthetic import (RHYTHM_AFIB, RHYTHM_AFLUT, RHYTHM_NOISE, RHYTHM_NORMAL, Episodes, PatientModel,
                                    noise_episode_levels,
                                    random_patient, synth_ecg)


def physionet_model(rng: np.random.Generator, label: str) -> tuple[PatientModel, Episodes]:
    """Physiology and rhythm episodes of one challenge record of class ``label``."""
    if label not in CLASSES:
        raise ValueError(f"label must be one of {CLASSES}, got {label!r}")
    fs = PHYSIONET_FS
    u = rng.random()
    duration = 30.0 if u < 0.73 else 60.0 if u < 0.83 else rng.uniform(9.0, 60.0)
    n = int(round(duration * fs))
    pm = random_patient(rng)
    # normal records carry at most rare ectopy; 'other' and 'noisy' draw their own below
    u = rng.random(3)
    pm = replace(pm, pac_rate=0.1 * u[0] if u[0] < 0.3 else 0.0, pvc_rate=0.1 * u[1] if u[1] < 0.3 else 0.0,
                 hr_bpm=58.0 + 42.0 * u[2])
    rhythm, noise_level, contact = RHYTHM_NORMAL, 1.0, 1.0
    base = label if label != "~" else "NAO"[int(np.searchsorted([0.7, 0.85], rng.random()))]
    if base == "A":  # the patient's own AF physiology, drawn as for an Icentia11k patient
        rhythm = RHYTHM_AFIB
        pm = replace(pm, pvc_rate=0.05 if rng.random() < 0.2 else 0.0)
    elif base == "O":
        kind = ("pac", "pvc", "pattern", "flutter", "brady", "tachy")[
            int(np.searchsorted([0.2, 0.4, 0.55, 0.7, 0.85], rng.random()))]
        if kind == "pac":
            pm = replace(pm, pac_rate=rng.uniform(0.08, 0.35))
        elif kind == "pvc":
            pm = replace(pm, pvc_rate=rng.uniform(0.08, 0.35))
        elif kind == "pattern":
            pm = replace(pm, pattern=2 + int(rng.random() < 0.5), pattern_pvc=bool(rng.random() < 0.7))
        elif kind == "flutter":
            rhythm = RHYTHM_AFLUT
        elif kind == "brady":
            pm = replace(pm, hr_bpm=rng.uniform(35.0, 55.0))
        else:
            pm = replace(pm, hr_bpm=rng.uniform(105.0, 150.0))
    classes, ends = [rhythm], [n]
    if label == "~":
        a = int(rng.uniform(0.0, 0.3) * n) if rng.random() < 0.4 else 0
        b = n if rng.random() < 0.7 else int(rng.uniform(0.8, 1.0) * n)
        classes, ends = [rhythm, RHYTHM_NOISE, rhythm], [a, b, n]
        noise_level, contact = noise_episode_levels(rng)
    elif rng.random() < 0.15:  # a short noisy stretch in a readable record
        a = int(rng.uniform(0.0, 0.8) * n)
        classes, ends = [rhythm, RHYTHM_NOISE, rhythm], [a, min(n, a + int(rng.uniform(0.5, 2.5) * fs)), n]
        noise_level = 0.3
    cls, end = np.array(classes), np.array(ends)
    keep = np.diff(end, prepend=0) > 0
    return pm, Episodes(cls[keep], end[keep], noise_level, contact)


def physionet_record(rng: np.random.Generator, label: str, fs: int = PHYSIONET_FS
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A challenge-style record of class ``label`` with its beats: (int16 ADC values, R-peak samples, classes)."""
    pm, episodes = physionet_model(rng, label)
    if fs != PHYSIONET_FS:
        episodes = replace(episodes, ends=np.rint(episodes.ends * (fs / PHYSIONET_FS)).astype(np.int64))
    x, positions, classes = synth_ecg(rng, pm, episodes, float(fs))
    return np.clip(np.rint(x * PHYSIONET_GAIN), -32768, 32767).astype(np.int16), positions, classes


def synth_physionet_record(rng: np.random.Generator, label: str, fs: int = PHYSIONET_FS) -> np.ndarray:
    """One PhysioNet/CinC 2017-style record of class ``label`` (A, N, O or ~): int16 ADC values, 1000/mV."""
    return physionet_record(rng, label, fs)[0]


def class_counts(n: int, shares: dict[str, float]) -> dict[str, int]:
    """Split ``n`` into whole counts in proportion to ``shares`` (largest remainders, ties to the first listed)."""
    total = sum(shares.values())
    exact = {k: n * v / total for k, v in shares.items()}
    counts = {k: int(np.floor(v)) for k, v in exact.items()}
    order = sorted(shares, key=lambda k: -(exact[k] - counts[k]))
    for k in order[:n - sum(counts.values())]:
        counts[k] += 1
    return counts


PHYSIONET_SHARES = {"N": 0.59, "A": 0.09, "O": 0.29, "~": 0.03}  # class mix of the 8,528 training records
