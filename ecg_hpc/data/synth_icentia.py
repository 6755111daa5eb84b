"""Synthetic Icentia11k patients: the shared physiology (``ecg_hpc.data.synthetic``) in Icentia11k's format.

A patient is segments of ``SEGMENT_SIZE`` samples at 250 Hz in Icentia11k units on an int16 grid, with beat
labels (R-peak samples) and rhythm episodes (last sample of each) per segment; rhythm episodes follow the
patient's bent for AF, flutter and noise.
"""

from __future__ import annotations

import numpy as np

from ecg_hpc.data import icentia11k
from ecg_hpc.data.physionet2017 import STD_MV
from ecg_hpc.data.synthetic import (RHYTHM_AFIB, RHYTHM_AFLUT, RHYTHM_NOISE, RHYTHM_NORMAL, Episodes,
                                    noise_episode_levels, quantise,
                                    random_patient, synth_ecg)

ICENTIA_UNITS_PER_MV = icentia11k.STD / STD_MV  # both data sets look alike after their own normalisation
ICENTIA_LSB = 2.0 ** -10  # Icentia11k units per ADC step: int16 * LSB is exact in float32


def icentia_episodes(rng: np.random.Generator, n: int, fs: float, af_prone: float, flutter_prone: float,
                     noise_per_hour: float) -> Episodes:
    """Rhythm episodes of one Icentia11k segment: mostly sinus, with AF, flutter and noise by the patient's bent
    (noise episodes of a segment share one level, drawn as for a noisy challenge record)."""
    classes, ends, t, total = [], [], 0.0, n / fs
    per_hour = np.array([af_prone * 4.0, flutter_prone * 4.0, noise_per_hour])
    onset = [RHYTHM_AFIB, RHYTHM_AFLUT, RHYTHM_NOISE]
    mean_s = {RHYTHM_NORMAL: 3600.0 / per_hour.sum(), RHYTHM_AFIB: 600.0, RHYTHM_AFLUT: 300.0, RHYTHM_NOISE: 15.0}
    state = RHYTHM_AFIB if rng.random() < af_prone / 2 else RHYTHM_NORMAL
    while t < total:
        t = min(total, t + rng.exponential(mean_s[state]) + 2.0)
        classes.append(state)
        ends.append(int(round(t * fs)) if t < total else n)
        state = onset[rng.choice(3, p=per_hour / per_hour.sum())] if state == RHYTHM_NORMAL else RHYTHM_NORMAL
    cls, end = np.array(classes, np.int64), np.array(ends, np.int64)
    keep = np.diff(end, prepend=0) > 0  # drop zero-length episodes
    return Episodes(cls[keep], end[keep], *noise_episode_levels(rng))


def synth_icentia_patient(rng: np.random.Generator, n_segments: int, segment_size: int = icentia11k.SEGMENT_SIZE,
                          ) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]],
                                     list[tuple[np.ndarray, np.ndarray]]]:
    """One Icentia11k-style patient: float32 signal ``(n_segments, segment_size)`` in Icentia11k units on an
    int16 grid (times ``ICENTIA_LSB``), and per segment beats and rhythms as ``(positions, classes)``."""
    fs = float(icentia11k.FS)
    pm = random_patient(rng)
    u = rng.random(4)
    af_prone = 0.2 + 0.6 * u[0] if u[1] < 0.5 else 0.0  # half of the patients have AF episodes ...
    flutter_prone = 0.2 + 0.4 * u[2] if u[3] < 0.25 else 0.0  # ... and a quarter flutter episodes
    noise_per_hour = rng.uniform(2.0, 12.0)
    signal = np.empty((n_segments, segment_size), np.float32)
    beats, rhythms = [], []
    for s in range(n_segments):
        ep = icentia_episodes(rng, segment_size, fs, af_prone, flutter_prone, noise_per_hour)
        x, pos, cls = synth_ecg(rng, pm, ep, fs, hr_scale=float(np.exp(rng.normal(0.0, 0.15))))
        signal[s] = quantise(x * ICENTIA_UNITS_PER_MV, ICENTIA_LSB)
        beats.append((pos, cls))
        rhythms.append(ep.labels())
    return signal, beats, rhythms
