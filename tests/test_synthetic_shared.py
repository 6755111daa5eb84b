"""The two synthetic data sets share what pretraining learns: AF in a challenge record looks like AF in a labelled
Icentia11k episode (RR irregularity and rate), noise episodes are drawn alike, and the demo can ask for equal
class shares."""

from __future__ import annotations

import numpy as np
import scipy.stats

from ecg_hpc.data import icentia11k
from ecg_hpc.data import synth_icentia as SI
from ecg_hpc.data import synth_physionet as SP
from ecg_hpc.data import synthetic as S
from ecg_hpc.data.physionet2017 import FS
from ecg_hpc.data.synth_cli import physionet_labels


def _rr_stats(positions: np.ndarray, fs: float) -> tuple[float, float]:
    """(coefficient of variation of RR, mean rate in bpm) of a run of beats."""
    rr = np.diff(positions) / fs
    return float(rr.std() / rr.mean()), float(60.0 / rr.mean())


def test_af_in_challenge_records_matches_labelled_af_in_icentia_patients() -> None:
    rng = np.random.default_rng(11)
    challenge = [_rr_stats(SP.physionet_record(rng, "A")[1], FS) for _ in range(40)]
    icentia = []  # one value per patient with AF: the median over its AF episodes
    for pid in range(60):
        _, beats, rhythms = SI.synth_icentia_patient(np.random.default_rng([11, pid]), 1, 250 * 240)
        (bpos, _), (rpos, rcls) = beats[0], rhythms[0]
        starts = np.concatenate([[0], rpos[:-1] + 1])
        episodes = [_rr_stats(bpos[(bpos >= a) & (bpos <= b)], icentia11k.FS)
                    for a, b, c in zip(starts, rpos, rcls)
                    if c == S.RHYTHM_AFIB and np.sum((bpos >= a) & (bpos <= b)) > 20]
        if episodes:
            icentia.append(np.median(episodes, axis=0))
    assert len(icentia) >= 10  # AF is common enough among the patients for a rhythm task to see it
    challenge, icentia = np.array(challenge), np.array(icentia)
    for column in (0, 1):  # RR irregularity, rate: one distribution (two-sample Kolmogorov-Smirnov test)
        p = scipy.stats.ks_2samp(challenge[:, column], icentia[:, column]).pvalue
        print(f"column {column}: challenge median {np.median(challenge[:, column]):.3f}, icentia "
              f"{np.median(icentia[:, column]):.3f}, KS p {p:.3f}")
        assert p > 0.01
    assert min(cv for cv, _ in challenge) > S.AF_IRREGULARITY[0] / 2  # no near-regular "AF" only one set has


def test_noise_episodes_are_drawn_alike() -> None:
    rng = np.random.default_rng(3)
    levels = np.array([S.noise_episode_levels(rng) for _ in range(400)])
    poor_contact = levels[:, 1] < 1.0
    assert 0.3 < poor_contact.mean() < 0.5
    assert levels[poor_contact, 0].max() <= 1.0 and levels[~poor_contact, 0].min() >= 1.0
    episodes = SI.icentia_episodes(np.random.default_rng(4), 250 * 3600, 250.0, 0.5, 0.0, 10.0)
    assert (episodes.noise_level, episodes.contact) != (1.0, 1.0)


def test_balanced_labels_give_equal_class_shares() -> None:
    labels = physionet_labels(300, 1, balanced=True)
    assert {c: labels.count(c) for c in "ANO~"} == {c: 75 for c in "ANO~"}
    assert physionet_labels(300, 1).count("A") < 40  # the real mix by default


def test_saturated_patients_stay_on_the_int16_grid_the_store_encodes() -> None:
    from ecg_hpc.data.store import encode_signal

    x = np.random.default_rng(0).normal(0.0, 5.0, 10_000)
    x[[10, 20]] = -1e6, 1e6  # saturates both ways
    x = S.quantise(x, SI.ICENTIA_LSB)
    values, _ = encode_signal(x)
    assert values.dtype == np.int16
    for pid in range(24):  # the demo's patients (seed 0) all encode as int16, none falls back to float32
        signal, _, _ = SI.synth_icentia_patient(np.random.default_rng([0, pid]), 2, 131072)
        assert encode_signal(signal)[0].dtype == np.int16, pid
