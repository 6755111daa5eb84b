"""oneDNN and the ResNet shortcut: TF 2.15.1's strided 1x1 conv gradient corrupts the heap; the project's doesn't.

oneDNN's x86-64 1x1 weight-gradient kernels (``jit_1x1``, AVX2 and AVX-512) copy a strided input into a
unit-stride workspace sized for the real channel count but addressed by the kernel's channel block, so an input
with fewer channels than the block (8 on AVX2, 16 on AVX-512: the width-0.125 ResNet's second stage) is written
past its end: ``free(): invalid size``, a segfault or wrong numbers. Both sides run in child processes, since
the faulty one may kill its process and oneDNN is chosen when TensorFlow is imported.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent

STRIDED_1X1 = textwrap.dedent("""
    import numpy as np, tensorflow as tf
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 8192, 1)).astype(np.float32)  # 1 channel: below the block on AVX2 and AVX-512
    layer = tf.keras.layers.Conv1D(16, 1, strides=2, padding="same", use_bias=False)
    layer.build(x.shape)
    want = 2 * np.einsum("nli,nlo->io", x[:, ::2], x[:, ::2] @ layer.kernel.numpy()[0])
    for _ in range(3):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(layer(x)))
        got = tape.gradient(loss, layer.kernel).numpy()[0]
    print("gradient", "right" if np.allclose(got, want, rtol=1e-4, atol=1e-3) else "wrong", flush=True)
""")

PROJECT_RESNET = textwrap.dedent("""
    import sys
    import numpy as np, tensorflow as tf
    from ecg_hpc.models import build_model
    tf.keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 16384, 1)).astype(np.float32)
    y = np.eye(4, dtype=np.float32)[np.arange(16) % 4]
    # width 1/16: 4 channels into the strided shortcut of stage 2, at the fine-tuning input length
    model = build_model("resnet18", 4, (16384, 1), head_activation="softmax", width=0.0625)
    model.compile(optimizer=tf.keras.optimizers.SGD(0.01), loss="categorical_crossentropy")
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    np.save(sys.argv[1], model.predict(x, verbose=0))
""")


def run_child(code: str, onednn: bool, *args: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python with oneDNN on or off and this tree first on the path."""
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1" if onednn else "0", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          timeout=600)


def _has_avx2() -> bool:
    try:
        return "avx2" in Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or not _has_avx2(),
                    reason="the faulty oneDNN kernels are the x86-64 AVX2/AVX-512 JIT ones")
def test_onednn_strided_1x1_conv_gradient_corrupts_the_heap():
    proc = run_child(STRIDED_1X1, onednn=True)
    crashed = proc.returncode != 0  # negative: killed by SIGSEGV/SIGABRT ("free(): invalid size")
    assert crashed or "gradient wrong" in proc.stdout, (
        "TensorFlow's oneDNN computed a strided 1x1 conv gradient on a 1-channel input cleanly: the bug is fixed "
        "in this build, and the subsampling shortcut (ecg_hpc.models.layers.subsample) is no longer needed")
    off = run_child(STRIDED_1X1, onednn=False)  # the same op on TensorFlow's own kernels is fine
    assert off.returncode == 0 and "gradient right" in off.stdout, off.stderr[-2000:]


def test_project_resnet_trains_clean_with_onednn_and_matches_the_plain_kernels(tmp_path):
    results = {}
    for onednn in (True, False):
        out = tmp_path / f"onednn{int(onednn)}.npy"
        proc = run_child(PROJECT_RESNET, onednn, str(out))
        assert proc.returncode == 0, f"oneDNN {onednn}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
        results[onednn] = np.load(out)
    assert results[True].shape == (16, 4)
    np.testing.assert_allclose(results[True], results[False], rtol=1e-3, atol=1e-4)
