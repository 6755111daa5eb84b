#!/usr/bin/env python
"""Training throughput of ResNet-18 1-D fed by the shard-store pipeline vs fed from in-memory arrays.

Both feeds train the same compiled model in the same process, alternating over ``--rounds`` so that drift
(thermal, other load) hits both alike; each measurement times the steps between the end of the first and the
end of the last batch of a ``fit`` call (iterator start-up excluded). The in-memory feed holds batches drawn
once from the same pipeline, so only the cost of producing batches differs. Prints frames/s of both, the
ratio pipeline / in-memory (1.0 = the pipeline costs nothing), and what the pipeline delivers alone (its
headroom: a faster accelerator needs at most that many frames/s).

    python bench/train_step.py                        # a synthetic store in a temporary folder
    python bench/train_step.py --store STORE --frame-size 4096 --batch-size 512 --steps 50
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ecg_hpc.runtime import configure_runtime  # noqa: E402

configure_runtime()  # this script is an entry point: the runtime is set before TensorFlow is imported
import tensorflow as tf  # noqa: E402

from ecg_hpc.data.pipeline import make_dataset  # noqa: E402
from ecg_hpc.data.store import Store, write_patient  # noqa: E402
from ecg_hpc.data.synth_icentia import synth_icentia_patient  # noqa: E402
from ecg_hpc.tasks import get_task  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """Benchmark options."""
    parser = argparse.ArgumentParser(prog="bench/train_step.py", description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=None, help="shard store (default: a synthetic one in a temp folder)")
    parser.add_argument("--patients", type=int, default=4, help="synthetic patients (default: 4)")
    parser.add_argument("--segment-size", type=int, default=262144, help="synthetic segment length (default: 262144)")
    parser.add_argument("--task", default="beat", help="pretraining task (default: beat)")
    parser.add_argument("--width", type=float, default=1.0, help="ResNet width multiplier (default: 1.0)")
    parser.add_argument("--frame-size", type=int, default=4096, help="samples per frame (default: 4096)")
    parser.add_argument("--batch-size", type=int, default=32, help="frames per step (default: 32)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement (default: 20)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating measurements per feed (default: 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    return parser


def synthetic_store(folder: Path, patients: int, segment_size: int, seed: int) -> Path:
    """A small store of synthetic patients (2 segments each) written with the store's own writer."""
    rng = np.random.default_rng(seed)
    for pid in range(patients):
        signal, beats, rhythms = synth_icentia_patient(rng, 2, segment_size)
        write_patient(folder, pid, signal, beats, rhythms, {"synthetic": True, "seed": seed})
    return folder


class BatchClock(tf.keras.callbacks.Callback):
    """Timestamps of the end of every training batch of one ``fit`` call."""

    def __init__(self) -> None:
        super().__init__()
        self.ends: list[float] = []

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        """Record when this step finished."""
        self.ends.append(time.perf_counter())

    def frames_per_s(self, batch_size: int) -> float:
        """Frames per second between the first and the last batch end."""
        return (len(self.ends) - 1) * batch_size / (self.ends[-1] - self.ends[0])


def measure(model: tf.keras.Model, dataset: tf.data.Dataset, steps: int, batch_size: int) -> float:
    """Train ``steps + 1`` steps on ``dataset``; frames/s of the last ``steps``."""
    clock = BatchClock()
    model.fit(dataset, epochs=1, steps_per_epoch=steps + 1, verbose=0, callbacks=[clock])
    return clock.frames_per_s(batch_size)


def production_rate(dataset: tf.data.Dataset, steps: int, batch_size: int) -> float:
    """Frames per second the feed alone delivers (no training), timed after its first batch."""
    iterator = iter(dataset)
    next(iterator)
    began = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    return steps * batch_size / (time.perf_counter() - began)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print both throughputs and their ratio."""
    args = build_parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        store = Store(args.store) if args.store else Store(synthetic_store(Path(tmp), args.patients,
                                                                          args.segment_size, args.seed))
        ids = store.patient_ids
        pipeline = make_dataset(store, get_task(args.task), ids, args.frame_size, args.batch_size, args.seed)
        held = list(pipeline.take(8).as_numpy_iterator())
        frames = np.concatenate([x for x, _ in held])
        labels = np.concatenate([y for _, y in held])
        memory = (tf.data.Dataset.from_tensor_slices((frames, labels)).batch(args.batch_size, drop_remainder=True)
                  .repeat().prefetch(2))

        tf.keras.utils.set_random_seed(args.seed)
        task = get_task(args.task)
        model = task.build_model("resnet18", args.frame_size, width=args.width)
        task.compile_model(model, tf.keras.optimizers.Adam(1e-3, beta_1=0.9, beta_2=0.98, epsilon=1e-9))
        for feed in (memory, pipeline):  # trace the step and start both feeds before timing
            model.fit(feed, epochs=1, steps_per_epoch=2, verbose=0)

        device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
        print(f"ResNet-18 1-D (width {args.width}), {args.task}, frame {args.frame_size}, batch {args.batch_size}, "
              f"{args.steps} steps x {args.rounds} rounds on {device}, {len(ids)} patients")
        rates: dict[str, list[float]] = {"pipeline": [], "in-memory": []}
        for r in range(args.rounds):
            for name, feed in (("pipeline", pipeline), ("in-memory", memory)):
                rate = measure(model, feed, args.steps, args.batch_size)
                rates[name].append(rate)
                print(f"  round {r + 1}: {name:9s} {rate:10.1f} frames/s", flush=True)
        fed, held_rate = statistics.median(rates["pipeline"]), statistics.median(rates["in-memory"])
        alone = production_rate(pipeline, max(args.steps, 20), args.batch_size)
        print(f"store pipeline alone (no training): {alone:.1f} frames/s")
        print(f"store pipeline: {fed:.1f} frames/s (median)")
        print(f"in-memory:      {held_rate:.1f} frames/s (median)")
        print(f"ratio pipeline / in-memory: {fed / held_rate:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
