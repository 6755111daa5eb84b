"""Assemble the report from a Collection (tables, figures) and write it atomically in the chosen formats."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure

from analysis import figures, present, render, tables
from analysis.collect import Collection
from ecg_hpc.atomic import atomic_write_bytes, atomic_write_csv, atomic_write_text
from ecg_hpc.provenance import utc_now

FORMATS = ("md", "csv", "tex")
REPORT_MD = "report.md"
TABLES_TEX = "tables.tex"
RUNS_CSV = "runs.csv"
FIGURE_NAMES = ("fig_val_f1", "fig_per_class", "fig_confusion", "fig_fraction", "fig_label_efficiency",
                "fig_pretraining")  # each written as .png and .pdf
_ALWAYS_SHOWN = ("table1", "problems")


@dataclass(frozen=True)
class Report:
    """The report's tables in display order (problems last) and its figures by file stem (None: not
    applicable); ``tables`` holds every table, empty ones too, so their CSVs never go stale."""

    collection: Collection
    tables: list[present.Table]
    figures: dict[str, Figure | None] = field(default_factory=dict)
    seed: int = 0
    resamples: int = 0

    @property
    def shown(self) -> list[present.Table]:
        """Tables worth displaying: Table 1, the problems list, and the others when they have rows."""
        return [t for t in self.tables if t.rows or t.name in _ALWAYS_SHOWN]

    def summary_line(self) -> str:
        """One line saying what was read."""
        runs = self.collection.runs
        return (f"{self.collection.root}: {len(runs)} fine-tuning runs ({int((runs['status'] == 'done').sum())} done) "
                f"in {runs['scenario'].nunique()} scenarios, {self.collection.n_pretrain} pretraining runs, "
                f"{len(self.collection.problems)} problems")


def make_report(collection: Collection, seed: int = 0, resamples: int = 10_000,
                with_figures: bool = True) -> Report:
    """Compute every table (and figure) of the report from the finished fine-tuning runs of ``collection``."""
    done = collection.done
    problems = present.problems(collection.problems)
    if done.empty:
        return Report(collection, [problems], {}, seed, resamples)
    summary = tables.summarise(done)
    fraction = tables.fraction_table(summary)
    comparison = tables.comparisons(done, summary, seed, resamples)
    efficiency = tables.label_efficiency_table(summary, comparison)
    report_tables = [
        present.table1(tables.table1(summary)),
        present.comparisons(comparison),
        present.label_efficiency(efficiency),
        present.epochs(tables.epochs_table(summary)),
        present.fraction(fraction),
        present.pretrain_epoch(tables.pretrain_epoch_table(summary)),
        present.arch(tables.arch_table(summary)),
        problems,
    ]
    drawn: dict[str, Figure | None] = {}
    if with_figures:
        drawn = dict(zip(FIGURE_NAMES, (
            figures.validation_f1(collection.history, summary), figures.per_class(summary),
            figures.confusion(collection.confusion, summary), figures.fraction(fraction, summary),
            figures.label_efficiency(efficiency), figures.pretraining(collection.pretrain_history))))
    return Report(collection, report_tables, drawn, seed, resamples)


def _markdown(report: Report) -> str:
    """The whole report as one Markdown document, figures linked beside it."""
    parts = ["# ECG transfer learning: fine-tuning report", "",
             f"{report.summary_line()}.  ",
             f"Generated {utc_now()}; bootstrap: {report.resamples} resamples, seed {report.seed}.", ""]
    parts += [render.markdown(t) for t in report.shown]
    parts += [f"![{name}]({name}.png) ([PDF]({name}.pdf))\n" for name, fig in report.figures.items()
              if fig is not None]
    return "\n".join(parts)


SUMMARY_TABLES = ("table1", "comparisons", "label_efficiency")


def summary_markdown(report: Report) -> str:
    """The result tables alone (Table 1, pretrained vs random, label efficiency when present) as Markdown, with no
    timestamp or path: the same runs give the same bytes, so a README can include the file a run wrote."""
    runs = report.collection.runs
    done = runs[runs["status"] == "done"]
    parts = [f"{len(done)} finished fine-tuning runs in {done['scenario'].nunique()} scenarios, seeds "
             f"{', '.join(str(s) for s in sorted(done['seed'].dropna().unique()))}; bootstrap {report.resamples} "
             f"resamples, seed {report.seed}.", ""]
    parts += [render.markdown(t).replace("## ", "### ", 1) for t in report.tables
              if t.name in SUMMARY_TABLES and t.rows]
    return "\n".join(parts)


def write_report(report: Report, out_dir: str | os.PathLike[str], formats: tuple[str, ...] = ("md", "csv")
                 ) -> list[Path]:
    """Write the report's files into ``out_dir`` (each atomically) and remove figures of earlier reports that
    no longer apply; return the paths written."""
    out = Path(out_dir)
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown report format(s) {unknown}; choose from {FORMATS}")
    written = []
    if "md" in formats:
        written.append(atomic_write_text(out / REPORT_MD, _markdown(report)))
    if "tex" in formats:
        written.append(atomic_write_text(out / TABLES_TEX, "\n".join(render.latex(t) for t in report.shown)))
    if "csv" in formats:
        for table in report.tables:
            written.append(atomic_write_csv(out / f"{table.name}.csv", list(table.data.columns),
                                            render.csv_rows(table.data)))
        runs = report.collection.runs
        written.append(atomic_write_csv(out / RUNS_CSV, list(runs.columns), render.csv_rows(runs)))
    for name, fig in report.figures.items():
        for fmt in figures.FORMATS:
            path = out / f"{name}.{fmt}"
            if fig is None:
                path.unlink(missing_ok=True)
            else:
                written.append(atomic_write_bytes(path, figures.save(fig, fmt)))
    return written
