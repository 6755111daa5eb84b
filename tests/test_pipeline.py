"""tf.data pipeline from the store: frames equal slices of the original, labels equal the reference rules,
future-prediction groups, determinism per (seed, epoch, rank), uniform sampling."""

from __future__ import annotations

import subprocess
from dataclasses import replace
import sys

import numpy as np
import pytest

from ecg_hpc.data import icentia11k as ic
from ecg_hpc.data.convert import convert
from ecg_hpc.data.pipeline import BatchSampler, make_dataset
from ecg_hpc.data.store import BEATS, CLASS_MASK, Store
from ecg_hpc.data.labels import LabelRule, beat_label, complete_beats, hr_label, rhythm_label
from ecg_hpc.data.layout import future_prediction, labelled
from ecg_hpc.errors import ConfigError, DataError
from ecg_hpc.tasks import Task, get_task

SEG, FRAME = 3000, 64
PIDS = (2, 5, 9)


@pytest.fixture(scope="module")
def raw_and_store(tmp_path_factory):
    """Three patients in the published pkl.gz format (one off the int16 grid -> float32), converted to a store."""
    root = tmp_path_factory.mktemp("pipe")
    rng = np.random.default_rng(0)
    originals = {}
    for n, pid in enumerate(PIDS):
        n_segments = 2 + n
        walk = np.cumsum(rng.integers(-30, 31, (n_segments, SEG)), axis=1).astype(np.float32)
        signal = (walk * np.float32(0.01)).astype(np.float32)
        if pid == 9:
            signal += rng.normal(0, 1e-3, signal.shape).astype(np.float32)
        beats, rhythms = [], []
        for _ in range(n_segments):
            pos = np.sort(rng.choice(SEG, int(rng.integers(5, 60)), replace=False))
            beats.append((pos, rng.choice(5, pos.size, p=[.2, .6, .07, .06, .07])))
            rpos = np.sort(rng.choice(SEG, int(rng.integers(1, 15)), replace=False))
            rhythms.append((rpos, rng.integers(0, 6, rpos.size)))
        ic.write_patient(root / "raw", pid, signal, beats, rhythms)
        originals[pid] = (signal, beats, rhythms)
    convert(root / "raw", root / "store", show_progress=False)
    return originals, Store(root / "store")


def normalised(x):
    return (x.astype(np.float64) - ic.MEAN) / ic.STD


def close(got, want):
    """Equal up to float32 rounding of the normalisation."""
    np.testing.assert_allclose(got, want, rtol=5e-7, atol=1e-6)


@pytest.mark.parametrize("task", ["beat", "rhythm", "hr"])
def test_frames_and_labels_match_originals_and_reference_rules(raw_and_store, task):
    originals, store = raw_and_store
    sampler = BatchSampler(store, get_task(task), PIDS, FRAME, batch_size=64, seed=3)
    ds = make_dataset(store, get_task(task), PIDS, FRAME, batch_size=64, seed=3, steps=3)
    batches = list(ds.as_numpy_iterator())
    assert len(batches) == 3
    rule = {"beat": lambda b, r, s, e: beat_label(*b, s, e), "rhythm": lambda b, r, s, e: rhythm_label(*r, s, e),
            "hr": lambda b, r, s, e: hr_label(*b, s, e)}[task]
    for step, (frames, labels) in enumerate(batches):
        assert frames.shape == (64, FRAME, 1) and frames.dtype == np.float32
        assert labels.shape == (64,) and labels.dtype == np.int32
        np.testing.assert_array_equal(frames, sampler.batch(step)[0])  # tf and numpy paths agree
        for frame, label, pid, seg, start in zip(frames, labels, *sampler.locate(step)):
            signal, beats, rhythms = originals[pid]
            close(frame[:, 0], normalised(signal[seg, start:start + FRAME]))
            assert label == rule(beats[seg], rhythms[seg], start, start + FRAME)


def _any_pvc(positions, classes, start, end):
    """A toy rule: 1 when a complete beat of the frame is a pvc (class 4)."""
    return int(np.any(classes[complete_beats(positions, start, end)] == 4))


def _any_pvc_batch(flat, frame_id, counts, start, end):
    return np.bincount(frame_id[(flat & CLASS_MASK) == 4], minlength=len(counts)).clip(0, 1).astype(np.int32)


def test_a_new_labelled_task_is_one_object_and_the_samplers_need_no_change(raw_and_store):
    """Adding a task: a rule (both forms) and a task object; both samplers and the dataset take it as it is."""
    originals, store = raw_and_store
    rule = LabelRule("pvc", BEATS, ("no pvc", "pvc"), _any_pvc, _any_pvc_batch)
    task = Task(name="pvc", layout=labelled(rule), description="a complete pvc in the frame")
    sampler = BatchSampler(store, task, PIDS, FRAME, batch_size=256, seed=1)
    frames, labels = sampler.batch(0)
    assert set(labels.tolist()) == {0, 1}
    for label, pid, seg, start in zip(labels, *sampler.locate(0)):
        assert label == _any_pvc(*originals[pid][1][seg], start, start + FRAME)
    (ds_frames, ds_labels), = make_dataset(store, task, PIDS, FRAME, 256, seed=1, steps=1).as_numpy_iterator()
    np.testing.assert_array_equal(ds_labels, labels)
    assert task.build_model("resnet18", FRAME, width=0.125).output_shape == (None, 2)


def test_vectorised_labels_cover_all_classes(raw_and_store):
    _, store = raw_and_store
    seen = {task: set() for task in ("beat", "rhythm", "hr")}
    for task in seen:
        sampler = BatchSampler(store, get_task(task), PIDS, 256, batch_size=256, seed=1)
        for step in range(4):
            seen[task].update(sampler.batch(step)[1].tolist())
    assert seen["beat"] >= {0, 1, 2, 4} and len(seen["rhythm"]) >= 4 and seen["hr"] >= {0, 2, 3}


def test_future_groups(raw_and_store):
    originals, store = raw_and_store
    k, c = 4, 8
    future = replace(get_task("future"), layout=future_prediction(context_frames=c, num_negatives=k))
    sampler = BatchSampler(store, future, PIDS, 32, batch_size=8, seed=0)
    (x, labels), = make_dataset(store, future, PIDS, 32, batch_size=8, seed=0, steps=1).as_numpy_iterator()
    assert x["context"].shape == (8, c, 32, 1) and x["candidates"].shape == (8, k + 1, 32, 1)
    assert labels.dtype == np.int32 and set(labels.tolist()) <= set(range(k + 1))
    windows = {pid: [np.lib.stride_tricks.sliding_window_view(normalised(seg), 32) for seg in sig]
               for pid, (sig, _, _) in originals.items()}
    for context, candidates, label, pid, seg, start in zip(x["context"], x["candidates"], labels,
                                                            *sampler.locate(0)):
        signal = normalised(originals[pid][0][seg])
        close(context[..., 0].reshape(-1), signal[start:start + c * 32])
        close(candidates[label, :, 0], signal[start + c * 32:start + (c + 1) * 32])
        for j in set(range(k + 1)) - {int(label)}:  # negatives: a frame of another patient
            owners = {other for other, segs in windows.items()
                      if any(np.abs(w - candidates[j, :, 0]).max(axis=1).min() < 1e-5 for w in segs)}
            assert owners and pid not in owners


def test_deterministic_per_seed_epoch_rank(raw_and_store):
    _, store = raw_and_store

    def first(**kw):
        opts = dict(seed=7, epoch=0, rank=0, world_size=2)
        opts.update(kw)
        frames, labels = next(make_dataset(store, get_task("beat"), PIDS, FRAME, 16, steps=2, **opts).as_numpy_iterator())
        return frames
    base = first()
    np.testing.assert_array_equal(base, first())
    resumed = next(make_dataset(store, get_task("beat"), PIDS, FRAME, 16, seed=7, rank=0, world_size=2, steps=2,
                                start_step=1).as_numpy_iterator())[0]
    full = list(make_dataset(store, get_task("beat"), PIDS, FRAME, 16, seed=7, rank=0, world_size=2,
                             steps=2).as_numpy_iterator())
    np.testing.assert_array_equal(resumed, full[1][0])
    lanes = list(make_dataset(store, get_task("beat"), PIDS, FRAME, 16, seed=7, rank=0, world_size=2, steps=5,
                              parallel_batches=3).as_numpy_iterator())
    one = list(make_dataset(store, get_task("beat"), PIDS, FRAME, 16, seed=7, rank=0, world_size=2, steps=5,
                            parallel_batches=1).as_numpy_iterator())
    assert len(lanes) == 5 and all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
                                   for a, b in zip(lanes, one))  # the lanes keep the step order
    for other in (first(epoch=1), first(rank=1), first(seed=8)):
        assert not np.array_equal(base, other)
    a = BatchSampler(store, get_task("beat"), PIDS, FRAME, 16, seed=7, rank=0, world_size=2).locate(0)
    b = BatchSampler(store, get_task("beat"), PIDS, FRAME, 16, seed=7, rank=1, world_size=2).locate(0)
    assert not all(np.array_equal(x, y) for x, y in zip(a, b))


def test_sampling_uniform_over_patients_segments_and_starts(raw_and_store):
    _, store = raw_and_store
    sampler = BatchSampler(store, get_task("beat"), PIDS, FRAME, batch_size=3000, seed=11)
    pid, seg, start = sampler.locate(0)
    counts = np.array([(pid == p).sum() for p in PIDS])
    assert np.all(np.abs(counts - 1000) < 150)  # patients uniform, not weighted by their segment counts
    assert set(seg[pid == 9].tolist()) == {0, 1, 2, 3}
    assert start.min() >= 0 and start.max() < SEG - FRAME and abs(np.median(start) - (SEG - FRAME) / 2) < 200


def test_bad_options_and_short_segments(raw_and_store):
    _, store = raw_and_store
    with pytest.raises(ConfigError):
        get_task("nope")
    with pytest.raises(ConfigError):
        BatchSampler(store, get_task("beat"), PIDS, FRAME, 8, seed=0, rank=2, world_size=2)
    with pytest.raises(DataError, match="too short"):
        BatchSampler(store, get_task("future"), PIDS, 400, 8, seed=0)
    with pytest.raises(DataError, match="not in the store"):
        BatchSampler(store, get_task("beat"), [1], FRAME, 8, seed=0)


def test_vectorised_labels_on_frames_that_start_and_end_on_labels(tmp_path):
    """Labels every 8 samples (with duplicates) and 64-sample frames: starts and ends often hit a label exactly."""
    rng = np.random.default_rng(5)
    signal = np.zeros((2, 2000), np.float32)
    beats, rhythms = [], []
    for _ in range(2):
        pos = np.sort(np.concatenate([np.arange(0, 2000, 8), rng.choice(np.arange(0, 2000, 8), 30)]))
        beats.append((pos, rng.integers(0, 5, pos.size)))
        rpos = np.sort(rng.choice(np.arange(0, 2000, 8), 60))
        rhythms.append((rpos, rng.integers(0, 6, rpos.size)))
    ic.write_patient(tmp_path / "raw", 0, signal, beats, rhythms)
    convert(tmp_path / "raw", tmp_path / "store", show_progress=False)
    patient = ic.load_patient(tmp_path / "raw", 0)
    for task, rule in (("beat", lambda s, t: beat_label(*patient.beats[s], t, t + 64)),
                       ("rhythm", lambda s, t: rhythm_label(*patient.rhythms[s], t, t + 64)),
                       ("hr", lambda s, t: hr_label(*patient.beats[s], t, t + 64, fs=ic.FS))):
        sampler = BatchSampler(tmp_path / "store", get_task(task), [0], 64, batch_size=500, seed=0)
        _, labels = sampler.batch(0)
        _, segments, starts = sampler.locate(0)
        assert (starts % 8 == 0).sum() > 30
        assert labels.tolist() == [rule(s, t) for s, t in zip(segments, starts)]


def test_process_exits_with_a_live_iterator(raw_and_store):
    """TensorFlow can deadlock at interpreter exit while a tf.data thread waits to run Python; ours must not."""
    _, store = raw_and_store
    code = ("import sys\nfrom ecg_hpc.data.pipeline import make_dataset\nfrom ecg_hpc.tasks import get_task\n"
            f"it = iter(make_dataset({str(store.path)!r}, get_task('beat'), {list(PIDS)}, {FRAME}, 32, seed=0))\n"
            "next(it); next(it)\nprint('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
