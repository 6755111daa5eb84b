"""Synthetic ECG: physiology behind the labels, both published formats read back by the real readers, speed."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import wfdb

from ecg_hpc.data import icentia11k, physionet2017, store
from ecg_hpc.data.labels import rhythm_label
from ecg_hpc.data import synth_icentia, synth_physionet
from ecg_hpc.data import synthetic as S
from ecg_hpc.data.__main__ import main
from ecg_hpc.data.synth_cli import physionet_labels

FS = 250


def _spans_episodes(pm: S.PatientModel) -> S.Episodes:
    """One minute each of sinus, AF, noise (15 s), flutter and sinus again, at 250 Hz."""
    ends = np.cumsum([60, 60, 15, 60, 60]) * FS
    return S.Episodes(np.array([S.RHYTHM_NORMAL, S.RHYTHM_AFIB, S.RHYTHM_NOISE, S.RHYTHM_AFLUT, S.RHYTHM_NORMAL]),
                      ends)


@pytest.fixture(scope="module")
def mixed() -> tuple[S.PatientModel, S.Episodes, np.ndarray, np.ndarray, np.ndarray]:
    """A patient with frequent ectopy through every kind of episode: (model, episodes, signal, positions, classes)."""
    rng = np.random.default_rng(11)
    pm = replace(S.random_patient(rng), pac_rate=0.08, pvc_rate=0.08, hr_bpm=70.0, emg_mv=0.01)
    ep = _spans_episodes(pm)
    signal, pos, cls = S.synth_ecg(rng, pm, ep, FS)
    return pm, ep, signal, pos, cls


def _in_span(pos: np.ndarray, ep: S.Episodes, k: int) -> np.ndarray:
    _, a, b = ep.spans()[k]
    return (pos >= a) & (pos < b)


def test_beat_classes_follow_the_rhythm(mixed) -> None:
    _, ep, signal, pos, cls = mixed
    assert signal.dtype == np.float32 and signal.shape == (int(ep.ends[-1]),)
    assert np.all(np.diff(pos) > 0) and pos.min() >= 0 and pos.max() < signal.size
    noise = _in_span(pos, ep, 2)
    assert noise.any() and np.all(cls[noise] == S.BEAT_UNDEFINED) and np.all(cls[~noise] != S.BEAT_UNDEFINED)
    sinus = _in_span(pos, ep, 0) | _in_span(pos, ep, 4)
    assert {S.BEAT_PAC, S.BEAT_PVC, S.BEAT_NORMAL} <= set(cls[sinus].tolist())
    atrial = _in_span(pos, ep, 1) | _in_span(pos, ep, 3)
    assert not np.isin(cls[atrial], [S.BEAT_PAC, S.BEAT_ABERRATED]).any()  # no P waves, so no premature atrial beats


def test_rr_physiology_of_af_flutter_and_pvcs(mixed) -> None:
    pm, ep, _, pos, cls = mixed
    rr = np.diff(pos) / FS
    first = _in_span(pos, ep, 0)[1:] & _in_span(pos, ep, 0)[:-1]
    normal_pairs = first & (cls[1:] == S.BEAT_NORMAL) & (cls[:-1] == S.BEAT_NORMAL)
    sinus_cv = rr[normal_pairs].std() / rr[normal_pairs].mean()
    af = _in_span(pos, ep, 1)[1:] & _in_span(pos, ep, 1)[:-1]
    af_cv = rr[af].std() / rr[af].mean()
    assert af_cv > 2 * sinus_cv
    flutter = _in_span(pos, ep, 3)[1:] & _in_span(pos, ep, 3)[:-1]
    ratio = rr[flutter] / (60.0 / pm.flutter_bpm)  # conducted every 2nd to 4th F wave
    assert np.all(np.abs(ratio - np.rint(ratio)) < 0.1) and set(np.rint(ratio).astype(int)) <= {2, 3, 4}
    median = np.median(rr[normal_pairs])
    pvc = np.flatnonzero(first & (cls[1:] == S.BEAT_PVC))
    pvc = pvc[(pvc + 1 < rr.size) & first[np.minimum(pvc + 1, rr.size - 1)]]  # the next interval is sinus too
    assert pvc.size > 3
    assert np.all(rr[pvc] < 0.75 * median)  # premature ...
    np.testing.assert_allclose(rr[pvc] + rr[pvc + 1], 2 * median, rtol=0.25)  # ... with a compensatory pause


def test_beat_positions_are_r_peaks(mixed) -> None:
    _, ep, signal, pos, cls = mixed
    normal = pos[(cls == S.BEAT_NORMAL) & _in_span(pos, ep, 0)]
    windows = signal[normal[:, None] + np.arange(-6, 7)]
    lag = np.argmax(windows, axis=1) - 6
    assert np.mean(np.abs(lag) <= 1) > 0.9


def test_icentia_patient_format_grid_and_determinism() -> None:
    seg = 20_000
    signal, beats, rhythms = synth_icentia.synth_icentia_patient(np.random.default_rng(4), 3, seg)
    assert signal.dtype == np.float32 and signal.shape == (3, seg)
    steps = signal.astype(np.float64) / synth_icentia.ICENTIA_LSB
    assert np.array_equal(steps, np.rint(steps)) and np.abs(steps).max() <= 32768
    for (bpos, bcls), (rpos, rcls) in zip(beats, rhythms):
        assert np.all(np.diff(bpos) > 0) and bpos.min() >= 0 and bpos.max() < seg
        assert set(bcls.tolist()) <= set(range(5)) and bcls.size > 60
        assert rpos[-1] == seg - 1 and np.all(np.diff(rpos) > 0)
        assert set(rcls.tolist()) <= {S.RHYTHM_NOISE, S.RHYTHM_NORMAL, S.RHYTHM_AFIB, S.RHYTHM_AFLUT}
    values, scale = store.encode_signal(signal)  # the shard store keeps it losslessly as int16
    assert values.dtype == np.int16 and np.array_equal(store.decode_signal(values, scale), signal)
    again = synth_icentia.synth_icentia_patient(np.random.default_rng(4), 3, seg)
    assert np.array_equal(again[0], signal)
    other = synth_icentia.synth_icentia_patient(np.random.default_rng(5), 3, seg)
    assert not np.array_equal(other[0], signal)


@pytest.mark.parametrize("unzipped", [False, True])
def test_synth_icentia_cli_reads_back_through_load_patient(tmp_path: Path, unzipped: bool) -> None:
    seg = 30_000
    args = ["synth-icentia", "--dst", str(tmp_path), "--patients", "2", "--segments", "2",
            "--segment-size", str(seg), "--seed", "3"] + (["--unzipped"] if unzipped else [])
    assert main(args) == 0
    assert icentia11k.list_patients(tmp_path) == [0, 1]
    for pid in (0, 1):
        signal, beats, rhythms = synth_icentia.synth_icentia_patient(np.random.default_rng([3, pid]), 2, seg)
        patient = icentia11k.load_patient(tmp_path, pid)
        assert np.array_equal(patient.signal, signal)
        for s in range(2):
            for got, want in ((patient.beats[s], beats[s]), (patient.rhythms[s], rhythms[s])):
                assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
            # a frame inside one episode gets that episode's class from the study's label rule
            rpos, rcls = patient.rhythms[s]
            starts = np.concatenate([[-1], rpos[:-1]]) + 1
            for a, b, c in zip(starts, rpos, rcls):
                if b - a > 2100:
                    assert rhythm_label(rpos, rcls, a + 10, a + 2058) == c


def test_synth_icentia_refuses_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth-icentia", "--dst", str(tmp_path), "--segments", "51"]) == 2
    assert "--segments" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_synth_physionet_cli_reads_back_with_intended_labels(tmp_path: Path) -> None:
    dst = tmp_path / "challenge"
    assert main(["synth-physionet", "--dst", str(dst), "--records", "100", "--seed", "5"]) == 0
    with pytest.warns(physionet2017.HeaderRepairWarning):  # the published header quirk is reproduced
        names, signals, labels = physionet2017.load_records(dst)
    letters = [physionet2017.CLASSES[i] for i in labels]
    assert letters == physionet_labels(100, 5)
    assert {c: letters.count(c) for c in "NAO~"} == {"N": 59, "A": 9, "O": 29, "~": 3}
    assert names == [f"A{i:05d}" for i in range(1, 101)]
    for i in (0, 37, 99):
        val = synth_physionet.synth_physionet_record(np.random.default_rng([5, i]), letters[i])
        np.testing.assert_array_equal(signals[i], val.astype(np.float32) / 1000)
    lengths = np.array([s.size for s in signals])
    assert lengths.min() >= 9 * 300 and lengths.max() <= 60 * 300 and np.mean(lengths == 9000) > 0.5
    with pytest.raises(ValueError, match="unconverted data remains"):
        wfdb.rdheader(str(dst / "A00001"))
    header = physionet2017.read_header(dst / "A00001.hea")
    assert header.fs == 300 and header.sig_len == signals[0].size and header.adc_gain == 1000


def test_synth_physionet_refuses_a_non_empty_destination(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "keep.txt").write_text("x")
    assert main(["synth-physionet", "--dst", str(tmp_path), "--records", "3"]) == 2
    assert "--dst" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_generation_rate_is_printed() -> None:
    """Samples generated per CPU second on one core (printed for the report; a loose floor only)."""
    rng = np.random.default_rng(0)
    t0 = time.process_time()
    signal, _, _ = synth_icentia.synth_icentia_patient(rng, 2, icentia11k.SEGMENT_SIZE)
    icentia_rate = signal.size / (time.process_time() - t0)
    t0 = time.process_time()
    n = sum(synth_physionet.synth_physionet_record(rng, "ANO~"[i % 4]).size for i in range(100))
    physionet_rate = n / (time.process_time() - t0)
    print(f"\nsynthetic generation: Icentia11k {icentia_rate / 1e6:.1f} M samples/s, "
          f"challenge records {physionet_rate / 1e6:.1f} M samples/s (CPU time, one core)")
    assert icentia_rate > 1e6 and physionet_rate > 1e6


def test_physionet_labels_keep_the_real_class_mix() -> None:
    labels = physionet_labels(8528, 0)
    counts = np.array([labels.count(c) for c in "NAO~"])
    assert counts.sum() == 8528 and np.all(np.abs(counts - 8528 * np.array([0.59, 0.09, 0.29, 0.03])) < 1)
    assert physionet_labels(20, 1) == physionet_labels(20, 1) != physionet_labels(20, 2)
