"""Worker script for the Horovod smoke test: each rank trains a tiny Keras model on its own data shard.

Writes ``rank_R.npz`` (all trainable weights) into the folder given as the first argument.
"""

import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import horovod.tensorflow.keras as hvd  # noqa: E402
import tensorflow as tf  # noqa: E402


def main(out_dir: str) -> None:
    hvd.init()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    rng = np.random.default_rng(100 + hvd.rank())  # different data and initial weights per rank
    tf.random.set_seed(hvd.rank())
    x = rng.normal(size=(64, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    model = tf.keras.Sequential([tf.keras.Input((8,)), tf.keras.layers.Dense(4, activation="relu"),
                                 tf.keras.layers.Dense(2)])
    opt = hvd.DistributedOptimizer(tf.keras.optimizers.Adam(1e-2 * hvd.size()))
    model.compile(opt, tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=16, epochs=2, verbose=0,
              callbacks=[hvd.callbacks.BroadcastGlobalVariablesCallback(0)])
    np.savez(os.path.join(out_dir, f"rank_{hvd.rank()}.npz"), *[w.numpy() for w in model.trainable_weights],
             size=hvd.size())


if __name__ == "__main__":
    main(sys.argv[1])
