"""Shard store: lossless int16 encoding, convert-icentia (pkl, npy, WFDB), resume, shards, manifest, errors."""

from __future__ import annotations

import gzip
import json
import os

import numpy as np
import pytest
import wfdb

from ecg_hpc.data import icentia11k as ic
from ecg_hpc.data import icentia_wfdb as iw
from ecg_hpc.data import store as st
from ecg_hpc.data.__main__ import main as data_main
from ecg_hpc.data.convert import convert, parse_ids, parse_shard
from ecg_hpc.errors import ConfigError, DataError

SEG = 4000


def random_walk(rng, n_segments, segment_len=SEG):
    steps = rng.integers(-40, 41, (n_segments, segment_len))
    return np.clip(np.cumsum(steps, axis=1), -32768, 32767).astype(np.int16)


def beat_labels(rng, n_segments, segment_len=SEG, zone_classes=(2, 3, 4, 5)):
    """Beats every ~200 samples; rhythm episode ends at the beats, in runs of equal classes."""
    beats, rhythms = [], []
    for _ in range(n_segments):
        pos = np.cumsum(rng.integers(150, 260, segment_len // 150))
        pos = pos[pos < segment_len].astype(np.int64)
        beats.append((pos, rng.choice(5, pos.size, p=[.05, .8, .05, .05, .05])))
        runs = np.repeat(rng.choice(zone_classes, pos.size), rng.integers(1, 6, pos.size))[:pos.size]
        rhythms.append((pos, runs.astype(np.int64)))
    return beats, rhythms


def assert_store_matches(store_path, pid, signal, beats, rhythms):
    patient = st.Store(store_path).patient(pid)
    for s in range(signal.shape[0]):
        np.testing.assert_array_equal(patient.float_signal(s), signal[s])
        for got, want in ((patient.segment_beats(s), beats[s]), (patient.segment_rhythms(s), rhythms[s])):
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])


def test_encode_signal_lossless_int16_when_on_a_grid():
    rng = np.random.default_rng(0)
    d = random_walk(rng, 3)
    for x in ((d / iw.WFDB_GAIN).astype(np.float32), d.astype(np.float32) * np.float32(0.01),
              (d * 0.005).astype(np.float32)):
        values, scale = st.encode_signal(x)
        assert values.dtype == np.int16
        np.testing.assert_array_equal(values, d)
        np.testing.assert_array_equal(st.decode_signal(values, scale), x)
        assert st.encode_signal(x.copy())[1] == scale  # a function of the values only
    assert st.encode_signal((d * 2.0 ** -10).astype(np.float32))[1] == 2.0 ** -10
    assert st.encode_signal((d * 0.005).astype(np.float32))[1] == 0.005
    noise = rng.standard_normal((2, 500)).astype(np.float32)
    values, scale = st.encode_signal(noise)
    assert values.dtype == np.float32 and scale == 1.0 and np.array_equal(values, noise)
    off_grid = (d * 0.01).astype(np.float32)
    off_grid[0, 7] += np.float32(0.003)  # one sample off the grid -> float32, still lossless
    assert st.encode_signal(off_grid)[0].dtype == np.float32
    big = (np.arange(70000, dtype=np.float32) - 35000).reshape(2, -1)  # unit grid beyond the int16 range
    assert st.encode_signal(big)[0].dtype == np.float32
    assert st.encode_signal(np.zeros((1, 9), np.float32))[0].dtype == np.int16


@pytest.mark.parametrize("unzipped", [False, True])
def test_convert_round_trip_resume_and_manifest(tmp_path, unzipped):
    rng = np.random.default_rng(1)
    raw, dst = tmp_path / "raw", tmp_path / "store"
    originals = {}
    for pid in (3, 10, 11):
        signal = (random_walk(rng, 2) * 0.01).astype(np.float32)
        if pid == 11:
            signal[1, 5] = np.float32(np.pi)  # not on the grid: stored as float32
        beats, rhythms = beat_labels(rng, 2)
        ic.write_patient(raw, pid, signal, beats, rhythms, unzipped=unzipped)
        originals[pid] = (signal, beats, rhythms)
    summary = convert(raw, dst, workers=2, show_progress=False)
    assert summary.converted == [3, 10, 11] or sorted(summary.converted) == [3, 10, 11]
    for pid, (signal, beats, rhythms) in originals.items():
        assert_store_matches(dst, pid, signal, beats, rhythms)
        st.verify_patient(dst, pid)
    manifest = json.loads((dst / "manifest.json").read_text())
    assert manifest["n_patients"] == 3 and manifest["n_segments"] == 6
    metas = {m["patient_id"]: m for m in manifest["patients"]}
    assert metas[3]["signal_dtype"] == "int16" and metas[11]["signal_dtype"] == "float32"
    src_name = "00003_batched.npy" if unzipped else "00003_batched.pkl.gz"
    assert metas[3]["source"]["files"][src_name] == (raw / src_name).stat().st_size
    assert metas[3]["files"]["signal.npy"]["shape"] == [2, SEG]
    # resume: nothing redone, a stale temp dir of an interrupted run is cleaned
    stale = dst / "patients" / ".tmp-00010-abc"
    stale.mkdir()
    before = (dst / "patients" / "00003" / "meta.json").stat().st_mtime_ns
    again = convert(raw, dst, show_progress=False)
    assert again.converted == [] and again.skipped == [3, 10, 11]
    assert (dst / "patients" / "00003" / "meta.json").stat().st_mtime_ns == before
    (dst / "patients" / "00010" / "beats.npy").write_bytes(b"x")
    with pytest.raises(DataError, match="00010/beats.npy"):
        st.verify_patient(dst, 10)
    with pytest.raises(DataError, match=r"1 of 3 patients failed.*00010/beats.npy: checksum"):
        convert(raw, dst, verify=True, show_progress=False)


def test_shards_partition_the_patients_and_cli(tmp_path, capsys):
    rng = np.random.default_rng(2)
    raw, dst = tmp_path / "raw", tmp_path / "store"
    for pid in range(5):
        signal = (random_walk(rng, 1, 600) * 0.01).astype(np.float32)
        beats, rhythms = beat_labels(rng, 1, 600)
        ic.write_patient(raw, pid, signal, beats, rhythms)
    assert data_main(["convert-icentia", "--src", str(raw), "--dst", str(dst), "--shard", "1/2", "--quiet"]) == 0
    assert st.done_patients(dst) == [1, 3]
    assert data_main(["convert-icentia", "--src", str(raw), "--dst", str(dst), "--patients", "0-2,4",
                      "--quiet"]) == 0
    assert st.done_patients(dst) == [0, 1, 2, 3, 4]
    assert "3 converted, 1 already done, store" in capsys.readouterr().out.splitlines()[-1]
    assert data_main(["convert-icentia", "--src", str(raw), "--dst", str(dst), "--patients", "7"]) == 2
    assert "no pkl files for patients 7" in capsys.readouterr().err
    assert parse_ids("0-2, 5") == [0, 1, 2, 5] and parse_shard("3/4") == (3, 4)
    for bad in ("2-1", "x"):
        with pytest.raises(ConfigError):
            parse_ids(bad)
    with pytest.raises(ConfigError):
        parse_shard("4/4")


def test_bad_patient_is_named_and_the_others_convert(tmp_path):
    rng = np.random.default_rng(3)
    raw, dst = tmp_path / "raw", tmp_path / "store"
    for pid in (1, 2):
        signal = (random_walk(rng, 1, 500) * 0.01).astype(np.float32)
        ic.write_patient(raw, pid, signal, *beat_labels(rng, 1, 500))
    bad = raw / "00002_batched.pkl.gz"
    bad.write_bytes(gzip.compress(b"\x80\x04garbage")[:-3])
    with pytest.raises(DataError, match=r"1 of 2 patients failed.*00002_batched.pkl.gz"):
        convert(raw, dst, show_progress=False)
    assert st.done_patients(dst) == [1]
    assert not [p for p in os.listdir(dst / "patients") if p.startswith(".tmp")]
    with pytest.raises(DataError, match="no Icentia11k patients"):
        convert(tmp_path / "store", tmp_path / "other", show_progress=False)


def test_wfdb_twin_converts_to_identical_store(tmp_path):
    rng = np.random.default_rng(4)
    digital = random_walk(rng, 2)
    beats, rhythms = beat_labels(rng, 2)
    folder = iw.write_wfdb_patient(tmp_path / "wfdb", 1234, digital, beats, rhythms)
    assert folder == tmp_path / "wfdb" / "p01" / "p01234"
    assert sorted(os.listdir(folder))[:3] == ["p01234_s00.atr", "p01234_s00.dat", "p01234_s00.hea"]
    twin = (digital.astype(np.float64) / iw.WFDB_GAIN).astype(np.float32)
    ic.write_patient(tmp_path / "pkl", 1234, twin, beats, rhythms)
    convert(tmp_path / "wfdb", tmp_path / "from_wfdb", show_progress=False)
    convert(tmp_path / "pkl", tmp_path / "from_pkl", show_progress=False)
    a, b = (json.loads((tmp_path / d / "patients" / "01234" / "meta.json").read_text())
            for d in ("from_wfdb", "from_pkl"))
    assert a["source"]["format"] == "wfdb" and b["source"]["format"] == "pkl"
    assert a["signal_dtype"] == "int16" and a["scale"] == b["scale"]
    assert {k: v["sha256"] for k, v in a["files"].items()} == {k: v["sha256"] for k, v in b["files"].items()}
    assert_store_matches(tmp_path / "from_wfdb", 1234, twin, beats, rhythms)


def test_wfdb_annotation_mapping_by_hand(tmp_path):
    folder = tmp_path / "p00" / "p00007"
    folder.mkdir(parents=True)
    wfdb.wrsamp("p00007_s00", fs=250, units=["mV"], sig_name=["ecg"], fmt=["16"], adc_gain=[200.0], baseline=[0],
                d_signal=np.arange(1000, dtype=np.int16).reshape(-1, 1), write_dir=str(folder))
    ann = [(100, "N", ""), (100, "+", "(N"), (200, "V", ""), (300, "N", ""), (300, "+", ")"), (400, "Q", ""),
           (500, "S", ""), (500, "+", "(AFIB)"), (600, "a", ""), (600, "+", "(AFL"), (700, "N", "")]
    wfdb.wrann("p00007_s00", "atr", np.array([a[0] for a in ann]), symbol=[a[1] for a in ann],
               aux_note=[a[2] for a in ann], write_dir=str(folder))
    patient = iw.load_wfdb_patient(folder, 7)
    np.testing.assert_array_equal(patient.signal[0], (np.arange(1000) / 200.0).astype(np.float32))
    (bpos, bcls), (rpos, rcls) = patient.beats[0], patient.rhythms[0]
    assert bpos.tolist() == [100, 200, 300, 400, 500, 600, 700] and bcls.tolist() == [1, 4, 1, 0, 2, 3, 1]
    assert rpos.tolist() == bpos.tolist() and rcls.tolist() == [3, 3, 3, 2, 4, 5, 5]  # open zone runs to the end
    wfdb.wrann("p00007_s00", "atr", np.array([10]), symbol=["L"], write_dir=str(folder))
    with pytest.raises(DataError, match=r"p00007_s00.atr: unknown beat symbol 'L'"):
        iw.load_wfdb_patient(folder, 7)
