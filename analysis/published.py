"""The published numbers (docs/design-facts.md) and the report rows they stand beside.

Paper: Weimann & Conrad, Sci Rep 11:5251 (2021), Table 1 (macro F1 on the PhysioNet 2017 test set, mean +- sd
of 10 runs, fine-tuned ResNet-18). Reproduction: a later re-run of the authors' code (frame 4096, beat task,
fraction of pretraining patients, and the 2-D spectrogram ablation). Both were measured with full-width models,
so rows of narrower models (``width`` != 1) get no published value; the pretraining epoch is not matched because
the published runs fine-tuned the final checkpoint and a report may hold several.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from analysis.collect import is_missing

ARCH_1D = "resnet18"
ARCH_2D = "resnet18_2d"
FULL_DATA = 1.0


@dataclass(frozen=True)
class Published:
    """Published values for one scenario (None where that source has no number)."""

    paper_macro_f1: float | None = None
    paper_macro_f1_sd: float | None = None
    paper_f1: dict[str, float] = field(default_factory=dict)
    repro_macro_f1: float | None = None


_PAPER_RANDOM = Published(paper_macro_f1=0.731, paper_macro_f1_sd=0.019,
                          paper_f1={"N": 0.898, "A": 0.711, "O": 0.701, "~": 0.613}, repro_macro_f1=0.702)
_PAPER_BEAT_FRAME: dict[float, float] = {512: 0.769, 2048: 0.779, 4096: 0.768}
_REPRO_BEAT_FRAC = {0.01: 0.754, 0.1: 0.765, 0.2: 0.765, 1.0: 0.773}
_REPRO_2D_RANDOM = 0.715
_REPRO_2D_BEAT_FRAC = {0.1: 0.762, 0.2: 0.769}


def _equals(value: float | None, target: float) -> bool:
    """True when ``value`` is present and equals ``target`` up to float rounding (fractions are floats)."""
    return not is_missing(value) and math.isclose(float(value), float(target), rel_tol=1e-9)


def _lookup(table: dict[float, float], key: float | None) -> float | None:
    """Value of ``table`` at a numeric key (see ``_equals``), or None."""
    return next((v for k, v in table.items() if _equals(key, k)), None)


def published_for(init: str, task: str | None, frame_size: int | None, frac: float | None, arch: str,
                  width: float | None = None) -> Published:
    """Published numbers for a scenario given what its run.json says (init source, pretraining task, frame,
    fraction of patients, fine-tune arch and width); an empty ``Published`` when none corresponds."""
    if not is_missing(width) and float(width) != 1.0:
        return Published()
    if arch == ARCH_1D:
        if init == "random":
            return _PAPER_RANDOM
        if task != "beat":
            return Published()
        paper = _lookup(_PAPER_BEAT_FRAME, frame_size) if _equals(frac, FULL_DATA) else None
        repro = _lookup(_REPRO_BEAT_FRAC, frac) if _equals(frame_size, 4096) else None
        return Published(paper_macro_f1=paper, repro_macro_f1=repro)
    if arch == ARCH_2D:
        if init == "random":
            return Published(repro_macro_f1=_REPRO_2D_RANDOM)
        if task == "beat" and _equals(frame_size, 4096):
            return Published(repro_macro_f1=_lookup(_REPRO_2D_BEAT_FRAC, frac))
    return Published()
