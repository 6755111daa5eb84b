"""Every report figure, rendered from a tiny runs tree: legends inside the canvas (matplotlib window extents),
no bar, error bar or band of F1 outside [0, 1], the statistic named, readable names, n per point."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from analysis.build import FIGURE_NAMES, make_report, write_report
from analysis.collect import collect
from ecg_hpc.atomic import atomic_write_csv
from tests.fake_runs import checkpoint_init, write_finetune_run, write_pretrain_run
from ecg_hpc.train.predictions import write_predictions

CLASSES = ("A", "N", "O", "~")
# per-class test F1 by seed, chosen so that mean + sd passes 1 and mean - sd passes 0 (unclipped bars would)
SPREAD = {1: (0.99, 0.98, 0.02, 0.97), 2: (0.40, 0.95, 0.60, 0.30), 3: (0.97, 0.99, 0.01, 0.99)}


def _finetune(root: Path, folder: str, init: dict, label_frac: float, seeds: tuple[int, ...]) -> None:
    """Finished runs with chosen F1, validation curves of different lengths and test predictions."""
    rng = np.random.default_rng(len(folder))
    for seed in seeds:
        job = root / "finetune" / f"{folder}_labels{label_frac:g}" / f"seed_{seed}"
        epochs = 4 + seed  # runs stop at different epochs: n per epoch varies
        write_finetune_run(job, seed=seed, init=init, f1=dict(zip(CLASSES, SPREAD[seed])), width=0.125,
                           epochs_run=epochs, val_f1=list(np.linspace(0.05, 0.99, epochs)), label_frac=label_frac)
        labels = rng.integers(0, 4, 40)
        prob = rng.dirichlet(np.ones(4), 40)
        write_predictions(job / "test_predictions.csv", [f"r{i}" for i in range(40)], labels, prob, CLASSES)


def build_tiny(root: Path) -> Path:
    """Random init and two beat pretrainings, fine-tuned on 10 % and 100 % of the labels, 2-3 seeds each."""
    pretrain = {}
    for frac in (0.25, 1.0):
        job = write_pretrain_run(root / "pretrain" / f"beat_frac{frac:g}", frame_size=2048, frac=frac, epochs=3)
        atomic_write_csv(job / "history.csv", ["epoch", "loss", "accuracy", "time_s"],
                         [[e, 1.5 / e, 0.5 + 0.1 * e, 1.0] for e in (1, 2, 3)])
        pretrain[frac] = job
    for label_frac in (0.1, 1.0):
        _finetune(root, "random", {"source": "random"}, label_frac, (1, 2, 3))
        for frac, job in pretrain.items():
            _finetune(root, f"beat{frac:g}", checkpoint_init(job, 3, frame_size=2048, frac=frac), label_frac, (1, 2))
    return root


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory):
    root = build_tiny(tmp_path_factory.mktemp("figures") / "runs")
    return make_report(collect(root, progress=False), resamples=200)


def _draw(fig: Figure):
    canvas = FigureCanvasAgg(fig)
    fig.draw(canvas.get_renderer())
    return canvas.get_renderer()


def layout_problems(fig: Figure) -> list[str]:
    """What breaks the figure rules: a legend outside the canvas, or on an F1 axis (0..1) a bar, error bar or
    band outside [0, 1]."""
    renderer = _draw(fig)
    canvas = fig.bbox
    problems = []
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    for legend in legends:
        box = legend.get_window_extent(renderer)
        if box.x0 < canvas.x0 - 1 or box.y0 < canvas.y0 - 1 or box.x1 > canvas.x1 + 1 or box.y1 > canvas.y1 + 1:
            problems.append(f"legend {box} leaves the canvas {canvas}")
    for ax in fig.axes:
        if ax.get_ylim() != (0.0, 1.0):
            continue  # not an F1 axis (loss, colour bar, image)
        low, high = (ax.transData.transform((0, v))[1] for v in (0.0, 1.0))
        for patch in ax.patches:
            if isinstance(patch, Rectangle):
                box = patch.get_window_extent(renderer)
                if box.y0 < low - 0.5 or box.y1 > high + 0.5:
                    problems.append(f"bar {box} leaves [0, 1] ({low:.1f}..{high:.1f} px)")
        for coll in ax.collections:
            if isinstance(coll, (LineCollection, PolyCollection)):
                ys = [ax.transData.transform(path.vertices)[:, 1] for path in coll.get_paths() if len(path.vertices)]
                if ys and (min(y.min() for y in ys) < low - 0.5 or max(y.max() for y in ys) > high + 0.5):
                    problems.append(f"{type(coll).__name__} leaves [0, 1]")
    return problems


def _texts(fig: Figure) -> str:
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    return "\n".join([t.get_text() for lg in legends for t in lg.get_texts()] +
                     [ax.get_title() for ax in fig.axes] + [fig.get_suptitle()])


def test_every_figure_is_drawn(report) -> None:
    assert set(report.figures) == set(FIGURE_NAMES)
    missing = [name for name, fig in report.figures.items() if fig is None]
    assert missing == []


@pytest.mark.parametrize("name", FIGURE_NAMES)
def test_legend_inside_canvas_and_f1_inside_unit_interval(report, name: str) -> None:
    fig = report.figures[name]
    assert layout_problems(fig) == []


def test_the_check_catches_a_bar_past_one_and_a_legend_off_the_canvas() -> None:
    fig = Figure(figsize=(4, 3))
    ax = fig.add_subplot()
    ax.bar([0], [0.9], yerr=[0.3], label="a label long enough to run far past the right edge of the canvas")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    found = layout_problems(fig)
    assert any("legend" in p for p in found) and any("LineCollection" in p for p in found)


def test_captions_name_the_statistic_and_labels_are_readable(report) -> None:
    texts = {name: _texts(fig) for name, fig in report.figures.items()}
    assert "sd over seeds" in texts["fig_per_class"]
    assert "95 % CI" in texts["fig_fraction"] and "95 % CI" in texts["fig_label_efficiency"]
    assert "min-max" in texts["fig_val_f1"]
    assert "random init" in texts["fig_per_class"] and "beat, 25 % of patients, epoch 3" in texts["fig_per_class"]
    for text in texts.values():  # no internal key strings
        assert "f2048" not in text and " ep3" not in text and "x0.125" not in text
    # n per epoch where runs stopped at different epochs: 3 seeds stop after 5, 6 and 7 epochs
    assert "n=3, 2 from epoch 6, 1 from epoch 7" in texts["fig_val_f1"]
    assert "row-normalised" in texts["fig_confusion"] or "normalised" in texts["fig_confusion"]
    assert "accuracy" in texts["fig_pretraining"] and "loss" in texts["fig_pretraining"]


def test_files_png_and_pdf_and_tables_without_empty_paper_columns(report, tmp_path: Path) -> None:
    written = {p.name for p in write_report(report, tmp_path, ("md", "csv"))}
    for name in FIGURE_NAMES:
        assert {f"{name}.png", f"{name}.pdf"} <= written
        assert (tmp_path / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"
    table1 = next(t for t in report.tables if t.name == "table1")
    assert "Challenge F1" in table1.headers and "Paper" not in table1.headers  # width 0.125: nothing published
    efficiency = next(t for t in report.tables if t.name == "label_efficiency")
    assert [row[1] for row in efficiency.rows] == ["10%", "100%"] * 3
    markdown = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "Label efficiency" in markdown and "challenge's score" in markdown
