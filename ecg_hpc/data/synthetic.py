"""Synthetic single-lead ECG with beat and rhythm labels: the physics shared by both published formats.

A beat is a sum of Gaussian waves (P, Q, R, S, R', and a two-part T), in the spirit of ECGSYN, with per-patient
morphology. The ventricular complex comes in three shapes (normal, aberrated: wide with an R', and PVC: wide,
large, discordant T) and the atrial wave in two (sinus P, ectopic P of a PAC); PVCs and the atrial arrhythmias
have none. Rhythms: sinus (heart-rate drift, respiratory sinus arrhythmia), atrial fibrillation (irregular RR,
fibrillatory waves), atrial flutter (sawtooth F waves with 2:1 to 4:1 conduction) and noise episodes. Noise:
baseline wander, mains hum, muscle noise with bursts, and in noise episodes motion artefacts and electrode pops.

The two data sets share their physiology, as the real ones do (the transfer the study measures rests on it):
every patient and record draws wave shapes, ectopy, atrial fibrillation (rate, RR irregularity, fibrillatory
waves) and noise episodes from the same distributions, and an Icentia11k-style patient labels them (beats: pac,
aberrated, pvc; rhythms: afib, aflut, noise) where a challenge record only has its class.

Everything is drawn from a ``numpy.random.Generator`` and rendered with array operations (no loop over beats or
samples), so one core makes several million samples per second. Signals are in mV; the two format adapters
turn them into the published formats: ``ecg_hpc.data.synth_icentia`` (Icentia11k units on an int16 grid) and
``ecg_hpc.data.synth_physionet`` (challenge ADC units, 1000/mV).
Beat positions are R-peak samples (where the Icentia11k annotation of a beat sits) and rhythm positions are the
last sample of each episode, with the class ids of ``ecg_hpc.data.icentia11k``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.signal

from ecg_hpc.data import icentia11k

BEAT_UNDEFINED, BEAT_NORMAL, BEAT_PAC, BEAT_ABERRATED, BEAT_PVC = (
    icentia11k.BEAT_CLASSES.index(c) for c in ("undefined", "normal", "pac", "aberrated", "pvc"))
RHYTHM_NOISE, RHYTHM_NORMAL, RHYTHM_AFIB, RHYTHM_AFLUT = (
    icentia11k.RHYTHM_CLASSES.index(c) for c in ("noise", "normal", "afib", "aflut"))

_V_NORMAL, _V_ABERRATED, _V_PVC = range(3)  # ventricular complex shapes
_P_NONE, _P_SINUS, _P_ECTOPIC = range(3)  # atrial wave shapes
_T1, _T2 = 4, 5  # rows of the two T-wave parts among the ventricular waves Q, R, S, R', T1, T2
_MARGIN_S = 2.0  # beats are generated this far beyond both ends so edge beats are complete waves
_COARSE_S = 0.25  # time step of slowly varying quantities (heart rate, envelopes, wander)
# Atrial fibrillation of every patient and record (both data sets): ventricular rate, coefficient of variation
# of RR, fibrillatory wave amplitude.
AF_HR_BPM = (65.0, 150.0)
AF_IRREGULARITY = (0.12, 0.3)
AF_WAVE_MV = (0.02, 0.12)


@dataclass(frozen=True)
class PatientModel:
    """Per-patient physiology: wave shapes, rates, ectopy, noise levels and lead gain (all times in s, mV)."""

    vwaves: np.ndarray  # (3 shapes, 6 waves, 3): offset from R, width, amplitude
    p_wave: np.ndarray  # (3 shapes, 3): offset from R (negative), width, amplitude; row 0 unused
    hr_bpm: float  # resting sinus rate
    hr_drift: float  # relative size of slow heart-rate changes
    rsa: float  # relative respiratory sinus arrhythmia
    resp_hz: float
    pac_rate: float  # probability that a sinus beat is replaced by a PAC
    pvc_rate: float
    aberrant_frac: float  # share of PACs conducted with a wide QRS
    pattern: int  # 0 none, 2 bigeminy, 3 trigeminy: every n-th beat ectopic ...
    pattern_pvc: bool  # ... and that ectopic beat a PVC (else a PAC)
    af_hr_bpm: float  # mean ventricular rate in atrial fibrillation
    af_irregularity: float  # coefficient of variation of RR in atrial fibrillation
    af_wave_mv: float
    flutter_bpm: float  # atrial rate of flutter
    flutter_mv: float
    gain: float  # lead and electrode gain applied to everything
    wander_mv: float
    mains_mv: float
    mains_hz: float
    emg_mv: float


def random_patient(rng: np.random.Generator) -> PatientModel:
    """Draw one patient's physiology; callers adjust rates with ``dataclasses.replace`` for a wanted class."""
    batch = iter(rng.random(64))  # one call instead of ~50 scalar draws: patients are drawn per short record

    def u(low: float = 0.0, high: float = 1.0) -> float:
        return low + (high - low) * float(next(batch))

    r_amp = u(0.4, 1.5)
    normal = np.array([
        [-u(0.018, 0.03), u(0.006, 0.011), -r_amp * u(0.0, 0.15)],  # Q
        [0.0, u(0.007, 0.012), r_amp],  # R
        [u(0.02, 0.035), u(0.008, 0.013), -u(0.05, 0.5)],  # S
        [0.0, 0.01, 0.0],  # R' (only in aberrated beats)
        [u(0.2, 0.26), u(0.04, 0.06), u(0.1, 0.35) * (1 if u() > 0.1 else -0.5)],  # T, first part
        [0.0, u(0.025, 0.04), 0.0],  # T, second part (offset and amplitude set below)
    ])
    normal[_T2, 0] = normal[_T1, 0] + u(0.03, 0.05)
    normal[_T2, 2] = normal[_T1, 2] * u(0.4, 0.8)
    aberrated = normal.copy()
    aberrated[:3, :2] *= u(1.7, 2.4)  # slower conduction: later, wider Q/R/S
    aberrated[3] = [u(0.06, 0.08), u(0.012, 0.02), r_amp * u(0.4, 0.8)]  # rsR'
    aberrated[_T1:, 2] *= -u(0.5, 0.9)
    pvc_sign = 1.0 if u() < 0.6 else -1.0
    pvc = np.array([
        [-u(0.03, 0.05), u(0.015, 0.025), -pvc_sign * u(0.0, 0.3)],
        [0.0, u(0.022, 0.035), pvc_sign * u(1.0, 2.2)],
        [u(0.05, 0.08), u(0.02, 0.035), -pvc_sign * u(0.2, 0.8)],
        [0.0, 0.01, 0.0],
        [u(0.26, 0.32), u(0.06, 0.09), -pvc_sign * u(0.3, 0.6)],
        [0.0, u(0.04, 0.06), 0.0],
    ])
    pvc[_T2, 0] = pvc[_T1, 0] + u(0.04, 0.06)
    pvc[_T2, 2] = pvc[_T1, 2] * u(0.3, 0.6)
    pr = u(0.12, 0.2)
    p_amp = u(0.07, 0.22)
    p_wave = np.array([
        [0.0, 0.01, 0.0],
        [-pr, u(0.018, 0.03), p_amp],
        [-pr * u(0.65, 0.9), u(0.015, 0.03), p_amp * (u(-1.0, -0.4) if u() < 0.5 else u(0.4, 0.7))],
    ])
    return PatientModel(
        vwaves=np.stack([normal, aberrated, pvc]), p_wave=p_wave,
        hr_bpm=u(58.0, 95.0), hr_drift=u(0.05, 0.2), rsa=u(0.01, 0.08), resp_hz=u(0.15, 0.35),
        pac_rate=float(np.exp(u(np.log(1e-3), np.log(0.08)))), pvc_rate=float(np.exp(u(np.log(1e-3), np.log(0.08)))),
        aberrant_frac=u(0.05, 0.3), pattern=0, pattern_pvc=True,
        af_hr_bpm=u(*AF_HR_BPM), af_irregularity=u(*AF_IRREGULARITY), af_wave_mv=u(*AF_WAVE_MV),
        flutter_bpm=u(250.0, 340.0), flutter_mv=u(0.1, 0.3),
        gain=float(np.exp(rng.normal(0.0, 0.3))), wander_mv=u(0.03, 0.25), mains_mv=u(0.0, 0.03),
        mains_hz=50.0 if u() < 0.5 else 60.0, emg_mv=float(np.exp(u(np.log(0.004), np.log(0.04)))),
    )


@dataclass(frozen=True)
class Episodes:
    """Contiguous rhythm episodes: ``classes[i]`` covers samples ``[ends[i-1], ends[i])`` (``ends[-1]`` = n).

    In noise episodes the noise is scaled by ``noise_level`` and the ECG by ``contact`` (poor electrode contact).
    """

    classes: np.ndarray
    ends: np.ndarray
    noise_level: float = 1.0
    contact: float = 1.0

    def spans(self) -> list[tuple[int, int, int]]:
        """``(class, first sample, end sample)`` of every episode."""
        starts = np.concatenate([[0], self.ends[:-1]])
        return [(int(c), int(a), int(b)) for c, a, b in zip(self.classes, starts, self.ends)]

    def labels(self) -> tuple[np.ndarray, np.ndarray]:
        """Icentia11k rhythm annotation: the last sample of each episode and its class."""
        return self.ends.astype(np.int64) - 1, self.classes.astype(np.int64)


def _coarse_walk(rng: np.random.Generator, n_coarse: int, smooth: int = 8) -> np.ndarray:
    """A smooth zero-mean random curve of unit scale on the coarse grid (moving average of a random walk)."""
    walk = np.cumsum(rng.standard_normal(n_coarse + smooth))
    walk = np.convolve(walk, np.full(smooth, 1.0 / smooth), mode="valid")[:n_coarse]
    walk -= walk.mean()
    return walk / max(float(np.abs(walk).max()), 1e-9)


def _sinus_beats(rng: np.random.Generator, pm: PatientModel, t1: float, last: float,
                 hr_scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sinus beats in ``(last, t1)`` with drift, RSA and ectopy: (R times, ventricular shape, atrial shape)."""
    grid = np.arange(last, t1 + _COARSE_S, _COARSE_S)
    hr = pm.hr_bpm * hr_scale * (1.0 + pm.hr_drift * _coarse_walk(rng, grid.size))
    hr *= 1.0 + pm.rsa * np.sin(2 * np.pi * pm.resp_hz * grid + rng.uniform(0, 2 * np.pi))
    phase = np.concatenate([[0.0], np.cumsum(hr[:-1] / 60.0 * _COARSE_S)])
    times = np.interp(np.arange(1.0, phase[-1]), phase, grid)
    n = times.size
    if n == 0:
        return times, np.zeros(0, np.int8), np.zeros(0, np.int8)
    rr = np.diff(times, prepend=last)
    u = rng.random(n)
    pac, pvc = u < pm.pac_rate, (u >= pm.pac_rate) & (u < pm.pac_rate + pm.pvc_rate)
    if pm.pattern:
        every = (np.arange(n) % pm.pattern == rng.integers(pm.pattern)) & (rng.random(n) > 0.1)
        if pm.pattern_pvc:
            pvc |= every
        else:
            pac |= every
    ectopic = pac | pvc
    ectopic[1:] &= ~(pac | pvc)[:-1]  # no two ectopic beats in a row
    ectopic[0] = False
    pac &= ectopic
    pvc &= ectopic
    coupling = np.where(pvc, rng.uniform(0.5, 0.7, n), rng.uniform(0.6, 0.8, n))
    new_rr = np.where(ectopic, coupling * rr, rr)
    after = np.flatnonzero(ectopic[:-1]) + 1
    pvc_before = pvc[after - 1]
    # a PVC leaves the sinus node alone (full compensatory pause); a PAC resets it (a slightly long cycle)
    new_rr[after] += np.where(pvc_before, (1.0 - coupling[after - 1]) * rr[after - 1], 0.1 * rr[after])
    times = last + np.cumsum(new_rr)
    vshape = np.full(n, _V_NORMAL, np.int8)
    pshape = np.full(n, _P_SINUS, np.int8)
    vshape[pvc] = _V_PVC
    pshape[pvc] = _P_NONE
    pshape[pac] = _P_ECTOPIC
    aberrant = pac & (rng.random(n) < pm.aberrant_frac * (0.8 / coupling) ** 2)
    vshape[aberrant] = _V_ABERRATED
    keep = times < t1
    return times[keep], vshape[keep], pshape[keep]


def _af_beats(rng: np.random.Generator, pm: PatientModel, t1: float, last: float,
              hr_scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Atrial fibrillation: irregularly irregular RR (log-normal), no P wave, occasional PVC shapes."""
    mean_rr = 60.0 / (pm.af_hr_bpm * hr_scale)
    n = int((t1 - last) / mean_rr * 1.5) + 2
    sigma = np.sqrt(np.log1p(pm.af_irregularity ** 2))
    rr = mean_rr * np.exp(rng.normal(-0.5 * sigma ** 2, sigma, n))
    rr = np.maximum(rr, 0.25)
    times = last + np.cumsum(rr)
    keep = times < t1
    vshape = np.where(rng.random(n) < pm.pvc_rate, _V_PVC, _V_NORMAL).astype(np.int8)
    return times[keep], vshape[keep], np.full(int(keep.sum()), _P_NONE, np.int8)


def _flutter_beats(rng: np.random.Generator, pm: PatientModel, t1: float, last: float,
                   phase0: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Atrial flutter: F waves at ``flutter_bpm``, every 2nd to 4th conducted (ratio switching in runs)."""
    f_period = 60.0 / pm.flutter_bpm
    first = last + 0.3
    k0 = np.ceil((first - phase0) / f_period)
    n_f = int((t1 - first) / f_period) + 2
    waves = phase0 + (k0 + np.arange(n_f)) * f_period
    main = rng.choice([2, 3, 4], p=[0.5, 0.2, 0.3])
    ratio = np.where(rng.random(n_f) < 0.75, main, rng.choice([2, 3, 4], n_f))
    conducted = np.cumsum(ratio)
    conducted = conducted[conducted < n_f] - ratio[0]
    times = waves[conducted] + 0.22  # atrio-ventricular delay from the F wave to the R peak
    keep = times < t1
    n = int(keep.sum())
    return times[keep], np.full(n, _V_NORMAL, np.int8), np.full(n, _P_NONE, np.int8)


def _beats(rng: np.random.Generator, pm: PatientModel, ep: Episodes, fs: float, hr_scale: float,
           flutter_phase: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Beats over all episodes plus margins: (R times s, ventricular shape, atrial shape, rhythm class)."""
    ends = ep.ends / fs
    ends[-1] += _MARGIN_S
    starts = np.concatenate([[-_MARGIN_S], ends[:-1]])
    parts = []
    last = -_MARGIN_S
    for cls, t0, t1 in zip(ep.classes, starts, ends):
        if cls == RHYTHM_AFIB:
            times, vs, ps = _af_beats(rng, pm, t1, last, hr_scale)
        elif cls == RHYTHM_AFLUT:
            times, vs, ps = _flutter_beats(rng, pm, t1, last, flutter_phase)
        else:
            times, vs, ps = _sinus_beats(rng, pm, t1, last, hr_scale)
        own = times >= t0  # a new rhythm starts from the last beat but its beats lie in its own episode
        times, vs, ps = times[own], vs[own], ps[own]
        parts.append((times, vs, ps, np.full(times.size, cls, np.int8)))
        if times.size:
            last = float(times[-1])
    return tuple(np.concatenate(x) for x in zip(*parts))  # type: ignore[return-value]


def _render_beats(n: int, fs: float, pm: PatientModel, times: np.ndarray, vshape: np.ndarray,
                  pshape: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sum every beat's Gaussian waves into an array of ``n`` samples (one bincount over all waves).

    Waves are evaluated on windows of +-3.5 widths, batched per (wave, shape) so each batch shares one width.
    """
    rr = np.diff(times, prepend=times[0] - 60.0 / pm.hr_bpm) if times.size else times
    qt_scale = np.sqrt(np.clip(rr, 0.3, 2.0))  # T waves come earlier at fast rates (Bazett)
    resp = 1.0 + pm.rsa * 1.5 * np.sin(2 * np.pi * pm.resp_hz * times)
    jitter = 1.0 + 0.03 * rng.standard_normal(times.size)
    pad = int(_MARGIN_S * fs) + 1
    batches = []  # (beat mask, centre offset per beat in s, width s, amplitude per beat)
    for shape in np.unique(vshape):
        sel = vshape == shape
        for col, (offset, width, amp) in enumerate(pm.vwaves[shape]):
            if amp != 0:
                scale = qt_scale[sel] if col >= _T1 else 1.0
                modulation = jitter[sel] * (resp[sel] if col < _T1 else 1.0)
                batches.append((sel, offset * scale, width, amp * modulation))
    for shape in np.unique(pshape[pshape != _P_NONE]):
        sel = pshape == shape
        offset, width, amp = pm.p_wave[shape]
        batches.append((sel, offset, width, amp * jitter[sel]))
    all_idx, all_vals = [], []
    for sel, offset, width, amp in batches:
        c = (times[sel] + offset) * fs + pad
        w = width * fs
        half = int(np.ceil(3.5 * w))
        start = np.rint(c).astype(np.int64) - half
        all_idx.append((start[:, None] + np.arange(2 * half + 1)).ravel())
        z = ((start - c) / w).astype(np.float32)[:, None] + np.arange(2 * half + 1, dtype=np.float32) / np.float32(w)
        z *= z
        z *= np.float32(-0.5)
        np.exp(z, out=z)
        z *= np.asarray(amp, np.float32).reshape(-1, 1)
        all_vals.append(z.ravel())
    if not all_idx:
        return np.zeros(n)
    idx = np.clip(np.concatenate(all_idx), 0, n + 2 * pad - 1)
    return np.bincount(idx, np.concatenate(all_vals), minlength=n + 2 * pad)[pad:pad + n]


def _atrial_waves(rng: np.random.Generator, pm: PatientModel, ep: Episodes, fs: float,
                  flutter_phase: float, out: np.ndarray) -> None:
    """Add fibrillatory waves in AF episodes and sawtooth F waves in flutter episodes to ``out``."""
    for cls, a, b in ep.spans():
        if cls not in (RHYTHM_AFIB, RHYTHM_AFLUT):
            continue
        t = np.arange(a, b) / fs
        if cls == RHYTHM_AFIB:
            n_c = int((b - a) / fs / _COARSE_S) + 2
            freq = rng.uniform(4.5, 8.0) * (1.0 + 0.15 * _coarse_walk(rng, n_c))
            phase = 2 * np.pi * np.cumsum(np.interp(t, np.arange(n_c) * _COARSE_S + t[0], freq)) / fs
            env = 1.0 + 0.4 * np.interp(t, np.arange(n_c) * _COARSE_S + t[0], _coarse_walk(rng, n_c))
            out[a:b] += pm.af_wave_mv * env * (np.sin(phase) + 0.35 * np.sin(2 * phase + rng.uniform(0, 6.3)))
        else:
            frac = ((t - flutter_phase) * pm.flutter_bpm / 60.0) % 1.0
            out[a:b] += pm.flutter_mv * np.where(frac < 0.8, 0.5 - frac / 0.8, -0.5 + (frac - 0.8) / 0.2)


def _noise(rng: np.random.Generator, pm: PatientModel, ep: Episodes, n: int, fs: float, out: np.ndarray) -> None:
    """Add baseline wander, mains hum, muscle noise and, in noise episodes, motion artefacts to ``out``."""
    n_c = int(n / fs / _COARSE_S) + 2
    coarse_t = np.arange(n_c) * _COARSE_S * fs
    samples = np.arange(n)
    wander = pm.wander_mv * _coarse_walk(rng, n_c, smooth=16)
    emg_env = pm.emg_mv * np.exp(0.5 * _coarse_walk(rng, n_c, smooth=4))
    noisy = np.zeros(n_c, bool)
    for cls, a, b in ep.spans():
        if cls == RHYTHM_NOISE:
            out[a:b] *= ep.contact
            noisy[int(a / fs / _COARSE_S):int(np.ceil(b / fs / _COARSE_S)) + 1] = True
    if noisy.any():
        k = int(noisy.sum())
        emg_env[noisy] = ep.noise_level * rng.uniform(0.04, 0.15) * np.exp(0.5 * _coarse_walk(rng, k, smooth=2))
        # motion: large, fast baseline excursions, and electrode pops (a jump that decays over about a second)
        motion = ep.noise_level * rng.uniform(0.2, 0.8) * _coarse_walk(rng, k, smooth=2)
        kicks = np.where(rng.random(k) < 0.08, rng.normal(0.0, 0.6 * ep.noise_level, k), 0.0)
        pops = scipy.signal.lfilter([1.0], [1.0, -0.8], kicks)
        wander[noisy] += motion + pops
    out += np.interp(samples, coarse_t, wander)
    out += rng.standard_normal(n) * np.interp(samples, coarse_t, emg_env)
    if pm.mains_mv > 0:
        out += pm.mains_mv * np.sin(2 * np.pi * pm.mains_hz / fs * samples + rng.uniform(0, 2 * np.pi))


def synth_ecg(rng: np.random.Generator, pm: PatientModel, episodes: Episodes, fs: float,
              hr_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One continuous ECG in mV for ``episodes`` (which fix its length): (signal, R-peak samples, beat classes).

    Beat classes follow Icentia11k: normal, pac, aberrated, pvc; beats inside noise episodes are undefined.
    """
    n = int(episodes.ends[-1])
    flutter_phase = rng.uniform(0, 1.0)
    times, vshape, pshape, rhythm = _beats(rng, pm, episodes, fs, hr_scale, flutter_phase)
    signal = _render_beats(n, fs, pm, times, vshape, pshape, rng)
    _atrial_waves(rng, pm, episodes, fs, flutter_phase, signal)
    _noise(rng, pm, episodes, n, fs, signal)
    signal *= pm.gain
    positions = np.rint(times * fs).astype(np.int64)
    classes = np.select([rhythm == RHYTHM_NOISE, vshape == _V_PVC, vshape == _V_ABERRATED, pshape == _P_ECTOPIC],
                        [BEAT_UNDEFINED, BEAT_PVC, BEAT_ABERRATED, BEAT_PAC], BEAT_NORMAL).astype(np.int64)
    inside = (positions >= 0) & (positions < n)
    return signal.astype(np.float32), positions[inside], classes[inside]


def noise_episode_levels(rng: np.random.Generator) -> tuple[float, float]:
    """(noise level, electrode contact) of a noise episode, the same for both data sets: poor contact (a faint
    ECG under moderate noise) or motion and muscle (heavy noise over a normal ECG)."""
    if rng.random() < 0.4:
        return float(rng.uniform(0.3, 1.0)), float(rng.uniform(0.05, 0.3))
    return float(rng.uniform(1.0, 3.0)), 1.0


def quantise(x: np.ndarray, lsb: float) -> np.ndarray:
    """Round to the nearest ADC step and saturate at +-32767 steps, like a real 16-bit ADC (float32 result); the
    symmetric range keeps a saturated record on the int16 grid the shard store encodes losslessly."""
    steps = np.clip(np.rint(np.asarray(x, np.float64) / lsb), -32767, 32767)
    return (steps * lsb).astype(np.float32)
