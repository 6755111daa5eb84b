"""Heart-rate classification (4 classes): tachycardia, bradycardia, normal rate or noise.

Label (``ecg_hpc.data.labels.hr_label``, docs/design-facts.md): from the complete beats in a frame-sized
window, with two or more beats bpm = 60 / mean RR (s): < 60 brady, 60..100 normal, > 100 tachy; fewer than two
beats -> noise.
"""

from ecg_hpc.data.labels import HR
from ecg_hpc.data.layout import labelled
from ecg_hpc.tasks.base import Task

TASK = Task(name="hr", layout=labelled(HR), description="heart-rate class of the frame")
