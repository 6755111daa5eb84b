"""Render display tables as terminal text, Markdown and LaTeX, and numeric tables as CSV rows."""

from __future__ import annotations

from typing import Any, Iterator

import pandas as pd

from analysis.present import Table

_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}", "±": r"$\pm$", ">": r"$>$",
                "<": r"$<$"}


def _numeric_column(cells: list[str]) -> bool:
    """True when every non-empty cell starts like a number (such columns are right-aligned)."""
    filled = [c for c in cells if c]
    return bool(filled) and all(c.lstrip("+-[")[:1].isdigit() for c in filled)


def text(table: Table) -> str:
    """A fixed-width table for the terminal, headed by its title."""
    columns = list(zip(table.headers, *table.rows)) if table.rows else [(h,) for h in table.headers]
    widths = [max(len(c) for c in col) for col in columns]
    right = [_numeric_column(list(col[1:])) for col in columns]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()

    out = [table.title, line(table.headers), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in table.rows] or ["(none)"]
    if table.note:
        out.append(table.note)
    return "\n".join(out) + "\n"


def _md_cell(cell: str) -> str:
    """A cell safe inside a Markdown table row ('~' escaped: GitHub reads tildes as strikethrough)."""
    return cell.replace("|", "\\|").replace("~", "\\~").replace("\n", " ")


def markdown(table: Table) -> str:
    """A Markdown section: heading, pipe table (or '(none)'), note."""
    out = [f"## {table.title}", ""]
    if table.rows:
        right = [_numeric_column([row[i] for row in table.rows]) for i in range(len(table.headers))]
        out.append("| " + " | ".join(_md_cell(h) for h in table.headers) + " |")
        out.append("|" + "|".join("---:" if r else "---" for r in right) + "|")
        out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
    else:
        out.append("(none)")
    if table.note:
        out += ["", f"*{table.note}*"]
    return "\n".join(out) + "\n"


def _tex(cell: str) -> str:
    """A cell with LaTeX special characters escaped (and the arrow of scenario names as an arrow)."""
    return r"$\to$".join("".join(_TEX_SPECIAL.get(ch, ch) for ch in part) for part in cell.split("->"))


def latex(table: Table) -> str:
    """A ``table`` environment with a ``tabular`` (plain \\hline rules, no extra packages) and a caption."""
    right = [_numeric_column([row[i] for row in table.rows]) for i in range(len(table.headers))]
    spec = "".join("r" if r else "l" for r in right)
    out = [r"\begin{table}[ht]", r"\centering", rf"\caption{{{_tex(table.title)}}}", rf"\label{{tab:{table.name}}}",
           rf"\begin{{tabular}}{{{spec}}}", r"\hline", " & ".join(_tex(h) for h in table.headers) + r" \\",
           r"\hline"]
    out += [" & ".join(_tex(c) for c in row) + r" \\" for row in table.rows]
    out += [r"\hline", r"\end{tabular}"]
    if table.note:
        out.append(rf"\par\smallskip\footnotesize {_tex(table.note)}")
    out.append(r"\end{table}")
    return "\n".join(out) + "\n"


def csv_rows(frame: pd.DataFrame) -> Iterator[list[Any]]:
    """Rows of a numeric frame for ``atomic_write_csv``: values at full precision, absent ones empty."""
    for row in frame.itertuples(index=False):
        yield ["" if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)) else value
               for value in row]
