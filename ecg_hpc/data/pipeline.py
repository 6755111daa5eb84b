"""``tf.data`` input pipelines for Icentia11k pretraining, built from the shard store (``ecg_hpc.data.store``).

Call::

    make_dataset(store, task, patient_ids, frame_size, batch_size, seed, epoch=0, rank=0, world_size=1,
                 steps=None, parallel_batches=1, prefetch=2, start_step=0, pool=None) -> tf.data.Dataset

``store`` is a ``Store`` or its path; ``task`` a pretraining task (``ecg_hpc.tasks.get_task``; the samplers read
only its name and batch layout, ``ecg_hpc.data.layout``). For a labelled task (beat, rhythm, hr) each element
is ``(frames float32 (B, frame_size, 1), labels int32 (B,))``; for future prediction it is
``({"context": (B, C, frame_size, 1), "candidates": (B, K + 1, frame_size, 1)}, labels int32 (B,))`` (C context
frames and K negatives, from the layout)
where the label is the index of the true next frame among the candidates and the other candidates are frames from
random segments of other patients. Frames are normalised ``(x - MEAN) / STD``. ``steps=None`` gives an endless
dataset, else exactly ``steps`` batches.

Sampling: each frame draws a patient uniformly among ``patient_ids``, a segment uniformly within it and a start
uniformly in ``[0, segment_len - span)``; labels follow the task's rule (``ecg_hpc.data.labels``, frame ``[start,
start + frame_size]``; for ``hr`` the window centred on the frame, which is the same interval). Batch ``i`` is a pure
function of ``(seed, epoch, rank, i)``, so an epoch's order is reproducible and each Horovod rank (``rank`` of
``world_size``) draws its own independent stream.

With ``pool=PoolOptions(...)`` the frames come from ``ecg_hpc.data.pool.PoolSampler`` instead: the same element
layout and label rules, drawn from an in-memory pool of whole segments that each rank reads sequentially from a
disjoint share of the patients (for stores larger than the page cache; what pretraining uses by default).

The same batches in numpy: ``BatchSampler(...).batch(step)``; ``BatchSampler(...).locate(step)`` says which
patient, segment and start each frame of batch ``step`` came from.

Speed: a batch is built whole in numpy (``BatchSampler.raw_batch``): per frame one copy of the stored int16
values from the memory-mapped store and one ``searchsorted`` in the packed label arrays, then the task's label rule
vectorised over the batch (counts via ``bincount``). The cast and normalisation run as tf ops in tf.data's threads,
outside the Python GIL, overlapping the next batch. ``parallel_batches`` generator lanes build batches at once
(lane r builds steps r, r + lanes, ...; a deterministic round-robin keeps the step order); more than one lane
only helps when spare cores exist, since the per-frame Python work holds the GIL. Generators rather than
``numpy_function`` because, with an exit hook that stops the lanes (one per dataset, ``_Lanes``), a process that
exits with a live iterator does not hang in TensorFlow's teardown.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import time
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from ecg_hpc.data import icentia11k as ic
from ecg_hpc.data.batches import OFFSET, check_sampler_arguments, future_batch, label_keys, normalised_batch
from ecg_hpc.data.layout import SamplingTask
from ecg_hpc.data.store import RHYTHMS, Store, StorePatient
from ecg_hpc.errors import DataError

if TYPE_CHECKING:
    from ecg_hpc.data.pool import PoolOptions


class _Lanes:
    """The generator lanes of one dataset: counts those building a batch, and stops them at interpreter exit.

    A tf.data iterator still alive at exit is destroyed during finalisation while holding the GIL; a tf.data
    thread waiting to run a Python generator then deadlocks it (the process hangs instead of exiting). ``stop``,
    registered with ``atexit`` for each dataset, ends the lanes and lets their threads leave Python first.
    """

    def __init__(self) -> None:
        self.exiting = threading.Event()
        self._lock = threading.Lock()
        self._busy = 0  # lanes building a batch now
        self._alive = 0  # lanes started and not finished

    @contextlib.contextmanager
    def _counted(self, counter: str) -> Iterator[None]:
        """Count the block in ``counter`` while it runs."""
        with self._lock:
            setattr(self, counter, getattr(self, counter) + 1)
        try:
            yield
        finally:
            with self._lock:
                setattr(self, counter, getattr(self, counter) - 1)

    def alive(self) -> contextlib.AbstractContextManager[None]:
        """Around a lane generator's life."""
        return self._counted("_alive")

    def busy(self) -> contextlib.AbstractContextManager[None]:
        """Around the building of one batch."""
        return self._counted("_busy")

    def stop(self, timeout: float = 5.0, grace: float = 0.2) -> None:
        """End the lanes: wait for batches being built, then ``grace`` seconds for threads to leave Python."""
        self.exiting.set()
        if not self._alive:
            return
        deadline = time.monotonic() + timeout
        while self._busy and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(grace)


class BatchSampler:
    """Builds whole batches of one task as numpy arrays; ``batch(step)`` depends only on (seed, epoch, rank, step)."""

    def __init__(self, store: Store | str | os.PathLike[str], task: SamplingTask, patient_ids: Sequence[int],
                 frame_size: int, batch_size: int, seed: int, epoch: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        check_sampler_arguments(frame_size, batch_size, rank, world_size, len(patient_ids))
        self.store = store if isinstance(store, Store) else Store(store)
        self.task, self.layout = task, task.layout
        self.frame_size, self.batch_size = int(frame_size), int(batch_size)
        self.seed, self.epoch, self.rank = int(seed), int(epoch), int(rank)
        self.num_negatives, self.context_frames = self.layout.num_negatives, self.layout.context_frames
        self.patients: list[StorePatient] = [self.store.patient(int(pid)) for pid in patient_ids]
        self.n_segments = np.array([p.signal.shape[0] for p in self.patients], np.int64)
        self.segment_len = np.array([p.signal.shape[1] for p in self.patients], np.int64)
        self.multiplier = np.array([np.float32(p.scale / ic.STD) for p in self.patients], np.float32)
        self._offsets = np.zeros((2, len(self.patients), int(self.n_segments.max()) + 1), np.int64)
        for i, p in enumerate(self.patients):  # [kind, patient, segment]: where the segment's labels begin
            self._offsets[:, i, :p.offsets.shape[1]] = p.offsets
        self._signals = [p.signal for p in self.patients]
        self._beats = [p.beats for p in self.patients]
        self._rhythms = [p.rhythms for p in self.patients]
        self._key_dtype = np.result_type(*(p.beats.dtype for p in self.patients))
        self.value_dtype = np.int16 if all(p.signal.dtype == np.int16 for p in self.patients) else np.float32
        span = self._span = self.frame_size * self.layout.span_frames
        short = self.segment_len <= span
        if short.any():
            raise DataError(f"{self.store.path}: patient {self.patients[int(np.argmax(short))].patient_id} has "
                            f"segments of {self.segment_len[short][0]} samples, too short for {task.name} frames "
                            f"spanning {span}")

    def rng(self, step: int) -> np.random.Generator:
        """The generator of batch ``step`` (seeded by seed, epoch, rank and step)."""
        return np.random.default_rng([self.seed, self.epoch, self.rank, int(step)])

    def locate(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Patient ids, segments and starts of the frames of batch ``step`` (for ``future``: of the context)."""
        patient, segment, start = self._draw(self.rng(step), self.batch_size, self._span)
        return np.asarray([p.patient_id for p in self.patients])[patient], segment, start

    def raw_batch(self, step: int) -> tuple[np.ndarray, ...]:
        """Batch ``step`` before normalisation: ``(values (B, F), multiplier (B,), labels)``, or for ``future``
        ``(context values (B, C*F), candidate values (B, K+1, F), context multiplier (B,), candidate multiplier
        (B, K+1), labels)``. Values are the stored int16 (float32 if a patient is stored as float32) and
        ``values * multiplier - MEAN / STD`` are the normalised frames."""
        rng = self.rng(step)
        rule = self.layout.rule
        if rule is None:
            return self._future_batch(rng)
        patient, segment, start = self._draw(rng, self.batch_size, self._span)
        values = np.empty((self.batch_size, self.frame_size), self.value_dtype)
        chunks = self._gather(patient, segment, start, values, rule.kind)
        return values, self.multiplier[patient], rule.batch(chunks, start, start + self.frame_size)

    def batch(self, step: int) -> tuple[np.ndarray, ...]:
        """Batch ``step`` as the dataset yields it, in numpy: ``(frames (B, F, 1), labels)``, or for ``future``
        ``(context (B, C, F, 1), candidates (B, K+1, F, 1), labels)``; frames normalised float32."""
        return normalised_batch(self.layout, self.raw_batch(step))

    def _draw(self, rng: np.random.Generator, n: int, span: int,
              exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Patient (uniform; other than ``exclude`` when possible), segment and start of ``n`` frames."""
        n_patients = len(self.patients)
        if exclude is not None and n_patients > 1:
            patient = rng.integers(0, n_patients - 1, n)
            patient += patient >= exclude
        else:
            patient = rng.integers(0, n_patients, n)
        segment = rng.integers(0, self.n_segments[patient])
        start = rng.integers(0, self.segment_len[patient] - span)
        return patient, segment, start

    def _gather(self, patient: np.ndarray, segment: np.ndarray, start: np.ndarray, out: np.ndarray,
                kind: int | None) -> list[np.ndarray]:
        """Copy raw frames of ``out.shape[1]`` samples into ``out``; return each frame's packed labels that matter.

        For ``BEATS`` these are the complete beats of ``[start, start + frame]`` (of the beats inside, all but the
        first); for ``RHYTHMS`` the episode ends after ``start`` up to the first at or after the frame end; for
        None (future prediction) there are none.
        """
        frame, chunks, signals = out.shape[1], [], self._signals
        if kind is None:
            for i, (p, s, t) in enumerate(zip(patient.tolist(), segment.tolist(), start.tolist())):
                out[i] = signals[p][s, t:t + frame]
            return chunks
        keys, skip = label_keys(kind == RHYTHMS, start, frame, self._key_dtype)
        packed = self._rhythms if kind == RHYTHMS else self._beats
        firsts, lasts = self._offsets[kind, patient, segment], self._offsets[kind, patient, segment + 1]
        append = chunks.append
        for i, (p, s, t, first, last, key) in enumerate(zip(patient.tolist(), segment.tolist(), start.tolist(),
                                                            firsts.tolist(), lasts.tolist(), keys)):
            out[i] = signals[p][s, t:t + frame]
            labels = packed[p][first:last]
            lo, hi = labels.searchsorted(key)
            append(labels[lo + skip:hi + 1 - skip])
        return chunks

    def _future_batch(self, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        b, f, c, k = self.batch_size, self.frame_size, self.context_frames, self.num_negatives
        patient, segment, start = self._draw(rng, b, self._span)
        window = np.empty((b, f * (c + 1)), self.value_dtype)
        self._gather(patient, segment, start, window, None)
        neg_patient, neg_segment, neg_start = self._draw(rng, b * k, f, exclude=np.repeat(patient, k))
        negatives = np.empty((b * k, f), self.value_dtype)
        self._gather(neg_patient, neg_segment, neg_start, negatives, None)
        return future_batch(rng, window, negatives, self.multiplier[patient], self.multiplier[neg_patient], c)


def make_dataset(store: Store | str | os.PathLike[str], task: SamplingTask, patient_ids: Sequence[int],
                 frame_size: int, batch_size: int, seed: int, epoch: int = 0, rank: int = 0, world_size: int = 1,
                 steps: int | None = None, parallel_batches: int = 1, prefetch: int = 2, start_step: int = 0,
                 pool: "PoolOptions | None" = None):
    """A batched, prefetched ``tf.data.Dataset`` for ``task`` (see the module docstring for the element layout).

    ``start_step`` > 0 resumes mid-epoch: batches ``start_step .. steps - 1`` without building the earlier ones.
    ``pool``: draw from an in-memory pool refilled by sequential reads (``ecg_hpc.data.pool``, one lane) instead
    of uniformly from the memory-mapped store.
    """
    import tensorflow as tf

    lanes_of = _Lanes()
    atexit.register(lanes_of.stop)
    if pool is None:
        sampler = BatchSampler(store, task, patient_ids, frame_size, batch_size, seed, epoch, rank, world_size)
        lanes = max(1, int(parallel_batches))
    else:
        from ecg_hpc.data.pool import PoolSampler  # the pool module builds on this one

        def fresh_pool() -> PoolSampler:
            return PoolSampler(store, task, patient_ids, frame_size, batch_size, seed, epoch, rank, world_size,
                               options=pool, start_step=start_step)

        sampler = fresh_pool()  # starts filling now; a second pass over the dataset builds another
        unused = [sampler]
        lanes = 1  # the pool moves forward step by step
    b, f = sampler.batch_size, sampler.frame_size
    values = tf.as_dtype(sampler.value_dtype)
    if task.layout.future:
        signature = (tf.TensorSpec((b, sampler.context_frames * f), values),
                     tf.TensorSpec((b, sampler.num_negatives + 1, f), values), tf.TensorSpec((b,), tf.float32),
                     tf.TensorSpec((b, sampler.num_negatives + 1), tf.float32), tf.TensorSpec((b,), tf.int32))

        def finish(context, candidates, m_context, m_candidates, labels):
            context = tf.reshape(_tf_normalise(tf, context, m_context), (b, sampler.context_frames, f, 1))
            return {"context": context, "candidates": _tf_normalise(tf, candidates, m_candidates)[..., None]}, labels
    else:
        signature = (tf.TensorSpec((b, f), values), tf.TensorSpec((b,), tf.float32), tf.TensorSpec((b,), tf.int32))

        def finish(values, multiplier, labels):
            return _tf_normalise(tf, values, multiplier)[..., None], labels

    def lane(index):
        """Raw batches ``start_step + index``, ``+ lanes``, ... until ``steps`` or interpreter exit."""
        step = start_step + int(index)
        source = sampler if pool is None else unused.pop() if unused else fresh_pool()
        with lanes_of.alive():
            try:
                while (steps is None or step < steps) and not lanes_of.exiting.is_set():
                    with lanes_of.busy():
                        batch = source.raw_batch(step)
                    yield batch
                    step += lanes
            finally:
                if pool is not None:
                    source.close()

    def lane_dataset(index):
        return tf.data.Dataset.from_generator(lane, output_signature=signature, args=(index,))

    # round-robin over the lanes keeps the step order while ``lanes`` batches are built at once; the
    # normalisation runs in tf.data's threads, outside the Python GIL
    ds = tf.data.Dataset.range(lanes).interleave(lane_dataset, cycle_length=lanes, block_length=1,
                                                 num_parallel_calls=lanes, deterministic=True)
    return ds.map(finish, num_parallel_calls=max(2, lanes), deterministic=True).prefetch(prefetch)


def _tf_normalise(tf, values, multiplier):
    """The tf twin of ``normalise``."""
    return tf.cast(values, tf.float32) * tf.expand_dims(multiplier, -1) - OFFSET
