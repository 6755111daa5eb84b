"""Keras HDF5 weight files written without HDF5 ever touching a full disk.

``Model.save_weights("x.h5")`` lets the HDF5 library write the file itself; when the disk fills up half-way it
prints hundreds of lines and the process can die with a segmentation fault while h5py closes its handles. Here
the same HDF5 content (Keras's own layout, so ``load_weights`` reads it) is built in memory and handed to the
project's atomic writer, which checks the free space first and turns a full or read-only folder into one line.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import h5py
import tensorflow as tf
from keras.src.saving.legacy import hdf5_format  # the writer behind Model.save_weights(".h5") in Keras 2.15

from ecg_hpc.rundir import atomic_write_bytes


def weights_h5_bytes(model: tf.keras.Model) -> bytes:
    """The bytes of the ``.h5`` file that ``model.save_weights`` would write."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        hdf5_format.save_weights_to_hdf5_group(h5, model)
    return buffer.getvalue()


def save_weights_h5(model: tf.keras.Model, path: str | os.PathLike[str]) -> Path:
    """Write ``model``'s weights to ``path`` atomically (StorageError naming the folder when it is full)."""
    return atomic_write_bytes(path, weights_h5_bytes(model))
