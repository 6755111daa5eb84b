"""``python -m analysis.report``: the paper's tables and figures from run directories, with statistics.

Reads only run directories (run.json + CSVs) below ``--runs``, prints the tables to the terminal and writes them
to ``--out`` (Markdown report, one CSV per table plus runs.csv, LaTeX tables; figures as PNG and PDF). Problems
(missing, failed, running, malformed runs) are listed, never dropped. Bad input gives one line on stderr and exit
code 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __name__ == "__main__":  # a Python without the project's packages: one line saying how to activate the venv
    from ecg_hpc.venvcheck import exit_unless_installed
    exit_unless_installed(("numpy", "pandas", "scipy", "matplotlib"))

from analysis.build import (FIGURE_NAMES, FORMATS, REPORT_MD, RUNS_CSV, TABLES_TEX, make_report, summary_markdown,
                            write_report)
from analysis.collect import collect
from analysis.render import text
from ecg_hpc.errors import ConfigError, DataError, EcgHpcError
from ecg_hpc.project_config import config_path, read_config
from ecg_hpc.atomic import atomic_write_text

DEFAULT_RUNS = "runs"


def _formats(value: str) -> list[str]:
    """Parse a comma-separated list of formats ('all' for every one)."""
    chosen = list(FORMATS) if value == "all" else [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in chosen if v not in FORMATS]
    if bad or not chosen:
        raise argparse.ArgumentTypeError(f"unknown format {', '.join(bad) or value!r}; choose from "
                                         f"{', '.join(FORMATS)} or all")
    return chosen


def build_parser() -> argparse.ArgumentParser:
    """The command line of the report."""
    parser = argparse.ArgumentParser(
        prog="python -m analysis.report",
        description="Collect fine-tuning and pretraining run directories into the paper's tables (Table 1 with "
                    "the published numbers, pretrained-vs-random differences with bootstrap CI and Welch's "
                    "t-test, label efficiency, epochs to early stop, pretraining data size and epoch, 1-D vs 2-D) "
                    "and figures. Missing, failed, running and malformed runs are listed as problems.",
        epilog=f"Files in --out: {REPORT_MD} (md), one CSV per table plus {RUNS_CSV} (csv), {TABLES_TEX} (tex), "
               f"and the figures {', '.join(FIGURE_NAMES)} (each .png and .pdf).")
    parser.add_argument("--runs", default=None, help="runs tree to read: run.json files below it; sweep "
                        f"manifests *manifest*.jsonl list planned tasks (default: {DEFAULT_RUNS}/, else the "
                        "demo's runs named in ecg-hpc.toml)")
    parser.add_argument("--out", default="reports", help="folder for the report files (default: %(default)s)")
    parser.add_argument("--format", dest="formats", metavar="FORMATS", type=_formats, action="append",
                        help=f"file formats, comma-separated or repeated: {', '.join(FORMATS)} or all "
                             "(default: md,csv)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling (default: %(default)s)")
    parser.add_argument("--resamples", type=int, default=10_000,
                        help="bootstrap resamples per comparison (default: %(default)s)")
    parser.add_argument("--no-figures", action="store_true", help="skip the figures")
    parser.add_argument("--summary", metavar="FILE",
                        help="also write the result tables alone to FILE (Markdown without timestamp or paths: the "
                             "same runs give the same file, for a README to include)")
    parser.add_argument("--quiet", action="store_true", help="no progress line while reading runs")
    return parser


def find_runs(given: str | None) -> Path:
    """``--runs``, else ``runs/`` here, else the demo's runs named in the project's settings file (said so)."""
    if given is not None:
        return Path(given)
    if Path(DEFAULT_RUNS).is_dir():
        return Path(DEFAULT_RUNS)
    demo_runs = read_config().get("runs")
    if demo_runs and Path(demo_runs).is_dir():
        print(f"no {DEFAULT_RUNS}/ here: reading the demo's runs in {demo_runs} (named in {config_path()})",
              file=sys.stderr)
        return Path(demo_runs)
    raise ConfigError(f"{DEFAULT_RUNS}: no such directory here and no demo runs named in {config_path()}: give "
                      "--runs DIR (make demo writes demo/runs; a sweep writes runs/finetune)")


def main(argv: list[str] | None = None) -> int:
    """Run the report; return the exit status (1 with a one-line message for bad input)."""
    args = build_parser().parse_args(argv)
    formats = tuple(dict.fromkeys(f for group in (args.formats or [["md", "csv"]]) for f in group))
    try:
        if args.resamples < 1:
            raise ConfigError(f"--resamples must be at least 1, got {args.resamples}")
        runs = find_runs(args.runs)
        collection = collect(runs, progress=not args.quiet)
        report = make_report(collection, seed=args.seed, resamples=args.resamples,
                             with_figures=not args.no_figures)
        written = write_report(report, args.out, formats) if not collection.done.empty else []
        print(report.summary_line() + "\n")
        print("\n".join(text(t) for t in report.shown))
        if not written:
            raise DataError(f"{runs}: no finished fine-tuning runs to report (problems listed above)")
        if args.summary:
            written.append(atomic_write_text(args.summary, summary_markdown(report)))
        print(f"wrote {len(written)} files to {args.out}" + (f" and {args.summary}" if args.summary else ""))
    except BrokenPipeError:  # the terminal output was piped into e.g. `head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (EcgHpcError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
