"""The report's tables as numeric pandas frames, computed from the finished fine-tuning runs.

Means and standard deviations are over the runs (seeds) of a scenario, sd with ddof=1 (NaN for one run); the 95 %
confidence interval of a mean is Student's t interval (NaN for one run). Challenge F1 is the mean F1 of N, A, O.
Where several checkpoints of one pretraining configuration were fine-tuned, the fraction-of-patients and the
1-D vs 2-D tables use the latest epoch (the published runs fine-tuned the final checkpoint); the
pretraining-epoch table shows them all.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import pandas as pd

from analysis.collect import CLASSES, KEY_COLUMNS, percent, scenario_label, sort_scenarios
from analysis.published import Published, published_for
from analysis.labels import human_labels
from analysis.stats import compare, mean_ci_halfwidth

METRICS = ("macro_f1", "challenge_f1", *(f"f1_{c}" for c in CLASSES), "epochs_run", "best_epoch")
CI_METRICS = ("macro_f1", "challenge_f1")
_CONFIG = ["task", "pretrain_arch", "frame_size", "frac", "arch", "width", "label_frac"]


def summarise(done: pd.DataFrame) -> pd.DataFrame:
    """One row per scenario: key columns, n, mean and sd of every metric, and the published numbers (beside
    the latest fine-tuned epoch of a pretraining configuration only)."""
    numeric = done.assign(**{m: pd.to_numeric(done[m], errors="coerce").astype(float) for m in METRICS})
    groups = numeric.groupby("scenario", sort=False)
    summary = groups[list(KEY_COLUMNS)].first()
    summary["n"] = groups.size()
    moments = groups[list(METRICS)].agg(["mean", "std"])  # pandas std: ddof=1, NaN for a single run
    for metric in METRICS:
        summary[f"{metric}_mean"] = moments[(metric, "mean")]
        summary[f"{metric}_sd"] = moments[(metric, "std")]
    for metric in CI_METRICS:
        half = mean_ci_halfwidth(summary[f"{metric}_sd"].to_numpy(float), summary["n"].to_numpy(int))
        summary[f"{metric}_ci_low"] = summary[f"{metric}_mean"] - half
        summary[f"{metric}_ci_high"] = summary[f"{metric}_mean"] + half
    summary = sort_scenarios(summary.reset_index())
    summary["label"] = human_labels(summary)
    latest = set(latest_checkpoints(summary)["scenario"])  # the published runs fine-tuned final checkpoints
    published = [published_for(r.init, r.task, r.frame_size, r.frac, r.arch, r.width)
                 if r.scenario in latest and r.label_frac == 1.0 else Published() for r in summary.itertuples()]
    summary["paper_macro_f1"] = np.array([p.paper_macro_f1 for p in published], dtype=float)
    summary["paper_macro_f1_sd"] = np.array([p.paper_macro_f1_sd for p in published], dtype=float)
    for c in CLASSES:
        summary[f"paper_f1_{c}"] = np.array([p.paper_f1.get(c) for p in published], dtype=float)
    summary["repro_macro_f1"] = np.array([p.repro_macro_f1 for p in published], dtype=float)
    return summary


def table1(summary: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 1: macro and per-class F1 (mean, sd) per scenario beside the published values."""
    columns = ["scenario", "label", *KEY_COLUMNS, "n", "macro_f1_mean", "macro_f1_sd", "challenge_f1_mean",
               "challenge_f1_sd"]
    columns += [f"f1_{c}_{s}" for c in CLASSES for s in ("mean", "sd")]
    columns += ["paper_macro_f1", "paper_macro_f1_sd", *(f"paper_f1_{c}" for c in CLASSES), "repro_macro_f1"]
    return summary[columns].copy()


def epochs_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Epochs to early stop (``epochs_run``) and best epoch per scenario, mean and sd."""
    return summary[["scenario", "label", "n", "epochs_run_mean", "epochs_run_sd", "best_epoch_mean",
                    "best_epoch_sd"]].copy()


def latest_checkpoints(summary: pd.DataFrame) -> pd.DataFrame:
    """Random scenarios and, per pretraining configuration, the scenario of its latest fine-tuned epoch."""
    pretrained = summary[summary["init"] != "random"]
    latest = pretrained.sort_values("pretrain_epoch", na_position="first", kind="stable") \
        .groupby(_CONFIG, dropna=False, sort=False).tail(1)
    return sort_scenarios(pd.concat([summary[summary["init"] == "random"], latest]))


def fraction_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Macro F1 against the fraction of pretraining patients, one family per pretraining configuration."""
    rows = latest_checkpoints(summary)
    rows = rows[rows["init"] != "random"].copy()
    rows["family"] = [scenario_label(r, omit=("frac",)) for _, r in rows.iterrows()]
    rows["family_label"] = human_labels(rows, omit=("frac",))
    columns = ["family", "family_label", "frac", "pretrain_epoch", "n", "macro_f1_mean", "macro_f1_sd",
               "macro_f1_ci_low", "macro_f1_ci_high", "challenge_f1_mean", "challenge_f1_sd", "repro_macro_f1",
               "scenario", "arch", "width", "label_frac"]
    return rows[columns].sort_values(["family", "frac"], kind="stable").reset_index(drop=True)


def pretrain_epoch_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Macro F1 against the pretraining epoch, for configurations with several fine-tuned checkpoints."""
    rows = summary[summary["init"] != "random"].copy()
    counts = rows.groupby(_CONFIG, dropna=False)["pretrain_epoch"].transform("nunique")
    rows = rows[counts > 1].copy()
    rows["family"] = [scenario_label(r, omit=("pretrain_epoch",)) for _, r in rows.iterrows()]
    columns = ["family", "pretrain_epoch", "n", "macro_f1_mean", "macro_f1_sd", "challenge_f1_mean",
               "challenge_f1_sd", "scenario"]
    return rows[columns].sort_values(["family", "pretrain_epoch"], kind="stable").reset_index(drop=True)


def _init_config(row: Any) -> str:
    """What a 1-D and a 2-D scenario must share to be compared: init, task, frame, fraction, width, labels."""
    text = "random" if row.init == "random" else \
        f"{row.task} f{int(row.frame_size) if pd.notna(row.frame_size) else '?'} {percent(row.frac)}"
    text = text if pd.isna(row.width) or float(row.width) == 1.0 else f"{text} x{float(row.width):g}"
    return text if row.label_frac == 1.0 else f"{text}, {percent(row.label_frac)} labels"


def arch_table(summary: pd.DataFrame) -> pd.DataFrame:
    """1-D against 2-D (spectrogram) fine-tune archs for each init present with both (empty otherwise)."""
    rows = latest_checkpoints(summary).copy()
    rows["dims"] = np.where(rows["arch"].astype(str).str.endswith("_2d"), "2-D", "1-D")
    rows["init_config"] = [_init_config(r) for r in rows.itertuples()]
    both = rows.groupby("init_config")["dims"].transform("nunique") > 1
    rows = rows.assign(_pretrained=rows["init"] != "random")[both]
    rows = rows.sort_values(["_pretrained", "task", "frame_size", "frac", "dims", "arch"], na_position="first",
                            kind="stable")
    columns = ["init_config", "dims", "arch", "n", "macro_f1_mean", "macro_f1_sd", "challenge_f1_mean",
               "challenge_f1_sd", "repro_macro_f1", "scenario"]
    return rows[columns].reset_index(drop=True)


def comparisons(done: pd.DataFrame, summary: pd.DataFrame, seed: int = 0,
                resamples: int = 10_000) -> pd.DataFrame:
    """Each pretrained scenario against random init with the same fine-tune arch, width and labelled fraction:
    difference of mean macro F1 (and of challenge F1), 95 % percentile bootstrap CI (generator seeded by ``seed``
    and the scenario name, so a row does not change when others are added) and Welch's t-test p-value. A scenario
    without such a baseline gets a row saying so (statistics empty), never a comparison with another arch or
    width."""
    rows = []
    scenarios = set(summary["scenario"])
    randoms = sorted(summary.loc[summary["init"] == "random", "scenario"])
    for r in summary[summary["init"] != "random"].itertuples():
        baseline = scenario_label({"init": "random", "arch": r.arch, "width": r.width, "label_frac": r.label_frac})
        if baseline not in scenarios:  # an unlike pair would compare architectures or widths, not inits: say so
            ran = f"random init ran as {', '.join(r_.split('-> ')[-1] for r_ in randoms)}" if randoms else \
                "no random init ran"
            rows.append({"scenario": r.scenario, "label": r.label, "n": r.n, "n_baseline": 0,
                         "mean": r.macro_f1_mean, "challenge_mean": r.challenge_f1_mean,
                         "baseline": f"not compared: no '{baseline}' runs ({ran}); fine-tune random init with "
                                     "the same arch, width and labels to compare"})
            continue
        row = {"scenario": r.scenario, "label": r.label, "baseline": baseline,
               "baseline_label": summary.loc[summary["scenario"] == baseline, "label"].iloc[0]}
        for metric, prefix in (("macro_f1", ""), ("challenge_f1", "challenge_")):
            a = done.loc[done["scenario"] == r.scenario, metric].to_numpy(dtype=float)
            b = done.loc[done["scenario"] == baseline, metric].to_numpy(dtype=float)
            rng = np.random.default_rng([seed, zlib.crc32(r.scenario.encode("utf-8"))])
            d = compare(a, b, rng, resamples)
            row.update({f"{prefix}mean": a.mean(), f"{prefix}mean_baseline": b.mean(), f"{prefix}diff": d.diff,
                        f"{prefix}ci_low": d.ci_low, f"{prefix}ci_high": d.ci_high, f"{prefix}p_value": d.p_value})
            row.update(n=a.size, n_baseline=b.size)
        rows.append(row)
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


COMPARISON_COLUMNS = ["scenario", "label", "baseline", "baseline_label", "n", "n_baseline", "mean", "mean_baseline",
                      "diff", "ci_low", "ci_high", "p_value", "challenge_mean", "challenge_mean_baseline",
                      "challenge_diff", "challenge_ci_low", "challenge_ci_high", "challenge_p_value"]


def label_efficiency_table(summary: pd.DataFrame, comparison: pd.DataFrame) -> pd.DataFrame:
    """Macro F1 against the labelled fraction of the training records, one family per init (random, and the latest
    checkpoint of each pretraining configuration), with the mean's 95 % t interval and the difference to random
    init at the same fraction (from ``comparison``); empty unless the runs hold two labelled fractions or more."""
    rows = latest_checkpoints(summary)
    if rows["label_frac"].nunique() < 2:
        return pd.DataFrame(columns=LABEL_EFFICIENCY_COLUMNS)
    rows = rows.copy()
    rows["family"] = [scenario_label(r, omit=("label_frac",)) for _, r in rows.iterrows()]
    rows["family_label"] = human_labels(rows, omit=("label_frac",))
    rows = rows.merge(comparison[["scenario", "diff", "ci_low", "ci_high"]], on="scenario", how="left")
    rows = rows.assign(_pretrained=rows["init"] != "random")
    rows = rows.sort_values(["arch", "width", "_pretrained", "family", "label_frac"], kind="stable")
    return rows[LABEL_EFFICIENCY_COLUMNS].reset_index(drop=True)


LABEL_EFFICIENCY_COLUMNS = ["family", "family_label", "init", "label_frac", "n", "macro_f1_mean", "macro_f1_sd",
                            "macro_f1_ci_low", "macro_f1_ci_high", "challenge_f1_mean", "challenge_f1_sd", "diff",
                            "ci_low", "ci_high", "scenario", "arch", "width"]
