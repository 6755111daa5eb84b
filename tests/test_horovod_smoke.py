"""Horovod smoke test: two real worker processes under ``horovodrun --gloo`` end with identical weights."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.horovod

SCRIPT = Path(__file__).parent / "scripts" / "hvd_tiny_train.py"


def test_two_gloo_workers_end_with_identical_weights(tmp_path: Path) -> None:
    horovodrun = shutil.which("horovodrun", path=str(Path(sys.executable).parent)) or shutil.which("horovodrun")
    assert horovodrun, "horovodrun not found: run container/install.sh"
    env = dict(os.environ, HOROVOD_CPU_OPERATIONS="gloo", OMP_NUM_THREADS="1")
    proc = subprocess.run([horovodrun, "-np", "2", "-H", "localhost:2", "--gloo", sys.executable, str(SCRIPT),
                           str(tmp_path)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    w0, w1 = np.load(tmp_path / "rank_0.npz"), np.load(tmp_path / "rank_1.npz")
    assert int(w0["size"]) == int(w1["size"]) == 2
    names = [k for k in w0.files if k != "size"]
    assert len(names) == 4
    for name in names:
        np.testing.assert_array_equal(w0[name], w1[name])
    # Training moved the weights away from zero-initialised biases: the optimiser really ran.
    assert np.abs(w0["arr_1"]).sum() > 0
