"""What a pretraining task asks of the samplers: the layout of its batches.

A labelled task draws single frames and labels each with its ``LabelRule`` (``ecg_hpc.data.labels``); future
prediction draws ``context_frames`` consecutive frames plus the frame that follows, hidden among
``num_negatives`` frames of other patients, the label being its index among the candidates. The samplers
(``ecg_hpc.data.pipeline``, ``ecg_hpc.data.pool``) take a task object (``SamplingTask``: anything with a name and
a layout, such as the tasks of ``ecg_hpc.tasks``) and read only this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ecg_hpc.data.labels import LabelRule
from ecg_hpc.errors import ConfigError

CONTEXT_FRAMES = 8  # future prediction: frames of context before the one to find (the authors')
DEFAULT_NEGATIVES = 15  # ... and the frames of other patients it hides among


@dataclass(frozen=True)
class BatchLayout:
    """Labelled frames (``rule`` given) or future prediction (``rule`` None, with its context and negatives)."""

    rule: LabelRule | None = None
    context_frames: int = 0
    num_negatives: int = 0

    def __post_init__(self) -> None:
        """ConfigError unless it is one of the two layouts."""
        if self.rule is None and (self.context_frames < 1 or self.num_negatives < 1):
            raise ConfigError("future prediction needs num_negatives >= 1 and context_frames >= 1")
        if self.rule is not None and (self.context_frames or self.num_negatives):
            raise ConfigError("a labelled frame has no context frames or negatives")

    @property
    def future(self) -> bool:
        """True for future prediction."""
        return self.rule is None

    @property
    def span_frames(self) -> int:
        """Consecutive frames one sample reads from a segment."""
        return self.context_frames + 1 if self.future else 1


def labelled(rule: LabelRule) -> BatchLayout:
    """The layout of a task that labels single frames with ``rule``."""
    return BatchLayout(rule)


def future_prediction(context_frames: int = CONTEXT_FRAMES, num_negatives: int = DEFAULT_NEGATIVES) -> BatchLayout:
    """The layout of future prediction."""
    return BatchLayout(None, context_frames, num_negatives)


class SamplingTask(Protocol):
    """What the samplers need of a pretraining task: its name (for messages) and its batch layout."""

    @property
    def name(self) -> str: ...

    @property
    def layout(self) -> BatchLayout: ...
