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


TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"}


def _squeue(job: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout.strip()


def _wait_slurm(job_id: str, timeout_s: float = 300) -> None:
    """Until squeue no longer lists the job (all its array tasks, or the one task ``ID_INDEX``)."""
    deadline = time.monotonic() + timeout_s
    while _squeue(job_id):
        assert time.monotonic() < deadline, f"SLURM job {job_id} still queued after {timeout_s} s"
        time.sleep(0.3)


def _sacct(job_id: str) -> dict[str, tuple[str, str]]:
    """State and ExitCode of the job's tasks and steps, e.g. {'7_1': ('CANCELLED', '0:9'), '7_1.0': ...}."""
    out = subprocess.run(["sacct", "-P", "-n", "-j", job_id, "-o", "JobID,State,ExitCode"], capture_output=True,
                         text=True, check=True).stdout
    return {jid: (state.split()[0], code) for jid, state, code in
            (line.split("|") for line in out.splitlines() if line.strip())}


def _ended(job_id: str, tasks: int = 1, timeout_s: float = 120) -> dict[str, tuple[str, str]]:
    """``_sacct`` once accounting lists ``tasks`` jobs or array tasks, all ended with their steps (it lags squeue)."""
    deadline = time.monotonic() + timeout_s
    while True:
        states = _sacct(job_id)
        if len([jid for jid in states if "." not in jid]) >= tasks and \
                all(state in TERMINAL for state, _ in states.values()):
            return states
        assert time.monotonic() < deadline, f"SLURM job {job_id} not ended after {timeout_s} s: {states}"
        time.sleep(0.3)


def _file_ids(dst: Path, pids: list[int]) -> dict[str, tuple[int, int]]:
    """(inode, mtime in ns) of every file and folder of these patients: rewriting any of them changes it."""
    out = {}
    for pid in pids:
        folder = dst / store.PATIENTS_DIR / f"{pid:05d}"
        for path in [folder, *sorted(folder.iterdir())]:
            st = path.stat()
            out[str(path.relative_to(dst))] = (st.st_ino, st.st_mtime_ns)
    return out


@pytest.mark.slurm
def test_slurm_array_matches_single_process_and_a_killed_task_resubmits_alone(slurm_cluster, tmp_path):
    """launch/convert.py submits 3 array tasks to the real test SLURM. Task 1 converts its first patient and is then
    held inside its second (one segment header is a FIFO nobody writes), where `scancel JOB_1` kills it: the task
    and its job step end CANCELLED. The store then holds only complete patients; the same command again submits
    one task, for the rest of block 1, and rewrites no other patient; the store equals the single-process conversion
    file for file (sha256)."""
    pids = list(range(20, 32))  # 3 blocks of 4 small patients; WFDB, whose reader opens the header FIFO plainly
    block = launch_convert.blocks(pids, 3)[1]
    held = block[1]
    src = write_source(tmp_path, "wfdb", pids=pids)
    convert(src, tmp_path / "single", show_progress=False)
    header = iw.patient_folder(src, held) / f"p{held:05d}_s01.hea"
    real_header = header.read_bytes()
    header.unlink()
    os.mkfifo(header)  # opening it blocks until a writer opens it: task 1 cannot get past patient `held`
    dst = tmp_path / "array"
    launch = [sys.executable, str(ROOT / "launch" / "convert.py"), "--src", str(src), "--dst", str(dst),
              "--array-tasks", "3", "--max-parallel", "3", "--cpus-per-task", "1", "--time", "10",
              "--partition", slurm_cluster.partition]
    queue_s = 600  # the test cluster may be busy with other jobs: waits for a start are long, the rest is quick
    jobs: list[str] = []
    try:
        first = subprocess.run(launch, env=ENV, text=True, capture_output=True, timeout=120)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "12 patient(s) to convert" in first.stdout and "3 slurm task(s)" in first.stdout, first.stdout
        array_id = next(line.split()[3] for line in first.stdout.splitlines() if line.startswith("submitted slurm"))
        manifest_job = next(line.split()[3] for line in first.stdout.splitlines()
                            if line.startswith("submitted manifest"))
        jobs += [array_id, manifest_job]
        deadline = time.monotonic() + queue_s
        while block[0] not in store.done_patients(dst):  # task 1 has started its block, on its way to the hold
            assert _squeue(f"{array_id}_1") or block[0] in store.done_patients(dst), \
                f"task 1 ended without converting patient {block[0]}: {_sacct(array_id)}"
            assert time.monotonic() < deadline, f"task 1 converted nothing in {queue_s} s: {_sacct(array_id)}"
            time.sleep(0.05)
        assert _squeue(f"{array_id}_1"), f"task 1 ended although patient {held} cannot be read: {_sacct(array_id)}"
        # As a user cancels a task. The worker ignores SIGTERM (submitit) and dies by SIGKILL, from srun's forced
        # step termination or KillWait (5 s) later; without the hold it would often finish its block meanwhile.
        # (Not `scancel --signal=KILL JOB_1.0`: on Slurm 22.05 that now and then leaves the step's slurmstepd
        # waiting and drains the node, "Kill task failed", after UnkillableStepTimeout.)
        cancel = subprocess.run(["scancel", f"{array_id}_1"], capture_output=True, text=True)
        assert cancel.returncode == 0, cancel.stderr
        killed = _ended(f"{array_id}_1")
        assert killed[f"{array_id}_1"][0] == killed[f"{array_id}_1.0"][0] == "CANCELLED", killed  # the worker too
        _wait_slurm(array_id, queue_s)
        _wait_slurm(manifest_job, queue_s)
        states = _ended(array_id, tasks=3)
        assert states[f"{array_id}_0"][0] == states[f"{array_id}_2"][0] == "COMPLETED", states
        assert _ended(manifest_job)[manifest_job][0] == "COMPLETED", _sacct(manifest_job)

        done = store.done_patients(dst)
        lost = block[1:]
        assert done == [pid for pid in pids if pid not in lost], (done, lost)  # held and after: not converted
        visible = sorted(p.name for p in (dst / store.PATIENTS_DIR).iterdir() if not p.name.startswith("."))
        assert visible == [f"{pid:05d}" for pid in done]  # no half patient under its final name
        for pid in done:  # and every visible patient is complete
            store.verify_patient(dst, pid)
        assert [m["patient_id"] for m in json.loads((dst / store.MANIFEST).read_text())["patients"]] == done
        before = _file_ids(dst, done)
        stamps = {pid: store.read_meta(dst, pid)["converted_at"] for pid in done}
    finally:
        if jobs:  # ended already unless an assertion failed
            subprocess.run(["scancel", *jobs], capture_output=True)
        header.unlink()
        header.write_bytes(real_header)

    second = subprocess.run(launch + ["--follow"], env=ENV, text=True, capture_output=True, timeout=2 * queue_s)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "block(s) 1 of 0-2 have patients missing" in second.stdout, second.stdout  # only the killed task's block
    assert f"{len(lost)} patient(s) to convert" in second.stdout and "as 1 slurm task(s)" in second.stdout
    again = next(line.split()[3] for line in second.stdout.splitlines() if line.startswith("submitted slurm"))
    assert [s for jid, (s, _) in _ended(again).items() if "." not in jid] == ["COMPLETED"]  # one task, not three
    assert _file_ids(dst, done) == before  # the other patients were not rewritten
    assert {pid: store.read_meta(dst, pid)["converted_at"] for pid in done} == stamps
    assert digests(dst) == digests(tmp_path / "single") and len(digests(dst)) == 4 * len(pids)
    assert [m["patient_id"] for m in json.loads((dst / store.MANIFEST).read_text())["patients"]] == pids
    assert not [p for p in (dst / store.PATIENTS_DIR).iterdir() if p.name.startswith(".")]
