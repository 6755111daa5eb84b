"""Pool sampler: pretraining frames drawn from an in-memory pool of whole segments, refilled by sequential reads.

Why: the uniform sampler (``pipeline.BatchSampler``) touches a random patient, segment and offset of a memory map
per frame. When the store is far larger than the page cache (1.1 TB on a parallel file system), every frame is a
page fault with kernel readahead that is evicted before use. Here each Horovod rank instead reads whole segments
(or chunks of ``chunk_samples``) with one ``preadv`` each (``store.SegmentReader``) into a pool and draws the
frames of a batch among all frame starts in the pool, each weighted ``1 / (segments x starts per segment)`` of
its patient, so that patients and segments weigh as under the uniform sampler.

Data order, a pure function of ``(seed, epoch, rank, step)``:

- patients: a permutation seeded by ``(seed, epoch)`` dealt round-robin, so ranks hold disjoint shares;
- chunks: every ``(patient, segment, chunk)`` of the rank's share, shuffled per pass by ``(seed, epoch, rank,
  pass)``; chunk ``c`` of this endless sequence is loaded into pool slot ``c % slots``;
- at step ``i`` the pool holds chunks ``[n(i) - slots, n(i))`` with ``n(i) = slots + floor(i * loads_per_step)``,
  where ``loads_per_step`` reads ``read_ratio`` times the samples a step draws (a whole share that fits in the
  pool is loaded once and never refilled);
- the frames of step ``i`` are drawn with a generator seeded by ``(seed, epoch, rank, i)``.

So the sampler state is the step (saved in every checkpoint): a run resumed at step ``i`` loads the chunks the
pool holds at ``i`` and then draws what an uninterrupted run would. Background threads read chunks in sequence
order into spare slots ahead of the step that needs them; their timing decides only when a read happens,
never what is drawn. ``memory_bytes`` (<= ``pool_mb``) bounds the signal memory; labels add a few percent.
"""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ecg_hpc.data import icentia11k as ic
from ecg_hpc.data.layout import SamplingTask
from ecg_hpc.data.batches import check_sampler_arguments, future_batch, label_keys, normalised_batch
from ecg_hpc.data.store import PATIENTS_DIR, RHYTHMS, SegmentReader, Store, patient_dir
from ecg_hpc.errors import ConfigError, DataError
from ecg_hpc.atomic import atomic_dir

DEFAULT_POOL_MB = 1024
DEFAULT_READ_RATIO = 1.0
DEFAULT_READERS = 2  # reads in flight at once: hides per-request latency (parallel file systems, SSD queues)
_NEGATIVE_TRIES = 32  # redraws of a future-task negative that came from the positive's patient
_TAG = 0x9001  # keeps the pool's random streams apart from the uniform sampler's
_SLOT_SHIFT = 32  # label keys of the pool: logical slot << 32 | packed label (packed labels are int32 >= 0)
_PAD = (1 << 32) - 1  # fills a slot's row of label keys after its labels (above every packed label)


@dataclass(frozen=True)
class PoolOptions:
    """Pool size (MiB of signal held, spares included), chunk length (None: whole segments), samples read per
    sample drawn and reader threads."""

    pool_mb: float = DEFAULT_POOL_MB
    chunk_samples: int | None = None
    read_ratio: float = DEFAULT_READ_RATIO
    readers: int = DEFAULT_READERS

    def check(self) -> None:
        """ConfigError naming the first option out of range."""
        if self.pool_mb <= 0:
            raise ConfigError(f"--pool-mb {self.pool_mb}: must be positive")
        if self.chunk_samples is not None and self.chunk_samples < 1:
            raise ConfigError(f"--chunk-samples {self.chunk_samples}: must be positive")
        if self.read_ratio <= 0:
            raise ConfigError(f"--read-ratio {self.read_ratio}: must be positive")
        if self.readers < 1:
            raise ConfigError(f"--pool-readers {self.readers}: must be at least 1")

    def record(self) -> dict[str, Any]:
        """The options and the memory bound, as run.json records them."""
        return dict(asdict(self), sampler="pool", memory_bound_bytes=int(self.pool_mb * 2 ** 20))


def patient_share(patient_ids: Sequence[int], seed: int, epoch: int, rank: int, world_size: int) -> list[int]:
    """Rank ``rank``'s share of ``patient_ids`` in ``epoch``: a ``(seed, epoch)`` permutation dealt round-robin,
    so the shares of the ranks are disjoint and cover every patient."""
    ids = np.unique(np.asarray(patient_ids, np.int64))
    if ids.size < world_size:
        raise ConfigError(f"{ids.size} patients cannot be shared among {world_size} workers; select more patients "
                          f"(--frac) or use --sampler uniform")
    order = np.random.default_rng([seed, epoch, _TAG]).permutation(ids)
    return sorted(int(p) for p in order[rank::world_size])


class ChunkPlan:
    """A rank's chunks of one epoch: ``(patient, segment, first start, number of starts)``, in read order."""

    def __init__(self, metas: dict[int, dict[str, Any]], span: int, chunk_samples: int | None,
                 seed: tuple[int, ...]) -> None:
        rows, weights = [], []
        for pid in sorted(metas):
            n_segments, segment_len = int(metas[pid]["n_segments"]), int(metas[pid]["segment_len"])
            starts = segment_len - span
            step = starts if chunk_samples is None else min(int(chunk_samples), starts)
            for segment in range(n_segments):
                for first in range(0, starts, step):
                    rows.append((pid, segment, first, min(step, starts - first)))
                    weights.append(1.0 / (n_segments * starts))
        self.rows = np.asarray(rows, np.int64).reshape(-1, 4)
        self.weights = np.asarray(weights, np.float64)  # per start: patients, then segments equally likely
        self.seed = seed
        self._order: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def index(self, c: int) -> int:
        """Row of chunk ``c`` of the endless sequence (pass ``c // len``, each pass a fresh seeded shuffle)."""
        n_pass, position = divmod(int(c), len(self.rows))
        if self._order is None or self._order[0] != n_pass:
            self._order = (n_pass, np.random.default_rng([*self.seed, n_pass]).permutation(len(self.rows)))
        return int(self._order[1][position])


class PoolSampler:
    """Batches of one task drawn from a pool of chunks; ``raw_batch(step)`` for increasing steps, ``close()``.

    Batches have the layout of ``pipeline.BatchSampler.raw_batch``; they depend only on (seed, epoch, rank, step)
    and the options. Steps must be asked for in increasing order (the pool only moves forward)."""

    def __init__(self, store: Store | str | Path, task: SamplingTask, patient_ids: Sequence[int], frame_size: int,
                 batch_size: int, seed: int, epoch: int = 0, rank: int = 0, world_size: int = 1,
                 options: PoolOptions = PoolOptions(), start_step: int = 0) -> None:
        check_sampler_arguments(frame_size, batch_size, rank, world_size, len(patient_ids))
        options.check()
        self.store = store if isinstance(store, Store) else Store(store)
        self.task, self.layout = task, task.layout
        self.frame_size, self.batch_size = int(frame_size), int(batch_size)
        self.seed, self.epoch, self.rank = int(seed), int(epoch), int(rank)
        self.num_negatives, self.context_frames = self.layout.num_negatives, self.layout.context_frames
        self.options = options
        self.share = patient_share(patient_ids, self.seed, self.epoch, self.rank, world_size)
        metas = self.store.metas(self.share)
        span = self._span = self.frame_size * self.layout.span_frames
        for pid, meta in metas.items():
            if int(meta["segment_len"]) <= span:
                raise DataError(f"{self.store.path}: patient {pid} has segments of {meta['segment_len']} samples, "
                                f"too short for {task.name} frames spanning {span}")
        self.value_dtype = (np.int16 if all(m["signal_dtype"] == "int16" for m in metas.values())
                            else np.float32)
        self.plan = ChunkPlan(metas, span, options.chunk_samples, (self.seed, self.epoch, self.rank, _TAG))
        self._kind = None if self.layout.rule is None else self.layout.rule.kind  # the packed labels a chunk carries
        self._layout_slots(metas, span, options)
        self._step = int(start_step)
        self._installed = self._next = self._loaded_by(self._step) - self.slots  # next to install, to claim
        self._cond = threading.Condition()
        self._ready: dict[int, tuple[int, int, float, np.ndarray | None]] = {}
        self._free = list(range(self.slots + self.spares))
        self._error: BaseException | None = None
        self._stop = False
        self.wait_s = 0.0  # time the consumer waited for a read (0 when the refill keeps ahead)
        self._threads = [threading.Thread(target=self._load_loop, args=(SegmentReader(self.store, metas),),
                                          daemon=True, name=f"pool-refill-r{rank}-{i}")
                         for i in range(options.readers)]
        for thread in self._threads:
            thread.start()

    # -- layout and schedule ------------------------------------------------------------------------------------
    def _layout_slots(self, metas: dict[int, dict[str, Any]], span: int, options: PoolOptions) -> None:
        """Size the slots and the refill rate; allocate the pool (slots in use + spares read ahead)."""
        starts = self.plan.rows[:, 3]
        self.slot_len = int(starts.max()) + span
        itemsize = np.dtype(self.value_dtype).itemsize
        drawn = self.batch_size * self.frame_size * (
            self.layout.span_frames + self.num_negatives)
        self.loads_per_step = options.read_ratio * drawn / float(starts.mean())
        budget = int(options.pool_mb * 2 ** 20) // (self.slot_len * itemsize)
        if len(self.plan) <= budget:  # the whole share fits: load it once
            self.slots, self.spares, self.loads_per_step = len(self.plan), 0, 0.0
        else:
            self.spares = 2 * int(np.ceil(self.loads_per_step)) + 1
            self.slots = budget - self.spares
            if self.slots < 1:
                need = (self.spares + 1) * self.slot_len * itemsize / 2 ** 20
                raise ConfigError(f"--pool-mb {options.pool_mb}: too small for chunks of {self.slot_len} samples "
                                  f"read {self.loads_per_step:.1f} per step; give at least {need:.0f}")
        self.memory_bytes = (self.slots + self.spares) * self.slot_len * itemsize
        self._pool = np.empty((self.slots + self.spares, self.slot_len), self.value_dtype)
        self._phys = np.zeros(self.slots, np.int64)  # logical slot -> row of ``_pool``
        self._chunk = np.zeros((self.slots, 4), np.int64)  # logical slot -> (patient, segment, first, n_starts)
        self._mult = np.zeros(self.slots, np.float32)
        self._occupied = np.zeros(self.slots, bool)
        # labels of all slots as one sorted int64 array (row = logical slot), so a batch finds its frames' labels
        # with one vectorised searchsorted; rows grow when a segment has more labels than they hold
        self._label_keys = self._empty_label_rows(np.arange(self.slots), 1024)
        self._n_labels = np.zeros(self.slots, np.int64)
        self._weight = np.zeros(self.slots, np.float64)  # chance of a slot: its starts x their weight
        self._cum = np.zeros(self.slots, np.float64)

    @staticmethod
    def _empty_label_rows(slots: np.ndarray, width: int) -> np.ndarray:
        return np.repeat((slots.astype(np.int64) << _SLOT_SHIFT | _PAD)[:, None], width, axis=1)

    def _set_labels(self, slot: int, packed: np.ndarray) -> None:
        """Put one chunk's packed labels into row ``slot`` of the label keys (growing all rows if needed)."""
        width = self._label_keys.shape[1]
        if packed.size > width:
            grown = self._empty_label_rows(np.arange(self.slots), max(packed.size, 2 * width))
            grown[:, :width] = self._label_keys
            self._label_keys, width = grown, grown.shape[1]
        row = self._label_keys[slot]
        row[:packed.size] = np.int64(slot) << _SLOT_SHIFT | packed
        row[packed.size:] = np.int64(slot) << _SLOT_SHIFT | _PAD
        self._n_labels[slot] = packed.size

    def _loaded_by(self, step: int) -> int:
        """How many chunks of the sequence have entered the pool when step ``step`` is drawn."""
        return self.slots + int(np.floor(step * self.loads_per_step))

    def describe(self) -> dict[str, Any]:
        """Options, pool geometry and memory, for run records and benchmarks."""
        return dict(self.options.record(), slots=self.slots, spare_slots=self.spares, slot_samples=self.slot_len,
                    loads_per_step=round(self.loads_per_step, 3), memory_bytes=self.memory_bytes,
                    share_patients=len(self.share), share_chunks=len(self.plan))

    # -- background refill ----------------------------------------------------------------------------------------
    def _load_loop(self, reader: SegmentReader) -> None:
        """Claim the next chunk of the sequence together with a free row, read it, hand it over; repeat.

        Claims go in sequence order and take their row at once, so the chunk the consumer waits for always has
        its row (several readers keep several reads in flight without deadlock)."""
        try:
            while True:
                with self._cond:
                    while not self._free and not self._stop:
                        self._cond.wait()
                    if self._stop:
                        return
                    row, c = self._free.pop(), self._next
                    self._next += 1
                    index = self.plan.index(c)
                pid, segment, first, n_starts = self.plan.rows[index].tolist()
                layout = reader.layout(pid)
                length = min(n_starts + self._span, layout.segment_len - first)
                target = self._pool[row, :length]
                if layout.dtype == target.dtype:
                    reader.read_signal(pid, segment, first, target)
                else:  # a store mixing int16 and float32 patients: read in the patient's dtype, then widen
                    widened = np.empty(length, layout.dtype)
                    reader.read_signal(pid, segment, first, widened)
                    target[:] = widened
                labels = None if self._kind is None else reader.read_labels(pid, self._kind, segment)
                multiplier = np.float32(layout.scale / ic.STD)
                with self._cond:
                    self._ready[c] = (row, index, multiplier, labels)
                    self._cond.notify_all()
        except BaseException as exc:  # handed to the consumer, which raises it
            with self._cond:
                self._error = exc
                self._cond.notify_all()
        finally:
            reader.close()

    def _advance(self, step: int) -> None:
        """Install every chunk that has entered the pool by ``step`` (waiting for reads still under way)."""
        if step < self._step:
            raise ValueError(f"pool sampler is at step {self._step}; step {step} lies behind it")
        self._step, target, changed = step, self._loaded_by(step), False
        while self._installed < target:
            c = self._installed
            with self._cond:
                began = time.perf_counter()
                while c not in self._ready and self._error is None:
                    self._cond.wait()
                self.wait_s += time.perf_counter() - began
                if self._error is not None:
                    raise self._error
                row, index, multiplier, labels = self._ready.pop(c)
            slot = c % self.slots
            if self._occupied[slot]:
                with self._cond:
                    self._free.append(int(self._phys[slot]))
                    self._cond.notify_all()
            self._phys[slot], self._mult[slot] = row, multiplier
            if labels is not None:
                self._set_labels(slot, labels)
            self._chunk[slot] = self.plan.rows[index]
            self._weight[slot] = self.plan.weights[index] * self.plan.rows[index, 3]
            self._occupied[slot] = True
            self._installed, changed = c + 1, True
        if changed:
            self._cum = np.cumsum(self._weight)

    def close(self) -> None:
        """Stop the refill threads (each closes its store files)."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()

    # -- drawing ----------------------------------------------------------------------------------------------------
    def _rng(self, step: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, self.rank, int(step), _TAG])

    def _draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Logical slots and offsets into them of ``n`` frame starts.

        A start's chance is ``1 / (n_segments * starts per segment)`` of its patient, as under the uniform sampler
        (patient, then segment, then start uniform); since every chunk is resident equally often over a pass, the
        frames' patient, segment and label mix is in expectation that of the uniform sampler."""
        slot = np.minimum(np.searchsorted(self._cum, rng.random(n) * self._cum[-1], side="right"), self.slots - 1)
        return slot, rng.integers(0, self._chunk[slot, 3])

    def locate(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Patient ids, segments and starts of the frames of batch ``step`` (for ``future``: of the context)."""
        self._advance(step)
        slot, offset = self._draw(self._rng(step), self.batch_size)
        return self._chunk[slot, 0], self._chunk[slot, 1], self._chunk[slot, 2] + offset

    def raw_batch(self, step: int) -> tuple[np.ndarray, ...]:
        """Batch ``step`` before normalisation, laid out as ``pipeline.BatchSampler.raw_batch``."""
        self._advance(step)
        rng = self._rng(step)
        rule = self.layout.rule
        if rule is None:
            return self._future_batch(rng)
        slot, offset = self._draw(rng, self.batch_size)
        start = self._chunk[slot, 2] + offset
        values = self._copy(slot, offset, self.frame_size)
        keys, skip = label_keys(self._kind == RHYTHMS, start, self.frame_size, np.int64)
        flat_keys = self._label_keys.reshape(-1)
        lo, hi = np.searchsorted(flat_keys, slot[:, None] << _SLOT_SHIFT | keys).T
        first = lo + skip  # as ``labels[lo + skip:hi + 1 - skip]`` within the slot's row
        stop = np.minimum(hi + 1 - skip, slot * self._label_keys.shape[1] + self._n_labels[slot])
        counts = np.maximum(stop - first, 0)
        ends = np.cumsum(counts)
        index = np.arange(ends[-1] if counts.size else 0) + np.repeat(first - (ends - counts), counts)
        flat = flat_keys[index] & _PAD
        frame_id = np.repeat(np.arange(self.batch_size), counts)
        return values, self._mult[slot], rule.vectorised(flat, frame_id, counts, start, start + self.frame_size)

    def batch(self, step: int) -> tuple[np.ndarray, ...]:
        """Batch ``step`` normalised, laid out as ``pipeline.BatchSampler.batch``."""
        return normalised_batch(self.layout, self.raw_batch(step))

    def _copy(self, slot: np.ndarray, offset: np.ndarray, length: int) -> np.ndarray:
        out = np.empty((slot.size, length), self.value_dtype)
        for i, (row, o) in enumerate(zip(self._phys[slot].tolist(), offset.tolist())):
            out[i] = self._pool[row, o:o + length]
        return out

    def _future_batch(self, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """Context + true next frame from one slot; negatives from slots of other patients where the pool has any."""
        b, f, c, k = self.batch_size, self.frame_size, self.context_frames, self.num_negatives
        slot, offset = self._draw(rng, b)
        window = self._copy(slot, offset, f * (c + 1))
        neg_slot, neg_offset = self._draw(rng, b * k)
        patient = np.repeat(self._chunk[slot, 0], k)
        if np.unique(self._chunk[:, 0]).size > 1:
            for _ in range(_NEGATIVE_TRIES):
                same = np.flatnonzero(self._chunk[neg_slot, 0] == patient)
                if not same.size:
                    break
                neg_slot[same], neg_offset[same] = self._draw(rng, same.size)
        negatives = self._copy(neg_slot, neg_offset, f)
        return future_batch(rng, window, negatives, self._mult[slot], self._mult[neg_slot], c)


def stage_patients(store: Store | str | Path, patient_ids: Sequence[int], dest: str | Path,
                   part: tuple[int, int] = (0, 1)) -> Store:
    """Copy patients ``patient_ids[part[0]::part[1]]`` of ``store`` to ``dest`` (node-local disk) unless present.

    Each patient appears by an atomic rename, so concurrent or interrupted stagings never leave half a patient;
    the local ranks of a node each pass their ``(local_rank, local_size)`` and meet at a barrier afterwards."""
    source = store if isinstance(store, Store) else Store(store)
    dest = Path(dest)
    (dest / PATIENTS_DIR).mkdir(parents=True, exist_ok=True)
    for pid in sorted(map(int, patient_ids))[part[0]::part[1]]:
        target = patient_dir(dest, pid)
        if target.is_dir():
            continue
        origin = patient_dir(source.path, pid)
        if not origin.is_dir():
            raise DataError(f"{origin}: patient {pid} is not in the store")
        with atomic_dir(target, prefix=f".stage-{pid:05d}-") as tmp:
            for entry in origin.iterdir():
                shutil.copyfile(entry, tmp / entry.name)
    return Store(dest)
