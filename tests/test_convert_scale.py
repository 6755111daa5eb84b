"""Conversion at scale: array tasks (separate processes, and a real SLURM array) give the single-process store
file for file; a killed conversion leaves no half patient and a re-run converts only what is missing; all three
published layouts; block planning and id specs."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ecg_hpc.data import icentia11k as ic
from ecg_hpc.data import icentia_wfdb as iw
from ecg_hpc.data import store
from ecg_hpc.data.convert import convert, format_ids, parse_ids

ROOT = Path(__file__).resolve().parent.parent
SEG = 4000
PIDS = list(range(10, 16))
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
sys.path.insert(0, str(ROOT / "launch"))
import convert as launch_convert  # noqa: E402  (launch/convert.py)


def write_source(root: Path, layout: str, pids=PIDS, seg: int = SEG, n_segments: int = 2) -> Path:
    """Small patients in one published layout (pkl, npy or wfdb)."""
    src = root / f"src-{layout}"
    rng = np.random.default_rng(7)
    for pid in pids:
        digital = np.cumsum(rng.integers(-20, 21, (n_segments, seg)), axis=1).astype(np.int16)
        beats = [(np.sort(rng.choice(seg, 30, replace=False)), rng.integers(0, 5, 30)) for _ in range(n_segments)]
        rhythms = [(np.sort(rng.choice(seg, 4, replace=False)), np.full(4, 3)) for _ in range(n_segments)]
        if layout == "wfdb":
            iw.write_wfdb_patient(src, pid, digital, beats, rhythms)
        else:
            signal_ = (digital.astype(np.float64) * 0.005).astype(np.float32)
            ic.write_patient(src, pid, signal_, beats, rhythms, unzipped=layout == "npy")
    return src


def digests(dst: Path) -> dict[str, str]:
    """sha256 of every array file of the store (meta.json differs only by time and source folder)."""
    return {str(p.relative_to(dst)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((dst / store.PATIENTS_DIR).rglob("*.npy"))}


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecg_hpc.data", "convert-icentia", *args], env=ENV, text=True,
                          capture_output=True, check=check, timeout=600)


def test_id_specs_and_blocks():
    ids = [0, 1, 2, 5, 7, 8, 100]
    assert format_ids(ids) == "0-2,5,7-8,100" and parse_ids(format_ids(ids)) == ids
    parts = launch_convert.blocks(list(range(11)), 3)
    assert [len(b) for b in parts] == [3, 4, 4] and sum(parts, []) == list(range(11))
    assert launch_convert.blocks([4, 9], 100) == [[4], [9]]
    # a re-run plans the same blocks and keeps those with patients missing: [0-2] is complete, [3-6] and [7-10] not
    assert launch_convert.missing_blocks(list(range(11)), [4, 5, 9], 3) == [(1, [4, 5]), (2, [9])]


@pytest.mark.parametrize("layout", ["pkl", "npy", "wfdb"])
def test_array_tasks_give_the_single_process_store(tmp_path, layout):
    """Three concurrent task processes (--no-manifest) then the manifest job == one process, per-file sha256."""
    src = write_source(tmp_path, layout)
    convert(src, tmp_path / "single", show_progress=False)
    blocks = launch_convert.blocks(PIDS, 3)
    procs = [subprocess.Popen([sys.executable, "-m", "ecg_hpc.data", "convert-icentia", "--src", str(src), "--dst",
                               str(tmp_path / "array"), "--patients", format_ids(b), "--no-manifest"], env=ENV,
                              stderr=subprocess.PIPE, text=True) for b in blocks]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        assert "patients/s" in err and "MB/s" in err  # progress in patients and MB/s
    assert not (tmp_path / "array" / store.MANIFEST).exists()
    cli("--dst", str(tmp_path / "array"), "--manifest-only")
    assert digests(tmp_path / "array") == digests(tmp_path / "single") and len(digests(tmp_path / "single")) == 24
    manifest = json.loads((tmp_path / "array" / store.MANIFEST).read_text())
    assert [m["patient_id"] for m in manifest["patients"]] == PIDS
    per_patient = manifest["per_patient"]  # sizes against the source and the conversion cost
    assert per_patient["store_bytes"] == pytest.approx(sum(sum(f["bytes"] for f in m["files"].values())
                                                           for m in manifest["patients"]) / len(PIDS), abs=1e-3)
    assert per_patient["source_bytes"] > 0 and per_patient["convert_cpu_s"] > 0


def test_killed_conversion_leaves_no_half_patient_and_resumes(tmp_path):
    src = write_source(tmp_path, "pkl", seg=400_000, n_segments=3)
    dst = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-m", "ecg_hpc.data", "convert-icentia", "--src", str(src), "--dst",
                             str(dst), "--quiet"], env=ENV)
    deadline = time.monotonic() + 300
    while len(store.done_patients(dst)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    done = store.done_patients(dst)
    assert 2 <= len(done) < len(PIDS), "the kill came too late to interrupt the conversion"
    for pid in done:  # whatever is visible is complete and verifies
        store.verify_patient(dst, pid)
    stamps = {pid: store.read_meta(dst, pid)["converted_at"] for pid in done}
    out = cli("--src", str(src), "--dst", str(dst), "--verify")
    assert f"{len(PIDS) - len(done)} converted, {len(done)} already done" in out.stdout
    assert {pid: store.read_meta(dst, pid)["converted_at"] for pid in done} == stamps  # not redone
    assert not [p for p in (dst / store.PATIENTS_DIR).iterdir() if p.name.startswith(".")]  # temps cleaned
    convert(src, tmp_path / "single", show_progress=False)
    assert digests(dst) == digests(tmp_path / "single")


def _cluster_running() -> bool:
    return subprocess.run([str(ROOT / "tests" / "cluster" / "slurm.sh"), "status"], capture_output=True).returncode == 0


def _wait_slurm(job_id: str, timeout_s: float = 600) -> None:
    """Until squeue no longer lists the job (all its array tasks)."""
    deadline = time.monotonic() + timeout_s
    while subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True, text=True).stdout.strip():
        assert time.monotonic() < deadline, f"SLURM job {job_id} still queued after {timeout_s} s"
        time.sleep(0.5)


@pytest.mark.slurm
@pytest.mark.skipif(not _cluster_running(), reason="no test SLURM running (tests/cluster/slurm.sh status)")
def test_slurm_array_matches_single_process_and_a_killed_task_resubmits_alone(tmp_path):
    """An array of 3 tasks on the real test SLURM; task 1 is killed (scancel --signal=KILL) after its first patient; the
    store then holds only complete patients, and submitting again converts just the rest of task 1's block."""
    pids = list(range(20, 38))  # 3 blocks of 6 patients of ~1 s each: the kill lands before block 1 is done
    src = write_source(tmp_path, "pkl", pids=pids, seg=ic.SEGMENT_SIZE, n_segments=3)
    convert(src, tmp_path / "single", show_progress=False)
    dst = tmp_path / "array"
    launch = [sys.executable, str(ROOT / "launch" / "convert.py"), "--src", str(src), "--dst", str(dst),
              "--array-tasks", "3", "--max-parallel", "3", "--time", "10"]
    first = subprocess.run(launch, env=ENV, text=True, capture_output=True, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "18 patient(s) to convert" in first.stdout and "3 slurm task(s)" in first.stdout
    array_id = next(line.split()[3] for line in first.stdout.splitlines() if line.startswith("submitted slurm job"))
    manifest_job = next(line.split()[3] for line in first.stdout.splitlines() if line.startswith("submitted manifest"))
    block = launch_convert.blocks(pids, 3)[1]
    deadline = time.monotonic() + 300
    while block[0] not in store.done_patients(dst):
        assert time.monotonic() < deadline, "task 1 converted nothing in 300 s"
        time.sleep(0.02)
    subprocess.run(["scancel", "--signal=KILL", f"{array_id}_1"], check=True)  # as when a node dies
    _wait_slurm(array_id)
    _wait_slurm(manifest_job)
    done = store.done_patients(dst)
    lost = [pid for pid in block if pid not in done]
    assert lost, "task 1 finished its block before the cancel arrived"
    for pid in done:  # only complete patients are visible
        store.verify_patient(dst, pid)
    assert [m["patient_id"] for m in json.loads((dst / store.MANIFEST).read_text())["patients"]] == done
    stamps = {pid: store.read_meta(dst, pid)["converted_at"] for pid in done}
    second = subprocess.run(launch + ["--follow"], env=ENV, text=True, capture_output=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"{len(lost)} patient(s) to convert" in second.stdout
    assert {pid: store.read_meta(dst, pid)["converted_at"] for pid in done} == stamps  # nothing redone
    assert digests(dst) == digests(tmp_path / "single")
    assert [m["patient_id"] for m in json.loads((dst / store.MANIFEST).read_text())["patients"]] == pids
    assert not [p for p in (dst / store.PATIENTS_DIR).iterdir() if p.name.startswith(".")]
