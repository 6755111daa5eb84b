"""Beat classification (5 classes): what kind of beats a frame holds.

Label (``ecg_hpc.data.labels.beat_label``, docs/design-facts.md): count the complete beats of the frame per
class; if any pac/aberrated/pvc, the most frequent of those (ties -> lowest id); else the more frequent of
undefined/normal (tie -> undefined); no beats -> undefined.
"""

from ecg_hpc.data.labels import BEAT
from ecg_hpc.data.layout import labelled
from ecg_hpc.tasks.base import Task

TASK = Task(name="beat", layout=labelled(BEAT),
            description="beat type of the frame's complete beats (abnormal types first)")
