"""Benchmark of ``python -m analysis.report`` on 100 fine-tuning run directories (target: under 5 s).

Builds a runs tree in a temporary folder (10 scenarios x 10 seeds: random and beat pretraining at several
fractions, epochs and archs, each run with run.json and a history.csv of 51-200 epochs, plus their pretraining
runs), then times, in one process, reading the runs, the tables and statistics (10,000 bootstrap resamples per
comparison), the figures and writing every format, and separately the whole command in a fresh interpreter
(imports included). Prints wall and CPU seconds (on a shared machine the CPU time is what an idle one would
take); asserts nothing.

    .venv/bin/python bench/report.py [--runs 100] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from analysis.build import make_report, write_report
from analysis.collect import collect
from tests.fake_runs import RANDOM_INIT, checkpoint_init, write_finetune_run, write_pretrain_run

TARGET_S = 5.0
_PRETRAIN = {"full": ("resnet18", 1.0), "f01": ("resnet18", 0.01), "f10": ("resnet18", 0.1),
             "f20": ("resnet18", 0.2), "full_2d": ("resnet18_2d", 1.0)}
_SCENARIOS = [("random", None, None, "resnet18"), ("random_2d", None, None, "resnet18_2d"),
              ("full_e10", "full", 10, "resnet18"), ("full_e05", "full", 5, "resnet18"),
              ("full_e01", "full", 1, "resnet18"), ("f01_e10", "f01", 10, "resnet18"),
              ("f10_e10", "f10", 10, "resnet18"), ("f20_e10", "f20", 10, "resnet18"),
              ("full_2d_e10", "full_2d", 10, "resnet18_2d"), ("f10_e05", "f10", 5, "resnet18")]


def build_tree(root: Path, n_runs: int, rng: np.random.Generator) -> None:
    """Write ``n_runs`` finished fine-tuning runs spread over the scenarios, and their pretraining runs."""
    pretrain = {name: write_pretrain_run(root / "pretrain" / name, arch=arch, frac=frac, epochs=10)
                for name, (arch, frac) in _PRETRAIN.items()}
    for i in range(n_runs):
        folder, source, epoch, arch = _SCENARIOS[i % len(_SCENARIOS)]
        seed = 10 * (i // len(_SCENARIOS) + 1)
        if source is None:
            init = RANDOM_INIT
        else:
            pre_arch, frac = _PRETRAIN[source]
            init = checkpoint_init(pretrain[source], epoch, arch=pre_arch, frac=frac)
        epochs_run = int(rng.integers(51, 201))
        curve = np.clip(0.45 + 0.3 * (1 - np.exp(-np.arange(1, epochs_run + 1) / 15))
                        + rng.normal(0, 0.01, epochs_run), 0, 1)
        f1 = dict(zip(("A", "N", "O", "~"), np.clip(rng.normal([0.72, 0.9, 0.7, 0.6], 0.02), 0, 1).tolist()))
        write_finetune_run(root / "finetune" / folder / f"seed_{seed}", seed=seed, init=init, arch=arch, f1=f1,
                           epochs_run=epochs_run, val_f1=curve.tolist())


def main() -> None:
    """Build the tree, time each stage and the whole command, print the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="fine-tuning run directories to report")
    parser.add_argument("--keep", type=Path, help="build the tree here and keep it (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_report_") as tmp:
        base = args.keep or Path(tmp)
        runs, out = base / "runs", base / "reports"
        start = time.perf_counter()
        build_tree(runs, args.runs, np.random.default_rng(0))
        print(f"built {args.runs} fine-tuning + {len(_PRETRAIN)} pretraining run directories "
              f"in {time.perf_counter() - start:.1f} s (not counted)")

        stages = {}

        def timed(name: str, work: Callable[[], Any]) -> Any:
            wall, cpu = time.perf_counter(), time.process_time()
            result = work()
            stages[name] = (time.perf_counter() - wall, time.process_time() - cpu)
            return result

        collection = timed("read run directories", lambda: collect(runs, progress=False))
        timed("tables + statistics (alone)", lambda: make_report(collection, with_figures=False))
        report = timed("tables + statistics + figures", lambda: make_report(collection, with_figures=True))
        written = timed("write md/csv/tex/png", lambda: write_report(report, out, ("md", "csv", "tex")))

        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "analysis.report", "--runs", str(runs), "--out", str(out),
                               "--format", "all", "--quiet"], capture_output=True, text=True)
        whole = time.perf_counter() - wall
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        whole_cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime

        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (wall times grow with it; "
              "CPU times are what an idle machine would take)")
        print(f"  {'stage':<32} {'wall s':>7} {'cpu s':>7}")
        for name, (wall_s, cpu_s) in stages.items():
            print(f"  {name:<32} {wall_s:7.2f} {cpu_s:7.2f}")
        counted = [v for k, v in stages.items() if "alone" not in k]
        print(f"in-process total ({len(collection.runs)} runs, {len(written)} files): "
              f"{sum(w for w, _ in counted):.2f} s wall, {sum(c for _, c in counted):.2f} s cpu")
        print(f"python -m analysis.report, fresh interpreter, imports included (exit {proc.returncode}): "
              f"{whole:.2f} s wall, {whole_cpu:.2f} s cpu; target < {TARGET_S:.0f} s")

if __name__ == "__main__":
    main()
