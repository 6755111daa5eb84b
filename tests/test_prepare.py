"""prepare-physionet: shapes, labels and split on the real records; the cache; bad input writes nothing."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from ecg_hpc.data import physionet2017 as P
from ecg_hpc.data.__main__ import main
from ecg_hpc.data.prepare import load_prepared, prepare
from ecg_hpc.errors import ConfigError, DataError

pytestmark = pytest.mark.filterwarnings("ignore::ecg_hpc.data.physionet2017.HeaderRepairWarning")


@pytest.fixture(scope="module")
def real_dir(real_data: Path) -> Path:
    return real_data / "physionet2017-validation"


@pytest.fixture(scope="module")
def prepared_real(real_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The 300 real records prepared once for the module."""
    dst = tmp_path_factory.mktemp("prepared") / "physionet.npz"
    _, status = prepare(real_dir, dst)
    return dst, status


def _small_copy(real_dir: Path, dst: Path, n: int = 24) -> Path:
    """A scratch copy of the first ``n`` records (balanced enough for a split) to modify freely."""
    names = (real_dir / "RECORDS").read_text().split()[:n]
    labels = dict(line.split(",") for line in (real_dir / "REFERENCE.csv").read_text().split())
    dst.mkdir()
    for name in names:
        for ext in (".hea", ".mat"):
            shutil.copyfile(real_dir / f"{name}{ext}", dst / f"{name}{ext}")
    P.write_index(dst, names, [labels[x] for x in names])
    return dst


def test_real_records_prepared_shapes_labels_and_split(prepared_real, real_dir: Path) -> None:
    path, status = prepared_real
    assert status == "built"
    data = load_prepared(path)
    assert data.classes == ("A", "N", "O", "~") and data.test_seed == 2017 and data.test_size == 0.2
    assert data.x_train.shape == (240, 16384, 1) and data.x_test.shape == (60, 16384, 1)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    both = np.concatenate([data.y_train, data.y_test])
    assert np.bincount(both, minlength=4).tolist() == [50, 150, 70, 30]
    assert np.bincount(data.y_test, minlength=4).tolist() == [10, 30, 14, 6]  # stratified 20 %
    names = np.concatenate([data.names_train, data.names_test])
    assert sorted(names.tolist()) == sorted((real_dir / "RECORDS").read_text().split())
    # A00001 (9,000 samples at 300 Hz) is 8,884 zeros then 7,500 samples, and keeps its label N
    where = "train" if "A00001" in data.names_train else "test"
    names_part, x_part = getattr(data, f"names_{where}"), getattr(data, f"x_{where}")
    i = int(np.flatnonzero(names_part == "A00001")[0])
    assert np.all(x_part[i, :8884, 0] == 0) and x_part[i, 8884, 0] != 0
    assert data.classes[getattr(data, f"y_{where}")[i]] == "N"


def test_same_inputs_reuse_the_file_and_the_cli_says_so(prepared_real, real_dir: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = prepared_real
    mtime = path.stat().st_mtime_ns
    assert main(["prepare-physionet", "--src", str(real_dir), "--dst", str(path)]) == 0
    assert "reused" in capsys.readouterr().out
    assert path.stat().st_mtime_ns == mtime


def test_changed_sources_or_options_rebuild(real_dir: Path, tmp_path: Path) -> None:
    src = _small_copy(real_dir, tmp_path / "src")
    dst = tmp_path / "out.npz"
    first, status = prepare(src, dst, test_size=0.25, seed=1)
    assert status == "built" and len(first.y_test) == 6
    assert prepare(src, dst, test_size=0.25, seed=1)[1] == "reused"
    other_seed, status = prepare(src, dst, test_size=0.25, seed=2)
    assert status == "rebuilt" and other_seed.test_seed == 2
    os.utime(src / "A00003.mat", ns=(0, 0))
    assert prepare(src, dst, test_size=0.25, seed=2)[1] == "rebuilt"
    assert prepare(src, dst, test_size=0.5, seed=2)[1] == "rebuilt"


def test_bad_record_stops_with_its_name_and_writes_nothing(real_dir: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    src = _small_copy(real_dir, tmp_path / "src")
    (src / "A00007.mat").unlink()
    dst = tmp_path / "out.npz"
    with pytest.raises(DataError, match="A00007"):
        prepare(src, dst)
    assert main(["prepare-physionet", "--src", str(src), "--dst", str(dst)]) == 2
    assert "A00007" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [src]


def test_bad_options_and_corrupt_cache(real_dir: Path, tmp_path: Path) -> None:
    src = _small_copy(real_dir, tmp_path / "src", n=6)
    with pytest.raises(ConfigError, match="--test-size"):
        prepare(src, tmp_path / "x.npz", test_size=1.5)
    with pytest.raises(ConfigError, match="--test-size"):
        prepare(src, tmp_path / "x.npz", test_size=0.01)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="corrupt.npz"):
        load_prepared(corrupt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert prepare(src, corrupt, test_size=0.5)[1] == "built"
    assert load_prepared(corrupt).x_train.shape == (3, 16384, 1)
