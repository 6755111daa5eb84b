"""Icentia11k reader/writer, restricted unpickler, label rules (edge cases and randomised against slow references)."""

from __future__ import annotations

import gzip
import io
import os
import pickle
from fractions import Fraction

import numpy as np
import pytest

from ecg_hpc.data import icentia11k as ic
from ecg_hpc.data.labels import beat_label, hr_label, rhythm_label
from ecg_hpc.errors import ConfigError, DataError


# ---------------------------------------------------------------- slow references written from docs/design-facts.md

def ref_complete(pos, start, end):
    """Beats whose own index and whose previous beat's index both lie in [start, end]."""
    return [i for i in range(1, len(pos)) if start <= pos[i - 1] <= end and start <= pos[i] <= end]


def ref_priority(totals, high, low):
    for group in (high, low):
        best = max(group, key=lambda c: (totals[c], -c))
        if totals[best] > 0:
            return best
    return 0


def ref_beat(pos, cls, start, end):
    totals = {c: 0 for c in range(5)}
    for i in ref_complete(pos, start, end):
        totals[int(cls[i])] += 1
    return ref_priority(totals, (2, 3, 4), (0, 1))


def ref_rhythm(pos, cls, start, end):
    """Sample by sample: t in (start, end] belongs to the episode of the first end >= t (else the last end)."""
    totals = {c: 0 for c in range(6)}
    after = [i for i in range(len(pos)) if pos[i] > start]
    if not after:
        return 0
    for t in range(start + 1, end + 1):
        owner = next((i for i in after if pos[i] >= t), after[-1])
        totals[int(cls[owner])] += 1
    return ref_priority(totals, (0, 4, 5), (1, 2, 3))


def ref_hr(pos, start, end, fs=250):
    idx = ref_complete(pos, start, end)
    if len(idx) < 2:
        return ic.HR_NOISE
    beats = [int(pos[i]) for i in idx]
    rr_mean = Fraction(sum(b - a for a, b in zip(beats, beats[1:])), (len(beats) - 1) * fs)
    if rr_mean == 0:
        return ic.HR_TACHY
    bpm = 60 / rr_mean
    return ic.HR_BRADY if bpm < 60 else ic.HR_NORMAL if bpm <= 100 else ic.HR_TACHY


def arr(*xs):
    return np.asarray(xs, dtype=np.int64)


# ------------------------------------------- label edge cases (rules in ecg_hpc.data.labels; hr ignores classes)

def test_beat_at_start_is_not_complete_but_at_end_is():
    pos, cls = arr(100, 150, 200), arr(4, 1, 1)
    assert beat_label(pos, cls, 100, 200) == 1  # the pvc at start has no previous beat inside
    assert beat_label(arr(100, 150, 200), arr(1, 1, 4), 100, 200) == 4  # beat at end counts
    assert beat_label(pos, cls, 99, 200) == 1
    assert beat_label(arr(99, 150, 200), arr(1, 4, 1), 100, 200) == 1  # 150 is first inside -> incomplete


def test_beat_ties_priority_and_empty():
    assert beat_label(arr(0, 10, 20, 30, 40), arr(1, 4, 2, 1, 1), 0, 50) == 2  # pac=pvc tie -> pac
    assert beat_label(arr(0, 10, 20), arr(1, 0, 1), 0, 50) == 0  # undefined=normal tie -> undefined
    assert beat_label(arr(0, 10, 20, 30), arr(1, 1, 3, 1), 0, 50) == 3  # one aberrated beats two normals
    assert beat_label(arr(), arr(), 0, 50) == 0
    assert beat_label(arr(25), arr(4), 0, 50) == 0  # a single beat is never complete
    with pytest.raises(ValueError):
        beat_label(arr(1), arr(1), 5, 5)


def test_rhythm_edges_ties_and_groups():
    # end exactly at start is excluded; first end at/after `end` is the last one taken, cut at `end`
    assert rhythm_label(arr(100, 150, 250), arr(4, 3, 2), 100, 200) == 2  # normal 50 = noise 50 -> noise
    assert rhythm_label(arr(150, 200, 300), arr(3, 4, 2), 100, 200) == 4  # afib ends exactly at end
    assert rhythm_label(arr(120, 200), arr(0, 4), 100, 200) == 4  # afib 80 > undefined 20
    assert rhythm_label(arr(150, 200), arr(4, 0), 100, 200) == 0  # undefined 50 = afib 50 -> undefined
    assert rhythm_label(arr(199, 400), arr(5, 3), 100, 200) == 5  # any aflut beats a long normal
    assert rhythm_label(arr(110, 130), arr(3, 1), 100, 200) == 1  # last end before `end` stretches to it
    assert rhythm_label(arr(50, 100), arr(4, 4), 100, 200) == 0  # no end after start -> 0
    assert rhythm_label(arr(), arr(), 100, 200) == 0


def test_hr_thresholds_exact():
    def beats(rr, n=6):
        return np.arange(n, dtype=np.int64) * rr + 10
    assert hr_label(beats(250), None, 0, 2000) == ic.HR_NORMAL  # exactly 60 bpm
    assert hr_label(beats(251), None, 0, 2000) == ic.HR_BRADY
    assert hr_label(beats(150), None, 0, 2000) == ic.HR_NORMAL  # exactly 100 bpm
    assert hr_label(beats(149), None, 0, 2000) == ic.HR_TACHY
    assert hr_label(arr(10, 20), None, 0, 2000) == ic.HR_NOISE  # one complete beat
    assert hr_label(arr(), None, 0, 2000) == ic.HR_NOISE


@pytest.mark.parametrize("seed", range(3))
def test_labels_agree_with_slow_references_on_random_cases(seed):
    rng = np.random.default_rng(seed)
    for _ in range(400):
        seg = int(rng.integers(50, 400))
        n = int(rng.integers(0, 25))
        pos = np.sort(rng.integers(0, seg, n))
        bcls, rcls = rng.integers(0, 5, n), rng.integers(0, 6, n)
        order = np.lexsort((bcls, pos))
        start = int(rng.integers(0, seg - 2))
        end = int(rng.integers(start + 1, seg))
        assert beat_label(pos, bcls[order], start, end) == ref_beat(pos, bcls[order], start, end)
        assert rhythm_label(pos, rcls, start, end) == ref_rhythm(pos, rcls, start, end)
        assert hr_label(pos, None, start, end, fs=25) == ref_hr(pos, start, end, fs=25)


# ---------------------------------------------------------------- reading and writing

def make_patient(rng, n_segments=3, segment_len=3000):
    signal = (rng.integers(-2000, 2000, (n_segments, segment_len)) * np.float32(0.01)).astype(np.float32)
    beats, rhythms = [], []
    for _ in range(n_segments):
        pos = np.sort(rng.choice(segment_len, 20, replace=False))
        beats.append((pos, rng.integers(0, 5, pos.size)))
        rhythms.append((pos, rng.integers(0, 6, pos.size)))
    return signal, beats, rhythms


@pytest.mark.parametrize("unzipped", [False, True])
def test_write_then_load_round_trip(tmp_path, unzipped):
    signal, beats, rhythms = make_patient(np.random.default_rng(1))
    ic.write_patient(tmp_path, 7, signal, beats, rhythms, unzipped=unzipped)
    names = sorted(os.listdir(tmp_path))
    assert names == (["00007_batched.npy", "00007_batched_lbls.npz"] if unzipped
                     else ["00007_batched.pkl.gz", "00007_batched_lbls.pkl.gz"])
    patient = ic.load_patient(tmp_path, 7)
    np.testing.assert_array_equal(patient.signal, signal)
    assert patient.signal.dtype == np.float32 and patient.n_segments == 3
    for got, want in zip(patient.beats + patient.rhythms, beats + rhythms):
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    assert ic.list_patients(tmp_path) == [7]


def test_published_dict_of_lists_layout(tmp_path):
    pos = arr(5, 9, 40)
    ic.write_patient(tmp_path, 3, np.zeros((1, 50), np.float32), [(pos, arr(4, 1, 4))], [(pos, arr(3, 3, 5))])
    with gzip.open(tmp_path / "00003_batched_lbls.pkl.gz") as fh:
        raw = pickle.load(fh)
    assert len(raw) == 1 and set(raw[0]) == {"btype", "rtype"}
    assert [a.tolist() for a in raw[0]["btype"]] == [[], [9], [], [], [5, 40]]
    assert [a.tolist() for a in raw[0]["rtype"]] == [[], [], [], [5, 9], [], [40]]


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("where", ["signal", "labels", "npz"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, where):
    marker = tmp_path / "pwned"
    signal, beats, rhythms = make_patient(np.random.default_rng(2), n_segments=1)
    ic.write_patient(tmp_path, 1, signal, beats, rhythms, unzipped=(where == "npz"))
    payload = pickle.dumps(_Evil(marker), protocol=4)
    if where == "signal":
        target = tmp_path / "00001_batched.pkl.gz"
        target.write_bytes(gzip.compress(payload))
    elif where == "labels":
        target = tmp_path / "00001_batched_lbls.pkl.gz"
        target.write_bytes(gzip.compress(pickle.dumps([{"btype": [_Evil(marker)] * 5, "rtype": []}])))
    else:
        target = tmp_path / "00001_batched_lbls.npz"
        evil = np.empty((1, 2), dtype=object)
        evil[0, 0], evil[0, 1] = _Evil(marker), _Evil(marker)
        buf = io.BytesIO()
        np.savez(buf, btype=evil, rtype=evil)
        target.write_bytes(buf.getvalue())
    with pytest.raises(DataError, match=r"refused pickle global (posix|nt)\.system") as info:
        ic.load_patient(tmp_path, 1)
    assert str(target) in str(info.value)
    assert not marker.exists()


def test_corrupt_gzip_truncated_array_and_mismatch_name_the_file(tmp_path):
    signal, beats, rhythms = make_patient(np.random.default_rng(3))
    sig_path, lbl_path = ic.write_patient(tmp_path, 2, signal, beats, rhythms)
    good = sig_path.read_bytes()
    sig_path.write_bytes(b"not gzip at all" + good[:100])
    with pytest.raises(DataError, match="00002_batched.pkl.gz"):
        ic.load_patient(tmp_path, 2)
    sig_path.write_bytes(good[: len(good) // 2])  # truncated gzip stream
    with pytest.raises(DataError, match="00002_batched.pkl.gz"):
        ic.load_patient(tmp_path, 2)
    sig_path.write_bytes(gzip.compress(pickle.dumps(signal, protocol=4)[:-5000]))  # valid gzip, truncated array
    with pytest.raises(DataError, match="00002_batched.pkl.gz"):
        ic.load_patient(tmp_path, 2)
    ic.write_patient(tmp_path, 2, signal[:2], beats[:2], rhythms[:2])
    lbl_path.write_bytes(gzip.compress(pickle.dumps(
        [{"btype": [p[c == k] for k in range(5)], "rtype": [p[c == k] for k in range(6)]}
         for p, c in beats], protocol=4)))  # 3 label segments for 2 signal segments
    with pytest.raises(DataError, match=r"00002_batched_lbls.pkl.gz: label/segment mismatch"):
        ic.load_patient(tmp_path, 2)


def test_truncated_npy_and_missing_patient_name_the_file(tmp_path):
    signal, beats, rhythms = make_patient(np.random.default_rng(4))
    sig_path, _ = ic.write_patient(tmp_path, 4, signal, beats, rhythms, unzipped=True)
    sig_path.write_bytes(sig_path.read_bytes()[:-10])
    with pytest.raises(DataError, match="00004_batched.npy"):
        ic.load_patient(tmp_path, 4)
    with pytest.raises(DataError, match="patient 5"):
        ic.load_patient(tmp_path, 5)


def test_select_patients_nested_and_deterministic():
    ids = list(range(11000))
    one, ten, twenty = (ic.select_patients(ids, frac=f, seed=5) for f in (0.01, 0.1, 0.2))
    assert (len(one), len(ten), len(twenty)) == (110, 1100, 2200)
    assert set(one) <= set(ten) <= set(twenty)
    assert one == sorted(one) and ic.select_patients(ids[::-1], frac=0.01, seed=5) == one
    assert ic.select_patients(ids, frac=0.01, seed=6) != one
    assert set(ic.select_patients(ids, count=50, seed=5)) <= set(one)
    assert ic.select_patients([3, 1, 2]) == [1, 2, 3]
    with pytest.raises(ConfigError):
        ic.select_patients(ids, frac=0.0)
    with pytest.raises(ConfigError):
        ic.select_patients(ids, frac=0.1, count=3)
