"""The report's figures as PNG bytes (matplotlib's object API with the Agg canvas: no pyplot global state)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from analysis.collect import CLASSES, percent


def _colours(scenarios: list[str]) -> dict[str, tuple[float, ...]]:
    """One colour per scenario, the same in every figure."""
    cmap = colormaps["tab10" if len(scenarios) <= 10 else "tab20"]
    return {s: cmap(i % cmap.N) for i, s in enumerate(scenarios)}


def _png(fig: Figure, right: float = 0.97) -> bytes:
    """The figure rendered as PNG bytes (fixed margins: a tight bounding box costs a second rendering)."""
    fig.subplots_adjust(left=0.1, right=right, bottom=0.11, top=0.92)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return buf.getvalue()


def validation_f1(history: pd.DataFrame, scenarios: list[str]) -> bytes | None:
    """Validation macro F1 against epoch per scenario: mean over its runs with a min-max band (paper Fig. 3a).
    At each epoch the runs still training at that epoch are summarised; None when there are no curves."""
    if history.empty:
        return None
    colours = _colours(scenarios)
    fig = Figure(figsize=(8, 5))
    ax = fig.add_subplot()
    for scenario in scenarios:
        curves = history[history["scenario"] == scenario]
        if curves.empty:
            continue
        by_epoch = curves.groupby("epoch")["f1"].agg(["mean", "min", "max"]).sort_index()
        n_runs = curves["run_dir"].nunique()
        ax.plot(by_epoch.index, by_epoch["mean"], color=colours[scenario], lw=1.5, label=f"{scenario} (n={n_runs})")
        ax.fill_between(by_epoch.index, by_epoch["min"], by_epoch["max"], color=colours[scenario], alpha=0.2, lw=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation macro F1")
    ax.set_title("Fine-tuning: validation macro F1 (mean, min-max band over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


def fraction(fraction_table: pd.DataFrame, summary: pd.DataFrame) -> bytes | None:
    """Test macro F1 against the fraction of pretraining patients (mean +- sd error bars), the random-init
    baseline of the same fine-tune arch as a dashed line and the published reproduction values as crosses;
    None when no pretrained scenario exists."""
    if fraction_table.empty:
        return None
    families = list(dict.fromkeys(fraction_table["family"]))
    randoms = summary[(summary["init"] == "random") & summary["arch"].isin(fraction_table["arch"])]
    colours = _colours(families + list(randoms["scenario"]))
    fig = Figure(figsize=(7, 5))
    ax = fig.add_subplot()
    for family in families:
        rows = fraction_table[fraction_table["family"] == family]
        ax.errorbar(100 * rows["frac"], rows["macro_f1_mean"], yerr=rows["macro_f1_sd"].fillna(0.0), marker="o",
                    capsize=4, color=colours[family], label=family)
    for r in randoms.itertuples():
        ax.axhline(r.macro_f1_mean, ls="--", color=colours[r.scenario], label=f"{r.scenario} (n={r.n})")
    published = fraction_table.dropna(subset=["repro_macro_f1"])
    if not published.empty:
        ax.scatter(100 * published["frac"], published["repro_macro_f1"], marker="x", color="black", zorder=3,
                   label="reproduction (published)")
    ticks = np.unique(100 * fraction_table["frac"].to_numpy(dtype=float))
    ax.set_xscale("log")
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: percent(x / 100)))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda x, _: ""))
    ax.set_xlabel("pretraining patients")
    ax.set_ylabel("test macro F1")
    ax.set_title("Test macro F1 against pretraining data size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)


def per_class(summary: pd.DataFrame) -> bytes | None:
    """Per-class test F1 bars (mean +- sd) per scenario; None when there is no scenario."""
    if summary.empty:
        return None
    scenarios = list(summary["scenario"])
    colours = _colours(scenarios)
    fig = Figure(figsize=(min(13.0, 8.0 + 0.4 * len(scenarios)), 5))
    ax = fig.add_subplot()
    width = 0.8 / len(scenarios)
    x = np.arange(len(CLASSES) + 1)
    for i, r in enumerate(summary.to_dict("records")):
        means = [r["macro_f1_mean"], *(r[f"f1_{c}_mean"] for c in CLASSES)]
        sds = np.nan_to_num([r["macro_f1_sd"], *(r[f"f1_{c}_sd"] for c in CLASSES)])
        ax.bar(x - 0.4 + width * (i + 0.5), means, width, yerr=sds, capsize=2, color=colours[r["scenario"]],
               label=f"{r['scenario']} (n={r['n']})")
    ax.set_xticks(x, ["macro", *CLASSES])
    ax.set_ylim(0, 1)
    ax.set_ylabel("test F1")
    ax.set_title("Test F1 per class (mean ± sd over seeds)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _png(fig, right=0.68)
