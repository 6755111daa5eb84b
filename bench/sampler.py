"""Benchmark: pretraining samplers side by side, warm and cold page cache, with I/O counts and a latency model.

Writes ``--patients`` synthetic patients of the published size (50 segments of 1,048,577 samples) as pkl.gz
(``bench/pipeline.py``'s generator), converts them to a store and measures, beat task, frame 4096, batch 512:

- warm page cache (the store read once before): the pool sampler (``ecg_hpc.data.pool``), today's uniform
  memory-map sampler (``pipeline.BatchSampler``) and the authors'-style per-patient pkl.gz loader, each through
  ``make_dataset`` / ``tf.data`` as training consumes them, plus the samplers alone in numpy;
- cold: each sampler alone in a child process inside a v1 memory cgroup that allows ``--cache-mb`` of page cache
  beyond the process's own memory (the store is several times larger), after the store was evicted with
  ``posix_fadvise(DONTNEED)`` by this process, which never maps it. Reported per sampler: frames/s, disk bytes read
  per frame (``/proc/self/io`` read_bytes), synchronous I/O operations per 1,000 frames (read system calls + major
  page faults) and the time the pool's consumer waited for its refill thread;
- the read method the pool uses, chosen by measurement: random whole segments read cold with one ``preadv`` each
  vs copied out of an ``mmap`` advised ``MADV_RANDOM`` (operations and MB/s);
- a latency model: frames/s per lane if every I/O operation took 0.5 ms (a parallel-file-system round trip):
  the uniform sampler waits for its faults in line, ``1 / (ops per frame x 0.5 ms + warm CPU s per frame)``; the
  pool reads in a background thread, so it runs at ``min(warm rate, frames per op / 0.5 ms)``.

Prints numbers and ratios; asserts nothing (not a timed test). Needs root for the cgroup (else the cold part is
skipped with a note). Data lives in ``--workdir`` (reused) or a temporary folder removed at the end.

    .venv/bin/python bench/sampler.py [--patients 8] [--distinct 8] [--workdir DIR] [--cache-mb 192] [--pool-mb 256]
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ecg_hpc.data import icentia11k  # noqa: E402
from ecg_hpc.data.convert import convert  # noqa: E402
from ecg_hpc.data.batches import normalise  # noqa: E402
from ecg_hpc.data.pipeline import BatchSampler, make_dataset  # noqa: E402
from ecg_hpc.data.pool import DEFAULT_READ_RATIO, PoolOptions, PoolSampler  # noqa: E402
from ecg_hpc.data.store import Store, patient_dir, write_manifest  # noqa: E402
from ecg_hpc.atomic import atomic_dir  # noqa: E402
from ecg_hpc.tasks import get_task  # noqa: E402
from pipeline import baseline_frames, rate, write_raw  # noqa: E402  (bench/pipeline.py)

BEAT_TASK = get_task("beat")  # the task every measurement here samples

CGROUP_ROOT = Path("/sys/fs/cgroup/memory")
OP_LATENCY_S = 0.5e-3


def prepare(workdir: Path, n_patients: int, distinct: int, seed: int) -> tuple[Path, Path, list[int]]:
    """pkl.gz patients and their store: ``distinct`` synthesised, the others byte copies under new ids (patient
    synthesis takes minutes of CPU; for I/O and sampling rates a copy reads like a new patient)."""
    raw, store = workdir / "raw", workdir / "store"
    made = write_raw(raw, distinct, icentia11k.MAX_SEGMENTS, seed)
    convert(raw, store, patients=made, show_progress=False)
    ids = list(range(n_patients))
    for pid in ids[distinct:]:
        twin = made[pid % distinct]
        for source, target in zip(icentia11k.patient_files(raw, twin), icentia11k.patient_files(raw, pid)):
            if not target.is_file():
                shutil.copyfile(source, target)
        if not patient_dir(store, pid).is_dir():
            with atomic_dir(patient_dir(store, pid)) as tmp:
                for entry in patient_dir(store, twin).iterdir():
                    shutil.copyfile(entry, tmp / entry.name)
                meta = json.loads((tmp / "meta.json").read_text())
                (tmp / "meta.json").write_text(json.dumps(dict(meta, patient_id=pid)))
    write_manifest(store)
    return raw, store, ids


def io_counters() -> dict[str, float]:
    """read_bytes and read system calls of this process (all threads), major faults, CPU seconds."""
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"read_bytes": int(fields["read_bytes"]), "syscr": int(fields["syscr"]), "majflt": usage.ru_majflt,
            "cpu": usage.ru_utime + usage.ru_stime, "wall": time.perf_counter()}


def evict(store: Path) -> None:
    """Drop the store's pages from the page cache (this process never maps the store)."""
    for path in store.rglob("*.npy"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm(store: Path) -> None:
    """Read the whole store once so its pages are cached."""
    for path in store.rglob("*.npy"):
        with open(path, "rb") as fh:
            while fh.read(1 << 24):
                pass


def sampler_of(kind: str, store: Path, ids: list[int], args: argparse.Namespace):
    if kind == "pool":
        return PoolSampler(store, BEAT_TASK, ids, args.frame, args.batch, seed=args.seed,
                           options=PoolOptions(pool_mb=args.pool_mb, read_ratio=args.read_ratio))
    return BatchSampler(store, BEAT_TASK, ids, args.frame, args.batch, seed=args.seed)


def measure_sampler(kind: str, store: Path, ids: list[int], args: argparse.Namespace, batches: int) -> dict:
    """Frames/s and I/O of ``batches`` numpy batches (raw batch + normalisation), after one warm-up batch."""
    sampler = sampler_of(kind, store, ids, args)
    try:
        sampler.raw_batch(0)
        waited = getattr(sampler, "wait_s", 0.0)
        before = io_counters()
        for step in range(1, batches + 1):
            values, multiplier, _ = sampler.raw_batch(step)
            normalise(values, multiplier)
        after = io_counters()
        info = sampler.describe() if kind == "pool" else {}
        waited = getattr(sampler, "wait_s", 0.0) - waited
    finally:
        if kind == "pool":
            sampler.close()
    frames = batches * args.batch
    delta = {k: after[k] - before[k] for k in after}
    return {"kind": kind, "frames_per_s": frames / delta["wall"], "cpu_s_per_frame": delta["cpu"] / frames,
            "bytes_per_frame": delta["read_bytes"] / frames,
            "ops_per_1000": 1000 * (delta["syscr"] + delta["majflt"]) / frames,
            "majflt_per_1000": 1000 * delta["majflt"] / frames, "wait_s": waited, "seconds": delta["wall"],
            "pool": info}


def measure_reads(store: Path, ids: list[int], n: int, seed: int) -> dict:
    """Cold random whole segments: one preadv each vs a copy out of an mmap advised MADV_RANDOM."""
    rng = np.random.default_rng(seed)
    metas = Store(store).metas(ids)
    files = {pid: open(patient_dir(store, pid) / "signal.npy", "rb") for pid in ids}
    maps = {pid: mmap.mmap(fh.fileno(), 0, prot=mmap.PROT_READ) for pid, fh in files.items()}
    for mm in maps.values():
        mm.madvise(mmap.MADV_RANDOM)
    out = {}
    for method in ("preadv", "mmap_random"):
        picks = [(pid, int(rng.integers(metas[pid]["n_segments"]))) for pid in map(int, rng.choice(ids, n))]
        before = io_counters()
        nbytes = 0
        for pid, segment in picks:
            length = metas[pid]["segment_len"]
            buf = np.empty(length, np.int16)
            offset = metas[pid]["files"]["signal.npy"]["offset"] + segment * buf.nbytes
            if method == "preadv":
                os.preadv(files[pid].fileno(), [memoryview(buf).cast("B")], offset)
            else:
                buf[:] = np.frombuffer(maps[pid], np.int16, length, offset)
            nbytes += buf.nbytes
        after = io_counters()
        seconds = after["wall"] - before["wall"]
        out[method] = {"ops_per_segment": (after["syscr"] - before["syscr"] + after["majflt"] - before["majflt"]) / n,
                       "mb_per_s": nbytes / seconds / 2 ** 20}
    for pid in ids:
        maps[pid].close()
        files[pid].close()
    return out


def warm_child(store: Path, raw: Path, ids: list[int], args: argparse.Namespace) -> dict:
    """Warm page cache: both samplers alone (alternating rounds, best kept), through tf.data, and the authors'
    loader; in a child process so that the parent never maps the store (its eviction would not drop mapped pages)."""
    import tensorflow as tf

    warm(store)
    result: dict = {}
    for _ in range(args.rounds):
        for kind in ("pool", "uniform"):
            r = measure_sampler(kind, store, ids, args, args.warm_batches)
            if r["frames_per_s"] > result.get(kind, {}).get("frames_per_s", 0):
                result[kind] = r
    for kind in ("pool", "uniform"):
        ds = make_dataset(Store(store), BEAT_TASK, ids, args.frame, args.batch, seed=args.seed, steps=None,
                          pool=PoolOptions(args.pool_mb, read_ratio=args.read_ratio) if kind == "pool" else None)
        result[kind]["tf_frames_per_s"], result[kind]["tf_frames_per_cpu_s"] = rate(ds, args.warm_batches,
                                                                                    args.batch)
        del ds
    baseline = tf.data.Dataset.from_generator(
        lambda: baseline_frames(raw, ids, args.frame, 4096, args.seed),
        output_signature=(tf.TensorSpec((args.frame, 1), tf.float32), tf.TensorSpec((), tf.int32)),
    ).batch(args.batch).prefetch(2)
    result["authors"], result["authors_per_cpu_s"] = rate(baseline, args.baseline_batches, args.batch)
    return result


def child(args: argparse.Namespace) -> int:
    """A measurement in a child process: ``warm``, or a cold one inside the cgroup, which is limited to the
    process's own memory + the pool + ``--cache-mb`` of page cache."""
    store, ids = Path(args.store), [int(i) for i in args.ids.split(",")]
    if args.child == "warm":
        print(json.dumps(warm_child(store, Path(args.raw), ids, args)), flush=True)
        return 0
    group = Path(args.cgroup)
    (group / "cgroup.procs").write_text(str(os.getpid()))
    rss = int(next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines()
                   if line.startswith("VmRSS:"))) * 1024
    pool = int(args.pool_mb * 2 ** 20) if args.child == "pool" else 0
    (group / "memory.limit_in_bytes").write_text(str(rss + pool + (args.cache_mb + 64) * 2 ** 20))
    if args.child == "reads":
        result = measure_reads(store, ids, 24, args.seed)
    else:
        result = measure_sampler(args.child, store, ids, args, args.cold_batches[args.child])
    print(json.dumps(result), flush=True)
    return 0


def run_child(kind: str, store: Path, raw: Path, ids: list[int], args: argparse.Namespace) -> dict:
    """Run one measurement in a child process (cold ones in a fresh memory cgroup, the store evicted first)."""
    group = CGROUP_ROOT / f"ecg_hpc_bench_{os.getpid()}_{kind}"
    cold = kind != "warm"
    if cold:
        group.mkdir()
        evict(store)
    try:
        cmd = [sys.executable, __file__, "--child", kind, "--store", str(store), "--raw", str(raw),
               "--ids", ",".join(map(str, ids)), "--cgroup", str(group), "--cache-mb", str(args.cache_mb),
               "--pool-mb", str(args.pool_mb), "--read-ratio", str(args.read_ratio), "--frame", str(args.frame),
               "--batch", str(args.batch),
               "--seed", str(args.seed), "--rounds", str(args.rounds), "--warm-batches", str(args.warm_batches),
               "--baseline-batches", str(args.baseline_batches),
               "--uniform-cold-batches", str(args.cold_batches["uniform"]),
               "--pool-cold-batches", str(args.cold_batches["pool"])]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])))
        if proc.returncode != 0:
            raise RuntimeError(f"{kind} child failed: {proc.stderr[-2000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        if cold:
            group.rmdir()


def predicted(result: dict, warm_rate: float, background: bool) -> float:
    """Frames/s per lane at ``OP_LATENCY_S`` per I/O operation (see the module docstring)."""
    ops_per_frame = result["ops_per_1000"] / 1000
    if background:
        return min(warm_rate, 1 / (ops_per_frame * OP_LATENCY_S)) if ops_per_frame else warm_rate
    return 1 / (ops_per_frame * OP_LATENCY_S + 1 / warm_rate)


def main(argv: list[str] | None = None) -> int:
    """Prepare the data, run the warm and cold measurements and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=8)
    parser.add_argument("--distinct", type=int, default=8,
                        help="synthesise this many patients, copy the rest under new ids (default 8: all)")
    parser.add_argument("--frame", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--pool-mb", type=float, default=256, help="pool memory (default 256 MiB)")
    parser.add_argument("--read-ratio", type=float, default=DEFAULT_READ_RATIO,
                        help=f"pool samples read per sample drawn (default {DEFAULT_READ_RATIO})")
    parser.add_argument("--cold-read-ratios", type=lambda t: [float(x) for x in t.split(",") if x], default=[],
                        help="also measure the pool cold at these read ratios, e.g. 0.25")
    parser.add_argument("--cache-mb", type=int, default=192, help="page cache the cold runs may use (MiB)")
    parser.add_argument("--warm-batches", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3, help="warm rounds per sampler, alternating; best kept")
    parser.add_argument("--pool-cold-batches", type=int, default=60)
    parser.add_argument("--uniform-cold-batches", type=int, default=12)
    parser.add_argument("--baseline-batches", type=int, default=8)
    parser.add_argument("--workdir", type=Path, default=None, help="keep and reuse the generated data here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--store", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--ids", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cgroup", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--raw", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.cold_batches = {"pool": args.pool_cold_batches, "uniform": args.uniform_cold_batches}
    if args.child:
        return child(args)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_sampler_"))
    try:
        raw, store, ids = prepare(workdir, args.patients, min(args.distinct, args.patients), args.seed)
        store_bytes = sum(p.stat().st_size for p in store.rglob("*.npy"))
        print(f"store: {len(ids)} patients ({min(args.distinct, args.patients)} distinct), "
              f"{store_bytes / 2 ** 20:.0f} MiB; cpus {len(os.sched_getaffinity(0))}, "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
        results = run_child("warm", store, raw, ids, args)
        authors = results["authors"]
        print("\nwarm page cache (beat, frame 4096, batch 512)   tf.data frames/s (per CPU-s)   "
              "sampler alone frames/s (per CPU-s)")
        for kind, name in (("pool", "pool sampler (new)"), ("uniform", "uniform mmap sampler (today)")):
            r = results[kind]
            print(f"  {name:30s} {r['tf_frames_per_s']:12.0f} ({r['tf_frames_per_cpu_s']:8.0f})   "
                  f"{r['frames_per_s']:14.0f} ({1 / r['cpu_s_per_frame']:8.0f})")
        print(f"  {'authors-style pkl.gz loader':30s} {authors:12.0f} ({results['authors_per_cpu_s']:8.0f})")
        p, u = results["pool"], results["uniform"]
        print(f"  ratios new/today: {p['tf_frames_per_s'] / u['tf_frames_per_s']:.2f}x tf.data, "
              f"{p['tf_frames_per_cpu_s'] / u['tf_frames_per_cpu_s']:.2f}x tf.data per CPU-s, "
              f"{p['frames_per_s'] / u['frames_per_s']:.2f}x sampler, "
              f"{u['cpu_s_per_frame'] / p['cpu_s_per_frame']:.2f}x sampler per CPU-s; "
              f"new/authors {p['tf_frames_per_s'] / authors:.1f}x", flush=True)
        print(f"  pool: {json.dumps(p['pool'])}")

        if os.geteuid() != 0 or not CGROUP_ROOT.is_dir():
            print("\ncold: skipped (needs root and a v1 memory cgroup at /sys/fs/cgroup/memory)")
            return 0
        cold = {kind: run_child(kind, store, raw, ids, args) for kind in ("pool", "uniform")}
        for ratio in args.cold_read_ratios:  # the pool trading reuse of what it read for disk bytes
            cold[f"pool r{ratio:g}"] = run_child("pool", store, raw, ids, argparse.Namespace(**dict(
                vars(args), read_ratio=ratio)))
            results[f"pool r{ratio:g}"] = results["pool"]
        reads = run_child("reads", store, raw, ids, args)
        frame_bytes = args.frame * 2
        print(f"\ncold: store {store_bytes / 2 ** 20:.0f} MiB, page cache allowed {args.cache_mb} MiB "
              f"({store_bytes / 2 ** 20 / args.cache_mb:.1f}x), evicted first")
        print("  sampler        frames/s  cold/warm  disk bytes/frame (x frame)  I/O ops/1000 frames  "
              "refill wait s  model@0.5ms/op")
        for kind in cold:
            c, w, background = cold[kind], results[kind], kind.startswith("pool")
            print(f"  {kind:12s} {c['frames_per_s']:10.0f} {c['frames_per_s'] / w['frames_per_s']:10.2f} "
                  f"{c['bytes_per_frame']:12.0f} ({c['bytes_per_frame'] / frame_bytes:5.2f}x) "
                  f"{c['ops_per_1000']:20.1f} {c['wait_s']:14.2f} {predicted(c, w['frames_per_s'], background):15.0f}")
        print(f"  ratio cold new/today: {cold['pool']['frames_per_s'] / cold['uniform']['frames_per_s']:.1f}x; "
              f"goals: cold >= 0.5 warm, <= 4x frame bytes, <= 50 ops/1000 frames")
        print(f"  read method, cold random whole segments: preadv {reads['preadv']['ops_per_segment']:.1f} ops and "
              f"{reads['preadv']['mb_per_s']:.0f} MB/s per segment; mmap+MADV_RANDOM "
              f"{reads['mmap_random']['ops_per_segment']:.1f} ops and {reads['mmap_random']['mb_per_s']:.0f} MB/s")
        print(f"load average {os.getloadavg()[0]:.1f}")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
