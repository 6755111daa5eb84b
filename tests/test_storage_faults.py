"""Full disks and read-only folders: one line naming the folder, run.json "failed", nothing half-written.

Real file systems: a small tmpfs (``mount -t tmpfs -o size=...``) for a full disk and a read-only bind mount for
EROFS, both made by the test as root and unmounted in teardown; the fine-tuner and the converter run as the
user's CLIs in their own processes, so a native crash (the old HDF5 segfault) would show as its exit status.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from ecg_hpc.errors import StorageError
from ecg_hpc.atomic import atomic_write_bytes, check_free_space
from ecg_hpc.records import read_record

from tests.test_finetune import TINY, make_prepared

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs or a read-only bind mount needs root")


def _mount(*args: str) -> None:
    proc = subprocess.run(["mount", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"mount {' '.join(args)} failed: {proc.stderr.strip()}")


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator:
    """``small_fs(size)``: a new tmpfs of ``size`` (e.g. "300k") under tmp_path; unmounted afterwards."""
    mounted: list[Path] = []

    def make(size: str) -> Path:
        folder = tmp_path / f"fs{len(mounted)}"
        folder.mkdir()
        _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder))
        mounted.append(folder)
        return folder

    yield make
    for folder in reversed(mounted):
        subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator:
    """``read_only(folder)``: bind-mount ``folder`` read-only over itself; unmounted afterwards."""
    mounted: list[Path] = []

    def make(folder: Path) -> Path:
        _mount("--bind", str(folder), str(folder))
        mounted.append(folder)
        _mount("-o", "remount,ro,bind", str(folder))
        return folder

    yield make
    for folder in reversed(mounted):
        subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_prepared(tmp_path_factory.mktemp("storage"))


def _finetune(data: Path, job: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecg_hpc.train.finetune", "--data", str(data), "--job-dir",
                           str(job), *TINY, *extra], capture_output=True, text=True, timeout=600, cwd=ROOT, env=ENV)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*") if p.name != ".run.lock")


def test_large_write_checks_space_first_and_leaves_no_temporary_file(small_fs) -> None:
    fs = small_fs("2m")
    with pytest.raises(StorageError, match=f"{fs}: cannot write 3.0 MiB .no space left on the device"):
        atomic_write_bytes(fs / "big.bin", b"x" * (3 << 20))
    (fs / "filler").write_bytes(b"x" * (1600 << 10))
    # Under LARGE_WRITE, so not checked up front: the disk fills up half-way through the write.
    with pytest.raises(StorageError, match=f"{fs}: cannot write .no space left on the device.; free space there"):
        atomic_write_bytes(fs / "small.bin", b"x" * (900 << 10))
    assert [p.name for p in fs.iterdir()] == ["filler"]
    check_free_space(fs, 10)  # small writes are never refused up front


def test_finetuning_into_a_full_folder_fails_in_one_line(data: Path, small_fs) -> None:
    job = small_fs("200k") / "job"
    proc = _finetune(data, job)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])  # not 139 (segfault) nor 1 (traceback)
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1 and f"{job}: cannot write (no space left on the device)" in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "HDF5" not in proc.stderr
    info = read_record(job)
    assert info.status == "failed" and "no space left" in info.error
    assert _hidden(job) == [] and not (job / "best_model.weights.h5").exists()


def test_a_done_run_in_a_read_only_folder_says_done(data: Path, tmp_path: Path, read_only) -> None:
    job = tmp_path / "done"
    assert _finetune(data, job).returncode == 0
    read_only(job)
    proc = _finetune(data, job)
    assert proc.returncode == 0 and "already done, skipping" in proc.stdout, proc.stderr[-2000:]
    assert read_record(job).status == "done"


def test_a_run_in_a_read_only_folder_fails_in_one_line(data: Path, tmp_path: Path, read_only) -> None:
    parent = tmp_path / "ro"
    (parent / "job").mkdir(parents=True)
    read_only(parent)
    proc = _finetune(data, parent / "job")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1 and f"{parent / 'job'}: cannot write (read-only file system)" in errors[0]
    proc = _finetune(data, parent / "new")
    assert _error_lines(proc.stderr) == [f"error: {parent / 'new'}: cannot write (read-only file system); choose a "
                                         "writable folder, then run again"], proc.stderr[-2000:]
    assert not (parent / "new").exists()


def test_sweep_plan_into_a_read_only_folder(data: Path, tmp_path: Path, read_only) -> None:
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    read_only(sweep)
    proc = subprocess.run([sys.executable, "-m", "ecg_hpc.hpc.sweep", "plan", "--data", str(data), "--sweep-dir",
                           str(sweep), "--seeds", "1,2"], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env=ENV)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert _error_lines(proc.stderr) == [f"error: {sweep}: cannot write (read-only file system); choose a writable "
                                         "folder, then run again"]


def test_convert_icentia_into_a_full_store(tmp_path: Path, small_fs) -> None:
    release = tmp_path / "release"
    subprocess.run([sys.executable, "-m", "ecg_hpc.data", "synth-icentia", "--dst", str(release), "--patients", "4",
                    "--segments", "2", "--segment-size", "100000", "--seed", "1"], check=True, cwd=ROOT, env=ENV,
                   capture_output=True, timeout=300)
    store = small_fs("700k") / "store"  # room for about one patient (2 x 100000 int16 samples + labels)
    proc = subprocess.run([sys.executable, "-m", "ecg_hpc.data", "convert-icentia", "--src", str(release), "--dst",
                           str(store), "--quiet"], capture_output=True, text=True, timeout=300, cwd=ROOT, env=ENV)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1 and "cannot write" in errors[0] and "no space left" in errors[0], proc.stderr
    assert f"{store / 'patients'}" in errors[0] and "patients converted before" in errors[0]
    assert _hidden(store) == []  # no half-written patient folder or temporary file
    from ecg_hpc.data.store import done_patients, verify_patient

    for pid in done_patients(store):
        verify_patient(store, pid)
    if (store / "manifest.json").is_file():
        manifest = json.loads((store / "manifest.json").read_text())
        assert manifest["n_patients"] == len(done_patients(store))
    shutil.rmtree(store)


def test_a_folder_the_user_may_not_write_fails_in_one_line(tmp_path: Path) -> None:
    """EACCES as a user meets it: the fine-tuner runs as ``nobody`` (root writes anywhere) into a folder owned by
    root that others may read but not write."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to run the fine-tuner as another user")
    shared = Path(os.environ.get("TMPDIR", "/tmp")) / f"ecg-hpc-eacces-{os.getpid()}"
    shutil.rmtree(shared, ignore_errors=True)
    shared.mkdir(mode=0o755)
    try:
        data = make_prepared(shared)
        for path in [shared, *shared.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        locked = shared / "group-folder"
        locked.mkdir(mode=0o755)  # root's: nobody may read it, not write into it
        job = locked / "job"
        env = {**ENV, "HOME": str(shared), "PYTHONPATH": str(ROOT)}
        proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m",
                               "ecg_hpc.train.finetune", "--data", str(data), "--job-dir", str(job), *TINY],
                              capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        errors = _error_lines(proc.stderr)
        assert len(errors) == 1 and str(locked) in errors[0] and "permission" in errors[0].lower(), errors
        assert not job.exists() and list(locked.iterdir()) == []  # nothing half-written
    finally:
        shutil.rmtree(shared, ignore_errors=True)
