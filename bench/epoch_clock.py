#!/usr/bin/env python
"""Run a Keras training script as is, timing each ``fit`` epoch (wall and process CPU seconds); for benchmarks.

    python bench/epoch_clock.py OUT.json MODULE [ARGS...]

``tf.keras.Model.fit`` gets one more callback, last in the list, so an epoch's time runs from its start to the
end of every other callback's epoch end (validation passes, checkpoints, CSV logging included); it also copies
the epoch's ``f1`` and ``val_loss`` logs. ``MODULE``'s top package is imported before TensorFlow (an older checkout
of this project switched oneDNN off there), then ``MODULE`` runs as ``__main__`` (``python -m MODULE ARGS``), and
OUT.json gets the epochs, the whole process's wall and CPU seconds (imports and tracing included) and its
exit status.
"""

from __future__ import annotations

import importlib
import json
import resource
import runpy
import sys
import time
from typing import Any


def main() -> int:
    """Patch ``fit``, run the module, write the timings whatever its outcome; return its exit status."""
    out, module, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    start_wall = time.perf_counter()
    importlib.import_module(module.split(".")[0])  # first: what its package sets before TensorFlow loads holds
    import tensorflow as tf

    epochs: list[dict[str, Any]] = []

    class EpochClock(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.began = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            wall, cpu = time.perf_counter() - self.began[0], time.process_time() - self.began[1]
            logs = logs or {}
            epochs.append({"epoch": epoch + 1, "wall_s": wall, "cpu_s": cpu,
                           **{k: float(logs[k]) for k in ("f1", "val_loss", "loss") if k in logs}})

    original_fit = tf.keras.Model.fit

    def fit(self: tf.keras.Model, *fit_args: Any, **kwargs: Any) -> Any:
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), EpochClock()]
        return original_fit(self, *fit_args, **kwargs)

    tf.keras.Model.fit = fit
    status: int | str | None = 0
    sys.argv = [module, *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        status = exc.code
    finally:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        with open(out, "w") as fh:
            json.dump({"module": module, "epochs": epochs, "exit": status,
                       "wall_s": time.perf_counter() - start_wall,
                       "user_s": usage.ru_utime, "system_s": usage.ru_stime}, fh, indent=1)
    return status if isinstance(status, int) else 1


if __name__ == "__main__":
    sys.exit(main())
