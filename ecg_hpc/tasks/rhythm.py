"""Rhythm classification (6 classes): which rhythm occupies most of a frame.

Label (``ecg_hpc.data.labels.rhythm_label``, docs/design-facts.md): sum the time each rhythm class covers in the
frame; the longest of {undefined, afib, aflut} if that group covers any time (ties -> lowest id), else the longest of
{end, noise, normal} (ties -> lowest id), else undefined.
"""

from ecg_hpc.data.labels import RHYTHM
from ecg_hpc.data.layout import labelled
from ecg_hpc.tasks.base import Task

TASK = Task(name="rhythm", layout=labelled(RHYTHM),
            description="dominant rhythm of the frame (undefined/afib/aflut first)")
