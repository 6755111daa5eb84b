"""Turn the numeric tables into display tables: titles, headers and formatted cells (mean ± sd, percents)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from analysis.collect import CLASSES, is_missing, percent

PM = "±"


@dataclass(frozen=True)
class Table:
    """One table of the report: ``data`` (numbers, written as CSV) and its display ``headers``/``rows``."""

    name: str
    title: str
    note: str
    data: pd.DataFrame
    headers: list[str]
    rows: list[list[str]]


def label(value: Any) -> str:
    """A label or id as text: '' when absent, whole floats without '.0' (a seed read back from a table)."""
    if is_missing(value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def num(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals, '' when absent."""
    return "" if is_missing(value) else f"{float(value):.{digits}f}"


def mean_sd(mean: Any, sd: Any, digits: int = 3) -> str:
    """'mean ± sd', just 'mean' when the sd is undefined (one run), '' when there is no mean."""
    if is_missing(mean):
        return ""
    return num(mean, digits) if is_missing(sd) else f"{num(mean, digits)} {PM} {num(sd, digits)}"


def p_value(value: Any) -> str:
    """A p-value with three significant digits, '' when undefined."""
    return "" if is_missing(value) else f"{float(value):.3g}"


def integer(value: Any) -> str:
    """An integer-valued number without decimals, '' when absent."""
    return "" if is_missing(value) else str(int(value))


def table1(data: pd.DataFrame) -> Table:
    """Table 1: macro and per-class F1 per scenario beside the paper and the reproduction."""
    headers = ["Scenario", "n", "Macro F1", *CLASSES, "Paper", "Paper per class", "Reproduction"]
    rows = []
    for r in data.to_dict("records"):
        per_class = " ".join(f"{c} {num(r[f'paper_f1_{c}'])}" for c in CLASSES if not is_missing(r[f"paper_f1_{c}"]))
        rows.append([r["scenario"], str(r["n"]), mean_sd(r["macro_f1_mean"], r["macro_f1_sd"]),
                     *(mean_sd(r[f"f1_{c}_mean"], r[f"f1_{c}_sd"]) for c in CLASSES),
                     mean_sd(r["paper_macro_f1"], r["paper_macro_f1_sd"]), per_class, num(r["repro_macro_f1"])])
    return Table("table1", "Table 1: test macro F1 and per-class F1 (mean ± sd over seeds)",
                 "Paper: Weimann & Conrad 2021, Table 1 (10 runs); Reproduction: later re-run of the authors' code.",
                 data, headers, rows)


def comparisons(data: pd.DataFrame) -> Table:
    """Pretrained against random init: difference of mean macro F1, bootstrap CI, Welch p-value."""
    headers = ["Scenario", "Baseline", "n", "n base", "Mean", "Mean base", "Difference", "95% CI", "Welch p"]
    rows = [[r["scenario"], r["baseline"], str(r["n"]), str(r["n_baseline"]), num(r["mean"]),
             num(r["mean_baseline"]), "" if is_missing(r["diff"]) else f"{float(r['diff']):+.3f}",
             "" if is_missing(r["ci_low"]) else f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]", p_value(r["p_value"])]
            for r in data.to_dict("records")]
    return Table("comparisons",
                 "Pretrained vs random init (same fine-tune arch and width): difference of mean macro F1",
                 "95% percentile bootstrap CI (seeded) and Welch's t-test; both need two runs per group.",
                 data, headers, rows)


def epochs(data: pd.DataFrame) -> Table:
    """Epochs to early stop per scenario."""
    headers = ["Scenario", "n", "Epochs to early stop", "Best epoch"]
    rows = [[r["scenario"], str(r["n"]), mean_sd(r["epochs_run_mean"], r["epochs_run_sd"], 1),
             mean_sd(r["best_epoch_mean"], r["best_epoch_sd"], 1)] for r in data.to_dict("records")]
    return Table("epochs", "Epochs to early stop (mean ± sd)", "Epochs to early stop is epochs_run of run.json.",
                 data, headers, rows)


def fraction(data: pd.DataFrame) -> Table:
    """Macro F1 against the fraction of pretraining patients."""
    headers = ["Pretraining", "Patients", "Epoch", "n", "Macro F1", "Reproduction"]
    rows = [[r["family"], percent(r["frac"]), integer(r["pretrain_epoch"]), str(r["n"]),
             mean_sd(r["macro_f1_mean"], r["macro_f1_sd"]), num(r["repro_macro_f1"])]
            for r in data.to_dict("records")]
    return Table("fraction", "Pretraining data size: macro F1 against fraction of patients",
                 "Latest fine-tuned checkpoint of each pretraining configuration.", data, headers, rows)


def pretrain_epoch(data: pd.DataFrame) -> Table:
    """Macro F1 against the pretraining epoch of the fine-tuned checkpoint."""
    headers = ["Pretraining", "Epoch", "n", "Macro F1"]
    rows = [[r["family"], integer(r["pretrain_epoch"]), str(r["n"]), mean_sd(r["macro_f1_mean"], r["macro_f1_sd"])]
            for r in data.to_dict("records")]
    return Table("pretrain_epoch", "Pretraining length: macro F1 against pretraining epoch", "", data, headers, rows)


def arch(data: pd.DataFrame) -> Table:
    """1-D against 2-D (spectrogram) fine-tune archs."""
    headers = ["Init", "Input", "Arch", "n", "Macro F1", "Reproduction"]
    rows = [[r["init_config"], r["dims"], r["arch"], str(r["n"]), mean_sd(r["macro_f1_mean"], r["macro_f1_sd"]),
             num(r["repro_macro_f1"])] for r in data.to_dict("records")]
    return Table("arch_1d_2d", "1-D signal vs 2-D spectrogram", "", data, headers, rows)


def problems(data: pd.DataFrame) -> Table:
    """Missing, failed, running, malformed and duplicate runs (the display shows the last line of
    each detail, where a traceback states its error; the CSV keeps it whole)."""
    headers = ["Problem", "Kind", "Run directory", "Scenario", "Seed", "Detail"]
    rows = [[r["problem"], r["kind"], r["run_dir"], label(r["scenario"]), label(r["seed"]),
             (label(r["detail"]).strip().splitlines() or [""])[-1][:160]] for r in data.to_dict("records")]
    return Table("problems", "Problems: runs missing, failed, running or malformed", "", data, headers, rows)
