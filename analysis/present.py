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


METRIC_NOTE = ("Macro F1: unweighted mean of the F1 of A, N, O and ~ (the paper's metric, Weimann & Conrad "
               "2021); Challenge F1: mean F1 of N, A and O, noise excluded (the PhysioNet/CinC 2017 challenge's "
               "score, on which the winners reached 0.83 on the hidden test set).")


def _has(data: pd.DataFrame, columns: list[str]) -> bool:
    """True when any of ``columns`` holds a value in some row."""
    return any(c in data.columns and data[c].notna().any() for c in columns)


def table1(data: pd.DataFrame) -> Table:
    """Table 1: macro, challenge and per-class F1 per scenario, beside the published values where any exist."""
    paper = _has(data, ["paper_macro_f1", *(f"paper_f1_{c}" for c in CLASSES)])
    repro = _has(data, ["repro_macro_f1"])
    headers = ["Scenario", "n", "Macro F1", "Challenge F1", *CLASSES]
    headers += ["Paper", "Paper per class"] if paper else []
    headers += ["Reproduction"] if repro else []
    rows = []
    for r in data.to_dict("records"):
        row = [r["label"], str(r["n"]), mean_sd(r["macro_f1_mean"], r["macro_f1_sd"]),
               mean_sd(r["challenge_f1_mean"], r["challenge_f1_sd"]),
               *(mean_sd(r[f"f1_{c}_mean"], r[f"f1_{c}_sd"]) for c in CLASSES)]
        if paper:
            row += [mean_sd(r["paper_macro_f1"], r["paper_macro_f1_sd"]),
                    " ".join(f"{c} {num(r[f'paper_f1_{c}'])}" for c in CLASSES if not is_missing(r[f"paper_f1_{c}"]))]
        if repro:
            row.append(num(r["repro_macro_f1"]))
        rows.append(row)
    sources = (["Paper: Weimann & Conrad 2021, Table 1 (10 runs)"] if paper else []) + \
        (["Reproduction: later re-run of the authors' code"] if repro else [])
    note = METRIC_NOTE + (" " + "; ".join(sources) + "." if sources else "")
    return Table("table1", "Table 1: test macro F1, challenge F1 and per-class F1 (mean ± sd over seeds)", note,
                 data, headers, rows)


def _signed(value: Any) -> str:
    """A difference with its sign, '' when undefined."""
    return "" if is_missing(value) else f"{float(value):+.3f}"


def _ci(low: Any, high: Any) -> str:
    """'[low, high]' with signs, '' when undefined."""
    return "" if is_missing(low) else f"[{float(low):+.3f}, {float(high):+.3f}]"


def comparisons(data: pd.DataFrame) -> Table:
    """Pretrained against random init: difference of mean macro F1 and challenge F1, bootstrap CI, Welch p (a
    scenario without a like baseline says so in the baseline column)."""
    headers = ["Scenario", "Baseline", "n", "n base", "Mean", "Mean base", "Difference", "95% CI", "Welch p",
               "Challenge diff.", "Challenge 95% CI"]
    rows = [[r["label"], r["baseline"] if is_missing(r["baseline_label"]) else r["baseline_label"], str(r["n"]),
             str(r["n_baseline"]), num(r["mean"]), num(r["mean_baseline"]), _signed(r["diff"]),
             _ci(r["ci_low"], r["ci_high"]), p_value(r["p_value"]), _signed(r["challenge_diff"]),
             _ci(r["challenge_ci_low"], r["challenge_ci_high"])] for r in data.to_dict("records")]
    return Table("comparisons", "Pretrained vs random init (same fine-tune arch, width and labels): difference of "
                 "mean macro F1 (and challenge F1)",
                 "95% percentile bootstrap CI (seeded) and Welch's t-test on macro F1; both need two runs per group.",
                 data, headers, rows)


def epochs(data: pd.DataFrame) -> Table:
    """Epochs to early stop per scenario."""
    headers = ["Scenario", "n", "Epochs to early stop", "Best epoch"]
    rows = [[r["label"], str(r["n"]), mean_sd(r["epochs_run_mean"], r["epochs_run_sd"], 1),
             mean_sd(r["best_epoch_mean"], r["best_epoch_sd"], 1)] for r in data.to_dict("records")]
    return Table("epochs", "Epochs to early stop (mean ± sd)", "Epochs to early stop is epochs_run of run.json.",
                 data, headers, rows)


def fraction(data: pd.DataFrame) -> Table:
    """Macro F1 against the fraction of pretraining patients."""
    repro = _has(data, ["repro_macro_f1"])
    headers = ["Pretraining", "Patients", "Epoch", "n", "Macro F1", "Challenge F1"]
    headers += ["Reproduction"] if repro else []
    rows = [[r["family_label"], percent(r["frac"]), integer(r["pretrain_epoch"]), str(r["n"]),
             mean_sd(r["macro_f1_mean"], r["macro_f1_sd"]), mean_sd(r["challenge_f1_mean"], r["challenge_f1_sd"])]
            + ([num(r["repro_macro_f1"])] if repro else []) for r in data.to_dict("records")]
    return Table("fraction", "Pretraining data size: macro F1 against fraction of patients (mean ± sd)",
                 "Latest fine-tuned checkpoint of each pretraining configuration.", data, headers, rows)


def label_efficiency(data: pd.DataFrame) -> Table:
    """Macro F1 against the labelled fraction of the training records, per init, with CIs."""
    headers = ["Init", "Labels", "n", "Macro F1", "95% CI", "Challenge F1", "vs random", "95% CI (diff.)"]
    rows = [[r["family_label"], percent(r["label_frac"]), str(r["n"]), mean_sd(r["macro_f1_mean"], r["macro_f1_sd"]),
             "" if is_missing(r["macro_f1_ci_low"]) else f"[{r['macro_f1_ci_low']:.3f}, {r['macro_f1_ci_high']:.3f}]",
             mean_sd(r["challenge_f1_mean"], r["challenge_f1_sd"]),
             "" if is_missing(r["diff"]) else f"{float(r['diff']):+.3f}", _ci(r["ci_low"], r["ci_high"])]
            for r in data.to_dict("records")]
    return Table("label_efficiency", "Label efficiency: test macro F1 against the labelled fraction of the training "
                 "records (mean ± sd)",
                 "95% CI: Student's t interval of the mean over seeds; vs random: difference of mean macro F1 to "
                 "random init at the same fraction with its 95% percentile bootstrap CI. Nested stratified subsets; "
                 "the test set is the same for every fraction.", data, headers, rows)


def pretrain_epoch(data: pd.DataFrame) -> Table:
    """Macro F1 against the pretraining epoch of the fine-tuned checkpoint."""
    headers = ["Pretraining", "Epoch", "n", "Macro F1", "Challenge F1"]
    rows = [[r["family"], integer(r["pretrain_epoch"]), str(r["n"]), mean_sd(r["macro_f1_mean"], r["macro_f1_sd"]),
             mean_sd(r["challenge_f1_mean"], r["challenge_f1_sd"])] for r in data.to_dict("records")]
    return Table("pretrain_epoch", "Pretraining length: macro F1 against pretraining epoch (mean ± sd)", "", data,
                 headers, rows)


def arch(data: pd.DataFrame) -> Table:
    """1-D against 2-D (spectrogram) fine-tune archs."""
    repro = _has(data, ["repro_macro_f1"])
    headers = ["Init", "Input", "Arch", "n", "Macro F1", "Challenge F1"] + (["Reproduction"] if repro else [])
    rows = [[r["init_config"], r["dims"], r["arch"], str(r["n"]), mean_sd(r["macro_f1_mean"], r["macro_f1_sd"]),
             mean_sd(r["challenge_f1_mean"], r["challenge_f1_sd"])] + ([num(r["repro_macro_f1"])] if repro else [])
            for r in data.to_dict("records")]
    return Table("arch_1d_2d", "1-D signal vs 2-D spectrogram (mean ± sd)", "", data, headers, rows)


def problems(data: pd.DataFrame) -> Table:
    """Missing, failed, running, malformed and duplicate runs (the display shows the last line of
    each detail, where a traceback states its error; the CSV keeps it whole)."""
    headers = ["Problem", "Kind", "Run directory", "Scenario", "Seed", "Detail"]
    rows = [[r["problem"], r["kind"], r["run_dir"], label(r["scenario"]), label(r["seed"]),
             (label(r["detail"]).strip().splitlines() or [""])[-1][:160]] for r in data.to_dict("records")]
    return Table("problems", "Problems: runs missing, failed, running or malformed", "", data, headers, rows)
