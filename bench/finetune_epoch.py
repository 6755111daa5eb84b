#!/usr/bin/env python
"""Fine-tuning epochs of the project's trainer against the authors' ``finetuning/trainer.py``, side by side.

Both fine-tune ResNet-18 (full width) from random initialisation on the same real PhysioNet/CinC 2017 records,
the same train/validation/test records (prepared once by ``prepare-physionet``; the validation records are the
project's seeded split, handed to the authors' trainer as its ``--val`` file), the same batch size and epochs.
The authors' trainer runs as published, from a copy of their repository in a temporary folder (``--authors``:
a checkout or a git directory, e.g. the one ``fetch`` leaves under /work/.mirror), with their own loop: a
shuffled ``from_tensor_slices`` dataset, Keras ``fit`` with ``validation_data``, CSVLogger, their best-F1
checkpoint and early stopping on val_loss. ``--before DIR`` adds another checkout of this project (e.g. a
``git worktree`` of an older commit) as a third trainer. Each run is a fresh process (``bench/epoch_clock.py``
times its epochs); the trainers alternate over ``--rounds``. Prints per trainer the first epoch's and the later
epochs' median wall and CPU seconds, the whole process's, the validation macro F1 after the last epoch, and the
ratios authors / project (above 1: the project is faster).

    python bench/finetune_epoch.py --records tests/data/physionet2017-validation
    python bench/finetune_epoch.py --records DIR --before /tmp/before --rounds 2 --authors-path /tmp/extra

The authors' package imports ``samplerate`` and ``tqdm`` (for its dataset scripts; the trainer does not use them):
``pip install --target /tmp/extra samplerate tqdm`` and pass ``--authors-path /tmp/extra``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ecg_hpc.data.prepare import load_prepared, prepare  # noqa: E402
from ecg_hpc.errors import EcgHpcError, user_error  # noqa: E402
from ecg_hpc.interrupt import interrupted  # noqa: E402
from ecg_hpc.train.metrics import one_hot  # noqa: E402
from ecg_hpc.data.splits import stratified_holdout  # noqa: E402

CLOCK = Path(__file__).resolve().parent / "epoch_clock.py"
MIRROR = Path("/work/.mirror/kweimann+ecg-transfer-learning/repo/.git")


def build_parser() -> argparse.ArgumentParser:
    """Benchmark options."""
    parser = argparse.ArgumentParser(prog="bench/finetune_epoch.py", description=__doc__.splitlines()[0])
    parser.add_argument("--records", required=True, help="folder of challenge records (.hea/.mat, REFERENCE.csv)")
    parser.add_argument("--authors", default=str(MIRROR),
                        help="kweimann/ecg-transfer-learning: a checkout or its .git folder (default: %(default)s)")
    parser.add_argument("--authors-path", default="",
                        help="extra import path for the authors' process: their package imports samplerate and "
                             "tqdm, which the project does not pin (e.g. a `pip install --target DIR` folder)")
    parser.add_argument("--before", help="another checkout of this project to time as well")
    parser.add_argument("--epochs", type=int, default=3, help="default: %(default)s")
    parser.add_argument("--batch-size", type=int, default=64, help="default: %(default)s")
    parser.add_argument("--val-size", type=float, default=0.2,
                        help="share of the training records for validation (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=10, help="split and initialisation seed (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=1, help="alternating runs per trainer (default: %(default)s)")
    parser.add_argument("--keep", help="keep the work folder here instead of a temporary one")
    return parser


def authors_tree(source: Path, dst: Path) -> Path:
    """A copy of the authors' repository in ``dst`` (from a checkout, or ``git archive`` of a git directory)."""
    if (source / "finetuning" / "trainer.py").is_file():
        shutil.copytree(source, dst, ignore=shutil.ignore_patterns(".git"))
        return dst
    dst.mkdir(parents=True)
    archive = subprocess.run(["git", "--git-dir", str(source), "archive", "HEAD"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dst)], input=archive.stdout, check=True)
    if not (dst / "finetuning" / "trainer.py").is_file():
        raise SystemExit(f"--authors {source}: no finetuning/trainer.py in it")
    return dst


def write_authors_data(prepared: Path, val_size: float, seed: int, folder: Path) -> dict[str, Path]:
    """The project's split as the authors' gzip pickles (x, one-hot y, record_ids, classes)."""
    data = load_prepared(prepared)
    keep, held = stratified_holdout(np.asarray(data.y_train), val_size, np.random.default_rng(seed))
    classes = np.asarray(data.classes)
    parts = {"train": (data.x_train[keep], data.y_train[keep], data.names_train[keep]),
             "val": (data.x_train[held], data.y_train[held], data.names_train[held]),
             "test": (data.x_test, data.y_test, data.names_test)}
    paths = {}
    for name, (x, y, ids) in parts.items():
        paths[name] = folder / f"{name}.pkl"
        with gzip.open(paths[name], "wb") as fh:
            pickle.dump({"x": x, "y": one_hot(y, len(classes)).astype(np.int64), "record_ids": ids,
                         "classes": classes}, fh)
    return paths


def run_timed(name: str, module: str, args: list[str], cwd: Path, pythonpath: str | Path, work: Path,
              index: int) -> dict[str, Any]:
    """Run ``python -m module args`` under the epoch clock in a fresh process; its timings."""
    out = work / f"{name}_{index}.json"
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "TF_CPP_MIN_LOG_LEVEL": "2"}
    log = work / f"{name}_{index}.log"
    start, load = time.perf_counter(), os.getloadavg()[0]
    with log.open("w") as fh:
        proc = subprocess.run([sys.executable, str(CLOCK), str(out), module, *args], cwd=cwd, env=env,
                              stdout=fh, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    if proc.returncode != 0 or not out.is_file():
        raise SystemExit(f"{name} failed (exit {proc.returncode}); its output is in {log}")
    result = json.loads(out.read_text())
    result.update(name=name, process_wall_s=wall, load_before=load, load_after=os.getloadavg()[0])
    print(f"  {name} run {index + 1}: {wall:.0f} s wall, {result['user_s'] + result['system_s']:.0f} CPU-s, "
          f"epochs {[round(e['wall_s']) for e in result['epochs']]} s, load {load:.1f} -> "
          f"{result['load_after']:.1f}", flush=True)
    return result


def summarise(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Medians over runs: first epoch, later epochs, whole process, and the last epoch's validation F1."""
    later = [e for r in runs for e in r["epochs"][1:]]
    return {
        "first_wall": statistics.median(r["epochs"][0]["wall_s"] for r in runs),
        "first_cpu": statistics.median(r["epochs"][0]["cpu_s"] for r in runs),
        "epoch_wall": statistics.median(e["wall_s"] for e in later),
        "epoch_cpu": statistics.median(e["cpu_s"] for e in later),
        "process_wall": statistics.median(r["process_wall_s"] for r in runs),
        "process_cpu": statistics.median(r["user_s"] + r["system_s"] for r in runs),
        "process_sys": statistics.median(r["system_s"] for r in runs),
        "val_f1": statistics.median(r["epochs"][-1]["f1"] for r in runs),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; a bad option or record folder is one line (exit 2), Ctrl-C one line (exit 130)."""
    args = build_parser().parse_args(argv)
    if args.epochs < 2:
        raise SystemExit("error: --epochs must be at least 2 (the first epoch is reported apart)")
    try:
        return bench(args)
    except EcgHpcError as exc:
        return user_error(exc)
    except KeyboardInterrupt:
        return interrupted("bench/finetune_epoch.py: interrupted, no numbers")


def bench(args: argparse.Namespace) -> int:
    """Prepare the data once, run the trainers alternately, print the table and the ratios."""
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="finetune-epoch-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        prepared = work / "prepared.npz"
        prepare(args.records, prepared)
        pickles = write_authors_data(prepared, args.val_size, args.seed, work)
        authors = authors_tree(Path(args.authors), work / "authors")
        common = ["--batch-size", str(args.batch_size), "--epochs", str(args.epochs), "--seed", str(args.seed)]
        ours = ["--data", str(prepared), "--val-size", str(args.val_size), "--arch", "resnet18", "--width", "1",
                *common]
        trainers = {
            "authors": ("finetuning.trainer", ["--train", str(pickles["train"]), "--val", str(pickles["val"]),
                                               "--test", str(pickles["test"]), "--arch", "resnet18",
                                               "--val-metric", "f1", *common], authors,
                        os.pathsep.join(filter(None, [str(authors), args.authors_path]))),
            "project": ("ecg_hpc.train.finetune", ours, ROOT, ROOT),
        }
        if args.before:
            before = Path(args.before).resolve()
            trainers["before"] = ("ecg_hpc.train.finetune", ours, before, before)
        print(f"{os.cpu_count()} CPUs, load {os.getloadavg()}, {args.epochs} epochs, batch {args.batch_size}, "
              f"work folder {work}", flush=True)
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in trainers}
        for index in range(args.rounds):
            order = list(trainers) if index % 2 == 0 else list(reversed(trainers))
            for name in order:
                module, targs, cwd, path = trainers[name]
                job = work / f"job_{name}_{index}"
                results[name].append(run_timed(name, module, ["--job-dir", str(job), *targs], cwd, path, work,
                                               index))
        table = {name: summarise(runs) for name, runs in results.items()}
        print(f"\n{'trainer':8} {'epoch 1 s':>10} {'CPU-s':>7} {'later epochs s':>15} {'CPU-s':>7} "
              f"{'process s':>10} {'CPU-s':>7} {'sys-s':>6} {'val F1':>7}")
        for name, s in table.items():
            print(f"{name:8} {s['first_wall']:10.1f} {s['first_cpu']:7.1f} {s['epoch_wall']:15.1f} "
                  f"{s['epoch_cpu']:7.1f} {s['process_wall']:10.1f} {s['process_cpu']:7.1f} "
                  f"{s['process_sys']:6.1f} {s['val_f1']:7.3f}")
        base = table["authors"]
        for name in (n for n in table if n != "authors"):
            s = table[name]
            print(f"authors / {name}: later epochs {base['epoch_wall'] / s['epoch_wall']:.2f}x wall, "
                  f"{base['epoch_cpu'] / s['epoch_cpu']:.2f}x CPU; first epoch "
                  f"{base['first_wall'] / s['first_wall']:.2f}x wall; process "
                  f"{base['process_wall'] / s['process_wall']:.2f}x wall, "
                  f"{base['process_cpu'] / s['process_cpu']:.2f}x CPU")
        print(f"load now {os.getloadavg()}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
