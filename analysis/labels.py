"""Human names of scenarios for figures and tables: 'random init', 'beat, 25 % of patients, epoch 3'.

A name carries the init (pretraining task, fraction of patients, epoch) and only those other key fields that
differ between the scenarios shown together (frame size, archs, width, labelled fraction); ``common`` says what
they all share, for a caption.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from analysis.collect import KEY_COLUMNS, is_missing

_OPTIONAL = ("pretrain_arch", "frame_size", "arch", "width", "label_frac")
_DEFAULTS = {"width": 1.0, "label_frac": 1.0}  # what an absent value means


def pct(value: Any) -> str:
    """A fraction as a readable percentage: 0.25 -> '25 %'."""
    return f"{100.0 * float(value):.4g} %"


def _varying(frame: pd.DataFrame) -> set[str]:
    """Optional key fields that take more than one value among ``frame``'s rows (NaN counts as a value);
    pretraining fields only among the pretrained rows."""
    out = set()
    for column in _OPTIONAL:
        if column not in frame.columns:
            continue
        rows = frame[frame["init"] != "random"] if column in ("pretrain_arch", "frame_size") else frame
        default = _DEFAULTS.get(column, "?")
        if rows[column].map(lambda v: default if is_missing(v) else v).nunique() > 1:
            out.add(column)
    return out


def _parts(row: Any, shown: set[str], omit: tuple[str, ...] = ()) -> list[str]:
    """The pieces of one scenario's name."""
    if row["init"] == "random":
        parts = ["random init"]
    else:
        parts = [str(row["task"]) if not is_missing(row["task"]) else "pretrained"]
        if "pretrain_arch" in shown:
            parts.append(str(row["pretrain_arch"]))
        if "frame_size" in shown and not is_missing(row["frame_size"]):
            parts.append(f"frame {int(row['frame_size'])}")
        if "frac" not in omit:
            parts.append(f"{pct(row['frac'])} of patients" if not is_missing(row["frac"]) else "? of patients")
        if "pretrain_epoch" not in omit and not is_missing(row["pretrain_epoch"]):
            parts.append(f"epoch {int(row['pretrain_epoch'])}")
    target = []
    if "arch" in shown:
        target.append(str(row["arch"]))
    if "width" in shown:
        target.append(f"width {float(row['width']) if not is_missing(row['width']) else 1.0:g}")
    if target:
        parts[-1] += " -> " + " ".join(target)
    if "label_frac" in shown:
        parts.append(f"{pct(_DEFAULTS['label_frac'] if is_missing(row.get('label_frac')) else row['label_frac'])}"
                     " of labels")
    return parts


def human_labels(frame: pd.DataFrame, omit: tuple[str, ...] = ()) -> list[str]:
    """One readable name per row of a frame of scenario keys (``omit``: fields never named, e.g. the axis of a
    figure, whose rows may then share a name); rows that would share a name get every optional field."""
    shown = _varying(frame) - set(omit)
    names = [", ".join(_parts(r, shown, omit)) for _, r in frame.iterrows()]
    keys = [c for c in KEY_COLUMNS if c in frame.columns and c not in omit]
    if len(set(names)) < len(frame[keys].astype(str).drop_duplicates()):
        everything = set(_OPTIONAL) - set(omit)
        names = [", ".join(_parts(r, everything, omit)) for _, r in frame.iterrows()]
    return names


def common(frame: pd.DataFrame) -> str:
    """What every scenario of ``frame`` shares among the fields their names leave out (for a caption)."""
    shown = _varying(frame)
    parts = []
    if "arch" not in shown and "arch" in frame.columns and len(frame):
        width = frame["width"].iloc[0] if "width" in frame.columns else None
        width_text = "" if "width" in shown or is_missing(width) or float(width) == 1.0 else f" width {float(width):g}"
        parts.append(f"fine-tuned {frame['arch'].iloc[0]}{width_text}")
    pretrained = frame[frame["init"] != "random"]
    if len(pretrained) and "frame_size" not in shown and not is_missing(pretrained["frame_size"].iloc[0]):
        parts.append(f"pretraining frames {int(pretrained['frame_size'].iloc[0])}")
    if "label_frac" in frame.columns and "label_frac" not in shown and len(frame):
        value = frame["label_frac"].iloc[0]
        if not is_missing(value) and float(value) != 1.0:
            parts.append(f"{pct(value)} of the training labels")
    return "; ".join(parts)
