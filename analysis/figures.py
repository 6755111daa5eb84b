"""The report's figures as matplotlib ``Figure`` objects (object API, no pyplot global state), and their files.

Every figure uses constrained layout with its legend below the axes inside the canvas, names scenarios in
words (``analysis.labels``), says in its caption line which statistic its bars or bands show, and clips bars,
error bars and bands of F1 values to [0, 1]. ``save`` writes PNG (for the Markdown report) and PDF (vector, for
a paper's supplement) beside each other.
"""

from __future__ import annotations

import io
import textwrap

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from analysis.collect import CLASSES
from analysis.labels import common, pct

FORMATS = ("png", "pdf")
_FONT = 8
_CI = "95 % CI of the mean (Student t)"


def _colours(keys: list[str]) -> dict[str, tuple[float, ...]]:
    """One colour per key, in order."""
    cmap = colormaps["tab10" if len(keys) <= 10 else "tab20"]
    return {k: cmap(i % cmap.N) for i, k in enumerate(keys)}


def _figure(width: float, height: float) -> Figure:
    """A figure whose constrained layout keeps titles, axes and an 'outside' legend inside the canvas."""
    fig = Figure(figsize=(width, height), layout="constrained")
    fig.get_layout_engine().set(h_pad=0.06, w_pad=0.06)
    return fig


def _legend_below(fig: Figure, ncols: int = 2) -> None:
    """The figure's legend (all labelled artists) centred under the axes, inside the canvas: as many columns
    (up to ``ncols``) as the longest label allows at the figure's width, long labels wrapped, and the figure made
    taller by the legend's height so the axes keep theirs."""
    handles, labels = [], []
    for ax in fig.axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    if not handles:
        return
    width_in = fig.get_figwidth()
    char_in = 0.6 * _FONT / 72  # generous mean glyph width of the default sans-serif font
    fit = max(20, int(0.85 * width_in / char_in) - 6)  # characters per line of a one-column legend
    labels = [textwrap.fill(label, fit) for label in labels]
    longest = max(len(line) for label in labels for line in label.splitlines())
    columns = max(1, min(ncols, len(labels), int(0.9 * width_in / ((longest + 6) * char_in))))
    lines = sum(max(label.count("\n") + 1 for label in labels[i::columns]) for i in range(columns)) / columns
    fig.set_figheight(fig.get_figheight() + 0.2 * (np.ceil(len(labels) / columns) + lines / 2))
    fig.legend(handles, labels, loc="outside lower center", ncols=columns, fontsize=_FONT, frameon=False)


def _title(ax, title: str, caption: str) -> None:
    """Title with a smaller caption line under it (what the bars or bands are)."""
    ax.set_title(f"{title}\n{caption}", fontsize=_FONT + 1)


def _clipped_err(mean: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Asymmetric error bar extents (2, n) of ``mean`` +- ``half`` cut at 0 and 1 (NaN half-width: none)."""
    mean, half = np.asarray(mean, float), np.nan_to_num(np.asarray(half, float))
    return np.vstack([mean - np.clip(mean - half, 0.0, 1.0), np.clip(mean + half, 0.0, 1.0) - mean])


def _n_text(n: pd.Series) -> str:
    """'n=3' when every point has the same number of runs, else 'n=3 (2 from epoch 9)'-style changes."""
    values = n.to_numpy(int)
    text = f"n={values[0]}"
    for position in np.flatnonzero(np.diff(values)) + 1:
        text += f", {values[position]} from epoch {n.index[position]}"
    return text


def validation_f1(history: pd.DataFrame, summary: pd.DataFrame) -> Figure | None:
    """Validation macro F1 against fine-tuning epoch, one line per scenario (mean over the runs still training at
    that epoch) with a min-max band over them, y from 0 to 1: the layout of the paper's Fig. 3a."""
    if history.empty:
        return None
    labels = dict(zip(summary["scenario"], summary["label"]))
    colours = _colours(list(labels))
    fig = _figure(7.5, 5.2)
    ax = fig.add_subplot()
    for scenario, label in labels.items():
        curves = history[history["scenario"] == scenario]
        if curves.empty:
            continue
        by_epoch = curves.groupby("epoch")["f1"].agg(["mean", "min", "max", "count"]).sort_index()
        ax.plot(by_epoch.index, by_epoch["mean"], color=colours[scenario], lw=1.5,
                label=f"{label} ({_n_text(by_epoch['count'])})")
        ax.fill_between(by_epoch.index, by_epoch["min"].clip(0, 1), by_epoch["max"].clip(0, 1),
                        color=colours[scenario], alpha=0.2, lw=0)
    ax.set_xlabel("fine-tuning epoch")
    ax.set_ylabel("validation macro F1")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    shared = common(summary)
    _title(ax, "Fine-tuning: validation macro F1 per epoch" + (f" ({shared})" if shared else ""),
           "line: mean over seeds; band: min-max over seeds; n: runs still training at that epoch")
    _legend_below(fig)
    return fig


def fraction(fraction_table: pd.DataFrame, summary: pd.DataFrame) -> Figure | None:
    """Test macro F1 against the fraction of pretraining patients (mean with its 95 % CI), the random-init
    baseline of the same fine-tune arch as a dashed line with its CI band, the published reproduction values as
    crosses; None when no pretrained scenario exists."""
    if fraction_table.empty:
        return None
    families = list(dict.fromkeys(fraction_table["family"]))
    names = dict(zip(fraction_table["family"], fraction_table["family_label"]))
    randoms = summary[(summary["init"] == "random") & summary["arch"].isin(fraction_table["arch"])
                      & summary["label_frac"].isin(fraction_table["label_frac"])]
    colours = _colours(families + list(randoms["scenario"]))
    fig = _figure(7.0, 5.2)
    ax = fig.add_subplot()
    x_all = 100 * fraction_table["frac"].to_numpy(dtype=float)
    for family in families:
        rows = fraction_table[fraction_table["family"] == family]
        mean = rows["macro_f1_mean"].to_numpy(float)
        half = rows["macro_f1_ci_high"].to_numpy(float) - mean
        n = rows["n"].to_numpy(int)
        ax.errorbar(100 * rows["frac"], mean, yerr=_clipped_err(mean, half), marker="o", capsize=4,
                    color=colours[family], label=f"{names[family]} (n={_range(n)} per point)")
    for r in randoms.itertuples():
        ax.axhline(r.macro_f1_mean, ls="--", color=colours[r.scenario], label=f"{r.label} (n={r.n})")
        if not np.isnan(r.macro_f1_ci_low):
            ax.axhspan(max(r.macro_f1_ci_low, 0.0), min(r.macro_f1_ci_high, 1.0), color=colours[r.scenario],
                       alpha=0.12, lw=0)
    published = fraction_table.dropna(subset=["repro_macro_f1"])
    if not published.empty:
        ax.scatter(100 * published["frac"], published["repro_macro_f1"], marker="x", color="black", zorder=3,
                   label="reproduction (published)")
    _log_percent_axis(ax, x_all)
    ax.set_xlabel("pretraining patients")
    ax.set_ylabel("test macro F1")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    _title(ax, "Test macro F1 against pretraining data size", f"error bars and band: {_CI}, cut at [0, 1]")
    _legend_below(fig)
    return fig


def _range(values: np.ndarray) -> str:
    """'3' or '2-3' for the run counts of the points of a line."""
    low, high = int(np.min(values)), int(np.max(values))
    return str(low) if low == high else f"{low}-{high}"


def _log_percent_axis(ax, x_percent: np.ndarray) -> None:
    """A log x axis with ticks at the given percentages only."""
    ticks = np.unique(x_percent)
    ax.set_xscale("log")
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: pct(x / 100)))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda x, _: ""))
    if ticks.size == 1:
        ax.set_xlim(ticks[0] / 2, ticks[0] * 2)


def per_class(summary: pd.DataFrame) -> Figure | None:
    """Test F1 bars (mean, error bar sd cut at [0, 1]): macro, challenge and per class, one bar per scenario."""
    if summary.empty:
        return None
    scenarios = list(summary["scenario"])
    colours = _colours(scenarios)
    fig = _figure(min(12.0, 7.0 + 0.3 * len(scenarios)), 5.4)
    ax = fig.add_subplot()
    groups = [("macro_f1", "macro F1\n(A, N, O, ~)"), ("challenge_f1", "challenge F1\n(N, A, O)"),
              *((f"f1_{c}", c) for c in CLASSES)]
    width = 0.8 / len(scenarios)
    x = np.arange(len(groups))
    for i, r in enumerate(summary.to_dict("records")):
        means = np.array([r[f"{g}_mean"] for g, _ in groups], float)
        sds = np.array([r[f"{g}_sd"] for g, _ in groups], float)
        ax.bar(x - 0.4 + width * (i + 0.5), means, width, yerr=_clipped_err(means, sds), capsize=2,
               color=colours[r["scenario"]], label=f"{r['label']} (n={r['n']})")
    ax.set_xticks(x, [name for _, name in groups], fontsize=_FONT)
    ax.set_ylim(0, 1)
    ax.set_ylabel("test F1")
    ax.grid(axis="y", alpha=0.3)
    shared = common(summary)
    _title(ax, "Test F1 per class" + (f" ({shared})" if shared else ""),
           "bars: mean over seeds; error bars: sd over seeds, cut at [0, 1]")
    _legend_below(fig)
    return fig


def label_efficiency(table: pd.DataFrame) -> Figure | None:
    """Test macro F1 against the labelled fraction of the training records, random init and each pretraining as
    lines (mean) with 95 % CI bands; None unless the table has rows."""
    if table.empty:
        return None
    families = list(dict.fromkeys(table["family"]))
    colours = _colours(families)
    fig = _figure(7.0, 5.2)
    ax = fig.add_subplot()
    for family in families:
        rows = table[table["family"] == family].sort_values("label_frac")
        x = 100 * rows["label_frac"].to_numpy(float)
        mean = rows["macro_f1_mean"].to_numpy(float)
        half = rows["macro_f1_ci_high"].to_numpy(float) - mean
        n = rows["n"].to_numpy(int)
        style = "--" if rows["init"].iloc[0] == "random" else "-"
        ax.plot(x, mean, style, marker="o", color=colours[family],
                label=f"{rows['family_label'].iloc[0]} (n={_range(n)} per point)")
        ok = ~np.isnan(half)
        ax.fill_between(x[ok], np.clip(mean - half, 0, 1)[ok], np.clip(mean + half, 0, 1)[ok],
                        color=colours[family], alpha=0.18, lw=0)
        if n.min() != n.max():
            for xi, yi, ni in zip(x, mean, n):
                ax.annotate(f"n={ni}", (xi, yi), textcoords="offset points", xytext=(4, -10), fontsize=_FONT - 1)
    _log_percent_axis(ax, 100 * table["label_frac"].to_numpy(float))
    ax.set_xlabel("labelled training records (stratified, nested; same test set)")
    ax.set_ylabel("test macro F1")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    _title(ax, "Label efficiency: test macro F1 against labelled fraction", f"band: {_CI}, cut at [0, 1]")
    _legend_below(fig)
    return fig


def pretraining(pretrain_history: pd.DataFrame) -> Figure | None:
    """Pretraining loss and accuracy per epoch, one line per pretraining run; None without histories."""
    if pretrain_history.empty:
        return None
    metrics = [m for m in ("loss", "accuracy") if m in set(pretrain_history["metric"])]
    metrics += sorted(set(pretrain_history["metric"]) - set(metrics) - {"lr"})
    runs = list(dict.fromkeys(pretrain_history["run_dir"]))
    colours = _colours(runs)
    fig = _figure(min(12.0, 4.0 * len(metrics)), 4.8)
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), k + 1)
        for run in runs:
            rows = pretrain_history[(pretrain_history["run_dir"] == run) & (pretrain_history["metric"] == metric)]
            if rows.empty:
                continue
            first = rows.iloc[0]
            frac = "" if pd.isna(first["frac"]) else f", {pct(first['frac'])} of patients"
            ax.plot(rows["epoch"], rows["value"], marker="o", ms=3, color=colours[run],
                    label=f"{first['task']}{frac} ({run})")
        ax.set_xlabel("pretraining epoch")
        ax.set_ylabel(metric)
        if "acc" in metric:
            ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        _title(ax, f"Pretraining {metric}", "per epoch, averaged over the Horovod workers")
    _legend_below(fig, ncols=1)
    return fig


def confusion(confusion_counts: pd.DataFrame, summary: pd.DataFrame) -> Figure | None:
    """One row-normalised test confusion matrix per scenario (counts summed over its seeds); None without
    predictions."""
    if confusion_counts.empty:
        return None
    shown = summary[summary["scenario"].isin(set(confusion_counts["scenario"]))]
    cols = min(3, len(shown))
    rows = int(np.ceil(len(shown) / cols))
    fig = _figure(3.3 * cols, 3.2 * rows + 0.6)
    image = None
    for k, r in enumerate(shown.itertuples()):
        ax = fig.add_subplot(rows, cols, k + 1)
        counts = confusion_counts[confusion_counts["scenario"] == r.scenario]
        n_runs = counts["run_dir"].nunique()
        matrix = counts.pivot_table(index="true", columns="pred", values="count", aggfunc="sum")
        matrix = matrix.reindex(index=list(CLASSES), columns=list(CLASSES)).fillna(0.0).to_numpy()
        totals = matrix.sum(axis=1, keepdims=True)
        share = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
        image = ax.imshow(share, vmin=0, vmax=1, cmap="Blues")
        for i in range(len(CLASSES)):
            for j in range(len(CLASSES)):
                ax.text(j, i, f"{share[i, j]:.2f}", ha="center", va="center", fontsize=_FONT - 1,
                        color="white" if share[i, j] > 0.6 else "black")
        ax.set_xticks(range(len(CLASSES)), CLASSES, fontsize=_FONT)
        ax.set_yticks(range(len(CLASSES)), [f"{c} ({int(round(t))})" for c, t in zip(CLASSES, totals[:, 0])],
                      fontsize=_FONT)
        ax.set_xlabel("predicted", fontsize=_FONT)
        ax.set_ylabel("true (records, all seeds)", fontsize=_FONT)
        ax.set_title(f"{r.label}\n{n_runs} runs summed", fontsize=_FONT)
    if image is not None:
        fig.colorbar(image, ax=fig.axes, shrink=0.6, label="share of the true class (row-normalised)")
    fig.suptitle("Test confusion matrices (rows: true class, normalised; ties split evenly)", fontsize=_FONT + 1)
    return fig


def save(fig: Figure, fmt: str) -> bytes:
    """The figure as ``fmt`` bytes (png at 150 dpi, or pdf); the PDF carries no creation date, so equal figures
    give equal files."""
    buf = io.BytesIO()
    metadata = {"CreationDate": None} if fmt == "pdf" else None
    fig.savefig(buf, format=fmt, dpi=150, metadata=metadata)
    return buf.getvalue()
