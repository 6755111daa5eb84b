"""Pool sampler: frames and labels equal the originals and the reference rules, (seed, epoch, rank) fixes the
data, ranks hold disjoint shares, a killed and resumed run draws what an uninterrupted one does, the patient and
label mix matches the uniform sampler's, future finds context and candidates, bad stores fail in one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ecg_hpc.data import icentia11k as ic
from ecg_hpc.data.convert import convert
from ecg_hpc.data.pipeline import BatchSampler, make_dataset
from ecg_hpc.data.pool import PoolOptions, PoolSampler, patient_share, stage_patients
from ecg_hpc.data.store import Store, patient_dir
from ecg_hpc.data.labels import beat_label, hr_label, rhythm_label
from ecg_hpc.data.layout import future_prediction
from ecg_hpc.errors import ConfigError, DataError
from ecg_hpc.tasks import get_task

SEG, FRAME = 3000, 64
PIDS = (1, 4, 6, 7)
SMALL = PoolOptions(pool_mb=0.1, chunk_samples=700)  # 36 slots of 764 samples, ~ 3 chunk reads per step of 16


@pytest.fixture(scope="module")
def originals_and_store(tmp_path_factory):
    """Four pkl.gz patients with 2..5 segments and different beat mixes, converted to a store."""
    root = tmp_path_factory.mktemp("pool")
    rng = np.random.default_rng(1)
    originals = {}
    for n, pid in enumerate(PIDS):
        n_segments = 2 + n
        signal_ = (np.cumsum(rng.integers(-30, 31, (n_segments, SEG)), axis=1) * np.float32(0.01)).astype(np.float32)
        beats, rhythms = [], []
        mix = np.roll([.1, .6, .1, .1, .1], n)
        for _ in range(n_segments):
            pos = np.sort(rng.choice(SEG, int(rng.integers(20, 60)), replace=False))
            beats.append((pos, rng.choice(5, pos.size, p=mix)))
            rpos = np.sort(rng.choice(SEG, int(rng.integers(2, 12)), replace=False))
            rhythms.append((rpos, rng.integers(0, 6, rpos.size)))
        ic.write_patient(root / "raw", pid, signal_, beats, rhythms)
        originals[pid] = (signal_, beats, rhythms)
    convert(root / "raw", root / "store", show_progress=False)
    return originals, Store(root / "store")


def pool(store, task="beat", batch=16, options=SMALL, **kw):
    return PoolSampler(store, get_task(task), PIDS, FRAME, batch, seed=kw.pop("seed", 3), options=options, **kw)


def normalised(x):
    return ((x.astype(np.float64) - ic.MEAN) / ic.STD).astype(np.float32)


@pytest.mark.parametrize("task", ["beat", "rhythm", "hr"])
def test_frames_and_labels_match_originals_and_reference_rules(originals_and_store, task):
    originals, store = originals_and_store
    sampler = pool(store, task)
    rule = {"beat": lambda p, c, s: beat_label(p, c, s, s + FRAME),
            "rhythm": lambda p, c, s: rhythm_label(p, c, s, s + FRAME),
            "hr": lambda p, c, s: hr_label(p, c, s, s + FRAME)}[task]
    try:
        for step in (0, 5, 17):
            pids, segments, starts = sampler.locate(step)
            frames, labels = sampler.batch(step)
            for pid, seg, start, frame, label in zip(pids, segments, starts, frames, labels):
                signal_, beats, rhythms = originals[int(pid)]
                np.testing.assert_allclose(frame[:, 0], normalised(signal_[seg, start:start + FRAME]),
                                           rtol=5e-7, atol=1e-6)
                positions, classes = (rhythms if task == "rhythm" else beats)[seg]
                assert label == rule(positions, classes, int(start))
    finally:
        sampler.close()


def test_seed_epoch_rank_fix_the_batches(originals_and_store):
    """Equal for equal (seed, epoch, rank) whatever the number of reader threads (their timing never matters)."""
    _, store = originals_and_store
    one_reader = PoolOptions(SMALL.pool_mb, SMALL.chunk_samples, readers=1)
    samplers = [pool(store, options=one_reader), pool(store, options=PoolOptions(0.1, 700, readers=4)),
                pool(store, epoch=1), pool(store, seed=4)]
    try:
        batches = [[s.raw_batch(i)[0] for i in range(12)] for s in samplers]
    finally:
        for s in samplers:
            s.close()
    assert all(np.array_equal(a, b) for a, b in zip(batches[0], batches[1]))
    assert not np.array_equal(batches[0][3], batches[2][3]) and not np.array_equal(batches[0][3], batches[3][3])
    assert samplers[0].loads_per_step > 1 and samplers[0].slots < len(samplers[0].plan)  # refills happened


def test_ranks_hold_disjoint_shares_that_cover_the_patients(originals_and_store):
    _, store = originals_and_store
    for epoch in range(3):
        shares = [patient_share(PIDS, 5, epoch, r, 2) for r in range(2)]
        assert not set(shares[0]) & set(shares[1]) and sorted(shares[0] + shares[1]) == list(PIDS)
    assert any(patient_share(PIDS, 5, 0, 0, 2) != patient_share(PIDS, 5, e, 0, 2) for e in range(1, 5))
    samplers = [pool(store, rank=r, world_size=2) for r in range(2)]
    try:
        drawn = [set(np.concatenate([s.locate(i)[0] for i in range(10)]).tolist()) for s in samplers]
    finally:
        for s in samplers:
            s.close()
    assert drawn[0] == set(samplers[0].share) and drawn[1] == set(samplers[1].share)
    assert not drawn[0] & drawn[1]
    with pytest.raises(ConfigError, match="cannot be shared among 5 workers"):
        patient_share(PIDS, 0, 0, 0, 5)


def test_resume_at_a_step_draws_what_an_uninterrupted_run_draws(originals_and_store):
    _, store = originals_and_store
    whole, resumed = pool(store, "rhythm"), pool(store, "rhythm", start_step=9)
    try:
        full = [whole.raw_batch(i) for i in range(20)]
        later = [resumed.raw_batch(i) for i in range(9, 20)]
    finally:
        whole.close()
        resumed.close()
    for a, b in zip(full[9:], later):
        assert all(np.array_equal(x, y) for x, y in zip(a, b))
    ds = list(make_dataset(store, get_task("rhythm"), PIDS, FRAME, 16, seed=3, steps=20, start_step=9, pool=SMALL)
              .as_numpy_iterator())
    assert len(ds) == 11 and np.array_equal(ds[0][1], full[9][2])


_RUNNER = """
import hashlib, sys
from ecg_hpc.data.pool import PoolOptions, PoolSampler
from ecg_hpc.tasks import get_task
start = int(sys.argv[2])
s = PoolSampler(sys.argv[1], get_task("beat"), {pids}, {frame}, 16, seed=3, options=PoolOptions(0.1, 700), start_step=start)
for step in range(start, 40):
    values, multiplier, labels = s.raw_batch(step)
    print(step, hashlib.sha256(values.tobytes() + labels.tobytes()).hexdigest(), flush=True)
s.close()
"""


def test_killed_and_resumed_process_draws_the_uninterrupted_batches(originals_and_store):
    _, store = originals_and_store
    code = _RUNNER.format(pids=list(PIDS), frame=FRAME)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))

    def run(start: int) -> list[str]:
        out = subprocess.run([sys.executable, "-c", code, str(store.path), str(start)], env=env, text=True,
                             capture_output=True, timeout=120, check=True)
        return out.stdout.splitlines()

    proc = subprocess.Popen([sys.executable, "-c", code, str(store.path), "0"], env=env, text=True,
                            stdout=subprocess.PIPE)
    first = [proc.stdout.readline().strip() for _ in range(13)]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    resumed = first + run(13)
    assert resumed == run(0)


def _exact_mix(originals, task_labels):
    """Patient and beat-label proportions of the uniform sampler, exactly: every start of every segment."""
    patients, labels = np.zeros(len(PIDS)), np.zeros(5)
    for i, pid in enumerate(PIDS):
        _, beats, _ = originals[pid]
        for positions, classes in beats:
            for start in range(SEG - FRAME):
                labels[beat_label(positions, classes, start, start + FRAME)] += 1 / (len(beats) * (SEG - FRAME))
        patients[i] = 1
    return patients / patients.sum(), labels / labels.sum()


def test_patient_and_label_mix_within_tolerance_of_the_uniform_sampler(originals_and_store):
    """Both samplers' frequencies lie within 4 binomial standard errors of the exact uniform proportions.

    Frames drawn close together in the pool share chunks, so they are not independent; the test therefore covers
    at least 4 full passes over the chunks (every chunk equally often resident, which removes the chunk-level
    variance) and counts one effective draw per 4 frames (a design effect of 4, more than the measured within-chunk
    correlation of these short segments needs). 4 standard errors keep false alarms below 1 in 10^4 per class.
    The uniform sampler must pass the same bound, and an unweighted pool (patients weighted by their segment
    count, 2..5 here) misses it by a wide margin, so the tolerance can fail."""
    originals, store = originals_and_store
    want_patients, want_labels = _exact_mix(originals, "beat")
    steps, batch = 400, 64
    sampler = pool(store, batch=batch)
    uniform = BatchSampler(store, get_task("beat"), PIDS, FRAME, batch, seed=3)
    try:
        got = []
        for s in (sampler, uniform):
            located = [(s.locate(i)[0], s.raw_batch(i)[2]) for i in range(steps)]
            pids, labels = (np.concatenate(x) for x in zip(*located))
            got.append((np.array([np.mean(pids == p) for p in PIDS]), np.bincount(labels, minlength=5) / labels.size))
        passes = steps * sampler.loads_per_step / len(sampler.plan)
    finally:
        sampler.close()
    assert passes >= 4
    n_eff = steps * batch / 4
    for got_patients, got_labels in got:
        for got_p, want in ((got_patients, want_patients), (got_labels, want_labels)):
            tolerance = 4 * np.sqrt(want * (1 - want) / n_eff) + 1e-9
            assert np.all(np.abs(got_p - want) <= tolerance), (got_p, want, tolerance)
    segments = np.array([len(originals[p][1]) for p in PIDS])
    unweighted = segments / segments.sum()
    assert np.any(np.abs(unweighted - want_patients) > 4 * np.sqrt(want_patients / n_eff))


def _owner(originals, frame):
    """The patient whose signal holds ``frame`` (normalised) somewhere, or None."""
    for pid, (signal_, _, _) in originals.items():
        for row in signal_:
            windows = np.lib.stride_tricks.sliding_window_view(normalised(row), frame.size)
            if (np.abs(windows - frame).max(axis=1) < 1e-5).any():
                return pid
    return None


def test_future_finds_context_and_candidates(originals_and_store):
    originals, store = originals_and_store
    k, c = 3, 4
    future = replace(get_task("future"), layout=future_prediction(context_frames=c, num_negatives=k))
    sampler = PoolSampler(store, future, PIDS, 32, 8, seed=0, options=SMALL)
    try:
        for step in (0, 7):
            pids, segments, starts = sampler.locate(step)
            context, candidates, labels = sampler.batch(step)
            assert context.shape == (8, c, 32, 1) and candidates.shape == (8, k + 1, 32, 1)
            for i, (pid, seg, start) in enumerate(zip(pids, segments, starts)):
                window = normalised(originals[int(pid)][0][seg, start:start + 32 * (c + 1)])
                np.testing.assert_allclose(context[i].reshape(-1), window[:32 * c], rtol=5e-7, atol=1e-6)
                np.testing.assert_allclose(candidates[i, labels[i], :, 0], window[32 * c:], rtol=5e-7, atol=1e-6)
                for j in range(k + 1):  # each negative is a frame of another patient
                    if j != labels[i]:
                        assert _owner(originals, candidates[i, j, :, 0]) not in (None, int(pid))
    finally:
        sampler.close()


def test_pool_memory_is_bounded_and_recorded(originals_and_store):
    _, store = originals_and_store
    sampler = pool(store)
    try:
        info = sampler.describe()
    finally:
        sampler.close()
    assert info["memory_bytes"] <= info["memory_bound_bytes"] == int(0.1 * 2 ** 20)
    with pytest.raises(ConfigError, match="--pool-mb 0.001: too small"):
        pool(store, options=PoolOptions(pool_mb=0.001, chunk_samples=700))


def _copy_store(store, dst):
    stage_patients(store, PIDS, dst)
    (dst / "manifest.json").write_bytes((store.path / "manifest.json").read_bytes())
    return dst


def test_bad_store_fails_in_one_line_naming_the_file(originals_and_store, tmp_path):
    _, store = originals_and_store
    truncated = _copy_store(store, tmp_path / "truncated")
    signal_path = patient_dir(truncated, 4) / "signal.npy"
    os.truncate(signal_path, signal_path.stat().st_size - 100)
    with pytest.raises(DataError, match=f"{signal_path}: truncated"):
        s = pool(truncated)
        try:
            for i in range(30):
                s.raw_batch(i)
        finally:
            s.close()
    with pytest.raises(DataError, match=f"{patient_dir(store.path, 99)}: patient 99 is not in the store"):
        PoolSampler(store, get_task("beat"), [*PIDS, 99], FRAME, 8, seed=0)
    corrupt = _copy_store(store, tmp_path / "corrupt")
    (corrupt / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match=f"{corrupt / 'manifest.json'}: not a store manifest") as caught:
        pool(corrupt)
    assert "\n" not in str(caught.value)


def test_staging_copies_patients_once_and_atomically(originals_and_store, tmp_path):
    _, store = originals_and_store
    staged = stage_patients(store, PIDS, tmp_path / "local", part=(0, 2))
    staged = stage_patients(store, PIDS, tmp_path / "local", part=(1, 2))
    assert staged.patient_ids == list(PIDS)
    for pid in PIDS:
        meta = json.loads((patient_dir(staged.path, pid) / "meta.json").read_text())
        for name, info in meta["files"].items():
            assert (patient_dir(staged.path, pid) / name).stat().st_size == info["bytes"]
    assert not [p for p in (tmp_path / "local" / "patients").iterdir() if p.name.startswith(".")]
    a, b = pool(store), pool(staged)
    try:
        assert all(np.array_equal(a.raw_batch(i)[0], b.raw_batch(i)[0]) for i in range(5))
    finally:
        a.close()
        b.close()


def test_a_store_mixing_int16_and_float32_patients_reads_both(tmp_path):
    """One patient off any int16 grid is stored as float32; the pool widens the int16 patients' reads."""
    rng = np.random.default_rng(5)
    signals = {1: (np.cumsum(rng.integers(-30, 31, (2, SEG)), axis=1) * np.float32(0.01)).astype(np.float32),
               2: rng.normal(0, 1, (2, SEG)).astype(np.float32)}  # random floats: no int16 grid
    empty = [(np.array([10, 500]), np.array([0, 1]))] * 2
    for pid, signal_ in signals.items():
        ic.write_patient(tmp_path / "raw", pid, signal_, empty, empty)
    convert(tmp_path / "raw", tmp_path / "store", show_progress=False)
    store = Store(tmp_path / "store")
    assert sorted(m["signal_dtype"] for m in store.metas(tuple(signals)).values()) == ["float32", "int16"]
    sampler = PoolSampler(store, get_task("beat"), tuple(signals), FRAME, 8, seed=1, options=SMALL)
    try:
        seen = set()
        for step in range(6):
            pids, segments, starts = sampler.locate(step)
            frames, _ = sampler.batch(step)
            for pid, seg, start, frame in zip(pids, segments, starts, frames):
                seen.add(int(pid))
                np.testing.assert_allclose(frame[:, 0], normalised(signals[int(pid)][seg, start:start + FRAME]),
                                           rtol=5e-7, atol=1e-6)
        assert seen == set(signals)
    finally:
        sampler.close()
