"""PhysioNet/CinC 2017 reader, writer and preprocessing, on the 300 real records in tests/data."""

from __future__ import annotations

import datetime as dt
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.signal
import wfdb

from ecg_hpc.data import physionet2017 as P
from ecg_hpc.errors import DataError


@pytest.fixture(scope="module")
def real_dir(real_data: Path) -> Path:
    """The 300 real challenge records (read only)."""
    return real_data / "physionet2017-validation"


@pytest.fixture(scope="module")
def real(real_dir: Path) -> tuple[list[str], list[np.ndarray], np.ndarray]:
    """All real records read once for the module (the folder-level warning is checked elsewhere)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", P.HeaderRepairWarning)
        return P.load_records(real_dir)


def _copy_records(src: Path, dst: Path, names: list[str]) -> Path:
    """Copy a few real records and matching RECORDS / REFERENCE.csv into ``dst`` (a test's scratch folder)."""
    labels = dict(line.split(",") for line in (src / "REFERENCE.csv").read_text().split())
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        for ext in (".hea", ".mat"):
            shutil.copyfile(src / f"{name}{ext}", dst / f"{name}{ext}")
    P.write_index(dst, names, [labels[n] for n in names])
    return dst


def test_real_records_names_labels_and_units(real) -> None:
    names, signals, labels = real
    assert len(names) == len(signals) == labels.size == 300
    assert dict(zip(P.CLASSES, np.bincount(labels, minlength=4).tolist())) == {"A": 50, "N": 150, "O": 70, "~": 30}
    assert names[0] == "A00001" and P.CLASSES[labels[0]] == "N"
    assert signals[0].dtype == np.float32 and signals[0].shape == (9000,)
    assert signals[0][0] == pytest.approx(-0.127)  # first value of A00001.mat is -127 at 1000/mV
    assert {s.size for s in signals} >= {9000, 18000}


def test_published_header_defeats_wfdb_and_is_repaired_with_one_warning(real_dir: Path) -> None:
    with pytest.raises(ValueError, match="unconverted data remains"):
        wfdb.rdheader(str(real_dir / "A00001"))
    header = P.read_header(real_dir / "A00001.hea")
    assert header.repaired and header.fs == 300 and header.sig_len == 9000 and header.adc_gain == 1000
    assert header.base_datetime == dt.datetime(2014, 5, 8, 5, 5, 15)
    with pytest.warns(P.HeaderRepairWarning) as record:
        P.load_records(real_dir)
    assert len(record) == 1 and "300 of 300 headers" in str(record[0].message)


def test_preprocess_9000_samples_become_7500_after_8884_zeros(real) -> None:
    names, signals, _ = real
    x = P.preprocess(signals[0])
    assert x.dtype == np.float32 and x.shape == (16384,)
    assert np.all(x[:8884] == 0) and x[8884] != 0
    expected = scipy.signal.resample_poly((signals[0].astype(np.float64) - 0.0075) / 0.2373, 5, 6)
    assert expected.size == 7500
    np.testing.assert_allclose(x[8884:], expected, rtol=1e-5, atol=1e-5)


def test_preprocess_keeps_the_last_samples_of_a_long_record() -> None:
    signal = np.arange(20000, dtype=np.float64)
    x = P.preprocess(signal, fs=250)  # no resampling at 250 Hz: the cut is exact
    np.testing.assert_allclose(x, ((signal[-16384:] - 0.0075) / 0.2373).astype(np.float32), rtol=1e-6)


def test_writer_reproduces_the_published_files_byte_for_byte(real_dir: Path, tmp_path: Path, real) -> None:
    names, _, labels = real
    val = scipy.io.loadmat(str(real_dir / "A00001.mat"))["val"][0]
    P.write_record(tmp_path, "A00001", val, dt.datetime(2014, 5, 8, 5, 5, 15))
    for ext in (".mat", ".hea"):
        assert (tmp_path / f"A00001{ext}").read_bytes() == (real_dir / f"A00001{ext}").read_bytes()
    P.write_index(tmp_path, names, [P.CLASSES[i] for i in labels])
    for index in ("RECORDS", "REFERENCE.csv"):
        assert (tmp_path / index).read_bytes() == (real_dir / index).read_bytes()


def test_mat_file_is_also_a_wfdb_format_16_signal(real_dir: Path, tmp_path: Path, real) -> None:
    """With the record line in WFDB order, wfdb itself reads the .mat (format 16, byte offset 24) identically."""
    _, signals, _ = real
    shutil.copyfile(real_dir / "A00001.mat", tmp_path / "A00001.mat")
    lines = (real_dir / "A00001.hea").read_text().splitlines()
    (tmp_path / "A00001.hea").write_text("A00001 1 300 9000 05:05:15 08/05/2014\n" + lines[1] + "\n")
    record = wfdb.rdrecord(str(tmp_path / "A00001"))
    np.testing.assert_allclose(record.p_signal[:, 0], signals[0], atol=1e-6)


@pytest.mark.parametrize("breakage, message", [
    ("label", "label 'X'"),
    ("missing_mat", "is missing"),
    ("missing_hea", "header .* is missing"),
    ("fs", "250 Hz, expected 300"),
    ("empty", "non-empty"),
    ("float", "expected int16"),
    ("unlisted", "listed in .*RECORDS"),
    ("truncated", "not a readable MATLAB file"),
    ("garbled_header", "malformed WFDB header"),
    ("two_signals", "expected one signal line"),
])
def test_bad_input_names_the_record(real_dir: Path, tmp_path: Path, breakage: str, message: str) -> None:
    src = _copy_records(real_dir, tmp_path / "src", ["A00001", "A00002", "A00003"])
    if breakage == "label":
        (src / "REFERENCE.csv").write_text("A00001,N\r\nA00002,X\r\nA00003,N\r\n")
    elif breakage == "missing_mat":
        (src / "A00002.mat").unlink()
    elif breakage == "missing_hea":
        (src / "A00002.hea").unlink()
    elif breakage == "fs":
        hea = src / "A00002.hea"
        hea.write_text(hea.read_text().replace(" 1 300 ", " 1 250 ", 1))
    elif breakage == "empty":
        scipy.io.savemat(src / "A00002.mat", {"val": np.zeros((1, 0), np.int16)}, format="4")
    elif breakage == "float":
        scipy.io.savemat(src / "A00002.mat", {"val": np.zeros((1, 9000))}, format="4")
    elif breakage == "truncated":
        (src / "A00002.mat").write_bytes((src / "A00002.mat").read_bytes()[:1000])
    elif breakage == "garbled_header":
        (src / "A00002.hea").write_text("x\r\n")
    elif breakage == "two_signals":
        hea = src / "A00002.hea"
        hea.write_text(hea.read_text().replace(" 1 300 ", " 2 300 ", 1))
    elif breakage == "unlisted":
        (src / "RECORDS").write_text("A00001\nA00002\nA00003\nA09999")
    with pytest.raises(DataError, match=message) as info:
        P.load_records(src)
    assert ("A09999" if breakage == "unlisted" else "A00002") in str(info.value)
