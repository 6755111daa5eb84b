"""Weight transfer: save the feature extractor of any task model, load it into a fine-tuning classifier.

A saved feature extractor is a directory (written to a temporary sibling, then renamed into place) holding
``weights.h5`` (Keras HDF5 weights of the nested ``feature_extractor`` model, BN statistics included) and
``meta.json`` (arch, width, input channels, 1-D/2-D, feature size, the frame size it was trained on, and the
shape of every weight). Loading accepts another input length (the networks are fully convolutional with global
pooling: pretraining uses 4,096-sample frames, fine-tuning 16,384) but refuses another arch, width, channel
count or any weight-shape difference with a ConfigError naming both sides. Only the feature extractor is
touched: the classifier's head keeps its fresh initialisation.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import tensorflow as tf

from ecg_hpc.errors import ConfigError
from ecg_hpc.models.architectures import FEATURE_EXTRACTOR, FeatureSpec
from ecg_hpc.models.weights_file import save_weights_h5
from ecg_hpc.rundir import atomic_dir, atomic_write_json, utc_now

keras = tf.keras

WEIGHTS_FILE = "weights.h5"
META_FILE = "meta.json"
FORMAT_VERSION = 1
_COMPARED = ("arch", "width", "input_channels", "dims")


def find_feature_extractor(model: keras.Model) -> keras.Model:
    """The nested ``feature_extractor`` model of ``model`` (or ``model`` itself when it is one)."""
    if model.name == FEATURE_EXTRACTOR and hasattr(model, "spec"):
        return model
    found = [m for m in model.submodules if isinstance(m, keras.Model) and m.name == FEATURE_EXTRACTOR]
    unique = list({id(m): m for m in found}.values())
    if len(unique) != 1:
        raise ConfigError(f"model {model.name!r} has {len(unique)} parts named {FEATURE_EXTRACTOR!r}, "
                          f"need exactly one (build it with ecg_hpc.models or ecg_hpc.tasks)")
    if not hasattr(unique[0], "spec"):
        raise ConfigError(f"model {model.name!r}: its feature extractor was not built by "
                          f"ecg_hpc.models.build_feature_extractor (no arch/width spec)")
    return unique[0]


def _describe(spec: dict[str, Any]) -> str:
    """One-line description of a feature extractor, for error messages."""
    return (f"{spec['arch']} (width {spec['width']}, {spec['input_channels']} input channel(s), "
            f"{spec['dims']}-D)")


def _weight_shapes(model: keras.Model) -> list[list[Any]]:
    """[name, shape] of every weight of ``model`` in saving order."""
    return [[w.name, list(w.shape)] for w in model.weights]


def save_feature_extractor(model: keras.Model, path: str | os.PathLike[str]) -> Path:
    """Write the feature extractor of ``model`` (any task model) to directory ``path``; return ``path``."""
    feature_extractor = find_feature_extractor(model)
    path = Path(path)
    with atomic_dir(path) as tmp:
        save_weights_h5(feature_extractor, tmp / WEIGHTS_FILE)
        spec: FeatureSpec = feature_extractor.spec
        atomic_write_json(tmp / META_FILE, {
            "format": FORMAT_VERSION, "arch": spec.arch, "width": spec.width,
            "input_channels": spec.input_channels, "dims": spec.dims, "feature_dim": spec.feature_dim,
            "frame_size": feature_extractor.input_shape[1], "source_model": model.name, "saved_at": utc_now(),
            "weights": _weight_shapes(feature_extractor),
        })
    return path


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``meta.json`` of a saved feature extractor directory, checked; ConfigError naming what is wrong."""
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"pretrained feature extractor {path}: no such directory")
    meta_path = path / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{meta_path}: missing, {path} is not a saved feature extractor") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{meta_path}: unreadable ({exc})") from None
    missing = [k for k in (*_COMPARED, "format", "weights") if k not in meta]
    if missing:
        raise ConfigError(f"{meta_path}: missing keys {missing}")
    if meta["format"] != FORMAT_VERSION:
        raise ConfigError(f"{meta_path}: format {meta['format']}, this code reads format {FORMAT_VERSION}")
    if not (path / WEIGHTS_FILE).is_file():
        raise ConfigError(f"{path / WEIGHTS_FILE}: missing")
    return meta


def load_feature_extractor(model: keras.Model, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Initialise the feature extractor of ``model`` from directory ``path``; return the saved meta.

    The head and anything else outside the feature extractor are left as they are.
    """
    path = Path(path)
    meta = read_meta(path)
    feature_extractor = find_feature_extractor(model)
    target = {k: getattr(feature_extractor.spec, k) for k in _COMPARED}
    saved = {k: meta[k] for k in _COMPARED}
    if saved != target:
        raise ConfigError(f"cannot load the feature extractor {path}, a {_describe(saved)}, into model "
                          f"{model.name!r}, whose feature extractor is a {_describe(target)}")
    shapes = _weight_shapes(feature_extractor)
    if len(shapes) != len(meta["weights"]):
        raise ConfigError(f"cannot load {path} into model {model.name!r}: {len(meta['weights'])} saved weights, "
                          f"the model has {len(shapes)}")
    for (saved_name, saved_shape), (name, shape) in zip(meta["weights"], shapes):
        if list(saved_shape) != shape:
            raise ConfigError(f"cannot load {path} into model {model.name!r}: saved weight {saved_name} has "
                              f"shape {tuple(saved_shape)}, the model's {name} has shape {tuple(shape)}")
    try:
        feature_extractor.load_weights(str(path / WEIGHTS_FILE))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path / WEIGHTS_FILE}: cannot load into model {model.name!r} ({exc})") from None
    return meta
