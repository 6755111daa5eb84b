"""Checks of option values shared by the trainers, launchers and ``sweep plan``: each names the option and the fix.

Values are checked once, when parsed, so that a NaN learning rate, a negative seed or a newline in a job name is
refused in one line before anything is written or submitted, instead of failing (or silently training) later.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import unicodedata
from typing import Any, Callable, TypeVar

from ecg_hpc.errors import ConfigError

T = TypeVar("T")
MAX_SEED = 2 ** 32 - 1  # numpy's (and so Keras's set_random_seed's) seed range is [0, 2**32)


def check_number(option: str, value: float | int | None, *, positive: bool = False, minimum: float | None = None,
                 maximum: float | None = None) -> None:
    """ConfigError unless ``value`` (None allowed: not given) is finite and within the given bounds."""
    if value is None:
        return
    if not math.isfinite(value):
        raise ConfigError(f"{option} {value}: must be a finite number")
    if positive and value <= 0:
        raise ConfigError(f"{option} {value}: must be positive")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{option} {value}: must be at least {minimum:g}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{option} {value}: must be at most {maximum:g}")


def check_seed(option: str, value: int) -> None:
    """ConfigError unless ``value`` is a seed numpy accepts, 0 to 2**32 - 1."""
    if not 0 <= value <= MAX_SEED:
        raise ConfigError(f"{option} {value}: seeds must lie in 0..{MAX_SEED}")


def check_text(option: str, value: str | None) -> None:
    """ConfigError when ``value`` holds control characters (a newline would end a batch-script header line)."""
    if value is not None and any(unicodedata.category(c) == "Cc" for c in value):
        raise ConfigError(f"{option} {value!r}: must not contain control characters such as newlines")


def config_argv(config: Any) -> list[str]:
    """The command-line arguments that give the dataclass ``config`` (``--field value``; a true flag alone, a false
    flag and None left out): how a launcher shows the config it submits, and how a config runs again by hand."""
    argv: list[str] = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        flag = f"--{field.name.replace('_', '-')}"
        if isinstance(value, bool):
            argv += [flag] if value else []
        elif value is not None:
            argv += [flag, str(value)]
    return argv


def argparse_type(parse: Callable[[str], T]) -> Callable[[str], T]:
    """``parse`` as an argparse ``type=``: its ConfigError becomes argparse's one-line usage error (exit 2)."""
    def convert(text: str) -> T:
        try:
            return parse(text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__  # argparse names the type in its messages
    return convert
